"""Masks: the top fraction of a ranking, per layer (default) or globally, as a table in the
store (``results/masks/<name>.parquet``) and as a portable mask file
(:mod:`neurondb.store.maskfile`) that suppression and pruning read. The mask records the
ranking, store, method, fraction, scope, count rule and model shape that made it.

Counts come from :func:`neurondb.query.rankings.fraction_count`: ``int(fraction * d_ff)`` by
default (both reference implementations), nearest with ``count_rule="round"``. A ranking made
with ``multiclass="subtasks"`` (Skill-Neuron's two binary subtasks) is selected as the
reference does: the top ``count(fraction / 2)`` of the first subtask, then the second
subtask's best neurons not yet chosen until ``count(fraction)`` neurons are selected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.query.compare import top_k_indices
from neurondb.query.rankings import (
    DEFAULT_COUNT_RULE,
    fraction_count,
    load_ranking,
    ranking_vectors,
)
from neurondb.query.requests import MaskRequest, as_request
from neurondb.query.results import as_store, check_absent, write_result
from neurondb.store.maskfile import write_mask
from neurondb.store.reader import Store


def union_top(primary: np.ndarray, secondary: np.ndarray, k_primary: int, k_total: int) -> np.ndarray:
    """Skill-Neuron's union selection (``skillneuron.py``, multi-class): the ``k_primary`` best
    of ``primary``, then the best of ``secondary`` not yet chosen until ``k_total`` are chosen.

    Both score vectors ``[n]`` (NaN last, ties to the lower index). Returns sorted indices.
    """
    chosen = top_k_indices(primary, k_primary)
    k_total = max(k_total, chosen.size)
    taken = np.zeros(primary.size, bool)
    taken[chosen] = True
    extra = [i for i in top_k_indices(secondary, secondary.size) if not taken[i]]
    return np.sort(np.concatenate([chosen, np.asarray(extra[:k_total - chosen.size], np.int64)]))


def _pick(v: np.ndarray, fraction: float, count_rule: str, second: np.ndarray | None) -> np.ndarray:
    if second is None:
        return np.sort(top_k_indices(v, fraction_count(fraction, v.size, count_rule)))
    return union_top(v, second, fraction_count(fraction / 2, v.size, count_rule),
                     fraction_count(fraction, v.size, count_rule))


def select_top(vecs: dict[tuple[str, int], np.ndarray], fraction: float, scope: str,
               count_rule: str = DEFAULT_COUNT_RULE,
               second: dict[tuple[str, int], np.ndarray] | None = None) -> pd.DataFrame:
    """``stack, layer, neuron, score`` of the top ``fraction`` of scores.

    Per layer: ``count(fraction, d_ff)`` neurons of each layer; global: ``count(fraction,
    total)`` neurons of the whole model, where ``count`` is
    :func:`~neurondb.query.rankings.fraction_count` with ``count_rule`` (``int``: ``int(p·d)``,
    the default; ``round``: nearest, halves up). Ties go to the lower ``(stack, layer,
    neuron)``; NaN scores are never preferred. ``second``: the second subtask's scores of a
    ``multiclass="subtasks"`` ranking; then ``vecs`` are the first subtask's and the selection
    is their union (:func:`union_top`: ``count(fraction / 2)`` of the first, filled from the
    second up to ``count(fraction)``). The arguments are those of a
    :class:`~neurondb.query.requests.MaskRequest`, validated there.
    """
    keys = list(vecs)
    if scope == "layer":
        parts = []
        for stack, layer in keys:
            v = vecs[(stack, layer)]
            idx = _pick(v, fraction, count_rule, None if second is None else second[(stack, layer)])
            parts.append(pd.DataFrame({"stack": stack, "layer": np.full(idx.size, layer, np.int32),
                                       "neuron": idx.astype(np.int32), "score": v[idx]}))
        return pd.concat(parts, ignore_index=True)
    allv = np.concatenate([vecs[k] for k in keys])
    owner = np.concatenate([np.full(vecs[k].size, i) for i, k in enumerate(keys)])
    neuron = np.concatenate([np.arange(vecs[k].size) for k in keys])
    idx = _pick(allv, fraction, count_rule,
                None if second is None else np.concatenate([second[k] for k in keys]))
    return pd.DataFrame({"stack": [keys[o][0] for o in owner[idx]],
                         "layer": np.array([keys[o][1] for o in owner[idx]], np.int32),
                         "neuron": neuron[idx].astype(np.int32), "score": allv[idx]})


def subtask_vectors(df: pd.DataFrame, meta: dict) -> tuple[dict, dict] | None:
    """``(first subtask's vectors, second's)`` of a ``multiclass="subtasks"`` ranking, else None."""
    subs = meta.get("subtasks") or []
    if meta.get("multiclass") != "subtasks" or len(subs) != 2:
        return None
    cols = [f"score_{s['name']}" for s in subs]
    if any(c not in df.columns for c in cols):
        return None
    return tuple(ranking_vectors(df.assign(score=df[c])) for c in cols)  # type: ignore[return-value]


def make_mask(store: Store | str | Path, ranking: str | MaskRequest | None = None,
              fraction: float | None = None, /, **kw) -> pd.DataFrame:
    """Select the top ``fraction`` of ranking ``ranking``; returns ``stack, layer, neuron, score``.

    ``make_mask(store, MaskRequest(...))`` or ``make_mask(store, ranking, fraction, **fields)``
    with the fields of :class:`~neurondb.query.requests.MaskRequest` (``scope``, ``name``,
    ``out``, ``overwrite``, ``write``, ``count_rule``) as keyword arguments. Writes
    ``results/masks/<name>.parquet`` (default name ``<ranking>_top<fraction>_<scope>``) and, if
    ``out`` is given, the portable mask file there. ``count_rule``: ``int``
    (``int(fraction * d_ff)``, the references' rule, default) or ``round`` (nearest).
    """
    return run_mask(store, as_request(MaskRequest, kw, ranking=ranking, fraction=fraction))


def run_mask(store: Store | str | Path, r: MaskRequest) -> pd.DataFrame:
    """Carry out one :class:`~neurondb.query.requests.MaskRequest`."""
    store = as_store(store)
    ranking, fraction, scope, count_rule = r.ranking, r.fraction, r.scope, r.count_rule
    name = r.name or f"{ranking}_top{fraction:g}_{scope}"[:128]
    if r.write:
        check_absent(store, "masks", name, r.overwrite)
    df, rmeta = load_ranking(store, ranking)
    subs = subtask_vectors(df, rmeta)
    if subs is None:
        mask = select_top(ranking_vectors(df), fraction, scope, count_rule)
    else:
        mask = select_top(subs[0], fraction, scope, count_rule, second=subs[1])
    shape = rmeta.get("shape") or store.shape.to_dict()
    meta = {"mask": name, "ranking": ranking, "store": str(store.path), "method": rmeta.get("method"),
            "fraction": fraction, "scope": scope, "count_rule": count_rule,
            "selection": "subtask-union" if subs is not None else "top",
            "n_neurons": int(len(mask)), "shape": shape,
            # the model the ranking's store was extracted from: checked wherever the mask is
            # applied, even after the file has moved away from its store
            "model": store.manifest.model.name,
            "model_fingerprint": store.manifest.model.fingerprint,
            "ranking_params": {k: v for k, v in rmeta.items() if k not in ("shape",)}}
    if r.write:
        write_result(store, "masks", name, mask.assign(ranking=ranking), meta,
                     overwrite=r.overwrite)
    if r.out is not None:
        write_mask(r.out, mask["stack"], mask["layer"], mask["neuron"], meta)
    mask.attrs["name"] = name
    return mask
