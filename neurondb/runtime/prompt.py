"""Soft prompts: ``P`` vectors prepended to the input embeddings (SPEC §7).

Accepted sources: a neurondb prompt directory (``neurondb_prompt.json`` +
``prompt.safetensors`` with ``prompt`` ``[P, d_model]`` and optionally a classification
head ``head.weight`` ``[C, d_model]``/``head.bias`` ``[C]``), a PEFT prompt-tuning
directory (``adapter_config.json`` + ``adapter_model.safetensors``), or a tensor file
(``.safetensors``, ``.pt``, ``.npy``) holding ``[P, d_model]``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from neurondb.errors import ExtractError
from neurondb.runtime.prompt_files import PROMPT_JSON, PROMPT_TENSORS  # noqa: F401


@dataclass
class SoftPrompt:
    """``embeddings`` ``[P, d_model]`` float32; ``head_*`` for encoders without an LM head."""

    embeddings: torch.Tensor
    source: str = ""
    meta: dict = field(default_factory=dict)
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def has_head(self) -> bool:
        return self.head_weight is not None

    @property
    def pool(self) -> str:
        """Where the head reads the hidden state: ``mask``, ``first`` or ``mean``."""
        return str(self.meta.get("pool", "mask"))

    @property
    def max_length(self) -> int | None:
        """Token limit of the text part the prompt was tuned with (``hparams.max_length`` in
        its meta), or None for a prompt that does not record one. Extraction, evaluation,
        suppression and transfer default to it, so a prompt sees inputs as long as in tuning."""
        v = (self.meta.get("hparams") or {}).get("max_length")
        return int(v) if v else None

    @property
    def sha256(self) -> str:
        h = hashlib.sha256(self.embeddings.detach().float().cpu().numpy().tobytes())
        if self.head_weight is not None:
            h.update(self.head_weight.detach().float().cpu().numpy().tobytes())
            if self.head_bias is not None:
                h.update(self.head_bias.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    def save(self, directory: str | Path, meta: dict | None = None) -> Path:
        """Write a neurondb prompt directory (bit-exact float32)."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {"prompt": self.embeddings.detach().float().cpu().contiguous()}
        if self.head_weight is not None:
            tensors["head.weight"] = self.head_weight.detach().float().cpu().contiguous()
        if self.head_bias is not None:
            tensors["head.bias"] = self.head_bias.detach().float().cpu().contiguous()
        save_file(tensors, str(d / PROMPT_TENSORS))
        m = dict(self.meta)
        m.update(meta or {})
        m.update({"n_tokens": self.n_tokens, "d_model": self.d_model, "sha256": self.sha256})
        (d / PROMPT_JSON).write_text(json.dumps(m, indent=2, default=str) + "\n")
        return d


def _tensor_file(path: Path) -> torch.Tensor:
    ext = path.suffix.lower()
    if ext == ".safetensors":
        from safetensors.torch import load_file

        t = load_file(str(path))
        key = "prompt" if "prompt" in t else ("prompt_embeddings" if "prompt_embeddings" in t
                                              else next(iter(t)) if len(t) == 1 else None)
        if key is None:
            raise ExtractError(f"{path} holds several tensors ({', '.join(t)}) and none is "
                               "named 'prompt'")
        return t[key]
    if ext in (".pt", ".pth", ".bin"):
        import pickle

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Unsupported global" not in str(e) and "Unsupported class" not in str(e):
                raise ExtractError(f"cannot read the prompt file {path} (not a torch.save "
                                   "file); check it is complete, or use .safetensors") from e
            raise ExtractError(
                f"{path} holds pickled Python objects that neurondb will not load (loading "
                "them could run code); save only the tensor: torch.save(prompt_tensor, path) or "
                "safetensors.torch.save_file({'prompt': t}, 'prompt.safetensors')") from e
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ExtractError(f"cannot read the prompt file {path} ({first}); check it is a "
                               "complete torch.save file of a [P, d_model] tensor") from e
        if isinstance(obj, dict):
            for key in ("prompt", "prompt_embeddings"):
                if key in obj:
                    return obj[key]
            raise ExtractError(f"{path} is a dict without a 'prompt' tensor")
        return obj
    if ext == ".npy":
        return torch.from_numpy(np.load(path))
    raise ExtractError(f"unsupported prompt file {path.name}; use .safetensors, .pt or .npy")


def load_prompt(path: str | Path) -> SoftPrompt:
    """Load a soft prompt from a neurondb/PEFT directory or a tensor file."""
    p = Path(path)
    if not p.exists():
        raise ExtractError(f"prompt {p} does not exist; make one with `neurondb tune`")
    meta: dict = {}
    head_w = head_b = None
    if p.is_dir() and (p / PROMPT_JSON).exists():
        from safetensors.torch import load_file

        meta = json.loads((p / PROMPT_JSON).read_text())
        t = load_file(str(p / PROMPT_TENSORS))
        emb, head_w, head_b = t["prompt"], t.get("head.weight"), t.get("head.bias")
    elif p.is_dir() and (p / "adapter_config.json").exists():
        cfg = json.loads((p / "adapter_config.json").read_text())
        if cfg.get("peft_type") != "PROMPT_TUNING":
            raise ExtractError(f"{p} is a PEFT {cfg.get('peft_type')} adapter; neurondb reads "
                               "PROMPT_TUNING adapters")
        meta = {"peft": cfg, "model": cfg.get("base_model_name_or_path")}
        f = next((p / n for n in ("adapter_model.safetensors", "adapter_model.bin")
                  if (p / n).exists()), None)
        if f is None:
            raise ExtractError(f"{p} has no adapter_model.safetensors")
        emb = _tensor_file(f)
    elif p.is_dir():
        raise ExtractError(f"{p} is neither a neurondb prompt directory ({PROMPT_JSON}) nor a "
                           "PEFT prompt-tuning directory (adapter_config.json)")
    else:
        emb = _tensor_file(p)
    emb = emb.detach().float()
    if emb.dim() == 3 and emb.shape[0] == 1:
        emb = emb[0]
    if emb.dim() != 2:
        raise ExtractError(f"a soft prompt is [P, d_model]; {p} holds shape {tuple(emb.shape)}")
    return SoftPrompt(embeddings=emb, source=str(p), meta=meta,
                      head_weight=None if head_w is None else head_w.float(),
                      head_bias=None if head_b is None else head_b.float())
