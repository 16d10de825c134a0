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
