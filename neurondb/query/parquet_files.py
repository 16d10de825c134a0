"""Parquet files as a table DuckDB scans through Arrow, read lazily and only by Python.

DuckDB never opens the store's files itself (its external access is off: the sandbox of
:mod:`neurondb.query.connection`); it scans this object through its Arrow source protocol
(``duckdb._sources``: ``stream(columns, filters)``), which opens the files anew for each scan,
reads only the columns the query uses (projection pushdown) one record batch at a time
(memory bounded by a batch), and leaves every filter to DuckDB.

Unlike ``pyarrow.dataset`` this imports neither pandas nor Arrow's dataset module, so opening a
store and running SQL stays a light import. A DuckDB without that protocol gets a pyarrow
dataset instead (:func:`lazy_table`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

try:  # DuckDB >= 2: the Arrow scan's source protocol
    from duckdb._sources import ArrowScanSource as _Source
except ImportError:  # pragma: no cover - older DuckDB: lazy_table falls back to pyarrow.dataset
    _Source = None

BATCH_ROWS = 64 * 1024


class ParquetFiles(_Source or object):
    """``files`` read as one table of ``schema``; ``constants[i]`` (optional) gives columns
    of ``schema`` that file ``i`` does not hold, as one value for all its rows (a shard's row
    offset). A column neither a file nor its constants hold reads as null."""

    schema_is_stable = True

    def __init__(self, files: Sequence[str], schema: pa.Schema,
                 constants: Sequence[dict] | None = None):
        if _Source is not None:
            super().__init__(None)
        self.files = list(files)
        self.schema = schema
        self.constants = list(constants) if constants is not None else [{}] * len(self.files)

    # -- the DuckDB source protocol --------------------------------------------------------
    def stream(self, columns: Sequence[int] | None, filters: Sequence) -> tuple[object, bool]:
        """A stream of the ``columns`` (declared indexes; None: all), and True when narrowed."""
        names = self.schema.names if columns is None else [self.schema.names[i] for i in columns]
        return self.reader(names).__arrow_c_stream__(), columns is not None

    def __arrow_c_schema__(self):
        return self.schema.__arrow_c_schema__()

    def __arrow_c_stream__(self, requested_schema=None):
        return self.reader(self.schema.names).__arrow_c_stream__(requested_schema)

    # -- reading ---------------------------------------------------------------------------
    def reader(self, names: Sequence[str]) -> pa.RecordBatchReader:
        out = pa.schema([self.schema.field(n) for n in names])
        return pa.RecordBatchReader.from_batches(out, self._batches(out))

    def to_table(self) -> pa.Table:
        return self.reader(self.schema.names).read_all()

    def _batches(self, out: pa.Schema) -> Iterator[pa.RecordBatch]:
        for path, const in zip(self.files, self.constants):
            try:
                yield from self._file_batches(path, const, out)
            except (OSError, pa.ArrowException) as e:  # a damaged file: say which one
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise OSError(f"{path}: {first}") from e

    def _file_batches(self, path: str, const: dict, out: pa.Schema) -> Iterator[pa.RecordBatch]:
        pf = pq.ParquetFile(path)
        held = set(pf.schema_arrow.names)
        read = [n for n in out.names if n in held and n not in const]
        if not read:  # only constants (or nothing) asked: the row count is enough
            yield _assemble(out, None, const, pf.metadata.num_rows)
            return
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=read):
            yield _assemble(out, batch, const, batch.num_rows)


def constant_array(value: int | str, type_: pa.DataType, n: int) -> pa.Array:
    """``n`` copies of an integer or string ``value``, built from buffers: ``pa.array`` of
    Python objects would import pandas (to recognise pandas objects)."""
    import numpy as np

    if pa.types.is_string(type_):
        b = str(value).encode()
        offsets = (np.arange(n + 1, dtype=np.int32) * len(b)).tobytes()
        return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                      pa.py_buffer(b * n)])
    np_type = np.dtype(f"int{type_.bit_width}")  # the integer columns: row offsets
    return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(
        np.full(n, int(value), dtype=np_type).tobytes())])


class ComputedTable(_Source or object):
    """A table of ``schema`` that ``make()`` computes on the first scan and keeps (a view
    that costs nothing until a query reads it); what ``make`` raises fails that scan only."""

    schema_is_stable = True

    def __init__(self, schema: pa.Schema, make):
        if _Source is not None:
            super().__init__(None)
        self.schema = schema
        self._make = make
        self._table: pa.Table | None = None

    def table(self) -> pa.Table:
        if self._table is None:
            self._table = self._make()
        return self._table

    def stream(self, columns: Sequence[int] | None, filters: Sequence) -> tuple[object, bool]:
        t = self.table()
        if columns is not None:
            t = t.select([self.schema.names[i] for i in columns])
        return t.__arrow_c_stream__(), columns is not None

    def __arrow_c_schema__(self):
        return self.schema.__arrow_c_schema__()

    def __arrow_c_stream__(self, requested_schema=None):
        return self.table().__arrow_c_stream__(requested_schema)


def _assemble(out: pa.Schema, batch: pa.RecordBatch | None, const: dict,
              n: int) -> pa.RecordBatch:
    arrays = []
    for field in out:
        if field.name in const:
            arrays.append(constant_array(const[field.name], field.type, n))
        elif batch is not None and field.name in batch.schema.names:
            col = batch.column(field.name)
            # cast only when the file's type differs: Array.cast imports pyarrow.compute
            arrays.append(col if col.type.equals(field.type) else col.cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=out)


def source_protocol() -> bool:
    """Whether this DuckDB scans :class:`ParquetFiles` / :class:`ComputedTable` lazily."""
    return _Source is not None


def lazy_table(files: Sequence[str], schema: pa.Schema, constants: Sequence[dict] | None = None):
    """What the connection registers for Parquet ``files``: :class:`ParquetFiles`, or on a
    DuckDB without the source protocol a pyarrow dataset (constants as partition
    expressions)."""
    if _Source is not None:
        return ParquetFiles(files, schema, constants)
    import pyarrow.dataset as pads  # pragma: no cover
    import pyarrow.fs as pafs

    parts = None
    if constants is not None:
        parts = []
        for const in constants:
            terms = [pads.field(c) == v for c, v in const.items()]
            expr = terms[0]
            for t in terms[1:]:
                expr = expr & t
            parts.append(expr)
    kw = {"partitions": parts} if parts is not None else {}
    return pads.FileSystemDataset.from_paths(list(files), schema=schema,
                                             format=pads.ParquetFileFormat(),
                                             filesystem=pafs.LocalFileSystem(), **kw)
