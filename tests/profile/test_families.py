"""Profiles of other families (GPT-2; T5 with its decoder stack; a soft prompt) against a
per-token capture, a damaged profile file failing only the profile views, and a profile of a
run that is not one."""

from __future__ import annotations

import numpy as np
import pytest

import neurondb
from neurondb.errors import NeurondbError, QueryError
from tests.profile.brute import brute_top

K = 4


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_profile_equals_a_per_token_capture(tmp_path, tiny_path, sentiment_dir, family):
    model = str(tiny_path(family))
    kw = dict(readout="none", batch_size=4, progress=False, template="{text}")
    ref = neurondb.extract(model, str(sentiment_dir), tmp_path / "t", positions="all",
                           dtype="float32", run="t", **kw)
    st = neurondb.extract(model, str(sentiment_dir), tmp_path / "p", profile=True, top_k=K,
                          run="p", **kw)
    prof, top = st.profile(run="p"), st.profile_top(run="p")
    assert sorted(set(prof["stack"])) == sorted(ref.shape.stacks)
    for stack in ref.shape.stacks:
        rows = ref.rows(run="t", stack=stack).to_pandas()
        for layer in range(2):
            x = ref.activations(layer, run="t", stack=stack)
            p = prof[(prof["stack"] == stack) & (prof.layer == layer)].sort_values("neuron")
            assert (p["count"] == x.shape[0]).all()
            np.testing.assert_array_equal(p["max"], x.max(0))
            np.testing.assert_allclose(p["mean"], x.astype(np.float64).mean(0), rtol=1e-9,
                                       atol=1e-12)
            t = top[(top["stack"] == stack) & (top.layer == layer) & (top.kind == "bottom")]
            want = brute_top(x, rows.example_id.to_numpy(), rows.position.to_numpy(), K,
                             "bottom")
            for j in (0, 11, 47):
                g = t[t.neuron == j].sort_values("rank")
                assert list(zip(g.value, g.example_id, g.position)) == want[j]
    ref.close()
    st.close()


def test_damaged_profile_is_refused_on_open_or_fails_only_its_views(tmp_path, tiny_path,
                                                                   sentiment_dir, monkeypatch):
    from neurondb.store import verify

    st = neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), tmp_path / "s",
                          readout="none", profile=True, top_k=3, progress=False, run="p",
                          template="{text}")
    with pytest.raises(NeurondbError, match="it is a profile run"):
        st.activations(0, run="p")  # no per-token tensors in a profile run
    st.close()
    f = tmp_path / "s" / "runs" / "p" / "profile.npz"  # the run's merged profile
    data = bytearray(f.read_bytes())
    data[200] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(NeurondbError, match="profile.npz does not match its checksum"):
        neurondb.open(tmp_path / "s")  # a small file: hashed on open
    monkeypatch.setattr(verify, "SMALL_FILE", 0)  # as for a large profile: sizes only
    st = neurondb.open(tmp_path / "s")
    assert st.sql("SELECT count(*) FROM examples").fetchall() == [(12,)]
    for view in ("neuron_profile", "neuron_top"):
        with pytest.raises(NeurondbError, match="profile.npz cannot be read as a profile") as e:
            st.connection.arrow(f"SELECT * FROM {view}")
        assert "\n" not in str(e.value)
    st.close()
    assert not verify.verify_store(tmp_path / "s").ok


def test_profile_of_a_tokens_run_is_refused(tmp_path, tiny_path, sentiment_dir):
    st = neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), tmp_path / "s",
                          readout="none", positions="first", progress=False, run="t",
                          template="{text}")
    with pytest.raises(QueryError, match="run 't' is a tokens run, not a profile"):
        st.profile(run="t")
    assert st.profile().empty
    st.close()
