"""Skill-neuron predictivity (SPEC §2), computed from a store.

For one prompt ``k`` (an evaluation run, with the baseline of its training run):

1. ``base[l,t,i]`` = mean activation over the training run, per slot ``t``;
2. ``acc[l,t,i]`` = fraction of evaluation examples with ``(h > base) == (y == positive)``;
3. ``pred[l,t,i] = max(acc, 1 - acc)``; 4. ``pred_k[l,i] = max_t pred[l,t,i]``;
5. over prompts, ``mean_k`` (default) or ``min_k``; 6. rank per layer (default) or globally.

Multi-class (C > 2 classes present), ``multiclass="one-vs-rest"`` (default): one binary task
per class ``c`` (``acc_c`` with ``y == c``), combined by ``pred = mean_c pred_c`` (default) or
``max_c``. ``combine_order`` says where: ``"classes-first"`` (default) combines the classes at
each slot and then takes the max over slots, so a neuron's score, slot and accuracy all refer
to one position; ``"slots-first"`` takes each class's max over slots and then combines (the
order Skill-Neuron's code uses: ``acc.max(axis=2)`` over positions within each task). The
default stays ``classes-first`` because it keeps every reported figure at a single position and
keeps the rankings made before the option existed; for a binary task both orders are the same.

``multiclass="subtasks"`` is Skill-Neuron's scheme (``src/helper/binarize.py``) for 3 and 4
classes: two binary subtasks, ``pn`` (the two outer classes: 0 vs 2 of 3, 1 vs 3 of 4) and
``neu`` (class 1 of 3, 2 of 4, vs the rest), each on a class-balanced sample of the training
and of the evaluation examples, each with its own baseline and predictivity. The ranking's
``score`` is the larger of the two; ``score_pn`` and ``score_neu`` are kept and masks select
the references' union (:func:`neurondb.query.masks.union_top`). Balancing: ``balance_seed=None``
is the reference's own rule, the first ``min(n_0, n_1) - 1`` examples of each side in example
order (``binarize.balance`` counts ``cnt < ths`` after incrementing); an integer draws
``min(n_0, n_1)`` of each side at random with that seed.

Binary tasks use the higher class index as positive (``y == 1`` for labels 0/1).

Exactness (16-bit stores): a value rounded to float16/bfloat16 lands on the other side of the
float64 baseline than the model's value only if it is stored as one of the two storage values
around the baseline (:func:`neurondb.query.thresholds.storage_bracket`). Those are counted per
neuron (column ``near_base``, the max over slots, prompts and subtasks of the labelled rows
stored there); a neuron with more than one such row can have an accuracy that differs from a
float32 capture by more than one example, and then an :class:`ExactnessWarning` is raised and
the counts are recorded in the ranking's provenance (``exactness``). float32 stores are exact.

Everything comes from counts ``G[c,t,i]`` = rows of class ``c`` at slot ``t`` with
``h > base`` (:func:`neurondb.query.counting.count_above`) and ``N[c,t]`` = rows of class ``c``
at slot ``t``: ``acc_c = (G_c + (N - N_c) - (G - G_c)) / N`` with ``G = sum_c G_c``,
``N = sum_c N_c``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from neurondb.arch.shape import ModelShape
from neurondb.callable_module import make_callable
from neurondb.errors import ProvenanceError, arg, given, switch
from neurondb.query.baseline import Baseline, load_baseline, run_shape, subset_baseline
from neurondb.query.counting import count_above
from neurondb.query.errors import QueryError
from neurondb.query.layout import (
    RunLayout,
    load_layout,
    resolve_runs,
    run_stacks,
    select_slots,
    split_names,
)
from neurondb.query.rankings import ranking_frame, save_ranking
from neurondb.query.rawtensor import RawLayer
from neurondb.query.requests import (  # noqa: F401  (the choices' home; re-exported here)
    COMBINE_ORDERS,
    MULTICLASS,
    OVER_CLASSES,
    OVER_PROMPTS,
    RankRequest,
    as_request,
)
from neurondb.query.results import as_store, check_absent, default_name
from neurondb.query.thresholds import Thresholds, storage_bracket
from neurondb.store.codec import is_compact
from neurondb.store.reader import Store
from neurondb.store.run import RunInfo

# Skill-Neuron's binarize.py: (name, {class: binary label}) of the two subtasks of C classes.
SUBTASKS: dict[int, tuple[tuple[str, dict[int, int]], ...]] = {
    3: (("pn", {0: 0, 2: 1}), ("neu", {0: 0, 1: 1, 2: 0})),
    4: (("pn", {1: 0, 3: 1}), ("neu", {0: 0, 1: 0, 2: 1, 3: 0})),
}


class ExactnessWarning(UserWarning):
    """Predictivity from 16-bit activations may differ from a float32 capture."""


def subtask_labels(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Binary subtask label per example (0/1), -1 for classes outside the subtask."""
    out = np.full(len(labels), -1, np.int64)
    for c, b in mapping.items():
        out[np.asarray(labels) == c] = b
    return out


