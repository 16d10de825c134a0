"""Predictivity baselines (SPEC §2 step 1): the mean activation per (layer, slot, neuron).

A baseline comes from a training run, either a *stats* run (running sums kept while capturing,
:class:`~neurondb.store.stats.RunningStats`) or a *tokens* run (per-token tensors, reduced here
in float64). Either way it is ``mean(stack, layer)`` ``[S, d_ff]`` over the slots ``slots[stack]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from neurondb.arch.shape import ModelShape
from neurondb.query.errors import QueryError
from neurondb.query.layout import load_layout, run_stacks
from neurondb.store.reader import Store
from neurondb.store.run import RunInfo
from neurondb.store.stats import RunningStats


def run_shape(store: Store, run: str) -> ModelShape:
    """The model shape recorded by the store directory that holds ``run``."""
    root = store.run_dir(run).parent.parent
    return store.manifests[root].model.shape


def slot_sums(store: Store, info: RunInfo, stack: str, layer: int, slot_idx: np.ndarray,
              n_slots: int, d: int, chunk_rows: int | None = None) -> np.ndarray:
    """float64 ``[n_slots, d]`` sums of the rows of ``(stack, layer)`` per slot index.

    Rows with ``slot_idx < 0`` are skipped. Streams float32 chunks; memory is one chunk.
    (Sums of float16 values in float64 are exact for < 8192 rows per slot, so they do not
    depend on the order of summation.)
    """
    out = np.zeros((n_slots, d), np.float64)
    for start, x in store.iter_activations(layer, run=info.run, stack=stack, chunk_rows=chunk_rows):
        s = slot_idx[start:start + x.shape[0]]
        keep = np.flatnonzero(s >= 0)
        if keep.size == 0:
            continue
        onehot = sp.csr_matrix((np.ones(keep.size), (s[keep], keep)), shape=(n_slots, x.shape[0]))
        out += onehot @ x.astype(np.float64)
    return out


@dataclass
class Baseline:
    """Mean activation per ``(stack, layer, slot, neuron)`` of one training run.

    ``slots[stack]``: slot names; ``counts[stack]``: ``[S]`` rows per slot;
    ``mean(stack, layer)``: float64 ``[S, d_ff]`` (computed on first use for tokens runs).
    ``subset``: a description when the baseline covers only some examples or classes (the
    subtasks of ``multiclass="subtasks"``), else None.
    """

    store: Store
    info: RunInfo
    shape: ModelShape
    slots: dict[str, list[str]]
    counts: dict[str, np.ndarray]
    _stats: RunningStats | None = None
    _slot_idx: dict[str, np.ndarray] = field(default_factory=dict)
    _cache: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    _mean_fn: Callable[[str, int], np.ndarray] | None = None
    subset: str | None = None

    @property
    def run(self) -> str:
        return self.info.run

    def mean(self, stack: str, layer: int) -> np.ndarray:
        key = (stack, layer)
        if key not in self._cache:
            if self._mean_fn is not None:
                self._cache[key] = self._mean_fn(stack, layer)
            elif self._stats is not None:
                self._cache[key] = self._stats.mean(stack, layer)
            else:
                sums = slot_sums(self.store, self.info, stack, layer, self._slot_idx[stack],
                                 len(self.slots[stack]), self.shape.d_ff(stack, layer))
                self._cache[key] = sums / np.maximum(self.counts[stack], 1)[:, None]
        return self._cache[key]

    def slot_index(self, stack: str) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.slots[stack])}


def load_baseline(store: Store, info: RunInfo, stacks: Sequence[str] | None = None) -> Baseline:
    """The baseline of training run ``info`` (stats or tokens mode)."""
    shape = run_shape(store, info.run)
    if info.mode == "stats":
        st = store.stats(run=info.run)
        use = [s for s in (stacks or st.widths) if s in st.widths]
        slots = {s: list(st.slots[s]) for s in use}
        counts = {s: np.asarray(st.count[s], np.float64) for s in use}
        return Baseline(store, info, shape, slots, counts, _stats=st)
    slots, counts, idx = {}, {}, {}
    for stack in run_stacks(store, info, stacks):
        lay = load_layout(store, info, stack)
        slots[stack] = lay.slots
        counts[stack] = lay.slot_counts().astype(np.float64)
        idx[stack] = lay.slot_idx
    return Baseline(store, info, shape, slots, counts, _slot_idx=idx)


def subset_baseline(store: Store, info: RunInfo, keep: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    sides: dict[int, int], what: str,
                    stacks: Sequence[str] | None = None) -> Baseline:
    """The baseline of some of training run ``info``'s examples (a binary subtask's data).

    Tokens runs: ``keep(example_ids, labels)`` -> bool ``[n_examples]`` chooses the examples
    (e.g. a balanced sample) and the mean is taken over their rows exactly. Stats runs keep
    only per-class sums, so single examples cannot be chosen: the mean weights each side of
    the subtask (``sides``: ``{class: 0 or 1}``) by one half and the classes within a side by
    their counts, the expectation of a balanced sample's mean. ``what``: recorded as
    :attr:`Baseline.subset` (with the stats-run caveat).
    """
    shape = run_shape(store, info.run)
    if info.mode == "stats":
        st = store.stats(run=info.run)
        use = [s for s in (stacks or st.widths) if s in st.widths]
        slots = {s: list(st.slots[s]) for s in use}
        counts, weights = {}, {}
        for s in use:
            lc = st.label_count[s]                       # [n_labels, S] rows per class and slot
            cls = [c for c in sides if c < lc.shape[0]]
            counts[s] = sum(lc[c] for c in cls)
            n_c = {c: lc[c] for c in cls}
            side_n = {b: sum(n_c[c] for c in cls if sides[c] == b) for b in (0, 1)}
            with np.errstate(invalid="ignore", divide="ignore"):
                weights[s] = {c: np.nan_to_num(0.5 * n_c[c] / side_n[sides[c]])[:, None] for c in cls}

        def mean(stack: str, layer: int) -> np.ndarray:
            lm = st.label_mean(stack, layer)
            return sum(w * lm[c] for c, w in weights[stack].items())

        return Baseline(store, info, shape, slots, counts, _mean_fn=mean,
                        subset=f"{what} (stats run: each side weighted 1/2, classes by count)")
    slots, counts, idx = {}, {}, {}
    for stack in run_stacks(store, info, stacks):
        lay = load_layout(store, info, stack)
        ok = np.asarray(keep(lay.example_ids, lay.labels), bool)
        row_ok = ok[lay.ex_idx]
        slots[stack] = lay.slots
        idx[stack] = np.where(row_ok, lay.slot_idx, -1)
        counts[stack] = np.bincount(lay.slot_idx[row_ok], minlength=len(lay.slots)).astype(np.float64)
    return Baseline(store, info, shape, slots, counts, _slot_idx=idx, subset=what)


def running_stats_from_tokens(store: Store, run: str, chunk_rows: int | None = None) -> RunningStats:
    """The :class:`RunningStats` a stats-mode capture of tokens run ``run`` would have kept.

    Streams every layer once (float64 sums, sums of squares and per-label sums per slot).
    """
    info = store.run(run)
    if info.mode != "tokens":
        raise QueryError(f"run {run!r} already holds running statistics; use store.stats(run=...)")
    shape = run_shape(store, run)
    stacks = run_stacks(store, info)
    st = RunningStats({s: shape.widths[s] for s in shape.stacks}, max(1, len(info.labels)))
    for stack in stacks:
        lay = load_layout(store, info, stack)
        ids = st.slot_ids(stack, lay.slots)
        row_slot = ids[lay.slot_idx]
        row_label = lay.labels[lay.ex_idx]
        row_label = np.where(row_label < st.n_labels, row_label, -1)
        st.update_counts(stack, row_slot, row_label)
        for layer in range(shape.n_layers(stack)):
            for start, x in store.iter_activations(layer, run=run, stack=stack, chunk_rows=chunk_rows):
                sl = slice(start, start + x.shape[0])
                st.update(stack, layer, row_slot[sl], row_label[sl], x)
    return st
