"""Skill-neuron predictivity (SPEC §2): planted neurons, the naive loop, options, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurondb.query import QueryError, predictivity, read_result, running_stats_from_tokens
from neurondb.store import StoreError, open_store
from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run

from . import naive
from .conftest import PLANTS, SLOTS, planted, prop_settings


def layer_frame(df, layer, stack="encoder"):
    return df[(df["stack"] == stack) & (df["layer"] == layer)].set_index("neuron").sort_index()


def check_against_naive(df, trains, evals, labels, dtypes, over_prompts="mean", over_classes="mean",
                        widths=(16, 16)):
    for layer in range(len(widths)):
        # train runs are written as float32 (tokens) or from float32 values (stats)
        tr = [naive.stored(t.acts[("encoder", layer)], "float32") for t in trains]
        ev = [naive.stored(e.acts[("encoder", layer)], dt) for e, dt in zip(evals, dtypes)]
        score, P, slot, acc = naive.predictivity(tr, ev, labels, over_prompts, over_classes)
        got = layer_frame(df, layer)
        np.testing.assert_allclose(got["score"].to_numpy(), score, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.stack(got["per_prompt"].to_numpy()), P.T, atol=1e-12)
        assert got["slot"].tolist() == [SLOTS[t] for t in slot]
        np.testing.assert_allclose(got["accuracy"].to_numpy(), acc, atol=1e-12)
        np.testing.assert_array_equal(got["excitatory"].to_numpy(), acc > 0.5)


def test_planted_neurons_rank_first(skill_store):
    df = predictivity(skill_store, "ev", "tr", name="skill")
    top1 = layer_frame(df, 1).sort_values("rank").iloc[0]
    assert top1.name == 5 and top1["rank"] == 1 and top1["score"] > 0.9
    assert top1["slot"] == "prompt:1" and bool(top1["excitatory"]) and top1["class"] == "1"
    top0 = layer_frame(df, 0).sort_values("rank").iloc[0]
    assert top0.name == 7 and top0["score"] > 0.9 and top0["slot"] == "prompt:2"
    assert not bool(top0["excitatory"]) and top0["accuracy"] < 0.1
    # binary class: the class the neuron is above its baseline on (label 0 for the
    # inhibitory plant), not the task's positive class on every row
    assert top0["class"] == "0"
    noise = df[~(((df.layer == 1) & (df.neuron == 5)) | ((df.layer == 0) & (df.neuron == 7)))]
    assert noise["score"].between(0.5, 0.7).all()
    assert abs(noise["score"].mean() - 0.55) < 0.04
    stored, meta = read_result(skill_store, "rankings", "skill")
    assert len(stored) == 32 and meta["method"] == "predictivity" and meta["eval"] == ["ev"]
    assert meta["train"] == ["tr"] and meta["scope"] == "layer"
    g = predictivity(skill_store, "ev", "tr", scope="global", write=False)
    assert set(zip(g.layer[:2], g.neuron[:2])) == {(1, 5), (0, 7)} and list(g["rank"][:2]) == [1, 2]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_matches_naive_loop(store_factory, small_chunks, dtype):
    root = store_factory()
    tr = planted(40, SLOTS, seed=11, plants=PLANTS)
    ev = planted(37, SLOTS, seed=12, plants=PLANTS, noise=2.0)
    write_stats_run(root, "tr", "train", tr.labels, SLOTS, tr.acts)
    write_periodic_run(root, "ev", "validation", ev.labels, SLOTS, ev.acts, dtype=dtype)
    df = predictivity(root, "ev", "tr", write=False, threads=2)
    check_against_naive(df, [tr], [ev], [ev.labels], [dtype])


def test_multi_prompt_mean_and_min(store_factory):
    """Three prompts (own train and eval runs); mean and min over prompts; split names work."""
    root = store_factory()
    trains, evals = [], []
    for k in range(3):
        plants = [("encoder", 1, k, 3, 3.0 + k, 1), ("encoder", 0, 0, 9, -2.0, 1)]
        trains.append(planted(60, SLOTS, seed=20 + k, plants=plants))
        evals.append(planted(50, SLOTS, seed=30 + k, plants=plants))
        write_stats_run(root, f"tr{k}", f"train{k}", trains[k].labels, SLOTS, trains[k].acts)
        write_periodic_run(root, f"ev{k}", f"validation{k}", evals[k].labels, SLOTS, evals[k].acts,
                           dtype="float16")
    labels = [e.labels for e in evals]
    for how in ("mean", "min"):
        df = predictivity(root, "validation0,ev1,ev2", ["tr0", "train1", "tr2"], over_prompts=how,
                          name=f"p_{how}")
        check_against_naive(df, trains, evals, labels, ["float16"] * 3, over_prompts=how)
    mean, _ = read_result(open_store(root), "rankings", "p_mean")
    mn, meta = read_result(open_store(root), "rankings", "p_min")
    both = mn.merge(mean, on=["stack", "layer", "neuron"], suffixes=("_min", "_mean"))
    assert (both["score_min"] <= both["score_mean"] + 1e-12).all()
    assert (both["score_min"] < both["score_mean"]).any()
    assert meta["over_prompts"] == "min" and meta["eval"] == ["ev0", "ev1", "ev2"]
    row = layer_frame(mean, 1).loc[3]
    assert len(row["per_prompt"]) == 3 and list(row["per_prompt_slot"]) == SLOTS
    assert row["slot"] == "prompt:2"  # the strongest plant is in prompt 2 at slot prompt:2


@pytest.mark.parametrize("over_classes", ["mean", "max"])
def test_multiclass_one_vs_rest(store_factory, over_classes):
    root = store_factory()
    names = ["world", "sports", "business", "tech"]
    plants = [("encoder", 0, 1, 2, 3.0, 2), ("encoder", 1, 0, 4, -3.0, 0)]
    tr = planted(80, SLOTS, seed=41, plants=plants, n_classes=4)
    ev = planted(60, SLOTS, seed=42, plants=plants, n_classes=4)
    write_periodic_run(root, "tr", "train", tr.labels, SLOTS, tr.acts, label_names=names)
    write_periodic_run(root, "ev", "test", ev.labels, SLOTS, ev.acts, label_names=names,
                       dtype="bfloat16")
    df = predictivity(root, "ev", "tr", over_classes=over_classes, write=False)
    check_against_naive(df, [tr], [ev], [ev.labels], ["bfloat16"], over_classes=over_classes)
    assert layer_frame(df, 0).loc[2, "rank"] == 1 and layer_frame(df, 0).loc[2, "class"] == "business"
    assert bool(layer_frame(df, 0).loc[2, "excitatory"])
    assert layer_frame(df, 1).loc[4, "class"] == "world" and not layer_frame(df, 1).loc[4, "excitatory"]


def test_tokens_baseline_equals_stats_baseline(store_factory):
    root = store_factory()
    tr = planted(50, SLOTS, seed=51, plants=PLANTS)
    ev = planted(40, SLOTS, seed=52, plants=PLANTS)
    write_periodic_run(root, "tr_tok", "train", tr.labels, SLOTS, tr.acts)
    write_stats_run(root, "tr_st", "train_stats", tr.labels, SLOTS, tr.acts)
    write_periodic_run(root, "ev", "validation", ev.labels, SLOTS, ev.acts)
    a = predictivity(root, "ev", "tr_tok", write=False)
    b = predictivity(root, "ev", "tr_st", write=False)
    np.testing.assert_array_equal(a["score"], b["score"])
    st = open_store(root)
    rs, ref = running_stats_from_tokens(st, "tr_tok"), st.stats(run="tr_st")
    assert rs.slots["encoder"] == ref.slots["encoder"]
    for layer in (0, 1):
        np.testing.assert_allclose(rs.mean("encoder", layer), ref.mean("encoder", layer), atol=1e-6)
        np.testing.assert_allclose(rs.label_mean("encoder", layer), ref.label_mean("encoder", layer),
                                   atol=1e-6)


def test_baselines_from_another_store_score_adversarial_set(store_factory):
    clean = store_factory()
    adv = store_factory()
    tr = planted(80, SLOTS, seed=61, plants=PLANTS)
    ev = planted(40, SLOTS, seed=62, plants=PLANTS)
    write_stats_run(clean, "tr", "train", tr.labels, SLOTS, tr.acts)
    write_periodic_run(adv, "adv", "adv_sst2", ev.labels, SLOTS, ev.acts, dtype="float16")
    df = predictivity(adv, "adv", "tr", train_store=clean, name="adv_scored")
    check_against_naive(df, [tr], [ev], [ev.labels], ["float16"])
    meta = read_result(open_store(adv), "rankings", "adv_scored")[1]
    assert meta["train_store"] == str(clean.absolute())
    together = predictivity(open_store(adv, clean), "adv", "tr", write=False)
    np.testing.assert_array_equal(together["score"], df["score"])


def test_sharded_run_equals_single_shard(store_factory, small_chunks):
    root = store_factory()
    tr = planted(40, SLOTS, seed=71, plants=PLANTS)
    ev = planted(90, SLOTS, seed=72, plants=PLANTS)
    write_stats_run(root, "tr", "train", tr.labels, SLOTS, tr.acts)
    write_periodic_run(root, "one", "validation", ev.labels, SLOTS, ev.acts, dtype="float16")
    write_periodic_run(root, "many", "validation_sharded", ev.labels, SLOTS, ev.acts,
                       dtype="float16", shards=4)
    st = open_store(root)
    assert len(st.shards("many")) == 4
    a = predictivity(st, "one", "tr", write=False)
    b = predictivity(st, "many", "tr", write=False)
    np.testing.assert_array_equal(a["score"], b["score"])
    check_against_naive(b, [tr], [ev], [ev.labels], ["float16"])


def test_slot_selection(skill_store):
    df = predictivity(skill_store, "ev", "tr", slots="prompt:0,prompt:2", write=False)
    assert set(df["slot"]) <= {"prompt:0", "prompt:2"}
    assert layer_frame(df, 1).loc[5, "score"] < 0.75  # its slot prompt:1 is not used
    with pytest.raises(QueryError, match="matches slots="):
        predictivity(skill_store, "ev", "tr", slots="mask", write=False)


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def test_bad_input_is_one_line(skill_store, store_factory):
    st = skill_store
    with pytest.raises(StoreError) as e:
        predictivity(st, "nope", "tr", write=False)
    assert "no run or split named 'nope'" in one_line(e)
    with pytest.raises(StoreError) as e:
        predictivity(st, "ev", "missing_train", write=False)
    assert "missing_train" in one_line(e)
    with pytest.raises(QueryError) as e:
        predictivity(st, "tr", "tr", write=False)
    assert "running statistics" in one_line(e)
    predictivity(st, "ev", "tr", name="dup")
    with pytest.raises(QueryError) as e:
        predictivity(st, "ev", "tr", name="dup")
    assert "already exists" in one_line(e) and "overwrite=True" in one_line(e)
    predictivity(st, "ev", "tr", name="dup", overwrite=True)
    with pytest.raises(QueryError) as e:
        predictivity(st, "ev", "tr", name="bad name!", write=True)
    assert "not allowed" in one_line(e)

    root = st.path
    ev = planted(20, ["prompt:0", "mask"], seed=3)
    write_periodic_run(root, "ev_mask", "validation_mask", ev.labels, ["prompt:0", "mask"], ev.acts)
    with pytest.raises(QueryError) as e:
        predictivity(open_store(root), "ev_mask", "tr", write=False)
    assert "mask" in one_line(e) and "baseline" in one_line(e)

    single = planted(20, SLOTS, seed=4)
    write_periodic_run(root, "ev_one", "validation_one", np.ones(20, int), SLOTS, single.acts)
    with pytest.raises(QueryError) as e:
        predictivity(open_store(root), "ev_one", "tr", write=False)
    assert "single class" in one_line(e)

    other = make_store(store_factory().parent / "wide", {"encoder": (16, 32)})
    wide = planted(20, SLOTS, seed=5, widths={"encoder": (16, 32)})
    write_stats_run(other, "tr_wide", "train", wide.labels, SLOTS, wide.acts)
    with pytest.raises(QueryError) as e:
        predictivity(open_store(root), "ev", "tr_wide", train_store=other, write=False)
    assert "different shapes" in one_line(e)
    with pytest.raises(QueryError) as e:
        predictivity(open_store(root), "ev,ev_one", "tr,tr,tr", write=False)
    assert "training runs" in one_line(e)


@prop_settings(15)
@given(n_tr=st.integers(2, 20), n_ev=st.integers(2, 20), n_cls=st.sampled_from([2, 3, 4]),
       S=st.integers(1, 3), seed=st.integers(0, 10_000),
       dtype=st.sampled_from(["float32", "float16", "bfloat16"]))
def test_property_matches_naive(tmp_path_factory, n_tr, n_ev, n_cls, S, seed, dtype):
    root = make_store(tmp_path_factory.mktemp("p"), {"encoder": (5, 3)})
    slots = [f"prompt:{i}" for i in range(S)]
    widths = {"encoder": (5, 3)}
    tr = planted(max(n_tr, n_cls), slots, seed, widths=widths, n_classes=n_cls)
    ev = planted(max(n_ev, n_cls), slots, seed + 1, widths=widths, n_classes=n_cls)
    for p in (tr, ev):  # coarse values: ties with the baseline happen
        p.acts = {k: np.round(v, 1) for k, v in p.acts.items()}
    write_periodic_run(root, "tr", "train", tr.labels, slots, tr.acts)
    write_periodic_run(root, "ev", "validation", ev.labels, slots, ev.acts, dtype=dtype)
    df = predictivity(root, "ev", "tr", write=False, threads=1)
    for layer in (0, 1):
        score, P, slot, acc = naive.predictivity([naive.stored(tr.acts[("encoder", layer)], "float32")],
                                                 [naive.stored(ev.acts[("encoder", layer)], dtype)],
                                                 [ev.labels])
        got = layer_frame(df, layer)
        np.testing.assert_allclose(got["score"], score, atol=1e-12)
        assert got["slot"].tolist() == [slots[t] for t in slot]
        np.testing.assert_allclose(got["accuracy"], acc, atol=1e-12)


def test_two_stacks(store_factory):
    """An encoder-decoder shape: both stacks are scored, ranked per layer and globally."""
    widths = {"encoder": (8,), "decoder": (8, 6)}
    root = store_factory(widths)
    plants = [("decoder", 1, 0, 4, 3.0, 1)]
    tr = planted(60, SLOTS, seed=81, widths=widths, plants=plants)
    ev = planted(50, SLOTS, seed=82, widths=widths, plants=plants)
    write_stats_run(root, "tr", "train", tr.labels, SLOTS, tr.acts)
    write_periodic_run(root, "ev", "validation", ev.labels, SLOTS, ev.acts, dtype="float16")
    df = predictivity(root, "ev", "tr", scope="global", write=False)
    assert len(df) == 22 and set(df["stack"]) == {"encoder", "decoder"}
    assert (df.iloc[0]["stack"], df.iloc[0]["layer"], df.iloc[0]["neuron"]) == ("decoder", 1, 4)
    only = predictivity(root, "ev", "tr", stacks=["decoder"], write=False)
    assert set(only["stack"]) == {"decoder"} and len(only) == 14
    both = predictivity(root, "ev", "tr", write=False)
    np.testing.assert_array_equal(
        both[both["stack"] == "decoder"].sort_values(["layer", "neuron"])["score"],
        only.sort_values(["layer", "neuron"])["score"])
