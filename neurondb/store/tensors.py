"""Dense per-token tensors in HDF5: one dataset ``/<stack>/<layer>`` of shape ``[rows, d_ff]``.

Chunks are ``[chunk_rows, 64]`` so that reading one neuron touches 64/d_ff of the file and a
full scan reads whole row blocks. The writer buffers rows per dataset and writes whole
chunk-row blocks, which keeps h5py out of the read-modify-write path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from neurondb.store.codec import decode, numpy_storage_dtype
from neurondb.store.layout import tensor_key

NEURON_CHUNK = 64
CHUNK_BYTES = 4 << 20  # one row block per dataset, about 4 MB
CACHE_BYTES = 64 << 20


def chunk_rows_for(d_ff: int, itemsize: int, expected_rows: int | None = None) -> int:
    """Rows per chunk: about CHUNK_BYTES per row block, at most 1024, and no more than the
    expected row count (so a small run does not allocate a mostly empty chunk)."""
    rows = CHUNK_BYTES // max(1, d_ff * itemsize)
    if expected_rows:
        rows = min(rows, max(16, expected_rows))
    p = 16
    while p * 2 <= min(rows, 1024):
        p *= 2
    return p


class TensorWriter:
    """Append rows ``[n, d_ff]`` per (stack, layer) to one HDF5 file.

    ``widths``: ``{stack: (d_ff per layer, ...)}``. ``dtype``: storage dtype name.
    """

    def __init__(self, path: Path, widths: dict[str, tuple[int, ...]], dtype: str,
                 expected_rows: dict[str, int] | None = None):
        self.path = Path(path)
        self.dtype = dtype
        self.np_dtype = numpy_storage_dtype(dtype)
        self.f = h5py.File(self.path, "w", rdcc_nbytes=CACHE_BYTES)
        self.f.attrs["dtype"] = dtype
        self.datasets: dict[tuple[str, int], h5py.Dataset] = {}
        self.buffers: dict[tuple[str, int], np.ndarray] = {}
        self.fill: dict[tuple[str, int], int] = {}
        self.rows_written: dict[tuple[str, int], int] = {}
        for stack, ws in widths.items():
            for layer, d_ff in enumerate(ws):
                cr = chunk_rows_for(d_ff, self.np_dtype.itemsize,
                                    (expected_rows or {}).get(stack))
                ds = self.f.create_dataset(
                    tensor_key(stack, layer), shape=(0, d_ff), maxshape=(None, d_ff),
                    dtype=self.np_dtype, chunks=(cr, min(NEURON_CHUNK, d_ff)),
                )
                ds.attrs["dtype"] = dtype
                key = (stack, layer)
                self.datasets[key] = ds
                self.buffers[key] = np.empty((cr, d_ff), dtype=self.np_dtype)
                self.fill[key] = 0
                self.rows_written[key] = 0

    def append(self, stack: str, layer: int, rows: np.ndarray) -> None:
        """Append ``rows`` ``[n, d_ff]`` already in the storage dtype."""
        key = (stack, layer)
        buf = self.buffers[key]
        n, i = rows.shape[0], 0
        while i < n:
            f = self.fill[key]
            take = min(n - i, buf.shape[0] - f)
            buf[f:f + take] = rows[i:i + take]
            self.fill[key] = f + take
            i += take
            if self.fill[key] == buf.shape[0]:
                self._flush(key)

    def _flush(self, key: tuple[str, int]) -> None:
        f = self.fill[key]
        if f == 0:
            return
        ds = self.datasets[key]
        start = self.rows_written[key]
        ds.resize(start + f, axis=0)
        ds[start:start + f] = self.buffers[key][:f]
        self.rows_written[key] = start + f
        self.fill[key] = 0

    def close(self) -> None:
        for key in self.datasets:
            self._flush(key)
        self.f.close()

    def abort(self) -> None:
        try:
            self.f.close()
        except Exception:
            pass


class TensorReader:
    """Read float32 rows/neurons of one HDF5 tensor file (activations or gradients)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.f = h5py.File(self.path, "r", rdcc_nbytes=CACHE_BYTES)
        self.dtype = str(self.f.attrs["dtype"])

    def dataset(self, stack: str, layer: int) -> h5py.Dataset:
        key = tensor_key(stack, layer)
        if key not in self.f:
            raise KeyError(f"no tensor {key} in {self.path}")
        return self.f[key]

    def shape(self, stack: str, layer: int) -> tuple[int, int]:
        return tuple(self.dataset(stack, layer).shape)  # type: ignore[return-value]

    def read(self, stack: str, layer: int, rows: slice | np.ndarray | None = None,
             neurons: np.ndarray | list[int] | None = None) -> np.ndarray:
        """float32 ``[n_rows, n_neurons]``; ``rows``/``neurons`` are a slice or index arrays
        in any order (duplicates allowed)."""
        ds = self.dataset(stack, layer)
        if rows is None or isinstance(rows, slice):
            rsel, rback = (slice(None) if rows is None else rows), None
        else:
            r = np.asarray(rows, dtype=np.int64)
            rsel, rback = np.unique(r, return_inverse=True)
            if rsel.size == 0:
                width = ds.shape[1] if neurons is None else len(neurons)
                return np.zeros((0, width), np.float32)
        if neurons is None:
            raw = ds[rsel]
        else:
            idx = np.asarray(neurons, dtype=np.int64)
            uniq, nback = np.unique(idx, return_inverse=True)
            raw = ds[rsel, uniq] if isinstance(rsel, slice) else ds[rsel][:, uniq]
            raw = raw[:, nback]
        if rback is not None:
            raw = raw[rback]
        return decode(raw, self.dtype)

    def iter_chunks(self, stack: str, layer: int, chunk_rows: int | None = None,
                    neurons: np.ndarray | list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, float32 [n, d])`` blocks; memory is bounded by one block."""
        ds = self.dataset(stack, layer)
        n = ds.shape[0]
        step = chunk_rows or max(ds.chunks[0], 8192)
        for start in range(0, n, step):
            yield start, self.read(stack, layer, slice(start, min(n, start + step)), neurons)

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorSet:
    """The tensors of one run and kind across its shards, seen as one ``[rows, d_ff]`` array
    per (stack, layer); global row ``r`` of shard ``k`` is ``offset[k] + local row``."""

    def __init__(self, paths: list[Path]):
        self.readers = [TensorReader(p) for p in paths]
        if not self.readers:
            raise KeyError("no tensor files")
        self.dtype = self.readers[0].dtype
        self.path = self.readers[0].path
        self._offsets: dict[tuple[str, int], np.ndarray] = {}

    def offsets(self, stack: str, layer: int) -> np.ndarray:
        """``[n_shards + 1]`` cumulative row counts."""
        key = (stack, layer)
        if key not in self._offsets:
            n = [r.shape(stack, layer)[0] for r in self.readers]
            self._offsets[key] = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
        return self._offsets[key]

    def shape(self, stack: str, layer: int) -> tuple[int, int]:
        return int(self.offsets(stack, layer)[-1]), self.readers[0].shape(stack, layer)[1]

    def dataset(self, stack: str, layer: int):
        """The h5py dataset when the run has one shard (raw readers use it)."""
        if len(self.readers) != 1:
            raise ValueError("this run has several shards; use shard_datasets()")
        return self.readers[0].dataset(stack, layer)

    def shard_datasets(self, stack: str, layer: int) -> list:
        return [r.dataset(stack, layer) for r in self.readers]

    def read(self, stack: str, layer: int, rows: slice | np.ndarray | None = None,
             neurons: np.ndarray | list[int] | None = None) -> np.ndarray:
        """float32 ``[n_rows, n_neurons]`` at global rows (a slice or sorted/unsorted indices)."""
        off = self.offsets(stack, layer)
        if len(self.readers) == 1:
            return self.readers[0].read(stack, layer, rows, neurons)
        if rows is None or isinstance(rows, slice):
            start, stop, step = (rows or slice(None)).indices(int(off[-1]))
            if step != 1:
                rows = np.arange(start, stop, step)
            else:
                parts = []
                for k, r in enumerate(self.readers):
                    a, b = max(start, off[k]), min(stop, off[k + 1])
                    if a < b:
                        parts.append(r.read(stack, layer, slice(a - off[k], b - off[k]), neurons))
                if parts:
                    return np.concatenate(parts)
                width = len(neurons) if neurons is not None else self.shape(stack, layer)[1]
                return np.zeros((0, width), np.float32)
        idx = np.asarray(rows, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        shard = np.searchsorted(off, sorted_idx, side="right") - 1
        width = len(neurons) if neurons is not None else self.shape(stack, layer)[1]
        out = np.empty((idx.size, width), np.float32)
        for k in np.unique(shard):
            sel = shard == k
            local = sorted_idx[sel] - off[k]
            out[order[sel]] = self.readers[k].read(stack, layer, local, neurons)
        return out

    def iter_chunks(self, stack: str, layer: int, chunk_rows: int | None = None,
                    neurons: np.ndarray | list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(global_start_row, float32 [n, d])`` blocks, shard by shard."""
        off = self.offsets(stack, layer)
        for k, r in enumerate(self.readers):
            for start, block in r.iter_chunks(stack, layer, chunk_rows, neurons):
                yield int(off[k]) + start, block

    def close(self) -> None:
        for r in self.readers:
            r.close()
