"""Suppression: replace selected neurons of ``h`` at every token position (SPEC §5).

A forward pre-hook on each FFN output projection (found through the adapter) rewrites its
input ``h`` ``[..., d_ff]`` before the projection runs, so the definition is the one of
SPEC §1 for every architecture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from neurondb.arch import adapter_for
from neurondb.intervene.errors import PruneError
from neurondb.intervene.mask import LayerKey, NeuronMask
from neurondb.runtime.hooks import FFNHooks

MODES = ("zero", "mean", "noise")


def check_means(means: Mapping[LayerKey, np.ndarray] | None, mask: NeuronMask,
                widths: Mapping[str, tuple[int, ...]]) -> None:
    """Every masked layer needs a ``[d_ff]`` mean vector; raise :class:`PruneError` if not."""
    if means is None:
        raise PruneError("mean replacement needs per-neuron means: pass means={(stack, layer): "
                         "[d_ff] array} (e.g. neurondb.intervene.means_from_stats)")
    for s, la in mask:
        m = means.get((s, la))
        if m is None:
            raise PruneError(f"no mean vector for {s} layer {la}, which the mask selects from")
        d = widths[s][la]
        if np.shape(m) != (d,):
            raise PruneError(f"the mean vector of {s} layer {la} has shape {np.shape(m)}, "
                             f"the layer has d_ff {d}")


class _Replacement:
    """The edit of one layer (an :data:`~neurondb.runtime.hooks.Edit`): ``h[..., idx]``
    replaced by 0, a mean, or ``h + noise``."""

    def __init__(self, idx: np.ndarray, mode: str, mean: np.ndarray | None, sigma: float,
                 seed: int):
        self.idx_np = idx
        self.mode = mode
        self.mean_np = None if mean is None else np.asarray(mean, dtype=np.float64)[idx]
        self.sigma = float(sigma)
        self.seed = int(seed)
        self._idx: dict[torch.device, torch.Tensor] = {}
        self._gen: dict[torch.device, torch.Generator] = {}

    def _index(self, device: torch.device) -> torch.Tensor:
        if device not in self._idx:
            self._idx[device] = torch.as_tensor(self.idx_np, dtype=torch.long, device=device)
        return self._idx[device]

    def replace(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``[..., d_ff]`` -> a new tensor with the selected coordinates replaced."""
        idx = self._index(h.device)
        if self.mode == "zero":
            return h.index_fill(-1, idx, 0.0)
        if self.mode == "mean":
            vals = torch.as_tensor(self.mean_np, dtype=h.dtype, device=h.device)
            return h.index_copy(-1, idx, vals.expand(*h.shape[:-1], idx.numel()).contiguous())
        gen = self._gen.get(h.device)
        if gen is None:
            gen = torch.Generator(device=h.device)
            gen.manual_seed(self.seed)
            self._gen[h.device] = gen
        noise = torch.randn((*h.shape[:-1], idx.numel()), generator=gen, device=h.device,
                            dtype=torch.float32).to(h.dtype) * self.sigma
        return h.index_add(-1, idx, noise)

@contextlib.contextmanager
def replace_neurons(model: nn.Module, mask: NeuronMask, mode: str = "zero",
                    means: Mapping[LayerKey, np.ndarray] | None = None, sigma: float = 0.1,
                    seed: int = 0) -> Iterator[nn.Module]:
    """Run ``model`` with the mask's neurons replaced at **all** token positions.

    ``mode``: ``zero`` (``h_i <- 0``, default), ``mean`` (``h_i <- means[(stack, layer)][i]``,
    ``means`` maps each masked layer to a ``[d_ff]`` array, e.g. training means), or ``noise``
    (``h_i <- h_i + N(0, sigma^2)``; layer ``j`` of the iteration order draws from a
    ``torch.Generator`` seeded with ``seed + j``, so a run is reproducible).

    The hooks are removed on exit, also on error. Yields the model.
    """
    if mode not in MODES:
        raise PruneError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    adapter = adapter_for(model)
    shape = adapter.shape(model)
    mask.check_shape(shape)
    if mode == "mean":
        check_means(means, mask, shape.widths)
    edits = {}
    for j, (stack, layer, _out, _in) in enumerate(adapter.iter_ffn(model)):
        idx = mask.get(stack, layer)
        if idx.size:
            mean = means[(stack, layer)] if mode == "mean" else None
            edits[(stack, layer)] = _Replacement(idx, mode, mean, sigma, seed + j).replace
    with FFNHooks(model, adapter, edit=edits):
        yield model
