"""The SQL sandbox: reading statements run, nothing else does, however it is wrapped.

Every refused statement must raise a one-line QueryError, leave the store's file tree
byte-identical, write nothing outside it, and leave the connection's views, macros and types
as they were. The read-only forms a user writes (PIVOT, SUMMARIZE, DESCRIBE, SHOW, windows,
CTEs, EXPLAIN, the table macros) keep working. A result kind named like a keyword
(``overlaps``) breaks nothing, and a damaged result file fails the queries of its view only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.query import QueryError, activated_overlap, random_ranking
from neurondb.query.connection import describe_views
from neurondb.store import open_store
from neurondb.store.catalog import record_result, result_entry
from neurondb.store.kinds import quote_ident
from neurondb.testing_stores import make_store, write_periodic_run

runner = CliRunner()
WIDTHS = {"encoder": (8, 8), "decoder": (4,)}
SLOTS = ["prompt:0", "mask"]
N_EX = 12


def build_store(root: Path) -> Path:
    """Two 3-shard tokens runs of two stacks, a ranking ``R`` and an overlap ``ov``, each
    result recorded in the catalog."""
    make_store(root, WIDTHS)
    rng = np.random.default_rng(0)
    for run in ("a", "b"):
        acts = {(s, la): rng.standard_normal((N_EX, len(SLOTS), d))
                for s, ws in WIDTHS.items() for la, d in enumerate(ws)}
        write_periodic_run(root, run, f"split_{run}", rng.integers(0, 2, N_EX), SLOTS, acts,
                           shards=3)
    st = open_store(root)
    random_ranking(st, seed=1, name="R")
    activated_overlap(st, "a,b", slot="mask", name="ov")
    st.close()
    for table, name in (("rankings", "R"), ("overlaps", "ov")):
        if result_entry(root, table, name) is None:
            record_result(root, table, name, root / "results" / table / f"{name}.parquet")
    return root


def tree_hash(*roots: Path) -> str:
    """sha256 over every path and file content under ``roots``."""
    h = hashlib.sha256()
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            h.update(str(p.relative_to(root)).encode() + b"\0")
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def catalog_state(st) -> tuple:
    """What a statement could change in the connection: views (definitions and row counts),
    macros, types, tables, settings that make the sandbox."""
    st.connection.ensure_all_macros()  # macros are created when first named: all of them
    con = st.connection.con
    views = con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal "
                        "ORDER BY 1").fetchall()
    funcs = con.execute("SELECT function_name, function_type FROM duckdb_functions() "
                        "WHERE function_type LIKE '%macro%' ORDER BY 1, 2").fetchall()
    # (PIVOT without an IN list leaves DuckDB's own uniquely named helper enums behind)
    types = con.execute("SELECT type_name FROM duckdb_types() WHERE NOT internal "
                        "AND NOT starts_with(type_name, '__pivot_enum_')").fetchall()
    tables = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    counts = [(v, con.execute(f"SELECT count(*) FROM {quote_ident(v)}").fetchone()[0])
              for v in st.connection.views]
    settings = con.execute("SELECT current_setting('enable_external_access'), "
                           "current_setting('lock_configuration')").fetchall()
    return views, funcs, types, tables, counts, settings


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """``(store, outside dir)``: the store opened once, and a directory outside it holding
    files a query must not read (and where nothing may be written)."""
    base = tmp_path_factory.mktemp("sandbox")
    root = build_store(base / "store")
    out = base / "outside"
    out.mkdir()
    (out / "secret.csv").write_text("secret\n42\n")
    (out / "secret.json").write_text(json.dumps({"secret": 42}))
    pq.write_table(pa.table({"secret": [42]}), out / "secret.parquet")
    st = open_store(root)
    yield st, out
    st.close()


REFUSED = [
    # writes of files, however wrapped
    "COPY (SELECT 1) TO '{out}/x.csv'",
    "COPY (SELECT * FROM rankings) TO '{store}/results/rankings/R.parquet' (FORMAT parquet)",
    "EXPLAIN ANALYZE COPY (SELECT * REPLACE (0.0 AS score) FROM rankings) "
    "TO '{store}/results/rankings/R.parquet' (FORMAT parquet)",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{store}/manifest.json' (FORMAT json)",
    "EXPLAIN COPY (SELECT 1) TO '{out}/x.csv'",
    "explain analyze copy (select 1) to '{out}/x.csv'",
    "EXPORT DATABASE '{out}/db'",
    # catalog changes (in memory, but they would shadow a view for the session)
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t (a INTEGER)",
    "CREATE VIEW v AS SELECT 1",
    "CREATE OR REPLACE VIEW examples AS SELECT 1 AS x",
    "CREATE OR REPLACE TEMP VIEW rankings AS SELECT 1 AS x",
    "EXPLAIN ANALYZE CREATE OR REPLACE VIEW examples AS SELECT 1 AS x",
    "EXPLAIN /* c */ ANALYZE -- c\n CREATE OR REPLACE VIEW rankings AS SELECT 1 AS x",
    "EXPLAIN (ANALYZE, FORMAT json) CREATE OR REPLACE TEMP VIEW rows AS SELECT 1 AS x",
    "CREATE MACRO top_neurons(a) AS TABLE SELECT 1",
    "CREATE OR REPLACE MACRO activations() AS TABLE SELECT 1 AS value",
    "CREATE TABLE t AS PIVOT rankings ON stack USING max(score)",
    "WITH p AS (SELECT 1) INSERT INTO t SELECT * FROM (PIVOT rankings ON stack USING max(score))",
    "CREATE TYPE e AS ENUM ('a')",
    "CREATE SEQUENCE s",
    "INSERT INTO rankings SELECT * FROM rankings",
    "UPDATE rankings SET score = 0",
    "DELETE FROM rankings",
    "WITH d AS (DELETE FROM rankings RETURNING *) SELECT count(*) FROM d",
    "DROP VIEW examples",
    "DROP MACRO TABLE top_neurons",
    "ALTER VIEW examples RENAME TO e2",
    "COMMENT ON VIEW examples IS 'x'",
    # other databases, extensions, settings
    "ATTACH '{out}/x.duckdb' AS x",
    "ATTACH ':memory:' AS x",
    "DETACH memory",
    "USE system",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "SET VARIABLE v = 1",
    "PRAGMA enable_profiling",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "ANALYZE",
    "BEGIN TRANSACTION",
    "PREPARE p AS SELECT 1",
    # several statements, comments
    "SELECT 1; DROP VIEW examples",
    "/* a comment */ DROP VIEW rankings",
    "SELECT 1 -- c\n; CREATE TABLE t AS SELECT 1",
    "SELECT * FROM query('CREATE TABLE t AS SELECT 1')",
    # reads outside the store (and of the store's files other than through its views)
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM read_csv('{out}/secret.csv')",
    "SELECT * FROM read_json('{out}/secret.json')",
    "SELECT * FROM read_parquet('{out}/secret.parquet')",
    "SELECT * FROM '{out}/secret.parquet'",
    "SELECT * FROM read_parquet('{store}/results/rankings/R.parquet')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM parquet_metadata('{out}/secret.parquet')",
    "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
    "SELECT * FROM query_table('{out}/secret.parquet')",
    "WITH x AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM x",
    "EXPLAIN ANALYZE SELECT * FROM read_text('/etc/passwd')",
    "SELECT count(*) FROM examples, read_text('/etc/passwd')",
]


#: Refused by the engine only when they run (after Store.sql returned its lazy relation).
REFUSED_AT_RUN = [
    "SELECT * FROM sniff_csv('{out}/secret.csv')",
    "SELECT * FROM duckdb_extensions()",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_refused_through_store_sql(sandbox, sql):
    st, out = sandbox
    q = sql.format(store=st.path, out=out)
    before, state = tree_hash(st.path, out), catalog_state(st)
    with pytest.raises(QueryError) as e:
        st.sql(q)  # refused before any row is read
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and ("read-only" in msg or "SQL error" in msg), msg
    assert tree_hash(st.path, out) == before
    assert sorted(p.name for p in out.iterdir()) == ["secret.csv", "secret.json",
                                                      "secret.parquet"]
    assert catalog_state(st) == state


@pytest.mark.parametrize("sql", REFUSED + REFUSED_AT_RUN)
def test_refused_through_connection_arrow(sandbox, sql):
    """What the CLI and the report run: every refusal is a one-line QueryError."""
    st, out = sandbox
    q = sql.format(store=st.path, out=out)
    before, state = tree_hash(st.path, out), catalog_state(st)
    with pytest.raises(QueryError) as e:
        st.connection.arrow(q)
    assert len(str(e.value).splitlines()) == 1
    assert tree_hash(st.path, out) == before and catalog_state(st) == state


@pytest.mark.parametrize("sql", REFUSED_AT_RUN)
def test_refused_when_run_through_store_sql(sandbox, sql):
    """Refused only when the rows are fetched (DuckDB runs relations lazily): still a one-line
    QueryError through Store.sql, and nothing is read."""
    st, out = sandbox
    with pytest.raises(QueryError) as e:
        st.sql(sql.format(store=st.path, out=out)).fetchall()
    assert len(str(e.value).splitlines()) == 1 and "not allowed" in str(e.value)


ALLOWED = [
    ("SELECT count(*) FROM runs", [(2,)]),
    ("SELECT run, store FROM runs ORDER BY run", [("a", "store"), ("b", "store")]),
    ("SELECT count(*) FROM examples", [(2 * N_EX,)]),
    ("SELECT count(*) FROM tokens", None),
    ("SELECT count(*) FROM rows", [(2 * N_EX * len(SLOTS) * len(WIDTHS),)]),
    ("SELECT count(*) FROM rankings", [(20,)]),
    ('SELECT count(*) FROM "overlaps"', None),
    ('SELECT count(*) FROM "overlaps" o JOIN runs r ON o.a = r.run', None),
    ("WITH t AS (SELECT * FROM rankings WHERE layer = 0) SELECT count(*) FROM t", [(12,)]),
    ("SELECT layer, neuron, rank() OVER (PARTITION BY stack, layer ORDER BY score DESC) "
     "FROM rankings", None),
    ("PIVOT rankings ON stack USING max(score) GROUP BY layer", None),
    ("PIVOT rankings ON stack IN ('encoder') USING max(score) GROUP BY layer", None),
    ("SELECT * FROM (PIVOT rankings ON stack USING max(score) GROUP BY layer)", None),
    ("WITH p AS (PIVOT rankings ON stack USING max(score) GROUP BY layer) SELECT * FROM p",
     None),
    ("UNPIVOT (SELECT neuron, layer::BIGINT AS l, rank FROM rankings) ON l, rank "
     "INTO NAME k VALUE v", None),
    ("SUMMARIZE rankings", None),
    ("SUMMARIZE SELECT score FROM rankings", None),
    ("DESCRIBE examples", None),
    ('DESCRIBE "overlaps"', None),
    ("SHOW TABLES", None),
    ("SHOW ALL TABLES", None),
    ("EXPLAIN SELECT count(*) FROM examples", None),
    ("EXPLAIN ANALYZE SELECT count(*) FROM rows", None),
    ("EXPLAIN (FORMAT json) SELECT 1", None),
    ("EXPLAIN PIVOT rankings ON stack USING max(score) GROUP BY layer", None),
    ("FROM rankings LIMIT 3", None),
    ("VALUES (1), (2)", [(1,), (2,)]),
    ("SELECT * FROM query('SELECT 1 AS x')", [(1,)]),
    ("SELECT count(*) FROM query_table('examples')", [(2 * N_EX,)]),
    ("SELECT count(*) FROM activations(layer := 0, neuron := 1)",
     [(2 * N_EX * len(SLOTS) * len(WIDTHS),)]),
    ("SELECT count(*) FROM activations(stack := 'decoder', layer := 0, neurons := [0, 3])",
     [(2 * N_EX * len(SLOTS) * 2,)]),
    ("SELECT count(*) FROM gradients(layer := 0)", [(0,)]),
    ("SELECT count(*) FROM top_neurons('R', k := 3)", [(3,)]),
    ("SELECT count(*) FROM skill_neurons('R', fraction := 0.25)", [(5,)]),
    ("SELECT e.label, count(*) FROM activations(stack := 'encoder', layer := 1, neuron := 2) a "
     "JOIN examples e USING (run, example_id) GROUP BY 1", None),
    ("-- a comment\nSELECT 1 /* another */", [(1,)]),
    ("SELECT 1; SELECT 2", [(2,)]),
    ("SELECT 'DROP VIEW examples; COPY x TO ''y''' AS s", [("DROP VIEW examples; COPY x TO 'y'",)]),
    ("SELECT current_setting('enable_external_access'), "
     "current_setting('lock_configuration')", [(False, True)]),
    ("SELECT count(*) FROM duckdb_secrets()", [(0,)]),
]


@pytest.mark.parametrize(("sql", "want"), ALLOWED)
def test_reading_statements_run(sandbox, sql, want):
    st, out = sandbox
    before, state = tree_hash(st.path, out), catalog_state(st)
    got = st.sql(sql).fetchall()
    assert got, sql
    if want is not None:
        assert got == want
    assert tree_hash(st.path, out) == before
    assert catalog_state(st) == state  # PIVOT's helper types and the like leave nothing


def test_rows_view_numbers_rows_across_shards(sandbox):
    """Each shard's local rows are offset per stack: global rows 0..n-1 in every run."""
    st, _ = sandbox
    for run in ("a", "b"):
        for stack in WIDTHS:
            got = st.sql(f"SELECT row, example_id, position FROM rows WHERE run = '{run}' "
                         f"AND stack = '{stack}' ORDER BY row").fetchall()
            want = st.rows(run=run, stack=stack)
            assert [r[0] for r in got] == list(range(N_EX * len(SLOTS)))
            assert [r[1] for r in got] == want.column("example_id").to_pylist()
    assert len(st.shards("a")) == 3


