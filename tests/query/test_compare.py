"""Spearman per layer, top-k overlap, correlation matrices (SPEC §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from neurondb.query import QueryError, compare_rankings, correlate, read_result
from neurondb.query.compare import compare_vectors
from neurondb.query.rankings import ranking_frame, save_ranking
from neurondb.store import open_store
from neurondb.testing_stores import make_store

from . import naive
from .conftest import prop_settings

WIDTHS = {"encoder": (10, 10, 10)}


def save(store, name, scores, scope="layer"):
    df = ranking_frame("test", scores, scope)
    save_ranking(store, name, df, {"method": "test"}, overwrite=False)
    return df


@pytest.fixture
def rstore(tmp_path):
    return open_store(make_store(tmp_path / "s", WIDTHS))


def test_known_coefficients(rstore):
    base = np.arange(10, dtype=float)
    perm = np.array([1, 0, 2, 3, 4, 5, 6, 7, 9, 8], float)  # two swaps: sum d^2 = 4
    save(rstore, "a", {("encoder", 0): base, ("encoder", 1): base, ("encoder", 2): base})
    save(rstore, "b", {("encoder", 0): base[::-1].copy(), ("encoder", 1): perm,
                       ("encoder", 2): base * 3 + 1})
    t = compare_rankings(rstore, "a", "b", count_rule="round").set_index("layer")
    assert t.loc[0, "spearman"] == pytest.approx(-1.0)
    assert t.loc[1, "spearman"] == pytest.approx(1 - 6 * 4 / (10 * 99))
    assert t.loc[2, "spearman"] == pytest.approx(1.0)
    r = t.loc[1, "spearman"]
    tt = r * math.sqrt(8 / (1 - r * r))
    assert t.loc[1, "p_value"] == pytest.approx(2 * stats.t.sf(abs(tt), 8))
    # top 5% of 10 neurons rounds to k = 1 (half up: 0.5 -> 1)
    assert (t["k"] == 1).all()
    assert t.loc[0, "topk_overlap"] == 0.0 and t.loc[2, "topk_overlap"] == 1.0
    t3 = compare_rankings(rstore, "a", "b", k=3).set_index("layer")
    assert t3.loc[1, "topk_overlap"] == 1.0    # top 3 of both: neurons {7, 8, 9}
    assert t3.loc[0, "topk_overlap"] == 0.0    # {7, 8, 9} vs {0, 1, 2}
    t5 = compare_rankings(rstore, "a", "b", k=2).set_index("layer")
    assert t5.loc[1, "topk_overlap"] == 1.0 and t5.loc[2, "topk_overlap"] == 1.0
    res = correlate(rstore, "a,b", name="ab")
    assert res.mean == pytest.approx((-1 + 1 - 24 / 990 + 1) / 3)


def test_matrix_table_and_png(rstore, tmp_path):
    rng = np.random.default_rng(0)
    names = ["p1", "p2", "p3"]
    for n in names:
        save(rstore, n, {("encoder", i): rng.random(10) for i in range(3)})
    png = tmp_path / "out" / "corr.png"
    res = correlate(rstore, names, png=png, name="m")
    m = res.matrix
    assert list(m.index) == names and np.allclose(np.diag(m), 1) and np.allclose(m, m.T)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table, meta = read_result(rstore, "correlations", "m")
    assert len(table) == 6 * 3 and set(table["a"]) == set(names) and meta["rankings"] == names
    for (a, b), g in table.groupby(["a", "b"]):
        assert m.loc[a, b] == pytest.approx(g["spearman"].mean())
    with pytest.raises(QueryError, match="already exists"):
        correlate(rstore, names, name="m")


def test_bad_input(rstore, tmp_path):
    save(rstore, "a", {("encoder", i): np.arange(10.0) for i in range(3)})
    save(rstore, "short", {("encoder", i): np.arange(8.0) for i in range(3)})
    save(rstore, "two_layers", {("encoder", i): np.arange(10.0) for i in range(2)})
    for other in ("short", "two_layers"):
        with pytest.raises(QueryError) as e:
            correlate(rstore, ["a", other], write=False)
        assert "different shapes" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(QueryError, match="at least two"):
        correlate(rstore, "a", write=False)
    with pytest.raises(QueryError, match="no ranking named 'zzz'"):
        compare_rankings(rstore, "a", "zzz")
    with pytest.raises(ValueError, match="fraction must be a fraction"):
        compare_rankings(rstore, "a", "a", fraction=1.5)


@prop_settings(40)
@given(n=st.integers(3, 40), k=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_property_spearman_and_overlap_match_naive(n, k, seed):
    rng = np.random.default_rng(seed)
    a = np.round(rng.random(n), 1)  # ties
    b = np.round(a + rng.random(n) * 0.5, 1)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return
    t = compare_vectors({("encoder", 0): a}, {("encoder", 0): b}, k=min(k, n)).iloc[0]
    assert t["spearman"] == pytest.approx(naive.spearman(a, b), abs=1e-12)
    assert t["topk_overlap"] == pytest.approx(naive.topk_overlap(a, b, min(k, n)))
