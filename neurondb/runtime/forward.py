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
        start = lm.model.config.decoder_start_token_id
        start = lm.model.config.pad_token_id if start is None else start
        B = enc["input_ids"].shape[0]
        kw["decoder_input_ids"] = torch.full((B, 1), int(start), dtype=torch.long, device=dev)
    return kw


def label_logits(lm: LoadedModel, outputs, batch: Batch, verb_ids: list[int] | None,
                 prompt: SoftPrompt | None = None,
                 head: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor | None:
    """``[B, C]`` float32 logits of the label words/classes, or None for ``readout=none``."""
    r = lm.readout
    dev = lm.device
    if r == "none":
        return None
    if r == "classifier":
        return outputs.logits.float()
    if r == "head":
        hs = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        w, b = head if head is not None else (prompt.head_weight, prompt.head_bias)
        pool = prompt.pool if prompt is not None else "mask"
        P = prompt.n_tokens if prompt is not None else 0
        if pool == "mean":
            m = torch.zeros(hs.shape[:2], device=dev, dtype=hs.dtype)
            for i, n in enumerate(batch.lengths):
                m[i, P:P + int(n)] = 1
            vec = (hs * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        else:
            pos = torch.as_tensor(batch.mask_tok_pos if pool == "mask" else
                                  [P] * len(batch.lengths), device=dev)
            if (pos < 0).any():
                raise UsageError("the head reads the <mask> position but an example has none")
            vec = hs[torch.arange(hs.shape[0], device=dev), pos]
        out = vec.float() @ w.to(dev).float().T
        return out + b.to(dev).float() if b is not None else out
    logits = outputs.logits
    ids = torch.as_tensor(verb_ids, device=dev)
    if r == "seq2seq":
        return logits[:, 0, :].index_select(-1, ids).float()
    pos = torch.as_tensor(batch.readout_pos, device=dev)
    rows = torch.arange(logits.shape[0], device=dev)
    return logits[rows, pos].index_select(-1, ids).float()


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