def balance_examples(example_ids: np.ndarray, y: np.ndarray, seed: int | None = None) -> np.ndarray:
    """bool ``[n]``: a class-balanced sample of the examples with ``y`` 0/1 (-1: left out).

    ``seed=None``: Skill-Neuron's ``balance`` exactly: in example-id order, keep each example
    while its class's running count (incremented first) is below ``min(n_0, n_1)``, i.e. the
    first ``min(n_0, n_1) - 1`` of each class. An integer: ``min(n_0, n_1)`` of each class
    drawn without replacement by ``numpy.random.default_rng(seed)`` (class 0 first).
    """
    y = np.asarray(y)
    order = np.argsort(np.asarray(example_ids), kind="stable")
    ths = min(int((y == 0).sum()), int((y == 1).sum()))
    keep = np.zeros(len(y), bool)
    rng = np.random.default_rng(seed) if seed is not None else None
    for b in (0, 1):
        cand = order[y[order] == b]
        if rng is None:
            keep[cand[:max(ths - 1, 0)]] = True
        else:
            keep[rng.choice(cand, size=ths, replace=False)] = True
    return keep


def default_threads() -> int:
    """Worker threads for the kernels: the usable cores, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(4, n))


@dataclass
class SlotAccuracy:
    """Accuracies of one ``(prompt, stack, layer)`` over the selected slots.

    ``acc``: ``[n_tasks, S, d]`` accuracy of each binary task (one task for a binary split,
    one per class for one-vs-rest); ``pred``: ``[S, d]`` predictivity after combining tasks;
    ``tasks``: class index of each task's positive class; ``negative``: for a binary split
    (one task), the other class, so that a neuron that is above its baseline on that class
    (accuracy below 0.5) is reported with it, not with the task's positive class.
    """

    acc: np.ndarray
    pred: np.ndarray
    tasks: list[int]
    negative: int | None = None


def accuracy_from_counts(G: np.ndarray, N: np.ndarray, present: Sequence[int],
                         over_classes: str = "mean") -> SlotAccuracy:
    """SPEC §2 steps 2–3 from counts ``G`` ``[C, S, d]`` and ``N`` ``[C, S]`` (rows per class/slot).

    ``present``: the classes that occur (at least two). Binary: one task, positive = the higher
    class. More: one-vs-rest per class, combined by ``over_classes`` (mean or max).
    """
    present = sorted(int(c) for c in present)
    Gs = G[present].astype(np.float64)
    Ns = N[present].astype(np.float64)[:, :, None]
    Gt, Nt = Gs.sum(0), Ns.sum(0)
    tasks = [present[-1]] if len(present) == 2 else present
    rows = [present.index(c) for c in tasks]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (Gs[rows] + (Nt - Ns[rows]) - (Gt - Gs[rows])) / Nt
    pred_c = np.maximum(acc, 1.0 - acc)
    pred = pred_c[0] if len(tasks) == 1 else (pred_c.mean(0) if over_classes == "mean" else pred_c.max(0))
    return SlotAccuracy(acc=acc, pred=pred, tasks=tasks,
                        negative=present[0] if len(present) == 2 else None)


def accuracy_from_agreement(A: np.ndarray, N: np.ndarray, positive: int,
                            negative: int | None = None) -> SlotAccuracy:
    """Binary task from agreement counts ``A`` ``[S, d]`` and labelled rows ``N`` ``[S]``;
    ``negative``: the other class (see :class:`SlotAccuracy`)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = A / N.astype(np.float64)[:, None]
    return SlotAccuracy(acc=acc[None], pred=np.maximum(acc, 1.0 - acc), tasks=[positive],
                        negative=negative)


@dataclass
class PromptResult:
    """Per neuron of one ``(prompt, stack, layer)``: peak predictivity, its slot, accuracy, class."""

    pred: np.ndarray
    slot: np.ndarray
    acc: np.ndarray
    cls: np.ndarray
    near: np.ndarray | None = None
    move: np.ndarray | None = None


