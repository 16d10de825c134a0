"""Provenance checks: a ranking, mask, means or result store belongs to one model.

A store's manifest records the fingerprint of the model it was extracted from
(:func:`neurondb.store.manifest.model_fingerprint`: config plus samples of every weight), so
two models of the same shape but other weights are told apart. Rankings and means are read
from a store, and a mask file records the store it was made from (``meta['store']``) or the
fingerprint itself (``meta['model_fingerprint']``); each is compared with the model used. A
mismatch is a one-line :class:`~neurondb.errors.ProvenanceError` naming both models, unless
``allow_foreign`` (a deliberate cross-model study). Results are only ever written into a store
of the model that computed them (:func:`result_store_ok`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from neurondb.errors import ProvenanceError, StoreError, switch


def foreign_hint(what: str) -> str:
    """How to get past a provenance refusal: a ``what`` of this model, or ``allow_foreign``
    (``--allow-foreign`` on the CLI)."""
    return (f"use a {what} made from this model's store, or pass {switch('allow_foreign')} "
            "for a deliberate cross-model study")


@dataclass(frozen=True)
class ModelId:
    """A model's name (as given or recorded) and its 32-hex-digit fingerprint."""

    name: str
    fingerprint: str

    def describe(self) -> str:
        return f"{self.name} (fingerprint {self.fingerprint[:12]})"


def model_id(model: torch.nn.Module, name: str) -> ModelId:
    """The identity of a loaded model (computed once per call: cheap for any size)."""
    from neurondb.store.manifest import model_fingerprint

    return ModelId(name=str(name), fingerprint=model_fingerprint(model))


def store_model(store: str | Path) -> ModelId | None:
    """The model recorded in a store's manifest; None for a directory without a manifest
    (a bare folder of result files, as tests build: there is nothing to compare with)."""
    from neurondb.store.layout import MANIFEST
    from neurondb.store.manifest import Manifest

    if not (Path(store) / MANIFEST).exists():
        return None
    m = Manifest.read(Path(store))
    return ModelId(name=m.model.name, fingerprint=m.model.fingerprint)


def check_store(store: str | Path, used: ModelId, what: str,
                allow_foreign: bool = False) -> bool:
    """Refuse ``what`` (e.g. ``"ranking 'skill'"``) read from ``store`` when the store was
    extracted from another model than ``used`` (a folder without a manifest is not checked).
    Returns True when the store is this model's,
    False when it is foreign and ``allow_foreign``."""
    rec = store_model(store)
    if rec is None or rec.fingerprint == used.fingerprint:
        return True
    if allow_foreign:
        return False
    kind = what.split()[0]
    raise ProvenanceError(
        f"the {what} comes from store {store}, extracted from {rec.describe()}, but the model "
        f"used is {used.describe()}; " + foreign_hint(kind))


def check_mask(meta: dict, used: ModelId, source: str, allow_foreign: bool = False) -> bool:
    """Refuse a mask whose provenance names another model: ``meta['model_fingerprint']``
    when recorded, else the manifest of ``meta['store']`` when that store is present. A mask
    without either is accepted (its shape is still checked). Returns False when foreign and
    allowed, else True."""
    fp = meta.get("model_fingerprint")
    rec: ModelId | None = None
    if fp:
        rec = ModelId(name=str(meta.get("model") or "?"), fingerprint=str(fp))
    elif meta.get("store"):
        try:
            rec = store_model(meta["store"])
        except (StoreError, OSError):
            rec = None  # the store is not here: nothing to compare with
    if rec is None or rec.fingerprint == used.fingerprint:
        return True
    if allow_foreign:
        return False
    where = f" (store {meta['store']})" if meta.get("store") else ""
    raise ProvenanceError(
        f"the mask {source} was made from {rec.describe()}{where}, but the model used is "
        f"{used.describe()}; " + foreign_hint("mask"))


def result_store_ok(store: str | Path, used: ModelId) -> bool:
    """Whether results computed with ``used`` may be written into ``store`` (its model)."""
    rec = store_model(store)
    return rec is None or rec.fingerprint == used.fingerprint
