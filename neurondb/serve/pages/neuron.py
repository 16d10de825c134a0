"""``/neurons/{stack}/{layer}/{neuron}``: everything the store knows about one neuron.

Profile runs are read through the profile interface (``Store.profile``, ``Store.profile_top``,
``Store.profile_histogram``), used only when the store has it and the run's mode is
``profile``; per-token runs through their activation column; running-statistics runs through
their sums.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from neurondb.serve import params as P
from neurondb.serve.context import ServeContext
from neurondb.serve.errors import NotFoundError
from neurondb.serve.pages import neuron_examples as E
from neurondb.serve.pages import neuron_results as R
from neurondb.serve.pages import neuron_stats as S
from neurondb.store.run import RunInfo

PARAMS = ("run",)


def is_profile(ctx: ServeContext, info: RunInfo) -> bool:
    """A profile run, and a store that can read one."""
    return info.mode == "profile" and hasattr(ctx.store, "profile")


def example_runs(ctx: ServeContext) -> list[RunInfo]:
    """Runs that can show examples: per-token runs and (readable) profile runs."""
    return [i for i in ctx.store.runs() if i.mode == "tokens" or is_profile(ctx, i)]


def locate(ctx: ServeContext, stack: str, layer: str, neuron: str) -> tuple[str, int, int]:
    """The validated ``(stack, layer, neuron)`` of a path (404 if the model lacks it)."""
    shape = ctx.store.shape
    if stack not in shape.stacks:
        raise NotFoundError(f"the model has no stack {stack!r} (stacks: "
                            f"{', '.join(shape.stacks)})")
    la = P.path_int(layer, f"layer of stack {stack!r}", shape.n_layers(stack))
    n = P.path_int(neuron, f"neuron of {stack} layer {la}", shape.d_ff(stack, la))
    return stack, la, n


def neighbours(ctx: ServeContext, key: R.Key) -> dict[str, str | None]:
    """Links to the previous and next neuron (across layers and stacks)."""
    shape = ctx.store.shape
    flat = [(s, la) for s in shape.stacks for la in range(shape.n_layers(s))]
    i = flat.index((key[0], key[1]))
    prev = nxt = None
    if key[2] > 0:
        prev = (key[0], key[1], key[2] - 1)
    elif i > 0:
        s, la = flat[i - 1]
        prev = (s, la, shape.d_ff(s, la) - 1)
    if key[2] + 1 < shape.d_ff(key[0], key[1]):
        nxt = (key[0], key[1], key[2] + 1)
    elif i + 1 < len(flat):
        nxt = (*flat[i + 1], 0)
    return {"prev": None if prev is None else "/neurons/{}/{}/{}".format(*prev),
            "next": None if nxt is None else "/neurons/{}/{}/{}".format(*nxt)}


def run_stats(ctx: ServeContext, info: RunInfo, key: R.Key,
              columns: dict[str, np.ndarray]) -> S.RunStats:
    """One run's statistics of the neuron, by the run's mode."""
    stack, layer, neuron = key
    if info.mode == "tokens":
        if info.run not in columns:
            columns[info.run] = ctx.store.activations(layer, run=info.run, stack=stack,
                                                      neurons=[neuron])[:, 0]
        return S.from_column(ctx, info, stack, columns[info.run])
    if is_profile(ctx, info):
        return S.from_profile(ctx, info, stack, layer, neuron)
    if info.mode == "stats":
        return S.from_running_stats(ctx, info, stack, layer, neuron)
    return S.RunStats(info.run, info.mode, 0, None, None, note=f"mode {info.mode}: not read")


def neuron_page(ctx: ServeContext, stack: str, layer: str, neuron: str,
                query: Mapping[str, str]) -> dict:
    """The neuron page's data (404 for a neuron or run the store lacks)."""
    P.known(query, PARAMS)
    key = locate(ctx, stack, layer, neuron)
    runs = example_runs(ctx)
    name = P.text(query, "run")
    shown = ctx.run(name) if name is not None else (runs[0] if runs else None)
    if shown is not None and shown not in runs:
        raise NotFoundError(f"run {shown.run!r} holds {shown.mode}, not examples; "
                            f"runs with examples: {', '.join(i.run for i in runs) or 'none'}")
    columns: dict[str, np.ndarray] = {}
    stats = [run_stats(ctx, i, key, columns) for i in ctx.store.runs()]
    examples = None
    if shown is not None and shown.mode == "tokens":
        examples = E.from_column(ctx, shown, key[0], columns[shown.run])
    elif shown is not None:
        examples = E.from_profile(ctx, shown, *key)
    masks = R.masks_with(ctx, key)
    partner_list, partner_note = R.partners(ctx, shown, key)
    return {"key": key, "runs": runs, "shown": shown, "examples": examples, "stats": stats,
            "rankings": R.ranking_entries(ctx, key), "masks": masks,
            "suppressed": R.suppressed_by(ctx, key, masks), "partners": partner_list,
            "partner_note": partner_note, "links": neighbours(ctx, key),
            "stacks": list(ctx.store.shape.stacks)}
