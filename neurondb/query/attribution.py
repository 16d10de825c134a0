"""Attribution scores (SPEC §4) from stored activations and gradients, and their baselines.

Per example ``x`` and captured token ``t``: ``attr[l,i](x,t) = h[l,i](x,t) * dF/dh[l,i](x,t)``
(``F`` is the target the gradients were captured for, recorded in the run as ``grad_target``).
Aggregate over the example's tokens with ``sum`` (default), ``mean`` or ``max``, taking ``|.|``
of each token's value (``abs_when="token"``, default) or of the aggregate (``"after"``), then
average over examples. The baselines use the same aggregation of ``h`` (``activation``) or of
``dF/dh`` (``gradient``); ``random`` draws seeded uniform scores. Rankings are global by
default (Skeleton prunes by one global order).

Rows of an example are contiguous in a run, so the kernel streams float32 chunks and reduces
each chunk's complete examples with one sparse one-hot product (or ``maximum.reduceat``),
carrying the one example that continues into the next chunk: memory is one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from neurondb.callable_module import make_callable
from neurondb.errors import given, switch
from neurondb.query.errors import QueryError
from neurondb.query.layout import RunLayout, load_layout, resolve_runs, run_stacks, select_slots
from neurondb.query.rankings import ranking_frame, save_ranking
from neurondb.query.requests import (  # noqa: F401  (the choices' home; re-exported here)
    ABS_WHEN,
    ATTRIBUTION_METHODS,
    TOKEN_AGGS,
    RankRequest,
    as_request,
    check_choice,
)
from neurondb.query.results import as_store, check_absent, default_name
from neurondb.store.reader import Store

METHODS = ATTRIBUTION_METHODS


def _segments(ex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and example index of each run of equal values in ``ex``."""
    if ex.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, ex[1:] != ex[:-1]])
    return starts, ex[starts]


class ExampleReducer:
    """Streams ``[rows, d]`` values with their example index; keeps ``sum over examples`` of
    the per-example aggregate (``sum``/``mean``/``max`` over the example's rows).

    ``weights``: per example ``1 / n_rows`` for ``mean``. ``abs_after``: ``|.|`` of each
    example's aggregate before it is added.
    """

    def __init__(self, d: int, agg: str, abs_after: bool, weights: np.ndarray | None = None):
        self.agg, self.abs_after, self.weights = agg, abs_after, weights
        self.total = np.zeros(d, np.float64)
        self.n = 0
        self._carry: np.ndarray | None = None
        self._carry_ex = -1

    def _finish(self, vals: np.ndarray) -> None:
        if vals.shape[0]:
            self.total += (np.abs(vals) if self.abs_after else vals).sum(0)
            self.n += vals.shape[0]

    def add(self, v: np.ndarray, ex: np.ndarray) -> None:
        """Add rows ``v`` float ``[n, d]`` of examples ``ex`` ``[n]`` (in row order)."""
        if v.shape[0] == 0:
            return
        starts, seg_ex = _segments(ex)
        if self.agg == "max":
            seg = np.maximum.reduceat(v, starts, axis=0).astype(np.float64)
        else:
            w = (np.ones(v.shape[0], np.float32) if self.weights is None
                 else self.weights[ex].astype(np.float32))
            ids = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, v.shape[0]]))
            onehot = sp.csr_matrix((w, (ids, np.arange(v.shape[0]))), shape=(starts.size, v.shape[0]))
            seg = np.asarray(onehot @ v, dtype=np.float64)  # float32 sums within one chunk
        if self._carry is not None:
            if seg_ex[0] == self._carry_ex:
                seg[0] = np.maximum(seg[0], self._carry) if self.agg == "max" else seg[0] + self._carry
            else:
                self._finish(self._carry[None])
        self._finish(seg[:-1])
        self._carry, self._carry_ex = seg[-1].copy(), int(seg_ex[-1])

    def result(self) -> tuple[np.ndarray, int]:
        """``(sum over examples of the aggregate [d], number of examples)``."""
        if self._carry is not None:
            self._finish(self._carry[None])
            self._carry = None
        return self.total, self.n


