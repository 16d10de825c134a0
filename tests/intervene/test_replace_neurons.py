"""replace_neurons: what the output projection sees under each mode, at every position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurondb.arch import adapter_for
from neurondb.intervene import MaskShapeError, NeuronMask, PruneError, replace_neurons
from neurondb.runtime.hooks import active_hooks

from .helpers import inputs, logits, make


def _record(model):
    """Pre-hooks registered after replace_neurons' own: they see the replaced h."""
    seen, handles = {}, []
    for stack, layer, out_proj, _ in adapter_for(model).iter_ffn(model):
        def hook(mod, args, key=(stack, layer)):
            seen[key] = args[0].detach().clone()
        handles.append(out_proj.register_forward_pre_hook(hook))
    return seen, handles


def _run(model, kw, mask=None, **opts):
    if mask is None:
        seen, hs = _record(model)
        logits(model, kw)
    else:
        with replace_neurons(model, mask, **opts):
            seen, hs = _record(model)
            logits(model, kw)
    for h in hs:
        h.remove()
    return seen


@pytest.fixture(scope="module")
def t5():
    model, _, shape = make("t5-gated")
    mask = NeuronMask({("encoder", 0): [1, 5, 40], ("decoder", 1): [0, 47]},
                      {"shape": shape.to_dict()})
    return model, shape, mask, inputs("t5-gated")


def _other(h, idx):
    keep = np.setdiff1d(np.arange(h.shape[-1]), idx)
    return h[..., keep]


def test_zero_mode_zeroes_every_position_and_nothing_else(t5):
    model, _, mask, kw = t5
    base = _run(model, kw)
    got = _run(model, kw, mask, mode="zero")
    idx = mask.get("encoder", 0)
    assert base[("encoder", 0)][..., idx].abs().min() > 0
    assert torch.all(got[("encoder", 0)][..., idx] == 0)  # all batch rows, all tokens
    assert torch.equal(_other(got[("encoder", 0)], idx), _other(base[("encoder", 0)], idx))
    assert torch.all(got[("decoder", 1)][..., [0, 47]] == 0)


def test_mean_mode_writes_the_means(t5):
    model, shape, mask, kw = t5
    means = {k: np.linspace(-1, 1, shape.d_ff(*k)) for k in mask}
    got = _run(model, kw, mask, mode="mean", means=means)
    h = got[("decoder", 1)]
    assert torch.allclose(h[..., 0], torch.full_like(h[..., 0], -1.0))
    assert torch.allclose(h[..., 47], torch.full_like(h[..., 47], 1.0))


def test_noise_mode_adds_seeded_gaussian_noise(t5):
    model, _, _, _ = t5
    kw = inputs("t5-gated", batch=8, tokens=40)
    idx = np.arange(0, 48, 2)
    mask = NeuronMask({("encoder", 1): idx})
    base = _run(model, kw)[("encoder", 1)]
    a = _run(model, kw, mask, mode="noise", sigma=0.5, seed=3)[("encoder", 1)]
    b = _run(model, kw, mask, mode="noise", sigma=0.5, seed=3)[("encoder", 1)]
    c = _run(model, kw, mask, mode="noise", sigma=0.5, seed=4)[("encoder", 1)]
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = (a - base)[..., idx]
    assert abs(d.std().item() - 0.5) < 0.03 and abs(d.mean().item()) < 0.03
    assert torch.equal(_other(a, idx), _other(base, idx))


def test_hooks_are_removed_on_exit_and_on_error(t5):
    model, _, mask, kw = t5
    before = logits(model, kw)
    with pytest.raises(RuntimeError, match="boom"):
        with replace_neurons(model, mask):
            assert active_hooks(model) > 0
            raise RuntimeError("boom")
    torch.testing.assert_close(logits(model, kw), before, atol=0, rtol=0)
    assert active_hooks(model) == 0


def test_bad_requests_are_one_line_errors(t5):
    model, _, mask, _ = t5
    with pytest.raises(PruneError, match="mode must be one of"):
        with replace_neurons(model, mask, mode="drop"):
            pass
    with pytest.raises(PruneError, match="needs per-neuron means"):
        with replace_neurons(model, mask, mode="mean"):
            pass
    with pytest.raises(PruneError, match="shape"):
        with replace_neurons(model, mask, mode="mean",
                             means={k: np.zeros(3) for k in mask}):
            pass
    with pytest.raises(MaskShapeError, match="d_ff 48"):
        with replace_neurons(model, NeuronMask({("encoder", 0): [48]})):
            pass
