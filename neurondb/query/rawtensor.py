"""Raw, undecoded access to one stored ``(stack, layer)`` tensor, one HDF5 chunk row at a time.

The store keeps ``[rows, d_ff]`` tensors chunked as ``[chunk_rows, 64]`` without compression
(:mod:`neurondb.store.tensors`). Reading a row block through h5py scatters every chunk into a
row-major buffer, and decoding float16 to float32 with NumPy runs at ~0.6 G values/s on this
hardware: both cost more than the analyses themselves. A :class:`RawLayer` instead reads the
chunks of one chunk row with ``preadv`` straight into a *chunk-major* buffer
``[n_col_chunks, chunk_rows, chunk_cols]`` in the storage dtype's bits (``<u2`` for
float16/bfloat16, ``<f4`` for float32). Kernels compare those bits exactly
(:mod:`neurondb.query.thresholds`), so nothing is decoded.

When direct access is not possible (a filtered/compressed or contiguous dataset, chunks
not all allocated, a user block) the same buffers are filled through h5py instead.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from neurondb.store.errors import StoreError
from neurondb.store.reader import Store

STORAGE_BITS = {"float16": np.dtype("<u2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4")}
H5_READ_DTYPE = {"float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4")}


@dataclass
class _Geometry:
    n_rows: int
    d: int
    chunk_rows: int
    chunk_cols: int

    @property
    def n_col_chunks(self) -> int:
        return -(-self.d // self.chunk_cols)

    @property
    def n_row_chunks(self) -> int:
        return -(-self.n_rows // self.chunk_rows)


class RawLayer:
    """One ``(run, kind, stack, layer)`` tensor read as chunk rows of raw storage bits.

    ``read(k, out)`` fills ``out`` ``[n_col_chunks, chunk_rows, chunk_cols]`` with chunk row
    ``k`` (rows ``k*chunk_rows ..``; only the first :meth:`rows_in` rows are data; columns past
    ``d`` in the last column chunk are padding). ``direct`` tells whether ``preadv`` is used.
    Thread-safe for concurrent ``read`` calls on different ``out`` buffers when ``direct``.
    """

    def __init__(self, store: Store, run: str, stack: str, layer: int, kind: str = "activations"):
        reader = store.tensor(run, kind)
        ds = reader.dataset(stack, layer)
        self.storage = reader.dtype
        if self.storage not in STORAGE_BITS:
            raise StoreError(f"{reader.path}: unknown storage dtype {self.storage!r}")
        self.bits = STORAGE_BITS[self.storage]
        self.path = reader.path
        self._ds = ds
        n, d = (int(x) for x in ds.shape)
        cr, cw = ds.chunks if ds.chunks is not None else (max(1, min(n, 1024)), d)
        self.geo = _Geometry(n, d, int(cr), int(cw))
        self.n_rows, self.d = n, d
        self.chunk_rows, self.chunk_cols = self.geo.chunk_rows, self.geo.chunk_cols
        self.n_col_chunks, self.n_row_chunks = self.geo.n_col_chunks, self.geo.n_row_chunks
        self._runs = self._chunk_runs(ds)
        self.direct = self._runs is not None
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0)) if self.direct else None
        self._h5buf: np.ndarray | None = None

    # -- chunk index -----------------------------------------------------------------------
    def _chunk_runs(self, ds) -> list[list[tuple[int, int, int]]] | None:
        """Per chunk row, ``(first col chunk, end col chunk, file offset)`` of contiguous runs."""
        if ds.chunks is None or sys.byteorder != "little" or self.geo.n_rows == 0:
            return None
        if ds.file.userblock_size != 0 or ds.id.get_create_plist().get_nfilters() != 0:
            return None
        if ds.dtype.byteorder == ">" or ds.dtype.itemsize != self.bits.itemsize:
            return None
        g = self.geo
        nbytes = g.chunk_rows * g.chunk_cols * self.bits.itemsize
        offs = np.full((g.n_row_chunks, g.n_col_chunks), -1, np.int64)
        ok = [True]

        def visit(info) -> None:
            r, c = info.chunk_offset
            if info.filter_mask != 0 or info.size != nbytes or info.byte_offset is None:
                ok[0] = False
                return
            offs[r // g.chunk_rows, c // g.chunk_cols] = info.byte_offset

        try:
            ds.id.chunk_iter(visit)
        except (AttributeError, RuntimeError, ValueError):
            return None
        if not ok[0] or (offs < 0).any():
            return None
        runs: list[list[tuple[int, int, int]]] = []
        for k in range(g.n_row_chunks):
            row, c0 = [], 0
            for c in range(1, g.n_col_chunks + 1):
                if c == g.n_col_chunks or offs[k, c] != offs[k, c - 1] + nbytes:
                    row.append((c0, c, int(offs[k, c0])))
                    c0 = c
            runs.append(row)
        return runs

    # -- reading ---------------------------------------------------------------------------
    def rows_in(self, k: int) -> int:
        """Number of data rows in chunk row ``k``."""
        return min(self.chunk_rows, self.n_rows - k * self.chunk_rows)

    def new_buffer(self) -> np.ndarray:
        """A buffer for :meth:`read`: ``[n_col_chunks, chunk_rows, chunk_cols]`` storage bits."""
        return np.empty((self.n_col_chunks, self.chunk_rows, self.chunk_cols), self.bits)

    def read(self, k: int, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` with chunk row ``k``; returns ``out[:, :rows_in(k)]``."""
        nr = self.rows_in(k)
        if self.direct:
            for c0, c1, off in self._runs[k]:
                view = memoryview(out[c0:c1]).cast("B")
                got = _pread_into(self._fd, view, off)
                if got != len(view):
                    raise StoreError(f"{self.path} is shorter than its chunk index says; the file "
                                     "is damaged, re-extract the run")
            return out[:, :nr]
        g = self.geo
        r0 = k * g.chunk_rows
        if self._h5buf is None:
            self._h5buf = np.zeros((g.chunk_rows, g.n_col_chunks * g.chunk_cols),
                                   H5_READ_DTYPE[self.storage])
        buf = self._h5buf[:nr]
        self._ds.read_direct(buf, np.s_[r0:r0 + nr, :], np.s_[:, :g.d])
        flat = buf.view(self.bits).reshape(nr, g.n_col_chunks, g.chunk_cols)
        out[:, :nr] = flat.transpose(1, 0, 2)
        return out[:, :nr]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RawLayer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Read ``len(view)`` bytes at ``offset`` into ``view``; returns the bytes read."""
    if hasattr(os, "preadv"):
        got = 0
        while got < len(view):
            n = os.preadv(fd, [view[got:]], offset + got)
            if n <= 0:
                break
            got += n
        return got
    data = os.pread(fd, len(view), offset) if hasattr(os, "pread") else b""
    view[:len(data)] = data
    return len(data)


def chunk_major_to_rows(block: np.ndarray, d: int) -> np.ndarray:
    """``[n_col_chunks, n, chunk_cols]`` -> row-major ``[n, d]`` (a copy; for tests and tools)."""
    ncc, n, cw = block.shape
    return np.ascontiguousarray(block.transpose(1, 0, 2).reshape(n, ncc * cw)[:, :d])
