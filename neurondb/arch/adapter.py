"""The declarative adapter type: where a family keeps its FFN blocks, and how to slice them.

Neuron ``(stack, layer, i)`` is coordinate ``i`` of ``h``, the input of the FFN output
projection (SPEC §1). An adapter names, per stack, the ``ModuleList`` of layers and, inside
a layer, the output projection and the input projection(s) whose output rows are neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from neurondb.arch.shape import ModelShape  # noqa: F401  (re-exported: the shape lives there)
from neurondb.errors import UsageError


class UnsupportedModelError(UsageError):
    """Raised for a model whose FFN no adapter knows."""


@dataclass(frozen=True)
class FFNLayout:
    """Module paths inside one transformer layer.

    ``out_proj``: the FFN output projection; its input is ``h`` ``[batch, tokens, d_ff]``.
    ``in_projs``: projections whose outputs are indexed by neuron (``W_in``; or ``W_gate``
    and ``W_up`` for a gated FFN). Paths are dotted; integers index module lists (``-1`` too).
    """

    out_proj: str
    in_projs: tuple[str, ...]
    gated: bool = False


@dataclass(frozen=True)
class StackLayout:
    """One stack of layers: its name (``encoder`` or ``decoder``) and the path of its layers."""

    name: str
    layers: str


def get_path(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted module path; integer parts index a ``ModuleList`` (negative allowed)."""
    obj: object = root
    for part in path.split("."):
        if part.lstrip("-").isdigit():
            obj = obj[int(part)]  # type: ignore[index]
        else:
            obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def has_path(root: nn.Module, path: str) -> bool:
    try:
        get_path(root, path)
    except (AttributeError, IndexError, TypeError):
        return False
    return True


def proj_in_features(module: nn.Module) -> int:
    """Input width of a Linear or a GPT-2 ``Conv1D`` (whose weight is ``[in, out]``)."""
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0])
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    raise UnsupportedModelError(f"unsupported projection type {type(module).__name__}")


def neuron_axis(module: nn.Module, role: str) -> int:
    """Axis of ``module.weight`` that indexes neurons.

    ``role`` is ``"in"`` (the projection produces neurons) or ``"out"`` (it consumes them).
    ``nn.Linear`` stores ``[out, in]``; ``Conv1D`` stores ``[in, out]`` (transposed).
    """
    conv = isinstance(module, Conv1D)
    if role == "in":
        return 1 if conv else 0
    if role == "out":
        return 0 if conv else 1
    raise ValueError(f"role must be 'in' or 'out', not {role!r}")


@dataclass(frozen=True)
class ArchAdapter:
    """A model family: which ``config.model_type`` values it covers and where its FFNs are.

    ``ffn_variants`` are tried in order on the first layer; the first whose modules all
    exist is used (T5 dense ``wi`` vs gated ``wi_0``/``wi_1``).
    """

    family: str
    model_types: tuple[str, ...]
    stacks: tuple[StackLayout, ...]
    ffn_variants: tuple[FFNLayout, ...]
    description: str = ""
    extra: dict = field(default_factory=dict)

    # -- locating -----------------------------------------------------------------
    def _root_for(self, model: nn.Module) -> nn.Module:
        """The module from which stack paths resolve (the model or its ``base_model``)."""
        first = self.stacks[0].layers
        if has_path(model, first):
            return model
        base = getattr(model, "base_model", None)
        if base is not None and base is not model and has_path(base, first):
            return base
        raise UnsupportedModelError(
            f"{type(model).__name__} is a '{self.family}' model by its config, but has no "
            f"'{first}' layers; neurondb supports the stock Hugging Face module layout"
        )

    def stack(self, name: str) -> StackLayout:
        for s in self.stacks:
            if s.name == name:
                return s
        names = ", ".join(s.name for s in self.stacks)
        raise KeyError(f"'{self.family}' models have no stack {name!r} (stacks: {names})")

    def layers(self, model: nn.Module, stack: str) -> nn.ModuleList:
        return get_path(self._root_for(model), self.stack(stack).layers)  # type: ignore[return-value]

    def ffn_layout(self, model: nn.Module, stack: str) -> FFNLayout:
        layer0 = self.layers(model, stack)[0]
        for v in self.ffn_variants:
            if has_path(layer0, v.out_proj) and all(has_path(layer0, p) for p in v.in_projs):
                return v
        raise UnsupportedModelError(
            f"no known FFN layout in the '{stack}' layers of this '{self.family}' model"
        )

    def out_proj(self, model: nn.Module, stack: str, layer: int) -> nn.Module:
        """The FFN output projection of ``(stack, layer)``; its input is the neuron vector h."""
        return get_path(self.layers(model, stack)[layer], self.ffn_layout(model, stack).out_proj)

    def in_projs(self, model: nn.Module, stack: str, layer: int) -> list[nn.Module]:
        """The projection(s) whose output coordinates are the neurons of ``(stack, layer)``."""
        lay = self.layers(model, stack)[layer]
        return [get_path(lay, p) for p in self.ffn_layout(model, stack).in_projs]

    def ffn_paths(self, model: nn.Module, stack: str, layer: int) -> tuple[str, tuple[str, ...]]:
        """Fully qualified names (as in ``model.named_modules()``) of out and in projections."""
        names = {id(m): n for n, m in model.named_modules()}
        out = names[id(self.out_proj(model, stack, layer))]
        ins = tuple(names[id(m)] for m in self.in_projs(model, stack, layer))
        return out, ins

    def shape(self, model: nn.Module) -> ModelShape:
        widths = {}
        for s in self.stacks:
            n = len(self.layers(model, s.name))
            widths[s.name] = tuple(
                proj_in_features(self.out_proj(model, s.name, i)) for i in range(n)
            )
        emb = model.get_input_embeddings()
        return ModelShape(family=self.family, d_model=int(emb.weight.shape[1]), widths=widths)

    def iter_ffn(self, model: nn.Module):
        """Yield ``(stack, layer, out_proj, in_projs)`` for every FFN block of the model."""
        for s in self.stacks:
            for i in range(len(self.layers(model, s.name))):
                yield s.name, i, self.out_proj(model, s.name, i), self.in_projs(model, s.name, i)

    def is_gated(self, model: nn.Module, stack: str) -> bool:
        return self.ffn_layout(model, stack).gated


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
