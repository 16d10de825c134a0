"""The reference code's conventions (issue 12): the count rule, Skill-Neuron's multi-class
subtasks and union, the class/slot combination order, the mean p over layers, the exactness
of the default storage dtype, and overlap refusing different data in examples mode. Each
option is checked against a naive implementation of the reference's procedure
(:mod:`tests.query.naive_reference`) on arrays with a planted answer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neurondb.query import (
    QueryError,
    activated_overlap,
    compare_rankings,
    correlate,
    make_mask,
    predictivity,
    read_result,
)
from neurondb.query.masks import select_top
from neurondb.query.predictivity import ExactnessWarning, balance_examples
from neurondb.query.rankings import fraction_count, ranking_frame, save_ranking
from neurondb.store import open_store
from neurondb.store.codec import default_storage_dtype
from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run

from . import naive, naive_reference
from .conftest import planted

# -- the count rule -------------------------------------------------------------------------


def test_count_rule_int_is_default_and_round_is_an_option():
    assert fraction_count(0.05, 1536) == 76                   # both references: int(p*d)
    assert fraction_count(0.05, 1536, "round") == 77
    assert fraction_count(0.05, 90) == 4 and fraction_count(0.05, 90, "round") == 5
    assert fraction_count(0.29, 100) == int(0.29 * 100) == 28  # the reference's float product
    with pytest.raises(ValueError, match="count rule"):
        fraction_count(0.1, 10, "ceil")


@pytest.fixture
def wide_store(tmp_path):
    """A ranking over two layers of 1,536 neurons (MiniLM's d_ff), with many tied scores."""
    st = open_store(make_store(tmp_path / "s", {"encoder": (1536, 1536)}))
    rng = np.random.default_rng(5)
    scores = {("encoder", la): np.round(rng.random(1536), 2) for la in range(2)}
    for n, sc in (("A", scores), ("B", {k: np.round(v + rng.random(1536) * 0.3, 2)
                                       for k, v in scores.items()})):
        save_ranking(st, n, ranking_frame("predictivity", sc, "layer"),
                     {"method": "predictivity", "shape": st.shape.to_dict()}, False)
    st.scores = scores
    return st


def test_mask_takes_int_p_d_per_layer_like_the_reference(wide_store):
    m = make_mask(wide_store, "A", 0.05, write=False)
    want = naive_reference.finfo([wide_store.scores[("encoder", la)] for la in range(2)], 0.05)
    for la in range(2):
        got = set(m[m["layer"] == la]["neuron"])
        assert len(got) == 76 and got == want[la]
    r = make_mask(wide_store, "A", 0.05, write=False, count_rule="round")
    assert r.groupby("layer").size().tolist() == [77, 77]
    g = make_mask(wide_store, "A", 0.05, scope="global", write=False)
    assert len(g) == int(0.05 * 3072) == 153


def test_topk_overlap_k_follows_the_count_rule(wide_store):
    t = compare_rankings(wide_store, "A", "B")
    assert (t["k"] == 76).all()
    a = [wide_store.scores[("encoder", la)] for la in range(2)]
    da, _ = read_result(wide_store, "rankings", "B")
    b = [da[da["layer"] == la].sort_values("neuron")["score"].to_numpy() for la in range(2)]
    for la in range(2):
        assert t.iloc[la]["topk_overlap"] == pytest.approx(naive.topk_overlap(a[la], b[la], 76))
    assert (compare_rankings(wide_store, "A", "B", count_rule="round")["k"] == 77).all()


def test_correlate_reports_the_mean_p_over_layers(wide_store):
    res = correlate(wide_store, "A,B", name="ab")
    a = [wide_store.scores[("encoder", la)] for la in range(2)]
    da, _ = read_result(wide_store, "rankings", "B")
    b = [da[da["layer"] == la].sort_values("neuron")["score"].to_numpy() for la in range(2)]
    want = naive_reference.mean_p(list(zip(a, b)))
    assert res.mean_p == pytest.approx(want, rel=1e-9, abs=1e-300)
    assert res.p_matrix.loc["B", "A"] == pytest.approx(want, rel=1e-9, abs=1e-300)
    _, meta = read_result(wide_store, "correlations", "ab")
    row = next(r for r in meta["mean_over_layers"] if r["a"] == "A" and r["b"] == "B")
    assert row["p_value"] == pytest.approx(want, rel=1e-9, abs=1e-300)
    assert meta["count_rule"] == "int"


# -- Skill-Neuron's subtasks and union -------------------------------------------------------

SLOTS3 = ["prompt:0", "prompt:1", "prompt:2"]


def test_balance_is_binarize_balance():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, int(rng.integers(4, 40))).tolist()
        if min(y.count(0), y.count(1)) == 0:
            continue
        ids = np.arange(len(y)) + 100
        got = balance_examples(ids, np.asarray(y))
        assert got.tolist() == naive_reference.balance(y)
        got = balance_examples(ids, np.asarray(y), seed=3)
        assert got.tolist() == naive_reference.balance_seeded(y, 3)


