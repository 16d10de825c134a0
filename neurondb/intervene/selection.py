"""From a stored neuron ranking and a ratio to a mask: the neurons pruning removes (SPEC §6)
or the skill neurons suppression replaces (SPEC §5).

A ranking table has columns ``name, method, stack, layer, neuron, score, rank`` with
``rank`` 1 = most important. It is **per layer** when a column ``scope`` says ``layer``
(ranks restart in each layer; the ratio applies to each layer), else **global** (the ratio
applies to all neurons together). Pruning with ratio ``r`` removes the ``r`` fraction of
lowest-ranked neurons, i.e. keeps the top ``1 - r``; suppression at rate ``r`` takes the
``r`` fraction of highest-ranked ones. Counts are ``floor(r * n + 0.5)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.arch import ModelShape
from neurondb.errors import given
from neurondb.intervene.errors import PruneError
from neurondb.intervene.mask import LayerKey, NeuronMask
from neurondb.query.rankings import fraction_count
from neurondb.store.errors import StoreError
from neurondb.store.io import read_parquet
from neurondb.store.layout import RESULTS_DIR

RANKING_COLUMNS = ("stack", "layer", "neuron", "rank")


def check_ratio(ratio: float) -> float:
    """``ratio`` must lie strictly between 0 and 1."""
    r = float(ratio)
    if not (0.0 < r < 1.0) or math.isnan(r):
        raise PruneError(f"ratio {ratio} is outside (0, 1): it is the fraction of FFN neurons "
                         f"to remove, e.g. {given('ratio', 0.3)}")
    return r


def ranking_path(store: str | Path, name: str) -> Path:
    return Path(store) / RESULTS_DIR / "rankings" / f"{name}.parquet"


def read_ranking(store: str | Path, name: str) -> pd.DataFrame:
    """The ranking ``name`` of a store as a DataFrame; a one-line error if it is missing."""
    path = ranking_path(store, name)
    if not path.exists():
        have = sorted(p.stem for p in path.parent.glob("*.parquet")) if path.parent.exists() else []
        raise StoreError(f"store {store} has no ranking {name!r} (rankings: "
                         f"{', '.join(have) or 'none'}); make one with `neurondb rank`")
    df = read_parquet(path).to_pandas()
    missing = [c for c in RANKING_COLUMNS if c not in df.columns]
    if missing:
        raise StoreError(f"{path} lacks ranking column(s) {', '.join(missing)}")
    return df


def ranking_scope(df: pd.DataFrame) -> str:
    """``layer`` when the table says ``scope == 'layer'``, else ``global``."""
    if "scope" in df.columns and len(df) and (df["scope"].astype(str) == "layer").all():
        return "layer"
    return "global"


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["rank", "stack", "layer", "neuron"], kind="stable")


def priority_from_ranking(df: pd.DataFrame) -> dict[LayerKey, np.ndarray]:
    """``{(stack, layer): neuron indices, highest-ranked first}`` (for the keep-one rule)."""
    out = {}
    for (s, la), g in _sorted(df).groupby(["stack", "layer"], sort=True):
        out[(str(s), int(la))] = g["neuron"].to_numpy(np.int64)
    return out


def _check_coverage(df: pd.DataFrame, shape: ModelShape) -> None:
    counts = df.groupby(["stack", "layer"]).size()
    for s, widths in shape.widths.items():
        for la, d in enumerate(widths):
            n = int(counts.get((s, la), 0))
            if n != d:
                raise PruneError(f"the ranking covers {n} of the {d} neurons of {s} layer {la}; "
                                 "pruning by ratio needs a ranking of every neuron of the model")
    if df.duplicated(["stack", "layer", "neuron"]).any():
        raise PruneError("the ranking lists a neuron twice; filter it to one name/method")


def _select(df: pd.DataFrame, ratio: float, shape: ModelShape, scope: str | None,
            end: str) -> tuple[pd.DataFrame, str]:
    """The ``ratio`` fraction of ``df``'s rows at the ``end`` (``top`` = best ranks,
    ``bottom`` = worst) per layer or globally; checks shape and coverage."""
    r = check_ratio(ratio)
    scope = scope or ranking_scope(df)
    if scope not in ("layer", "global"):
        raise PruneError(f"scope must be 'layer' or 'global', not {scope!r}")
    df = df[["stack", "layer", "neuron", "rank"]].astype(
        {"stack": str, "layer": np.int64, "neuron": np.int64})
    sel = NeuronMask.from_arrays(df["stack"], df["layer"], df["neuron"])
    sel.check_shape(shape)
    _check_coverage(df, shape)
    groups = ([g for _, g in _sorted(df).groupby(["stack", "layer"], sort=True)]
              if scope == "layer" else [_sorted(df)])
    parts = []
    for g in groups:
        # a pruning/suppression ratio keeps the nearest count (Skeleton's ratio grid); the
        # references' int(p * d) is the count rule of skill-neuron masks (neurondb mask)
        n = fraction_count(r, len(g), "round")
        parts.append(g.iloc[:n] if end == "top" else g.iloc[len(g) - n:])
    return (pd.concat(parts) if parts else df.iloc[:0]), scope


def _mask_meta(ranked: pd.DataFrame, info: dict) -> dict:
    for col in ("name", "method"):
        if col in ranked.columns:
            info.setdefault(f"ranking_{col}", sorted(map(str, ranked[col].unique())))
    return info


def mask_from_ranking(df: pd.DataFrame, ratio: float, shape: ModelShape,
                      scope: str | None = None, meta: dict | None = None) -> NeuronMask:
    """The mask of the ``ratio`` fraction of lowest-ranked neurons (what pruning removes).

    ``scope``: ``layer`` (per layer) or ``global``; default from :func:`ranking_scope`.
    The ranking must list every neuron of ``shape`` exactly once.
    """
    drop, scope = _select(df, ratio, shape, scope, "bottom")
    info = {"selection": "lowest-ranked", "ratio": float(ratio), "scope": scope,
            "shape": shape.to_dict(), **(meta or {})}
    return NeuronMask.from_arrays(drop["stack"], drop["layer"], drop["neuron"],
                                  _mask_meta(df, info))


def top_from_ranking(df: pd.DataFrame, rate: float, shape: ModelShape,
                     scope: str | None = None, meta: dict | None = None) -> NeuronMask:
    """The mask of the ``rate`` fraction of highest-ranked neurons (what suppression
    replaces: the skill neurons), per layer or globally as :func:`mask_from_ranking`."""
    top, scope = _select(df, rate, shape, scope, "top")
    info = {"selection": "highest-ranked", "rate": float(rate), "scope": scope,
            "shape": shape.to_dict(), **(meta or {})}
    return NeuronMask.from_arrays(top["stack"], top["layer"], top["neuron"],
                                  _mask_meta(df, info))
