"""One-line reprs for stores and masks (issue 16, item 6)."""

from __future__ import annotations

import numpy as np

from neurondb.intervene.mask import NeuronMask
from neurondb.testing_stores import make_store, write_periodic_run


def test_store_repr_is_one_line_naming_runs_and_model(tmp_path):
    import neurondb

    root = make_store(tmp_path / "s", name="tiny-model")
    labels = np.arange(4) % 2
    acts = {("encoder", la): np.zeros((4, 1, 16), np.float32) for la in range(2)}
    write_periodic_run(root, "ev", "validation", labels, ["mask"], acts)
    text = repr(neurondb.open(root))
    assert "\n" not in text and "1 run;" in text and "tiny-model" in text and "2x16" in text



def test_mask_repr_is_one_line_with_counts():
    m = NeuronMask({("encoder", 0): np.arange(300), ("encoder", 1): np.array([3])},
                   {"ranking": "skill"})
    text = repr(m)
    assert text == "<NeuronMask 301 neurons from skill (encoder/0: 300, encoder/1: 1)>"