@pytest.mark.parametrize("n_classes,seed", [(4, None), (3, None), (4, 7)])
def test_multiclass_subtasks_match_skill_neuron(tmp_path, n_classes, seed):
    """Two balanced binary subtasks, each with its own baseline and predictivity, and the
    union selection of skillneuron.py, against the naive binarize/probe/finfo procedure."""
    root = make_store(tmp_path / "s", {"encoder": (12, 12)})
    pn_pos = {3: 2, 4: 3}[n_classes]
    neu = {3: 1, 4: 2}[n_classes]
    plants = [("encoder", 0, 1, 4, 3.0, pn_pos),   # neuron 4 separates the pn pair
              ("encoder", 0, 2, 9, 3.0, neu),      # neuron 9 finds the neutral class
              ("encoder", 1, 0, 2, -3.0, neu)]
    tr = planted(90, SLOTS3, seed=61, widths={"encoder": (12, 12)}, plants=plants,
                 n_classes=n_classes)
    ev = planted(70, SLOTS3, seed=62, widths={"encoder": (12, 12)}, plants=plants,
                 n_classes=n_classes)
    write_periodic_run(root, "tr", "train", tr.labels, SLOTS3, tr.acts)
    write_periodic_run(root, "ev", "test", ev.labels, SLOTS3, ev.acts)
    df = predictivity(root, "ev", "tr", multiclass="subtasks", balance_seed=seed, name="sub")
    _, meta = read_result(root, "rankings", "sub")
    assert meta["multiclass"] == "subtasks" and [s["name"] for s in meta["subtasks"]] == ["pn", "neu"]
    labs_tr = naive_reference.binarize(tr.labels.tolist(), n_classes)
    labs_ev = naive_reference.binarize(ev.labels.tolist(), n_classes)
    if seed is not None:   # the seeded option: random balanced samples
        for labs, y in ((labs_tr, tr.labels), (labs_ev, ev.labels)):
            for name, m in (("pn", {3: {0: 0, 2: 1}, 4: {1: 0, 3: 1}}[n_classes]),
                            ("neu", {c: int(c == neu) for c in range(n_classes)})):
                yb = [m.get(int(v), -1) for v in y]
                sub = [b for b in yb if b >= 0]
                keep = naive_reference.balance_seeded(sub, seed)
                it = iter(keep)
                labs[name] = [b if b >= 0 and next(it) else -1 for b in yb]
    h = {}
    for name in ("pn", "neu"):
        h[name] = []
        for la in range(2):
            want = naive_reference.subtask_predictivity(
                tr.acts[("encoder", la)].astype(np.float32), labs_tr[name],
                ev.acts[("encoder", la)].astype(np.float32), labs_ev[name])
            got = df[df["layer"] == la].sort_values("neuron")[f"score_{name}"].to_numpy()
            np.testing.assert_allclose(got, want, atol=1e-12)
            h[name].append(want)
    top = df[(df["layer"] == 0)].sort_values("rank")
    assert set(top["neuron"][:2]) == {4, 9}
    p = 0.125                                         # the reference's file "0.25": 2p of d
    want = naive_reference.union_fill(h["pn"], h["neu"], p)
    m = make_mask(root, "sub", 2 * p, write=False)
    for la in range(2):
        assert set(m[m["layer"] == la]["neuron"]) == want[la]
        assert len(want[la]) == int(12 * 2 * p) == 3


def test_subtasks_refuse_a_binary_task(skill_store):
    with pytest.raises(QueryError, match="3 or 4 classes"):
        predictivity(skill_store, "ev", "tr", multiclass="subtasks", write=False)
    with pytest.raises(ValueError, match="multiclass must be"):
        predictivity(skill_store, "ev", "tr", multiclass="pairs", write=False)