def peak_over_slots(sa: SlotAccuracy, slots: list[str], order: str = "classes-first",
                    over_classes: str = "mean") -> PromptResult:
    """SPEC §2 step 4: max over slots (first slot on ties), with the accuracy at the peak.

    ``order="classes-first"``: the max over slots of ``sa.pred`` (classes already combined per
    slot); the accuracy reported is that of the task (class) with the highest predictivity at
    the peak. ``order="slots-first"``: each task's max over slots, then ``over_classes`` over
    tasks; slot, accuracy and class are those of the task with the highest peak.
    """
    if order == "slots-first" and len(sa.tasks) > 1:
        return _peak_slots_first(sa, slots, over_classes)
    d = sa.pred.shape[1]
    t = np.argmax(np.nan_to_num(sa.pred, nan=-1.0), axis=0)
    cols = np.arange(d)
    pred = sa.pred[t, cols]
    acc_t = sa.acc[:, t, cols]
    best = np.argmax(np.maximum(acc_t, 1.0 - acc_t), axis=0)
    acc = acc_t[best, cols]
    cls = np.asarray(sa.tasks)[best]
    if len(sa.tasks) == 1 and sa.negative is not None:
        # binary: the class on which the neuron is above its baseline (one task has one
        # positive class, so without this every neuron would be reported with that class)
        cls = np.where(acc > 0.5, sa.tasks[0], sa.negative)
    return PromptResult(pred=pred, slot=np.asarray(slots, dtype=object)[t], acc=acc, cls=cls)


def _peak_slots_first(sa: SlotAccuracy, slots: list[str], over_classes: str) -> PromptResult:
    d = sa.acc.shape[2]
    cols = np.arange(d)
    pred_c = np.maximum(sa.acc, 1.0 - sa.acc)                          # [T, S, d]
    t_c = np.argmax(np.nan_to_num(pred_c, nan=-1.0), axis=1)            # [T, d]
    peak_c = np.take_along_axis(pred_c, t_c[:, None, :], axis=1)[:, 0]  # [T, d]
    pred = peak_c.mean(0) if over_classes == "mean" else peak_c.max(0)
    best = np.argmax(np.nan_to_num(peak_c, nan=-1.0), axis=0)
    t = t_c[best, cols]
    return PromptResult(pred=pred, slot=np.asarray(slots, dtype=object)[t],
                        acc=sa.acc[best, t, cols], cls=np.asarray(sa.tasks)[best])