def _row_selection(lay: RunLayout, slots: Sequence[str] | str | None,
                   max_examples: int | None) -> np.ndarray:
    """Bool ``[n_rows]``: rows of the selected slots of the first ``max_examples`` examples."""
    want = select_slots(lay.slots, slots)
    if not want:
        raise QueryError(f"no captured slot of run {lay.run!r} matches {given('slots', slots)}")
    keep = np.isin(lay.slot_idx, [lay.slots.index(s) for s in want])
    starts, seg_ex = _segments(lay.ex_idx)
    if np.unique(seg_ex).size != seg_ex.size:
        raise QueryError(f"run {lay.run!r}: the rows of an example are not contiguous; "
                         "attribution needs a run written by `neurondb extract`")
    if max_examples is not None:
        allowed = seg_ex[:max_examples]
        keep &= np.isin(lay.ex_idx, allowed)
    return keep


def _paired_chunks(store: Store, run: str, stack: str, layer: int, method: str,
                   chunk_rows: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, values [n, d])`` with values ``h*g``, ``h`` or ``g`` per method."""
    kinds = {"attribution": ("activations", "gradients"), "activation": ("activations",),
             "gradient": ("gradients",)}[method]
    its = [store.iter_activations(layer, run=run, stack=stack, chunk_rows=chunk_rows, kind=k)
           for k in kinds]
    if len(its) == 1:
        yield from its[0]
        return
    for (s0, h), (s1, g) in zip(*its):
        if s0 != s1 or h.shape != g.shape:
            raise QueryError(f"run {run!r}: activations and gradients of {stack} layer {layer} "
                             f"have different rows; re-extract the run with {switch('grad')}")
        np.multiply(h, g, out=h)
        yield s0, h


def layer_scores(store: Store, lay: RunLayout, layer: int, keep: np.ndarray, method: str,
                 token_agg: str, abs_when: str, chunk_rows: int | None = None) -> tuple[np.ndarray, int]:
    """``(sum over examples of the aggregated value [d], n_examples)`` for one layer of a run.

    Streams ``chunk_rows`` rows at a time (default 4096): memory is a few chunks of float32.
    """
    chunk_rows = chunk_rows or 4096
    d = None
    red: ExampleReducer | None = None
    weights = None
    if token_agg == "mean":
        n_rows = np.bincount(lay.ex_idx[keep], minlength=lay.example_ids.size)
        weights = 1.0 / np.maximum(n_rows, 1)
    for start, v in _paired_chunks(store, lay.run, lay.stack, layer, method, chunk_rows):
        if red is None:
            d = v.shape[1]
            red = ExampleReducer(d, token_agg, abs_when == "after", weights)
        k = keep[start:start + v.shape[0]]
        v = v[k] if not k.all() else v
        if abs_when == "token":
            np.abs(v, out=v)
        red.add(v, lay.ex_idx[start:start + k.size][k])
    if red is None:
        return np.zeros(0), 0
    return red.result()


def attribution(store: Store | str | Path, runs: str | Sequence[str] | RankRequest | None = None,
                /, **kw) -> pd.DataFrame:
    """Rank neurons by attribution (or the activation/gradient baseline); writes a ranking.

    ``runs``: tokens runs (names or splits; with gradients unless ``method="activation"``);
    their examples are pooled. ``method``: ``attribution`` (default), ``activation`` or
    ``gradient``. ``token_agg`` (``sum``, ``mean``, ``max``) and ``abs_when`` (``token``,
    ``after``): the aggregation over an example's tokens. ``max_examples``: use only the first
    N examples of each run (the paper uses about 20). ``target``: check that the gradients were
    captured for this target (``gold``, ``pred``, ``loss``). Keyword arguments are the
    attribution fields of :class:`~neurondb.query.requests.RankRequest`; rankings are global
    unless ``scope="layer"``. Returns the ranking frame (``score`` = mean over examples of the
    aggregated value).
    """
    if not isinstance(runs, RankRequest):
        check_choice(kw.setdefault("method", "attribution"), ATTRIBUTION_METHODS, "method")
    r = as_request(RankRequest, kw, runs=runs)
    if r.family != "attribution":
        raise TypeError(f"attribution() takes a RankRequest of method "
                        f"{', '.join(ATTRIBUTION_METHODS)}, not {r.method!r}")
    return run_attribution(store, r)


def _check_gradients(infos: list, method: str, target: str | None) -> None:
    """Runs ranked by attribution or gradient must hold gradients (of ``target``, if given)."""
    for info in infos:
        if method != "activation" and not info.grad:
            raise QueryError(f"run {info.run!r} has no gradients; re-extract it with "
                             f"{switch('grad')}, or rank by {given('method', 'activation')}")
        if method != "activation" and target is not None and info.grad_target not in (None, target):
            raise QueryError(f"run {info.run!r} holds gradients of target {info.grad_target!r}, not "
                             f"{target!r}; re-extract with {given('grad_target', target)}")


def run_attribution(store: Store | str | Path, r: RankRequest) -> pd.DataFrame:
    """Carry out an attribution, activation or gradient
    :class:`~neurondb.query.requests.RankRequest`."""
    store = as_store(store)
    method, scope = r.method, r.ranking_scope
    infos = resolve_runs(store, r.runs, mode="tokens", what="run")
    _check_gradients(infos, method, r.target)
    name = r.name or default_name(method, [i.run for i in infos])
    if r.write:
        check_absent(store, "rankings", name, r.overwrite)
    totals: dict[tuple[str, int], np.ndarray] = {}
    n_examples = 0
    counted: set[str] = set()
    for info in infos:
        for stack in run_stacks(store, info, r.stacks):
            lay = load_layout(store, info, stack)
            keep = _row_selection(lay, r.slots, r.max_examples)
            for layer in range(store.shape.n_layers(stack)):
                s, n = layer_scores(store, lay, layer, keep, method, r.token_agg, r.abs_when,
                                    r.chunk_rows)
                key = (stack, layer)
                totals[key] = totals.get(key, 0) + s
                if info.run not in counted:
                    n_examples += n
                    counted.add(info.run)
    if n_examples == 0:
        raise QueryError("no example has rows in the selected slots; nothing to attribute")
    scores = {k: v / n_examples for k, v in totals.items()}
    df = ranking_frame(method, scores, scope, stack_order=list(store.shape.stacks))
    if r.write:
        meta = {"method": method, "runs": [i.run for i in infos], "token_agg": r.token_agg,
                "abs": r.abs_when, "target": sorted({str(i.grad_target) for i in infos})
                if method != "activation" else None, "slots": r.slots, "n_examples": n_examples,
                "max_examples": r.max_examples, "scope": scope, "shape": store.shape.to_dict()}
        save_ranking(store, name, df, meta, r.overwrite)
    df.attrs["name"] = name
    return df


def random_ranking(store: Store | str | Path, request: RankRequest | None = None, /,
                   **kw) -> pd.DataFrame:
    """A seeded random ranking of every neuron (uniform scores in [0, 1)), the control;
    keyword arguments: ``seed``, ``scope`` (default global), ``stacks``, ``name``,
    ``overwrite``, ``write`` (the fields of :class:`~neurondb.query.requests.RankRequest`)."""
    return run_random(store, as_request(RankRequest, kw, {"method": "random"}, request=request))


def run_random(store: Store | str | Path, r: RankRequest) -> pd.DataFrame:
    """Carry out a random :class:`~neurondb.query.requests.RankRequest`."""
    store = as_store(store)
    scope = r.ranking_scope
    name = r.name or f"random_seed{r.seed}"
    if r.write:
        check_absent(store, "rankings", name, r.overwrite)
    rng = np.random.default_rng(r.seed)
    shape = store.shape
    scores = {(s, layer): rng.random(shape.d_ff(s, layer))
              for s in (r.stacks or shape.stacks) for layer in range(shape.n_layers(s))}
    df = ranking_frame("random", scores, scope, stack_order=list(shape.stacks))
    if r.write:
        save_ranking(store, name, df, {"method": "random", "seed": r.seed, "scope": scope,
                                       "shape": shape.to_dict()}, r.overwrite)
    df.attrs["name"] = name
    return df


# ``neurondb.query.attribution(...)`` calls the function even once this module is loaded under
# that name (the package imports its names on first use)
make_callable(__name__, "neurondb.query.attribution:attribution")
