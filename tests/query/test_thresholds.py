"""``h > base`` on stored bits equals the float comparison, for every 16-bit pattern."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurondb.query.thresholds import (
    Thresholds,
    floor_bfloat16_bits,
    floor_float16_bits,
    floor_float32,
)

from .conftest import prop_settings

EDGE = [0.0, -0.0, 1e-9, -1e-9, 5.960464477539063e-08, -5.960464477539063e-08, 1.0, -1.0,
        0.1, -0.1, 1.5, -1.5, 65504.0, -65504.0, 7e4, -7e4, 1e30, -1e30, 3.0e38, -3.0e38,
        0.33325195, -0.33325195, 1.00048828125, 2.0 ** -14, -(2.0 ** -14)]


def all_values(storage: str) -> tuple[np.ndarray, np.ndarray]:
    """Every non-NaN 16-bit pattern and its value as float64."""
    u = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    if storage == "float16":
        v = u.view(np.float16).astype(np.float64)
    else:
        with np.errstate(invalid="ignore"):
            v = (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    ok = ~np.isnan(v)
    return u[ok], v[ok]


@pytest.mark.parametrize("storage", ["float16", "bfloat16"])
def test_exhaustive_16bit(storage):
    rng = np.random.default_rng(0)
    bases = np.r_[EDGE, rng.standard_normal(40), rng.standard_normal(20) * 1e-5,
                  rng.standard_normal(10) * 1e4]
    u, v = all_values(storage)
    thr = Thresholds.from_base(bases[:, None], storage)
    for j, b in enumerate(bases):
        got = (u ^ thr.mask[j, 0]) > thr.thr[j, 0]
        np.testing.assert_array_equal(got, v > b, err_msg=f"{storage} base {b!r}")


@pytest.mark.parametrize("storage", ["float16", "bfloat16"])
def test_thresholds_at_every_representable_value(storage):
    """A baseline exactly on a stored value: that value is not above it, the next one is."""
    u, v = all_values(storage)
    finite = np.isfinite(v)
    sample = v[finite][::97]
    thr = Thresholds.from_base(sample[:, None], storage)
    above = (u[None, :] ^ thr.mask) > thr.thr
    np.testing.assert_array_equal(above, v[None, :] > sample[:, None])


@prop_settings(300)
@given(st.floats(allow_nan=False, width=64), st.floats(allow_nan=False, width=32))
def test_float32_floor(base, h):
    t = floor_float32(np.array([base]))[0]
    assert (np.float32(h) > t) == (float(np.float32(h)) > base)


@prop_settings(300)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_floors_are_largest_below(base):
    f16 = floor_float16_bits(np.array([base]))[0:1].view(np.float16)[0]
    assert float(f16) <= base
    with np.errstate(over="ignore"):
        nxt = np.nextafter(f16, np.float16(np.inf))
    assert float(nxt) > base or f16 == np.float16(np.inf)
    bf = (floor_bfloat16_bits(np.array([base])).astype(np.uint32) << 16).view(np.float32)[0]
    assert float(bf) <= base
