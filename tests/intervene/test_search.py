"""Ratio search (SPEC §6) and the evaluation of the exported pruned model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app
from neurondb.intervene import PruneError, mask_from_ranking
from neurondb.intervene.scoring import prepare_scorer
from neurondb.intervene.search import (
    evaluate_export,
    prune_with_search,
    pruning_mask,
    ratio_grid,
    score_pruned_by_zeroing,
    search_ratio,
    speedups,
)
from neurondb.query.results import write_result
from neurondb.testing_planted import NEG_NEURON, POS_NEURON, build_planted

runner = CliRunner()
N = 96  # neurons of the planted model: 2 layers x 48


def _ranking(pos_rank: int) -> pd.DataFrame:
    """A global ranking with the planted neurons at ranks ``pos_rank`` and ``pos_rank + 1``."""
    others = [("encoder", la, n) for la in (0, 1) for n in range(48)
              if not (la == 0 and n in (POS_NEURON, NEG_NEURON))]
    order = others[:pos_rank - 1] + [("encoder", 0, POS_NEURON), ("encoder", 0, NEG_NEURON)]
    order += others[pos_rank - 1:]
    df = pd.DataFrame(order, columns=["stack", "layer", "neuron"])
    df["rank"] = np.arange(1, len(df) + 1)
    df["score"] = -df["rank"].astype(float)
    return df


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted(tmp_path_factory.mktemp("planted-search"))


@pytest.fixture(scope="module")
def scorer(planted):
    return prepare_scorer(None, str(planted.data_dir), prompt=planted.prompt_dir, device="cpu")


@pytest.fixture(scope="module")
def store(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("search-store") / "store"
    neurondb.extract(str(planted.model_dir), str(planted.data_dir), out,
                     prompt=str(planted.prompt_dir), split="validation", stats_split="train",
                     progress=False, device="cpu")
    with neurondb.open(out) as st:
        write_result(st, "rankings", "mid", _ranking(40), {"method": "planted-mid"})
        write_result(st, "rankings", "last", _ranking(95), {"method": "planted-last"})
    return out


def test_grid():
    g = ratio_grid(0.05)
    assert g[0] == 0.05 and g[-1] == 0.95 and len(g) == 19
    assert ratio_grid(0.25) == [0.25, 0.5, 0.75]
    with pytest.raises(PruneError, match="grid=0.0 must lie"):
        ratio_grid(0.0)


@pytest.mark.parametrize("pos_rank", [2, 40, 70, 95])
def test_binary_search_equals_brute_force(scorer, pos_rank):
    """The planted neurons are pruned once the ratio reaches them: accuracy is 1.0 before,
    0.5 after. The search must find the last grid ratio before, in about five evaluations."""
    df = _ranking(pos_rank)
    brute = {r: score_pruned_by_zeroing(scorer, pruning_mask(df, r, scorer))
             for r in ratio_grid()}
    ok = [r for r, a in brute.items() if a >= 1.0 - 0.01]
    expected = max(ok) if ok else None
    # the keep rule: the planted pair survives while floor(r * 96 + 0.5) <= 96 - (pos_rank + 1)
    assert expected == max((r for r in ratio_grid() if np.floor(r * N + 0.5) <= N - pos_rank - 1),
                           default=None)
    logged = []
    res = search_ratio(scorer, df, margin=0.01, log=lambda *a: logged.append(a))
    assert res.chosen_ratio == expected
    assert res.baseline_accuracy == 1.0
    t = res.table
    assert len(t) - 1 <= 5 and len(logged) == len(t)
    for r in t[t.step > 0].itertuples():  # every logged evaluation is the true accuracy
        assert r.accuracy == brute[r.ratio]
        assert r.within_margin == (r.accuracy >= 0.99)
    if expected is not None:
        assert t[t.chosen].ratio.tolist() == [expected]
        raw = mask_from_ranking(df, expected, scorer.shape())
        assert len(raw) == int(np.floor(expected * N + 0.5))
        emptied = sum(v.size == 48 for v in raw.neurons.values())  # keep-one rule
        assert len(res.mask) == len(raw) - emptied
        assert all(v.size < 48 for v in res.mask.neurons.values())
    else:
        assert not t.chosen.any()


def test_bad_margin(scorer):
    with pytest.raises(PruneError, match="margin=-0.1 must lie"):
        search_ratio(scorer, _ranking(2), margin=-0.1)


def test_cli_search_exports_reloads_and_evaluates(planted, store, tmp_path):
    out = tmp_path / "pruned"
    r = runner.invoke(app, ["prune", str(planted.model_dir), "--store", str(store),
                            "--ranking", "mid", "--search", "--margin", "0.01", "--data",
                            str(planted.data_dir), "--prompt", str(planted.prompt_dir),
                            "--out", str(out), "--device", "cpu", "--latency-batch", "1,8"])
    assert r.exit_code == 0, r.output
    assert "evaluation 0: ratio 0.00" in r.output and "chosen ratio 0.55" in r.output
    # no silent stretch after the search: export, reload, scoring and timing each say so
    for step in ("exporting the model pruned at ratio 0.55", "loading the export",
                 "scoring the full and the pruned model", "timing full and pruned at batch "
                 "size 1", "at batch size 8"):
        assert step in r.output, step
    search = pd.read_parquet(store / "results" / "pruning" / "prune_mid.parquet")
    assert search.chosen.sum() == 1 and search[search.chosen].ratio.iloc[0] == 0.55
    assert (store / "results" / "pruning" / "prune_mid.png").stat().st_size > 5000
    ev = pd.read_parquet(store / "results" / "pruned_eval" / "prune_mid.parquet")
    assert set(ev.model) == {"full", "pruned"} and set(ev.batch_size) == {1, 8}
    assert (ev[ev.model == "pruned"].accuracy == 1.0).all()
    full_p = int(ev[ev.model == "full"].parameters.iloc[0])
    pruned_p = int(ev[ev.model == "pruned"].parameters.iloc[0])
    rec = json.loads((out / "neurondb_prune.json").read_text())
    widths = rec["prune"]["widths_after"]["encoder"]
    # 53 lowest-ranked = all of layer 1 and 5 of layer 0: layer 1 keeps its best neuron
    assert widths == [48 - 5, 1]
    n_removed = N - sum(widths)
    # each removed BERT neuron takes one row of W_in (32) + its bias + one column of W_out (32)
    assert full_p - pruned_p == n_removed * (32 + 1 + 32)
    assert json.loads(ev.params.iloc[0])["chosen_ratio"] == 0.55
    # the export reloads with the prompt copied in and re-keyed: extract accepts it
    assert rec["provenance"]["ranking"] == "mid" and rec["mask"]["provenance"]["kept_one"] == [
        ["encoder", 1, int(_ranking(40).query("layer == 1")["neuron"].iloc[0])]]
    sc = prepare_scorer(str(out), str(planted.data_dir), prompt=out / "prompt", device="cpu")
    assert sc.evaluate().accuracy == 1.0
    st2 = tmp_path / "pruned-store"
    neurondb.extract(str(out), str(planted.data_dir), st2, prompt=str(out / "prompt"),
                     progress=False, device="cpu")
    with neurondb.open(st2) as s:
        assert list(s.shape_of(s.runs()[0].run).widths["encoder"]) == widths
    # a pruned export given where the full model's shape is needed: one line
    r = runner.invoke(app, ["suppress", str(out), "--data", str(planted.data_dir), "--store",
                            str(store), "--ranking", "mid", "--prompt", str(out / "prompt"),
                            "-q"])
    assert r.exit_code != 0 and "is a pruned export" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_search_without_acceptable_ratio(planted, store, tmp_path):
    r = runner.invoke(app, ["prune", str(planted.model_dir), "--store", str(store),
                            "--ranking", "last", "--search", "--data", str(planted.data_dir),
                            "--prompt", str(planted.prompt_dir), "--out",
                            str(tmp_path / "none"), "--device", "cpu"])
    assert r.exit_code != 0
    assert "no ratio on the 0.05 grid keeps accuracy within 0.01" in r.output
    assert not (tmp_path / "none").exists()
    t = pd.read_parquet(store / "results" / "pruning" / "prune_last.parquet")
    assert (t[t.step > 0].accuracy == 0.5).all() and not t.chosen.any()


@pytest.mark.parametrize("args, message", [
    (["--ratio", "0.3"], "--search chooses the ratio itself"),
    (["--margin", "1.5"], "--margin"),
    (["--grid", "0.7"], "--grid"),
])
def test_cli_search_bad_input(planted, store, tmp_path, args, message):
    r = runner.invoke(app, ["prune", str(planted.model_dir), "--store", str(store),
                            "--ranking", "mid", "--search", "--data", str(planted.data_dir),
                            "--prompt", str(planted.prompt_dir), "--out",
                            str(tmp_path / "x"), "--device", "cpu", *args])
    assert r.exit_code != 0 and message in r.output, r.output
    assert not (tmp_path / "x").exists()


def test_cli_search_needs_data(planted, store, tmp_path):
    r = runner.invoke(app, ["prune", str(planted.model_dir), "--store", str(store),
                            "--ranking", "mid", "--search", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--data DATA" in r.output


def test_evaluate_export_times_both_models(planted, scorer, tmp_path):
    from neurondb.intervene import export_pruned

    mask = pruning_mask(_ranking(2), 0.5, scorer)
    export_pruned(scorer.lm.model, scorer.lm.tokenizer, mask, tmp_path / "e")
    ev = evaluate_export(scorer, tmp_path / "e", 0.5, batch_sizes=(4,), repeats=2)
    assert ev.model.tolist() == ["full", "pruned"]
    assert (ev.latency_ms > 0).all() and (ev.accuracy == 1.0).all()
    sp = speedups(ev)
    assert sp[4] == pytest.approx(ev.latency_ms.iloc[0] / ev.latency_ms.iloc[1])
    assert ev.file_bytes.iloc[1] < ev.file_bytes.iloc[0]


def test_no_acceptable_ratio_is_its_own_error(scorer, tmp_path):
    """Callers (the demo) tell "no ratio fits" from other pruning errors by its type."""
    from neurondb.intervene.errors import NoAcceptableRatioError

    with pytest.raises(NoAcceptableRatioError, match="no ratio on the 0.05 grid") as e:
        prune_with_search(scorer, _ranking(95), tmp_path / "none", margin=0.01)
    assert isinstance(e.value, PruneError) and not (tmp_path / "none").exists()
