"""The one batch iterator: examples in a given order (by default longest first), cut into
batches of ``batch_size`` and encoded one batch at a time, so memory is bounded by a batch.

Extraction, evaluation (and so suppression, the pruning search and transfer) and prompt
tuning all form their batches here, so the same examples make the same batches everywhere
and an extraction's stored logits equal an evaluation's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from neurondb.runtime.encode import Batch, Encoder


def longest_first(lengths: np.ndarray) -> np.ndarray:
    """``[n]`` example indices, longest first (stable: ties keep the data's order)."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def iter_batches(encoder: Encoder, texts: Sequence[list[str]], order: np.ndarray | None = None,
                 batch_size: int = 32) -> Iterator[tuple[np.ndarray, Batch]]:
    """Yield ``(ids, batch)``: ``ids`` int64 ``[B]`` indices into ``texts`` (the example ids)
    and their encoded :class:`~neurondb.runtime.encode.Batch`. ``order``: the examples to
    visit, in visiting order (default: all of them, longest first)."""
    if order is None:
        order = longest_first(encoder.lengths(texts))
    for start in range(0, len(order), batch_size):
        ids = np.asarray(order[start:start + batch_size])
        yield ids, encoder.encode(ids, [texts[i] for i in ids])
