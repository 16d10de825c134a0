"""Raw, undecoded access to one stored ``(stack, layer)`` tensor, one HDF5 chunk row at a time.

The store keeps ``[rows, d_ff]`` tensors chunked as ``[chunk_rows, 64]`` without compression
(:mod:`neurondb.store.tensors`), one file per shard of a run. Reading a row block through h5py
scatters every chunk into a row-major buffer, and decoding float16 to float32 with NumPy runs
at ~0.6 G values/s on this hardware: both cost more than the analyses themselves. A
:class:`RawLayer` instead reads the chunks of one chunk row with ``preadv`` straight into a
*chunk-major* buffer ``[n_col_chunks, chunk_rows, chunk_cols]`` in the storage dtype's bits
(``<u2`` for float16/bfloat16, ``<f4`` for float32). Kernels compare those bits exactly
(:mod:`neurondb.query.thresholds`), so nothing is decoded.

A run's rows are the concatenation of its shards; a *block* is one chunk row of one shard,
at global rows ``start .. start + n``. When direct access to a shard is not possible (a
filtered/compressed or contiguous dataset, chunks not all allocated, a user block) its blocks
are filled through h5py instead, into the same buffers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from neurondb.store.errors import StoreError
from neurondb.store.reader import Store
from neurondb.store.tensors import damaged

STORAGE_BITS = {"float16": np.dtype("<u2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4")}
H5_READ_DTYPE = {"float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4")}
DEFAULT_CHUNK_COLS = 64


@dataclass(frozen=True)
class Block:
    """Chunk row ``chunk`` of shard ``shard``: global rows ``start .. start + n``."""

    shard: int
    chunk: int
    start: int
    n: int

#: read uncompressed chunks straight from the file with ``preadv`` when the layout allows it;
#: False reads every chunk through h5py (the fallback, which gives the same values)
DIRECT_READS = True


class _Shard:
    """One shard's dataset, its chunk geometry and (if possible) its chunk file offsets."""

    def __init__(self, ds, path, offset: int, bits: np.dtype, cw: int):
        self.ds, self.path, self.offset = ds, path, int(offset)
        self.n_rows, self.d = (int(x) for x in ds.shape)
        self.chunk_rows = int(ds.chunks[0]) if ds.chunks is not None else 1024
        self.chunk_cols = cw
        self.ncc = -(-self.d // cw)
        self.runs = self._chunk_runs(bits)
        self.fd: int | None = None

    def _chunk_runs(self, bits: np.dtype) -> list[list[tuple[int, int, int]]] | None:
        """Per chunk row, ``(first col chunk, end col chunk, file offset)`` of contiguous runs;
        None (read through h5py) when direct reads are off or the layout does not allow them."""
        if not DIRECT_READS:
            return None
        ds = self.ds
        if ds.chunks is None or tuple(ds.chunks) != (self.chunk_rows, self.chunk_cols):
            return None
        if sys.byteorder != "little" or self.n_rows == 0 or not hasattr(os, "preadv"):
            return None
        if ds.file.userblock_size != 0 or ds.id.get_create_plist().get_nfilters() != 0:
            return None
        if ds.dtype.byteorder == ">" or ds.dtype.itemsize != bits.itemsize:
            return None
        nrc = -(-self.n_rows // self.chunk_rows)
        nbytes = self.chunk_rows * self.chunk_cols * bits.itemsize
        offs = np.full((nrc, self.ncc), -1, np.int64)
        ok = [True]

        def visit(info) -> None:
            r, c = info.chunk_offset
            if info.filter_mask != 0 or info.size != nbytes or info.byte_offset is None:
                ok[0] = False
                return
            offs[r // self.chunk_rows, c // self.chunk_cols] = info.byte_offset

        try:
            ds.id.chunk_iter(visit)
        except (AttributeError, RuntimeError, ValueError):
            return None
        if not ok[0] or (offs < 0).any():
            return None
        runs: list[list[tuple[int, int, int]]] = []
        for k in range(nrc):
            row, c0 = [], 0
            for c in range(1, self.ncc + 1):
                if c == self.ncc or offs[k, c] != offs[k, c - 1] + nbytes:
                    row.append((c0, c, int(offs[k, c0])))
                    c0 = c
            runs.append(row)
        return runs


class RawLayer:
    """One ``(run, kind, stack, layer)`` tensor read as blocks of raw storage bits.

    ``blocks``: every chunk row of every shard, in row order. ``read(block, out)`` fills
    ``out`` (from :meth:`new_buffer`, ``[n_col_chunks, chunk_rows, chunk_cols]``) and returns
    ``out[:, :block.n]``; columns past ``d`` in the last column chunk are padding.
    ``direct``: every shard is read with ``preadv`` (then concurrent ``read`` calls on
    different buffers are thread-safe).
    """

    def __init__(self, store: Store, run: str, stack: str, layer: int, kind: str = "activations"):
        tset = store.tensor(run, kind)
        self.storage = str(tset.dtype)
        if self.storage not in STORAGE_BITS:
            raise StoreError(f"run {run!r}: unknown storage dtype {self.storage!r}")
        self.bits = STORAGE_BITS[self.storage]
        readers = list(getattr(tset, "readers", [tset]))
        datasets = [r.dataset(stack, layer) for r in readers]
        self.d = int(datasets[0].shape[1])
        cws = {int(ds.chunks[1]) for ds in datasets if ds.chunks is not None}
        cw = cws.pop() if len(cws) == 1 else min(DEFAULT_CHUNK_COLS, self.d)
        offset, self._shards = 0, []
        for r, ds in zip(readers, datasets):
            if int(ds.shape[1]) != self.d:
                raise StoreError(f"run {run!r}: shards of {stack} layer {layer} differ in width; "
                                 "the run is damaged, re-extract it")
            with damaged(r.path, f"{stack} layer {layer}"):
                self._shards.append(_Shard(ds, r.path, offset, self.bits, cw))
            offset += int(ds.shape[0])
        self.n_rows = offset
        self.chunk_cols = cw
        self.n_col_chunks = -(-self.d // cw)
        self.chunk_rows = max(s.chunk_rows for s in self._shards)
        self.blocks = [Block(i, j, s.offset + j * s.chunk_rows,
                             min(s.chunk_rows, s.n_rows - j * s.chunk_rows))
                       for i, s in enumerate(self._shards)
                       for j in range(-(-s.n_rows // s.chunk_rows))]
        self.direct = all(s.runs is not None for s in self._shards)
        for s in self._shards:
            if s.runs is not None:
                with damaged(s.path):
                    s.fd = os.open(s.path, os.O_RDONLY)
        self._h5buf: np.ndarray | None = None

    def new_buffer(self) -> np.ndarray:
        """A buffer for :meth:`read`: ``[n_col_chunks, chunk_rows, chunk_cols]`` storage bits."""
        return np.zeros((self.n_col_chunks, self.chunk_rows, self.chunk_cols), self.bits)

    def read(self, block: Block, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` with ``block``; returns ``out[:, :block.n]``. A read failure (EIO, a
        damaged HDF5 structure) is one line naming the shard file (``neurondb verify``)."""
        s = self._shards[block.shard]
        with damaged(s.path):
            return self._read(s, block, out)

    def _read(self, s: _Shard, block: Block, out: np.ndarray) -> np.ndarray:
        if s.runs is not None:
            whole = s.chunk_rows == out.shape[1]
            for c0, c1, off in s.runs[block.chunk]:
                views = ([memoryview(out[c0:c1]).cast("B")] if whole else
                         [memoryview(out[c, :s.chunk_rows]).cast("B") for c in range(c0, c1)])
                want = sum(len(v) for v in views)
                if _preadv_all(s.fd, views, off) != want:
                    raise StoreError(f"{s.path} is shorter than its chunk index says; the file "
                                     "is damaged, run `neurondb verify` and re-extract")
            return out[:, :block.n]
        return self._read_h5(s, block, out)

    def _read_h5(self, s: _Shard, block: Block, out: np.ndarray) -> np.ndarray:
        cw, ncc, nr = self.chunk_cols, self.n_col_chunks, block.n
        if self._h5buf is None or self._h5buf.shape[0] < nr:
            self._h5buf = np.zeros((self.chunk_rows, ncc * cw), H5_READ_DTYPE[self.storage])
        buf = self._h5buf[:nr]
        r0 = block.start - s.offset
        s.ds.read_direct(buf, np.s_[r0:r0 + nr, :], np.s_[:, :self.d])
        out[:, :nr] = buf.view(self.bits).reshape(nr, ncc, cw).transpose(1, 0, 2)
        return out[:, :nr]

    def close(self) -> None:
        for s in self._shards:
            if s.fd is not None:
                os.close(s.fd)
                s.fd = None

    def __enter__(self) -> RawLayer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _preadv_all(fd: int, views: list[memoryview], offset: int) -> int:
    """Read contiguous file bytes at ``offset`` into ``views`` in order; returns bytes read."""
    total = sum(len(v) for v in views)
    got = 0
    while got < total:
        skip, rest = got, []
        for v in views:
            if skip >= len(v):
                skip -= len(v)
                continue
            rest.append(v[skip:])
            skip = 0
        n = os.preadv(fd, rest, offset + got)
        if n <= 0:
            break
        got += n
    return got


def chunk_major_to_rows(block: np.ndarray, d: int) -> np.ndarray:
    """``[n_col_chunks, n, chunk_cols]`` -> row-major ``[n, d]`` (a copy; for tests and tools)."""
    ncc, n, cw = block.shape
    return np.ascontiguousarray(block.transpose(1, 0, 2).reshape(n, ncc * cw)[:, :d])
