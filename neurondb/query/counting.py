"""The predictivity kernel: per (class, slot, neuron), how many rows have ``h > base``.

``count_above`` streams one stored layer by HDF5 chunk rows (:class:`RawLayer` blocks, memory bounded
by a few chunk rows per thread), compares the stored bits with exact per-slot thresholds
(:class:`Thresholds`) and accumulates counts per class without a per-example Python loop:

* **periodic rows** (every example captures the same ``S`` slots in the same order, e.g. 100
  prompt positions): the thresholds are tiled along rows once per layer, so a chunk row starting
  at phase ``p = row % S`` compares against a *view* of the tile. The comparison is written
  into a buffer padded to whole examples, which is then ``[examples, S * cols]``; counts per
  class are sums over the examples of that class. Booleans are summed eight at a time as
  ``uint64`` words (each byte a counter, flushed to int64 before it can reach 255).
* **any other layout**: thresholds are gathered per row, and rows are summed per
  ``(class, slot)`` group by a sparse one-hot product, 255 rows at a time.

The counts ``G[c, s, i]`` give every accuracy of SPEC §2 (see :mod:`neurondb.query.predictivity`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from neurondb.query.layout import RunLayout
from neurondb.query.rawtensor import Block, RawLayer
from neurondb.query.thresholds import Thresholds

_BYTE_MAX = 255


def _pad_cols(a: np.ndarray, width: int) -> np.ndarray:
    """``[S, d]`` -> ``[S, width]`` with zero columns appended."""
    if a.shape[1] == width:
        return a
    out = np.zeros((a.shape[0], width), a.dtype)
    out[:, :a.shape[1]] = a
    return out


def _chunk_major(a: np.ndarray, ncc: int, cw: int) -> np.ndarray:
    """``[S, d]`` -> contiguous ``[ncc, S, cw]`` (column chunk major)."""
    p = _pad_cols(a, ncc * cw)
    return np.ascontiguousarray(p.reshape(a.shape[0], ncc, cw).transpose(1, 0, 2))


def _tile_rows(a: np.ndarray, n: int) -> np.ndarray:
    """``[ncc, S, cw]`` -> ``[ncc, >= n, cw]`` repeating the S rows (periodic extension)."""
    reps = -(-n // a.shape[1])
    return np.ascontiguousarray(np.tile(a, (1, reps, 1)))


def count_above(raw: RawLayer, thr: Thresholds, lay: RunLayout, classes: np.ndarray,
                n_classes: int, threads: int = 1) -> np.ndarray:
    """Counts ``[n_classes, S, d]`` (int64) of rows with ``h > base``, per class and slot.

    ``thr``: operands for the ``S = len(lay.slots)`` slots in ``lay.slots`` order.
    ``classes``: ``[n_examples]`` class index of each example of ``lay`` (-1: not counted).
    ``threads``: worker threads over chunk rows (NumPy releases the GIL; 1 = inline).
    """
    S, d = len(lay.slots), raw.d
    if raw.n_rows != lay.n_rows:
        raise ValueError(f"tensor has {raw.n_rows} rows but rows.parquet lists {lay.n_rows}")
    out = np.zeros((n_classes, S, d), np.int64)
    if lay.n_rows == 0 or S == 0:
        return out
    threads = max(1, int(threads)) if raw.direct else 1
    threads = min(threads, len(raw.blocks))
    if lay.period is not None:
        worker = _PeriodicWorker(raw, thr, lay, classes, n_classes)
    else:
        worker = _GeneralWorker(raw, thr, lay, classes, n_classes)
    parts = [raw.blocks[i::threads] for i in range(threads)]
    if threads == 1:
        results = [worker.run(parts[0])]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(worker.run, parts))
    return worker.finish(sum(results[1:], results[0]), out)


class _PeriodicWorker:
    """Shared read-only state for the periodic layout; ``run`` holds per-thread buffers."""

    def __init__(self, raw: RawLayer, thr: Thresholds, lay: RunLayout, classes: np.ndarray,
                 n_classes: int):
        self.raw, self.lay, self.C = raw, lay, n_classes
        self.S = S = lay.period
        self.ncc, self.cr, self.cw = raw.n_col_chunks, raw.chunk_rows, raw.chunk_cols
        self.cwp = -(-self.cw // 8) * 8
        perm = lay.block_slots
        n_tile = S + self.cr
        self.thr_t = _tile_rows(_chunk_major(thr.thr[perm], self.ncc, self.cw), n_tile)
        self.mask_t = (None if thr.mask is None
                       else _tile_rows(_chunk_major(thr.mask[perm], self.ncc, self.cw), n_tile))
        self.y_block = classes[lay.block_ex]
        self.classes = [int(c) for c in np.unique(self.y_block) if c >= 0] or [0]
        self.nexb = -(-(S - 1 + self.cr) // S)

    def run(self, blocks: list[Block]) -> np.ndarray:
        S, ncc, cw, cwp, C = self.S, self.ncc, self.cw, self.cwp, self.C
        words = S * cwp // 8
        buf = self.raw.new_buffer()
        gt = np.zeros((ncc, self.nexb * S, cwp), bool)
        g64_all = gt.view(np.uint64).reshape(ncc, self.nexb, words)
        acc64 = np.zeros((C, ncc, words), np.uint64)
        acc = np.zeros((C, ncc, words * 8), np.int64)
        since = 0
        for blk in blocks:
            r0 = blk.start
            x = self.raw.read(blk, buf)
            nr = x.shape[1]
            p, e0 = r0 % S, r0 // S
            nex = -(-(p + nr) // S)
            if self.mask_t is not None:
                np.bitwise_xor(x, self.mask_t[:, p:p + nr], out=x)
            np.greater(x, self.thr_t[:, p:p + nr], out=gt[:, p:p + nr, :cw])
            if p:
                gt[:, :p] = False
            if p + nr < nex * S:
                gt[:, p + nr:nex * S] = False
            for a in range(0, nex, _BYTE_MAX):
                b = min(nex, a + _BYTE_MAX)
                if since + (b - a) > _BYTE_MAX:
                    acc += acc64.view(np.uint8)
                    acc64[:] = 0
                    since = 0
                self._count(g64_all[:, a:b], self.y_block[e0 + a:e0 + b], acc64)
                since += b - a
        acc += acc64.view(np.uint8)
        return acc

    def _count(self, g64: np.ndarray, yb: np.ndarray, acc64: np.ndarray) -> None:
        """Add the examples ``g64`` ``[ncc, n <= 255, words]`` to ``acc64[class]`` by class."""
        first, *others = self.classes
        if (yb >= 0).all():
            rest = np.add.reduce(g64, axis=1)
            for c in others:
                sel = yb == c
                if sel.any():
                    part = np.add.reduce(g64[:, sel], axis=1)
                    acc64[c] += part
                    rest -= part
            acc64[first] += rest
        else:
            for c in self.classes:
                sel = yb == c
                if sel.any():
                    acc64[c] += np.add.reduce(g64[:, sel], axis=1)

    def finish(self, acc: np.ndarray, out: np.ndarray) -> np.ndarray:
        C, S, ncc, cw, cwp, d = self.C, self.S, self.ncc, self.cw, self.cwp, self.raw.d
        blk = acc.reshape(C, ncc, S, cwp)[..., :cw].transpose(0, 2, 1, 3).reshape(C, S, ncc * cw)
        out[:, self.lay.block_slots, :] = blk[:, :, :d]
        return out


class _GeneralWorker:
    """Any row layout: per-row gathered thresholds, per-(class, slot) sparse sums."""

    def __init__(self, raw: RawLayer, thr: Thresholds, lay: RunLayout, classes: np.ndarray,
                 n_classes: int):
        self.raw, self.lay, self.C = raw, lay, n_classes
        self.S = len(lay.slots)
        self.ncc, self.cr, self.cw = raw.n_col_chunks, raw.chunk_rows, raw.chunk_cols
        self.cwp = -(-self.cw // 8) * 8
        self.thr3 = _chunk_major(thr.thr, self.ncc, self.cw)
        self.mask3 = None if thr.mask is None else _chunk_major(thr.mask, self.ncc, self.cw)
        self.row_class = classes[lay.ex_idx]

    def run(self, blocks: list[Block]) -> np.ndarray:
        ncc, cw, cwp, S = self.ncc, self.cw, self.cwp, self.S
        width = ncc * cwp
        buf = self.raw.new_buffer()
        gath = np.empty(ncc * self.cr * cw, self.thr3.dtype)
        gt = np.zeros((self.cr, ncc, cwp), bool)
        acc = np.zeros((self.C * S, width), np.int64)
        for blk in blocks:
            r0 = blk.start
            x = self.raw.read(blk, buf)
            nr = x.shape[1]
            s_r = self.lay.slot_idx[r0:r0 + nr]
            g = gath[:ncc * nr * cw].reshape(ncc, nr, cw)
            if self.mask3 is not None:
                np.take(self.mask3, s_r, axis=1, out=g, mode="clip")
                np.bitwise_xor(x, g, out=x)
            np.take(self.thr3, s_r, axis=1, out=g, mode="clip")
            np.greater(x, g, out=gt[:nr, :, :cw].transpose(1, 0, 2))
            g64 = gt[:nr].view(np.uint64).reshape(nr, width // 8)
            y_r = self.row_class[r0:r0 + nr]
            for a in range(0, nr, _BYTE_MAX):
                b = min(nr, a + _BYTE_MAX)
                keep = np.flatnonzero(y_r[a:b] >= 0)
                if keep.size == 0:
                    continue
                grp = y_r[a:b][keep] * S + s_r[a:b][keep]
                uniq, inv = np.unique(grp, return_inverse=True)
                onehot = sp.csr_matrix((np.ones(keep.size, np.uint64), (inv, keep)),
                                       shape=(uniq.size, b - a))
                sums = np.asarray(onehot @ g64[a:b])
                acc[uniq] += sums.view(np.uint8)
        return acc

    def finish(self, acc: np.ndarray, out: np.ndarray) -> np.ndarray:
        C, S, ncc, cw, cwp, d = self.C, self.S, self.ncc, self.cw, self.cwp, self.raw.d
        full = acc.reshape(C, S, ncc, cwp)[..., :cw].reshape(C, S, ncc * cw)
        out[:] = full[:, :, :d]
        return out
