"""What the store's results say about one neuron: its score and rank in every ranking, the
masks that hold it, the suppression runs that removed it, and its best-correlated partners."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.query.rankings import fraction_count
from neurondb.serve.context import ServeContext
from neurondb.store.run import RunInfo

Key = tuple[str, int, int]
#: Partners listed.
PARTNERS = 8


@dataclass
class RankingEntry:
    """The neuron in one ranking: ``place`` of ``of`` within its layer or the model."""

    name: str
    score: float
    rank: int
    place: int
    of: int
    scope: str
    extra: dict


def ranking_entries(ctx: ServeContext, key: Key) -> list[RankingEntry]:
    """One entry per ranking that lists the neuron."""
    out = []
    for idx in ctx.results.rankings():
        i = idx.row_of.get(key)
        if i is None:
            continue
        r = idx.frame.iloc[i]
        extra = {c: r[c] for c in ("slot", "accuracy", "excitatory", "class", "method")
                 if c in idx.frame.columns and pd.notna(r[c])}
        out.append(RankingEntry(idx.result.name, float(r["score"]), int(r["rank"]),
                                int(idx.place[i]) + 1, int(idx.group_size[i]), idx.scope, extra))
    return out


def masks_with(ctx: ServeContext, key: Key) -> list[str]:
    """Names of the masks that contain the neuron."""
    out = []
    for m in ctx.results.tables("masks"):
        df = m.frame
        hit = ((df["stack"].astype(str) == key[0]) & (df["layer"] == key[1])
               & (df["neuron"] == key[2]))
        if bool(hit.any()):
            out.append(m.name)
    return out


@dataclass
class Suppressed:
    """A suppression result that replaced the neuron: at which rates (or by which mask), and
    the accuracy with it replaced against the random controls' mean."""

    name: str
    by: str
    rates: list[float]
    accuracy: float | None
    random_accuracy: float | None
    baseline: float | None


def _accuracy(df: pd.DataFrame, selection: str, rate: float | None) -> float | None:
    g = df[df["selection"] == selection]
    if rate is not None:
        g = g[np.isclose(g["rate"].astype(float), rate)]
    return float(g["accuracy"].mean()) if len(g) else None


def suppressed_by(ctx: ServeContext, key: Key, masks: list[str]) -> list[Suppressed]:
    """Suppression results whose selection held the neuron: the top ``rate`` of a ranking of
    this store (the selection rule of ``neurondb suppress``), or a mask of this store."""
    out = []
    for res in ctx.results.tables("suppression"):
        df, meta = res.frame, res.meta
        base = _accuracy(df, "none", None)
        ranking = meta.get("ranking")
        idx = ctx.results.ranking(ranking) if isinstance(ranking, str) else None
        if idx is not None and key in idx.row_of:
            i = idx.row_of[key]
            rates = sorted(float(r) for r in df.loc[df["selection"] == "skill", "rate"].unique()
                           if idx.place[i] < fraction_count(float(r), int(idx.group_size[i]),
                                                            "round"))
            if rates:
                out.append(Suppressed(res.name, f"ranking {ranking}", rates,
                                      _accuracy(df, "skill", rates[0]),
                                      _accuracy(df, "random", rates[0]), base))
            continue
        mask = meta.get("mask")
        if isinstance(mask, str) and Path(mask).stem in masks:
            out.append(Suppressed(res.name, f"mask {Path(mask).stem}", [],
                                  _accuracy(df, "mask", None), _accuracy(df, "random", None),
                                  base))
    return out


@dataclass
class Partner:
    """Another neuron and the Pearson correlation of the two over the run's tokens."""

    layer: int
    neuron: int
    r: float


def partners(ctx: ServeContext, info: RunInfo | None, key: Key) -> tuple[list[Partner], str]:
    """The neurons of the same stack most correlated with this one over ``info``'s tokens, and
    a note saying how: for a per-token run computed on the fly (within a size budget), for a
    profile run extracted with ``--correlate-layers`` read from its exact sums over every
    token (among the correlated layers)."""
    if info is not None and info.mode == "profile":
        return _profile_partners(ctx, info, key)
    if info is None or info.mode != "tokens":
        return [], "needs a per-token run"
    z = ctx.zscores(info, key[0])
    if z is None:
        return [], f"run {info.run} is too large to correlate on the fly"
    widths = ctx.store.shape_of(info.run).widths[key[0]]
    offsets = np.r_[0, np.cumsum(widths)]
    i = int(offsets[key[1]] + key[2])
    r = z.T @ z[:, i] / z.shape[0]
    rows = int(info.n_rows.get(key[0], 0))
    of = (f"the {rows:,} captured tokens" if z.shape[0] == rows
          else f"{z.shape[0]:,} evenly spaced of the {rows:,} captured tokens")
    return (_best(r, i, list(range(len(widths))), widths),
            f"Pearson over {of} of {info.run} (computed on the fly)")


def _profile_partners(ctx: ServeContext, info: RunInfo, key: Key) -> tuple[list[Partner], str]:
    from neurondb.profile.read import run_state

    c = run_state(ctx.store, info.run).corr
    stack, layer, neuron = key
    if c is None or c.stack != stack or layer not in c.layers:
        return [], (f"profile run {info.run} has no correlation sums of {stack} layer {layer} "
                    "(extract it with --profile --correlate-layers)")
    widths = ctx.store.shape_of(info.run).widths[stack]
    mine = [widths[la] for la in c.layers]
    i = int(sum(mine[:c.layers.index(layer)]) + neuron)
    r = c.corr(np.array([i]))[0]
    shown = ", ".join(str(la) for la in c.layers)
    return (_best(r, i, list(c.layers), mine),
            f"Pearson over all {c.n:,} tokens of {info.run}, among layers {shown} (exact, "
            "from the sums accumulated while extracting)")


def _best(r: np.ndarray, i: int, layers: list[int], widths) -> list[Partner]:
    """The :data:`PARTNERS` neurons of highest positive ``r`` (``[D]``, over the neurons of
    ``layers`` concatenated, ``widths`` each), not neuron ``i`` itself; ties to the lower."""
    r = np.where(np.isnan(r), -np.inf, r)
    r[i] = -np.inf
    offsets = np.r_[0, np.cumsum(widths)]
    out = []
    for j in np.argsort(-r, kind="stable")[:PARTNERS]:
        if not np.isfinite(r[j]) or r[j] <= 0:
            continue
        at = int(np.searchsorted(offsets, j, side="right") - 1)
        out.append(Partner(layers[at], int(j - offsets[at]), float(r[j])))
    return out
