"""The lazy Parquet table DuckDB scans: only the asked columns are read, per-file constants
fill their columns, missing columns read as null, and every scan reads the files anew."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from neurondb.query.parquet_files import ParquetFiles, constant_array


def _files(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"f{i}.parquet"
        pq.write_table(pa.table({"a": pa.array([i, i + 10], pa.int64()),
                                 "b": pa.array(["x", "y"], pa.string())}), p)
        paths.append(str(p))
    schema = pa.schema([("a", pa.int64()), ("b", pa.string()), ("off", pa.int64()),
                        ("c", pa.float32())])
    return paths, schema


def test_projection_constants_and_nulls(tmp_path):
    paths, schema = _files(tmp_path)
    src = ParquetFiles(paths, schema, [{"off": 0}, {"off": 100}])
    t = src.to_table()
    assert t.column("a").to_pylist() == [0, 10, 1, 11]
    assert t.column("off").to_pylist() == [0, 0, 100, 100]
    assert t.column("c").null_count == 4
    seen = []
    orig = src.reader

    def reader(names):
        seen.append(list(names))
        return orig(names)

    src.reader = reader
    con = duckdb.connect()
    con.register("t", src)
    assert con.sql("SELECT sum(a + off) FROM t").fetchall() == [(222,)]
    assert seen[-1] == ["a", "off"]  # only the columns the query uses
    # a file rewritten between two scans is read anew
    pq.write_table(pa.table({"a": pa.array([5], pa.int64()), "b": ["z"]}), paths[0])
    assert con.sql("SELECT count(*) FROM t").fetchall() == [(3,)]


def test_constant_arrays():
    assert constant_array("ab", pa.string(), 3).to_pylist() == ["ab"] * 3
    assert constant_array(7, pa.int64(), 2).to_pylist() == [7, 7]
    assert constant_array(-1, pa.int32(), 1).to_pylist() == [-1]
    assert constant_array("", pa.string(), 0).to_pylist() == []