def test_union_fill_is_order_independent_of_ties():
    a = {("encoder", 0): np.array([0.9, 0.8, 0.8, 0.1, 0.1, 0.1, 0.7, 0.6, 0.5, 0.4])}
    b = {("encoder", 0): np.array([0.1, 0.95, 0.2, 0.9, 0.9, 0.3, 0.1, 0.1, 0.1, 0.1])}
    m = select_top(a, 0.4, "layer", second=b)   # 2 from a (0, 1), filled from b: 3, 4
    assert sorted(m["neuron"]) == [0, 1, 3, 4]
    want = naive_reference.union_fill([a[("encoder", 0)]], [b[("encoder", 0)]], 0.2)
    assert set(m["neuron"]) == want[0]


# -- the class/slot combination order --------------------------------------------------------


@pytest.mark.parametrize("over_classes", ["mean", "max"])
def test_combine_order_slots_first_matches_naive(store_factory, over_classes):
    """Neuron 3 is planted for class 0 at slot 0 and for class 2 at slot 1: with the mean over
    classes, combining per slot first and taking each class's best slot first differ."""
    root = store_factory()
    plants = [("encoder", 0, 0, 3, 3.0, 0), ("encoder", 0, 1, 3, 3.0, 2),
              ("encoder", 1, 2, 6, -3.0, 1)]
    tr = planted(80, SLOTS3, seed=71, plants=plants, n_classes=4)
    ev = planted(60, SLOTS3, seed=72, plants=plants, n_classes=4)
    write_periodic_run(root, "tr", "train", tr.labels, SLOTS3, tr.acts)
    write_periodic_run(root, "ev", "test", ev.labels, SLOTS3, ev.acts)
    sf = predictivity(root, "ev", "tr", over_classes=over_classes, combine_order="slots-first",
                      write=False)
    cf = predictivity(root, "ev", "tr", over_classes=over_classes, write=False)
    for la in range(2):
        want = naive_reference.slots_first(tr.acts[("encoder", la)].astype(np.float32),
                                           ev.acts[("encoder", la)].astype(np.float32),
                                           ev.labels.tolist(), 4, over_classes)
        got = sf[sf["layer"] == la].sort_values("neuron")["score"].to_numpy()
        np.testing.assert_allclose(got, want, atol=1e-12)
    s3 = sf[(sf.layer == 0) & (sf.neuron == 3)].iloc[0]
    c3 = cf[(cf.layer == 0) & (cf.neuron == 3)].iloc[0]
    if over_classes == "mean":
        assert s3["score"] > c3["score"] + 0.02
    else:   # max over classes commutes with the max over slots: the orders agree
        np.testing.assert_allclose(sf.sort_values(["layer", "neuron"])["score"],
                                   cf.sort_values(["layer", "neuron"])["score"], atol=1e-12)
    with pytest.raises(ValueError, match="combine_order must be"):
        predictivity(root, "ev", "tr", combine_order="sideways", write=False)


# -- exactness of the storage dtype ----------------------------------------------------------

WIDE = {"encoder": (24, 24)}
NEAR = [3, 11, 17]   # near-constant neurons, in both layers


