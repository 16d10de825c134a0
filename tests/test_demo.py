"""The end-to-end demo on a tiny model: every step runs and the summary's figures are the
ones the steps wrote."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from neurondb.demo import DemoConfig, run_demo
from neurondb.intervene.errors import PruneError


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
    for name in ("tune", "extract", "rank", "suppress", "prune", "condense", "report"):
        assert s.seconds[name] >= 0
    store = out / "store"
    sup = pd.read_parquet(store / "results" / "suppression" / "skill.parquet")
    assert sorted(sup.rate.unique()) == [0.0, 0.05, 0.25]
    assert s.suppression[0]["selected"] == sup[(sup.selection == "skill") &
                                               (sup.rate == 0.05)].accuracy.iloc[0]
    search = pd.read_parquet(store / "results" / "pruning" / "skill.parquet")
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
    assert any("evaluation 0" in line for line in said)
    # a second run into the same directory is refused unless --overwrite
    with pytest.raises(PruneError, match="exists and is not empty"):
        run_demo(cfg, say=said.append)
