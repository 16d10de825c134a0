"""Histogram edges of a profile run: one rule, chosen once per run and recorded.

**Rule.** Per ``(stack, layer)``, from the first batch of chunk 0 (the first batch of the run's
fixed, length-sorted example order): ``lo, hi`` = the smallest and largest ``h`` of the layer
in that batch, widened by :data:`PAD` of the span on each side; bin width
``w = 2**ceil(log2(span / (n_bins - 1)))`` (a power of two) and first edge
``e0 = floor(lo / w) * w``; edges ``e0 + i*w``, ``i = 0..n_bins``. Every edge is a multiple of a
power of two, so it is exact in float32 and float64 and a value's bin is computed exactly
(``floor(h / w)`` is exact). Values below ``e0`` or at/above the last edge are counted in the
under/overflow bins; with the exact per-neuron min and max those bins still bound quantiles.

**Recorded once, the same everywhere.** The process that reduces chunk 0's first batch (rank 0)
writes the edges to ``runs/<run>/profile_edges.json`` (atomically, with the run's config hash;
:mod:`neurondb.extract.profiling` records and reads them)
before the batch is reduced; every other chunk (a later chunk, another rank, a resumed run)
reads that file, waiting for it where another rank is still writing it. Every shard's profile
file records the edges too, and readers refuse to merge states whose edges differ. So every
shard of a run bins with identical edges, and histograms merge exactly.
"""

from __future__ import annotations

import math

import numpy as np

from neurondb.errors import StoreError

PAD = 0.25


def choose_edges(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """float64 edges ``[n_bins + 1]`` for a layer whose first batch spans ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise StoreError(f"the first batch has non-finite activations ({lo}, {hi}); "
                         "cannot choose histogram edges")
    span = hi - lo
    span = span if span > 0 else max(abs(lo), 1.0) * 1e-3
    lo, hi = lo - PAD * span, hi + PAD * span
    w = 2.0 ** math.ceil(math.log2((hi - lo) / (n_bins - 1)))
    e0 = math.floor(lo / w) * w
    return e0 + w * np.arange(n_bins + 1, dtype=np.float64)
