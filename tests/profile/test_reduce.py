"""The profile accumulator on planted activations, against brute force: moments, extremes,
histogram, label sums, exact top/bottom-K with planted ties; merging; the file; quantiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurondb.errors import StoreError
from neurondb.profile.edges import choose_edges
from neurondb.profile.keys import keys_np, split_keys_np
from neurondb.profile.quantiles import LEVELS, quantiles
from neurondb.profile.reduce import ProfileAccumulator
from neurondb.profile.state import ProfileState
from tests.profile.brute import brute_hist, brute_profile, brute_top

WIDTHS = {"encoder": (5, 4)}


@pytest.fixture(autouse=True, params=["native", "torch"])
def kernel(request, monkeypatch):
    """Every test here runs with the CPU kernel and with the torch reduction."""
    from neurondb.profile import native

    monkeypatch.setenv(native.ENV_KERNEL, request.param)
    if request.param == "native" and native._load() is None:
        pytest.skip(f"no CPU kernel: {native._why_not}")
    return request.param
K, BINS, N_LABELS, N_POS = 4, 8, 2, 50


def planted(seed: int = 0, n: int = 90):
    """Rows with many planted ties (values on a half-integer grid, a constant neuron, zeros
    of both signs) and unique (example_id, position) in a shuffled order."""
    rng = np.random.default_rng(seed)
    tok = rng.permutation(np.arange(30 * N_POS))[:n]
    ex, pos = tok // N_POS, tok % N_POS
    labels = ex % N_LABELS
    acts = {}
    for layer, d in enumerate(WIDTHS["encoder"]):
        x = (rng.integers(-4, 5, size=(n, d)) / 2).astype(np.float32)
        x[:, 0] = 1.5  # every token ties
        x[::3, 1] = -0.0  # negative zeros tie with zeros
        x[-5:, 2] = 40.0 * (layer + 1)  # beyond the first batch's range: overflow bin
        acts[("encoder", layer)] = x
    return acts, ex, pos, labels


def edges_from(first: dict) -> dict:
    return {k: choose_edges(float(x.min()), float(x.max()), BINS) for k, x in first.items()}


def run(acts, ex, pos, labels, cuts, edges=None) -> ProfileState:
    fixed = {}

    def edges_for(batch):
        fixed.update(edges if edges is not None else edges_from(
            {k: v.numpy() for k, v in batch.items()}))
        return fixed

    acc = ProfileAccumulator(WIDTHS, K, BINS, N_LABELS, N_POS, "cpu", edges_for)
    bounds = [0, *cuts, len(ex)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        acc.update_batch({k: torch.from_numpy(x[a:b]) for k, x in acts.items()},
                         {"encoder": (ex[a:b], pos[a:b], labels[a:b])})
    return acc.state()


def entries(st: ProfileState, key, kind: str):
    v, e, p, ok = st.layers[key].entries(kind, N_POS)
    return [[(float(v[j, i]), int(e[j, i]), int(p[j, i])) for i in range(K) if ok[j, i]]
            for j in range(v.shape[0])]


def test_accumulator_equals_brute_force_with_ties():
    acts, ex, pos, labels = planted()
    st = run(acts, ex, pos, labels, cuts=[7, 30, 31, 64])
    for key, x in acts.items():
        ls = st.layers[key]
        ref = brute_profile(x, labels, N_LABELS)
        assert ls.count == len(ex)
        np.testing.assert_allclose(ls.sum / ls.count, ref["mean"], rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(ls.min, ref["min"])
        np.testing.assert_array_equal(ls.max, ref["max"])
        np.testing.assert_array_equal(ls.n_positive / ls.count, ref["frac_positive"])
        np.testing.assert_allclose(ls.label_sum / ls.label_count[:, None],
                                   ref["label_means"].T, rtol=1e-12)
        np.testing.assert_array_equal(ls.hist, brute_hist(x, ls.edges))
        assert ls.hist[2, -1] == 5  # the planted large values are in the overflow bin
        for kind in ("top", "bottom"):
            assert entries(st, key, kind) == brute_top(x, ex, pos, K, kind)
        # the constant neuron: the K smallest (example_id, position) win, top and bottom
        assert [(e, p) for _, e, p in entries(st, key, "top")[0]] == sorted(zip(ex, pos))[:K]


def test_merging_batches_chunks_and_orders_is_exact():
    acts, ex, pos, labels = planted(1)
    one = run(acts, ex, pos, labels, cuts=[])
    edges = {k: ls.edges for k, ls in one.layers.items()}
    half = len(ex) // 2
    a = run({k: x[:half] for k, x in acts.items()}, ex[:half], pos[:half], labels[:half],
            [5], edges)
    b = run({k: x[half:] for k, x in acts.items()}, ex[half:], pos[half:], labels[half:],
            [11, 12], edges)
    merged = ProfileState.load_bytes(b.to_bytes()).merge(a)  # through the file, other order
    for key, ls in one.layers.items():
        m = merged.layers[key]
        assert m.count == ls.count
        for name in ("min", "max", "n_positive", "hist", "label_count"):
            np.testing.assert_array_equal(getattr(m, name), getattr(ls, name))
        for kind in ("top", "bottom"):
            np.testing.assert_array_equal(m.keys[kind], ls.keys[kind])
        np.testing.assert_allclose(m.sum, ls.sum, rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(m.label_sum, ls.label_sum, rtol=1e-13, atol=1e-12)


def test_merge_refuses_other_edges():
    acts, ex, pos, labels = planted(2)
    a = run(acts, ex, pos, labels, [])
    b = run({k: x * 3 for k, x in acts.items()}, ex, pos, labels, [])
    with pytest.raises(StoreError, match="different histogram edges"):
        a.merge(b)


def test_fewer_tokens_than_k_keeps_empty_slots():
    acts, ex, pos, labels = planted(3, n=3)
    st = run(acts, ex, pos, labels, [1])
    _, _, _, ok = st.layers[("encoder", 0)].entries("top", N_POS)
    assert ok.sum(axis=1).tolist() == [3] * 5


def test_keys_order_floats_and_round_trip():
    v = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf], np.float32)
    ex = np.arange(v.size)
    k = keys_np(v, ex, np.zeros(v.size, int), False, 4)
    assert k[3] // 2**32 == k[4] // 2**32 and k[3] > k[4]  # -0 ties +0; the lower id wins
    assert (np.diff(np.delete(k, 3)) > 0).all()
    back, e, p, ok = split_keys_np(k, False, 4)
    np.testing.assert_array_equal(back, v + np.float32(0))
    assert ok.all() and (e == ex).all() and (p == 0).all()
    kb = keys_np(v, ex, np.zeros(v.size, int), True, 4)
    assert (np.diff(kb[[0, 1, 2, 5, 6, 7]]) < 0).all()
    np.testing.assert_array_equal(split_keys_np(kb, True, 4)[0], v + np.float32(0))


def test_quantiles_are_within_their_bound():
    rng = np.random.default_rng(4)
    x = {("encoder", 0): rng.normal(size=(300, 5)).astype(np.float32),
         ("encoder", 1): rng.gamma(0.5, size=(300, 4)).astype(np.float32)}
    ex, pos = np.arange(300) // 10, np.arange(300) % 10
    edges = {k: choose_edges(float(v[:20].min()), float(v[:20].max()), BINS)
             for k, v in x.items()}  # narrow: many values in under/overflow
    st = run(x, ex, pos, ex % 2, [50, 200], edges)
    for key, v in x.items():
        est, bound = quantiles(st.layers[key])
        exact = np.quantile(v.astype(np.float64), LEVELS, axis=0).T
        assert (np.abs(est - exact) <= bound + 1e-12).all()
        w = edges[key][1] - edges[key][0]
        inside = (exact > edges[key][0]) & (exact < edges[key][-1])
        assert (bound[inside] <= w + 1e-12).all()


def test_layers_reduced_together_or_a_few_at_a_time_agree(monkeypatch):
    from neurondb.profile import reduce

    rng = np.random.default_rng(5)
    widths = {"encoder": (6, 6, 6), "decoder": (6, 3)}
    n = 40
    ex, pos = np.arange(n) // 4, np.arange(n) % 4
    acts = {(s, la): rng.normal(size=(n, d)).astype(np.float32)
            for s, ws in widths.items() for la, d in enumerate(ws)}

    def states():
        acc = ProfileAccumulator(widths, 3, BINS, N_LABELS, N_POS, "cpu", lambda b: edges_from(
            {k: v.numpy() for k, v in b.items()}))
        for a, b in ((0, 27), (27, 40)):
            acc.update_batch({k: torch.from_numpy(x[a:b]) for k, x in acts.items()},
                             {s: (ex[a:b], pos[a:b], ex[a:b] % 2) for s in widths})
        return acc.state()

    together = states()
    monkeypatch.setattr(reduce, "MAX_VALUES", 1)  # one layer at a time
    apart = states()
    assert sorted(together.layers) == sorted(acts)
    for key, ls in together.layers.items():
        other = apart.layers[key]
        assert ls.count == other.count == 40
        for name in ("sum", "sumsq", "min", "max", "n_positive", "hist", "label_count",
                     "label_sum"):
            np.testing.assert_array_equal(getattr(ls, name), getattr(other, name))
        for kind in ("top", "bottom"):
            np.testing.assert_array_equal(ls.keys[kind], other.keys[kind])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_activations_reduce_as_their_float32_values(dtype):
    acts, ex, pos, labels = planted(6)
    low = {k: torch.from_numpy(x).to(dtype) for k, x in acts.items()}
    as32 = {k: v.float().numpy() for k, v in low.items()}
    edges = edges_from(as32)
    ref = run(as32, ex, pos, labels, [20], edges)
    acc = ProfileAccumulator(WIDTHS, K, BINS, N_LABELS, N_POS, "cpu", lambda b: edges)
    for a, b in ((0, 20), (20, len(ex))):
        acc.update_batch({k: v[a:b] for k, v in low.items()},
                         {"encoder": (ex[a:b], pos[a:b], labels[a:b])})
    got = acc.state()
    for key, ls in ref.layers.items():
        for kind in ("top", "bottom"):
            np.testing.assert_array_equal(got.layers[key].keys[kind], ls.keys[kind])
        np.testing.assert_array_equal(got.layers[key].hist, ls.hist)
        np.testing.assert_array_equal(got.layers[key].sum, ls.sum)


def test_non_finite_activations_do_not_crash_and_show():
    acts, ex, pos, labels = planted(7)
    x = acts[("encoder", 1)]
    x[3, 0], x[4, 1], x[5, 2] = np.nan, np.inf, -np.inf
    edges = edges_from({k: v[:2] for k, v in acts.items()})
    ls = run(acts, ex, pos, labels, [10], edges).layers[("encoder", 1)]
    assert np.isnan(ls.max[0]) and np.isnan(ls.sum[0]) and ls.max[1] == np.inf
    assert ls.min[2] == -np.inf and ls.hist.sum(axis=1).tolist() == [len(ex)] * 4
    assert ls.hist[0, -1] >= 1 and ls.hist[1, -1] >= 1 and ls.hist[2, 0] >= 1
