"""Which run a name means, and how a run's captured rows map to examples, labels and slots.

A tokens run stores, per stack, rows ``[n_rows, d_ff]`` whose metadata is ``rows.parquet``
(``row, example_id, position, slot``). :class:`RunLayout` turns that table into integer arrays
the kernels index with, and detects the common *periodic* layout (every example captures the
same slots in the same order, e.g. ``prompt:0 .. prompt:99``), which the kernels exploit.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from neurondb.query.errors import QueryError
from neurondb.query.requests import split_names  # its home: the requests module
from neurondb.store.errors import StoreError
from neurondb.store.reader import Store
from neurondb.store.run import RunInfo

_KIND_ORDER = {"prompt": 0, "mask": 1, "first": 2, "last": 3, "pos": 4, "dec": 5}


def slot_key(slot: str) -> tuple:
    """Natural order of slot names: ``prompt:2`` before ``prompt:10``, prompts before ``mask``."""
    kind, _, rest = slot.partition(":")
    num = int(rest) if re.fullmatch(r"-?\d+", rest) else -1
    return (_KIND_ORDER.get(kind, 9), kind, num, rest)


def resolve_run(store: Store, name: str, mode: str | None = None) -> RunInfo:
    """A run by name, else the only run of the split ``name`` (of ``mode`` if given)."""
    runs = {i.run: i for i in store.runs()}
    if name in runs:
        info = runs[name]
        if mode is not None and info.mode != mode:
            have = {"stats": "running statistics only"}.get(info.mode, f"mode {info.mode!r} data")
            want = {"tokens": "per-token tensors"}.get(mode, f"mode {mode!r} data")
            raise QueryError(f"run {name!r} holds {have}, not {want}; name a run extracted "
                             f"in mode {mode!r}")
        return info
    splits = sorted({i.split for i in runs.values()})
    if name not in splits:
        raise StoreError(f"no run or split named {name!r} in the store (runs: "
                         f"{', '.join(runs) or 'none'}; splits: {', '.join(splits) or 'none'}); "
                         "see `neurondb info STORE`")
    cands = [i for i in runs.values() if i.split == name and (mode is None or i.mode == mode)]
    if not cands:
        raise QueryError(f"split {name!r} has no run in mode {mode!r} "
                         f"(its runs: {', '.join(i.run for i in runs.values() if i.split == name)})")
    if len(cands) > 1:
        raise QueryError(f"split {name!r} has several runs ({', '.join(i.run for i in cands)}); "
                         "name the runs instead, comma-separated")
    return cands[0]


def resolve_runs(store: Store, spec: str | Sequence[str] | None, mode: str | None = None,
                 what: str = "run") -> list[RunInfo]:
    """Resolve a comma-separated list of run or split names (see :func:`resolve_run`)."""
    names = split_names(spec)
    if not names:
        raise QueryError(f"no {what} given; name one or more runs or splits (comma-separated)")
    return [resolve_run(store, n, mode) for n in names]


def select_slots(slots: Sequence[str], patterns: Sequence[str] | str | None) -> list[str]:
    """The slots matching any glob pattern (``prompt:*``, ``mask``); all if ``patterns`` is None."""
    if patterns is None:
        return list(slots)
    pats = split_names(patterns)
    return [s for s in slots if any(fnmatch.fnmatchcase(s, p) for p in pats)]


@dataclass
class RunLayout:
    """Integer view of one run's captured rows for one stack.

    ``slot_idx[r]`` indexes ``slots`` and ``ex_idx[r]`` indexes ``example_ids``/``labels`` for
    row ``r`` (rows align with the HDF5 tensors). ``labels`` are class indices, -1 if unknown.
    ``period`` is ``S`` when rows are ``n_examples`` blocks of ``S`` rows that each hold one
    example's slots in the order ``block_slots`` (then ``ex_idx[r] == block_ex[r // S]``).
    """

    run: str
    stack: str
    n_rows: int
    slots: list[str]
    slot_idx: np.ndarray
    ex_idx: np.ndarray
    positions: np.ndarray
    example_ids: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    period: int | None
    block_slots: np.ndarray | None
    block_ex: np.ndarray | None

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def slot_counts(self) -> np.ndarray:
        """``[n_slots]`` rows per slot."""
        return np.bincount(self.slot_idx, minlength=len(self.slots))

    def class_slot_counts(self) -> np.ndarray:
        """``[n_classes, n_slots]`` labelled rows per class and slot."""
        y = self.labels[self.ex_idx]
        ok = y >= 0
        flat = y[ok] * len(self.slots) + self.slot_idx[ok]
        return np.bincount(flat, minlength=self.n_classes * len(self.slots)).reshape(
            self.n_classes, len(self.slots))


def label_names(info: RunInfo, labels: np.ndarray) -> list[str]:
    """The run's label names, or ``"0".."C-1"`` when it recorded none."""
    n = max(len(info.labels), int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0)
    return [info.labels[i] if i < len(info.labels) else str(i) for i in range(n)]


