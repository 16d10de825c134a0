"""Reading profiles: a run's state merged over its shards, and the agreed tables.

``neuron_profile`` (one row per run, stack, layer, neuron) and ``neuron_top`` (top-K and
bottom-K tokens per neuron) have the schemas in :data:`PROFILE_SCHEMA` and :data:`TOP_SCHEMA`
(``docs``: ``/work/notes/profile_schema.md``); ``std`` is the population standard deviation
from the float64 sums, ``frac_positive`` the fraction of tokens with ``h > 0``, ``q01 ... q99``
histogram quantiles with their bound ``q_error`` (:mod:`neurondb.profile.quantiles`),
``label_means`` the mean ``h`` per label index (NULL when the run has no labels; a NULL
element for a label with no token). A run's shards are merged in chunk order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from neurondb.errors import QueryError, StoreError
from neurondb.profile.quantiles import COLUMNS, quantiles
from neurondb.profile.state import KINDS, PROFILE_FILE, LayerState, ProfileState

if TYPE_CHECKING:  # pandas only when a DataFrame is asked for (SQL stays light)
    import pandas as pd

PROFILE_SCHEMA = pa.schema(
    [("run", pa.string()), ("stack", pa.string()), ("layer", pa.int32()),
     ("neuron", pa.int32()), ("count", pa.int64()), ("mean", pa.float64()),
     ("std", pa.float64()), ("min", pa.float64()), ("max", pa.float64()),
     ("frac_positive", pa.float64())]
    + [(c, pa.float64()) for c in COLUMNS]
    + [("q_error", pa.float64()), ("label_means", pa.list_(pa.float64()))])
TOP_SCHEMA = pa.schema([
    ("run", pa.string()), ("stack", pa.string()), ("layer", pa.int32()), ("neuron", pa.int32()),
    ("kind", pa.string()), ("rank", pa.int32()), ("value", pa.float64()),
    ("example_id", pa.int64()), ("position", pa.int32())])


def profile_runs(store) -> list[str]:
    """Names of the store's profile runs."""
    return [i.run for i in store.runs() if i.mode == "profile"]


def run_state(store, run: str) -> ProfileState:
    """The profile of ``run``: the run's ``profile.npz`` (its shards' states merged, exactly,
    in chunk order when the run was completed), or, for a run still being extracted
    (``partial=True``), the complete shards merged now."""
    info = store.run(run)
    if info.mode != "profile":
        raise QueryError(f"run {info.run!r} is a {info.mode} run, not a profile; extract one "
                         "with `neurondb extract ... --profile`")
    whole = store.run_dir(info.run) / PROFILE_FILE
    files = [whole] if info.status == "complete" else store.shard_files(info.run, PROFILE_FILE)
    key = (info.run, tuple(str(f) for f in files))
    cache = store._profiles
    if key not in cache:
        if not files or not files[0].exists():
            raise StoreError(f"profile run {info.run!r} has no {PROFILE_FILE}; run `neurondb "
                             "verify` and re-extract the run")
        st = ProfileState.merged(files)
        if len(cache) >= 8:  # a few runs' states (K x neurons each), not every run's
            cache.pop(next(iter(cache)))
        cache[key] = st
    return cache[key]


def _neuron_index(neuron: int | Iterable[int]) -> np.ndarray:
    """int64 ``[n]`` indices of one neuron or a list of them (in the order given)."""
    idx = np.atleast_1d(np.asarray(neuron))
    if idx.ndim != 1 or idx.size == 0 or idx.dtype == bool or \
            not np.issubdtype(idx.dtype, np.integer):
        raise QueryError(f"neuron must be a neuron index or a list of them, not {neuron!r}")
    return idx.astype(np.int64)


def _select(store, run: str | None, stack: str | None, layer: int | None,
            neuron: int | Iterable[int] | None
            ) -> list[tuple[str, str, int, LayerState, np.ndarray]]:
    """``(run, stack, layer, state, neuron indices)`` of the request (``neuron``: one index
    or a list); bad names raise."""
    want = None if neuron is None else _neuron_index(neuron)
    runs = [store.run(run).run] if run is not None else profile_runs(store)
    out = []
    for r in runs:
        st = run_state(store, r)
        shape = store.shape_of(r)
        if stack is not None:
            store.default_stack(stack, r)
        for (s, la), ls in sorted(st.layers.items()):
            if (stack is not None and s != stack) or (layer is not None and la != layer):
                continue
            idx = np.arange(ls.width)
            if want is not None:
                bad = want[(want < 0) | (want >= ls.width)]
                if bad.size:
                    raise QueryError(f"neuron {int(bad[0])} is out of range: {s} layer {la} has "
                                     f"neurons 0..{ls.width - 1}")
                idx = want
            out.append((r, s, la, ls, idx))
        if layer is not None:
            for s in ([stack] if stack else shape.stacks):
                store._check_layer(s, layer, r)
    return out


