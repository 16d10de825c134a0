"""Shared helpers of the intervention tests: tiny models, masks and inputs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from neurondb.arch import adapter_for
from neurondb.intervene import NeuronMask
from neurondb.testing import tiny_model

# family -> (number of projections producing h, whether they have a bias,
#            whether the output projection has a bias); from the stock module definitions.
FFN_PARAMS = {
    "bert": (1, True, True), "roberta": (1, True, True), "electra": (1, True, True),
    "distilbert": (1, True, True), "gpt2": (1, True, True),
    "t5": (1, False, False), "t5-gated": (2, False, False),
    "llama": (2, False, False), "mistral": (2, False, False), "qwen2": (2, False, False),
}
FAMILIES = tuple(FFN_PARAMS)
D_MODEL = 32  # tiny_config: hidden size of every family
D_FF = 48


def removed_counts(stack: str, layer: int) -> int:
    """How many neurons the test mask removes: different per layer and stack."""
    return 5 + 13 * layer + (3 if stack == "decoder" else 0)


def make(family: str, head: str = "lm"):
    model, tok = tiny_model(family, head=head)
    return model, tok, adapter_for(model).shape(model)


def layer_mask(shape, seed: int = 0, counts=removed_counts) -> NeuronMask:
    rng = np.random.default_rng(seed)
    neurons = {(s, la): rng.choice(d, size=counts(s, la), replace=False)
               for s, ws in shape.widths.items() for la, d in enumerate(ws)}
    return NeuronMask(neurons, {"shape": shape.to_dict(), "ranking": "test"})


def inputs(family: str, batch: int = 2, tokens: int = 9, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    kw = {"input_ids": torch.randint(7, 60, (batch, tokens), generator=g)}
    if family.startswith("t5"):
        kw["decoder_input_ids"] = torch.randint(7, 60, (batch, 4), generator=g)
    return kw


@torch.no_grad()
def logits(model, kw) -> torch.Tensor:
    out = model(**kw)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def expected_removed_params(family: str, mask: NeuronMask) -> int:
    """Parameters a compact prune removes, from the FFN definition alone."""
    n_in, bias_in, _ = FFN_PARAMS[family]
    per_neuron = n_in * (D_MODEL + int(bias_in)) + D_MODEL
    return per_neuron * len(mask)


def safetensors_data_bytes(directory: Path) -> int:
    """Bytes of tensor data in the safetensors file(s): file size - 8 - JSON header."""
    total = 0
    for p in Path(directory).glob("*.safetensors"):
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            json.loads(f.read(n))
        total += p.stat().st_size - 8 - n
    return total
