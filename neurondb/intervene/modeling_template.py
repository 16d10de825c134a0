"""Pruned-FFN model classes, written into an export directory by neurondb.

Each class at the end of this file is a stock Transformers class whose FFN projections are
shrunk in ``__init__`` (before the weights load) to the widths recorded in
``config.neurondb_prune["modules"]``: entries ``{"path", "role", "width", "bias"}`` with
``path`` relative to ``model.base_model``, ``role`` ``"in"`` (the projection produces the
neurons) or ``"out"`` (it consumes them), ``width`` the layer's FFN width, and ``bias``
whether the out projection has a bias (neurondb's mean compensation may add one).
So ``AutoModelFor...from_pretrained(dir, trust_remote_code=True)`` builds every FFN at its
own width. This file needs only torch and transformers.
"""

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


def _find(root, path):
    """The module at a dotted ``path`` under ``root``, or None if this model lacks it."""
    obj = root
    for part in path.split("."):
        try:
            obj = obj[int(part)] if part.lstrip("-").isdigit() else getattr(obj, part)
        except (AttributeError, IndexError, TypeError):
            return None
    return obj


def _resize(module, role, width, bias):
    """Keep the first ``width`` neuron channels (weights are overwritten by the checkpoint)."""
    conv = isinstance(module, Conv1D)  # weight [in, out]; nn.Linear: [out, in]
    axis = (1 if conv else 0) if role == "in" else (0 if conv else 1)
    w = module.weight
    module.weight = nn.Parameter(w.detach().narrow(axis, 0, width).clone(),
                                 requires_grad=w.requires_grad)
    if role == "in":
        if module.bias is not None:
            b = module.bias
            module.bias = nn.Parameter(b.detach().narrow(0, 0, width).clone(),
                                       requires_grad=b.requires_grad)
        if conv:
            module.nf = width
        else:
            module.out_features = width
    else:
        if conv:
            module.nx = width
        else:
            module.in_features = width
        if bias and module.bias is None:
            n_out = w.shape[1] if conv else w.shape[0]
            module.bias = nn.Parameter(torch.zeros(n_out, dtype=w.dtype, device=w.device),
                                       requires_grad=w.requires_grad)


def shrink_ffn(model, spec):
    """Shrink ``model``'s FFN projections to the widths in ``spec`` (``config.neurondb_prune``).

    Entries whose module this model lacks (e.g. decoder entries in an encoder-only head)
    are skipped.
    """
    root = model.base_model
    for entry in (spec or {}).get("modules", []):
        module = _find(root, entry["path"])
        if module is not None:
            _resize(module, entry["role"], int(entry["width"]), bool(entry.get("bias", False)))
    return model


# ---- classes generated at export time follow ----
