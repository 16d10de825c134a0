"""SPEC §1: the captured h, passed through the output projection, reproduces the FFN block's
output; gradients equal torch.autograd's; T5 captures both stacks."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import ACT2FN

from neurondb.arch import adapter_for, supported_families
from neurondb.runtime.hooks import FFNCapture
from neurondb.testing import TINY_FAMILIES, tiny_config, tiny_model

#: the registry's families, each with the tiny configurations of its model types
BY_FAMILY = {fam: [t for t in TINY_FAMILIES if adapter_for(tiny_config(t)).family == fam]
             for fam in supported_families()}
FAMILIES = [t for fam in BY_FAMILY for t in BY_FAMILY[fam]]


def test_every_registered_family_is_tested():
    """A family added to the adapter registry without a tiny model fails here."""
    assert all(BY_FAMILY.values()), [f for f, ts in BY_FAMILY.items() if not ts]
TEXTS = ["the movie was great and the story was good", "a dull film"]


def _inputs(model, tok):
    enc = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    enc.pop("token_type_ids", None) if model.config.model_type == "distilbert" else None
    if model.config.is_encoder_decoder:
        enc["decoder_input_ids"] = torch.zeros(len(TEXTS), 2, dtype=torch.long)
    return enc


def _selection(model, enc, cap, adapter):
    B, T = enc["input_ids"].shape
    b = torch.arange(B).repeat_interleave(T)
    t = torch.arange(T).repeat(B)
    cap.select(adapter.stacks[0].name, b, t)
    sel = {adapter.stacks[0].name: (b, t)}
    if model.config.is_encoder_decoder:
        bd, td = torch.arange(B).repeat_interleave(2), torch.arange(2).repeat(B)
        cap.select("decoder", bd, td)
        sel["decoder"] = (bd, td)
    return sel


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_h_reproduces_ffn_output(family):
    model, tok = tiny_model(family)
    adapter = adapter_for(model)
    enc = _inputs(model, tok)
    outs: dict = {}
    ins: dict = {}
    handles = []
    for stack, layer, out_proj, in_projs in adapter.iter_ffn(model):
        handles.append(out_proj.register_forward_hook(
            lambda m, i, o, key=(stack, layer): outs.__setitem__(key, o.detach())))
        handles.append(in_projs[0].register_forward_hook(
            lambda m, i, o, key=(stack, layer): ins.__setitem__(key, o.detach())))
    with FFNCapture(model, adapter) as cap, torch.no_grad():
        sel = _selection(model, enc, cap, adapter)
        model(**enc)
    for h in handles:
        h.remove()
    expected_keys = {(s.name, i) for s in adapter.stacks for i in range(2)}
    assert set(cap.acts) == expected_keys  # T5: encoder and decoder both captured
    for (stack, layer), h in cap.acts.items():
        b, t = sel[stack]
        out_proj = adapter.out_proj(model, stack, layer)
        assert h.shape == (len(b), adapter.shape(model).d_ff(stack, layer))
        assert h.abs().sum() > 0
        with torch.no_grad():
            torch.testing.assert_close(out_proj(h), outs[(stack, layer)][b, t], atol=1e-6, rtol=1e-5)
        if family in ("bert", "roberta", "electra", "gpt2"):
            # for dense FFNs h = act(W_in x + b_in): where the reference code hooks
            act_name = getattr(model.config, "hidden_act", None) or model.config.activation_function
            torch.testing.assert_close(h, ACT2FN[act_name](ins[(stack, layer)][b, t]),
                                       atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2", "t5-gated", "llama"])
def test_gradients_match_autograd(family):
    model, tok = tiny_model(family)
    adapter = adapter_for(model)
    enc = _inputs(model, tok)
    emb = model.get_input_embeddings()(enc.pop("input_ids")).detach().requires_grad_(True)
    full: dict = {}

    def keep(key, m, args):
        full[key] = args[0]

    handles = [op.register_forward_pre_hook(lambda m, a, key=(s, la): keep(key, m, a))
               for s, la, op, _ in adapter.iter_ffn(model)]
    with FFNCapture(model, adapter, grad=True) as cap:
        sel = _selection(model, {"input_ids": torch.zeros(emb.shape[:2])}, cap, adapter)
        out = model(inputs_embeds=emb, **enc)
        F = out.logits[:, -1, 7].sum()
        hs = [full[k] for k in sorted(full)]
        ref = torch.autograd.grad(F, hs, retain_graph=True)
        F.backward()
    for h in handles:
        h.remove()
    for key, g_ref in zip(sorted(full), ref):
        b, t = sel[key[0]]
        torch.testing.assert_close(cap.grads[key], g_ref[b, t], atol=1e-7, rtol=1e-5)
        assert g_ref.abs().sum() > 0


def test_unknown_family_names_supported_ones():
    from transformers import OPTConfig, OPTForCausalLM

    from neurondb.arch import UnsupportedModelError

    m = OPTForCausalLM(OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                 num_attention_heads=2, vocab_size=50, word_embed_proj_dim=16))
    with pytest.raises(UnsupportedModelError) as e:
        adapter_for(m)
    msg = str(e.value)
    assert "'opt'" in msg and "bert" in msg and "llama" in msg and "gpt2" in msg and "t5" in msg
    assert "\n" not in msg


def test_conv1d_neuron_axis_is_transposed():
    from neurondb.arch.adapter import neuron_axis

    model, _ = tiny_model("gpt2")
    a = adapter_for(model)
    out_proj = a.out_proj(model, "decoder", 0)
    in_proj = a.in_projs(model, "decoder", 0)[0]
    assert out_proj.weight.shape[neuron_axis(out_proj, "out")] == 48
    assert in_proj.weight.shape[neuron_axis(in_proj, "in")] == 48
    bert, _ = tiny_model("bert")
    ob = adapter_for(bert).out_proj(bert, "encoder", 0)
    assert neuron_axis(ob, "out") == 1 and ob.weight.shape[1] == 48
