"""Per-module-kind channel surgery on FFN projections (cf. Torch-Pruning ``pruner/function.py``).

A projection plays one of two roles for the neurons of its layer:
``"in"`` (it produces ``h``: ``W_in``, ``W_gate``, ``W_up``; neurons are its output channels)
or ``"out"`` (it consumes ``h``: ``W_out``; neurons are its input channels). The weight axis
that indexes neurons comes from :func:`neurondb.arch.adapter.neuron_axis`, which knows that
``nn.Linear`` stores ``[out, in]`` and GPT-2's ``Conv1D`` stores ``[in, out]``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from neurondb.arch.adapter import neuron_axis
from neurondb.errors import PruneError

ROLES = ("in", "out")


def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.contiguous(), requires_grad=like.requires_grad)


class ChannelOps(abc.ABC):
    """Neuron-channel operations for one module kind; subclasses set the width attributes."""

    kind: ClassVar[type[nn.Module]]

    # -- what subclasses define -------------------------------------------------------
    @staticmethod
    @abc.abstractmethod
    def _set_width(module: nn.Module, role: str, width: int) -> None:
        """Record the new width on the module (``in_features``/``nf``, ...)."""

    @staticmethod
    @abc.abstractmethod
    def d_out(module: nn.Module) -> int:
        """Output width of the projection (``d_model`` for an out projection)."""

    # -- generic, via neuron_axis -----------------------------------------------------
    @classmethod
    def n_neurons(cls, module: nn.Module, role: str) -> int:
        return int(module.weight.shape[neuron_axis(module, role)])

    @classmethod
    def keep(cls, module: nn.Module, role: str, idx: torch.Tensor) -> None:
        """Keep only neuron channels ``idx`` (``[k]`` long, in order) of ``module``.

        Role ``in``: weight slices and the bias (indexed by neuron) follow. Role ``out``:
        the bias (indexed by ``d_model``) is untouched.
        """
        w = module.weight
        idx = idx.to(w.device)
        module.weight = _param(w.detach().index_select(neuron_axis(module, role), idx), w)
        if role == "in" and module.bias is not None:
            b = module.bias
            module.bias = _param(b.detach().index_select(0, idx), b)
        cls._set_width(module, role, int(idx.numel()))

    @classmethod
    def resize(cls, module: nn.Module, role: str, width: int) -> None:
        """Keep the first ``width`` neuron channels (the shape a compact checkpoint loads into)."""
        cls.keep(module, role, torch.arange(width, device=module.weight.device))

    @classmethod
    @torch.no_grad()
    def zero(cls, module: nn.Module, role: str, idx: torch.Tensor) -> None:
        """Zero neuron channels ``idx`` in place (and the neuron-indexed bias for role ``in``)."""
        idx = idx.to(module.weight.device)
        module.weight.index_fill_(neuron_axis(module, role), idx, 0.0)
        if role == "in" and module.bias is not None:
            module.bias.index_fill_(0, idx, 0.0)

    @classmethod
    def columns(cls, module: nn.Module, idx: torch.Tensor) -> torch.Tensor:
        """``W_out[:, idx]`` of an out projection in the math convention: ``[d_model, k]``."""
        w = module.weight.detach().index_select(neuron_axis(module, "out"), idx.to(module.weight.device))
        return w if neuron_axis(module, "out") == 1 else w.T

    @classmethod
    @torch.no_grad()
    def add_bias(cls, module: nn.Module, delta: torch.Tensor) -> bool:
        """Add ``delta`` ``[d_out]`` to the output bias, creating a zero bias if there is none.

        Returns True when a bias was created.
        """
        created = module.bias is None
        if created:
            w = module.weight
            module.bias = nn.Parameter(torch.zeros(cls.d_out(module), dtype=w.dtype,
                                                   device=w.device), requires_grad=w.requires_grad)
        module.bias.add_(delta.to(module.bias.dtype).to(module.bias.device))
        return created


class LinearOps(ChannelOps):
    """``nn.Linear``: weight ``[out_features, in_features]``."""

    kind = nn.Linear

    @staticmethod
    def _set_width(module: nn.Module, role: str, width: int) -> None:
        if role == "in":
            module.out_features = width
        else:
            module.in_features = width

    @staticmethod
    def d_out(module: nn.Module) -> int:
        return int(module.weight.shape[0])


class Conv1DOps(ChannelOps):
    """GPT-2 ``Conv1D``: weight ``[nx (in), nf (out)]``, always with a bias ``[nf]``."""

    kind = Conv1D

    @staticmethod
    def _set_width(module: nn.Module, role: str, width: int) -> None:
        if role == "in":
            module.nf = width
        else:
            module.nx = width

    @staticmethod
    def d_out(module: nn.Module) -> int:
        return int(module.weight.shape[1])


OPS: tuple[type[ChannelOps], ...] = (Conv1DOps, LinearOps)


def ops_for(module: nn.Module) -> type[ChannelOps]:
    """The channel operations for ``module``'s kind; a clear error for an unknown kind."""
    for ops in OPS:
        if isinstance(module, ops.kind):
            return ops
    raise PruneError(f"cannot prune a {type(module).__name__} projection; neurondb prunes "
                     "nn.Linear and GPT-2 Conv1D (load the model unquantized)")
