"""Skill-neuron predictivity (SPEC §2), computed from a store.

For one prompt ``k`` (an evaluation run, with the baseline of its training run):

1. ``base[l,t,i]`` = mean activation over the training run, per slot ``t``;
2. ``acc[l,t,i]`` = fraction of evaluation examples with ``(h > base) == (y == positive)``;
3. ``pred[l,t,i] = max(acc, 1 - acc)``; 4. ``pred_k[l,i] = max_t pred[l,t,i]``;
5. over prompts, ``mean_k`` (default) or ``min_k``; 6. rank per layer (default) or globally.

Multi-class (C > 2 classes present): one-vs-rest per class ``c`` (``acc_c`` with ``y == c``),
``pred = mean_c pred_c`` (default) or ``max_c``, taken per slot before step 4.
Binary tasks use the higher class index as positive (``y == 1`` for labels 0/1).

Everything comes from counts ``G[c,t,i]`` = rows of class ``c`` at slot ``t`` with
``h > base`` (:func:`neurondb.query.counting.count_above`) and ``N[c,t]`` = rows of class ``c``
at slot ``t``: ``acc_c = (G_c + (N - N_c) - (G - G_c)) / N`` with ``G = sum_c G_c``,
``N = sum_c N_c``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.errors import UsageError
from neurondb.query.baseline import Baseline, load_baseline, run_shape
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
from neurondb.query.rankings import check_scope, ranking_frame, save_ranking
from neurondb.query.rawtensor import RawLayer
from neurondb.query.results import as_store, check_absent, default_name
from neurondb.query.thresholds import Thresholds
from neurondb.store.reader import Store

OVER_PROMPTS = ("mean", "min")
OVER_CLASSES = ("mean", "max")


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
    ``tasks``: class index of each task's positive class.
    """

    acc: np.ndarray
    pred: np.ndarray
    tasks: list[int]


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
    return SlotAccuracy(acc=acc, pred=pred, tasks=tasks)


