"""The end-to-end demo on a tiny model: every step runs and the summary's figures are the
ones the steps wrote."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from neurondb.demo import DemoConfig, run_demo
from neurondb.intervene.errors import NoAcceptableRatioError, PruneError


def test_demo_end_to_end_on_a_tiny_model(tmp_path, tiny_path, sentiment_dir):
    model = str(tiny_path("bert", "base"))
    cfg = DemoConfig(out=tmp_path / "demo", model=model, data=str(sentiment_dir), seeds=(1, 2),
                     prompt_tokens=2, train=24, validation=12, epochs=2, patience=0,
                     rates=(0.05, 0.25), random_seeds=2, condense_epochs=1, device="cpu",
                     progress=False)
    said: list[str] = []
    s = run_demo(cfg, say=said.append)
    out = tmp_path / "demo"
    assert [p["seed"] for p in s.prompts] == [1, 2]
    for name in ("tune", "extract", "rank", "suppress", "attribute", "prune", "condense", "report"):
        assert s.seconds[name] >= 0
    store = out / "store"
    sup = pd.read_parquet(store / "results" / "suppression" / "skill.parquet")
    assert sorted(sup.rate.unique()) == [0.0, 0.05, 0.25]
    assert s.suppression[0]["selected"] == sup[(sup.selection == "skill") &
                                               (sup.rate == 0.05)].accuracy.iloc[0]
    # pruning follows the attribution ranking of the gradient run (Skeleton), global
    attr = pd.read_parquet(store / "results" / "rankings" / "attribution.parquet")
    assert (attr.method == "attribution").all() and (attr.scope == "global").all()
    assert s.attribution["examples"] == cfg.attribution_examples
    cor = pd.read_parquet(store / "results" / "correlations" / "skill-vs-attribution.parquet")
    pair = cor[(cor.a == "skill") & (cor.b == "attribution")]
    assert s.attribution["spearman_vs_skill"] == pytest.approx(pair.spearman.mean())
    search = pd.read_parquet(store / "results" / "pruning" / "attribution.parquet")
    assert s.pruning["ratio"] == search[search.chosen].ratio.iloc[0]
    assert s.pruning["evaluations"] == len(search) - 1
    assert s.pruning["params_pruned"] < s.pruning["params_full"]
    assert (out / "minilm-pruned" / "prompt").is_dir()
    meta = json.loads((out / "condensed" / "seed-1" / "neurondb_prompt.json").read_text())
    assert s.condensation["after"] == meta["best_eval_accuracy"]
    html = (out / "report.html").read_text()
    assert "suppression" in html.lower() and html.count("data:image/png;base64,") >= 3
    saved = json.loads((out / "summary.json").read_text())
    assert saved["pruning"]["ratio"] == s.pruning["ratio"]
    text = (out / "summary.txt").read_text()
    assert "suppression" in text and "pruning: ratio" in text and "condensation" in text
    assert "attribution (pruning ranking" in text
    assert any("evaluation 0" in line for line in said)
    # the duration is said first, then a line per step with the elapsed time
    assert said[0].startswith("neurondb demo:") and "estimated" in said[0]
    assert sum("done in" in line for line in said) == len(s.seconds)
    assert all(line.startswith("== [") for line in said if line.startswith("=="))
    # the findings: one per claim, each with a verdict and its numbers
    from neurondb.findings import DOES_NOT_HOLD, HOLDS, TOO_NOISY

    claims = [f["claim"] for f in s.findings]
    assert len(claims) == 3 and claims[0].startswith("suppressing skill neurons")
    assert all(f["verdict"] in (HOLDS, DOES_NOT_HOLD, TOO_NOISY) for f in s.findings)
    assert saved["findings"] == s.findings and "findings against the papers" in text
    assert "Findings against the papers" in html and "Knowledge condensation" in html
    assert "torch threads" in text and "FFN neurons hold" in text
    assert "load average (1 min)" in text and saved["machine"]["end"]["cores"] >= 1
    # a second run into the same directory is refused unless --overwrite
    with pytest.raises(PruneError, match="exists and is not empty"):
        run_demo(cfg, say=said.append)


def test_demo_reports_a_search_without_acceptable_ratio(tmp_path, tiny_path, sentiment_dir,
                                                        monkeypatch):
    """No ratio within the margin is a finding: the demo says so, skips the export and the
    condensation, and still writes the report and the summary."""
    import neurondb.intervene.search as search

    def no_ratio(*a, **k):
        raise NoAcceptableRatioError("no ratio on the 0.05 grid keeps accuracy within 0.01 of the unpruned "
                         "0.9000; raise --margin or use another ranking")

    monkeypatch.setattr(search, "prune_with_search", no_ratio)
    cfg = DemoConfig(out=tmp_path / "demo", model=str(tiny_path("bert", "base")),
                     data=str(sentiment_dir), seeds=(1,), prompt_tokens=2, train=24,
                     validation=12, epochs=1, patience=0, rates=(0.25,), random_seeds=1,
                     condense_epochs=1, device="cpu", progress=False)
    s = run_demo(cfg, say=lambda _: None)
    assert s.pruning["error"].startswith("no ratio") and not s.condensation
    assert "condense" not in s.seconds and not (tmp_path / "demo" / "condensed").exists()
    assert (tmp_path / "demo" / "report.html").exists()
    assert "pruning: no ratio on the 0.05 grid" in (tmp_path / "demo" / "summary.txt").read_text()


def test_step_timer_never_stays_silent_for_long():
    import time

    from neurondb.demo_timing import StepTimer

    said: list[str] = []
    seconds: dict[str, float] = {}
    timer = StepTimer(seconds, said.append, heartbeat=0.05)
    with timer.step("slow", "a slow step", estimate=75):
        time.sleep(0.3)
    assert said[0] == "== [0:00] a slow step, about 1:15"
    beats = [line for line in said if "slow: still running" in line]
    assert len(beats) >= 3 and said[-1].startswith("   [0:00] slow done in")
    assert 0.3 <= seconds["slow"] < 5


def test_step_timer_refines_the_estimate_at_the_measured_pace():
    from neurondb.demo_timing import StepTimer

    now = [0.0]
    said: list[str] = []
    timer = StepTimer({}, said.append, heartbeat=60, clock_fn=lambda: now[0],
                      estimates={"a": 100.0, "b": 50.0, "c": 30.0})
    with timer.step("a", "step a", 100.0):
        now[0] += 40.0  # this machine: 0.4 of the estimate
    assert said[-1] == "   [0:40] a done in 40 s; the rest about 0:32 at this pace"  # 0.4 x 80
    with timer.step("b", "step b", 50.0):
        now[0] += 50.0  # pace now (40 + 50) / 150 = 0.6
    assert said[-1].endswith("b done in 50 s; the rest about 0:18 at this pace")  # 0.6 x 30
    with timer.step("c", "step c", 30.0):
        now[0] += 1.0
    assert said[-1] == "   [1:31] c done in 1 s"  # nothing left


def test_estimate_follows_the_sizes():
    from neurondb.demo_timing import estimate_seconds

    quick, full = DemoConfig(), DemoConfig.full()
    q, f = estimate_seconds(quick), estimate_seconds(full)
    assert sum(q.values()) <= 180 < sum(f.values())
    one = estimate_seconds(DemoConfig(seeds=(1,)))
    assert one["tune"] < q["tune"] and one["suppress"] == q["suppress"]
    assert "condense" not in estimate_seconds(DemoConfig(condense_epochs=0))
    assert (full.train, full.validation, full.prompt_tokens, full.epochs) == (600, 300, 20, 8)


def test_cli_full_and_size_flags(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import neurondb.demo as demo
    from neurondb.cli.app import app

    got = []

    def fake(cfg, say):
        got.append(cfg)
        return demo.DemoSummary(config={"model": "m", "data": "d", "train": cfg.train,
                                        "validation": cfg.validation,
                                        "prompt_tokens": cfg.prompt_tokens})

    monkeypatch.setattr(demo, "run_demo", fake)
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--full", "--train", "50"])
    assert r.exit_code == 0, r.output
    assert (got[0].train, got[0].validation, got[0].epochs) == (50, 300, 8)
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--rates", "2,10"])
    assert r.exit_code == 0, r.output
    assert got[1].rates == (0.02, 0.10) and got[1].train == DemoConfig().train
