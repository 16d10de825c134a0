"""The predictivity kernel: per slot and neuron, how many rows have ``h > base``.

``count_above`` streams one stored layer by HDF5 chunk rows (:class:`RawLayer` blocks, memory
bounded by a few chunk rows per thread), compares the stored bits with exact per-slot
thresholds (:class:`Thresholds`) and accumulates counts without a per-example Python loop:

* **periodic rows** (every example captures the same ``S`` slots in the same order, e.g. 100
  prompt positions): the thresholds are tiled along rows once per layer, so a chunk row
  starting at phase ``p = row % S`` compares against a *view* of the tile. The comparison is
  written into a buffer padded to whole examples, which is then ``[examples, S * cols]``;
  counts are sums over examples. Booleans are summed eight at a time as ``uint64`` words
  (each byte a counter, widened to int64 before it can pass 255).
* **any other layout**: thresholds are gathered per row, and rows are summed per group
  (slot, or class and slot) by a sparse one-hot product, 255 rows at a time.

Two outputs: with ``positive=c`` (a binary task) the agreement counts ``A[t, i]`` = labelled
rows at slot ``t`` with ``(h > base) == (y == c)`` (each example's comparison is flipped when
its label is not ``c``, one pass, then one sum); without, the counts ``G[k, t, i]`` of rows of
class ``k`` with ``h > base`` (one-vs-rest for any number of classes).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from neurondb.query.layout import RunLayout
from neurondb.query.rawtensor import Block, RawLayer
from neurondb.query.thresholds import Thresholds
from neurondb.store.errors import StoreError

_BYTE_MAX = 255
_ONES = np.uint64(0x0101010101010101)


def _chunk_major(a: np.ndarray, ncc: int, cw: int) -> np.ndarray:
    """``[S, d]`` -> contiguous ``[ncc, S, cw]`` (column chunk major, zero padded)."""
    p = np.zeros((a.shape[0], ncc * cw), a.dtype)
    p[:, :a.shape[1]] = a
    return np.ascontiguousarray(p.reshape(a.shape[0], ncc, cw).transpose(1, 0, 2))


def _tile_rows(a: np.ndarray, n: int) -> np.ndarray:
    """``[ncc, S, cw]`` -> ``[ncc, >= n, cw]`` repeating the S rows (periodic extension)."""
    S = a.shape[1]
    out = np.empty((a.shape[0], -(-n // S) * S, a.shape[2]), a.dtype)
    out[:, :S] = a
    filled = S
    while filled < out.shape[1]:
        k = min(filled, out.shape[1] - filled)
        out[:, filled:filled + k] = out[:, :k]
        filled += k
    return out


def count_above(raw: RawLayer, thr: Thresholds, lay: RunLayout, classes: np.ndarray,
                n_classes: int, threads: int = 1, positive: int | None = None) -> np.ndarray:
    """Counts of ``h > base`` per slot (``S = len(lay.slots)``, in ``lay.slots`` order).

    ``thr``: operands for the ``S`` slots. ``classes``: ``[n_examples]`` class index of each
    example of ``lay`` (-1: not counted). ``positive=None``: int64 ``[n_classes, S, d]``, rows
    of each class with ``h > base``. ``positive=c``: int64 ``[S, d]``, labelled rows with
    ``(h > base) == (y == c)``. ``threads``: worker threads over blocks (NumPy and ``preadv``
    release the GIL; 1 = inline).
    """
    S, d = len(lay.slots), raw.d
    if raw.n_rows != lay.n_rows:
        raise StoreError(f"run {lay.run!r}: the {raw.storage} tensor has {raw.n_rows} rows but "
                         f"rows.parquet lists {lay.n_rows}; the run is damaged: run `neurondb "
                         "verify` and re-extract it")
    out = np.zeros((1 if positive is not None else n_classes, S, d), np.int64)
    if lay.n_rows and S:
        threads = min(max(1, int(threads)) if raw.direct else 1, len(raw.blocks))
        cls = _PeriodicWorker if lay.period is not None else _GeneralWorker
        worker = cls(raw, thr, lay, classes, n_classes, positive)
        parts = [raw.blocks[i::threads] for i in range(threads)]
        if threads == 1:
            results = [worker.run(parts[0])]
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                results = list(pool.map(worker.run, parts))
        worker.finish(sum(results[1:], results[0]), out)
    return out[0] if positive is not None else out


class _Worker:
    """Read-only state shared by the threads; ``run`` keeps its buffers per thread."""

    def __init__(self, raw: RawLayer, thr: Thresholds, lay: RunLayout, classes: np.ndarray,
                 n_classes: int, positive: int | None):
        self.raw, self.lay, self.C, self.positive = raw, lay, n_classes, positive
        self.S = len(lay.slots)
        self.ncc, self.cr, self.cw = raw.n_col_chunks, raw.chunk_rows, raw.chunk_cols
        self.cwp = -(-self.cw // 8) * 8
        self.n_out = 1 if positive is not None else n_classes
        self.classes = classes


class _PeriodicWorker(_Worker):
    def __init__(self, *args):
        super().__init__(*args)
        lay, S = self.lay, self.S
        perm = lay.block_slots
        thr: Thresholds = args[1]
        self.thr_t = _tile_rows(_chunk_major(thr.thr[perm], self.ncc, self.cw), S + self.cr)
        self.mask_t = (None if thr.mask is None
                       else _tile_rows(_chunk_major(thr.mask[perm], self.ncc, self.cw), S + self.cr))
        self.y_block = self.classes[lay.block_ex]
        self.present = [int(c) for c in np.unique(self.y_block) if c >= 0] or [0]
        self.nexb = -(-(S - 1 + self.cr) // S)
        if self.positive is not None:
            flip = (self.y_block >= 0) & (self.y_block != self.positive)
            self.flip_block = np.where(flip, _ONES, np.uint64(0))

    def run(self, blocks: list[Block]) -> np.ndarray:
        S, ncc, cw, cwp = self.S, self.ncc, self.cw, self.cwp
        words = S * cwp // 8
        buf = self.raw.new_buffer()
        gt = np.zeros((ncc, self.nexb * S, cwp), bool)
        g64_all = gt.view(np.uint64).reshape(ncc, self.nexb, words)
        acc64 = np.zeros((self.n_out, ncc, words), np.uint64)
        acc = np.zeros((self.n_out, ncc, words * 8), np.int64)
        since = 0
        for blk in blocks:
            x = self.raw.read(blk, buf)
            nr = x.shape[1]
            p, e0 = blk.start % S, blk.start // S
            nex = -(-(p + nr) // S)
            if self.mask_t is not None:
                np.bitwise_xor(x, self.mask_t[:, p:p + nr], out=x)
            np.greater(x, self.thr_t[:, p:p + nr], out=gt[:, p:p + nr, :cw])
            yb = self.y_block[e0:e0 + nex]
            if self.positive is not None:
                g64 = g64_all[:, :nex]
                np.bitwise_xor(g64, self.flip_block[e0:e0 + nex][None, :, None], out=g64)
                if (yb < 0).any():
                    g64[:, yb < 0] = 0
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
                self._count(g64_all[:, a:b], yb[a:b], acc64)
                since += b - a
        acc += acc64.view(np.uint8)
        return acc

    def _count(self, g64: np.ndarray, yb: np.ndarray, acc64: np.ndarray) -> None:
        """Add examples ``g64`` ``[ncc, n <= 255, words]`` to ``acc64`` (by class if needed)."""
        if self.positive is not None:
            acc64[0] += np.add.reduce(g64, axis=1)
            return
        first, *others = self.present
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
            for c in self.present:
                sel = yb == c
                if sel.any():
                    acc64[c] += np.add.reduce(g64[:, sel], axis=1)

    def finish(self, acc: np.ndarray, out: np.ndarray) -> None:
        S, ncc, cw, cwp, d = self.S, self.ncc, self.cw, self.cwp, self.raw.d
        n = acc.shape[0]
        blk = acc.reshape(n, ncc, S, cwp)[..., :cw].transpose(0, 2, 1, 3).reshape(n, S, ncc * cw)
        out[:, self.lay.block_slots, :] = blk[:, :, :d]


class _GeneralWorker(_Worker):
    def __init__(self, *args):
        super().__init__(*args)
        thr: Thresholds = args[1]
        self.thr3 = _chunk_major(thr.thr, self.ncc, self.cw)
        self.mask3 = None if thr.mask is None else _chunk_major(thr.mask, self.ncc, self.cw)
        y = self.classes[self.lay.ex_idx]
        if self.positive is not None:
            self.row_group = np.where(y >= 0, self.lay.slot_idx, -1)
            self.row_flip = ((y >= 0) & (y != self.positive)).astype(np.uint8)
        else:
            self.row_group = np.where(y >= 0, y * self.S + self.lay.slot_idx, -1)

    def run(self, blocks: list[Block]) -> np.ndarray:
        ncc, cw, cwp = self.ncc, self.cw, self.cwp
        width = ncc * cwp
        buf = self.raw.new_buffer()
        gath = np.empty(ncc * self.cr * cw, self.thr3.dtype)
        gt = np.zeros((self.cr, ncc, cwp), bool)
        acc = np.zeros((self.n_out * self.S, width), np.int64)
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
            if self.positive is not None:
                gt8 = gt[:nr].view(np.uint8)
                np.bitwise_xor(gt8, self.row_flip[r0:r0 + nr, None, None], out=gt8)
            g64 = gt[:nr].view(np.uint64).reshape(nr, width // 8)
            grp_all = self.row_group[r0:r0 + nr]
            for a in range(0, nr, _BYTE_MAX):
                b = min(nr, a + _BYTE_MAX)
                keep = np.flatnonzero(grp_all[a:b] >= 0)
                if keep.size == 0:
                    continue
                uniq, inv = np.unique(grp_all[a:b][keep], return_inverse=True)
                onehot = sp.csr_matrix((np.ones(keep.size, np.uint64), (inv, keep)),
                                       shape=(uniq.size, b - a))
                sums = np.asarray(onehot @ g64[a:b])
                acc[uniq] += sums.view(np.uint8)
        return acc

    def finish(self, acc: np.ndarray, out: np.ndarray) -> None:
        S, ncc, cw, cwp, d = self.S, self.ncc, self.cw, self.cwp, self.raw.d
        n = self.n_out
        out[:] = acc.reshape(n, S, ncc, cwp)[..., :cw].reshape(n, S, ncc * cw)[:, :, :d]
