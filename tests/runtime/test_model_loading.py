"""Loading a model by name: weights the checkpoint lacks are the same on every load."""

from __future__ import annotations

import pytest
import torch

import neurondb
from neurondb.errors import ExtractError
from neurondb.runtime.model import load_model
from neurondb.store.manifest import model_fingerprint
from neurondb.testing import save_tiny


@pytest.fixture(scope="module")
def mlm_bert(tmp_path_factory) -> str:
    """A masked-LM checkpoint: loaded as AutoModel (readout none) it has no pooler weights."""
    return str(save_tiny("bert", tmp_path_factory.mktemp("mlm") / "m", head="mlm"))


def test_missing_weights_are_initialised_alike_and_the_rng_is_left_alone(mlm_bert):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = load_model(mlm_bert, readout="none").model
    after = torch.rand(3)
    b = load_model(mlm_bert, readout="none").model
    assert torch.equal(before, after)  # the caller's RNG stream is not moved
    assert model_fingerprint(a) == model_fingerprint(b)
    torch.testing.assert_close(a.pooler.dense.weight, b.pooler.dense.weight)


def test_the_same_command_again_is_complete_not_another_model(mlm_bert, sentiment_dir,
                                                              tmp_path):
    kw = dict(split="train", readout="none", positions="first", progress=False)
    neurondb.extract(mlm_bert, str(sentiment_dir), tmp_path / "s", **kw).close()
    with pytest.raises(ExtractError, match="already exists"):  # not "another model"
        neurondb.extract(mlm_bert, str(sentiment_dir), tmp_path / "s", **kw)


@pytest.mark.parametrize("family,readout,kw", [
    ("bert", "mlm", {}),  # an encoder saved without its MLM head
    ("bert", "classifier", {}),  # no trained classifier
    ("llama", "causal", {"tie_word_embeddings": False}),  # its own lm_head, not saved
])
def test_a_readout_through_a_head_the_checkpoint_lacks_is_refused(tmp_path, sentiment_dir,
                                                                   family, readout, kw):
    """Weights of the readout's head missing from the checkpoint would be random, and so every
    prediction and accuracy: refused in one line naming the fix, nothing written."""
    path = str(save_tiny(family, tmp_path / "m", head="base", **kw))
    with pytest.raises(ExtractError, match=f"has no trained {readout} head: .* use "
                                           "readout='none' for activations only"):
        load_model(path, readout=readout)
    load_model(path, readout="none")  # activations only: fine
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    res = CliRunner().invoke(app, ["extract", path, "--data", str(sentiment_dir), "--split",
                                   "train", "--readout", readout, "--template",
                                   "{text} It was {mask}.", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--readout none for activations only" in res.output
    assert not (tmp_path / "s").exists()


def test_a_checkpoint_with_its_head_loads_for_its_readout(mlm_bert, tmp_path):
    load_model(mlm_bert, readout="mlm")
    load_model(str(save_tiny("gpt2", tmp_path / "g")), readout="causal")
    # a base checkpoint whose LM head is tied to its input embeddings has the head's weights
    load_model(str(save_tiny("llama", tmp_path / "l", head="base", tie_word_embeddings=True)),
               readout="causal")
    load_model(str(save_tiny("t5", tmp_path / "t")), readout="seq2seq")


def test_a_head_checkpoint_read_for_activations_loads_quietly(mlm_bert):
    """Read for activations only, an MLM checkpoint has unexpected head weights and no pooler:
    both expected, so no transformers LOAD REPORT and no warning."""
    import logging
    import warnings

    from neurondb.errors import RandomWeightsWarning

    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RandomWeightsWarning)
            load_model(mlm_bert, readout="none")
    finally:
        logger.removeHandler(handler)
    assert not [r for r in logged if "LOAD REPORT" in r.getMessage()]


def _without(path, key: str) -> None:
    from safetensors.torch import load_file, save_file

    f = f"{path}/model.safetensors"
    weights = load_file(f)
    del weights[key]
    save_file(weights, f, metadata={"format": "pt"})


def test_weights_missing_inside_the_model_are_one_warning_line(tmp_path, sentiment_dir):
    """A checkpoint without an FFN weight loads with it random: the activations after it are
    noise, so it is said, in one line on the CLI (transformers' report table is not shown)."""
    import subprocess
    import sys

    from neurondb.errors import RandomWeightsWarning

    path = save_tiny("bert", tmp_path / "m", head="base")
    key = "encoder.layer.0.intermediate.dense.weight"
    _without(path, key)
    with pytest.warns(RandomWeightsWarning, match=f"{key} not in the checkpoint, initialised "
                                                  "at random"):
        load_model(str(path), readout="none")
    res = subprocess.run(
        [sys.executable, "-c", "from neurondb.cli.app import main; main()", "extract",
         str(path), "--data", str(sentiment_dir), "--split", "train", "--readout", "none",
         "--out", str(tmp_path / "s")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    warned = [ln for ln in lines if ln.startswith("warning: ")]
    assert len(warned) == 1 and key in warned[0], res.stderr
    assert "LOAD REPORT" not in res.stderr and "warnings.warn" not in res.stderr