def class_slot_counts(lay: RunLayout, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n_classes, S]`` rows per class (``classes`` per example, -1 left out) and slot."""
    y = np.asarray(classes)[lay.ex_idx]
    ok = y >= 0
    flat = y[ok] * len(lay.slots) + lay.slot_idx[ok]
    return np.bincount(flat, minlength=n_classes * len(lay.slots)).reshape(n_classes, len(lay.slots))


def _check_compatible(base: Baseline, ev_store: Store, lay: RunLayout, want: list[str]) -> None:
    stack = lay.stack
    ev_shape = run_shape(ev_store, lay.run)
    if ev_shape.widths.get(stack) != base.shape.widths.get(stack):
        raise QueryError(f"baseline run {base.run!r} and evaluation run {lay.run!r} come from models "
                         f"of different shapes ({stack}: {base.shape.widths.get(stack)} vs "
                         f"{ev_shape.widths.get(stack)}); take baselines from the same model")
    if stack not in base.slots:
        raise QueryError(f"baseline run {base.run!r} has no statistics for stack {stack!r}; "
                         "capture the training split for that stack")
    counts = dict(zip(base.slots[stack], base.counts[stack]))
    missing = [s for s in want if counts.get(s, 0) <= 0]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise QueryError(f"evaluation run {lay.run!r} captured slot(s) {shown} that baseline run "
                         f"{base.run!r} has no rows for (baseline slots: "
                         f"{', '.join(base.slots[stack][:5])}{' ...' if len(base.slots[stack]) > 5 else ''}); "
                         f"capture the same positions for both, or restrict with {arg('slots')}")


def prompt_layer(ev_store: Store, base: Baseline, lay: RunLayout, want: list[str],
                 classes: np.ndarray, present: list[int], over_classes: str, layer: int,
                 threads: int, order: str = "classes-first",
                 check_exactness: bool = True) -> PromptResult:
    """Predictivity of one prompt for one ``(stack, layer)`` (SPEC §2 steps 1–4).

    ``classes``: class per example of ``lay`` (-1: not counted); ``present``: the classes
    counted. With 16-bit storage and ``check_exactness``, the result also holds ``near``
    (``[d]``, labelled rows stored within one storage step of the baseline, max over slots)
    and ``move`` (``[d]``, that count over the slot's labelled rows: the most the accuracy
    can differ from a float32 capture).
    """
    stack = lay.stack
    bidx = base.slot_index(stack)
    mean = base.mean(stack, layer)
    S, d = len(lay.slots), mean.shape[1]
    thr_base = np.zeros((S, d))
    sel = [lay.slots.index(s) for s in want]
    thr_base[sel] = mean[[bidx[s] for s in want]]
    if np.isnan(thr_base[sel]).any():
        raise QueryError(f"baseline run {base.run!r} has NaN means in {stack} layer {layer}; "
                         "re-capture the training split")
    n_cls = max(len(lay.label_names), int(np.max(classes, initial=-1)) + 1)
    N = class_slot_counts(lay, classes, n_cls)[:, sel]
    near = None
    with RawLayer(ev_store, lay.run, stack, layer) as raw:
        thr = Thresholds.from_base(thr_base, raw.storage)
        if len(present) == 2:
            A = count_above(raw, thr, lay, classes, n_cls, threads=threads, positive=present[-1])
            sa = accuracy_from_agreement(A[sel], N[present].sum(0), present[-1], present[0])
        else:
            G = count_above(raw, thr, lay, classes, n_cls, threads=threads)
            sa = accuracy_from_counts(G[:, sel], N, present, over_classes)
        if check_exactness and is_compact(raw.storage):
            below, hi = storage_bracket(thr_base, raw.storage)
            c_lo = count_above(raw, Thresholds.from_base(below, raw.storage), lay, classes, n_cls,
                               threads=threads).sum(0)
            c_hi = count_above(raw, Thresholds.from_base(hi, raw.storage), lay, classes, n_cls,
                               threads=threads).sum(0)
            near = (c_lo - c_hi)[sel]
    res = peak_over_slots(sa, want, order, over_classes)
    if near is not None:
        n_rows = N[present].sum(0).astype(np.float64)[:, None]
        res.near = near.max(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            res.move = np.nan_to_num(near / n_rows).max(0)
    return res


def _map_layers(fn, layers: range, threads: int) -> list:
    """``[fn(layer, inner_threads) for layer in layers]``, layers run ``threads`` at a time.

    Whole layers in parallel overlap each layer's setup (chunk index, thresholds) with the
    other's kernel; with fewer layers than threads the rest go to the blocks of each layer.
    """
    outer = max(1, min(threads, len(layers)))
    inner = max(1, threads // outer)
    if outer == 1:
        return [fn(layer, inner) for layer in layers]
    with ThreadPoolExecutor(max_workers=outer) as pool:
        return list(pool.map(lambda layer: fn(layer, inner), layers))


def _eval_classes(lay: RunLayout) -> tuple[np.ndarray, list[int]]:
    """Per-example class (-1 unlabelled) and the classes present among captured examples."""
    classes = lay.labels.copy()
    seen = np.unique(lay.ex_idx)
    present = sorted(int(c) for c in np.unique(classes[seen]) if c >= 0)
    return classes, present


def _subtask_specs(multiclass: str, class_names: list[str], run: str
                   ) -> list[tuple[str | None, dict[int, int] | None]]:
    if multiclass == "one-vs-rest":
        return [(None, None)]
    n = len(class_names)
    if n not in SUBTASKS:
        raise QueryError(f"{given('multiclass', 'subtasks')} is Skill-Neuron's scheme for 3 or 4 "
                         f"classes; run {run!r} has {n} ({', '.join(class_names[:6])}); use "
                         f"{given('multiclass', 'one-vs-rest')}")
    return [(name, dict(m)) for name, m in SUBTASKS[n]]


def _check_same_model(store: Store, ev: str, tstore: Store, tr: str, allow_foreign: bool) -> None:
    """Refuse baselines of another model: the evaluation and training runs' stores must record
    the same model fingerprint (unless ``allow_foreign``)."""
    a = store.manifests[store.root_of(ev)].model
    b = tstore.manifests[tstore.root_of(tr)].model
    if a.fingerprint != b.fingerprint and not allow_foreign:
        raise ProvenanceError(
            f"training run {tr!r} is from a store of another model ({b.name}, fingerprint "
            f"{b.fingerprint[:12]}) than evaluation run {ev!r} ({a.name}, fingerprint "
            f"{a.fingerprint[:12]}); use baselines of the same model, or pass "
            f"{switch('allow_foreign')} for a deliberate cross-model study")


def _pair_runs(store: Store, tstore: Store, eval: str | Sequence[str], train: str | Sequence[str],
               allow_foreign: bool) -> tuple[list[RunInfo], list[RunInfo]]:
    """Resolve the evaluation and training runs and pair them (one training run per evaluation
    run, in order, or one for all); each pair must come from the same model."""
    evals = resolve_runs(store, eval, mode="tokens", what="evaluation run")
    trains = resolve_runs(tstore, train, what="training run")
    if len(trains) not in (1, len(evals)):
        raise QueryError(f"{len(trains)} training runs for {len(evals)} evaluation runs; give one "
                         "training run per evaluation run (same order), or a single one")
    if len(trains) == 1:
        trains = trains * len(evals)
    for ev, tr in zip(evals, trains):
        _check_same_model(store, ev.run, tstore, tr.run, allow_foreign)
    return evals, trains


@dataclass(frozen=True)
class _ScanOptions:
    """The options of :func:`predictivity` that shape the per-prompt scan."""

    slots: str | Sequence[str] | None
    stacks: Sequence[str] | None
    over_classes: str
    multiclass: str
    combine_order: str
    balance_seed: int | None
    check_exactness: bool
    threads: int


@dataclass
class _Scan:
    """What the per-prompt scan collects.

    ``per``: ``(variant, stack, layer)`` -> one :class:`PromptResult` per evaluation run
    (variant ``None`` unless ``multiclass="subtasks"``); ``baselines``: per
    ``(training run, variant)``; ``used_slots``: per stack, the first run's selected slots;
    ``n_examples``: captured examples per evaluation run; ``class_names`` and ``variants``:
    those of the last run scanned; ``subtask_meta``: one provenance record per subtask.
    """

    per: dict[tuple[str | None, str, int], list[PromptResult]] = field(default_factory=dict)
    baselines: dict[tuple[str, str | None], Baseline] = field(default_factory=dict)
    used_slots: dict[str, list[str]] = field(default_factory=dict)
    n_examples: list[int] = field(default_factory=list)
    class_names: list[str] | None = None
    variants: list[str | None] = field(default_factory=lambda: [None])
    subtask_meta: list[dict] = field(default_factory=list)


def _selected_slots(lay: RunLayout, slots: str | Sequence[str] | None, run: str) -> list[str]:
    """The captured slots of ``lay`` matching ``slots`` (all when None); none is an error."""
    want = select_slots(lay.slots, slots)
    if not want:
        raise QueryError(f"no captured slot of run {run!r} ({', '.join(lay.slots[:5])}"
                         f"{' ...' if len(lay.slots) > 5 else ''}) matches {given('slots', slots)}")
    return want


def _require_two_classes(lay: RunLayout, present: list[int], run: str) -> None:
    """Predictivity needs at least two classes among the labelled examples."""
    if len(present) < 2:
        only = lay.label_names[present[0]] if present else "none"
        raise QueryError(f"evaluation run {run!r} has a single class (label {only!r}) "
                         "among its labelled examples; predictivity needs at least two "
                         "classes, evaluate on a split with both labels")


def _subtask_baseline(tstore: Store, tr: RunInfo, variant: str, mapping: dict[int, int],
                      balance_seed: int | None, stacks: Sequence[str] | None) -> Baseline:
    """Baseline of one subtask: the mean over a class-balanced sample of the training run."""
    def keep(ids, labels, m=mapping):
        return balance_examples(ids, subtask_labels(labels, m), balance_seed)
    return subset_baseline(
        tstore, tr, keep, mapping, f"subtask {variant}: classes "
        f"{sorted(mapping)} as {[mapping[c] for c in sorted(mapping)]}, balanced",
        stacks)


def _baseline_for(scan: _Scan, tstore: Store, tr: RunInfo, variant: str | None,
                  mapping: dict[int, int] | None, opts: _ScanOptions) -> Baseline:
    """The (cached) baseline of training run ``tr`` for ``variant`` (None: the whole run)."""
    key = (tr.run, variant)
    if key not in scan.baselines:
        if mapping is None:
            scan.baselines[key] = load_baseline(tstore, tr, opts.stacks)
        else:
            scan.baselines[key] = _subtask_baseline(tstore, tr, variant, mapping,
                                                    opts.balance_seed, opts.stacks)
    return scan.baselines[key]


def _subtask_eval_classes(lay: RunLayout, mapping: dict[int, int], balance_seed: int | None,
                          variant: str, run: str) -> tuple[np.ndarray, list[int]]:
    """Per-example binary subtask label of ``lay`` (``[n_examples]``, -1: outside the subtask,
    not captured or not in the balanced sample) and the labels present (both, or an error)."""
    y = subtask_labels(lay.labels, mapping)
    seen = np.zeros(len(y), bool)
    seen[np.unique(lay.ex_idx)] = True
    y = np.where(seen, y, -1)
    cls_v = np.where(balance_examples(lay.example_ids, y, balance_seed), y, -1)
    present_v = sorted(int(c) for c in np.unique(cls_v) if c >= 0)
    if len(present_v) < 2:
        raise QueryError(f"subtask {variant} of run {run!r} has too few examples "
                         "of one side to balance; evaluate on more examples")
    return cls_v, present_v


def _subtask_record(variant: str, mapping: dict[int, int], class_names: list[str],
                    base: Baseline, cls_v: np.ndarray) -> dict:
    """Provenance of one subtask: its classes (by name), baseline subset, evaluation examples."""
    return {"name": variant, "classes": {
        class_names[c]: b for c, b in mapping.items() if c < len(class_names)},
        "baseline": base.subset, "n_eval_examples": int((cls_v >= 0).sum())}


def _scan_stack(store: Store, tstore: Store, ev: RunInfo, tr: RunInfo, stack: str,
                first_stack: bool, opts: _ScanOptions, scan: _Scan) -> RunLayout:
    """Score every layer of one ``(evaluation run, stack)`` for each variant into ``scan``;
    returns the run's layout for that stack."""
    lay = load_layout(store, ev, stack)
    want = _selected_slots(lay, opts.slots, ev.run)
    classes, present = _eval_classes(lay)
    _require_two_classes(lay, present, ev.run)
    scan.class_names = lay.label_names
    scan.used_slots.setdefault(stack, want)
    specs = _subtask_specs(opts.multiclass, scan.class_names, ev.run)
    scan.variants = [v for v, _ in specs]
    layers = range(run_shape(store, ev.run).n_layers(stack))
    store.tensor(ev.run)  # open the shared readers before any thread does
    for variant, mapping in specs:
        base = _baseline_for(scan, tstore, tr, variant, mapping, opts)
        _check_compatible(base, store, lay, want)
        if mapping is None:
            cls_v, present_v = classes, present
        else:
            cls_v, present_v = _subtask_eval_classes(lay, mapping, opts.balance_seed, variant,
                                                     ev.run)
            if first_stack and len(scan.subtask_meta) < len(specs):
                scan.subtask_meta.append(_subtask_record(variant, mapping, scan.class_names,
                                                         base, cls_v))
        job = partial(prompt_layer, store, base, lay, want, cls_v, present_v, opts.over_classes,
                      order=opts.combine_order, check_exactness=opts.check_exactness)
        for layer, res in zip(layers, _map_layers(job, layers, opts.threads)):
            scan.per.setdefault((variant, stack, layer), []).append(res)
    return lay


