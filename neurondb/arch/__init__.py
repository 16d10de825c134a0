"""Architecture adapters: the only place that names a model's module paths.

Every other part of neurondb asks an :class:`ArchAdapter` where a model's FFN blocks are
(``adapter_for(model)``) and never spells a module path itself.
"""

from neurondb.arch.adapter import (
    ArchAdapter,
    FFNLayout,
    ModelShape,
    StackLayout,
    UnsupportedModelError,
)
from neurondb.arch.registry import adapter_for, register, supported_families

__all__ = [
    "ArchAdapter",
    "FFNLayout",
    "ModelShape",
    "StackLayout",
    "UnsupportedModelError",
    "adapter_for",
    "register",
    "supported_families",
]
