"""Storage dtypes: float16 and float32 natively; bfloat16 as its raw 16 bits (HDF5 has no bf16)."""

from __future__ import annotations

import numpy as np

from neurondb.errors import UsageError

STORAGE_DTYPES = ("float16", "bfloat16", "float32")


def check_dtype(name: str) -> str:
    if name not in STORAGE_DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(STORAGE_DTYPES)}, not {name!r}")
    return name


def numpy_storage_dtype(name: str) -> np.dtype:
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
