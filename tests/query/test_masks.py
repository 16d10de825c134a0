"""Masks from rankings: per layer / global top fraction, the table and the portable file."""

from __future__ import annotations

import numpy as np
import pytest

from neurondb.query import QueryError, make_mask, read_result
from neurondb.query.rankings import ranking_frame, save_ranking
from neurondb.store import open_store
from neurondb.store.maskfile import read_mask
from neurondb.testing_stores import make_store

WIDTHS = {"encoder": (20, 40), "decoder": (30,)}


@pytest.fixture
def mstore(tmp_path):
    st = open_store(make_store(tmp_path / "s", WIDTHS))
    rng = np.random.default_rng(1)
    scores = {(s, la): rng.random(d) for s, ws in WIDTHS.items() for la, d in enumerate(ws)}
    save_ranking(st, "r", ranking_frame("predictivity", scores, "layer"),
                 {"method": "predictivity", "shape": st.shape.to_dict(), "eval": ["ev"]}, False)
    st.scores = scores
    return st


def test_per_layer_mask(mstore, tmp_path):
    out = tmp_path / "m.parquet"
    m = make_mask(mstore, "r", 0.1, out=out)
    for (s, la), v in mstore.scores.items():
        want = set(np.argsort(-v)[:round(0.1 * v.size)])
        got = set(m[(m["stack"] == s) & (m["layer"] == la)]["neuron"])
        assert got == want and len(got) == {20: 2, 40: 4, 30: 3}[v.size]
    table, meta = read_mask(out)
    assert table.num_rows == 9 and table.column_names == ["stack", "layer", "neuron"]
    assert meta["ranking"] == "r" and meta["fraction"] == 0.1 and meta["scope"] == "layer"
    assert meta["shape"]["widths"] == {k: list(v) for k, v in WIDTHS.items()}
    assert meta["method"] == "predictivity" and meta["store"] == str(mstore.path)
    assert meta["ranking_params"]["eval"] == ["ev"]
    stored, smeta = read_result(mstore, "masks", m.attrs["name"])
    assert len(stored) == 9 and set(stored["ranking"]) == {"r"} and smeta["mask"] == m.attrs["name"]


def test_global_mask(mstore):
    m = make_mask(mstore, "r", 0.05, scope="global", name="g", count_rule="round")
    allv = np.concatenate([v for v in mstore.scores.values()])
    assert len(m) == 5  # 0.05 * 90 = 4.5, rounded half up
    assert np.isclose(np.sort(m["score"])[::-1], np.sort(allv)[::-1][:len(m)]).all()


def test_bad_input(mstore):
    make_mask(mstore, "r", 0.1, name="dup")
    with pytest.raises(QueryError, match="already exists"):
        make_mask(mstore, "r", 0.1, name="dup")
    make_mask(mstore, "r", 0.2, name="dup", overwrite=True)
    with pytest.raises(ValueError, match="fraction"):
        make_mask(mstore, "r", 0.0, write=False)
    with pytest.raises(QueryError, match="no ranking named 'x'"):
        make_mask(mstore, "x", 0.1, write=False)
