"""Synthetic stores with planted neurons, built without a model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import neurondb.store.tensors as tensors
from neurondb.store import open_store
from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run

WIDTHS = {"encoder": (16, 16)}


def prop_settings(examples: int):
    """Hypothesis settings for these tests: no example database in the repository, no deadline;
    ``NEURONDB_HYPOTHESIS_EXAMPLES`` raises the example count for a thorough local run."""
    n = int(os.environ.get("NEURONDB_HYPOTHESIS_EXAMPLES", examples))
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Planted:
    """Labels and activations ``{(stack, layer): [n, S, d]}`` with planted neurons."""

    labels: np.ndarray
    acts: dict
    slots: list[str]
    plants: list = field(default_factory=list)


def planted(n: int, slots: list[str], seed: int, widths=WIDTHS, plants=(), n_classes: int = 2,
            noise: float = 1.0) -> Planted:
    """Gaussian noise plus, for each plant ``(stack, layer, slot_i, neuron, shift, cls)``,
    ``shift`` added where the label is ``cls``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    y[:n_classes] = np.arange(n_classes)  # every class present
    acts = {(s, layer): noise * rng.standard_normal((n, len(slots), d))
            for s, ws in widths.items() for layer, d in enumerate(ws)}
    for stack, layer, t, i, shift, cls in plants:
        acts[(stack, layer)][:, t, i] += shift * (y == cls)
    return Planted(y, acts, list(slots), list(plants))


@pytest.fixture
def small_chunks(monkeypatch):
    """Make the store write 16-row HDF5 chunks, so small runs span many chunk rows."""
    monkeypatch.setattr(tensors, "CHUNK_BYTES", 1)


@pytest.fixture
def store_factory(tmp_path):
    """``store_factory(widths=...)`` -> an empty synthetic store directory (a new one per call)."""
    count = [0]

    def make(widths=WIDTHS):
        count[0] += 1
        return make_store(tmp_path / f"store{count[0]}", widths)

    return make


PLANTS = [("encoder", 1, 1, 5, 4.0, 1),    # excitatory: up for label 1, slot prompt:1
          ("encoder", 0, 2, 7, -4.0, 1)]   # inhibitory: down for label 1, slot prompt:2
SLOTS = ["prompt:0", "prompt:1", "prompt:2"]


@pytest.fixture
def skill_store(store_factory):
    """A store with a stats training run ``tr`` and tokens runs ``ev`` (float16) of the same
    planted task, plus the data used (``.train``, ``.eval``)."""
    root = store_factory()
    train = planted(300, SLOTS, seed=1, plants=PLANTS)
    ev = planted(200, SLOTS, seed=2, plants=PLANTS)
    write_stats_run(root, "tr", "train", train.labels, SLOTS, train.acts)
    write_periodic_run(root, "ev", "validation", ev.labels, SLOTS, ev.acts, dtype="float16")
    st = open_store(root)
    st.train, st.eval = train, ev
    return st