def _scan_prompts(store: Store, tstore: Store, evals: list[RunInfo], trains: list[RunInfo],
                  opts: _ScanOptions) -> _Scan:
    """SPEC §2 steps 1–4 for every evaluation run (prompt), stack, layer and variant."""
    scan = _Scan()
    for ev, tr in zip(evals, trains):
        ev_stacks = run_stacks(store, ev, opts.stacks)
        for stack in ev_stacks:
            lay = _scan_stack(store, tstore, ev, tr, stack, stack == ev_stacks[0], opts, scan)
        scan.n_examples.append(int(np.unique(lay.ex_idx).size))
    _check_all_captured(scan.per, len(evals))
    return scan


def _check_all_captured(per: dict[tuple[str | None, str, int], list[PromptResult]],
                        n_prompts: int) -> None:
    """Every ``(variant, stack, layer)`` must have a result from each of the ``n_prompts`` runs."""
    for key, res in per.items():
        if len(res) != n_prompts:
            raise QueryError(f"{key[1]} layer {key[2]} was captured by {len(res)} of the "
                             f"{n_prompts} evaluation runs; use runs of the same capture")


class _Columns(NamedTuple):
    """Per ``(stack, layer)``: ``scores`` ``[d]``, the ranking's ``extra`` columns, ``near``
    ``[d]`` (rows near the baseline) and ``move`` ``[d]`` (bound on the accuracy's change)."""

    scores: dict[tuple[str, int], np.ndarray]
    extra: dict[tuple[str, int], dict]
    near: dict[tuple[str, int], np.ndarray]
    move: dict[tuple[str, int], np.ndarray]


