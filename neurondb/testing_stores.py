"""Synthetic stores without a model, for tests and benchmarks of the query layer.

``make_store(root, widths)`` writes a manifest for a model of the given shape;
``write_periodic_run`` writes a run whose examples each capture the same slots (e.g.
``prompt:0..P-1``) from arrays or from a generator (so benchmarks can write GBs in blocks);
``write_rows_run`` writes any row layout; ``write_stats_run`` writes a stats-mode run (running
sums only) from the same kind of arrays. Everything goes through the store's own writers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from neurondb.arch.shape import ModelShape
from neurondb.store.manifest import Manifest, ModelIdentity
from neurondb.store.run import RunInfo, RunWriter, ShardWriter, begin_run, finalize_run, run_dir

Key = tuple[str, int]
# (stack, layer, first example, end example) -> float array [examples, S, d]
BlockFn = Callable[[str, int, int, int], np.ndarray]


def make_store(root: str | Path, widths: Mapping[str, Sequence[int]] | None = None,
               family: str = "bert", d_model: int = 8, fingerprint: str = "x",
               name: str = "synthetic") -> Path:
    """Create ``root`` with a manifest of a synthetic model of ``widths`` ``{stack: (d_ff,...)}``
    (``fingerprint``/``name``: the model's identity, for provenance checks)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    w = {s: tuple(int(x) for x in v) for s, v in (widths or {"encoder": (16, 16)}).items()}
    shape = ModelShape(family=family, d_model=d_model, widths=w)
    Manifest(model=ModelIdentity(name=name, revision=None, fingerprint=fingerprint, shape=shape),
             libraries={}).write(root)
    return root


def store_widths(root: str | Path) -> dict[str, tuple[int, ...]]:
    return dict(Manifest.read(Path(root)).model.shape.widths)


def to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """float array -> storage dtype (bfloat16 as round-to-nearest-even high 16 bits)."""
    if dtype == "bfloat16":
        bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
        rounded = bits + (((bits >> 16) & 1) + 0x7FFF)
        return (rounded >> 16).astype(np.uint16)
    return np.asarray(x, dtype=np.dtype(dtype))


def slot_position(slot: str, i: int, n_prompt: int) -> int:
    kind, _, rest = slot.partition(":")
    if kind in ("prompt", "pos", "dec") and rest.isdigit():
        return int(rest)
    return n_prompt + i


def examples_table(run: str, split: str, labels: np.ndarray, ids: np.ndarray,
                   rows_per_example: np.ndarray, first_idx: int = 0) -> pa.Table:
    n = len(labels)
    idx = first_idx + np.arange(n, dtype=np.int64)
    return pa.table({
        "run": [run] * n, "split": [split] * n, "example_id": ids.astype(np.int64),
        "idx": idx, "text": [f"synthetic example {i}" for i in idx],
        "label": np.asarray(labels, np.int64), "pred": np.asarray(labels, np.int64),
        "correct": np.ones(n, bool), "n_tokens": rows_per_example.astype(np.int32),
        "label_logits": pa.array([[] for _ in range(n)], pa.list_(pa.float32())),
    })


def _info(run, split, mode, labels, label_names, slots, dtype, grad, n_rows, n_ex, n_prompt,
          dataset, grad_target) -> RunInfo:
    names = list(label_names) if label_names is not None else [
        str(i) for i in range(int(np.max(labels)) + 1 if len(labels) else 0)]
    return RunInfo(run=run, split=split, mode=mode, dataset=dataset, labels=names,
                   positions=list(dict.fromkeys(slots)), grad=grad, grad_target=grad_target,
                   dtype=dtype, n_examples=n_ex, n_rows=n_rows, n_prompt=n_prompt,
                   prompt_hash=f"synthetic-{n_prompt}")


def _shard_writers(root: Path, info: RunInfo, widths, bounds: np.ndarray, S: int) -> list:
    """One writer per shard: a single :class:`RunWriter`, or :class:`ShardWriter` s of a run
    begun here (each sized for its own rows, so their HDF5 chunk rows differ)."""
    if len(bounds) == 2:
        return [RunWriter(root, info, widths)]
    d = run_dir(root, info.run)
    if d.exists():
        shutil.rmtree(d)
    info.n_chunks = len(bounds) - 1
    begin_run(root, info)
    return [ShardWriter(d, k, info, widths, {s: int(bounds[k + 1] - bounds[k]) * S for s in widths})
            for k in range(len(bounds) - 1)]


def write_rows_run(root: str | Path, run: str, split: str, labels: Sequence[int],
                   row_ex: np.ndarray, row_slot: Sequence[str], acts: Mapping[Key, np.ndarray],
                   grads: Mapping[Key, np.ndarray] | None = None, dtype: str = "float32",
                   label_names: Sequence[str] | None = None, id_offset: int = 1000,
                   n_prompt: int = 0, dataset: str = "synthetic",
                   grad_target: str | None = "gold") -> Path:
    """A tokens run with any layout: row ``r`` belongs to example ``row_ex[r]`` at slot
    ``row_slot[r]``; ``acts[(stack, layer)]`` are ``[n_rows, d]`` (every stack gets the same rows)."""
    root = Path(root)
    widths = store_widths(root)
    labels = np.asarray(labels, np.int64)
    row_ex = np.asarray(row_ex, np.int64)
    row_slot = [str(s) for s in row_slot]
    ids = id_offset + np.arange(len(labels), dtype=np.int64)
    n = len(row_ex)
    info = _info(run, split, "tokens", labels, label_names, row_slot, dtype, grads is not None,
                 {s: n for s in widths}, len(labels), n_prompt, dataset, grad_target)
    w = RunWriter(root, info, widths)
    try:
        w.write_examples(examples_table(run, split, labels, ids,
                                        np.bincount(row_ex, minlength=len(labels))))
        order = {s: i for i, s in enumerate(dict.fromkeys(row_slot))}
        pos = np.array([slot_position(s, order[s], n_prompt) for s in row_slot], np.int32)
        for stack in widths:
            w.write_rows(pa.table({"run": [run] * n, "stack": [stack] * n,
                                   "row": np.arange(n, dtype=np.int64), "example_id": ids[row_ex],
                                   "position": pos, "slot": row_slot}))
            for layer in range(len(widths[stack])):
                w.append("activations", stack, layer, to_storage(acts[(stack, layer)], dtype))
                if grads is not None:
                    w.append("gradients", stack, layer, to_storage(grads[(stack, layer)], dtype))
        w.commit()
    except BaseException:
        w.abort()
        raise
    return root / "runs" / run


def _block_fn(acts: Mapping[Key, np.ndarray] | BlockFn) -> BlockFn:
    if callable(acts):
        return acts
    return lambda stack, layer, e0, e1: acts[(stack, layer)][e0:e1]


def write_periodic_run(root: str | Path, run: str, split: str, labels: Sequence[int],
                       slots: Sequence[str], acts: Mapping[Key, np.ndarray] | BlockFn,
                       grads: Mapping[Key, np.ndarray] | BlockFn | None = None,
                       dtype: str = "float32", label_names: Sequence[str] | None = None,
                       id_offset: int = 1000, n_prompt: int | None = None,
                       dataset: str = "synthetic", grad_target: str | None = "gold",
                       block_examples: int = 64, shards: int = 1) -> Path:
    """A tokens run where every example captures ``slots`` in order: rows ``e*S .. e*S+S-1``.

    ``acts``: ``{(stack, layer): [n_examples, S, d]}`` or a function ``(stack, layer, e0, e1)``
    returning ``[e1 - e0, S, d]`` (called block by block, layers interleaved like a capture).
    ``shards``: cut the examples into that many shards (chunks), as a long extraction does.
    """
    root = Path(root)
    widths = store_widths(root)
    labels = np.asarray(labels, np.int64)
    slots = [str(s) for s in slots]
    S, n_ex = len(slots), len(labels)
    n_prompt = sum(s.startswith("prompt:") for s in slots) if n_prompt is None else n_prompt
    ids = id_offset + np.arange(n_ex, dtype=np.int64)
    info = _info(run, split, "tokens", labels, label_names, slots, dtype, grads is not None,
                 {s: n_ex * S for s in widths}, n_ex, n_prompt, dataset, grad_target)
    act_fn, grad_fn = _block_fn(acts), (_block_fn(grads) if grads is not None else None)
    pos = np.array([slot_position(s, i, n_prompt) for i, s in enumerate(slots)], np.int32)
    bounds = np.linspace(0, n_ex, shards + 1).round().astype(int)
    writers = _shard_writers(root, info, widths, bounds, S)
    for k, w in enumerate(writers):
        a, b = int(bounds[k]), int(bounds[k + 1])
        try:
            w.write_examples(examples_table(run, split, labels[a:b], ids[a:b], np.full(b - a, S),
                                            first_idx=a))
            for stack in widths:
                n = (b - a) * S
                w.write_rows(pa.table({
                    "run": [run] * n, "stack": [stack] * n, "row": np.arange(n, dtype=np.int64),
                    "example_id": np.repeat(ids[a:b], S), "position": np.tile(pos, b - a),
                    "slot": slots * (b - a)}))
            for e0 in range(a, b, block_examples):
                e1 = min(b, e0 + block_examples)
                for stack, ws in widths.items():
                    for layer, d in enumerate(ws):
                        x = act_fn(stack, layer, e0, e1).reshape((e1 - e0) * S, d)
                        w.append("activations", stack, layer, to_storage(x, dtype))
                        if grad_fn is not None:
                            g = grad_fn(stack, layer, e0, e1).reshape((e1 - e0) * S, d)
                            w.append("gradients", stack, layer, to_storage(g, dtype))
            w.commit()
        except BaseException:
            w.abort()
            shutil.rmtree(run_dir(root, run), ignore_errors=True)
            raise
    if shards > 1:
        finalize_run(root, info)
    return root / "runs" / run


def write_stats_run(root: str | Path, run: str, split: str, labels: Sequence[int],
                    slots: Sequence[str], acts: Mapping[Key, np.ndarray],
                    label_names: Sequence[str] | None = None, id_offset: int = 1000,
                    dataset: str = "synthetic") -> Path:
    """A stats-mode run (running sums per slot, no per-token tensors) of periodic ``acts``
    ``{(stack, layer): [n_examples, S, d]}``, as a capture with ``--stats`` would keep."""
    root = Path(root)
    widths = store_widths(root)
    labels = np.asarray(labels, np.int64)
    slots = [str(s) for s in slots]
    S, n_ex = len(slots), len(labels)
    ids = id_offset + np.arange(n_ex, dtype=np.int64)
    info = _info(run, split, "stats", labels, label_names, slots, "float32", False, {}, n_ex,
                 sum(s.startswith("prompt:") for s in slots), dataset, None)
    w = RunWriter(root, info, widths)
    try:
        w.write_examples(examples_table(run, split, labels, ids, np.full(n_ex, S)))
        row_labels = np.repeat(labels, S)
        for stack, ws in widths.items():
            sid = w.stats.slot_ids(stack, slots * n_ex)
            w.stats.update_counts(stack, sid, row_labels)
            for layer, d in enumerate(ws):
                w.stats.update(stack, layer, sid, row_labels,
                               np.asarray(acts[(stack, layer)], np.float32).reshape(n_ex * S, d))
        w.commit()
    except BaseException:
        w.abort()
        raise
    return root / "runs" / run


def write_text_run(root: str | Path, run: str, split: str, texts: Sequence[str],
                   labels: Sequence[int], label_names: Sequence[str] | None = None,
                   tokens: Sequence[Sequence[str]] | None = None,
                   plants: Sequence[tuple[str, int, int, str, float]] = (), seed: int = 0,
                   preds: Sequence[int] | None = None, id_offset: int = 1000,
                   dataset: str = "synthetic") -> Path:
    """A tokens run over real texts with every token captured (slot ``pos:<i>``), as
    ``--positions all`` keeps them: each text's ``tokens`` (default: ``text.split()``) wrapped
    in ``[CLS]``/``[SEP]``; activations ``N(0, 0.3)`` plus, for each plant ``(stack, layer,
    neuron, token, value)``, ``value`` at every occurrence of ``token`` (case-insensitive)."""
    root = Path(root)
    widths = store_widths(root)
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, np.int64)
    preds = labels if preds is None else np.asarray(preds, np.int64)
    toks = [["[CLS]", *(tokens[i] if tokens is not None else t.split()), "[SEP]"]
            for i, t in enumerate(texts)]
    ids = id_offset + np.arange(len(texts), dtype=np.int64)
    n_tok = np.array([len(t) for t in toks], np.int64)
    flat = [w for t in toks for w in t]
    pos = np.concatenate([np.arange(k) for k in n_tok]).astype(np.int32)
    row_ex = np.repeat(np.arange(len(texts)), n_tok)
    n = len(flat)
    slots = [f"pos:{p}" for p in pos]
    info = _info(run, split, "tokens", labels, label_names, slots, "float32", False,
                 {s: n for s in widths}, len(texts), 0, dataset, None)
    info.positions = ["all"]
    info.accuracy = float((preds == labels).mean()) if len(labels) else None
    w = RunWriter(root, info, widths)
    try:
        ex = examples_table(run, split, labels, ids, n_tok)
        ex = ex.set_column(ex.schema.get_field_index("text"), "text", pa.array(list(texts)))
        ex = ex.set_column(ex.schema.get_field_index("pred"), "pred", pa.array(preds))
        ex = ex.set_column(ex.schema.get_field_index("correct"), "correct",
                           pa.array(preds == labels))
        w.write_examples(ex)
        kinds = ["special" if t in ("[CLS]", "[SEP]") else "input" for t in flat]
        low = np.array([t.lower() for t in flat], dtype=object)
        for stack in widths:
            w.write_tokens(pa.table({"run": [run] * n, "example_id": ids[row_ex],
                                     "stack": [stack] * n, "position": pos,
                                     "token_id": np.arange(n, dtype=np.int32), "token": flat,
                                     "kind": kinds}))
            w.write_rows(pa.table({"run": [run] * n, "stack": [stack] * n,
                                   "row": np.arange(n, dtype=np.int64), "example_id": ids[row_ex],
                                   "position": pos, "slot": slots}))
            for layer, d in enumerate(widths[stack]):
                x = rng.normal(0.0, 0.3, (n, d)).astype(np.float32)
                for s, la, neuron, token, value in plants:
                    if (s, la) == (stack, layer):
                        x[low == token.lower(), neuron] += value
                w.append("activations", stack, layer, x)
        w.commit()
    except BaseException:
        w.abort()
        raise
    return root / "runs" / run