def run_examples(store: Store, info: RunInfo) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(example_ids sorted [n_ex] int64, labels [n_ex] int64 (-1 unknown), label names)``."""
    ex = store.examples(run=info.run)
    ids = ex.column("example_id").to_numpy(zero_copy_only=False).astype(np.int64)
    lab = ex.column("label").to_pandas().fillna(-1).to_numpy().astype(np.int64)
    order = np.argsort(ids, kind="stable")
    ids, lab = ids[order], lab[order]
    if ids.size and (ids[1:] == ids[:-1]).any():
        raise StoreError(f"run {info.run!r} lists an example_id twice in examples.parquet; "
                         "the run is damaged, re-extract it")
    return ids, lab, label_names(info, lab)


def load_layout(store: Store, info: RunInfo, stack: str) -> RunLayout:
    """Build the :class:`RunLayout` of a tokens run for ``stack`` (one Parquet read)."""
    if info.mode != "tokens":
        raise QueryError(f"run {info.run!r} holds running statistics, not per-token rows; "
                         "name a run extracted per token")
    t = store.rows(run=info.run, stack=stack)
    n = t.num_rows
    row = t.column("row").to_numpy()
    if n and not np.array_equal(row, np.arange(n)):
        raise StoreError(f"run {info.run!r}: rows.parquet of stack {stack!r} is not numbered "
                         "0..n-1; the run is damaged, re-extract it")
    ids, labels, names = run_examples(store, info)
    rid = t.column("example_id").to_numpy().astype(np.int64)
    ex_idx = np.searchsorted(ids, rid)
    if n and (ex_idx.max() >= ids.size or not np.array_equal(ids[np.minimum(ex_idx, ids.size - 1)], rid)):
        raise StoreError(f"run {info.run!r}: rows.parquet names examples that examples.parquet "
                         "lacks; the run is damaged, re-extract it")
    enc = pc.dictionary_encode(t.column("slot")).combine_chunks()
    uniq = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    inv = enc.indices.to_numpy(zero_copy_only=False)
    order = sorted(range(len(uniq)), key=lambda i: slot_key(str(uniq[i])))
    rank = np.empty(len(uniq), np.int64)
    rank[order] = np.arange(len(uniq))
    slots = [str(uniq[i]) for i in order]
    slot_idx = rank[inv].astype(np.int64)
    S = len(slots)
    period = block_slots = block_ex = None
    if n and S and n % S == 0:
        bs = slot_idx.reshape(-1, S)
        be = ex_idx.reshape(-1, S)
        if (bs == bs[0]).all() and (be == be[:, :1]).all():
            period, block_slots, block_ex = S, bs[0].copy(), be[:, 0].copy()
    # one row per (example, slot): blocks of distinct examples, or distinct pairs
    dup = (np.unique(block_ex).size != block_ex.size if period is not None
           else np.unique(ex_idx * max(S, 1) + slot_idx).size != n)
    if dup:
        raise StoreError(f"run {info.run!r}: an example has two rows of the same slot in stack "
                         f"{stack!r}; the run is damaged, re-extract it")
    return RunLayout(run=info.run, stack=stack, n_rows=n, slots=slots, slot_idx=slot_idx,
                     ex_idx=ex_idx, positions=t.column("position").to_numpy().astype(np.int64),
                     example_ids=ids, labels=labels, label_names=names, period=period,
                     block_slots=block_slots, block_ex=block_ex)


def run_stacks(store: Store, info: RunInfo, stacks: Sequence[str] | None = None) -> list[str]:
    """The stacks of the model that ``info`` captured rows (or statistics) for."""
    shape = store.shape
    if stacks:
        for s in stacks:
            store.default_stack(s)
        return list(stacks)
    if info.n_rows:
        have = [s for s in shape.stacks if info.n_rows.get(s, 0) > 0]
        if have:
            return have
    return list(shape.stacks)
