"""The analyses' typed requests (RankRequest, CorrelateRequest, OverlapRequest, MaskRequest,
TopRequest): validated once, frozen, the same result as the keyword form and as the CLI."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.errors import QueryError, UsageError, cli_surface
from neurondb.query import (
    CorrelateRequest,
    MaskRequest,
    OverlapRequest,
    RankRequest,
    TopRequest,
    activated_overlap,
    correlate,
    make_mask,
    predictivity,
    rank,
    read_result,
    top_examples,
)
from neurondb.store import open_store
from neurondb.store.maskfile import read_mask
from neurondb.testing_stores import write_periodic_run

from .conftest import SLOTS, planted

runner = CliRunner()

# (request, fields, the Python argument, the CLI flag or None where no flag sets the field)
REFUSED = [
    (RankRequest, dict(method="magic"), "method", "--method"),
    (RankRequest, dict(), "eval", "--eval"),
    (RankRequest, dict(eval="ev", over_prompts="max"), "over_prompts", "--over-prompts"),
    (RankRequest, dict(eval="ev", over_classes="min"), "over_classes", "--over-classes"),
    (RankRequest, dict(eval="ev", multiclass="pairs"), "multiclass", "--multiclass"),
    (RankRequest, dict(eval="ev", combine_order="sideways"), "combine_order", "--combine-order"),
    (RankRequest, dict(eval="ev", scope="model"), "scope", None),
    (RankRequest, dict(method="attribution"), "runs", "--eval"),
    (RankRequest, dict(method="gradient", runs="ev", token_agg="median"), "token_agg",
     "--token-agg"),
    (RankRequest, dict(method="attribution", runs="ev", abs_when="both"), "abs_when", "--abs"),
    (RankRequest, dict(method="activation", runs="ev", max_examples=0), "max_examples",
     "--examples"),
    (RankRequest, dict(eval="ev", threads=0), "threads", "--threads"),
    (RankRequest, dict(eval="ev", threads=-3), "threads", "--threads"),
    (RankRequest, dict(method="random", token_agg="max"), "token_agg", None),
    (RankRequest, dict(method="attribution", runs="ev", seed=3), "seed", None),
    (RankRequest, dict(eval="ev", runs="ev"), "runs", None),
    (CorrelateRequest, dict(rankings="a,b", fraction=1.5), "fraction", "--top"),
    (CorrelateRequest, dict(rankings="a,b", fraction=0.0), "fraction", "--top"),
    (CorrelateRequest, dict(rankings="a,b", k=0), "k", "--top-k"),
    (CorrelateRequest, dict(rankings=["a", "b"], count_rule="ceil"), "count_rule", "--count-rule"),
    (OverlapRequest, dict(runs="a,b", mode="max"), "mode", "--mode"),
    (OverlapRequest, dict(runs="a,b", groups="abc"), "groups", "--groups"),
    (OverlapRequest, dict(runs="a,b", groups=0), "groups", "--groups"),
    (MaskRequest, dict(ranking="r", fraction=0.0), "fraction", "--fraction"),
    (MaskRequest, dict(ranking="r", fraction=1.5), "fraction", "--fraction"),
    (MaskRequest, dict(ranking="r", count_rule="ceil"), "count_rule", "--count-rule"),
    (MaskRequest, dict(ranking="r", scope="model"), "scope", None),
    (TopRequest, dict(run="ev", layer=0, neuron=1, k=0), "k", "--top-k"),
]


@pytest.mark.parametrize(("cls", "fields", "name", "flag"), REFUSED,
                         ids=[f"{c.__name__}-{n}-{i}" for i, (c, _, n, _f) in enumerate(REFUSED)])
def test_refused_values_name_the_argument_or_the_flag(cls, fields, name, flag):
    with pytest.raises(UsageError) as e:
        cls(**fields)
    msg = str(e.value)
    assert "\n" not in msg and "--" not in msg, msg
    assert re.search(rf"(^|\s){name}(\s|$)", msg), msg
    if flag is not None:
        with cli_surface(), pytest.raises(UsageError) as e:
            cls(**fields)
        assert flag in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_correlate_needs_two_different_rankings():
    with pytest.raises(QueryError, match="at least two"):
        CorrelateRequest(rankings="a")
    with pytest.raises(QueryError, match="repeat"):
        CorrelateRequest(rankings="a, b,a")
    assert CorrelateRequest(rankings=" a,b ").names == ["a", "b"]


@pytest.mark.parametrize("req", [RankRequest(eval="ev"), CorrelateRequest(rankings="a,b"),
                                 OverlapRequest(runs="a,b"), MaskRequest(ranking="r"),
                                 TopRequest(run="ev", layer=0, neuron=1)])
def test_requests_are_frozen(req):
    field = dataclasses.fields(req)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(req, field, "other")


def test_derived_values_are_properties_not_fields():
    assert RankRequest(eval="ev").ranking_scope == "layer"
    assert RankRequest(method="attribution", runs="ev").ranking_scope == "global"
    assert RankRequest(method="random", scope="layer").ranking_scope == "layer"
    assert RankRequest(method="gradient", runs="ev").family == "attribution"
    assert OverlapRequest(runs="a,b", groups="3").group_size == 3
    assert OverlapRequest(runs="a,b").group_size == "all"


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["per_prompt", "per_prompt_slot"], errors="ignore").reset_index(drop=True)


def test_rank_request_equals_keywords_and_the_function(skill_store):
    req = RankRequest(eval="ev", train="tr", write=False)
    before = dataclasses.asdict(req)
    a = rank(skill_store, req)
    b = rank(skill_store, method="predictivity", eval="ev", train="tr", write=False)
    c = predictivity(skill_store, "ev", "tr", write=False)
    pd.testing.assert_frame_equal(_frame(a), _frame(b))
    pd.testing.assert_frame_equal(_frame(a), _frame(c))
    assert dataclasses.asdict(req) == before and req.scope is None   # never written back
    assert (a["scope"] == "layer").all()
    top = a[a["rank"] == 1].set_index("layer")["neuron"]
    assert top[1] == 5 and top[0] == 7                                # the planted neurons
    r1 = rank(skill_store, RankRequest(method="random", seed=3, write=False))
    r2 = rank(skill_store, "random", seed=3, write=False)
    pd.testing.assert_frame_equal(r1, r2)
    with pytest.raises(TypeError, match="not both"):
        rank(skill_store, req, write=False)
    with pytest.raises(TypeError):
        rank(skill_store, MaskRequest(ranking="r"))


def test_other_requests_equal_their_keywords(skill_store, tmp_path):
    root = skill_store.path
    for n, seed in (("P", None), ("R", 1)):
        rank(skill_store, RankRequest(eval="ev", train="tr", name=n) if seed is None
             else RankRequest(method="random", seed=seed, name=n))
    a = correlate(skill_store, CorrelateRequest(rankings="P,R", k=3, write=False))
    b = correlate(skill_store, "P,R", k=3, write=False)
    pd.testing.assert_frame_equal(a.table, b.table)
    m1 = make_mask(skill_store, MaskRequest(ranking="P", fraction=0.125, write=False))
    m2 = make_mask(skill_store, "P", 0.125, write=False)
    pd.testing.assert_frame_equal(m1, m2)
    assert len(m1) == 4
    t1 = top_examples(skill_store, TopRequest(run="ev", layer=1, neuron=5, k=3))
    t2 = top_examples(skill_store, "ev", 1, 5, k=3)
    pd.testing.assert_frame_equal(t1, t2)
    ev = planted(200, SLOTS, seed=2)
    write_periodic_run(root, "ev2", "test", ev.labels, SLOTS, ev.acts)
    st = open_store(root)
    o1 = activated_overlap(st, OverlapRequest(runs="ev,ev2", slot="prompt:1", groups=1,
                                              write=False))
    o2 = activated_overlap(st, "ev,ev2", slot="prompt:1", groups=1, write=False)
    pd.testing.assert_frame_equal(o1.table, o2.table)
    assert len(o1.matrices) == 2


def _cli(*args, code=0):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res.output.strip()


def test_the_cli_builds_the_same_requests(skill_store, tmp_path):
    root = skill_store.path
    _cli("rank", root, "--train", "tr", "--eval", "ev", "--over-classes", "max", "--name", "P")
    want = rank(skill_store, RankRequest(eval="ev", train="tr", over_classes="max", write=False))
    got, meta = read_result(root, "rankings", "P")
    cols = ["stack", "layer", "neuron", "score", "rank", "scope", "slot", "class"]
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True), want[cols])
    assert meta["over_classes"] == "max" and meta["scope"] == "layer"
    _cli("rank", root, "--method", "random", "--seed", "4", "--per-layer", "--name", "R")
    got, _ = read_result(root, "rankings", "R")
    want = rank(skill_store, "random", seed=4, scope="layer", write=False)
    np.testing.assert_array_equal(got["score"], want["score"])
    _cli("mask", root, "-r", "P", "--fraction", "0.25", "--global", "--out", tmp_path / "m.pq")
    table, _ = read_mask(tmp_path / "m.pq")
    want = make_mask(skill_store, MaskRequest(ranking="P", fraction=0.25, scope="global",
                                              write=False))
    assert sorted(zip(table.column("layer").to_pylist(), table.column("neuron").to_pylist())) \
        == sorted(zip(want["layer"], want["neuron"]))
    _cli("correlate", root, "-r", "P,R", "--top", "0.25", "--count-rule", "round", "--name", "c")
    got, meta = read_result(root, "correlations", "c")
    want = correlate(skill_store, CorrelateRequest(rankings="P,R", fraction=0.25,
                                                   count_rule="round", write=False))
    np.testing.assert_allclose(got["spearman"], want.table["spearman"])
    assert list(got["k"]) == list(want.table["k"]) and meta["count_rule"] == "round"


CLI_REFUSED = [
    (["rank", "--over-prompts", "max"], "--over-prompts"),
    (["rank", "--multiclass", "pairs"], "--multiclass must be one of one-vs-rest, subtasks"),
    (["rank", "--combine-order", "sideways"], "--combine-order must be one of classes-first"),
    (["rank", "--method", "attribution", "--token-agg", "median"], "--token-agg"),
    (["rank", "--method", "attribution", "--abs", "both"], "--abs"),
    (["rank", "--method", "gradient", "--examples", "0"], "--examples"),
    (["rank", "--global", "--per-layer"], "--global and --per-layer exclude each other"),
    (["correlate", "-r", "P,G", "--top", "1.5"], "--top must be a fraction in (0, 1]"),
    (["correlate", "-r", "P,G", "-k", "0"], "--top-k must be at least 1"),
    (["correlate", "-r", "P,G", "--count-rule", "ceil"], "--count-rule"),
    (["correlate", "-r", "P,P"], "repeat"),
    (["overlap", "--runs", "ev,tr", "--mode", "max"], "--mode"),
    (["overlap", "--runs", "ev,tr", "--groups", "abc"], "--groups"),
    (["overlap", "--runs", "ev,tr", "--groups", "0"], "--groups must be at least 1"),
    (["mask", "-r", "P", "--fraction", "0"], "--fraction must be in (0, 1], not 0.0"),
    (["mask", "-r", "P", "--count-rule", "ceil"], "--count-rule"),
    (["top", "--run", "ev", "--layer", "0", "--neuron", "0", "-k", "0"], "--top-k"),
]


@pytest.mark.parametrize(("args", "words"), CLI_REFUSED, ids=[" ".join(a[:1] + a[-2:])
                                                             for a, _ in CLI_REFUSED])
def test_the_cli_refuses_in_one_line_naming_the_flag(skill_store, args, words):
    line = _cli(args[0], skill_store.path, *args[1:], code=2)
    assert line.startswith("error: ") and "\n" not in line and words in line, line


def test_requests_are_a_light_import():
    code = ("import sys, neurondb\n"
            "from neurondb.query import RankRequest, MaskRequest\n"
            "RankRequest(eval='ev'); MaskRequest(ranking='r')\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'pandas', 'scipy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out, out


def test_a_method_function_takes_only_its_own_requests(skill_store):
    from neurondb.query import attribution, random_ranking

    with pytest.raises(TypeError, match="method='predictivity'"):
        predictivity(skill_store, RankRequest(method="random"))
    with pytest.raises(TypeError, match="method='random'"):
        random_ranking(skill_store, RankRequest(eval="ev"))
    with pytest.raises(TypeError, match="attribution, activation, gradient"):
        attribution(skill_store, RankRequest(method="random"))
    a = random_ranking(skill_store, RankRequest(method="random", seed=5, write=False))
    b = random_ranking(skill_store, seed=5, write=False)
    pd.testing.assert_frame_equal(a, b)
    c = predictivity(skill_store, RankRequest(eval="ev", train="tr", write=False))
    assert (c["scope"] == "layer").all()
