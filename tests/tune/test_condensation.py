"""Knowledge condensation: re-tune a prompt on a pruned export, starting from the full model's
prompt, with accuracy before and after."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.intervene import NeuronMask, export_pruned, load_pruned
from neurondb.intervene.scoring import prepare_scorer
from neurondb.intervene.search import export_prompt
from neurondb.runtime.prompt import PROMPT_JSON, load_prompt
from neurondb.testing_planted import NEG_NEURON, POS_NEURON, build_planted
from neurondb.tune.errors import TuneError
from neurondb.tune.train import tune_prompt

runner = CliRunner()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """The planted model with its two planted neurons pruned away, and the prompt copied in."""
    root = tmp_path_factory.mktemp("condense")
    planted = build_planted(root, n_train=80)
    sc = prepare_scorer(None, str(planted.data_dir), prompt=planted.prompt_dir, device="cpu")
    mask = NeuronMask({("encoder", 0): [POS_NEURON, NEG_NEURON]})
    out = root / "export"
    export_pruned(sc.lm.model, sc.lm.tokenizer, mask, out)
    export_prompt(load_prompt(planted.prompt_dir), out, load_pruned(out))
    return planted, out


def test_retuning_on_the_export_recovers_accuracy(pruned, tmp_path):
    planted, export = pruned
    before = prepare_scorer(str(export), str(planted.data_dir), prompt=export / "prompt",
                            device="cpu").evaluate().accuracy
    assert before == 0.5  # the label was carried by the pruned neurons only
    dirs = tune_prompt(str(export), str(planted.data_dir), tmp_path / "condensed",
                       from_prompt=export / "prompt", seeds=(1,), epochs=20, patience=0,
                       lr=0.05, head_lr=0.05, device="cpu", progress=False)
    meta = json.loads((dirs[0] / PROMPT_JSON).read_text())
    assert meta["from_prompt"]["eval_accuracy_before"] == before
    assert meta["n_tokens"] == 1 and meta["pool"] == "mean"  # kept from the start prompt
    after = meta["best_eval_accuracy"]
    # layer 1 still reads the sentiment direction g: a re-tuned head finds it
    assert after >= 0.8 > before
    # the condensed prompt drives the pruned model to the same accuracy when reloaded
    sc = prepare_scorer(str(export), str(planted.data_dir), prompt=dirs[0], device="cpu")
    assert sc.evaluate().accuracy == after


def test_the_starting_prompt_is_kept_when_no_epoch_beats_it(pruned, tmp_path):
    """Re-tuning the planted model's own (perfect) prompt on training labels that are flipped:
    every epoch scores worse on the true validation labels, so the start is kept as epoch 0,
    bit for bit."""
    import pandas as pd

    planted, _ = pruned
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for split in ("train", "validation"):
        (src,) = planted.data_dir.glob(f"{split}.*")
        df = pd.read_parquet(src) if src.suffix == ".parquet" else pd.read_json(src, lines=True)
        if split == "train":
            df["label"] = 1 - df["label"]
        df.to_parquet(flipped / f"{split}.parquet", index=False)
    start = load_prompt(planted.prompt_dir)
    dirs = tune_prompt(str(planted.model_dir), str(flipped), tmp_path / "kept",
                       from_prompt=planted.prompt_dir, seeds=(1,), epochs=3, patience=0,
                       lr=0.5, head_lr=0.5, device="cpu", progress=False)
    meta = json.loads((dirs[0] / PROMPT_JSON).read_text())
    assert meta["best_epoch"] == 0 and meta["epochs_run"] == 3
    assert meta["best_eval_accuracy"] == meta["from_prompt"]["eval_accuracy_before"] == 1.0
    assert load_prompt(dirs[0]).sha256 == start.sha256


def test_cli_reports_before_and_after(pruned, tmp_path):
    planted, export = pruned
    r = runner.invoke(app, ["tune", str(export), str(planted.data_dir), "--from-prompt",
                            str(export / "prompt"), "--out", str(tmp_path / "c"), "--seeds", "1",
                            "--epochs", "2", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert "val acc before" in r.output and "0.5000" in r.output


def test_from_prompt_of_another_width(pruned, tmp_path, tiny_path):
    planted, _ = pruned
    other = tiny_path("bert", "base")  # same width (32): a width mismatch needs another model
    import torch

    from neurondb.runtime.prompt import SoftPrompt

    wide = SoftPrompt(torch.zeros(2, 64), meta={"pool": "mean"},
                      head_weight=torch.zeros(2, 64), head_bias=torch.zeros(2))
    wide.save(tmp_path / "wide")
    with pytest.raises(TuneError, match="made for another model"):
        tune_prompt(str(other), str(planted.data_dir), tmp_path / "x",
                    from_prompt=tmp_path / "wide", seeds=(1,), epochs=1, device="cpu",
                    progress=False)
