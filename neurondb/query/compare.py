"""Comparing neuron rankings (SPEC §3): Spearman per layer and top-k overlap per layer.

For two rankings of the same shape, per ``(stack, layer)``: Spearman's rho between the score
vectors with its p-value (``scipy.stats.spearmanr``; the reported figure is the mean over
layers, the per-layer values are kept), and ``|top_k(A) & top_k(B)| / k`` with
``k = int(fraction * d_ff)`` (the references' count rule; ``count_rule="round"`` rounds to the
nearest) or a fixed ``k``. Over many rankings the pairwise figures form a matrix, returned as a
table, written to ``results/correlations/<name>.parquet`` and drawn as a heatmap. As
Robust-Neurons reports, both rho and the p-value are also given as means over layers
(:attr:`Correlation.p_matrix`, :attr:`Correlation.mean_p`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.query.rankings import (
    DEFAULT_COUNT_RULE,
    check_count_rule,
    check_same_shape,
    fraction_count,
    load_ranking,
    ranking_vectors,
)
from neurondb.query.requests import CorrelateRequest, as_request, check_top
from neurondb.query.results import as_store, check_absent, default_name, write_result
from neurondb.store.reader import Store


def round_half_up(x: float) -> int:
    """``floor(x + 0.5)`` (kept for callers; counts from fractions use
    :func:`neurondb.query.rankings.fraction_count`)."""
    return int(math.floor(x + 0.5))


def _num(x: float) -> float | None:
    """A JSON-safe float (None for NaN)."""
    x = float(x)
    return None if math.isnan(x) else x


def top_k_indices(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores (NaN last, ties to the lower index)."""
    neg = np.where(np.isnan(score), np.inf, -score)
    return np.lexsort((np.arange(score.size), neg))[:k]


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (NaN for constant input)."""
    from scipy import stats

    ok = ~(np.isnan(a) | np.isnan(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.spearmanr(a[ok], b[ok])
    return float(r.statistic), float(r.pvalue)


def compare_vectors(va: dict[tuple[str, int], np.ndarray], vb: dict[tuple[str, int], np.ndarray],
                    fraction: float = 0.05, k: int | None = None,
                    count_rule: str = DEFAULT_COUNT_RULE) -> pd.DataFrame:
    """Per ``(stack, layer)``: ``spearman, p_value, n, k, topk_overlap`` of two score sets.

    ``k``: fixed, or ``fraction_count(fraction, d_ff, count_rule)`` per layer (``int(p·d)`` by
    default); a layer whose ``k`` is 0 has a NaN overlap.
    """
    check_count_rule(count_rule)
    rows = []
    for key in va:
        a, b = va[key], vb[key]
        rho, p = spearman(a, b)
        kk = k if k is not None else fraction_count(fraction, a.size, count_rule)
        kk = max(0, min(kk, a.size))
        ov = (np.intersect1d(top_k_indices(a, kk), top_k_indices(b, kk)).size / kk) if kk else np.nan
        rows.append({"stack": key[0], "layer": key[1], "spearman": rho, "p_value": p,
                     "n": int(a.size), "k": int(kk), "topk_overlap": ov})
    return pd.DataFrame(rows)


def compare_rankings(store: Store | str | Path, a: str, b: str, fraction: float = 0.05,
                     k: int | None = None, count_rule: str = DEFAULT_COUNT_RULE) -> pd.DataFrame:
    """Per-layer Spearman (with p-value) and top-k overlap of rankings ``a`` and ``b``.

    The frame's ``attrs`` hold ``mean_spearman`` and ``mean_p_value`` (means over layers)."""
    store = as_store(store)
    check_top(fraction, k, count_rule)
    da, _ = load_ranking(store, a)
    db, _ = load_ranking(store, b)
    check_same_shape(a, da, b, db)
    out = compare_vectors(ranking_vectors(da), ranking_vectors(db), fraction, k, count_rule)
    out.insert(0, "b", b)
    out.insert(0, "a", a)
    out.attrs["mean_spearman"] = float(out["spearman"].mean())
    out.attrs["mean_p_value"] = float(out["p_value"].mean())
    return out