def accuracy_from_agreement(A: np.ndarray, N: np.ndarray, positive: int) -> SlotAccuracy:
    """Binary task from agreement counts ``A`` ``[S, d]`` and labelled rows ``N`` ``[S]``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = A / N.astype(np.float64)[:, None]
    return SlotAccuracy(acc=acc[None], pred=np.maximum(acc, 1.0 - acc), tasks=[positive])


@dataclass
class PromptResult:
    """Per neuron of one ``(prompt, stack, layer)``: peak predictivity, its slot, accuracy, class."""

    pred: np.ndarray
    slot: np.ndarray
    acc: np.ndarray
    cls: np.ndarray


def peak_over_slots(sa: SlotAccuracy, slots: list[str]) -> PromptResult:
    """SPEC §2 step 4: max over slots (first slot on ties), with the accuracy at the peak.

    The accuracy reported is that of the task (class) with the highest predictivity at the peak.
    """
    d = sa.pred.shape[1]
    t = np.argmax(np.nan_to_num(sa.pred, nan=-1.0), axis=0)
    cols = np.arange(d)
    pred = sa.pred[t, cols]
    acc_t = sa.acc[:, t, cols]
    best = np.argmax(np.maximum(acc_t, 1.0 - acc_t), axis=0)
    return PromptResult(pred=pred, slot=np.asarray(slots, dtype=object)[t],
                        acc=acc_t[best, cols], cls=np.asarray(sa.tasks)[best])


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
                         "capture the same positions for both, or restrict with --slots")


def prompt_layer(ev_store: Store, base: Baseline, lay: RunLayout, want: list[str],
                 classes: np.ndarray, present: list[int], over_classes: str, layer: int,
                 threads: int) -> PromptResult:
    """Predictivity of one prompt for one ``(stack, layer)`` (SPEC §2 steps 1–4)."""
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
    N = lay.class_slot_counts()[:, sel]
    with RawLayer(ev_store, lay.run, stack, layer) as raw:
        thr = Thresholds.from_base(thr_base, raw.storage)
        if len(present) == 2:
            A = count_above(raw, thr, lay, classes, len(lay.label_names), threads=threads,
                            positive=present[-1])
            sa = accuracy_from_agreement(A[sel], N[present].sum(0), present[-1])
        else:
            G = count_above(raw, thr, lay, classes, len(lay.label_names), threads=threads)
            sa = accuracy_from_counts(G[:, sel], N, present, over_classes)
    return peak_over_slots(sa, want)


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


def predictivity(store: Store | str | Path, eval: str | Sequence[str], train: str | Sequence[str] = "train",
                 *, train_store: Store | str | Path | None = None, over_prompts: str = "mean",
                 over_classes: str = "mean", scope: str = "layer",
                 slots: str | Sequence[str] | None = None, stacks: Sequence[str] | None = None,
                 name: str | None = None, overwrite: bool = False, write: bool = True,
                 threads: int | None = None) -> pd.DataFrame:
    """Rank neurons by skill-neuron predictivity; writes ``results/rankings/<name>.parquet``.

    ``eval``/``train``: run or split names (comma-separated or a list); several evaluation runs
    are several prompts (or seeds), paired with the training runs in order, or all with one
    training run. ``train_store``: where the training runs are (default: ``store``), so one
    dataset's baselines can score another's runs. ``slots``: glob patterns of slots to use
    (default all captured). Returns the ranking: ``method, stack, layer, neuron, score, rank,
    scope, slot, accuracy, excitatory, class, per_prompt, per_prompt_slot``.
    """
    store = as_store(store)
    tstore = store if train_store is None else as_store(train_store)
    if over_prompts not in OVER_PROMPTS:
        raise UsageError(f"over_prompts must be 'mean' or 'min', not {over_prompts!r}")
    if over_classes not in OVER_CLASSES:
        raise UsageError(f"over_classes must be 'mean' or 'max', not {over_classes!r}")
    check_scope(scope)
    evals = resolve_runs(store, eval, mode="tokens", what="evaluation run")
    trains = resolve_runs(tstore, train, what="training run")
    if len(trains) not in (1, len(evals)):
        raise QueryError(f"{len(trains)} training runs for {len(evals)} evaluation runs; give one "
                         "training run per evaluation run (same order), or a single one")
    if len(trains) == 1:
        trains = trains * len(evals)
    name = name or default_name("predictivity", [e.run for e in evals])
    if write:
        check_absent(store, "rankings", name, overwrite)
    threads = threads or default_threads()

    baselines: dict[str, Baseline] = {}
    per: dict[tuple[str, int], list[PromptResult]] = {}
    used_slots: dict[str, list[str]] = {}
    n_examples, class_names = [], None
    for ev, tr in zip(evals, trains):
        if tr.run not in baselines:
            baselines[tr.run] = load_baseline(tstore, tr, stacks)
        base = baselines[tr.run]
        ev_stacks = run_stacks(store, ev, stacks)
        for stack in ev_stacks:
            lay = load_layout(store, ev, stack)
            want = select_slots(lay.slots, slots)
            if not want:
                raise QueryError(f"no captured slot of run {ev.run!r} ({', '.join(lay.slots[:5])}"
                                 f"{' ...' if len(lay.slots) > 5 else ''}) matches --slots {slots!r}")
            _check_compatible(base, store, lay, want)
            classes, present = _eval_classes(lay)
            if len(present) < 2:
                only = lay.label_names[present[0]] if present else "none"
                raise QueryError(f"evaluation run {ev.run!r} has a single class (label {only!r}) "
                                 "among its labelled examples; predictivity needs at least two "
                                 "classes, evaluate on a split with both labels")
            class_names = lay.label_names
            used_slots.setdefault(stack, want)
            layers = range(run_shape(store, ev.run).n_layers(stack))
            store.tensor(ev.run)  # open the shared readers before any thread does
            job = partial(prompt_layer, store, base, lay, want, classes, present, over_classes)
            for layer, res in zip(layers, _map_layers(job, layers, threads)):
                per.setdefault((stack, layer), []).append(res)
        n_examples.append(int(np.unique(lay.ex_idx).size))
    n_prompts = len(evals)
    for key, res in per.items():
        if len(res) != n_prompts:
            raise QueryError(f"{key[0]} layer {key[1]} was captured by {len(res)} of the "
                             f"{n_prompts} evaluation runs; use runs of the same capture")

    scores, extra = {}, {}
    for key, res in per.items():
        P = np.stack([r.pred for r in res])
        score = P.mean(0) if over_prompts == "mean" else P.min(0)
        kb = np.argmax(np.nan_to_num(P, nan=-1.0), axis=0)
        cols = np.arange(P.shape[1])
        slot_k = np.stack([r.slot for r in res])
        acc_k = np.stack([r.acc for r in res])
        cls_k = np.stack([r.cls for r in res])
        acc = acc_k[kb, cols]
        scores[key] = score
        extra[key] = {
            "slot": slot_k[kb, cols].astype(str),
            "accuracy": acc,
            "excitatory": acc > 0.5,
            "class": np.asarray(class_names, dtype=object)[cls_k[kb, cols]].astype(str),
            "per_prompt": list(P.T),
            "per_prompt_slot": [list(map(str, s)) for s in slot_k.T],
        }
    shape = run_shape(store, evals[0].run)
    df = ranking_frame("predictivity", scores, scope, extra, stack_order=list(shape.stacks))
    if write:
        meta = {
            "method": "predictivity", "eval": [e.run for e in evals], "train": [t.run for t in trains],
            "train_store": str(tstore.path), "eval_splits": [e.split for e in evals],
            "datasets": sorted({e.dataset for e in evals}), "over_prompts": over_prompts,
            "over_classes": over_classes, "scope": scope, "slots": split_names(slots) or None,
            "slots_used": used_slots, "classes": class_names, "n_examples": n_examples,
            "prompts": [e.prompt_hash for e in evals], "shape": shape.to_dict(),
        }
        save_ranking(store, name, df, meta, overwrite)
    df.attrs["name"] = name
    return df
