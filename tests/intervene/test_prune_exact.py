"""Exactness of structured pruning per family (SPEC §6): pruned == zeroed, before and after
export/reload; parameter count and file size drop by what the widths predict."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers

from neurondb.arch import adapter_for
from neurondb.intervene import (
    PruneError,
    export_pruned,
    load_pruned,
    parameter_count,
    prune_model,
    replace_neurons,
)
from neurondb.intervene.export import MODELING_FILE

from .helpers import (
    FAMILIES,
    expected_removed_params,
    inputs,
    layer_mask,
    logits,
    make,
    removed_counts,
    safetensors_data_bytes,
)

ATOL = 1e-5
AUTO_FOR = {"t5": "AutoModelForSeq2SeqLM", "t5-gated": "AutoModelForSeq2SeqLM",
            "bert": "AutoModelForMaskedLM", "roberta": "AutoModelForMaskedLM",
            "electra": "AutoModelForMaskedLM", "distilbert": "AutoModelForMaskedLM"}


def _auto(family: str):
    return getattr(transformers, AUTO_FOR.get(family, "AutoModelForCausalLM"))


@pytest.mark.parametrize("family", FAMILIES)
def test_compact_prune_equals_zeroing_and_reloads(family, tmp_path):
    model, tok, shape = make(family)
    mask = layer_mask(shape)
    kw = inputs(family)
    full = logits(model, kw)
    with replace_neurons(model, mask, mode="zero"):
        zeroed = logits(model, kw)
    assert (full - zeroed).abs().max() > 1e-3  # the mask matters: the check below can fail

    pruned = copy.deepcopy(model)
    report = prune_model(pruned, mask)
    widths = adapter_for(pruned).shape(pruned).widths
    for s, ws in widths.items():
        assert list(ws) == [48 - removed_counts(s, la) for la in range(len(ws))]
        assert len(set(ws)) == len(ws)  # per-layer different widths
    torch.testing.assert_close(logits(pruned, kw), zeroed, atol=ATOL, rtol=0)
    removed = expected_removed_params(family, mask)
    assert parameter_count(model) - parameter_count(pruned) == removed
    assert report.params_before - report.params_after == removed

    out = tmp_path / f"compact-{family}"
    rep = export_pruned(model, tok, mask, out)
    assert (out / MODELING_FILE).exists() and (out / "neurondb_prune.json").exists()
    via_remote = _auto(family).from_pretrained(out, trust_remote_code=True).eval()
    assert type(via_remote).__name__.startswith("NeurondbPruned")
    via_lib = load_pruned(out)
    for m in (via_remote, via_lib):
        assert adapter_for(m).shape(m).widths == widths
        torch.testing.assert_close(logits(m, kw), zeroed, atol=ATOL, rtol=0)
        assert parameter_count(model) - parameter_count(m) == removed

    full_dir = tmp_path / f"full-{family}"
    model.save_pretrained(full_dir)
    assert safetensors_data_bytes(full_dir) - safetensors_data_bytes(out) == 4 * removed
    assert rep.tensor_bytes_before - rep.tensor_bytes_after == 4 * removed


@pytest.mark.parametrize("family", ["bert", "gpt2", "t5-gated", "llama"])
def test_zeroed_export_loads_in_plain_transformers(family, tmp_path):
    model, tok, shape = make(family)
    mask = layer_mask(shape, seed=1)
    kw = inputs(family, seed=1)
    with replace_neurons(model, mask):
        zeroed = logits(model, kw)
    out = tmp_path / f"zeroed-{family}"
    export_pruned(model, tok, mask, out, format="zeroed")
    assert not (out / MODELING_FILE).exists()
    plain = _auto(family).from_pretrained(out).eval()  # no trust_remote_code
    assert parameter_count(plain) == parameter_count(model)
    torch.testing.assert_close(logits(plain, kw), zeroed, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits(load_pruned(out), kw), zeroed, atol=ATOL, rtol=0)


def _means(shape, seed=2):
    rng = np.random.default_rng(seed)
    return {(s, la): rng.normal(0.3, 0.5, size=d) for s, ws in shape.widths.items()
            for la, d in enumerate(ws)}


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "t5", "t5-gated", "llama"])
def test_mean_compensation_equals_mean_replacement(family, tmp_path):
    model, tok, shape = make(family)
    mask = layer_mask(shape, seed=3)
    means = _means(shape)
    kw = inputs(family, seed=3)
    with replace_neurons(model, mask, mode="mean", means=means):
        replaced = logits(model, kw)
    with replace_neurons(model, mask, mode="zero"):
        assert (logits(model, kw) - replaced).abs().max() > 1e-3  # means matter here
    out = tmp_path / f"meancomp-{family}"
    rep = export_pruned(model, tok, mask, out, means=means)
    n_layers = sum(len(w) for w in shape.widths.values())
    has_bias = family in ("bert", "distilbert", "gpt2")
    assert len(rep.prune.bias_created) == (0 if has_bias else n_layers)
    for m in (load_pruned(out), _auto(family).from_pretrained(out, trust_remote_code=True)):
        torch.testing.assert_close(logits(m.eval(), kw), replaced, atol=ATOL, rtol=0)
    extra = 0 if has_bias else n_layers * 32  # the biases created for T5 / Llama
    removed = expected_removed_params(family, mask)
    assert rep.prune.params_before - rep.prune.params_after == removed - extra


def test_mean_compensation_zeroed_format(tmp_path):
    bert, tok, shape = make("bert")
    mask = layer_mask(shape, seed=4)
    means = _means(shape)
    kw = inputs("bert", seed=4)
    with replace_neurons(bert, mask, mode="mean", means=means):
        replaced = logits(bert, kw)
    export_pruned(bert, tok, mask, tmp_path / "z", format="zeroed", means=means)
    plain = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "z").eval()
    torch.testing.assert_close(logits(plain, kw), replaced, atol=ATOL, rtol=0)

    t5, tok, shape = make("t5")
    with pytest.raises(PruneError, match="fmt='compact'") as e:
        export_pruned(t5, tok, layer_mask(shape), tmp_path / "t5z", format="zeroed",
                      means=_means(shape))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "t5z").exists()
