"""One forward pass with an optional soft prompt, and the label logits it yields.

Shared by extraction, suppression evaluation and prompt tuning so that every place runs
the model the same way.
"""

from __future__ import annotations

import torch

from neurondb.errors import UsageError
from neurondb.runtime.encode import Batch
from neurondb.runtime.model import LoadedModel
from neurondb.runtime.prompt import SoftPrompt
from neurondb.runtime.readouts import HeadWeights

GRAD_TARGETS = ("gold", "pred", "loss")


def model_inputs(lm: LoadedModel, batch: Batch, prompt: SoftPrompt | None = None,
                 prompt_embeddings: torch.Tensor | None = None,
                 need_embeds: bool = False) -> dict:
    """Keyword arguments for ``lm.model``: the soft prompt (``[P, d_model]``) is prepended
    in embedding space and the attention mask extended over it."""
    dev = lm.device
    enc = {k: v.to(dev) for k, v in batch.enc.items()}
    pe = prompt_embeddings if prompt_embeddings is not None else (
        prompt.embeddings if prompt is not None else None)
    kw: dict = {}
    if pe is None and not need_embeds:
        kw.update(enc)
    else:
        emb = lm.model.get_input_embeddings()(enc["input_ids"])
        mask = enc["attention_mask"]
        tti = enc.get("token_type_ids")
        if pe is not None:
            B, P = emb.shape[0], pe.shape[0]
            emb = torch.cat([pe.to(dev, emb.dtype).unsqueeze(0).expand(B, -1, -1), emb], dim=1)
            mask = torch.cat([torch.ones(B, P, dtype=mask.dtype, device=dev), mask], dim=1)
            if tti is not None:
                tti = torch.cat([torch.zeros(B, P, dtype=tti.dtype, device=dev), tti], dim=1)
        if need_embeds and not emb.requires_grad:
            emb = emb.detach().requires_grad_(True)
        kw["inputs_embeds"] = emb
        kw["attention_mask"] = mask
        if tti is not None:
            kw["token_type_ids"] = tti
    if lm.is_seq2seq:
        B = enc["input_ids"].shape[0]
        kw["decoder_input_ids"] = torch.full((B, 1), decoder_start_id(lm.model.config),
                                             dtype=torch.long, device=dev)
    return kw


def label_logits(lm: LoadedModel, outputs, batch: Batch, verb_ids: list[int] | None,
                 prompt: SoftPrompt | None = None,
                 head: HeadWeights | None = None) -> torch.Tensor | None:
    """``[B, C]`` float32 logits of the label words/classes (None for a readout without
    labels), as the model's readout strategy reads them; ``head`` defaults to the one saved
    with ``prompt``."""
    if head is None and prompt is not None and prompt.has_head:
        head = HeadWeights(prompt.head_weight, prompt.head_bias, prompt.pool)
    P = prompt.n_tokens if prompt is not None else 0
    return lm.strategy.label_logits(outputs, batch, verb_ids, head, P, lm.device)


def decoder_start_id(config) -> int:
    """The token an encoder-decoder's decoder starts from: ``decoder_start_token_id``, else
    the pad token (T5: both 0). Extraction records it and the forward pass feeds it."""
    start = getattr(config, "decoder_start_token_id", None)
    start = getattr(config, "pad_token_id", None) if start is None else start
    return int(start or 0)


def target_value(logits: torch.Tensor, labels: torch.Tensor, target: str) -> torch.Tensor:
    """The scalar ``F`` per example whose gradient is recorded (SPEC §4), ``[B]``."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    if target == "gold":
        return logits[rows, labels]
    if target == "pred":
        return logits[rows, logits.argmax(-1)]
    if target == "loss":
        return torch.log_softmax(logits, -1)[rows, labels]
    raise UsageError(f"grad target must be one of {', '.join(GRAD_TARGETS)}")
