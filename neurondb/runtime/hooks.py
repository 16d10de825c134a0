"""Hooks that record the neuron vector ``h`` (input of each FFN output projection, SPEC §1)
and its gradient ``dF/dh`` at selected (batch, position) pairs."""

from __future__ import annotations

from functools import partial

import torch

from neurondb.arch.adapter import ArchAdapter


class FFNCapture:
    """Context manager: forward pre-hooks on every FFN output projection.

    Before each forward, call :meth:`select` per stack with index tensors ``b``, ``t``
    ``[n_rows]``; after it, ``acts[(stack, layer)]`` holds ``h[b, t]`` ``[n_rows, d_ff]``
    (on the model's device, detached) and, after backward, ``grads[(stack, layer)]``.
    """

    def __init__(self, model: torch.nn.Module, adapter: ArchAdapter, grad: bool = False):
        self.model = model
        self.adapter = adapter
        self.grad = grad
        self.sel: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.acts: dict[tuple[str, int], torch.Tensor] = {}
        self.grads: dict[tuple[str, int], torch.Tensor] = {}
        self._handles: list = []

    def select(self, stack: str, b: torch.Tensor, t: torch.Tensor) -> None:
        self.sel[stack] = (b, t)

    def clear(self) -> None:
        self.acts.clear()
        self.grads.clear()

    def _store_grad(self, key: tuple[str, int], b: torch.Tensor, t: torch.Tensor,
                    g: torch.Tensor) -> None:
        self.grads[key] = g[b, t].detach()

    def _pre_hook(self, stack: str, layer: int, module, args):
        sel = self.sel.get(stack)
        if sel is None:
            return None
        h = args[0]
        b, t = sel
        key = (stack, layer)
        self.acts[key] = h[b, t].detach()
        if self.grad and h.requires_grad:
            h.register_hook(partial(self._store_grad, key, b, t))
        return None

    def __enter__(self) -> FFNCapture:
        for stack, layer, out_proj, _ in self.adapter.iter_ffn(self.model):
            self._handles.append(
                out_proj.register_forward_pre_hook(partial(self._pre_hook, stack, layer)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