def test_python_variables_are_not_scanned(sandbox):
    """DuckDB's Python replacement scan (a table name read as a Python variable) is off."""
    st, _ = sandbox
    secret_table = pa.table({"secret": [42]})  # noqa: F841 - what a replacement scan would read
    assert st.sql("SELECT current_setting('python_enable_replacements')").fetchall() == [
        (False,)]
    with pytest.raises(QueryError, match="secret_table"):
        st.sql("SELECT * FROM secret_table").fetchall()


@pytest.mark.parametrize("sql", [
    "EXPLAIN ANALYZE COPY (SELECT * REPLACE (0.0 AS score) FROM rankings) "
    "TO '{store}/results/rankings/R.parquet' (FORMAT parquet)",
    "CREATE OR REPLACE VIEW examples AS SELECT 1 AS x",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT 1; ATTACH '{out}/x.duckdb' AS x",
])
def test_refused_through_cli(sandbox, sql):
    st, out = sandbox
    before = tree_hash(st.path, out)
    res = runner.invoke(app, ["query", str(st.path), sql.format(store=st.path, out=out)])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and "read-only" in res.output
    assert tree_hash(st.path, out) == before


def test_cli_reads_keyword_view(sandbox):
    st, _ = sandbox
    res = runner.invoke(app, ["query", str(st.path), 'SELECT a, b FROM "overlaps" ORDER BY 1, 2',
                              "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[0] == '"a","b"'


def test_keyword_result_kind_breaks_nothing(tmp_path):
    """`overlaps` is a DuckDB keyword: a store with an overlap result still opens, describes
    and answers; only a user's own reference needs the quotes."""
    root = build_store(tmp_path / "s")
    st = open_store(root)
    assert st.sql("SELECT 1").fetchall() == [(1,)]
    views = describe_views(st.connection)
    assert list(views)[:4] == ["runs", "examples", "tokens", "rows"]
    assert {"rankings", "overlaps"} <= set(views) and "a" in views["overlaps"]
    for v in views:
        assert st.sql(f"SELECT count(*) FROM {quote_ident(v)}").fetchall()[0][0] >= 0
    assert st.sql('SELECT DISTINCT name FROM "overlaps"').fetchall() == [("ov",)]
    st.close()
    for cmd in (["info", str(root)], ["query", str(root), "SELECT 1 AS one"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 0, res.output
    assert "overlaps(" in runner.invoke(app, ["info", str(root)]).output


# -- damaged result files ------------------------------------------------------------------
def _flip_byte(path: Path, at: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _check_damaged(root: Path, fragment: str) -> None:
    """Queries of ``rankings`` fail with a one-line QueryError naming the file and the fix;
    the other views keep answering."""
    f = root / "results" / "rankings" / "R.parquet"
    st = open_store(root, verify=False)
    for q in ("SELECT count(*) FROM rankings", "SELECT * FROM top_neurons('R', k := 2)",
              "EXPLAIN ANALYZE PIVOT rankings ON stack USING max(score)",
              "SELECT count(*) FROM examples e, rankings r WHERE r.layer = 0",
              "SUMMARIZE rankings", "EXPLAIN ANALYZE SELECT count(*) FROM rankings",
              "PIVOT rankings ON stack USING max(score)"):
        with pytest.raises(QueryError) as e:
            st.sql(q).fetchall()
        msg = str(e.value)
        assert len(msg.splitlines()) == 1, msg
        assert str(f) in msg and fragment in msg and "neurondb verify" in msg, msg
    assert st.sql("SELECT count(*) FROM examples").fetchall() == [(2 * N_EX,)]
    assert st.sql('SELECT count(*) FROM "overlaps"').fetchall()[0][0] > 0
    assert "rankings" in describe_views(st.connection)
    st.close()
    res = runner.invoke(app, ["query", str(root), "SELECT count(*) FROM rankings",
                              "--no-verify"])
    errors = [x for x in res.output.splitlines() if x.startswith("error")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    assert str(f) in errors[0] and "neurondb verify" in errors[0]


def test_damaged_result_file_fails_its_view_only(tmp_path):
    root = build_store(tmp_path / "s")
    f = root / "results" / "rankings" / "R.parquet"
    _flip_byte(f)  # same size, another sha256
    assert f.stat().st_size == result_entry(root, "rankings", "R")["bytes"]
    _check_damaged(root, "damaged")


def test_truncated_result_file_fails_its_view(tmp_path):
    root = build_store(tmp_path / "s")
    f = root / "results" / "rankings" / "R.parquet"
    f.write_bytes(f.read_bytes()[:-100])
    _check_damaged(root, "damaged")


def test_unreadable_result_without_entry_fails_its_view(tmp_path):
    """No catalog entry (written outside neurondb): the file is never dropped silently."""
    root = build_store(tmp_path / "s")
    (root / "catalog" / "results" / "rankings" / "R.json").unlink()
    (root / "results" / "rankings" / "R.parquet").write_bytes(b"not a parquet file at all")
    _check_damaged(root, "not in the catalog")


def test_missing_recorded_result_fails_its_view(tmp_path):
    root = build_store(tmp_path / "s")
    (root / "results" / "rankings" / "R.parquet").unlink()
    _check_damaged(root, "missing")


def test_intact_recorded_results_are_read(tmp_path):
    """A second ranking, recorded: both answer, nothing is reported damaged."""
    root = build_store(tmp_path / "s")
    st = open_store(root)
    random_ranking(st, seed=2, name="R2")
    p = root / "results" / "rankings" / "R2.parquet"
    if result_entry(root, "rankings", "R2") is None:
        record_result(root, "rankings", "R2", p)
    st.close()
    st = open_store(root)
    assert st.connection.damaged == {}
    assert st.sql("SELECT name, count(*) FROM rankings GROUP BY 1 ORDER BY 1").fetchall() == [
        ("R", 20), ("R2", 20)]
    st.close()


def test_unregistered_result_directory_is_not_a_view(tmp_path):
    """Only registered result kinds become views (a stray directory cannot name one)."""
    root = build_store(tmp_path / "s")
    d = root / "results" / "select"
    d.mkdir()
    pq.write_table(pa.table({"x": [1]}), d / "x.parquet")
    st = open_store(root, verify=False)
    assert "select" not in st.connection.views
    assert st.sql("SELECT 1").fetchall() == [(1,)]
    st.close()


def test_unreadable_shard_file_names_its_view_and_the_fix(tmp_path):
    """A shard file that is no longer Parquet (same size, so the quick check passes): the
    query fails with one line naming the view, the file and `neurondb verify`."""
    root = build_store(tmp_path / "s")
    f = sorted(root.glob("runs/a/shards/*/examples.parquet"))[1]
    data = f.read_bytes()
    f.write_bytes(data[:4] + bytes(len(data) - 304) + data[-300:])
    st = open_store(root)
    with pytest.raises(QueryError) as e:
        st.connection.arrow("SELECT sum(example_id) AS s, max(text) AS t FROM examples")
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "examples" in msg and str(f) in msg
    assert "neurondb verify" in msg
    assert st.sql("SELECT count(*) FROM rankings").fetchall() == [(20,)]
    st.close()