def near_constant(n: int, seed: int):
    """Activations like prompt positions of a real model: most neurons noisy, but neurons
    ``NEAR`` nearly constant (1.3 +- 2e-4, well inside one float16 step of 9.8e-4) with a
    label-dependent shift of 3e-4: predictive in float32, erased by float16 rounding."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    acts = {}
    for la, d in enumerate(WIDE["encoder"]):
        x = rng.standard_normal((n, 2, d))
        for i in NEAR:
            x[:, :, i] = 1.3 + 2e-4 * rng.standard_normal((n, 2)) + 3e-4 * (y[:, None] - 0.5)
        acts[("encoder", la)] = x
    return y, acts


def test_default_dtype_keeps_predictivity_and_float16_warns(tmp_path):
    slots = ["prompt:0", "mask"]
    assert default_storage_dtype(["prompt", "mask"]) == "float32"
    assert default_storage_dtype("first,last") == "float32"
    assert default_storage_dtype(None) == "float32"
    assert default_storage_dtype(["all"]) == "float16"
    default = default_storage_dtype(["prompt", "mask"])
    root = make_store(tmp_path / "s", WIDE)
    ytr, tr = near_constant(300, 1)
    yev, ev = near_constant(300, 2)
    write_stats_run(root, "tr", "train", ytr, slots, tr)
    write_periodic_run(root, "ev32", "validation", yev, slots, ev, dtype="float32")
    write_periodic_run(root, "evdef", "validation", yev, slots, ev, dtype=default)
    write_periodic_run(root, "ev16", "validation", yev, slots, ev, dtype="float16")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExactnessWarning)
        f32 = predictivity(root, "ev32", "tr", name="p32")
        dflt = predictivity(root, "evdef", "tr", name="pdef")
    np.testing.assert_array_equal(dflt["score"].to_numpy(), f32["score"].to_numpy())
    assert (f32["near_base"] == 0).all() and not f32.attrs["exactness"]["checked"]
    near_rows = f32[f32.neuron.isin(NEAR)]
    assert (near_rows["score"] > 0.75).all()            # planted: predictive in float32
    with pytest.warns(ExactnessWarning, match="within one storage step") as rec:
        f16 = predictivity(root, "ev16", "tr", name="p16")
    assert "float16" in str(rec[0].message) and "dtype='float32'" in str(rec[0].message)
    _, meta = read_result(root, "rankings", "p16")
    ex = meta["exactness"]
    assert ex["checked"] and ex["storage"] == ["float16"] and ex["n_neurons_near_base"] >= len(NEAR)
    by = f16.set_index(["layer", "neuron"]).sort_index()
    b32 = f32.set_index(["layer", "neuron"]).sort_index()
    moved = (by["score"] - b32["score"]).abs()
    assert moved.loc[[(la, i) for la in range(2) for i in NEAR]].min() > 0.1
    # the per-neuron count equals a scan of every stored value, and bounds the move
    st = open_store(root)
    base = {la: st.stats(run="tr").mean("encoder", la) for la in range(2)}
    for la in range(2):
        want = naive_reference.near_base(naive.stored(ev[("encoder", la)], "float16"),
                                         base[la]).max(0)
        np.testing.assert_array_equal(by.loc[la, "near_base"].to_numpy(), want)
    assert (moved <= by["near_base"] / 300 + 1e-12).all()
    assert ex["max_accuracy_move"] == pytest.approx(by["near_base"].max() / 300)
    # the check can be switched off (no warning, no counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExactnessWarning)
        off = predictivity(root, "ev16", "tr", write=False, check_exactness=False)
    np.testing.assert_array_equal(off["score"].to_numpy(), f16["score"].to_numpy())


# -- overlap in examples mode ----------------------------------------------------------------


@pytest.fixture
def two_datasets(tmp_path):
    root = make_store(tmp_path / "s", {"encoder": (8, 8)})
    rng = np.random.default_rng(3)
    for run, ds, off, n in (("sst", "sst2", 0, 10), ("imdb", "imdb", 0, 10),
                            ("sst_b", "sst2", 0, 10), ("sst_part", "sst2", 5, 10)):
        acts = {("encoder", la): rng.standard_normal((n, 2, 8)) for la in range(2)}
        write_periodic_run(root, run, f"v_{run}", rng.integers(0, 2, n), ["prompt:0", "mask"],
                           acts, id_offset=off, dataset=ds)
    return open_store(root)


def test_overlap_examples_refuses_different_datasets(two_datasets):
    st = two_datasets
    with pytest.raises(QueryError) as e:
        activated_overlap(st, "sst,imdb", write=False)
    msg = str(e.value)
    assert "different data" in msg and "mode='mean'" in msg and "\n" not in msg
    assert activated_overlap(st, "sst,imdb", mode="mean", write=False).matrices
    assert activated_overlap(st, "sst,sst_b", write=False).matrices   # same data: fine
    with pytest.raises(QueryError, match="mode='mean'"):               # ids 5..14 vs 0..9
        activated_overlap(st, "sst,sst_part", write=False)
    # recorded fingerprints decide when both runs have one
    st.run("sst").dataset_fingerprint = "aaaa1111"
    st.run("sst_b").dataset_fingerprint = "bbbb2222"
    with pytest.raises(QueryError, match="fingerprints aaaa1111 and bbbb2222"):
        activated_overlap(st, "sst,sst_b", write=False)
    st.run("sst_b").dataset_fingerprint = "aaaa1111"
    assert activated_overlap(st, "sst,sst_b", write=False).matrices


# -- the command line ------------------------------------------------------------------------


def test_cli_options(tmp_path):
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    def ok(*args):
        res = CliRunner().invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        return res.output

    root = make_store(tmp_path / "s", {"encoder": (40, 40)})
    plants = [("encoder", 0, 1, 4, 3.0, 3), ("encoder", 0, 2, 9, 3.0, 2)]
    tr = planted(80, SLOTS3, seed=81, widths={"encoder": (40, 40)}, plants=plants, n_classes=4)
    ev = planted(60, SLOTS3, seed=82, widths={"encoder": (40, 40)}, plants=plants, n_classes=4)
    write_stats_run(root, "tr", "train", tr.labels, SLOTS3, tr.acts)
    write_periodic_run(root, "ev", "test", ev.labels, SLOTS3, ev.acts, dtype="float16")
    ok("rank", root, "--train", "tr", "--eval", "ev", "--multiclass", "subtasks",
       "--balance-seed", "1", "--name", "S")
    _, meta = read_result(root, "rankings", "S")
    assert meta["multiclass"] == "subtasks" and meta["balance_seed"] == 1
    assert "stats run" in meta["subtasks"][0]["baseline"]     # class-weighted stats baseline
    ok("rank", root, "--train", "tr", "--eval", "ev", "--combine-order", "slots-first",
       "--name", "O")
    assert read_result(root, "rankings", "O")[1]["combine_order"] == "slots-first"
    out = ok("mask", root, "--ranking", "O", "--fraction", "0.05", "--name", "m_int")
    assert "4 neurons" in out                                 # int(0.05 * 40) = 2 per layer
    out = ok("mask", root, "--ranking", "O", "--fraction", "0.0625", "--count-rule", "round",
             "--name", "m_round")
    assert "6 neurons" in out                                 # 2.5 -> 3 per layer
    ok("mask", root, "--ranking", "S", "--fraction", "0.1", "--name", "m_union")
    _, mmeta = read_result(root, "masks", "m_union")
    assert mmeta["selection"] == "subtask-union" and mmeta["n_neurons"] == 8
    out = ok("correlate", root, "-r", "S,O")
    assert "mean p" in out and "p-value, mean over layers" in out


def test_exactness_bench_reports_the_difference(tmp_path):
    """bench/exactness.py's comparison on the planted near-constant store."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "exactness.py"
    spec = importlib.util.spec_from_file_location("bench_exactness", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = make_store(tmp_path / "s", WIDE)
    slots = ["prompt:0", "mask"]
    ytr, tr = near_constant(300, 1)
    yev, ev = near_constant(300, 2)
    write_stats_run(root, "tr", "train", ytr, slots, tr)
    write_periodic_run(root, "e32", "v32", yev, slots, ev, dtype="float32")
    write_periodic_run(root, "e16", "v16", yev, slots, ev, dtype="float16")
    r = mod.compare(root, "tr", "e32", "e16")
    assert r["neurons"] == 48 and r["moved"] == 6 and r["max_move"] > 0.1
    assert r["flagged"] == 6 and r["unflagged_big_moves"] == 0 and r["warned"]
    same = mod.compare(root, "tr", "e32", "e32")
    assert same["moved"] == 0 and same["top_overlap_mean"] == 1.0 and not same["warned"]


def test_cli_rank_prints_the_exactness_warning(tmp_path):
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    root = make_store(tmp_path / "s", WIDE)
    slots = ["prompt:0", "mask"]
    ytr, tr = near_constant(120, 1)
    yev, ev = near_constant(120, 2)
    write_stats_run(root, "tr", "train", ytr, slots, tr)
    write_periodic_run(root, "e16", "v16", yev, slots, ev, dtype="float16")
    res = CliRunner().invoke(app, ["rank", str(root), "--train", "tr", "--eval", "e16"])
    assert res.exit_code == 0, res.output
    assert "warning: predictivity from float16 activations" in res.output
    res = CliRunner().invoke(app, ["rank", str(root), "--train", "tr", "--eval", "e16",
                                   "--no-exactness-check", "--name", "quiet"])
    assert res.exit_code == 0 and "warning:" not in res.output
