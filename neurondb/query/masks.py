"""Masks: the top fraction of a ranking, per layer (default) or globally, as a table in the
store (``results/masks/<name>.parquet``) and as a portable mask file
(:mod:`neurondb.store.maskfile`) that suppression and pruning read. The mask records the
ranking, store, method, fraction, scope and model shape that made it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.errors import UsageError
from neurondb.query.compare import round_half_up, top_k_indices
from neurondb.query.rankings import check_scope, load_ranking, ranking_vectors
from neurondb.query.results import as_store, check_absent, write_result
from neurondb.store.maskfile import write_mask
from neurondb.store.reader import Store


def select_top(vecs: dict[tuple[str, int], np.ndarray], fraction: float, scope: str) -> pd.DataFrame:
    """``stack, layer, neuron, score`` of the top ``fraction`` of scores.

    Per layer: ``round(fraction * d_ff)`` neurons of each layer (half up). Global:
    ``round(fraction * total)`` neurons of the whole model. Ties go to the lower
    ``(stack, layer, neuron)``; NaN scores are never preferred.
    """
    if not 0 < fraction <= 1:
        raise UsageError(f"--fraction must be in (0, 1], not {fraction}")
    check_scope(scope)
    keys = list(vecs)
    if scope == "layer":
        parts = []
        for stack, layer in keys:
            v = vecs[(stack, layer)]
            idx = np.sort(top_k_indices(v, round_half_up(fraction * v.size)))
            parts.append(pd.DataFrame({"stack": stack, "layer": np.full(idx.size, layer, np.int32),
                                       "neuron": idx.astype(np.int32), "score": v[idx]}))
        return pd.concat(parts, ignore_index=True)
    allv = np.concatenate([vecs[k] for k in keys])
    owner = np.concatenate([np.full(vecs[k].size, i) for i, k in enumerate(keys)])
    neuron = np.concatenate([np.arange(vecs[k].size) for k in keys])
    idx = np.sort(top_k_indices(allv, round_half_up(fraction * allv.size)))
    return pd.DataFrame({"stack": [keys[o][0] for o in owner[idx]],
                         "layer": np.array([keys[o][1] for o in owner[idx]], np.int32),
                         "neuron": neuron[idx].astype(np.int32), "score": allv[idx]})


def make_mask(store: Store | str | Path, ranking: str, fraction: float = 0.05, *,
              scope: str = "layer", name: str | None = None, out: str | Path | None = None,
              overwrite: bool = False, write: bool = True) -> pd.DataFrame:
    """Select the top ``fraction`` of ranking ``ranking``; returns ``stack, layer, neuron, score``.

    Writes ``results/masks/<name>.parquet`` (default name ``<ranking>_top<fraction>_<scope>``)
    and, if ``out`` is given, the portable mask file there.
    """
    store = as_store(store)
    name = name or f"{ranking}_top{fraction:g}_{scope}"[:128]
    if write:
        check_absent(store, "masks", name, overwrite)
    df, rmeta = load_ranking(store, ranking)
    mask = select_top(ranking_vectors(df), fraction, scope)
    shape = rmeta.get("shape") or store.shape.to_dict()
    meta = {"mask": name, "ranking": ranking, "store": str(store.path), "method": rmeta.get("method"),
            "fraction": fraction, "scope": scope, "n_neurons": int(len(mask)), "shape": shape,
            "ranking_params": {k: v for k, v in rmeta.items() if k not in ("shape",)}}
    if write:
        write_result(store, "masks", name, mask.assign(ranking=ranking), meta, overwrite=overwrite)
    if out is not None:
        write_mask(out, mask["stack"], mask["layer"], mask["neuron"], meta)
    mask.attrs["name"] = name
    return mask
