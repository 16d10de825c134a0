"""Activated-neuron overlap "ON" (SPEC §3) against the naive cosine of binary vectors."""

from __future__ import annotations

import numpy as np
import pytest

from neurondb.query import QueryError, activated_overlap, read_result
from neurondb.store import open_store
from neurondb.testing_stores import make_store, write_periodic_run

from . import naive

WIDTHS = {"encoder": (9, 9, 9, 9, 9, 70)}
SLOTS = ["prompt:0", "prompt:1", "mask"]


@pytest.fixture
def on_store(tmp_path):
    root = make_store(tmp_path / "s", WIDTHS)
    rng = np.random.default_rng(2)
    data = {}
    for run, n, off, shift in (("p1", 12, 1000, 0.0), ("p2", 12, 1000, 0.3), ("p3", 8, 1004, -0.2),
                               ("other", 10, 5000, 0.1)):
        acts = {("encoder", layer): rng.standard_normal((n, 3, d)) + shift
                for layer, d in enumerate(WIDTHS["encoder"])}
        write_periodic_run(root, run, f"split_{run}", rng.integers(0, 2, n), SLOTS, acts,
                           dtype="float16", id_offset=off)
        data[run] = (off + np.arange(n), {k: naive.stored(v, "float16") for k, v in acts.items()})
    st = open_store(root)
    st.data = data
    return st


def expected(st, a, b, layers, mode, t=2):
    ids_a, acts_a = st.data[a]
    ids_b, acts_b = st.data[b]
    if mode == "mean":
        xa = [acts_a[("encoder", la)][:, t].mean(0) for la in layers]
        xb = [acts_b[("encoder", la)][:, t].mean(0) for la in layers]
    else:
        common = np.intersect1d(ids_a, ids_b)
        ia, ib = np.searchsorted(ids_a, common), np.searchsorted(ids_b, common)
        xa = [acts_a[("encoder", la)][ia, t] for la in layers]
        xb = [acts_b[("encoder", la)][ib, t] for la in layers]
    return naive.on_overlap(np.concatenate([x.ravel() for x in xa]),
                            np.concatenate([x.ravel() for x in xb]))


@pytest.mark.parametrize("mode", ["examples", "mean"])
def test_matches_naive_all_layers_and_groups(on_store, mode, tmp_path):
    runs = ["p1", "p2", "p3"]
    res = activated_overlap(on_store, runs, mode=mode, name=f"on_{mode}")
    m = res.matrices["encoder:0-5"]
    for a in runs:
        for b in runs:
            want = 1.0 if a == b else expected(on_store, a, b, range(6), mode)
            assert m.loc[a, b] == pytest.approx(want, abs=1e-12)
    g = activated_overlap(on_store, runs, mode=mode, groups=3, write=False, png=tmp_path / "on.png")
    assert list(g.matrices) == ["encoder:0-2", "encoder:3-5"]
    assert g.matrices["encoder:3-5"].loc["p1", "p3"] == pytest.approx(
        expected(on_store, "p1", "p3", range(3, 6), mode), abs=1e-12)
    assert (tmp_path / "on.png").read_bytes()[:4] == b"\x89PNG"
    table, meta = read_result(on_store, "overlaps", f"on_{mode}")
    row = table[(table["a"] == "p1") & (table["b"] == "p3")].iloc[0]
    assert row["slot"] == "mask" and row["mode"] == mode
    assert row["n_examples"] == (8 if mode == "examples" else 1)
    assert row["overlap"] == pytest.approx(row["n_both"] / np.sqrt(row["n_a"] * row["n_b"]))


def test_other_slot_and_errors(on_store):
    res = activated_overlap(on_store, "p1,p2", slot="prompt:0", write=False)
    assert res.matrices["encoder:0-5"].loc["p1", "p2"] == pytest.approx(
        expected(on_store, "p1", "p2", range(6), "examples", t=0))
    with pytest.raises(QueryError) as e:
        activated_overlap(on_store, "p1,other", write=False)
    assert "share no example" in str(e.value) and "mode='mean'" in str(e.value)
    assert activated_overlap(on_store, "p1,other", mode="mean", write=False).matrices
    with pytest.raises(QueryError, match="no slot 'last'"):
        activated_overlap(on_store, "p1,p2", slot="last", write=False)
    with pytest.raises(QueryError, match="at least two"):
        activated_overlap(on_store, "p1", write=False)
