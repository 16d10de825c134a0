"""The SQL console and JSON API: answers, one-line errors, the sandbox over HTTP (nothing
written), the row limit, the time limit and the CSV download."""

from __future__ import annotations

import csv
import io

import pytest

from neurondb.errors import QueryError
from neurondb.serve.context import ServeContext
from neurondb.serve.pages.sql import run_sql
from neurondb.store import open_store

from .helpers import Html, client, snapshot

WRITING = [
    "COPY runs TO '{out}/x.csv'",
    "EXPLAIN ANALYZE COPY runs TO '{out}/y.csv'",
    "COPY (SELECT * FROM examples) TO '{out}/z.parquet' (FORMAT parquet)",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "ATTACH '{out}/evil.duckdb' AS evil",
    "CREATE TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW examples AS SELECT 1",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "EXPORT DATABASE '{out}/dump'",
    "SELECT 1; COPY runs TO '{out}/w.csv'",
    "WITH x AS (SELECT 1) SELECT * FROM query('COPY runs TO ''{out}/q.csv''')",
]


@pytest.fixture(scope="module")
def http(full_store):
    with client(full_store.root) as c:
        yield c


def test_api_returns_columns_and_rows(http):
    r = http.get("/api/sql", params={"q": "SELECT run, n_examples FROM runs ORDER BY run"})
    assert r.status_code == 200
    body = r.json()
    assert body["columns"] == ["run", "n_examples"]
    assert body["rows"] == [["ev", 11], ["tr", 40]]
    assert body["truncated"] is False


def test_api_values_are_json(http):
    q = ("SELECT 1.5::DOUBLE AS d, 'nan'::DOUBLE AS n, [1, 2] AS l, DATE '2024-01-02' AS t, "
         "NULL AS z, 12345678901234::BIGINT AS big, {'a': 1} AS s, 1.25::DECIMAL(5,2) AS dec")
    body = http.get("/api/sql", params={"q": q}).json()
    assert body["rows"] == [[1.5, None, [1, 2], "2024-01-02", None, 12345678901234, {"a": 1},
                             1.25]]


def test_api_error_is_400_with_one_line(http):
    r = http.get("/api/sql", params={"q": "SELECT nope FROM runs"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert "\n" not in err and "nope" in err
    assert http.get("/api/sql").status_code == 400
    assert http.get("/api/sql", params={"q": "SELECT 1", "limit": "-3"}).status_code == 400
    assert http.get("/api/sql", params={"q": "x" * 30_000}).status_code == 400


@pytest.mark.parametrize("sql", WRITING)
def test_writing_sql_is_refused_with_nothing_written(http, full_store, tmp_path, sql):
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(full_store.root)
    q = sql.format(out=out)
    r = http.get("/api/sql", params={"q": q})
    assert r.status_code == 400, r.text
    assert "\n" not in r.json()["error"]
    page = http.get("/sql", params={"q": q})
    assert page.status_code == 400 and "sql-error" in page.text
    assert http.get("/sql.csv", params={"q": q}).status_code == 400
    assert list(out.iterdir()) == []
    assert snapshot(full_store.root) == before
    # the connection still answers, and its views are the store's
    assert http.get("/api/sql", params={"q": "SELECT count(*) FROM examples"}).json()[
        "rows"] == [[51]]


def test_row_limit(http):
    q = "SELECT * FROM range(10000) t(i)"
    body = http.get("/api/sql", params={"q": q, "limit": "25"}).json()
    assert len(body["rows"]) == 25 and body["truncated"] is True
    page = Html(http.get("/sql", params={"q": q, "limit": "7"}).text)
    assert page.ids["sql-result"].count("\n") >= 0 and "cut at 7" in page.ids["sql-summary"]
    assert http.get("/api/sql", params={"q": q, "limit": "100000"}).status_code == 400


def test_time_limit_interrupts_a_long_query(full_store):
    st = open_store(full_store.root)
    try:
        ctx = ServeContext(st)
        q = "SELECT count(*) FROM range(100000000000) a(i) WHERE i % 7 = 3"
        with pytest.raises(QueryError, match="time limit of 0.3 s"):
            run_sql(ctx, q, seconds=0.3)
        assert run_sql(ctx, "SELECT 42").rows == [[42]]  # the connection still works
    finally:
        st.close()


def test_csv_download(http):
    r = http.get("/sql.csv", params={"q": "SELECT example_id, text FROM examples WHERE run = 'ev' "
                                           "ORDER BY example_id"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["example_id", "text"] and len(rows) == 12
    assert rows[-1][1].startswith("<script>")  # CSV is data, not HTML: kept as it is


def test_console_page_shows_result_and_views(http):
    page = Html(http.get("/sql", params={"q": "SELECT run FROM runs ORDER BY run"}).text)
    assert "ev" in page.ids["sql-result"] and "tr" in page.ids["sql-result"]
    assert any(h.startswith("/sql.csv?q=") for h in page.links)
    empty = http.get("/sql").text
    assert "rankings" in empty and "examples" in empty  # the views panel