def _label_means(ls: LayerState, idx: np.ndarray) -> pa.Array:
    n, L = idx.size, ls.label_count.size
    if L == 0 or ls.label_count.sum() == 0:
        return pa.nulls(n, pa.list_(pa.float64()))
    means = ls.label_sum[:, idx] / np.where(ls.label_count > 0, ls.label_count, 1)[:, None]
    flat = means.T.reshape(-1)
    empty = np.tile(ls.label_count == 0, n)
    values = pa.array(flat, pa.float64(), mask=empty)
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1) * L, pa.int32()), values)


def _profile_part(run: str, stack: str, layer: int, ls: LayerState, idx: np.ndarray) -> pa.Table:
    n = max(int(ls.count), 1)
    mean = ls.sum[idx] / n
    var = np.maximum(ls.sumsq[idx] / n - mean * mean, 0.0)
    est, bound = quantiles(ls)
    cols = {"run": [run] * idx.size, "stack": [stack] * idx.size,
            "layer": np.full(idx.size, layer, np.int32), "neuron": idx.astype(np.int32),
            "count": np.full(idx.size, int(ls.count), np.int64), "mean": mean,
            "std": np.sqrt(var), "min": ls.min[idx].astype(np.float64),
            "max": ls.max[idx].astype(np.float64),
            "frac_positive": ls.n_positive[idx] / n}
    for i, c in enumerate(COLUMNS):
        cols[c] = est[idx, i]
    cols["q_error"] = bound[idx].max(axis=1)
    cols["label_means"] = _label_means(ls, idx)
    return pa.table(cols, schema=PROFILE_SCHEMA)


def _top_part(run: str, stack: str, layer: int, ls: LayerState, idx: np.ndarray,
              n_positions: int, kinds: Iterable[str]) -> pa.Table:
    parts = []
    for kind in kinds:
        value, ex, pos, valid = ls.entries(kind, n_positions)
        value, ex, pos, valid = value[idx], ex[idx], pos[idx], valid[idx]
        K = value.shape[1]
        neuron = np.repeat(idx, K)[valid.reshape(-1)]
        rank = np.tile(np.arange(1, K + 1), idx.size)[valid.reshape(-1)]
        n = neuron.size
        parts.append(pa.table({
            "run": [run] * n, "stack": [stack] * n, "layer": np.full(n, layer, np.int32),
            "neuron": neuron.astype(np.int32), "kind": [kind] * n, "rank": rank.astype(np.int32),
            "value": value[valid].astype(np.float64), "example_id": ex[valid],
            "position": pos[valid]}, schema=TOP_SCHEMA))
    return pa.concat_tables(parts) if parts else TOP_SCHEMA.empty_table()


def profile_table(store, run=None, stack=None, layer=None, neuron=None) -> pa.Table:
    """``neuron_profile`` rows of the request (every profile run by default)."""
    parts = [_profile_part(r, s, la, ls, idx)
             for r, s, la, ls, idx in _select(store, run, stack, layer, neuron)]
    return pa.concat_tables(parts) if parts else PROFILE_SCHEMA.empty_table()


def top_table(store, run=None, stack=None, layer=None, neuron=None, kind=None) -> pa.Table:
    """``neuron_top`` rows of the request, ordered by run, stack, layer, neuron, kind, rank."""
    if kind is not None and kind not in KINDS:
        raise QueryError(f"kind must be 'top' or 'bottom', not {kind!r}")
    kinds = [kind] if kind else list(KINDS)
    parts = [_top_part(r, s, la, ls, idx, run_state(store, r).n_positions, kinds)
             for r, s, la, ls, idx in _select(store, run, stack, layer, neuron)]
    return pa.concat_tables(parts) if parts else TOP_SCHEMA.empty_table()


def profile_frame(store, run=None, stack=None, layer=None, neuron=None) -> pd.DataFrame:
    return profile_table(store, run, stack, layer, neuron).to_pandas()


def top_frame(store, run=None, stack=None, layer=None, neuron=None, kind=None) -> pd.DataFrame:
    return top_table(store, run, stack, layer, neuron, kind).to_pandas()


def histogram(store, run: str, stack: str, layer: int, neuron: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(edges float64 [N+1], counts int64 [N+2])`` of one neuron; ``counts[0]`` counts
    ``h < edges[0]``, ``counts[-1]`` ``h >= edges[-1]``, ``counts[i]``
    ``edges[i-1] <= h < edges[i]``."""
    sel = _select(store, run, stack, layer, neuron)
    if not sel:
        raise QueryError(f"run {run!r} has no profile of {stack} layer {layer}")
    _, _, _, ls, idx = sel[0]
    return ls.edges.copy(), ls.hist[int(idx[0])].copy()
