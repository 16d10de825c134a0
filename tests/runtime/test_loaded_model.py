"""The notebook-first API: a model object (with its tokenizer) and data in memory are used as
they are, give the same store as names and paths, and are left as they were given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import transformers

import neurondb
from neurondb.errors import ExtractError


def _load(path):
    model = transformers.AutoModelForMaskedLM.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    return model, tok


def _no_reload(monkeypatch):
    """Any model load from disk fails the test: a loaded model must not be reloaded."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded again")

    for cls in (transformers.AutoModelForMaskedLM, transformers.AutoModel,
                transformers.AutoModelForCausalLM, transformers.BertForMaskedLM):
        monkeypatch.setattr(cls, "from_pretrained", refuse)


def _store_arrays(store):
    (info,) = store.runs()
    name = info.run
    ex = store.sql(f"SELECT example_id, label, pred, label_logits FROM examples "
                   f"WHERE run = '{name}' ORDER BY example_id").df()
    acts = {layer: store.activations(layer=layer, run=name) for layer in range(2)}
    rows = store.rows(run=name).to_pandas()[["example_id", "position", "slot"]]
    return ex, acts, rows


def test_loaded_model_tokenizer_and_dataframe_equal_the_by_name_extraction(
        tiny_path, sentiment_dir, tmp_path, monkeypatch):
    path = tiny_path("bert")
    by_name = neurondb.extract(str(path), str(sentiment_dir), tmp_path / "a",
                               split="validation", template="{text} It was {mask}.",
                               verbalizer=["bad", "good"], positions="mask,first",
                               progress=False)
    model, tok = _load(path)
    model.train()  # the caller's state: training mode, trainable weights
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = pq.read_table(sentiment_dir / "validation.parquet").to_pandas()
    assert isinstance(frame, pd.DataFrame)
    _no_reload(monkeypatch)
    in_memory = neurondb.extract(model, frame, tmp_path / "b", tokenizer=tok,
                                 split="validation", template="{text} It was {mask}.",
                                 verbalizer=["bad", "good"], positions="mask,first",
                                 progress=False)
    ea, aa, ra = _store_arrays(by_name)
    eb, ab, rb = _store_arrays(in_memory)
    pd.testing.assert_frame_equal(ea, eb)
    pd.testing.assert_frame_equal(ra.reset_index(drop=True), rb.reset_index(drop=True))
    for layer in aa:
        np.testing.assert_array_equal(aa[layer], ab[layer])
    # left as it was given: training mode, trainable, same weights, same tokenizer padding
    assert model.training and all(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # provenance: the same weights have the same fingerprint either way
    fp = [s.manifest.model.fingerprint for s in (by_name, in_memory)]
    assert fp[0] == fp[1]


def test_arrow_table_and_datasets_dataset_are_data(tiny_path, sentiment_dir, tmp_path):
    import datasets

    table = pq.read_table(sentiment_dir / "validation.parquet")
    kw = dict(split="validation", template="{text} It was {mask}.", verbalizer=["bad", "good"],
              positions="first", progress=False)
    a = neurondb.extract(str(tiny_path("bert")), table, tmp_path / "a", **kw)
    b = neurondb.extract(str(tiny_path("bert")), datasets.Dataset(table), tmp_path / "b", **kw)
    np.testing.assert_array_equal(a.activations(layer=0, run="table-validation"),
                                  b.activations(layer=0, run="dataset-validation"))


def test_in_memory_data_has_no_second_split(tiny_path, sentiment_dir, tmp_path):
    frame = pq.read_table(sentiment_dir / "validation.parquet").to_pandas()
    with pytest.raises(ExtractError, match="in memory has no splits"):
        neurondb.extract(str(tiny_path("bert")), frame, tmp_path / "s", stats_split="train",
                         verbalizer=["bad", "good"], template="{text} It was {mask}.")
    assert not (tmp_path / "s").exists()


def test_not_a_model_object_is_one_line(tiny_path, sentiment_dir, tmp_path):
    with pytest.raises(ExtractError, match="PreTrainedModel"):
        neurondb.extract(object(), str(sentiment_dir), tmp_path / "x")
    with pytest.raises(ExtractError, match="pandas.DataFrame"):
        neurondb.extract(str(tiny_path("bert")), 42, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_tune_and_suppress_on_a_loaded_model_without_reloading(
        tiny_path, sentiment_dir, tmp_path, monkeypatch):
    from neurondb.intervene import NeuronMask
    from neurondb.intervene.suppress import suppress
    from neurondb.tune import tune_prompt

    model, tok = _load(tiny_path("bert"))
    model.train()
    _no_reload(monkeypatch)
    frame = pq.read_table(sentiment_dir / "train.parquet").to_pandas()
    dirs = tune_prompt(model, str(sentiment_dir), tmp_path / "p", tokenizer=tok,
                       template="{text} It was {mask}.", verbalizer=["bad", "good"],
                       prompt_tokens=2, seeds=(1,), epochs=1, progress=False)
    assert (dirs[0] / "prompt.safetensors").exists()
    assert model.training and all(p.requires_grad for p in model.parameters())
    # a DataFrame as the training data (no validation split: the last epoch is kept)
    d2 = tune_prompt(model, frame, tmp_path / "q", tokenizer=tok, eval_split=None,
                     template="{text} It was {mask}.", verbalizer=["bad", "good"],
                     prompt_tokens=2, seeds=(1,), epochs=1, progress=False)
    assert (d2[0] / "prompt.safetensors").exists()
    mask = NeuronMask({("encoder", 0): np.array([0, 1])})
    res = suppress(model, str(sentiment_dir), prompt=dirs[0], mask=mask, seeds=1,
                   progress=False)
    assert set(res.table["selection"]) >= {"none", "mask"}
    assert model.training


def test_adopted_readout_follows_the_object_class(tiny_path):
    from neurondb.runtime.model import adopt_model

    bare = transformers.AutoModel.from_pretrained(tiny_path("bert"))  # no LM head
    tok = transformers.AutoTokenizer.from_pretrained(tiny_path("bert"))
    assert adopt_model(bare, tok).readout == "none"
    mlm, _ = _load(tiny_path("bert"))
    assert adopt_model(mlm, tok).readout == "mlm"
    tok.padding_side = "left"
    lm = adopt_model(mlm, tok)
    assert lm.tokenizer.padding_side == "right" and tok.padding_side == "left"  # a copy


_ = pa  # pyarrow is used through pq


def test_the_package_functions_stay_callable_after_their_modules_load():
    import neurondb.extract.run  # noqa: F401  (importing a submodule must not shadow them)
    import neurondb.tune.train  # noqa: F401

    assert callable(neurondb.extract) and callable(neurondb.tune) and callable(neurondb.suppress)
