"""The profile accumulator: lives on the model's device and reduces each batch as it is made.

Per ``(stack, layer)`` it keeps (``d`` = d_ff, ``K`` = top_k, ``N`` = bins, ``L`` = labels):
float64 ``sum``/``sumsq`` ``[d]``, float32 ``min``/``max`` ``[d]``, int64 ``n_positive`` ``[d]``,
an int64 histogram ``[d, N+2]`` over the run's fixed edges (:mod:`neurondb.profile.edges`),
float64 label sums ``[L, d]`` and int64 label counts ``[L]``, and the exact top/bottom-K as
int64 keys ``[d, K]`` (:mod:`neurondb.profile.keys`). Memory: the state (about
``d * (16K + 8N + 8L + 40)`` bytes per layer) plus one batch's temporaries (about
``40 * rows * d`` bytes). Every operation is deterministic on CPU and CUDA (sorting by unique
keys, integer atomics, no float atomics), so the same tokens in the same batches give the
same state bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from neurondb.profile.keys import EMPTY, make_keys, ordered_from_bits
from neurondb.profile.state import KINDS, LayerState, ProfileState

EdgesFor = Callable[[dict], dict]


class ProfileAccumulator:
    """Reduces captured rows ``h`` ``[rows, d]`` of every ``(stack, layer)``.

    ``widths``: ``{stack: (d_ff per layer)}``; ``edges_for(acts)``: called once, with the first
    batch's activations, returns ``{(stack, layer): float64 edges [N+1]}``; ``n_positions``:
    every position is below it, and ``n_examples * n_positions <= 2**32``.
    """

    def __init__(self, widths: dict[str, tuple[int, ...]], top_k: int, n_bins: int,
                 n_labels: int, n_positions: int, device, edges_for: EdgesFor):
        self.widths = {s: tuple(w) for s, w in widths.items()}
        self.top_k, self.n_bins, self.n_labels = int(top_k), int(n_bins), int(n_labels)
        self.n_positions = int(n_positions)
        self.device = torch.device(device)
        self.edges_for = edges_for
        self.edges: dict[tuple[str, int], np.ndarray] | None = None
        self.count: dict[tuple[str, int], int] = {}
        self.t: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    def _init_layer(self, key: tuple[str, int]) -> dict[str, torch.Tensor]:
        d = self.widths[key[0]][key[1]]
        dev, K, L = self.device, self.top_k, self.n_labels
        e = self.edges[key]
        w = float(e[1] - e[0])
        f64, i64 = torch.float64, torch.int64
        st = {"sum": torch.zeros(d, dtype=f64, device=dev),
              "sumsq": torch.zeros(d, dtype=f64, device=dev),
              "min": torch.full((d,), float("inf"), device=dev),
              "max": torch.full((d,), float("-inf"), device=dev),
              "n_positive": torch.zeros(d, dtype=i64, device=dev),
              "hist": torch.zeros(d * (self.n_bins + 2), dtype=i64, device=dev),
              "label_count": torch.zeros(L, dtype=i64, device=dev),
              "label_sum": torch.zeros((L, d), dtype=f64, device=dev),
              "inv_w": torch.tensor(1.0 / w, device=dev),
              "m": torch.tensor(round(float(e[0]) / w) - 1.0, device=dev),
              "col": torch.arange(d, device=dev, dtype=i64) * (self.n_bins + 2)}
        for kind in KINDS:
            st[kind] = torch.full((d, K), EMPTY, dtype=i64, device=dev)
        self.count[key] = 0
        return st

    def update_batch(self, acts: dict[tuple[str, int], torch.Tensor],
                     rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Reduce one batch: ``acts[(stack, layer)]`` ``[n, d]`` on the device (any float
        dtype) and ``rows[stack] = (example_id, position, label)`` ``[n]`` each (label -1:
        none)."""
        if self.edges is None:
            self.edges = self.edges_for(acts)
        dev = self.device
        by_stack = {s: tuple(torch.as_tensor(np.asarray(a), device=dev, dtype=torch.int64)
                             for a in r) for s, r in rows.items()}
        for key, h in acts.items():
            if key[0] in by_stack:
                self.update(key, h, *by_stack[key[0]])

    @torch.no_grad()
    def update(self, key: tuple[str, int], h: torch.Tensor, example_id: torch.Tensor,
               position: torch.Tensor, label: torch.Tensor) -> None:
        """Reduce rows ``h`` ``[n, d]`` of one layer with their int64 ``[n]`` example ids,
        positions and labels (all on the device)."""
        if h.shape[0] == 0:
            return
        if key not in self.t:
            self.t[key] = self._init_layer(key)
        st = self.t[key]
        x = h.detach().to(torch.float32).contiguous() + 0.0  # -0.0 -> +0.0
        xd = x.double()
        self.count[key] += int(x.shape[0])
        st["sum"] += xd.sum(0)
        st["sumsq"] += (xd * xd).sum(0)
        torch.minimum(st["min"], x.amin(0), out=st["min"])
        torch.maximum(st["max"], x.amax(0), out=st["max"])
        st["n_positive"] += (x > 0).sum(0)
        self._histogram(st, x)
        if self.n_labels:
            onehot = (label[:, None] == torch.arange(self.n_labels, device=x.device)).double()
            st["label_count"] += onehot.sum(0).long()
            st["label_sum"] += onehot.T @ xd
        self._top_k(st, x, example_id * self.n_positions + position)

    def _histogram(self, st: dict[str, torch.Tensor], x: torch.Tensor) -> None:
        """Bin index ``floor(h / w) - e0 / w + 1`` (exact: ``w`` is a power of two), clamped
        to the under/overflow bins 0 and N+1, counted per neuron."""
        b = torch.floor(x * st["inv_w"]) - st["m"]
        b = b.clamp_(0, self.n_bins + 1).long() + st["col"]
        st["hist"].index_add_(0, b.reshape(-1), torch.ones(b.numel(), dtype=torch.int64,
                                                           device=b.device))

    def _top_k(self, st: dict[str, torch.Tensor], x: torch.Tensor, tok: torch.Tensor) -> None:
        ordered = ordered_from_bits(x.view(torch.int32)).long()
        for kind in KINDS:
            keys = make_keys(ordered, tok[:, None], kind == "bottom")
            cand = torch.cat([st[kind], keys.T], dim=1)
            st[kind] = torch.topk(cand, self.top_k, dim=1, sorted=True).values

    def state(self) -> ProfileState:
        """The NumPy state of everything reduced so far (copies from the device)."""
        out = ProfileState(self.top_k, self.n_bins, self.n_labels, self.n_positions)
        for key, st in sorted(self.t.items()):
            a = {k: v.cpu().numpy() for k, v in st.items()}
            out.layers[key] = LayerState(
                count=self.count[key], sum=a["sum"], sumsq=a["sumsq"], min=a["min"],
                max=a["max"], n_positive=a["n_positive"], edges=self.edges[key],
                hist=a["hist"].reshape(-1, self.n_bins + 2), label_count=a["label_count"],
                label_sum=a["label_sum"], keys={k: a[k] for k in KINDS})
        return out
