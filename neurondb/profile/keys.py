"""One int64 key per top/bottom-K entry, so that ``topk`` on keys is exact and deterministic.

The order of entries is: value (descending for ``top``, ascending for ``bottom``), then
``(example_id, position)`` ascending. A float32 value is mapped to an int32 that sorts like the
float (``-0.0`` is made ``+0.0`` first, so the two zeros tie as floats do); the token is
``tok = example_id * n_positions + position`` (``< 2**32``, checked by the caller); the key is
``ordered * 2**32 + (2**32 - 1 - tok)``, so a larger key is a better entry. Bottom keys use the
bitwise complement of the ordered value. Keys are unique per token, so no ties remain.

These functions work on NumPy arrays and on torch tensors alike (only arithmetic, ``where``
and bit views are used).
"""

from __future__ import annotations

import numpy as np

TOKEN_BITS = 32
LOW = 1 << TOKEN_BITS
#: the key of an empty slot (fewer tokens seen than K): below every real key
EMPTY = np.iinfo(np.int64).min
SIGN_FLIP = 0x7FFFFFFF


def max_tokens() -> int:
    """How many ``(example_id, position)`` slots the keys can tell apart (``2**32``)."""
    return LOW


def ordered_from_bits(bits):
    """int32 bit patterns of float32 values -> int32 that sorts like the floats."""
    return bits ^ ((bits >> 31) & SIGN_FLIP)


def bits_from_ordered(ordered):
    """Inverse of :func:`ordered_from_bits` (the map is its own inverse)."""
    return ordered ^ ((ordered >> 31) & SIGN_FLIP)


def make_keys(ordered64, tok64, bottom: bool):
    """int64 keys ``[..]`` from ordered values (int64 holding int32 values) and tokens."""
    hi = (-ordered64 - 1) if bottom else ordered64
    return hi * LOW + (LOW - 1 - tok64)


def split_keys_np(keys: np.ndarray, bottom: bool, n_positions: int):
    """``(value float32, example_id int64, position int32, valid bool)`` of NumPy keys."""
    keys = np.asarray(keys, dtype=np.int64)
    valid = keys != EMPTY
    k = np.where(valid, keys, 0)
    hi = np.floor_divide(k, LOW)
    tok = (LOW - 1) - (k - hi * LOW)
    ordered = (-hi - 1) if bottom else hi
    bits = bits_from_ordered(ordered.astype(np.int32))
    value = bits.view(np.float32)
    return (value, (tok // n_positions).astype(np.int64), (tok % n_positions).astype(np.int32),
            valid)


def keys_np(value: np.ndarray, example_id: np.ndarray, position: np.ndarray, bottom: bool,
            n_positions: int) -> np.ndarray:
    """NumPy keys of decoded entries (what merging shard states uses)."""
    v = np.asarray(value, dtype=np.float32) + np.float32(0.0)
    ordered = ordered_from_bits(v.view(np.int32)).astype(np.int64)
    tok = np.asarray(example_id, np.int64) * int(n_positions) + np.asarray(position, np.int64)
    return make_keys(ordered, tok, bottom)
