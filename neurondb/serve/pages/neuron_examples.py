"""The neuron page's top and bottom examples, every token shaded by the neuron's activation.

From a profile run they come from its ``neuron_top`` records (``Store.profile_top``: top-K and
bottom-K tokens; only those tokens have values); from a per-token run, from the activation
column itself (the maximum, or minimum, over each example's captured tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from neurondb.query.layout import label_names
from neurondb.query.top import best_row_per_example
from neurondb.serve.context import ServeContext
from neurondb.serve.tokens import Token, example_tokens
from neurondb.store.run import RunInfo

#: Examples shown at each end.
K = 10


@dataclass
class ShownExample:
    """One example as the page shows it: its extreme ``value`` at ``position`` (``slot``),
    labels, and ``tokens`` (or, when the run kept no tokens, its ``text``)."""

    example_id: int
    value: float
    position: int
    slot: str | None
    label: str
    pred: str
    correct: bool | None
    tokens: list[Token] = field(default_factory=list)
    text: str = ""


@dataclass
class NeuronExamples:
    """The run's top and bottom examples and where they come from (``source``)."""

    run: str
    source: str
    top: list[ShownExample]
    bottom: list[ShownExample]
    scale: float


def _labels(ctx: ServeContext, info: RunInfo) -> list[str]:
    df = ctx.examples(info)
    return label_names(info, df["label"].fillna(-1).to_numpy(np.int64))


def _name(names: list[str], v) -> str:
    return names[int(v)] if v is not None and pd.notna(v) and 0 <= int(v) < len(names) else "—"


def shown(ctx: ServeContext, info: RunInfo, stack: str, example_id: int,
          values: dict[int, float], peak: int, slot: str | None, scale: float,
          names: list[str]) -> ShownExample:
    """One example with the values of its captured ``values`` (position -> value)."""
    ex = ctx.examples(info)
    row = ex.loc[example_id] if example_id in ex.index else None
    out = ShownExample(example_id=int(example_id), value=float(values[peak]), position=int(peak),
                       slot=slot, label=_name(names, None if row is None else row["label"]),
                       pred=_name(names, None if row is None else row.get("pred")),
                       correct=None if row is None or pd.isna(row.get("correct"))
                       else bool(row["correct"]),
                       text="" if row is None else str(row["text"] or ""))
    ti = ctx.tokens(info, stack)
    sl = ti.of(int(example_id)) if ti is not None else None
    if sl is not None:
        pos = ti.position[sl]
        vals = [values.get(int(p)) for p in pos]
        peak_i = int(np.flatnonzero(pos == peak)[0]) if (pos == peak).any() else None
        out.tokens = example_tokens(list(ti.token[sl]), list(ti.kind[sl]), vals, peak_i, scale)
    return out


def from_column(ctx: ServeContext, info: RunInfo, stack: str, col: np.ndarray,
                k: int = K) -> NeuronExamples:
    """Top and bottom examples of a per-token run from the neuron's activation column."""
    lay = ctx.layout(info, stack)
    if col.size == 0:
        return NeuronExamples(info.run, "per-token activations", [], [], 0.0)
    scale = float(np.abs(col).max())
    names = _labels(ctx, info)
    ends = []
    for sign in (1.0, -1.0):
        best = best_row_per_example(sign * col, lay.ex_idx)
        best = best[np.lexsort((lay.ex_idx[best], -sign * col[best]))][:k]
        items = []
        order, bounds = ctx.example_rows(info, stack)
        for r in best:
            e = lay.ex_idx[r]
            rows = order[bounds[e]:bounds[e + 1]]
            values = {int(lay.positions[j]): float(col[j]) for j in rows}
            items.append(shown(ctx, info, stack, int(lay.example_ids[lay.ex_idx[r]]), values,
                               int(lay.positions[r]), lay.slots[lay.slot_idx[r]], scale, names))
        ends.append(items)
    return NeuronExamples(info.run, "per-token activations", ends[0], ends[1], scale)


def from_profile(ctx: ServeContext, info: RunInfo, stack: str, layer: int,
                 neuron: int) -> NeuronExamples:
    """Top and bottom examples of a profile run from its ``neuron_top`` records."""
    df = ctx.store.profile_top(run=info.run, stack=stack, layer=layer, neuron=neuron)
    scale = float(df["value"].abs().max()) if len(df) else 0.0
    names = _labels(ctx, info)
    ends = []
    for kind in ("top", "bottom"):
        g = df[df["kind"] == kind].sort_values("rank")
        items = []
        for ex_id in pd.unique(g["example_id"]):
            e = g[g["example_id"] == ex_id]
            values = {int(p): float(v) for p, v in zip(e["position"], e["value"])}
            items.append(shown(ctx, info, stack, int(ex_id), values, int(e["position"].iloc[0]),
                               None, scale, names))
        ends.append(items)
    return NeuronExamples(info.run, "profile (neuron_top)", ends[0], ends[1], scale)
