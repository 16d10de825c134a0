"""Storage dtypes: float16 and float32 natively; bfloat16 as its raw 16 bits (HDF5 has no bf16)."""

from __future__ import annotations

import numpy as np

from neurondb.errors import UsageError, arg

STORAGE_DTYPES = ("float16", "bfloat16", "float32")
COMPACT_DTYPES = ("float16", "bfloat16")
# Positions whose number of captured rows per example is fixed (the soft prompt's P slots and
# one row each for mask/first/last): small enough to keep exact float32 values by default.
SLOT_LIMITED_POSITIONS = ("prompt", "mask", "first", "last")


def default_storage_dtype(positions: list[str] | str | None) -> str:
    """The storage dtype a capture of ``positions`` gets when ``--dtype`` is not given.

    ``float32`` for slot-limited captures (``prompt``, ``mask``, ``first``, ``last``): their rows
    per example are fixed and few, and float32 keeps ``h > base`` (predictivity, SPEC §2)
    identical to the model's own values. ``float16`` (half the bytes) only when ``all``
    positions are captured, where the store grows with every token; predictivity then checks,
    per neuron, how many stored values lie within one float16 step of the baseline and warns
    when that can move an accuracy by more than one example. ``positions``: a list or a comma
    string as ``--positions`` takes it (``None``: the extractor's default ``prompt,mask``).
    """
    if positions is None:
        items: list[str] = ["prompt", "mask"]
    elif isinstance(positions, str):
        items = [p.strip() for p in positions.split(",") if p.strip()]
    else:
        items = [str(p).strip() for p in positions]
    return "float16" if "all" in items else "float32"


def is_compact(name: str) -> bool:
    """True for the 16-bit storage dtypes (values rounded from the model's float32)."""
    return name in COMPACT_DTYPES


def check_dtype(name: str) -> str:
    """``name`` if it is a storage dtype, else a one-line :class:`UsageError`."""
    if name not in STORAGE_DTYPES:
        raise UsageError(f"{arg('dtype')} must be one of {', '.join(STORAGE_DTYPES)}, not {name!r}")
    return name


def numpy_storage_dtype(name: str) -> np.dtype:
    """The NumPy dtype of the stored array (bfloat16 as ``uint16`` bits)."""
    return {"float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4")}[name]


def encode(x, name: str) -> np.ndarray:
    """A float torch tensor (any device) -> host NumPy array in the storage dtype ``name``."""
    import torch  # only extraction needs torch; readers of a store do not

    if name == "bfloat16":
        return x.detach().to(torch.bfloat16).cpu().view(torch.int16).numpy().view(np.uint16)
    return x.detach().to(getattr(torch, name)).cpu().numpy()


def decode(a: np.ndarray, name: str, out: np.ndarray | None = None) -> np.ndarray:
    """Stored array -> float32 (bf16 bits are shifted into the high half of a float32)."""
    if name == "bfloat16":
        wide = a.astype(np.uint32)
        wide <<= 16
        res = wide.view(np.float32)
    else:
        res = a.astype(np.float32, copy=False)
    if out is not None:
        out[...] = res
        return out
    return res
