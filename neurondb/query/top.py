"""The examples on which one neuron fires most: a single-column read of the store.

HDF5 chunks are ``[chunk_rows, 64]``, so reading one neuron touches 64/d_ff of the layer's
bytes; the per-example maximum is a sort and a segment pick, no loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.errors import arg
from neurondb.query.errors import QueryError
from neurondb.query.layout import load_layout, resolve_run, select_slots
from neurondb.query.requests import TopRequest, as_request
from neurondb.query.results import as_store
from neurondb.store.reader import Store


def best_row_per_example(values: np.ndarray, ex: np.ndarray) -> np.ndarray:
    """Row index of the maximum of ``values`` within each example ``ex`` (first on ties)."""
    order = np.lexsort((np.arange(values.size), -values, ex))
    first = np.r_[True, ex[order][1:] != ex[order][:-1]]
    return order[first]


def top_examples(store: Store | str | Path, run: str | TopRequest | None = None,
                 layer: int | None = None, neuron: int | None = None, /, **kw) -> pd.DataFrame:
    """The ``k`` examples with the highest activation of ``(stack, layer, neuron)`` in ``run``:
    ``top_examples(store, TopRequest(...))`` or ``top_examples(store, run, layer, neuron,
    **fields)`` with the fields of :class:`~neurondb.query.requests.TopRequest` (``stack``,
    ``k``, ``slots``) as keyword arguments.

    Per example the maximum over its captured rows (of ``slots``, default all) is taken.
    Returns ``example_id, value, position, slot, label, pred, text``, highest first. For a
    profile run (``extract --profile``) the answer comes from ``neuron_top``: the top-k tokens
    (:func:`neurondb.profile.top.profile_top_examples`).
    """
    return run_top(store, as_request(TopRequest, kw, run=run, layer=layer, neuron=neuron))


def _only_readable_run(store: Store) -> str:
    """The store's one run that ``top`` can answer from (per-token or profile)."""
    runs = [i.run for i in store.runs() if i.mode in ("tokens", "profile")]
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise QueryError("the store has no per-token or profile run to read top examples from; "
                         "extract one (--positions ... or --profile)")
    raise QueryError(f"the store has several runs ({', '.join(runs)}); name one with "
                     f"{arg('run')}")


def run_top(store: Store | str | Path, r: TopRequest) -> pd.DataFrame:
    """Carry out one :class:`~neurondb.query.requests.TopRequest`."""
    run, layer, neuron, stack, k, slots = r.run, r.layer, r.neuron, r.stack, r.k, r.slots
    store = as_store(store)
    if run is None:
        run = _only_readable_run(store)
    if run in {i.run for i in store.runs() if i.mode == "profile"}:  # from neuron_top
        if slots is not None:
            raise QueryError(f"run {run!r} is a profile (top tokens of every neuron); "
                             f"{arg('slots')} applies to per-token runs only")
        from neurondb.profile.top import profile_top_examples

        return profile_top_examples(store, run, layer, neuron, stack=stack, k=k)
    info = resolve_run(store, run, mode="tokens")
    if k is None:
        from neurondb.profile.top import DEFAULT_K

        k = DEFAULT_K
    stack = store.default_stack(stack)
    n_layers = store.shape.n_layers(stack)
    if not 0 <= layer < n_layers:
        raise QueryError(f"layer {layer} is out of range: stack {stack!r} has layers 0..{n_layers - 1}")
    d = store.shape.d_ff(stack, layer)
    if not 0 <= neuron < d:
        raise QueryError(f"neuron {neuron} is out of range: {stack} layer {layer} has neurons 0..{d - 1}")
    lay = load_layout(store, info, stack)
    col = store.activations(layer, run=info.run, stack=stack, neurons=[neuron])[:, 0]
    want = select_slots(lay.slots, slots)
    keep = np.flatnonzero(np.isin(lay.slot_idx, [lay.slots.index(s) for s in want]))
    if keep.size == 0:
        raise QueryError(f"no row of run {info.run!r} is in slots {slots!r}")
    best = keep[best_row_per_example(col[keep], lay.ex_idx[keep])]
    best = best[np.lexsort((lay.ex_idx[best], -col[best]))][:k]
    ex = store.examples(run=info.run).to_pandas().set_index("example_id")
    ids = lay.example_ids[lay.ex_idx[best]]
    out = pd.DataFrame({"example_id": ids, "value": col[best].astype(np.float64),
                        "position": lay.positions[best],
                        "slot": np.asarray(lay.slots, dtype=object)[lay.slot_idx[best]]})
    for c in ("label", "pred", "text"):
        out[c] = ex.loc[ids, c].to_numpy() if c in ex.columns else None
    return out
