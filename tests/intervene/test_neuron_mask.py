"""NeuronMask: file round trip, shape checks (masks of another model), the random control,
and the keep-one rule."""

from __future__ import annotations

import numpy as np
import pytest

from neurondb.arch import ModelShape
from neurondb.intervene import MaskShapeError, NeuronMask
from neurondb.store.errors import NeurondbError

SHAPE = ModelShape("t5", 32, {"encoder": (48, 40), "decoder": (48, 48)})


def _mask(**meta) -> NeuronMask:
    return NeuronMask({("encoder", 0): [3, 1, 3, 7], ("encoder", 1): [39],
                       ("decoder", 1): np.arange(10)}, meta)


def test_normalises_and_round_trips_through_the_mask_file(tmp_path):
    m = _mask(ranking="skill", shape=SHAPE.to_dict())
    assert m.get("encoder", 0).tolist() == [1, 3, 7]  # sorted, unique
    assert m.get("decoder", 0).size == 0 and len(m) == 14
    path = m.to_file(tmp_path / "m.parquet")
    back = NeuronMask.from_file(path)
    assert back.counts() == m.counts() and back.sha256() == m.sha256()
    for k in m:
        assert np.array_equal(back.get(*k), m.get(*k))
    assert back.meta["ranking"] == "skill" and ModelShape.from_dict(back.meta["shape"]) == SHAPE
    back.check_shape(SHAPE)


@pytest.mark.parametrize("neurons, needle", [
    ({("encoder", 1): [40]}, "neuron 40 of encoder layer 1, which has d_ff 40"),
    ({("encoder", 0): [-1]}, "neuron -1"),
    ({("encoder", 2): [0]}, "layer 2 of stack 'encoder'"),
    ({("decoder", -1): [0]}, "layer -1"),
    ({("middle", 0): [0]}, "stack 'middle'"),
])
def test_mask_of_another_model_is_a_one_line_error(neurons, needle):
    with pytest.raises(MaskShapeError) as e:
        NeuronMask(neurons).check_shape(SHAPE)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, NeurondbError)


def test_recorded_shape_of_another_model_is_refused():
    other = ModelShape("t5", 32, {"encoder": (64, 64), "decoder": (64, 64)})
    m = NeuronMask({("encoder", 0): [1]}, {"shape": other.to_dict()})
    with pytest.raises(MaskShapeError, match="another model shape"):
        m.check_shape(SHAPE)


def test_random_like_keeps_counts_per_layer_and_is_seeded():
    m = _mask(shape=SHAPE.to_dict())
    a, b, c = m.random_like(0), m.random_like(0), m.random_like(1)
    assert a.counts() == m.counts()
    for k in m:
        assert np.array_equal(a.get(*k), b.get(*k))
        assert a.get(*k).max() < SHAPE.d_ff(*k)
    assert any(not np.array_equal(a.get(*k), c.get(*k)) for k in m)
    assert a.meta["selection"] == "random" and a.meta["seed"] == 0
    with pytest.raises(MaskShapeError, match="records no model shape"):
        _mask().random_like(0)
    assert _mask().random_like(5, SHAPE).counts() == m.counts()


def test_random_like_draws_uniformly():
    m = NeuronMask({("encoder", 0): np.arange(12)})
    hits = np.zeros(48)
    for seed in range(400):
        hits[m.random_like(seed, SHAPE).get("encoder", 0)] += 1
    expected = 400 * 12 / 48  # 100 per neuron
    assert abs(hits.mean() - expected) < 1e-9 and hits.min() > 60 and hits.max() < 140


def test_ensure_nonempty_keeps_the_highest_ranked_or_the_first():
    full = NeuronMask({("encoder", 1): np.arange(40), ("encoder", 0): [2]})
    eff, kept = full.ensure_nonempty(SHAPE)
    assert kept == [("encoder", 1, 0)] and eff.get("encoder", 1).tolist() == list(range(1, 40))
    eff, kept = full.ensure_nonempty(SHAPE, {("encoder", 1): np.array([17, 3, 0])})
    assert kept == [("encoder", 1, 17)] and 17 not in eff.get("encoder", 1)
    assert eff.get("encoder", 0).tolist() == [2]


def test_from_arrays_checks_lengths():
    m = NeuronMask.from_arrays(["encoder", "decoder", "encoder"], [0, 1, 0], [5, 6, 2])
    assert m.get("encoder", 0).tolist() == [2, 5] and m.get("decoder", 1).tolist() == [6]
    with pytest.raises(MaskShapeError, match="differ in length"):
        NeuronMask.from_arrays(["encoder"], [0, 1], [5])
