"""Export directory behaviour: refusal of an existing directory, provenance record, extra files,
the keep-one rule for an emptied layer, other heads loading the same export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from neurondb.arch import adapter_for
from neurondb.intervene import ExportError, NeuronMask, export_pruned, load_pruned, replace_neurons
from neurondb.intervene.export import file_sha256

from .helpers import inputs, layer_mask, logits, make


def test_existing_directory_is_refused_unless_overwrite(tmp_path):
    model, tok, shape = make("bert")
    mask = layer_mask(shape)
    out = tmp_path / "exp"
    export_pruned(model, tok, mask, out)
    with pytest.raises(ExportError, match="exists; pass overwrite=True") as e:
        export_pruned(model, tok, mask, out)
    assert "\n" not in str(e.value)
    small = NeuronMask({("encoder", 0): [1]}, mask.meta)
    export_pruned(model, tok, small, out, overwrite=True)
    assert json.loads((out / "neurondb_prune.json").read_text())["prune"]["n_removed"] == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    for ow in (True, False):  # without overwrite it is not told to pass overwrite
        with pytest.raises(ExportError, match="exists and is not a neurondb export directory; "
                                              "choose another out_dir"):
            export_pruned(model, tok, mask, other, overwrite=ow)
        with pytest.raises(ExportError, match="is not a neurondb export"):
            export_pruned(model, tok, mask, other / "thesis.tex", overwrite=ow)
    assert (other / "thesis.tex").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial dirs


def test_record_names_mask_ranking_widths_counts_and_copies_extras(tmp_path):
    model, tok, shape = make("bert", head="cls")
    mask = layer_mask(shape)
    mask_file = mask.to_file(tmp_path / "mask.parquet")
    prompt = tmp_path / "prompt.safetensors"
    prompt.write_bytes(b"soft prompt bytes")
    head_dir = tmp_path / "head"
    head_dir.mkdir()
    (head_dir / "head.pt").write_bytes(b"head")
    out = tmp_path / "exp"
    rep = export_pruned(model, tok, mask, out, mask_file=mask_file,
                        provenance={"ratio": 0.3, "store": "s", "ranking": "test"},
                        extra_files=[prompt, head_dir])
    rec = json.loads((out / "neurondb_prune.json").read_text())
    assert rec["mask"]["source_sha256"] == file_sha256(mask_file)
    assert rec["mask"]["sha256"] == file_sha256(out / "neurondb_mask.parquet")
    assert rec["mask"]["provenance"]["ranking"] == "test"
    assert rec["provenance"] == {"ratio": 0.3, "store": "s", "ranking": "test"}
    assert rec["prune"]["widths_before"] == {"encoder": [48, 48]}
    assert rec["prune"]["widths_after"] == {"encoder": [43, 30]}
    assert rec["prune"]["params_before"] - rec["prune"]["params_after"] == 65 * len(mask)
    assert rec["weights_file_bytes"] == (out / "model.safetensors").stat().st_size
    assert sorted(rec["extra_files"]) == ["head", "prompt.safetensors"]
    assert (out / "prompt.safetensors").read_bytes() == b"soft prompt bytes"
    assert (out / "head" / "head.pt").exists()
    assert NeuronMask.from_file(out / "neurondb_mask.parquet").sha256() == mask.sha256()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    assert cfg["neurondb_prune"]["widths"] == {"encoder": [43, 30]}
    assert cfg["auto_map"]["AutoModelForSequenceClassification"].endswith(
        "NeurondbPrunedBertForSequenceClassification")
    assert rep.auto_map == cfg["auto_map"]
    # the caller's model is untouched (inplace=False)
    assert adapter_for(model).shape(model).widths == {"encoder": (48, 48)}
    # the tokenizer came along
    tok2 = transformers.AutoTokenizer.from_pretrained(out)
    assert tok2("the movie")["input_ids"] == tok("the movie")["input_ids"]


def test_emptied_layer_keeps_one_neuron_and_warns(tmp_path):
    model, tok, shape = make("llama")
    mask = NeuronMask({("decoder", 0): np.arange(48), ("decoder", 1): [4, 5]})
    kw = inputs("llama")
    with pytest.warns(UserWarning, match="every neuron of decoder layer 0 .keeps neuron 7."):
        rep = export_pruned(model, tok, mask, tmp_path / "e",
                            priority={("decoder", 0): np.array([7, 1])})
    assert rep.prune.widths_after == {"decoder": [1, 46]}
    assert rep.prune.kept_one == [("decoder", 0, 7)]
    effective = NeuronMask({("decoder", 0): np.setdiff1d(np.arange(48), [7]),
                            ("decoder", 1): [4, 5]})
    assert rep.prune.removed.sha256() == effective.sha256()
    with replace_neurons(model, effective):
        want = logits(model, kw)
    torch.testing.assert_close(logits(load_pruned(tmp_path / "e"), kw), want, atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="keeps neuron 0"):
        rep = export_pruned(model, tok, mask, tmp_path / "f")
    assert rep.prune.kept_one == [("decoder", 0, 0)]


def test_other_heads_load_the_same_export(tmp_path):
    model, tok, shape = make("t5")
    mask = layer_mask(shape)
    out = tmp_path / "t5exp"
    export_pruned(model, tok, mask, out)
    kw = inputs("t5")
    enc_in = {"input_ids": kw["input_ids"]}
    with replace_neurons(model, mask), torch.no_grad():
        want = model.encoder(**enc_in).last_hidden_state
    enc = transformers.AutoModelForTextEncoding.from_pretrained(out, trust_remote_code=True)
    assert type(enc).__name__ == "NeurondbPrunedT5EncoderModel"
    base = load_pruned(out, transformers.T5EncoderModel)
    for m in (enc.eval(), base):
        with torch.no_grad():
            got = m(**enc_in).last_hidden_state
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_loading_a_compact_export_without_its_code_fails_loudly(tmp_path):
    model, tok, shape = make("gpt2")
    export_pruned(model, tok, layer_mask(shape), tmp_path / "g")
    with pytest.raises(RuntimeError, match="mismatch"):
        transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "g")
