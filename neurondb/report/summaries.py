"""The numbers the report prints and plots, computed from result tables (pandas only).

Every function takes a result table as written to the store and returns a small DataFrame;
figures and HTML tables are drawn from these, so a test can check the page against them.
Accuracies are fractions in [0, 1]; rates and ratios are fractions of the FFN neurons.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: Fraction of all neurons whose layers the score histogram counts (global top 1%) ...
TOP_FRACTION = 0.01
#: ... but at least this many neurons (small models).
TOP_MIN = 10


def top_count(total: int, fraction: float = TOP_FRACTION, minimum: int = TOP_MIN) -> int:
    """Neurons in the top ``fraction`` of ``total`` by the default count rule
    (:func:`neurondb.query.rankings.fraction_count`), at least ``minimum`` (at most ``total``)."""
    from neurondb.query.rankings import fraction_count

    return min(total, max(minimum, fraction_count(fraction, total)))


def _score_order(frame: pd.DataFrame) -> np.ndarray:
    """Row order by score (highest first, NaN last), ties by ``(stack, layer, neuron)``."""
    score = frame["score"].to_numpy(np.float64)
    neg = np.where(np.isnan(score), np.inf, -score)
    return np.lexsort((frame["neuron"].to_numpy(), frame["layer"].to_numpy(),
                       frame["stack"].astype(str).to_numpy(), neg))


def top_neurons(frame: pd.DataFrame, k: int = 20) -> pd.DataFrame:
    """The ``k`` highest-scoring neurons of a ranking over all layers, best first.

    ``rank`` is the ranking's own (within the layer for a per-layer ranking); extra columns
    the ranking has (``slot``, ``accuracy``, ``excitatory``, ``class``) are kept.
    """
    cols = ["stack", "layer", "neuron", "score", "rank"]
    cols += [c for c in ("slot", "accuracy", "excitatory", "class") if c in frame.columns]
    return frame.iloc[_score_order(frame)[:k]][cols].reset_index(drop=True)


def layer_scores(frame: pd.DataFrame, fraction: float = TOP_FRACTION) -> pd.DataFrame:
    """Per ``(stack, layer)``: ``width`` (neurons), ``max`` and ``mean`` score, and ``n_top``,
    how many of the global top ``fraction`` of all neurons lie in the layer."""
    n = top_count(len(frame), fraction)
    top = frame.iloc[_score_order(frame)[:n]]
    counts = top.groupby(["stack", "layer"]).size()
    g = frame.groupby(["stack", "layer"], sort=True)["score"]
    out = pd.DataFrame({"width": g.size(), "max": g.max(), "mean": g.mean()})
    out["n_top"] = counts.reindex(out.index).fillna(0).astype(int)
    return out.reset_index()


def correlation_matrices(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(Spearman rho, top-k overlap)`` matrices, each the mean over layers per pair of
    rankings (diagonal 1), from a ``correlations`` table."""
    names = list(dict.fromkeys(list(frame["a"]) + list(frame["b"])))
    mean = frame.groupby(["a", "b"])[["spearman", "topk_overlap"]].mean()
    rho = pd.DataFrame(1.0, index=names, columns=names)
    ov = pd.DataFrame(1.0, index=names, columns=names)
    for (a, b), row in mean.iterrows():
        rho.loc[a, b] = row["spearman"]
        ov.loc[a, b] = row["topk_overlap"]
    return rho, ov


def overlap_matrices(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One ``(layer group, ON matrix)`` per group of an ``overlaps`` table (diagonal 1)."""
    out = []
    for group, g in frame.groupby("group", sort=False):
        names = list(dict.fromkeys(list(g["a"]) + list(g["b"])))
        m = pd.DataFrame(1.0, index=names, columns=names)
        for r in g.itertuples():
            m.loc[r.a, r.b] = r.overlap
        out.append((str(group), m))
    return out


def transfer_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per ``(source, target, split)``: ``accuracy``, ``relative`` (percent)
    and ``seeds`` (how many prompts)."""
    from neurondb.tune.transfer import short_name

    d = frame.assign(source=frame["source"].map(lambda s: short_name(str(s))),
                     target=frame["target_key"].map(lambda s: short_name(str(s))))
    g = d.groupby(["source", "target", "split"], sort=False)
    return pd.DataFrame({"accuracy": g["accuracy"].mean(), "relative": g["relative"].mean(),
                         "seeds": g.size()}).reset_index()


def suppression_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per rate: :func:`neurondb.intervene.suppress.summarize_suppression` (imported here, as
    that module imports torch and reading a store's results must not)."""
    from neurondb.intervene.suppress import summarize_suppression

    return summarize_suppression(table)


def search_margin(meta: dict, frame: pd.DataFrame) -> float | None:
    """The accuracy margin (fraction) of a ratio search, from its parameters; None if absent."""
    for src in (meta, meta.get("params") if isinstance(meta.get("params"), dict) else {}):
        for key in ("margin", "delta"):
            v = src.get(key) if isinstance(src, dict) else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                return float(v)
    return None


def pruned_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Full against pruned model, per batch size: ``model, batch_size, ratio, accuracy, n,
    latency_ms, speed_up`` (full latency / this latency), ``parameters``,
    ``parameter_reduction`` (fraction removed against the full model), ``file_bytes``."""
    d = frame.copy()
    if "batch_size" not in d.columns:
        d["batch_size"] = np.nan
    rows = []
    for bs, g in d.groupby("batch_size", sort=True, dropna=False):
        full = g[g["model"] == "full"]
        f_lat = float(full["latency_ms"].iloc[0]) if len(full) else np.nan
        f_par = float(full["parameters"].iloc[0]) if len(full) else np.nan
        for r in g.sort_values("model", key=lambda s: s.map({"full": 0}).fillna(1)).itertuples():
            lat = float(r.latency_ms)
            rows.append({"model": r.model, "batch_size": bs,
                         "ratio": float(getattr(r, "ratio", np.nan)),
                         "accuracy": float(r.accuracy), "n": getattr(r, "n", None),
                         "latency_ms": lat,
                         "speed_up": f_lat / lat if lat > 0 else np.nan,
                         "parameters": int(r.parameters),
                         "parameter_reduction": 1.0 - float(r.parameters) / f_par
                         if f_par > 0 else np.nan,
                         "file_bytes": getattr(r, "file_bytes", None)})
    return pd.DataFrame(rows)
