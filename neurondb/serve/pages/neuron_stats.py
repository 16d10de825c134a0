"""The neuron page's statistics per run: count, mean, spread, histogram, mean per label.

A per-token run gives them from the activation column; a profile run from its
``neuron_profile`` row and ``profile_histogram`` (``Store.profile`` /
``Store.profile_histogram``); a running-statistics run gives means and spreads per slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from markupsafe import Markup

from neurondb.query.layout import label_names, slot_key
from neurondb.serve import svg
from neurondb.serve.context import ServeContext
from neurondb.store.run import RunInfo

#: Slots the mean-per-label table shows at most (the first in slot order).
MAX_SLOTS = 4
BINS = 40


@dataclass
class RunStats:
    """One run's statistics of the neuron; ``label_means``: ``{label: {column: mean}}`` with
    columns ``all`` and the slots (at most :data:`MAX_SLOTS`)."""

    run: str
    mode: str
    count: int
    mean: float | None
    std: float | None
    min: float | None = None
    max: float | None = None
    frac_positive: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)
    hist: Markup | None = None
    columns: list[str] = field(default_factory=list)
    label_means: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""


def shown_slots(slots: list[str]) -> list[str]:
    """The slots the mean-per-label table shows: named ones (``mask``, ``first``, ``last``)
    first, then the others in slot order (``prompt:<i>``), never ``pos:<i>`` (every position of
    a ``--positions all`` run), at most :data:`MAX_SLOTS`."""
    ordered = sorted(slots, key=slot_key)
    named = [s for s in ordered if ":" not in s]
    rest = [s for s in ordered if ":" in s and not s.startswith("pos:")]
    return (named + rest)[:MAX_SLOTS]


def from_column(ctx: ServeContext, info: RunInfo, stack: str, col: np.ndarray) -> RunStats:
    """Statistics of a per-token run's activation column ``[rows]``."""
    lay = ctx.layout(info, stack)
    if col.size == 0:
        return RunStats(info.run, info.mode, 0, None, None, note="no captured tokens")
    qs = np.quantile(col, [0.1, 0.5, 0.9])
    counts, edges = np.histogram(col, bins=BINS)
    slots = shown_slots(lay.slots)
    y = lay.labels[lay.ex_idx]
    means: dict[str, dict[str, float]] = {}
    for c, name in enumerate(lay.label_names):
        row = {"all": _mean(col[y == c])}
        for s in slots:
            row[s] = _mean(col[(y == c) & (lay.slot_idx == lay.slots.index(s))])
        means[name] = row
    return RunStats(info.run, info.mode, int(col.size), float(col.mean()), float(col.std()),
                    float(col.min()), float(col.max()), float((col > 0).mean()),
                    {"q10": float(qs[0]), "q50": float(qs[1]), "q90": float(qs[2])},
                    svg.histogram(edges, counts, f"{info.run}: activations"),
                    ["all", *slots], means)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def from_profile(ctx: ServeContext, info: RunInfo, stack: str, layer: int,
                 neuron: int) -> RunStats:
    """Statistics of a profile run (``Store.profile`` and ``Store.profile_histogram``)."""
    df = ctx.store.profile(run=info.run, stack=stack, layer=layer, neuron=neuron)
    if not len(df):
        return RunStats(info.run, info.mode, 0, None, None, note="no profile row")
    r = df.iloc[0]
    edges, counts = ctx.store.profile_histogram(info.run, stack, layer, neuron)
    counts = np.asarray(counts)
    note = ""
    if counts.size >= 2 and (counts[0] or counts[-1]):
        note = f"{int(counts[0])} below and {int(counts[-1])} above the histogram's range"
    means: dict[str, dict[str, float]] = {}
    lm = r.get("label_means")
    if lm is not None and len(lm):
        ex = ctx.examples(info)
        names = label_names(info, ex["label"].fillna(-1).to_numpy(np.int64))
        means = {names[i] if i < len(names) else str(i): {"all": float(v)}
                 for i, v in enumerate(lm)}
    qs = {q: float(r[q]) for q in ("q10", "q50", "q90") if q in r}
    return RunStats(info.run, info.mode, int(r["count"]), float(r["mean"]), float(r["std"]),
                    float(r["min"]), float(r["max"]), float(r["frac_positive"]), qs,
                    svg.histogram(edges, counts[1:-1], f"{info.run}: activations"),
                    ["all"] if means else [], means, note)


def from_running_stats(ctx: ServeContext, info: RunInfo, stack: str, layer: int,
                       neuron: int) -> RunStats:
    """Means and spreads of a running-statistics run, over all its slots and per slot."""
    rs = ctx.stats(info)
    n = rs.count[stack]
    if n.sum() == 0:
        return RunStats(info.run, info.mode, 0, None, None, note="no statistics")
    mean = rs.mean(stack, layer)[:, neuron]
    var = rs.var(stack, layer)[:, neuron]
    total = float(n.sum())
    m = float((mean * n).sum() / total)
    v = float(((var + mean ** 2) * n).sum() / total - m * m)
    shown = [rs.slots[stack].index(s) for s in shown_slots(rs.slots[stack])]
    lmean = rs.label_mean(stack, layer)[:, :, neuron]
    lcount = rs.label_count[stack]
    names = info.labels or [str(i) for i in range(rs.n_labels)]
    means = {}
    for c in range(min(rs.n_labels, len(names))):
        cnt = lcount[c]
        row = {"all": float((lmean[c] * cnt).sum() / cnt.sum()) if cnt.sum() else float("nan")}
        row.update({rs.slots[stack][i]: float(lmean[c, i]) if cnt[i] else float("nan")
                    for i in shown})
        means[names[c]] = row
    return RunStats(info.run, info.mode, int(total), m, float(np.sqrt(max(v, 0.0))),
                    columns=["all", *(rs.slots[stack][i] for i in shown)], label_means=means,
                    note="running statistics: no histogram or extremes")
