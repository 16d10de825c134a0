"""The count kernel against a per-row loop: every layout, storage dtype, chunking, thread count."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import neurondb.store.tensors as tensors
from neurondb.query import rawtensor
from neurondb.query.counting import count_above
from neurondb.query.layout import load_layout
from neurondb.query.rawtensor import RawLayer, chunk_major_to_rows
from neurondb.query.thresholds import Thresholds
from neurondb.store import open_store
from neurondb.testing_stores import make_store, write_periodic_run, write_rows_run

from .conftest import prop_settings
from .naive import stored


def naive_counts(h, row_slot, row_class, base, n_classes):
    """``G[c, s, i]`` = rows of class c at slot s with h > base[s], one row at a time."""
    S, d = base.shape
    G = np.zeros((n_classes, S, d), np.int64)
    for r in range(h.shape[0]):
        c = row_class[r]
        if c < 0:
            continue
        G[c, row_slot[r]] += h[r] > base[row_slot[r]]
    return G


def naive_agreement(h, row_slot, row_class, base, positive):
    """``A[s, i]`` = labelled rows at slot s with (h > base[s]) == (y == positive)."""
    A = np.zeros(base.shape, np.int64)
    for r in range(h.shape[0]):
        if row_class[r] >= 0:
            A[row_slot[r]] += (h[r] > base[row_slot[r]]) == (row_class[r] == positive)
    return A


def run_kernel(root, run, stack, layer, base_by_slot, threads, positive=None):
    st = open_store(root)
    info = st.run(run)
    lay = load_layout(st, info, stack)
    base = np.stack([base_by_slot[s] for s in lay.slots])
    with RawLayer(st, run, stack, layer) as raw:
        thr = Thresholds.from_base(base, raw.storage)
        G = count_above(raw, thr, lay, lay.labels, len(lay.label_names), threads=threads,
                        positive=positive)
    return G, lay, base


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("threads", [1, 3])
def test_periodic_many_chunk_rows(tmp_path, monkeypatch, dtype, threads):
    monkeypatch.setattr(tensors, "CHUNK_BYTES", 1)  # 16-row chunks: phases 0..S-1 all occur
    root = make_store(tmp_path / "s", {"encoder": (70,)})
    rng = np.random.default_rng(3)
    n, slots = 61, ["prompt:0", "prompt:1", "prompt:10", "mask", "prompt:2"]
    y = rng.integers(-1, 3, n)
    acts = {("encoder", 0): rng.standard_normal((n, len(slots), 70))}
    write_periodic_run(root, "ev", "validation", y, slots, acts, dtype=dtype)
    base_by_slot = {s: rng.standard_normal(70) * 0.5 for s in slots}
    G, lay, base = run_kernel(root, "ev", "encoder", 0, base_by_slot, threads)
    assert lay.period == len(slots)
    assert lay.slots == ["prompt:0", "prompt:1", "prompt:2", "prompt:10", "mask"]
    h = stored(acts[("encoder", 0)], dtype).reshape(n * len(slots), 70)
    want = naive_counts(h, lay.slot_idx, lay.labels[lay.ex_idx], base, len(lay.label_names))
    np.testing.assert_array_equal(G, want)
    for positive in (1, 2):
        A, _, _ = run_kernel(root, "ev", "encoder", 0, base_by_slot, threads, positive=positive)
        np.testing.assert_array_equal(
            A, naive_agreement(h, lay.slot_idx, lay.labels[lay.ex_idx], base, positive))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("threads", [1, 2])
def test_general_layout(tmp_path, monkeypatch, dtype, threads):
    """Examples capture different numbers of positions (``pos:i``): not periodic."""
    monkeypatch.setattr(tensors, "CHUNK_BYTES", 1)
    root = make_store(tmp_path / "s", {"encoder": (20, 9)})
    rng = np.random.default_rng(4)
    n = 40
    y = rng.integers(-1, 2, n)
    lens = rng.integers(1, 6, n)
    row_ex = np.repeat(np.arange(n), lens)
    row_slot = [f"pos:{i}" for L in lens for i in range(L)]
    acts = {("encoder", 0): rng.standard_normal((row_ex.size, 20)),
            ("encoder", 1): rng.standard_normal((row_ex.size, 9))}
    write_rows_run(root, "ev", "validation", y, row_ex, row_slot, acts, dtype=dtype)
    for layer, d in ((0, 20), (1, 9)):
        base_by_slot = {f"pos:{i}": rng.standard_normal(d) * 0.3 for i in range(5)}
        G, lay, base = run_kernel(root, "ev", "encoder", layer, base_by_slot, threads)
        assert lay.period is None
        h = stored(acts[("encoder", layer)], dtype)
        want = naive_counts(h, lay.slot_idx, lay.labels[lay.ex_idx], base, 2)
        np.testing.assert_array_equal(G, want)
        A, _, _ = run_kernel(root, "ev", "encoder", layer, base_by_slot, threads, positive=1)
        np.testing.assert_array_equal(
            A, naive_agreement(h, lay.slot_idx, lay.labels[lay.ex_idx], base, 1))


def test_more_than_255_rows_per_group(tmp_path):
    """Byte counters must be flushed: 600 examples of one slot, one class."""
    root = make_store(tmp_path / "s", {"encoder": (8,)})
    n = 600
    y = np.r_[np.ones(n - 1, int), 0]
    acts = {("encoder", 0): np.ones((n, 1, 8))}
    write_periodic_run(root, "ev", "validation", y, ["mask"], acts, dtype="float16")
    G, lay, _ = run_kernel(root, "ev", "encoder", 0, {"mask": np.zeros(8)}, 1)
    assert G[1, 0].tolist() == [n - 1] * 8 and G[0, 0].tolist() == [1] * 8
    A, _, _ = run_kernel(root, "ev", "encoder", 0, {"mask": np.zeros(8)}, 1, positive=1)
    assert A[0].tolist() == [n - 1] * 8
    row_ex = np.r_[0, np.arange(n)]  # example 0 has two rows: not periodic
    rows = ["pos:1"] + ["pos:0"] * n
    write_rows_run(root, "gen", "validation", y, row_ex, rows,
                   {("encoder", 0): np.ones((n + 1, 8))}, dtype="float16")
    G, lay, _ = run_kernel(root, "gen", "encoder", 0, {"pos:0": np.zeros(8), "pos:1": np.zeros(8)}, 1)
    assert lay.period is None
    assert G[1, 0].tolist() == [n - 1] * 8 and G[0, 0].tolist() == [1] * 8
    assert G[0, 1].tolist() == [0] * 8 and G[1, 1].tolist() == [1] * 8


def test_h5py_fallback_equals_direct(tmp_path, monkeypatch):
    root = make_store(tmp_path / "s", {"encoder": (100,)})
    rng = np.random.default_rng(5)
    n, slots = 30, ["prompt:0", "prompt:1", "prompt:2"]
    y = rng.integers(0, 2, n)
    acts = {("encoder", 0): rng.standard_normal((n, 3, 100))}
    write_periodic_run(root, "ev", "validation", y, slots, acts, dtype="bfloat16")
    base = {s: rng.standard_normal(100) * 0.2 for s in slots}
    direct, _, _ = run_kernel(root, "ev", "encoder", 0, base, 1)
    st = open_store(root)
    with RawLayer(st, "ev", "encoder", 0) as raw:
        assert raw.direct
        blk = raw.read(raw.blocks[0], raw.new_buffer())
        np.testing.assert_array_equal(
            chunk_major_to_rows(blk, 100),
            st.tensor("ev").dataset("encoder", 0)[:blk.shape[1]])
    monkeypatch.setattr(rawtensor, "DIRECT_READS", False)
    fallback, _, _ = run_kernel(root, "ev", "encoder", 0, base, 2)
    np.testing.assert_array_equal(direct, fallback)


@prop_settings(25)
@given(n=st.integers(2, 30), S=st.integers(1, 4), d=st.integers(1, 70),
       dtype=st.sampled_from(["float32", "float16", "bfloat16"]), seed=st.integers(0, 2**16),
       small=st.booleans())
def test_property_periodic(tmp_path_factory, n, S, d, dtype, seed, small):
    old = tensors.CHUNK_BYTES
    tensors.CHUNK_BYTES = 1 if small else old
    try:
        root = make_store(tmp_path_factory.mktemp("p"), {"encoder": (d,)})
        rng = np.random.default_rng(seed)
        slots = [f"prompt:{i}" for i in range(S)]
        y = rng.integers(0, 2, n)
        # coarse values so that ties h == base occur
        acts = {("encoder", 0): np.round(rng.standard_normal((n, S, d)), 1)}
        write_periodic_run(root, "ev", "validation", y, slots, acts, dtype=dtype,
                           label_names=["neg", "pos"])
    finally:
        tensors.CHUNK_BYTES = old
    base_by_slot = {s: np.round(rng.standard_normal(d), 1) for s in slots}
    G, lay, base = run_kernel(root, "ev", "encoder", 0, base_by_slot, 2)
    h = stored(acts[("encoder", 0)], dtype).reshape(n * S, d)
    np.testing.assert_array_equal(G, naive_counts(h, lay.slot_idx, lay.labels[lay.ex_idx], base, 2))
    A, _, _ = run_kernel(root, "ev", "encoder", 0, base_by_slot, 2, positive=1)
    np.testing.assert_array_equal(A, naive_agreement(h, lay.slot_idx, lay.labels[lay.ex_idx], base, 1))
