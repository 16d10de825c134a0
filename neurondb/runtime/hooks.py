"""The one FFN hook primitive: forward pre-hooks on every FFN output projection (SPEC §1),
whose input ``h`` ``[..., d_ff]`` they can **capture** at selected (batch, position) pairs,
with its gradient ``dF/dh``, and **edit** (replace coordinates before the projection runs).

Extraction captures with it, suppression and the pruning search edit with it; the shape is
baukit's ``TraceDict``: a context manager over named layers that removes its hooks on exit,
also on error.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from functools import partial

import torch

from neurondb.arch import adapter_for
from neurondb.arch.adapter import ArchAdapter

LayerKey = tuple[str, int]
#: model -> how many neurondb hooks are installed on it now (see :func:`active_hooks`)
_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: ``h`` ``[..., d_ff]`` -> the tensor the output projection receives instead
Edit = Callable[[torch.Tensor], torch.Tensor]


class FFNHooks:
    """Context manager: a forward pre-hook on each FFN output projection of ``model``.

    ``edit``: ``{(stack, layer): fn}``; ``fn(h)`` returns the tensor the projection receives
    (the input may come positionally or as a keyword). ``capture``: record ``h`` at the rows
    chosen with :meth:`select` before each forward; after it ``acts[(stack, layer)]`` holds
    ``h[b, t]`` ``[n_rows, d_ff]`` (on the model's device, detached, after any edit) and,
    with ``grad`` and after backward, ``grads[(stack, layer)]``.
    """

    def __init__(self, model: torch.nn.Module, adapter: ArchAdapter | None = None, *,
                 capture: bool = False, grad: bool = False,
                 edit: Mapping[LayerKey, Edit] | None = None):
        self.model = model
        self.adapter = adapter or adapter_for(model)
        self.capture = capture or grad
        self.grad = grad
        self.edit = dict(edit or {})
        self.sel: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.acts: dict[LayerKey, torch.Tensor] = {}
        self.grads: dict[LayerKey, torch.Tensor] = {}
        #: ``consume(key, h, b, t) -> bool``: given each captured layer's whole ``h``
        #: ``[B, T, d_ff]`` first; True means it used the rows itself (nothing is copied
        #: into ``acts``), False that ``h[b, t]`` is stored as usual
        self.consume: Callable[[LayerKey, torch.Tensor, torch.Tensor, torch.Tensor],
                               bool] | None = None
        self._handles: list = []

    def select(self, stack: str, b: torch.Tensor, t: torch.Tensor) -> None:
        """Capture rows ``h[b, t]`` of ``stack`` (index tensors ``[n_rows]``) from now on."""
        self.sel[stack] = (b, t)

    def clear(self) -> None:
        self.acts.clear()
        self.grads.clear()

    def _store_grad(self, key: LayerKey, b: torch.Tensor, t: torch.Tensor,
                    g: torch.Tensor) -> None:
        self.grads[key] = g[b, t].detach()

    def _pre_hook(self, stack: str, layer: int, module, args: tuple, kwargs: dict):
        key = (stack, layer)
        h, put = _input_of(module, args, kwargs)
        fn = self.edit.get(key)
        if fn is not None:
            h = fn(h)
        sel = self.sel.get(stack) if self.capture else None
        if sel is not None:
            b, t = sel
            if self.grad or self.consume is None or not self.consume(key, h.detach(), b, t):
                self.acts[key] = h[b, t].detach()
            if self.grad and h.requires_grad:
                h.register_hook(partial(self._store_grad, key, b, t))
        return put(h) if fn is not None else None

    def __enter__(self) -> FFNHooks:
        try:
            for stack, layer, out_proj, _ in self.adapter.iter_ffn(self.model):
                if self.capture or (stack, layer) in self.edit:
                    self._handles.append(out_proj.register_forward_pre_hook(
                        partial(self._pre_hook, stack, layer), with_kwargs=True))
        except BaseException:
            self.__exit__()
            raise
        _ACTIVE[self.model] = _ACTIVE.get(self.model, 0) + len(self._handles)
        return self

    def __exit__(self, *exc) -> None:
        if self._handles and self.model in _ACTIVE:
            _ACTIVE[self.model] -= len(self._handles)
        for h in self._handles:
            h.remove()
        self._handles.clear()


def active_hooks(model: torch.nn.Module) -> int:
    """How many FFN hooks neurondb has installed on ``model`` right now (0 outside every
    :class:`FFNHooks` context: none is ever left behind)."""
    return int(_ACTIVE.get(model, 0))


def _input_of(module, args: tuple, kwargs: dict):
    """``(h, put)``: the projection's input tensor and a function that returns the
    ``(args, kwargs)`` with ``h`` replaced."""
    if args:
        return args[0], lambda h: ((h, *args[1:]), kwargs)
    for key in ("input", "x", "hidden_states"):
        if key in kwargs:
            return kwargs[key], lambda h, key=key: (args, {**kwargs, key: h})
    raise RuntimeError(f"{type(module).__name__} was called without an input tensor")


def FFNCapture(model: torch.nn.Module, adapter: ArchAdapter | None = None,  # noqa: N802
               grad: bool = False) -> FFNHooks:
    """:class:`FFNHooks` that capture (the name extraction and its tests use)."""
    return FFNHooks(model, adapter, capture=True, grad=grad)
