"""Exact ``h > base`` on stored bits, without decoding ``h``.

``h`` is stored as float16, bfloat16 or float32; ``base`` is a float64 mean. For ``h`` of a
storage format ``F``, ``h > base`` iff ``h > floor_F(base)`` where ``floor_F`` is the largest
``F`` value ``<= base``. For the 16-bit formats (sign-magnitude, like every IEEE float) the
order of values is an order of bit patterns once each is mapped by ``u ^ M``:

* ``floor_F(base) >= +0``: ``M = 0x8000`` (flip the sign bit: signed order);
* ``floor_F(base) < 0``:  ``M = 0xFFFF`` (negate: reversed unsigned order).

so ``h > base  <=>  (u_h ^ M) > (u_b ^ M)`` as ``uint16``, per ``(slot, neuron)``: two
integer operations per value on half the bytes of float32. ``-0`` thresholds are taken as
``+0`` (``h > -0 <=> h > +0``). NaN activations are outside the contract (the extractor
stores finite values); NaN baselines are rejected by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurondb.errors import UsageError


def floor_float32(base: np.ndarray) -> np.ndarray:
    """Largest float32 ``<= base`` (float64 in), elementwise."""
    b = np.asarray(base, np.float64)
    with np.errstate(over="ignore"):
        f = b.astype(np.float32)
    up = f.astype(np.float64) > b
    f[up] = np.nextafter(f[up], np.float32(-np.inf))
    return f


def floor_float16_bits(base: np.ndarray) -> np.ndarray:
    """Bits (``uint16``) of the largest float16 ``<= base``; ``-0`` becomes ``+0``."""
    b = np.asarray(base, np.float64)
    with np.errstate(over="ignore"):
        f = b.astype(np.float16)
    up = f.astype(np.float64) > b
    f[up] = np.nextafter(f[up], np.float16(-np.inf))
    u = f.view(np.uint16).copy()
    u[u == 0x8000] = 0
    return u


def floor_bfloat16_bits(base: np.ndarray) -> np.ndarray:
    """Bits (``uint16``) of the largest bfloat16 ``<= base``; ``-0`` becomes ``+0``.

    bfloat16 values are float32 values, so ``floor_bf16(base) = floor_bf16(floor_f32(base))``;
    truncating the low 16 bits floors a positive float32 and ceils a negative one, which one
    step away from zero (``+1`` on the magnitude bits) corrects.
    """
    f = floor_float32(base)
    w = f.view(np.uint32)
    hi = (w >> 16).astype(np.uint32)
    neg_inexact = ((w & 0xFFFF) != 0) & ((w >> 31) == 1)
    hi[neg_inexact] += 1
    u = hi.astype(np.uint16)
    u[u == 0x8000] = 0
    return u


@dataclass
class Thresholds:
    """Per ``(slot, neuron)`` comparison operands for one storage dtype.

    16-bit storage: ``mask`` and ``thr`` ``uint16`` ``[S, d]``, ``above = (u ^ mask) > thr``.
    float32 storage: ``mask`` is None and ``thr`` float32 ``[S, d]``, ``above = h > thr``.
    """

    storage: str
    mask: np.ndarray | None
    thr: np.ndarray

    @classmethod
    def from_base(cls, base: np.ndarray, storage: str) -> Thresholds:
        """``base`` float64 ``[S, d]`` -> operands for ``storage``."""
        if storage == "float32":
            return cls(storage, None, floor_float32(base))
        u = _floor_bits(base, storage, f"unknown storage dtype {storage!r}")
        m = np.where(u < 0x8000, np.uint16(0x8000), np.uint16(0xFFFF)).astype(np.uint16)
        return cls(storage, m, (u ^ m).astype(np.uint16))

    def above(self, bits: np.ndarray, slot_rows: np.ndarray) -> np.ndarray:
        """Reference: bool ``[n, d]`` of ``h > base`` for stored ``bits`` ``[n, d]`` whose row
        ``r`` has slot ``slot_rows[r]``. Kernels use the same operands on chunk blocks."""
        if self.mask is None:
            return bits > self.thr[slot_rows]
        return (bits ^ self.mask[slot_rows]) > self.thr[slot_rows]


def _floor_bits(base: np.ndarray, storage: str, not_16bit: str) -> np.ndarray:
    """Bits (``uint16``) of the largest 16-bit ``storage`` value ``<= base``; ``not_16bit``
    is the error for any other storage."""
    if storage == "float16":
        return floor_float16_bits(base)
    if storage == "bfloat16":
        return floor_bfloat16_bits(base)
    raise UsageError(not_16bit)


def _bits_value(u: np.ndarray, storage: str) -> np.ndarray:
    """float64 values of 16-bit storage patterns ``u`` (``uint16``)."""
    u = np.asarray(u, np.uint16)
    if storage == "float16":
        return u.view(np.float16).astype(np.float64)
    return (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _step(u: np.ndarray, up: bool) -> np.ndarray:
    """The next (``up``) or previous 16-bit sign-magnitude pattern in value order."""
    u = np.asarray(u, np.uint16).astype(np.int32)
    neg = u >= 0x8000
    zero = (u & 0x7FFF) == 0
    out = np.where(neg == up, u - 1, u + 1)   # up: +1 on positives, -1 on negatives' magnitude
    out = np.where(zero, 0x0001 if up else 0x8001, out)
    return out.astype(np.uint16)


def storage_bracket(base: np.ndarray, storage: str) -> tuple[np.ndarray, np.ndarray]:
    """The two stored values that can sit on the wrong side of ``base`` after rounding.

    A value ``h`` rounded to the 16-bit ``storage`` lands on the other side of ``base`` than
    the unrounded ``h`` only if it is stored as ``lo = floor_F(base)`` (true ``h`` above) or
    ``hi``, the next ``F`` value above ``lo`` (true ``h`` at or below): the values within one
    storage step (ulp) of the baseline. Returns ``(below, hi)`` float64 ``[S, d]`` with
    ``below`` the ``F`` value under ``lo``, so ``below < h <= hi`` counts exactly the stored
    values in ``{lo, hi}``; both are ``F`` values, so :meth:`Thresholds.from_base` takes
    them exactly. float32 storage has no bracket (raises).
    """
    u = _floor_bits(base, storage,
                    f"storage {storage!r} keeps the model's values; no rounding bracket")
    return _bits_value(_step(u, up=False), storage), _bits_value(_step(u, up=True), storage)
