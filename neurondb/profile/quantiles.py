"""Quantiles of a neuron from its histogram, with a proven error bound.

The exact quantile is NumPy's default (``linear``): with ``n`` values sorted
``x_0 <= ... <= x_{n-1}``, ``h = q (n - 1)``, ``j = floor(h)``, ``f = h - j``:
``Q = (1 - f) x_j + f x_{j+1}``. The histogram tells in which bin each order statistic lies;
each bin is intersected with ``[min, max]`` (exact per neuron), so the underflow bin is
``[min, e_0)`` and the overflow bin ``[e_N, max]``. With ``c_j`` the midpoint and ``w_j`` the
width of the bin of ``x_j``, the estimate is ``(1 - f) c_j + f c_{j+1}`` and
``|estimate - Q| <= ((1 - f) w_j + f w_{j+1}) / 2`` — at most half the layer's bin width
when both order statistics fall inside the edges. ``q_error`` of a neuron is the largest bound
over the reported quantiles.
"""

from __future__ import annotations

import numpy as np

from neurondb.profile.state import LayerState

LEVELS = (0.01, 0.10, 0.25, 0.50, 0.75, 0.90, 0.99)
COLUMNS = tuple(f"q{round(q * 100):02d}" for q in LEVELS)


def _bins(st: LayerState) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends ``[d, N+2]`` of every bin, intersected with ``[min, max]``."""
    e = st.edges
    lo = np.concatenate([[-np.inf], e])[None, :]
    hi = np.concatenate([e, [np.inf]])[None, :]
    mn = st.min.astype(np.float64)[:, None]
    mx = st.max.astype(np.float64)[:, None]
    return np.clip(lo, mn, mx), np.clip(hi, mn, mx)


def _order_bin(cum: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Bin index ``[d]`` of order statistic ``j`` ``[d]`` (0-based) from cumulative counts."""
    return (cum <= j[:, None]).sum(axis=1)


def quantiles(st: LayerState, levels=LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """``(estimates [d, len(levels)], bounds [d, len(levels)])`` float64; NaN with no tokens."""
    d = st.width
    n = int(st.count)
    est = np.full((d, len(levels)), np.nan)
    bound = np.full((d, len(levels)), np.nan)
    if n == 0:
        return est, bound
    lo, hi = _bins(st)
    mid, width = (lo + hi) / 2, hi - lo
    cum = np.cumsum(st.hist, axis=1)
    rows = np.arange(d)
    for i, q in enumerate(levels):
        h = q * (n - 1)
        j = int(np.floor(h))
        f = h - j
        b0 = _order_bin(cum, np.full(d, j))
        b1 = _order_bin(cum, np.full(d, min(j + 1, n - 1)))
        est[:, i] = (1 - f) * mid[rows, b0] + f * mid[rows, b1]
        bound[:, i] = ((1 - f) * width[rows, b0] + f * width[rows, b1]) / 2
    return est, bound
