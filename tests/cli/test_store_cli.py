"""The CLI as a user runs it: extract, info, query (formats, read-only, errors)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_path, sentiment_dir):
    out = tmp_path_factory.mktemp("cli") / "store"
    res = runner.invoke(app, ["extract", str(tiny_path("bert")), "--data", str(sentiment_dir),
                              "--template", "{text} It was {mask}.", "--verbalizer", "bad,good",
                              "--positions", "mask,first", "--stats-split", "train", "--grad",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "estimated store size" in res.output
    return out


def test_info_lists_runs_and_views(store):
    res = runner.invoke(app, ["info", str(store)])
    assert res.exit_code == 0, res.output
    for word in ("sentiment0-validation", "sentiment0-train", "stats", "tokens", "activations("):
        assert word in res.output


def test_query_formats(store, tmp_path):
    sql = ("SELECT e.label, avg(a.value) AS mean FROM activations(layer := 1, neuron := 3) a "
           "JOIN examples e USING (run, example_id) WHERE a.slot = 'mask' GROUP BY e.label ORDER BY 1")
    res = runner.invoke(app, ["query", str(store), sql, "--format", "csv"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0] == '"label","mean"' and len(lines) == 3
    res = runner.invoke(app, ["query", str(store), sql, "--format", "json"])
    rows = [json.loads(x) for x in res.output.strip().splitlines()]
    assert [r["label"] for r in rows] == [0, 1]
    out = tmp_path / "q.parquet"
    res = runner.invoke(app, ["query", str(store), sql, "--format", "parquet", "--output", str(out)])
    assert res.exit_code == 0 and pq.read_table(out).num_rows == 2
    res = runner.invoke(app, ["query", str(store), "SELECT count(*) AS n FROM gradients(layer := 0)"])
    assert res.exit_code == 0 and str(12 * 2 * 48) in res.output


def test_query_is_read_only_and_errors_are_one_line(store):
    for sql in (f"COPY (SELECT 1) TO '{store}/runs/x.csv'", "DROP VIEW examples",
                "CREATE TABLE t AS SELECT 1", "SELECT 1; DELETE FROM examples"):
        res = runner.invoke(app, ["query", str(store), sql])
        assert res.exit_code == 2
        assert "read-only" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (store / "runs" / "x.csv").exists()
    res = runner.invoke(app, ["query", str(store), "SELECT * FROM activations(run := 'nope')"])
    assert res.exit_code == 2 and "not in the store" in res.output
    res = runner.invoke(app, ["query", str(store) + "-missing", "SELECT 1"])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_query_output_that_cannot_be_written_is_one_line(store, tmp_path):
    """--output a directory was an IsADirectoryError traceback; a missing directory or a
    failing write is one line too, and a failed write leaves no partial file."""
    from neurondb.store import failpoints

    sql = "SELECT 1 AS a"
    for out, msg in ((tmp_path, f"--output: {tmp_path} is a directory; give a file name"),
                     (tmp_path / "no" / "a.csv", f"{tmp_path / 'no'} does not exist")):
        res = runner.invoke(app, ["query", str(store), sql, "--format", "csv", "--output",
                                  str(out)])
        assert res.exit_code == 2 and msg in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"a.{fmt}"
        with failpoints.armed("atomic.replace", "enospc"):
            res = runner.invoke(app, ["query", str(store), sql, "--format", fmt, "--output",
                                      str(out)])
        assert res.exit_code == 2 and "ENOSPC" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
        assert not out.exists() and list(tmp_path.iterdir()) == []


def test_extract_error_is_one_line(tmp_path, tiny_path, sentiment_dir):
    res = runner.invoke(app, ["extract", str(tiny_path("bert")), "--data", str(sentiment_dir),
                              "--text-field", "review", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2
    assert res.output.startswith("error: the data has no text field 'review'")
    assert not (tmp_path / "s").exists()


def test_python_api_matches_sql(store):
    import numpy as np

    import neurondb

    st = neurondb.open(store)
    x = st.activations(1, neurons=[3])
    sql = st.sql("SELECT value FROM activations(layer := 1, neuron := 3) ORDER BY run, example_id, "
                 "position").fetchall()
    rows = st.rows().to_pandas().sort_values(["example_id", "position"])
    np.testing.assert_allclose(np.array([v for (v,) in sql]), x[rows.row.to_numpy(), 0])
    chunks = list(st.iter_activations(0, chunk_rows=5))
    assert sum(c.shape[0] for _, c in chunks) == 24 and all(c.shape[0] <= 5 for _, c in chunks)
    st.close()


def test_two_stores_open_together(store, tmp_path, tiny_path, sentiment_dir):
    other = tmp_path / "other"
    res = runner.invoke(app, ["extract", str(tiny_path("gpt2")), "--data", str(sentiment_dir),
                              "--template", "{text} It was {mask}.", "--verbalizer", "bad,good",
                              "--positions", "last", "--run", "gpt2-val", "--out", str(other)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["query", str(store), "SELECT store, run, count(*) AS n FROM examples "
                              "JOIN runs USING (run) GROUP BY ALL ORDER BY run", "--with", str(other),
                              "--format", "csv"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()[1:]
    assert lines == ['"other","gpt2-val",12', '"store","sentiment0-train",24',
                     '"store","sentiment0-validation",12']
    res = runner.invoke(app, ["query", str(store), "SELECT count(*) AS n FROM activations("
                              "run := 'gpt2-val', stack := 'decoder', layer := 1)", "--with",
                              str(other), "--format", "csv"])
    # each run is read with its own model's shape (12 rows x 48 neurons)
    assert res.exit_code == 0 and res.output.strip().splitlines()[1] == "576"
    res = runner.invoke(app, ["query", str(store), "SELECT count(*) FROM activations(layer := 7)",
                              "--with", str(other)])
    assert res.exit_code == 2 and "layer 7 is out of range" in res.output


def test_query_table_shows_brackets_as_data(tmp_path):
    """Cell values are data, never rich markup: the firing-token marker ``[[as]]`` of
    ``top_contexts`` and a ``[bold]`` in a text are printed as they are."""
    from typer.testing import CliRunner

    from neurondb.cli.app import app
    from neurondb.testing_stores import make_store

    root = make_store(tmp_path / "s")
    res = CliRunner().invoke(app, ["query", str(root), "SELECT 'us [[as]] x' AS c, '[bold]y' AS d"])
    assert res.exit_code == 0, res.output
    assert "us [[as]] x" in res.output and "[bold]y" in res.output


def test_info_of_a_profile_run(tmp_path, tiny_path, sentiment_dir):
    """A profile run has no storage dtype (it stores no tensors), and its size counts the
    shard state it shares with the run (a hard link) once: the size of its distinct files."""
    import neurondb

    out = tmp_path / "s"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, split="train",
                     readout="none", profile=True, top_k=2, run="p", progress=False).close()
    res = runner.invoke(app, ["info", str(out)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("│ p "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[2] == "profile" and cells[9] == "-", cells
    files = {(f.stat().st_ino): f.stat().st_size for f in (out / "runs" / "p").rglob("*")
             if f.is_file()}
    assert cells[10] == f"{sum(files.values()) / 1e6:,.1f} MB"