def _aggregate_variant(per: dict[tuple[str | None, str, int], list[PromptResult]],
                       variant: str | None, over_prompts: str,
                       class_names: list[str] | None) -> _Columns:
    """SPEC §2 step 5 for one variant: combine the prompts' results (``[K, d]``) per layer;
    slot, accuracy and class are those of the prompt with the highest predictivity."""
    out = _Columns({}, {}, {}, {})
    for (v, stack, layer), res in per.items():
        if v != variant:
            continue
        key = (stack, layer)
        P = np.stack([r.pred for r in res])
        score = P.mean(0) if over_prompts == "mean" else P.min(0)
        kb = np.argmax(np.nan_to_num(P, nan=-1.0), axis=0)
        cols = np.arange(P.shape[1])
        slot_k = np.stack([r.slot for r in res])
        acc_k = np.stack([r.acc for r in res])
        cls_k = np.stack([r.cls for r in res])
        acc = acc_k[kb, cols]
        out.scores[key] = score
        cls_name = (np.asarray(class_names, dtype=object)[cls_k[kb, cols]].astype(str)
                    if variant is None else np.full(P.shape[1], variant, dtype=object).astype(str))
        out.extra[key] = {
            "slot": slot_k[kb, cols].astype(str),
            "accuracy": acc,
            "excitatory": acc > 0.5,
            "class": cls_name,
            "per_prompt": list(P.T),
            "per_prompt_slot": [list(map(str, s)) for s in slot_k.T],
        }
        out.near[key] = (np.max([r.near for r in res], 0) if res[0].near is not None
                         else np.zeros(P.shape[1], np.int64))
        out.move[key] = (np.max([r.move for r in res], 0) if res[0].move is not None
                         else np.zeros(P.shape[1]))
    return out


