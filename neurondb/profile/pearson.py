"""Streaming Pearson correlation between two sets of variables (SPEC §9, Gurnee et al.).

Rows arrive in blocks ``x [n, p]``, ``y [n, q]`` (the same tokens). Accumulated in float64:
``n``, ``Σx [p]``, ``Σy [q]``, ``Σx² [p]``, ``Σy² [q]``, ``Σxy [p, q]`` (one BLAS matmul per
block). Values are shifted by the first block's column means before they are summed (the
covariance does not change under a shift, and the sums lose far less to cancellation).
Memory: ``8 (p q + 2 p + 2 q)`` bytes of state plus one float64 block of each side.
"""

from __future__ import annotations

import numpy as np


class PearsonAccumulator:
    """``update(x, y)`` per block, then ``corr()`` ``[p, q]`` (NaN for a constant variable)."""

    def __init__(self, p: int, q: int):
        self.n = 0
        self.sx, self.sy = np.zeros(p), np.zeros(q)
        self.sxx, self.syy = np.zeros(p), np.zeros(q)
        self.sxy = np.zeros((p, q))
        self.shift_x: np.ndarray | None = None
        self.shift_y: np.ndarray | None = None

    @staticmethod
    def state_bytes(p: int, q: int) -> int:
        """Bytes of the accumulated state (what the caller states up front)."""
        return 8 * (p * q + 2 * p + 2 * q)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add rows ``x [n, p]`` and ``y [n, q]`` (any float dtype)."""
        if x.shape[0] != y.shape[0]:
            raise ValueError("x and y blocks must have the same rows")
        if x.shape[0] == 0:
            return
        if self.shift_x is None:
            self.shift_x = x.mean(axis=0, dtype=np.float64)
            self.shift_y = y.mean(axis=0, dtype=np.float64)
        xd = x.astype(np.float64) - self.shift_x
        yd = y.astype(np.float64) - self.shift_y
        self.n += x.shape[0]
        self.sx += xd.sum(axis=0)
        self.sy += yd.sum(axis=0)
        self.sxx += np.einsum("ij,ij->j", xd, xd)
        self.syy += np.einsum("ij,ij->j", yd, yd)
        self.sxy += xd.T @ yd

    def corr(self) -> np.ndarray:
        """Pearson's r ``[p, q]`` float64."""
        n = max(self.n, 1)
        cov = self.sxy - np.outer(self.sx, self.sy) / n
        vx = np.maximum(self.sxx - self.sx * self.sx / n, 0.0)
        vy = np.maximum(self.syy - self.sy * self.sy / n, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cov / np.sqrt(np.outer(vx, vy))
        r[~np.isfinite(r)] = np.nan
        return np.clip(r, -1.0, 1.0)


def best_partners(corr: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(partner indices [p, k], their r [p, k])``: the ``k`` highest r per row, NaN last,
    ties to the lower partner index."""
    k = min(k, corr.shape[1])
    neg = np.where(np.isnan(corr), np.inf, -corr)
    if k < corr.shape[1]:
        part = np.argpartition(neg, k - 1, axis=1)[:, :k]
        cut = np.take_along_axis(neg, part, axis=1).max(axis=1, keepdims=True)
        # every column at the cut value competes, so ties are broken by index, not by chance
        cand = neg <= cut
    else:
        cand = np.ones_like(neg, dtype=bool)
    out = np.empty((corr.shape[0], k), dtype=np.int64)
    for i in range(corr.shape[0]):
        cols = np.flatnonzero(cand[i])
        out[i] = cols[np.lexsort((cols, neg[i, cols]))][:k]
    return out, np.take_along_axis(corr, out, axis=1)