@dataclass
class Correlation:
    """Pairwise comparison of rankings.

    ``table``: one row per ordered pair ``(a, b)`` and ``(stack, layer)``;
    ``matrix``: mean over layers of Spearman's rho (``names x names``, diagonal 1);
    ``overlap``: mean over layers of the top-k overlap; ``p_matrix``: mean over layers of the
    p-value (diagonal 0), the figure Robust-Neurons reports beside rho; ``png``: the heatmap.
    """

    table: pd.DataFrame
    matrix: pd.DataFrame
    overlap: pd.DataFrame
    name: str | None = None
    png: Path | None = None
    p_matrix: pd.DataFrame | None = None

    @property
    def mean(self) -> float:
        """Mean over layers of rho for a comparison of two rankings."""
        names = list(self.matrix.index)
        return float(self.matrix.loc[names[0], names[-1]])

    @property
    def mean_p(self) -> float:
        """Mean over layers of the p-value for a comparison of two rankings."""
        names = list(self.matrix.index)
        return float(self.p_matrix.loc[names[0], names[-1]]) if self.p_matrix is not None else float("nan")


def correlate(store: Store | str | Path, rankings: str | Sequence[str] | CorrelateRequest | None = None,
              /, **kw) -> Correlation:
    """Compare every pair of ``rankings`` (two or more names, same shape): ``correlate(store,
    CorrelateRequest(...))`` or ``correlate(store, rankings, **fields)`` with the fields of
    :class:`~neurondb.query.requests.CorrelateRequest` (``fraction``, ``k``, ``count_rule``,
    ``name``, ``png``, ``overwrite``, ``write``) as keyword arguments.

    Writes ``results/correlations/<name>.parquet`` (columns ``a, b, stack, layer, spearman,
    p_value, n, k, topk_overlap``; both orders of each pair; the provenance holds the means
    over layers of rho and p per pair) and, if ``png``, a heatmap of the mean Spearman matrix.
    ``count_rule``: how ``fraction`` becomes ``k`` per layer (``int`` default, or ``round``).
    """
    return run_correlate(store, as_request(CorrelateRequest, kw, rankings=rankings))


def run_correlate(store: Store | str | Path, r: CorrelateRequest) -> Correlation:
    """Carry out one :class:`~neurondb.query.requests.CorrelateRequest`."""
    store = as_store(store)
    names, fraction, k, count_rule = r.names, r.fraction, r.k, r.count_rule
    name = r.name or default_name("corr", names)
    if r.write:
        check_absent(store, "correlations", name, r.overwrite)
    frames = {n: load_ranking(store, n)[0] for n in names}
    for n in names[1:]:
        check_same_shape(names[0], frames[names[0]], n, frames[n])
    vecs = {n: ranking_vectors(frames[n]) for n in names}
    parts = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            t = compare_vectors(vecs[a], vecs[b], fraction, k, count_rule)
            for x, y in ((a, b), (b, a)):
                part = t.copy()
                part.insert(0, "b", y)
                part.insert(0, "a", x)
                parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    mean = table.groupby(["a", "b"])[["spearman", "topk_overlap", "p_value"]].mean()
    matrix = pd.DataFrame(1.0, index=names, columns=names)
    overlap = pd.DataFrame(1.0, index=names, columns=names)
    p_matrix = pd.DataFrame(0.0, index=names, columns=names)
    for (a, b), row in mean.iterrows():
        matrix.loc[a, b] = row["spearman"]
        overlap.loc[a, b] = row["topk_overlap"]
        p_matrix.loc[a, b] = row["p_value"]
    out = Correlation(table=table, matrix=matrix, overlap=overlap, name=name, p_matrix=p_matrix)
    if r.png is not None:
        from neurondb.query.plots import heatmap

        out.png = heatmap(matrix, r.png, title="Spearman rho (mean over layers)", vmin=-1.0, vmax=1.0)
    if r.write:
        write_result(store, "correlations", name, table,
                     {"rankings": names, "fraction": None if k is not None else fraction, "k": k,
                      "count_rule": count_rule,
                      "mean_over_layers": [{"a": a, "b": b, "spearman": _num(m["spearman"]),
                                            "p_value": _num(m["p_value"]),
                                            "topk_overlap": _num(m["topk_overlap"])}
                                           for (a, b), m in mean.iterrows()]},
                     overwrite=r.overwrite)
    return out