def _best_of_variants(parts: dict[str | None, _Columns], variants: list[str | None]) -> _Columns:
    """Subtasks: per neuron, the columns of the variant with the highest score, plus each
    variant's score as ``score_<variant>``; ``near``/``move`` are the max over variants."""
    out = _Columns({}, {}, {}, {})
    for key in list(parts[variants[0]].scores):
        sv = np.stack([parts[v].scores[key] for v in variants])          # [2, d]
        best = np.argmax(np.nan_to_num(sv, nan=-1.0), axis=0)
        cols = np.arange(sv.shape[1])
        out.scores[key] = sv[best, cols]
        ex = {}
        for col in parts[variants[0]].extra[key]:
            vals = [parts[v].extra[key][col] for v in variants]
            if isinstance(vals[0], list):
                ex[col] = [vals[b][i] for i, b in enumerate(best)]
            else:
                ex[col] = np.stack(vals)[best, cols]
        for i, v in enumerate(variants):
            ex[f"score_{v}"] = sv[i]
        out.extra[key] = ex
        out.near[key] = np.max([parts[v].near[key] for v in variants], 0)
        out.move[key] = np.max([parts[v].move[key] for v in variants], 0)
    return out


def _exactness_summary(evals: list[RunInfo], near: dict[tuple[str, int], np.ndarray],
                       move: dict[tuple[str, int], np.ndarray],
                       check_exactness: bool) -> tuple[dict, int]:
    """The ranking's ``exactness`` record and the number of neurons it covers."""
    storages = sorted({e.dtype for e in evals})
    checked = check_exactness and any(is_compact(d) for d in storages)
    all_near = np.concatenate([near[k] for k in near]) if near else np.zeros(0, np.int64)
    all_move = np.concatenate([move[k] for k in move]) if move else np.zeros(0)
    at_risk = int((all_near > 1).sum())
    exactness = {"storage": storages, "checked": bool(checked),
                 "n_neurons_near_base": at_risk, "max_near_base": int(all_near.max(initial=0)),
                 "max_accuracy_move": float(all_move.max(initial=0.0))}
    return exactness, int(all_near.size)


def _warn_inexact(exactness: dict, n_neurons: int) -> None:
    """Raise :class:`ExactnessWarning` (attributed to the caller of :func:`predictivity` or
    :func:`neurondb.query.rank`: both call :func:`run_predictivity`)."""
    warnings.warn(
        f"predictivity from {'/'.join(exactness['storage'])} activations: "
        f"{exactness['n_neurons_near_base']} of {n_neurons} "
        f"neurons have more than one evaluation value within one storage step of their "
        f"baseline, so their accuracy may differ from a float32 capture by up to "
        f"{exactness['max_accuracy_move']:.3f} ({exactness['max_near_base']} examples); "
        f"re-extract with {given('dtype', 'float32')} or measure with bench/exactness.py",
        ExactnessWarning, stacklevel=4)


def _ranking_meta(tstore: Store, evals: list[RunInfo], trains: list[RunInfo], scan: _Scan,
                  shape: ModelShape, exactness: dict, *, over_prompts: str, over_classes: str,
                  scope: str, slots: str | Sequence[str] | None, multiclass: str,
                  combine_order: str, balance_seed: int | None) -> dict:
    """The provenance saved with the ranking."""
    meta = {
        "method": "predictivity", "eval": [e.run for e in evals], "train": [t.run for t in trains],
        "train_store": str(tstore.path), "eval_splits": [e.split for e in evals],
        "datasets": sorted({e.dataset for e in evals}), "over_prompts": over_prompts,
        "over_classes": over_classes, "scope": scope, "slots": split_names(slots) or None,
        "slots_used": scan.used_slots, "classes": scan.class_names,
        "n_examples": scan.n_examples,
        "prompts": [e.prompt_hash for e in evals], "shape": shape.to_dict(),
        "multiclass": multiclass, "combine_order": combine_order,
        "balance_seed": balance_seed, "exactness": exactness,
    }
    if multiclass == "subtasks":
        meta["subtasks"] = scan.subtask_meta
    return meta


