"""Attribution (SPEC §4): planted attribution, the naive loop for every option, baselines."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from neurondb.query import QueryError, attribution, random_ranking, rank, read_result
from neurondb.testing_stores import make_store, write_periodic_run, write_rows_run

from . import naive


@pytest.fixture
def grad_store(tmp_path, monkeypatch):
    """Examples with a variable number of rows (so tokens per example differ), small chunks
    (examples straddle chunk boundaries), and a planted attribution neuron."""
    import neurondb.store.tensors as tensors

    monkeypatch.setattr(tensors, "CHUNK_BYTES", 1)
    root = make_store(tmp_path / "s", {"encoder": (12, 70)})
    rng = np.random.default_rng(9)
    n = 23
    lens = rng.integers(1, 7, n)
    row_ex = np.repeat(np.arange(n), lens)
    slots = [("mask" if i == 0 else f"pos:{i}") for L in lens for i in range(L)]
    acts = {("encoder", 0): rng.standard_normal((row_ex.size, 12)),
            ("encoder", 1): rng.standard_normal((row_ex.size, 70))}
    grads = {k: rng.standard_normal(v.shape) * 0.1 for k, v in acts.items()}
    acts[("encoder", 1)][:, 33] = 3.0 + rng.random(row_ex.size)   # large h ...
    grads[("encoder", 1)][:, 33] = 2.0                            # ... and large dF/dh
    write_rows_run(root, "ev", "validation", rng.integers(0, 2, n), row_ex, slots, acts, grads,
                   dtype="float16")
    return SimpleNamespace(path=root, data=(row_ex, slots, acts, grads))


@pytest.mark.parametrize("method", ["attribution", "activation", "gradient"])
@pytest.mark.parametrize("agg", ["sum", "mean", "max"])
@pytest.mark.parametrize("abs_when", ["token", "after"])
def test_matches_naive_loop(grad_store, method, agg, abs_when):
    row_ex, _, acts, grads = grad_store.data
    df = attribution(grad_store.path, "ev", method=method, token_agg=agg, abs_when=abs_when,
                     write=False, chunk_rows=16)
    for layer in (0, 1):
        h = naive.stored(acts[("encoder", layer)], "float16")
        g = naive.stored(grads[("encoder", layer)], "float16")
        want = naive.attribution(h, g, row_ex, agg, abs_when, method)
        got = df[(df["layer"] == layer)].sort_values("neuron")["score"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_planted_attribution_ranks_first_globally(grad_store):
    df = attribution(grad_store.path, "ev", name="attr")
    assert (df.iloc[0]["layer"], df.iloc[0]["neuron"], df.iloc[0]["rank"]) == (1, 33, 1)
    assert (df["scope"] == "global").all() and sorted(df["rank"]) == list(range(1, 83))
    _, meta = read_result(grad_store.path, "rankings", "attr")
    assert meta["n_examples"] == 23 and meta["token_agg"] == "sum" and meta["abs"] == "token"
    assert meta["target"] == ["gold"]
    per = attribution(grad_store.path, "ev", scope="layer", write=False)
    assert per[(per["layer"] == 1) & (per["rank"] == 1)]["neuron"].item() == 33
    assert per.groupby("layer")["rank"].max().tolist() == [12, 70]


def test_slots_and_example_count(grad_store):
    row_ex, slots, acts, grads = grad_store.data
    df = attribution(grad_store.path, "ev", slots="mask", max_examples=5, write=False)
    keep = np.array([s == "mask" for s in slots]) & (row_ex < 5)
    h = naive.stored(acts[("encoder", 0)], "float16")[keep]
    g = naive.stored(grads[("encoder", 0)], "float16")[keep]
    want = naive.attribution(h, g, row_ex[keep])
    got = df[df["layer"] == 0].sort_values("neuron")["score"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_random_is_seeded_and_rank_dispatches(grad_store):
    a = random_ranking(grad_store.path, seed=3, write=False)
    b = rank(grad_store.path, method="random", seed=3, write=False)
    c = random_ranking(grad_store.path, seed=4, write=False)
    np.testing.assert_array_equal(a["score"], b["score"])
    assert not np.array_equal(a.sort_values(["layer", "neuron"])["score"],
                              c.sort_values(["layer", "neuron"])["score"])
    assert len(a) == 82 and a["score"].between(0, 1).all()
    with pytest.raises(ValueError, match="method must be one of"):
        rank(grad_store.path, method="magic")


def test_bad_input(grad_store, tmp_path):
    with pytest.raises(QueryError, match="target 'gold', not 'loss'"):
        attribution(grad_store.path, "ev", target="loss", write=False)
    root = make_store(tmp_path / "nograd", {"encoder": (12, 70)})
    rng = np.random.default_rng(0)
    write_periodic_run(root, "plain", "validation", [0, 1], ["mask"],
                       {("encoder", 0): rng.random((2, 1, 12)), ("encoder", 1): rng.random((2, 1, 70))})
    with pytest.raises(QueryError) as e:
        attribution(root, "plain", write=False)
    assert "no gradients" in str(e.value) and "\n" not in str(e.value)
    assert len(attribution(root, "plain", method="activation", write=False)) == 82
    with pytest.raises(ValueError, match="token aggregation"):
        attribution(grad_store.path, "ev", token_agg="median", write=False)
