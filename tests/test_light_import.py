"""Reading a store never imports torch or transformers (issue 13, item 4: a light import)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run

CHILD = """
import sys
import neurondb
s = neurondb.open(sys.argv[1])
assert s.sql("SELECT 1").fetchall() == [(1,)]
assert s.sql("SELECT count(*) FROM examples WHERE run = 'ev'").fetchall()[0][0] == 12
s.activations(0, run="ev")
import neurondb.query, neurondb.report
neurondb.query.predictivity(s, "ev", "tr", write=False)
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print("HEAVY", heavy)
"""


def test_open_sql_and_analyses_do_not_import_torch(tmp_path):
    root = make_store(tmp_path / "s")
    rng = np.random.default_rng(0)
    slots = ["prompt:0", "mask"]
    labels = np.arange(12) % 2
    acts = {("encoder", la): rng.normal(size=(12, len(slots), 16)).astype(np.float32)
            for la in range(2)}
    write_stats_run(root, "tr", "train", labels, slots, acts)
    write_periodic_run(root, "ev", "validation", labels, slots, acts)
    out = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True,
                         text=True, check=True).stdout
    assert "HEAVY []" in out, out


def test_cli_query_does_not_import_torch(tmp_path):
    root = make_store(tmp_path / "s")
    code = ("import sys; sys.argv = ['neurondb', 'query', sys.argv[1], 'SELECT 1'];"
            "import neurondb.cli.app as a\n"
            "try:\n    a.main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                         text=True, check=True).stdout
    assert "HEAVY []" in out, out



SQL_ONLY = """
import sys
import neurondb
s = neurondb.open(sys.argv[1])
assert s.sql("SELECT count(*) FROM examples WHERE run = 'ev'").fetchall()[0][0] == 12
assert s.sql("SELECT count(*) FROM rows").fetchall()[0][0] > 0
print("HEAVY", sorted(m for m in ("torch", "transformers", "pandas", "scipy", "pyarrow.dataset")
                      if m in sys.modules))
"""


def test_open_and_sql_import_neither_pandas_nor_arrow_datasets(tmp_path):
    """Opening a store and running SQL is a light import: the store's tables reach DuckDB
    through neurondb.query.parquet_files, not pyarrow.dataset (which imports pandas)."""
    root = make_store(tmp_path / "s")
    rng = np.random.default_rng(0)
    labels = np.arange(12) % 2
    acts = {("encoder", la): rng.normal(size=(12, 2, 16)).astype(np.float32) for la in range(2)}
    write_periodic_run(root, "ev", "validation", labels, ["prompt:0", "mask"], acts)
    out = subprocess.run([sys.executable, "-c", SQL_ONLY, str(root)], capture_output=True,
                         text=True, check=True).stdout
    assert "HEAVY []" in out, out
