"""The adapter registry and the built-in families (SPEC §1 table)."""

from __future__ import annotations

from typing import Any

from neurondb.arch.adapter import ArchAdapter, FFNLayout, StackLayout, UnsupportedModelError

_REGISTRY: dict[str, ArchAdapter] = {}


def register(adapter: ArchAdapter) -> ArchAdapter:
    """Add an adapter; its ``model_types`` must not be claimed by another family."""
    for mt in adapter.model_types:
        for other in _REGISTRY.values():
            if mt in other.model_types and other.family != adapter.family:
                raise ValueError(f"model_type {mt!r} is already covered by '{other.family}'")
    _REGISTRY[adapter.family] = adapter
    return adapter


def supported_families() -> dict[str, tuple[str, ...]]:
    """Family name -> the ``config.model_type`` values it covers."""
    return {a.family: a.model_types for a in _REGISTRY.values()}


def _model_type(obj: Any) -> str | None:
    config = getattr(obj, "config", obj)
    return getattr(config, "model_type", None)


def adapter_for(model_or_config: Any) -> ArchAdapter:
    """The adapter for a model or its config; a clear error for an unknown family."""
    mt = _model_type(model_or_config)
    for a in _REGISTRY.values():
        if mt in a.model_types:
            return a
    fams = "; ".join(f"{f} ({', '.join(m)})" for f, m in supported_families().items())
    raise UnsupportedModelError(
        f"no neurondb adapter knows the FFN of model_type {mt!r}; supported families: {fams}. "
        "Add one with neurondb.arch.register(ArchAdapter(...))"
    )


register(ArchAdapter(
    family="bert",
    model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie", "mpnet"),
    stacks=(StackLayout("encoder", "encoder.layer"),),
    ffn_variants=(FFNLayout(out_proj="output.dense", in_projs=("intermediate.dense",)),),
    description="BERT-style encoders: h = GELU(intermediate.dense(x)), out = output.dense(h)",
))

register(ArchAdapter(
    family="distilbert",
    model_types=("distilbert",),
    stacks=(StackLayout("encoder", "transformer.layer"),),
    ffn_variants=(FFNLayout(out_proj="ffn.lin2", in_projs=("ffn.lin1",)),),
    description="DistilBERT: h = GELU(ffn.lin1(x)), out = ffn.lin2(h)",
))

register(ArchAdapter(
    family="gpt2",
    model_types=("gpt2",),
    stacks=(StackLayout("decoder", "h"),),
    ffn_variants=(FFNLayout(out_proj="mlp.c_proj", in_projs=("mlp.c_fc",)),),
    description="GPT-2: Conv1D projections whose weights are stored transposed ([in, out])",
))

register(ArchAdapter(
    family="t5",
    model_types=("t5", "mt5", "umt5"),
    stacks=(StackLayout("encoder", "encoder.block"), StackLayout("decoder", "decoder.block")),
    ffn_variants=(
        FFNLayout(out_proj="layer.-1.DenseReluDense.wo",
                  in_projs=("layer.-1.DenseReluDense.wi_0", "layer.-1.DenseReluDense.wi_1"),
                  gated=True),
        FFNLayout(out_proj="layer.-1.DenseReluDense.wo",
                  in_projs=("layer.-1.DenseReluDense.wi",)),
    ),
    description="T5: encoder and decoder stacks; dense (wi) or gated (wi_0, wi_1) FFN",
))

register(ArchAdapter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2",
                 "granite", "smollm3"),
    stacks=(StackLayout("decoder", "layers"),),
    ffn_variants=(FFNLayout(out_proj="mlp.down_proj", in_projs=("mlp.gate_proj", "mlp.up_proj"),
                            gated=True),),
    description="Llama-style gated MLP: h = act(gate_proj(x)) * up_proj(x), out = down_proj(h)",
))
