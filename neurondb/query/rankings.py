"""Neuron rankings: one score per ``(stack, layer, neuron)`` and its rank, as a result table.

Table ``rankings`` (``results/rankings/<name>.parquet``): ``name, method, stack, layer, neuron,
score, rank, scope`` plus per-method columns, and ``params``. ``rank`` is 1 for the highest
score, within each ``(stack, layer)`` when ``scope == "layer"`` and over all neurons when
``scope == "global"``; ties go to the lower ``(stack, layer, neuron)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.arch.shape import ModelShape
from neurondb.query.errors import QueryError
from neurondb.query.requests import (  # noqa: F401  (the choices' home; re-exported here)
    COUNT_RULES,
    DEFAULT_COUNT_RULE,
    SCOPES,
    check_count_rule,
    check_scope,
)
from neurondb.query.results import read_result, write_result
from neurondb.store.reader import Store


def fraction_count(fraction: float, n: int, rule: str = DEFAULT_COUNT_RULE) -> int:
    """Number of neurons in the top ``fraction`` of ``n``: the one place a count is derived
    from a fraction (masks, top-k overlap, union selections).

    ``rule="int"``: ``int(fraction * n)`` computed in Python floats exactly as the references
    do (so it inherits their float products: ``int(0.29 * 100) == 28``); ``rule="round"``:
    ``floor(fraction * n + 0.5)`` (:data:`~neurondb.query.requests.COUNT_RULES`). The result
    is clipped to ``[0, n]``.
    """
    check_count_rule(rule)
    x = float(fraction) * int(n)
    k = int(x) if rule == "int" else int(math.floor(x + 0.5))
    return max(0, min(k, int(n)))


def assign_ranks(df: pd.DataFrame, scope: str, stack_order: list[str] | None = None) -> pd.DataFrame:
    """Add ``rank`` (1 = best) and ``scope`` to a frame with ``stack, layer, neuron, score``.

    NaN scores rank last. Returns the frame sorted by ``(stack, layer, rank)`` for a per-layer
    ranking and by ``rank`` for a global one.
    """
    check_scope(scope)
    order = stack_order or sorted(df["stack"].unique())
    st = df["stack"].map({s: i for i, s in enumerate(order)}).to_numpy()
    score = df["score"].to_numpy(np.float64)
    neg = np.where(np.isnan(score), np.inf, -score)
    layer, neuron = df["layer"].to_numpy(), df["neuron"].to_numpy()
    if scope == "global":
        idx = np.lexsort((neuron, layer, st, neg))
        rank = np.empty(len(df), np.int64)
        rank[idx] = np.arange(1, len(df) + 1)
    else:
        idx = np.lexsort((neuron, neg, layer, st))
        grp = st[idx] * (int(layer.max()) + 1 if len(df) else 1) + layer[idx]
        start = np.r_[True, grp[1:] != grp[:-1]] if len(df) else np.zeros(0, bool)
        first = np.maximum.accumulate(np.where(start, np.arange(len(df)), 0))
        rank = np.empty(len(df), np.int64)
        rank[idx] = np.arange(len(df)) - first + 1
    out = df.copy()
    out["rank"] = rank
    out["scope"] = scope
    out["_st"] = st
    out = out.sort_values(["rank"] if scope == "global" else ["_st", "layer", "rank"], kind="stable")
    return out.drop(columns="_st").reset_index(drop=True)


def ranking_frame(method: str, scores: dict[tuple[str, int], np.ndarray], scope: str,
                  extra: dict[tuple[str, int], dict[str, np.ndarray | list]] | None = None,
                  stack_order: list[str] | None = None) -> pd.DataFrame:
    """Build a ranked frame from per-``(stack, layer)`` score vectors ``[d_ff]`` (and extras)."""
    parts = []
    for (stack, layer), s in scores.items():
        cols = {"method": method, "stack": stack, "layer": np.full(s.size, layer, np.int32),
                "neuron": np.arange(s.size, dtype=np.int32), "score": np.asarray(s, np.float64)}
        for k, v in (extra or {}).get((stack, layer), {}).items():
            cols[k] = v
        parts.append(pd.DataFrame(cols))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["method", "stack", "layer", "neuron", "score"])
    df = assign_ranks(df, scope, stack_order)
    front = ["method", "stack", "layer", "neuron", "score", "rank", "scope"]
    return df[front + [c for c in df.columns if c not in front]]


def save_ranking(store: Store, name: str, df: pd.DataFrame, meta: dict, overwrite: bool) -> None:
    write_result(store, "rankings", name, df, meta, overwrite=overwrite)


def load_ranking(store: Store | str | Path, name: str) -> tuple[pd.DataFrame, dict]:
    """``(ranking frame, provenance)`` of ranking ``name``."""
    return read_result(store, "rankings", name)


def ranking_vectors(df: pd.DataFrame) -> dict[tuple[str, int], np.ndarray]:
    """Scores per ``(stack, layer)`` as ``[d_ff]`` vectors indexed by neuron."""
    out = {}
    for (stack, layer), g in df.groupby(["stack", "layer"], sort=False):
        n = g["neuron"].to_numpy()
        v = np.full(int(n.max()) + 1, np.nan)
        v[n] = g["score"].to_numpy(np.float64)
        out[(str(stack), int(layer))] = v
    return dict(sorted(out.items()))


def ranking_shape(df: pd.DataFrame) -> dict[str, tuple[int, ...]]:
    """``{stack: (d_ff per layer)}`` covered by a ranking (for shape checks)."""
    vec = ranking_vectors(df)
    shape: dict[str, dict[int, int]] = {}
    for (stack, layer), v in vec.items():
        shape.setdefault(stack, {})[layer] = v.size
    return {s: tuple(w[k] for k in sorted(w)) for s, w in shape.items()}


def check_same_shape(a: str, da: pd.DataFrame, b: str, db: pd.DataFrame) -> None:
    """Raise a one-line error if rankings ``a`` and ``b`` cover different neurons."""
    sa, sb = ranking_shape(da), ranking_shape(db)
    if sa != sb:
        def fmt(s: dict) -> str:
            return "; ".join(f"{k}: {len(v)} layers x {sorted(set(v))}" for k, v in s.items())
        raise QueryError(f"rankings {a!r} and {b!r} have different shapes ({fmt(sa)} vs {fmt(sb)}); "
                         "compare rankings of models with the same layers and widths")


def shape_frame(shape: ModelShape) -> dict[str, tuple[int, ...]]:
    return {s: tuple(w) for s, w in shape.widths.items()}
