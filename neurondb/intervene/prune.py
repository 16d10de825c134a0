"""Structured FFN pruning (SPEC §6), in place, for every family the adapters know.

For each ``(stack, layer)`` with removed neurons ``R`` and kept neurons ``K`` (sorted):
rows ``K`` of ``W_in`` (and ``b_in``; ``W_gate`` and ``W_up`` when gated) and columns ``K``
of ``W_out`` are kept; ``b_out`` stays. The result equals the full model with ``R`` zeroed
(:func:`neurondb.intervene.replace_neurons`, mode ``zero``).

Mean compensation (``means`` given): ``b_out += W_out[:, R] @ mean(h[R])``, which equals
mean-replacement suppression. T5 and Llama output projections have no bias: the compact
format **creates** a zero bias for them first (recorded in ``PruneReport.bias_created``); the
zeroed format refuses, since plain Transformers would drop a bias its module lacks.

Emptying a layer: a layer never loses all its neurons. The neuron kept is the layer's
highest-ranked one (``priority``) or, without a ranking, neuron 0; a ``UserWarning`` names
every layer treated so, and ``PruneReport.kept_one`` lists them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from neurondb.arch import adapter_for
from neurondb.arch.channels import ops_for
from neurondb.errors import given
from neurondb.intervene.errors import PruneError
from neurondb.intervene.mask import LayerKey, NeuronMask
from neurondb.intervene.replace import check_means

FORMATS = ("compact", "zeroed")


def parameter_count(model: nn.Module) -> int:
    """Number of distinct parameters (shared/tied tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of the distinct tensors of the state dict (what a safetensors file stores,
    without its JSON header)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in model.state_dict().values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


@dataclass
class PruneReport:
    """What a pruning did. Widths are ``{stack: [d_ff per layer]}``; counts are parameters."""

    family: str
    format: str
    widths_before: dict[str, list[int]]
    widths_after: dict[str, list[int]]
    params_before: int
    params_after: int
    removed: NeuronMask
    kept_one: list[tuple[str, int, int]] = field(default_factory=list)
    mean_compensation: bool = False
    bias_created: list[LayerKey] = field(default_factory=list)

    @property
    def n_removed(self) -> int:
        return len(self.removed)

    @property
    def n_neurons_before(self) -> int:
        return sum(sum(w) for w in self.widths_before.values())

    @property
    def ratio(self) -> float:
        """Fraction of FFN neurons removed."""
        return self.n_removed / max(self.n_neurons_before, 1)

    def to_dict(self) -> dict:
        return {
            "family": self.family, "format": self.format,
            "widths_before": self.widths_before, "widths_after": self.widths_after,
            "params_before": self.params_before, "params_after": self.params_after,
            "n_neurons_before": self.n_neurons_before, "n_removed": self.n_removed,
            "removed_fraction": self.ratio,
            "kept_one": [list(k) for k in self.kept_one],
            "mean_compensation": self.mean_compensation,
            "bias_created": [list(k) for k in self.bias_created],
        }


def means_from_stats(stats) -> dict[LayerKey, np.ndarray]:
    """Per-neuron means ``{(stack, layer): [d_ff] float64}`` from a store's running
    statistics (:class:`neurondb.store.stats.RunningStats`), pooled over its slots
    (count-weighted). They are means over the **captured** positions of that run."""
    out = {}
    for stack, widths in stats.widths.items():
        n = float(np.sum(stats.count[stack]))
        if n <= 0:
            raise PruneError(f"the running statistics hold no rows for stack {stack!r}")
        for layer in range(len(widths)):
            out[(stack, layer)] = stats.sum[(stack, layer)].sum(axis=0) / n
    return out


def _prepare(model: nn.Module, mask: NeuronMask, means, priority, fmt: str):
    if fmt not in FORMATS:
        raise PruneError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    adapter = adapter_for(model)
    shape = adapter.shape(model)
    mask.check_shape(shape)
    if means is not None:
        check_means(means, mask, shape.widths)
    eff, kept_one = mask.ensure_nonempty(shape, priority)
    if kept_one:
        where = ", ".join(f"{s} layer {la} (keeps neuron {n})" for s, la, n in kept_one)
        warnings.warn(f"the mask selects every neuron of {where}; pruning keeps one neuron "
                      "there so that no FFN is empty", UserWarning, stacklevel=3)
    widths_before = {s: list(w) for s, w in shape.widths.items()}
    return adapter, shape, eff, kept_one, widths_before


def _compensate(out_proj: nn.Module, idx: torch.Tensor, mean: np.ndarray) -> bool:
    """``b_out += W_out[:, idx] @ mean[idx]`` (computed in float64); True if a bias was made."""
    ops = ops_for(out_proj)
    cols = ops.columns(out_proj, idx).to(torch.float64)
    m = torch.as_tensor(np.asarray(mean, dtype=np.float64)[idx.cpu().numpy()],
                        device=cols.device)
    return ops.add_bias(out_proj, cols @ m)


def prune_model(model: nn.Module, mask: NeuronMask, *,
                means: Mapping[LayerKey, np.ndarray] | None = None,
                priority: Mapping[LayerKey, np.ndarray] | None = None,
                fmt: str = "compact") -> PruneReport:
    """Remove the mask's neurons from ``model`` in place and return what was done.

    ``fmt="compact"``: shrink the projections (widths may differ per layer).
    ``fmt="zeroed"``: keep full width; zero rows of ``W_in``/``W_gate``/``W_up`` and ``b_in``
    and columns of ``W_out`` (loadable by plain Transformers).
    ``means``: ``{(stack, layer): [d_ff]}``; when given, mean compensation into ``b_out``.
    ``priority``: ``{(stack, layer): neuron indices, most important first}`` for the
    keep-one rule (see the module docstring).
    """
    adapter, shape, eff, kept_one, widths_before = _prepare(model, mask, means, priority, fmt)
    with torch.no_grad():
        return _prune(model, adapter, shape, eff, kept_one, widths_before, means, fmt)


def _prune(model, adapter, shape, eff: NeuronMask, kept_one, widths_before, means,
           fmt: str) -> PruneReport:
    params_before = parameter_count(model)
    if fmt == "zeroed" and means is not None:
        for stack, layer, out_proj, _ in adapter.iter_ffn(model):
            if eff.get(stack, layer).size and getattr(out_proj, "bias", None) is None:
                raise PruneError(
                    f"mean compensation needs an output bias, which {shape.family} {stack} "
                    f"layer {layer} lacks; plain Transformers would drop one, so use "
                    f"{given('fmt', 'compact', '--format')} (it adds the bias) or no mean "
                    "compensation")
    bias_created: list[LayerKey] = []
    keep = eff.kept(shape)
    for stack, layer, out_proj, in_projs in adapter.iter_ffn(model):
        removed = eff.get(stack, layer)
        if not removed.size:
            continue
        dev = out_proj.weight.device
        r_idx = torch.as_tensor(removed, dtype=torch.long, device=dev)
        if means is not None and _compensate(out_proj, r_idx, means[(stack, layer)]):
            bias_created.append((stack, layer))
        if fmt == "zeroed":
            for p in in_projs:
                ops_for(p).zero(p, "in", r_idx)
            ops_for(out_proj).zero(out_proj, "out", r_idx)
        else:
            k_idx = torch.as_tensor(keep[(stack, layer)], dtype=torch.long, device=dev)
            for p in in_projs:
                ops_for(p).keep(p, "in", k_idx)
            ops_for(out_proj).keep(out_proj, "out", k_idx)
    after = adapter.shape(model)
    return PruneReport(
        family=shape.family, format=fmt, widths_before=widths_before,
        widths_after={s: list(w) for s, w in after.widths.items()},
        params_before=params_before, params_after=parameter_count(model), removed=eff,
        kept_one=kept_one, mean_compensation=means is not None, bias_created=bias_created)
