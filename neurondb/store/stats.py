"""Running statistics per (stack, layer, slot, neuron), kept while capturing a split.

For every slot (a captured position class: ``prompt:3``, ``mask``, ...) and neuron:
count, sum, sum of squares, and per-label count and sum, all in float64. This is what the
predictivity baseline needs (SPEC §2 step 1) without storing the split per token.
Merging two accumulators is exact (sums add), which is how shards combine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

from neurondb.store.layout import tensor_key
from neurondb.store.tensors import h5_writing


def segment_sum(ids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the rows of ``x`` ``[n, d]`` per id: ``(unique ids, [n_unique, d] sums)``."""
    if ids.size == 0:
        return ids, x[:0]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return sorted_ids[starts], np.add.reduceat(x[order], starts, axis=0)


class RunningStats:
    """Accumulator. ``widths``: ``{stack: (d_ff per layer)}``; ``n_labels``: label count."""

    def __init__(self, widths: dict[str, tuple[int, ...]], n_labels: int):
        self.widths = {k: tuple(v) for k, v in widths.items()}
        self.n_labels = int(n_labels)
        self.slots: dict[str, list[str]] = {s: [] for s in widths}
        self._slot_index: dict[str, dict[str, int]] = {s: {} for s in widths}
        self.count: dict[str, np.ndarray] = {s: np.zeros(0) for s in widths}
        self.label_count: dict[str, np.ndarray] = {s: np.zeros((self.n_labels, 0)) for s in widths}
        self.sum: dict[tuple[str, int], np.ndarray] = {}
        self.sumsq: dict[tuple[str, int], np.ndarray] = {}
        self.label_sum: dict[tuple[str, int], np.ndarray] = {}
        for s, ws in self.widths.items():
            for layer, d in enumerate(ws):
                self.sum[(s, layer)] = np.zeros((0, d))
                self.sumsq[(s, layer)] = np.zeros((0, d))
                self.label_sum[(s, layer)] = np.zeros((self.n_labels, 0, d))

    def slot_ids(self, stack: str, slots: list[str] | np.ndarray) -> np.ndarray:
        """Indices of ``slots`` for ``stack``, growing the arrays for new slot names."""
        index = self._slot_index[stack]
        new = [s for s in dict.fromkeys(slots) if s not in index]
        if new:
            for s in new:
                index[s] = len(self.slots[stack])
                self.slots[stack].append(s)
            grow = len(new)
            self.count[stack] = np.concatenate([self.count[stack], np.zeros(grow)])
            self.label_count[stack] = np.concatenate(
                [self.label_count[stack], np.zeros((self.n_labels, grow))], axis=1)
            for layer, d in enumerate(self.widths[stack]):
                k = (stack, layer)
                self.sum[k] = np.concatenate([self.sum[k], np.zeros((grow, d))])
                self.sumsq[k] = np.concatenate([self.sumsq[k], np.zeros((grow, d))])
                self.label_sum[k] = np.concatenate(
                    [self.label_sum[k], np.zeros((self.n_labels, grow, d))], axis=1)
        return np.fromiter((index[s] for s in slots), dtype=np.int64, count=len(slots))

    def update_counts(self, stack: str, slot_ids: np.ndarray, labels: np.ndarray) -> None:
        """Count rows once per stack (not per layer). ``labels`` ``[n]`` int (-1: unlabelled)."""
        np.add.at(self.count[stack], slot_ids, 1.0)
        ok = labels >= 0
        np.add.at(self.label_count[stack], (labels[ok], slot_ids[ok]), 1.0)

    def update(self, stack: str, layer: int, slot_ids: np.ndarray, labels: np.ndarray,
               x: np.ndarray) -> None:
        """Add rows ``x`` ``[n, d_ff]`` (any float dtype) with their slot ids and labels."""
        if x.shape[0] == 0:
            return
        k = (stack, layer)
        x64 = x.astype(np.float64, copy=False)
        uniq, sums = segment_sum(slot_ids, x64)
        self.sum[k][uniq] += sums
        uniq, sums = segment_sum(slot_ids, x64 * x64)
        self.sumsq[k][uniq] += sums
        ok = labels >= 0
        if ok.any():
            n_slots = self.sum[k].shape[0]
            flat = labels[ok] * n_slots + slot_ids[ok]
            uniq, sums = segment_sum(flat, x64[ok])
            self.label_sum[k].reshape(-1, x.shape[1])[uniq] += sums

    # -- derived --------------------------------------------------------------------
    def slot(self, stack: str, name: str) -> int:
        return self._slot_index[stack][name]

    def mean(self, stack: str, layer: int) -> np.ndarray:
        """``[n_slots, d_ff]`` mean activation per slot."""
        c = self.count[stack][:, None]
        return self.sum[(stack, layer)] / np.maximum(c, 1)

    def var(self, stack: str, layer: int) -> np.ndarray:
        """``[n_slots, d_ff]`` population variance per slot."""
        m = self.mean(stack, layer)
        c = self.count[stack][:, None]
        return np.maximum(self.sumsq[(stack, layer)] / np.maximum(c, 1) - m * m, 0.0)

    def label_mean(self, stack: str, layer: int) -> np.ndarray:
        """``[n_labels, n_slots, d_ff]`` mean activation per label and slot."""
        c = self.label_count[stack][:, :, None]
        return self.label_sum[(stack, layer)] / np.maximum(c, 1)

    def merge(self, other: RunningStats) -> None:
        """Add another accumulator's sums (exact; slot sets may differ)."""
        if other.widths != self.widths or other.n_labels != self.n_labels:
            raise ValueError("cannot merge running statistics of different shapes")
        for stack in self.widths:
            ids = self.slot_ids(stack, other.slots[stack])
            np.add.at(self.count[stack], ids, other.count[stack])
            self.label_count[stack][:, ids] += other.label_count[stack]
            for layer in range(len(self.widths[stack])):
                k = (stack, layer)
                self.sum[k][ids] += other.sum[k]
                self.sumsq[k][ids] += other.sumsq[k]
                self.label_sum[k][:, ids] += other.label_sum[k]

    # -- persistence ------------------------------------------------------------------
    def save(self, path: Path) -> None:
        import h5py  # imported when a tensor file is opened (a light import)
        with h5_writing(path) as f:  # built in memory: a full disk cannot crash HDF5 at exit
            f.attrs["n_labels"] = self.n_labels
            for stack, ws in self.widths.items():
                g = f.require_group(stack)
                g.attrs["slots"] = np.array(self.slots[stack], dtype=h5py.string_dtype())
                g.attrs["widths"] = np.array(ws, dtype=np.int64)
                g.create_dataset("count", data=self.count[stack])
                g.create_dataset("label_count", data=self.label_count[stack])
                for layer in range(len(ws)):
                    lg = f.require_group(tensor_key(stack, layer))
                    lg.create_dataset("sum", data=self.sum[(stack, layer)])
                    lg.create_dataset("sumsq", data=self.sumsq[(stack, layer)])
                    lg.create_dataset("label_sum", data=self.label_sum[(stack, layer)])

    @classmethod
    def load(cls, path: Path) -> RunningStats:
        import h5py  # imported when a tensor file is opened (a light import)
        with h5py.File(path, "r") as f:
            widths = {s: tuple(int(x) for x in f[s].attrs["widths"]) for s in f}
            st = cls(widths, int(f.attrs["n_labels"]))
            for stack in widths:
                g = f[stack]
                st.slot_ids(stack, [s.decode() if isinstance(s, bytes) else str(s)
                                    for s in g.attrs["slots"]])
                st.count[stack] = g["count"][()]
                st.label_count[stack] = g["label_count"][()]
                for layer in range(len(widths[stack])):
                    lg = f[tensor_key(stack, layer)]
                    st.sum[(stack, layer)] = lg["sum"][()]
                    st.sumsq[(stack, layer)] = lg["sumsq"][()]
                    st.label_sum[(stack, layer)] = lg["label_sum"][()]
        return st
