"""Store internals: storage codecs, chunked tensors across shards, running statistics, the
manifest and the mask file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurondb.store.codec import decode, encode
from neurondb.store.errors import StoreError
from neurondb.store.stats import RunningStats, segment_sum
from neurondb.store.tensors import TensorReader, TensorSet, TensorWriter


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_codec_round_trip_matches_torch(dtype):
    x = torch.randn(50, 7) * 10
    stored = encode(x, dtype)
    back = decode(stored, dtype)
    ref = x.to(getattr(torch, dtype)).float().numpy()
    np.testing.assert_array_equal(back, ref)  # exactly torch's own rounding
    assert back.dtype == np.float32


def test_tensor_set_reads_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.standard_normal((100, 70)).astype(np.float32)
    cuts = [0, 33, 34, 100]
    paths = []
    for k in range(3):
        p = tmp_path / f"s{k}.h5"
        w = TensorWriter(p, {"encoder": (70,)}, "float32", expected_rows={"encoder": 20})
        part = full[cuts[k]:cuts[k + 1]]
        for i in range(0, len(part), 7):  # uneven appends across chunk boundaries
            w.append("encoder", 0, part[i:i + 7])
        w.close()
        paths.append(p)
    ts = TensorSet(paths)
    assert ts.shape("encoder", 0) == (100, 70)
    np.testing.assert_array_equal(ts.read("encoder", 0), full)
    idx = np.array([99, 0, 33, 33, 50, 1])
    np.testing.assert_array_equal(ts.read("encoder", 0, idx, neurons=[69, 3, 3]),
                                  full[idx][:, [69, 3, 3]])
    np.testing.assert_array_equal(ts.read("encoder", 0, slice(30, 40)), full[30:40])
    got = np.concatenate([b for _, b in ts.iter_chunks("encoder", 0, chunk_rows=16)])
    np.testing.assert_array_equal(got, full)
    with TensorReader(paths[0]) as r:
        assert r.dataset("encoder", 0).chunks == (16, 64)  # rows <= expected, 64 neurons
    ts.close()


def test_running_stats_update_and_merge_are_exact():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 5))
    slots = rng.choice(["mask", "first", "prompt:0"], 200)
    labels = rng.integers(-1, 3, 200)
    whole = RunningStats({"encoder": (5,)}, 3)
    sid = whole.slot_ids("encoder", list(slots))
    whole.update_counts("encoder", sid, labels)
    whole.update("encoder", 0, sid, labels, x)
    parts = []
    for a, b in ((0, 70), (70, 71), (71, 200)):
        p = RunningStats({"encoder": (5,)}, 3)
        s = p.slot_ids("encoder", list(slots[a:b]))
        p.update_counts("encoder", s, labels[a:b])
        p.update("encoder", 0, s, labels[a:b], x[a:b])
        parts.append(p)
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    for name in ("mask", "first", "prompt:0"):
        i, j = whole.slot("encoder", name), merged.slot("encoder", name)
        sel = slots == name
        np.testing.assert_allclose(whole.mean("encoder", 0)[i], x[sel].mean(0))
        np.testing.assert_allclose(merged.mean("encoder", 0)[j], x[sel].mean(0))
        np.testing.assert_allclose(merged.var("encoder", 0)[j], x[sel].var(0), atol=1e-12)
        for c in range(3):
            m = sel & (labels == c)
            np.testing.assert_allclose(merged.label_mean("encoder", 0)[c, j], x[m].mean(0))
    u, sums = segment_sum(np.array([2, 0, 2]), np.array([[1.0], [2.0], [3.0]]))
    assert u.tolist() == [0, 2] and sums[:, 0].tolist() == [2.0, 4.0]


def test_running_stats_save_load(tmp_path):
    st = RunningStats({"encoder": (4, 4), "decoder": (2,)}, 2)
    sid = st.slot_ids("decoder", ["dec:0"] * 3)
    st.update_counts("decoder", sid, np.array([0, 1, 1]))
    st.update("decoder", 0, sid, np.array([0, 1, 1]), np.ones((3, 2)))
    st.save(tmp_path / "s.h5")
    back = RunningStats.load(tmp_path / "s.h5")
    assert back.slots == st.slots and back.widths == st.widths
    np.testing.assert_array_equal(back.label_sum[("decoder", 0)], st.label_sum[("decoder", 0)])


def test_manifest_errors(tmp_path):
    from neurondb.store.manifest import Manifest

    with pytest.raises(StoreError, match="not a neurondb store"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "neurondb-store", "schema_version": 99}')
    with pytest.raises(StoreError, match="newer than this neurondb reads"):
        Manifest.read(tmp_path)


def test_mask_file_round_trip(tmp_path):
    from neurondb.store.maskfile import read_mask, write_mask

    p = write_mask(tmp_path / "m.parquet", ["encoder", "encoder"], [0, 1], [5, 7],
                   {"ranking": "r1", "fraction": 0.05})
    t, meta = read_mask(p)
    assert t.to_pylist() == [{"stack": "encoder", "layer": 0, "neuron": 5},
                             {"stack": "encoder", "layer": 1, "neuron": 7}]
    assert meta == {"ranking": "r1", "fraction": 0.05}
    with pytest.raises(StoreError, match="does not exist"):
        read_mask(tmp_path / "nope.parquet")
