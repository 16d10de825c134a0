"""Activated-neuron overlap "ON" between runs (SPEC §3; Su et al. 2022).

Binarize ``h > 0`` at one slot (default: the first position after the prompt, ``mask`` or
``first``) over a group of layers (all layers of a stack, or consecutive groups of ``g``),
flatten, and take the cosine of the two binary vectors: ``|A & B| / sqrt(|A| |B|)``.

* ``mode="examples"`` (default): the vector runs over (example, neuron) pairs of the examples
  both runs captured (matched by ``example_id``): prompts compared on the same data. The runs
  must hold the same examples: the same dataset (its recorded fingerprint, or name and config
  where a run has none) and example ids of which one run's contain the other's; otherwise the
  comparison is refused (:func:`check_same_examples`) and ``mode="mean"`` is the way.
* ``mode="mean"``: the mean activation over each run's examples, then ``> 0``: one vector per
  run, so runs of different datasets compare.

Vectors are kept bit-packed (``n_examples x n_neurons / 8`` bytes per run and layer group).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.errors import arg, given
from neurondb.query.errors import QueryError
from neurondb.query.layout import RunLayout, load_layout, resolve_runs, run_stacks, split_names
from neurondb.query.requests import OVERLAP_MODES, OverlapRequest, as_request
from neurondb.query.results import as_store, check_absent, default_name, write_result
from neurondb.store.reader import Store
from neurondb.store.run import RunInfo

MODES = OVERLAP_MODES
DEFAULT_SLOTS = ("mask", "first")
_READ_ROWS = 4096


def popcount(a: np.ndarray) -> int:
    """Number of set bits in a ``uint8`` array."""
    if hasattr(np, "bitwise_count"):
        return int(np.bitwise_count(a).sum(dtype=np.int64))
    return int(np.unpackbits(a).sum(dtype=np.int64))


def layer_groups(n_layers: int, groups: str | int) -> list[tuple[int, int]]:
    """``[(first, last), ...]`` inclusive: one group ``all`` or consecutive groups of ``g``
    (at least 1: :attr:`~neurondb.query.requests.OverlapRequest.group_size`)."""
    if groups == "all" or groups is None:
        return [(0, n_layers - 1)]
    g = int(groups)
    return [(s, min(s + g, n_layers) - 1) for s in range(0, n_layers, g)]


def default_slot(lay: RunLayout, n_prompt: int) -> str:
    """The first position after the prompt: ``mask``, ``first``, or ``pos:<n_prompt>``."""
    for s in (*DEFAULT_SLOTS, f"pos:{n_prompt}"):
        if s in lay.slots:
            return s
    raise QueryError(f"run {lay.run!r} captured no mask/first position (slots: "
                     f"{', '.join(lay.slots[:6])}{' ...' if len(lay.slots) > 6 else ''}); "
                     f"name one with {arg('slot')}")


def check_same_examples(a: RunInfo, b: RunInfo, ids_a: np.ndarray | None = None,
                        ids_b: np.ndarray | None = None) -> None:
    """Refuse (one-line :class:`QueryError`) an examples-mode comparison of runs that do not
    hold the same examples: another dataset (fingerprint, or name/config where a run records
    no fingerprint), or example ids of which neither run's contain the other's."""
    both_fp = bool(a.dataset_fingerprint) and bool(b.dataset_fingerprint)
    same = (a.dataset_fingerprint == b.dataset_fingerprint if both_fp
            else (a.dataset, a.dataset_config or "") == (b.dataset, b.dataset_config or ""))
    if not same:
        what = (f"dataset fingerprints {a.dataset_fingerprint[:12]} and {b.dataset_fingerprint[:12]}"
                if both_fp else f"datasets {a.dataset!r} and {b.dataset!r}")
        raise QueryError(f"runs {a.run!r} and {b.run!r} hold different data ({what}, splits "
                         f"{a.split!r} and {b.split!r}); {given('mode', 'examples')} compares the "
                         f"same examples row by row, use {given('mode', 'mean')} to compare "
                         "different datasets")
    if ids_a is None or ids_b is None:
        return
    common = np.intersect1d(ids_a, ids_b)
    if common.size == 0:
        raise QueryError(f"runs {a.run!r} and {b.run!r} share no example; compare different "
                         f"datasets with {given('mode', 'mean')}")
    if common.size not in (np.unique(ids_a).size, np.unique(ids_b).size):
        raise QueryError(f"runs {a.run!r} and {b.run!r} share only {common.size} of their "
                         f"{np.unique(ids_a).size} and {np.unique(ids_b).size} example ids; "
                         f"{given('mode', 'examples')} needs the same examples, use {given('mode', 'mean')}")


@dataclass
class RunBits:
    """Binary activation of one run at one slot: per layer, bool ``[n_examples, d]`` (examples
    mode, rows sorted by example id) or ``[1, d]`` (mean mode)."""

    run: str
    slot: str
    example_ids: np.ndarray
    layers: dict[int, np.ndarray]


def run_bits(store: Store, lay: RunLayout, slot: str, mode: str, n_layers: int) -> RunBits:
    """Read the rows of ``slot`` of every layer and binarize (``h > 0``, or mean then ``> 0``)."""
    if slot not in lay.slots:
        raise QueryError(f"run {lay.run!r} has no slot {slot!r} (slots: {', '.join(lay.slots[:6])}"
                         f"{' ...' if len(lay.slots) > 6 else ''}); choose another {arg('slot')}")
    rows = np.flatnonzero(lay.slot_idx == lay.slots.index(slot))
    ids = lay.example_ids[lay.ex_idx[rows]]
    order = np.argsort(ids, kind="stable")
    layers = {}
    for layer in range(n_layers):
        parts, total = [], None
        for a in range(0, rows.size, _READ_ROWS):
            x = store.activations(layer, run=lay.run, stack=lay.stack, rows=rows[a:a + _READ_ROWS])
            if mode == "mean":
                s = x.sum(0, dtype=np.float64)
                total = s if total is None else total + s
            else:
                parts.append(x > 0)
        if mode == "mean":
            layers[layer] = ((total / max(rows.size, 1)) > 0)[None]
        else:
            layers[layer] = np.concatenate(parts)[order]
    return RunBits(run=lay.run, slot=slot, example_ids=ids[order], layers=layers)


def _group_pair(a: RunBits, b: RunBits, first: int, last: int, mode: str) -> tuple[int, int, int, int]:
    """``(|A|, |B|, |A & B|, n_examples)`` over layers ``first..last``."""
    if mode == "examples":
        common, ia, ib = np.intersect1d(a.example_ids, b.example_ids, return_indices=True)
        if common.size == 0:
            raise QueryError(f"runs {a.run!r} and {b.run!r} share no example; compare different "
                             f"datasets with {given('mode', 'mean')}")
    else:
        ia = ib = np.zeros(1, np.int64)
        common = ia
    na = nb = nab = 0
    for layer in range(first, last + 1):
        pa = np.packbits(a.layers[layer][ia], axis=1)
        pb = np.packbits(b.layers[layer][ib], axis=1)
        na += popcount(pa)
        nb += popcount(pb)
        nab += popcount(pa & pb)
    return na, nb, nab, int(common.size)


@dataclass
class Overlap:
    """``table``: one row per ordered run pair and layer group; ``matrices``: per group label,
    the ``runs x runs`` overlap (diagonal 1); ``png``: the heatmap, if drawn."""

    table: pd.DataFrame
    matrices: dict[str, pd.DataFrame]
    name: str | None = None
    png: Path | None = None


def activated_overlap(store: Store | str | Path,
                      runs: str | Sequence[str] | OverlapRequest | None = None, /,
                      **kw) -> Overlap:
    """ON overlap between every pair of ``runs``: ``activated_overlap(store,
    OverlapRequest(...))`` or ``activated_overlap(store, runs, **fields)`` with the fields of
    :class:`~neurondb.query.requests.OverlapRequest` (``slot``, ``groups``, ``mode``,
    ``stacks``, ``name``, ``png``, ``overwrite``, ``write``) as keyword arguments. Writes
    ``results/overlaps/<name>.parquet`` (``a, b, stack, group, first_layer, last_layer,
    overlap, n_a, n_b, n_both, n_examples, slot, mode``) and, if ``png``, heatmaps (one panel
    per layer group)."""
    return run_overlap(store, as_request(OverlapRequest, kw, runs=runs))


def _pair_rows(names: list[str], bits: dict[str, RunBits], stack: str, first: int, last: int,
               mode: str) -> tuple[pd.DataFrame, list[dict]]:
    """The ``runs x runs`` overlap of one layer group and its table rows (both orders)."""
    label = f"{stack}:{first}-{last}"
    m = pd.DataFrame(1.0, index=names, columns=names)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            na, nb, nab, n = _group_pair(bits[a], bits[b], first, last, mode)
            ov = nab / math.sqrt(na * nb) if na and nb else float("nan")
            m.loc[a, b] = m.loc[b, a] = ov
            for x, y, nx, ny in ((a, b, na, nb), (b, a, nb, na)):
                rows.append({"a": x, "b": y, "stack": stack, "group": label,
                             "first_layer": first, "last_layer": last, "overlap": ov,
                             "n_a": nx, "n_b": ny, "n_both": nab, "n_examples": n,
                             "slot": bits[x].slot, "mode": mode})
    return m, rows


def run_overlap(store: Store | str | Path, r: OverlapRequest) -> Overlap:
    """Carry out one :class:`~neurondb.query.requests.OverlapRequest`."""
    store = as_store(store)
    mode, groups = r.mode, r.group_size
    infos = resolve_runs(store, r.runs, mode="tokens", what="run")
    names = [i.run for i in infos]
    if len(names) < 2 or len(set(names)) != len(names):
        raise QueryError("give at least two different runs to compare (comma-separated)")
    name = r.name or default_name("on", names)
    if r.write:
        check_absent(store, "overlaps", name, r.overwrite)
    if mode == "examples":
        for i, a in enumerate(infos):
            for b in infos[i + 1:]:
                check_same_examples(a, b)
    shape = store.shape
    rows = []
    matrices: dict[str, pd.DataFrame] = {}
    for stack in run_stacks(store, infos[0], r.stacks):
        bits = {}
        for info in infos:
            lay = load_layout(store, info, stack)
            s = r.slot or default_slot(lay, info.n_prompt)
            bits[info.run] = run_bits(store, lay, s, mode, shape.n_layers(stack))
        if mode == "examples":
            for i, a in enumerate(infos):
                for b in infos[i + 1:]:
                    check_same_examples(a, b, bits[a.run].example_ids, bits[b.run].example_ids)
        for first, last in layer_groups(shape.n_layers(stack), groups):
            matrices[f"{stack}:{first}-{last}"], part = _pair_rows(names, bits, stack, first,
                                                                   last, mode)
            rows += part
    table = pd.DataFrame(rows)
    out = Overlap(table=table, matrices=matrices, name=name)
    if r.png is not None:
        from neurondb.query.plots import heatmap

        out.png = heatmap(list(matrices.items()), r.png, vmin=0.0, vmax=1.0)
    if r.write:
        write_result(store, "overlaps", name, table,
                     {"runs": names, "slot": r.slot, "groups": groups, "mode": mode,
                      "stacks": split_names(r.stacks) or None}, overwrite=r.overwrite)
    return out
