"""Brute-force references for profiles: everything from a per-token float32 capture."""

from __future__ import annotations

import numpy as np


def brute_top(values: np.ndarray, example_id: np.ndarray, position: np.ndarray, k: int,
              kind: str) -> list[list[tuple[float, int, int]]]:
    """Per neuron, the ``k`` entries ``(value, example_id, position)`` by value (descending
    for top, ascending for bottom), ties by ``(example_id, position)`` ascending."""
    out = []
    for j in range(values.shape[1]):
        v = values[:, j].astype(np.float64)
        order = np.lexsort((position, example_id, -v if kind == "top" else v))[:k]
        out.append([(float(v[i]), int(example_id[i]), int(position[i])) for i in order])
    return out


def brute_hist(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[d, N+2]`` counts with ``searchsorted(edges, v, 'right')`` as the bin (0: under,
    N+1: over)."""
    n_bins = edges.size - 1
    out = np.zeros((values.shape[1], n_bins + 2), np.int64)
    for j in range(values.shape[1]):
        b = np.searchsorted(edges, values[:, j].astype(np.float64), side="right")
        out[j] = np.bincount(b, minlength=n_bins + 2)
    return out


def brute_profile(values: np.ndarray, labels: np.ndarray, n_labels: int) -> dict:
    """count, mean, std (population), min, max, frac_positive, label_means of ``[n, d]``."""
    v = values.astype(np.float64)
    lm = np.stack([v[labels == c].mean(axis=0) for c in range(n_labels)], axis=1)
    return {"count": v.shape[0], "mean": v.mean(0), "std": v.std(0), "min": v.min(0),
            "max": v.max(0), "frac_positive": (v > 0).mean(0), "label_means": lm}
