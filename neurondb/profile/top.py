"""``neurondb top`` for a profile run: the neuron's top-K tokens from ``neuron_top``."""

from __future__ import annotations

import pandas as pd
import pyarrow.compute as pc

from neurondb.errors import QueryError, arg, on_cli
from neurondb.profile.read import run_state, top_table

#: examples ``neurondb top`` shows when no ``k`` is asked for (per-token and profile runs)
DEFAULT_K = 10


def profile_top_examples(store, run: str, layer: int, neuron: int, *, stack: str | None = None,
                         k: int | None = None) -> pd.DataFrame:
    """The ``k`` highest-activating tokens of ``(stack, layer, neuron)`` in profile run ``run``
    (ties by example_id, position): ``rank, example_id, value, position, token, label, pred,
    text``. Several tokens of one example may appear (a profile keeps tokens, not examples).
    ``k`` None: 10, or all the run keeps when it keeps fewer; more than it keeps is refused."""
    info = store.run(run)
    stack = store.default_stack(stack, info.run)
    t = top_table(store, info.run, stack, layer, neuron, "top")  # checks layer and neuron
    top_k = run_state(store, info.run).top_k
    k = min(DEFAULT_K, top_k) if k is None else k
    if not 1 <= k <= top_k:
        raise QueryError(f"run {info.run!r} keeps the top {top_k} tokens per neuron; ask for "
                         f"{'--top-k ' if on_cli() else 'k='}1..{top_k} (or re-extract with a "
                         f"larger {arg('top_k')})")
    t = t.filter(pc.less_equal(t.column("rank"), k))
    out = t.select(["rank", "example_id", "value", "position"]).to_pandas()
    ex = store.examples(run=info.run).to_pandas().set_index("example_id")
    tok = store.tokens(run=info.run).to_pandas()
    tok = tok[tok["stack"] == stack].set_index(["example_id", "position"])["token"]
    keys = list(zip(out["example_id"], out["position"]))
    out["token"] = [tok.get(key) for key in keys]
    for c in ("label", "pred", "text"):
        out[c] = ex.loc[out["example_id"], c].to_numpy() if c in ex.columns else None
    return out
