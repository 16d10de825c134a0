"""Architecture adapters: the only place that names a model's module paths.

Every other part of neurondb asks an :class:`ArchAdapter` where a model's FFN blocks are
(``adapter_for(model)``) and never spells a module path itself.

:class:`ModelShape` needs no torch and is imported at once; the adapters (which import torch
and transformers) are imported on first use, so that reading a store stays light.
"""

from __future__ import annotations

import importlib

from neurondb.arch.shape import ModelShape

_LAZY = {
    "ArchAdapter": "neurondb.arch.adapter",
    "FFNLayout": "neurondb.arch.adapter",
    "StackLayout": "neurondb.arch.adapter",
    "UnsupportedModelError": "neurondb.arch.adapter",
    "adapter_for": "neurondb.arch.registry",
    "register": "neurondb.arch.registry",
    "supported_families": "neurondb.arch.registry",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neurondb.arch' has no attribute {name!r}")


__all__ = ["ModelShape", *_LAZY]
