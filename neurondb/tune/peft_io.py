"""PEFT interop: the initial prompt (PEFT's ``PromptEmbedding``) and a PEFT prompt-tuning
adapter written beside the neurondb files, so ``PeftModel.from_pretrained(model, seed_dir)``
loads the same prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch

from neurondb.errors import arg
from neurondb.runtime.model import LoadedModel
from neurondb.tune.errors import TuneError

INITS = ("vocab", "random")
# PEFT task type per readout: the masked-LM and classifier models keep their own heads, so
# PEFT's feature-extraction wrapper (prepend the prompt, call the model) fits them.
PEFT_TASK_TYPES = {"mlm": "FEATURE_EXTRACTION", "causal": "CAUSAL_LM",
                   "seq2seq": "SEQ_2_SEQ_LM", "classifier": "FEATURE_EXTRACTION"}


def _config(lm: LoadedModel, n_tokens: int, init: str, readout: str | None = None):
    from peft import PromptTuningConfig

    emb = lm.model.get_input_embeddings()
    return PromptTuningConfig(
        task_type=PEFT_TASK_TYPES.get(readout or lm.readout, "FEATURE_EXTRACTION"),
        num_virtual_tokens=n_tokens, token_dim=int(emb.weight.shape[1]),
        num_transformer_submodules=1,
        prompt_tuning_init="SAMPLE_VOCAB" if init == "vocab" else "RANDOM",
        base_model_name_or_path=lm.name)


def init_prompt(lm: LoadedModel, n_tokens: int, init: str = "vocab") -> torch.Tensor:
    """Initial prompt ``[P, d_model]`` float32 on CPU, from the global torch RNG (seed it).

    ``vocab``: embeddings of ``P`` token ids drawn uniformly from the vocabulary (PEFT's
    ``SAMPLE_VOCAB``, the "sampled vocab" init of Lester et al. 2021). ``random``: normal
    with the standard deviation of the model's embedding matrix (Lester et al.'s uniform
    [-0.5, 0.5] is far too large for BERT-scale embeddings).
    """
    if init not in INITS:
        raise TuneError(f"{arg('init')} must be one of {', '.join(INITS)}, not {init!r}")
    if n_tokens < 1:
        raise TuneError(f"{arg('prompt_tokens')} must be at least 1, not {n_tokens}")
    emb = lm.model.get_input_embeddings()
    if init == "vocab":
        from peft import PromptEmbedding

        pe = PromptEmbedding(_config(lm, n_tokens, init), emb)
        return pe.embedding.weight.detach().float().cpu().clone()
    std = float(emb.weight.detach().float().std())
    return torch.randn(n_tokens, int(emb.weight.shape[1])) * std


def write_peft_adapter(directory: str | Path, lm: LoadedModel, embeddings: torch.Tensor,
                       init: str) -> None:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (``prompt_embeddings``
    ``[P, d_model]``) into ``directory``. Only the prompt: a ``head`` readout's head is in
    the neurondb files alone."""
    from safetensors.torch import save_file

    d = Path(directory)
    cfg = _config(lm, int(embeddings.shape[0]), init)
    cfg.inference_mode = True
    cfg.save_pretrained(str(d))
    save_file({"prompt_embeddings": embeddings.detach().float().cpu().contiguous()},
              str(d / "adapter_model.safetensors"))