def predictivity(store: Store | str | Path, eval: str | Sequence[str] | RankRequest | None = None,
                 train: str | Sequence[str] | None = None, /, **kw) -> pd.DataFrame:
    """Rank neurons by skill-neuron predictivity; writes ``results/rankings/<name>.parquet``.

    ``eval``/``train``: run or split names (comma-separated or a list); several evaluation runs
    are several prompts (or seeds), paired with the training runs in order, or all with one
    training run. ``train_store``: where the training runs are (default: ``store``), so one
    dataset's baselines can score another's runs. ``slots``: glob patterns of slots to use
    (default all captured). ``multiclass``: ``one-vs-rest`` (default) or ``subtasks``
    (Skill-Neuron's two balanced binary subtasks, ``balance_seed`` as in
    :func:`balance_examples`); ``combine_order``: ``classes-first`` (default) or
    ``slots-first`` (see the module docstring). ``check_exactness``: count, for 16-bit stores,
    the values within one storage step of the baseline and warn (:class:`ExactnessWarning`).
    ``allow_foreign``: accept training runs (baselines) from a store of another model (the
    manifests' fingerprints differ); refused by default. Keyword arguments are the
    predictivity fields of :class:`~neurondb.query.requests.RankRequest` (or pass one request).
    Returns the ranking: ``method, stack, layer, neuron, score, rank, scope, slot, accuracy,
    excitatory, class, per_prompt, per_prompt_slot, near_base`` (``class``: for a binary split
    the class on which the neuron is above its baseline; one-vs-rest: the task's class, with
    ``excitatory`` saying whether it is above or below on it) (and ``score_pn, score_neu``
    for subtasks).
    """
    return run_predictivity(store, as_request(RankRequest, kw, {"method": "predictivity"},
                                              eval=eval, train=train))


def run_predictivity(store: Store | str | Path, r: RankRequest) -> pd.DataFrame:
    """Carry out a predictivity :class:`~neurondb.query.requests.RankRequest`."""
    store = as_store(store)
    tstore = store if r.train_store is None else as_store(r.train_store)
    scope = r.ranking_scope
    evals, trains = _pair_runs(store, tstore, r.eval, r.train, r.allow_foreign)
    name = r.name or default_name("predictivity", [e.run for e in evals])
    if r.write:
        check_absent(store, "rankings", name, r.overwrite)
    opts = _ScanOptions(slots=r.slots, stacks=r.stacks, over_classes=r.over_classes,
                        multiclass=r.multiclass, combine_order=r.combine_order,
                        balance_seed=r.balance_seed, check_exactness=r.check_exactness,
                        threads=r.threads or default_threads())
    scan = _scan_prompts(store, tstore, evals, trains, opts)
    parts = {v: _aggregate_variant(scan.per, v, r.over_prompts, scan.class_names)
             for v in scan.variants}
    cols = parts[None] if scan.variants == [None] else _best_of_variants(parts, scan.variants)
    for key in cols.extra:
        cols.extra[key]["near_base"] = np.asarray(cols.near[key], np.int64)
    exactness, n_neurons = _exactness_summary(evals, cols.near, cols.move, r.check_exactness)
    if exactness["n_neurons_near_base"]:
        _warn_inexact(exactness, n_neurons)
    shape = run_shape(store, evals[0].run)
    df = ranking_frame("predictivity", cols.scores, scope, cols.extra,
                       stack_order=list(shape.stacks))
    df.attrs["exactness"] = exactness
    if r.write:
        meta = _ranking_meta(tstore, evals, trains, scan, shape, exactness,
                             over_prompts=r.over_prompts, over_classes=r.over_classes,
                             scope=scope, slots=r.slots, multiclass=r.multiclass,
                             combine_order=r.combine_order, balance_seed=r.balance_seed)
        save_ranking(store, name, df, meta, r.overwrite)
    df.attrs["name"] = name
    return df


# ``neurondb.query.predictivity(...)`` calls the function even once this module is loaded under
# that name (the package imports its names on first use)
make_callable(__name__, "neurondb.query.predictivity:predictivity")
