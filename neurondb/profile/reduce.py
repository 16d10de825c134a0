"""The profile accumulator: lives on the model's device and reduces each batch as it is made.

Per ``(stack, layer)`` it keeps (``d`` = d_ff, ``K`` = top_k, ``N`` = bins, ``L`` = labels):
float64 ``sum``/``sumsq`` ``[d]``, float32 ``min``/``max`` ``[d]``, int64 ``n_positive`` ``[d]``,
an int64 histogram ``[d, N+2]`` over the run's fixed edges (:mod:`neurondb.profile.edges`),
float64 label sums ``[L, d]`` and int64 label counts ``[L]``, and the exact top/bottom-K as
int64 keys ``[d, K]`` (:mod:`neurondb.profile.keys`).

The layers of a stack that share a width are reduced together, as one ``[G, rows, d]`` tensor
(G layers), so a batch costs the same few dozen kernel launches whatever the depth.
Memory: the state (about ``d * (16K + 8N + 8L + 40)`` bytes per layer) plus one batch's
temporaries (about ``40 * G * rows * d`` bytes, G cut so that ``G * rows * d`` stays under
:data:`MAX_VALUES`: at most about 1.3 GB). On the CPU, when a C compiler is found, the kernel of
:mod:`neurondb.profile.native` does the same reduction in one pass per value (no ``[G, rows,
d]`` stack and no temporaries). Every operation is deterministic on CPU and
CUDA (sorting unique keys, integer atomics, no float atomics), so the same tokens in the same
batches give the same state bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from neurondb.profile import native
from neurondb.profile.keys import EMPTY, LOW, bits_from_ordered, make_keys, ordered_from_bits
from neurondb.profile.state import KINDS, CorrSums, LayerState, ProfileState

EdgesFor = Callable[[dict], dict]
#: the CPU kernel's int32 histogram counts take at most this many rows between moves into
#: the int64 counts (a bin counts at most one per row)
MAX_INT32_ROWS = 2**31 - 1
#: at most this many values (layers x rows x d_ff) are reduced at once: a batch of a large
#: model is reduced a few layers at a time (the temporaries are about 40 bytes per value)
MAX_VALUES = 1 << 25


def layer_groups(widths: dict[str, tuple[int, ...]]) -> list[tuple[str, tuple[int, ...]]]:
    """``(stack, layers)`` groups of equal width (every layer of an unpruned stack)."""
    out = []
    for stack, ws in widths.items():
        by_width: dict[int, list[int]] = {}
        for layer, d in enumerate(ws):
            by_width.setdefault(int(d), []).append(layer)
        out.extend((stack, tuple(ls)) for ls in by_width.values())
    return out


class ProfileAccumulator:
    """Reduces captured rows ``h`` ``[rows, d]`` of every ``(stack, layer)``.

    ``widths``: ``{stack: (d_ff per layer)}``; ``edges_for(acts)``: called once, with the first
    batch's activations, returns ``{(stack, layer): float64 edges [N+1]}``; ``n_positions``:
    every position is below it, and ``n_examples * n_positions <= 2**32``; ``corr_layers``:
    ``(stack, layers)`` whose neurons (``D`` in all) also get the within-model correlation
    sums Σx, Σx² ``[D]`` and Σxy ``[D, D]`` in float64 (``8 D² `` bytes on the device).
    """

    def __init__(self, widths: dict[str, tuple[int, ...]], top_k: int, n_bins: int,
                 n_labels: int, n_positions: int, device, edges_for: EdgesFor,
                 corr_layers: tuple[str, tuple[int, ...]] | None = None):
        self.widths = {s: tuple(w) for s, w in widths.items()}
        self.groups = layer_groups(self.widths)
        self.top_k, self.n_bins, self.n_labels = int(top_k), int(n_bins), int(n_labels)
        self.n_positions = int(n_positions)
        self.device = torch.device(device)
        self.edges_for = edges_for
        self.edges: dict[tuple[str, int], np.ndarray] | None = None
        self.count: dict[int, int] = {}
        self.t: dict[int, dict[str, torch.Tensor]] = {}
        self.corr_layers = corr_layers
        self.corr: dict[str, torch.Tensor] | None = None
        self.corr_n = 0
        self.native = None
        if self.device.type == "cpu" and native.available():
            self.native = native.NativeReducer()
        #: (stack, layer) -> (its layer group, its index in the group)
        self._where = {(stack, la): (g, i) for g, (stack, layers) in enumerate(self.groups)
                       for i, la in enumerate(layers)}
        self._batch: dict = {}
        self._where_bt: dict = {}
        self._keep = False
        self._unmoved: dict[int, int] = {}  # rows counted in hist32 since its last move
        self._broken = False  # a batch was interrupted half reduced (abandon_batch)

    def _init_group(self, g: int) -> dict[str, torch.Tensor]:
        stack, layers = self.groups[g]
        G, d = len(layers), self.widths[stack][layers[0]]
        dev, K, L, B = self.device, self.top_k, self.n_labels, self.n_bins + 2
        f64, i64 = torch.float64, torch.int64
        w = [float(self.edges[(stack, la)][1] - self.edges[(stack, la)][0]) for la in layers]
        e0 = [float(self.edges[(stack, la)][0]) for la in layers]
        st = {"sum": torch.zeros(G, d, dtype=f64, device=dev),
              "sumsq": torch.zeros(G, d, dtype=f64, device=dev),
              "min": torch.full((G, d), float("inf"), device=dev),
              "max": torch.full((G, d), float("-inf"), device=dev),
              "n_positive": torch.zeros(G, d, dtype=i64, device=dev),
              "hist": torch.zeros(G * d * B, dtype=i64, device=dev),
              # the CPU kernel counts into int32 (a quarter of the cache traffic), moved into
              # the int64 counts before they could overflow (_move_counts)
              **({"hist32": torch.zeros(G * d * B, dtype=torch.int32, device=dev)}
                 if self.native is not None else {}),
              "label_count": torch.zeros(L, dtype=i64, device=dev),
              "label_sum": torch.zeros((G, L, d), dtype=f64, device=dev),
              "inv_w": torch.tensor([1.0 / x for x in w], device=dev).view(G, 1, 1),
              "m": torch.tensor([round(a / x) - 1.0 for a, x in zip(e0, w)],
                                device=dev).view(G, 1, 1),
              "col": (torch.arange(G * d, device=dev, dtype=i64) * B).view(G, 1, d).to(
                  torch.int32 if G * d * B < 2**31 else i64)}
        for kind in KINDS:
            st[kind] = torch.full((G, d, K), EMPTY, dtype=i64, device=dev)
        self.count[g] = 0
        return st

    def update_batch(self, acts: dict[tuple[str, int], torch.Tensor],
                     rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Reduce one batch: ``acts[(stack, layer)]`` ``[n, d]`` on the device (any float
        dtype) and ``rows[stack] = (example_id, position, label)`` ``[n]`` each (label -1:
        none)."""
        if self.edges is None:
            self.edges = self.edges_for(acts)
        if self.native is not None:  # the CPU kernel: the copied rows, as end_batch reduces them
            self.begin_batch(rows)
            self.end_batch(acts)
        else:
            self._update_torch(acts, rows)
        if self.corr_layers is not None:
            self._correlation_sums(acts)

    def _update_torch(self, acts: dict[tuple[str, int], torch.Tensor],
                      rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """:meth:`update_batch` by torch operations, a few layers of a group at a time."""
        dev = self.device
        for g, (stack, layers) in enumerate(self.groups):
            if stack not in rows or (stack, layers[0]) not in acts:
                continue
            ex, pos, lab = (torch.as_tensor(np.asarray(a), device=dev, dtype=torch.int64)
                            for a in rows[stack])
            per = acts[(stack, layers[0])].numel()
            step = max(1, MAX_VALUES // max(per, 1))
            for a in range(0, len(layers), step):
                # .to(dev): with --device-map the layers live on several devices
                h = torch.stack([acts[(stack, la)].to(dev) for la in layers[a:a + step]])
                self.update(g, h, ex, pos, lab, slice(a, a + h.shape[0]))

    @torch.no_grad()
    def _correlation_sums(self, acts: dict[tuple[str, int], torch.Tensor]) -> None:
        stack, layers = self.corr_layers
        if (stack, layers[0]) not in acts:
            return
        x = torch.cat([acts[(stack, la)].to(self.device).double() for la in layers], dim=1)
        if self.corr is None:
            D = x.shape[1]
            f64 = dict(dtype=torch.float64, device=self.device)
            self.corr = {"sum": torch.zeros(D, **f64), "sumsq": torch.zeros(D, **f64),
                         "sxy": torch.zeros(D, D, **f64)}
        self.corr_n += int(x.shape[0])
        self.corr["sum"] += x.sum(0)
        self.corr["sumsq"] += (x * x).sum(0)
        self.corr["sxy"] += x.T @ x

    @torch.no_grad()
    def update(self, g: int, h: torch.Tensor, example_id: torch.Tensor, position: torch.Tensor,
               label: torch.Tensor, layers: slice | None = None) -> None:
        """Reduce rows ``h`` ``[G', n, d]`` of the layers ``layers`` (default all G) of layer
        group ``g`` with their int64 ``[n]`` example ids, positions and labels (all on the
        device)."""
        if h.shape[1] == 0:
            return
        # the CPU kernel keeps the top/bottom-K as heaps, this path as sorted rows
        assert self.native is None, "a CPU-kernel accumulator reduces in end_batch"
        sl = layers or slice(0, h.shape[0])
        st = {k: v if k in ("hist", "label_count") else v[sl] for k, v in self._group(g).items()}
        x = h.detach().to(torch.float32).contiguous() + 0.0  # -0.0 -> +0.0
        xd = x.double()
        if sl.start == 0:  # rows and labels are counted once per group, with its first layers
            self.count[g] += int(x.shape[1])
        st["sum"] += xd.sum(1)
        st["sumsq"] += (xd * xd).sum(1)
        lo, hi = x.amin(1), x.amax(1)
        torch.minimum(st["min"], lo, out=st["min"])
        torch.maximum(st["max"], hi, out=st["max"])
        st["n_positive"] += (x > 0).sum(1, dtype=torch.int32)  # an int32 sum: 4x faster
        self._histogram(st, x)
        if self.n_labels:
            onehot = (label[:, None] == torch.arange(self.n_labels, device=x.device)).double()
            if sl.start == 0:
                st["label_count"] += onehot.sum(0).long()
            st["label_sum"] += _label_sums(onehot, xd)
        self._top_k(st, x, example_id * self.n_positions + position, {"top": hi, "bottom": lo})

    def _group(self, g: int) -> dict[str, torch.Tensor]:
        if g not in self.t:
            self.t[g] = self._init_group(g)
        return self.t[g]

    def _count(self, g: int, n: int, label: torch.Tensor) -> None:
        """Count a batch's ``n`` rows (and their labels) once per layer group."""
        st = self.t[g]
        self.count[g] += n
        if self.n_labels:
            known = label[(label >= 0) & (label < self.n_labels)]
            st["label_count"] += torch.bincount(known, minlength=self.n_labels)

    # -- without copies: the hooks hand over the model's own tensors -----------------------
    def can_stream(self) -> bool:
        """Whether a batch can be reduced from the model's own ``h`` tensors
        (:meth:`begin_batch`, :meth:`consume` from the capture hooks, :meth:`end_batch`):
        the CPU kernel reduces each layer's captured rows inside its hook, where the model
        wrote them, so the hooks copy nothing and nothing is held. Needs the edges (chosen
        from a first batch reduced the usual way) and no within-model correlation."""
        return self.native is not None and self.edges is not None and self.corr_layers is None

    def begin_batch(self, rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    where: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """The batch's ``rows[stack] = (example_id, position, label)`` ``[n]``, before its
        forward; the capture hooks then hand each layer to :meth:`consume`. ``where``:
        ``{stack: (b, t)}`` of these rows in ``h`` when the hooks store other rows (a per-token
        twin's): :meth:`consume` then reduces its own rows and lets the hook store its own."""
        self._where_bt = {s: tuple(torch.as_tensor(np.asarray(a), dtype=torch.int64)
                                   for a in bt) for s, bt in (where or {}).items()}
        self._keep = where is not None
        self._batch = {}
        for stack, (ex, pos, lab) in rows.items():
            ex, pos, lab = (torch.as_tensor(np.asarray(a), dtype=torch.int64) for a in
                            (ex, pos, lab))
            self._batch[stack] = (ex * self.n_positions + pos, lab.to(torch.int32), lab)
        self._flat: dict[str, torch.Tensor] = {}
        self._begun: set[int] = set()  # groups whose counts were made ready for this batch
        self._reduced: set[tuple[str, int]] = set()

    def _begin_group(self, g: int, n: int) -> dict[str, torch.Tensor]:
        """Group ``g``'s state, its int32 counts moved first if this batch's ``n`` rows could
        overflow them (once per group and batch)."""
        st = self._group(g)
        if g not in self._begun:
            self._move_counts(g, n)
            self._begun.add(g)
        return st

    def consume(self, key: tuple[str, int], h: torch.Tensor, b: torch.Tensor,
                t: torch.Tensor) -> bool:
        """Reduce layer ``key``'s rows ``(b, t)`` of ``h`` ``[B, T, d]`` now, inside its capture
        hook, where the model wrote them (no copy, nothing held: the values are still in the
        cache, and the kernel's threads are torch's own, see
        :func:`~neurondb.profile.native.shares_torch_threads`). False when the kernel cannot
        read ``h`` in place (another dtype or layout): the hook then copies the rows as usual
        and :meth:`end_batch` reduces them; also False when the hooks store a twin's rows
        (``where`` of :meth:`begin_batch`): this layer's profile rows are then reduced here
        in any case (copied first if need be), and the hook stores the twin's."""
        stack = key[0]
        if stack not in self._batch or key not in self._where:
            return False
        b, t = self._where_bt.get(stack, (b, t))
        in_place = (h.dim() == 3 and h.dtype == torch.float32 and h.device.type == "cpu"
                    and h.is_contiguous())
        if not in_place and not self._keep:
            return False  # the hook copies the rows; end_batch reduces them
        tok, lab32, _lab = self._batch[stack]
        n = int(tok.shape[0])
        if n == 0:
            return not self._keep
        g, i = self._where[key]
        st = self._begin_group(g, n)
        self._reduced.add(key)  # before the call: an interrupted call still marks the state
        view = _layer_view(st, len(self.groups[g][1]), i)
        if in_place:
            if stack not in self._flat:
                self._flat[stack] = (b.to(torch.int64) * h.shape[1]
                                     + t.to(torch.int64)).contiguous()
            self.native.update(view, [h.view(-1, h.shape[-1])], tok, lab32, self.n_labels,
                               self.n_bins, self.top_k, rows=self._flat[stack])
        else:  # the hook stores a twin's rows: the profile's are copied here
            self.native.update(view, [h[b, t].to(torch.float32).contiguous()], tok, lab32,
                               self.n_labels, self.n_bins, self.top_k)
        return not self._keep

    def abandon_batch(self) -> None:
        """A forward pass failed after :meth:`begin_batch`: if some of its layers were already
        reduced, this accumulator holds part of a batch and refuses to give a state (its
        shard is redone from the start)."""
        if getattr(self, "_reduced", None):
            self._broken = True
        self._batch, self._flat, self._begun, self._reduced = {}, {}, set(), set()
        self._where_bt, self._keep = {}, False

    @torch.no_grad()
    def end_batch(self, acts: dict[tuple[str, int], torch.Tensor]) -> None:
        """Finish a batch begun with :meth:`begin_batch`: reduce the layers whose rows the hooks
        copied into ``acts`` (``[n, d]``, any float dtype; one kernel call per layer group
        where all of its layers are there), and count its rows once per layer group."""
        try:
            for g, (stack, layers) in enumerate(self.groups):
                if stack not in self._batch:
                    continue
                tok, lab32, lab = self._batch[stack]
                keys = [(stack, la) for la in layers]
                n = int(tok.shape[0])
                todo = [k for k in keys if k in acts and k not in self._reduced]
                if n == 0 or not (todo or any(k in self._reduced for k in keys)):
                    continue
                st = self._begin_group(g, n)
                if len(todo) == len(keys):
                    self.native.update(st, [acts[k].to(torch.float32).contiguous()
                                            for k in keys], tok, lab32, self.n_labels,
                                       self.n_bins, self.top_k)
                else:
                    for k in todo:
                        self.native.update(_layer_view(st, len(layers), keys.index(k)),
                                           [acts[k].to(torch.float32).contiguous()], tok, lab32,
                                           self.n_labels, self.n_bins, self.top_k)
                self._count(g, n, lab)
        finally:
            self._batch, self._flat, self._begun, self._reduced = {}, {}, set(), set()
            self._where_bt, self._keep = {}, False

    def _histogram(self, st: dict[str, torch.Tensor], x: torch.Tensor) -> None:
        """Bin index ``floor(h / w) - e0 / w + 1`` (exact: ``w`` is a power of two), clamped
        to the under/overflow bins 0 and N+1, counted per neuron (one ``bincount`` over the
        flattened ``(layer, neuron, bin)`` index)."""
        b = torch.mul(x, st["inv_w"]).floor_().sub_(st["m"])  # in place: one temporary
        b = b.nan_to_num_(nan=self.n_bins + 1.0)  # NaN: counted as overflow (and seen
        b = b.clamp_(0, self.n_bins + 1)          # in min/max/mean as NaN)
        hist = st["hist"]
        idx = b.to(torch.int32 if hist.numel() < 2**31 else torch.int64) + st["col"].to(b.device)
        hist += torch.bincount(idx.reshape(-1), minlength=hist.numel())

    def _top_k(self, st: dict[str, torch.Tensor], x: torch.Tensor, tok: torch.Tensor,
               extremes: dict[str, torch.Tensor]) -> None:
        """Merge the batch's top/bottom-K keys into the state, for the neurons whose batch
        maximum (minimum) can enter it: once the state is full, a neuron whose batch extreme
        does not reach its K-th value is skipped (most neurons, once many tokens are seen).
        The batch's K best values of a neuron come from a float ``topk``; where values tie
        with the K-th one beyond the K picked (the choice among them is by token), its
        column is ranked by its exact keys instead. Either way the state is the exact top-K
        of all keys seen."""
        G, n, d = x.shape
        K, k = self.top_k, min(self.top_k, n)
        cols = x.transpose(1, 2).reshape(G * d, n)  # one row per neuron
        for kind in KINDS:
            top = kind == "top"
            cur = st[kind].view(G * d, K)
            last = cur[:, K - 1]
            ext = extremes[kind].reshape(-1)
            kth = _key_values(last, not top)
            reach = (ext >= kth) if top else (ext <= kth)
            need = (last == EMPTY) | reach | torch.isnan(ext) | torch.isnan(kth)
            sel = torch.nonzero(need).squeeze(1)
            if sel.numel() == 0:
                continue
            c = cols if sel.numel() == G * d else cols[sel]
            keys = _column_keys(c, tok, k, top)
            merged = torch.topk(torch.cat([cur[sel], keys], dim=1), K, dim=1, sorted=True)
            cur[sel] = merged.values

    def _move_counts(self, g: int, coming: int = 0) -> None:
        """Before ``coming`` more rows are counted: add the CPU kernel's int32 histogram
        counts of group ``g`` into its int64 counts if those rows could overflow them."""
        st = self.t[g]
        if "hist32" not in st:
            return
        if self._unmoved.get(g, 0) + coming <= MAX_INT32_ROWS:
            self._unmoved[g] = self._unmoved.get(g, 0) + coming
            return
        with torch.inference_mode(st["hist"].is_inference()):  # made under inference mode
            st["hist"] += st["hist32"]
            st["hist32"].zero_()
        self._unmoved[g] = coming

    def state(self) -> ProfileState:
        """The NumPy state of everything reduced so far (a copy: reducing goes on)."""
        if self._broken:
            raise RuntimeError("this profile accumulator holds part of an interrupted batch; "
                               "its shard must be reduced again from the start")
        out = ProfileState(self.top_k, self.n_bins, self.n_labels, self.n_positions)
        for g, st in sorted(self.t.items()):
            stack, layers = self.groups[g]
            a = {k: v.cpu().numpy().copy() for k, v in st.items() if k != "hist32"}
            if "hist32" in st:  # the kernel's counts not yet moved (the state is unchanged)
                a["hist"] += st["hist32"].cpu().numpy()
            hist = a["hist"].reshape(len(layers), -1, self.n_bins + 2)
            for i, la in enumerate(layers):
                out.layers[(stack, la)] = LayerState(
                    count=self.count[g], sum=a["sum"][i], sumsq=a["sumsq"][i],
                    min=a["min"][i], max=a["max"][i], n_positive=a["n_positive"][i],
                    edges=self.edges[(stack, la)], hist=hist[i],
                    label_count=a["label_count"], label_sum=a["label_sum"][i],
                    keys={k: (native.sorted_keys(a[k][i]) if self.native is not None
                              else a[k][i]) for k in KINDS})
        if self.corr is not None:
            c = {k: v.cpu().numpy() for k, v in self.corr.items()}
            out.corr = CorrSums(self.corr_layers[0], tuple(self.corr_layers[1]), self.corr_n,
                                c["sum"], c["sumsq"], c["sxy"])
        return out


def _label_sums(onehot: torch.Tensor, xd: torch.Tensor) -> torch.Tensor:
    """``onehot.T @ xd`` ``[G, L, d]`` (``onehot`` float64 ``[n, L]``, ``xd`` float64
    ``[G, n, d]``), with a NaN or ±inf reaching its own row's label only, as adding row by row
    does (the CPU kernel): in a plain matmul 0 × NaN and 0 × inf are NaN for every label."""
    finite = torch.isfinite(xd)
    if bool(finite.all()):
        return torch.matmul(onehot.T, xd)
    out = torch.matmul(onehot.T, torch.where(finite, xd, 0.0))

    def seen(mask: torch.Tensor) -> torch.Tensor:
        return torch.matmul(onehot.T, mask.double()) > 0

    pos, neg = seen(xd == float("inf")), seen(xd == float("-inf"))
    out = torch.where(pos, float("inf"), torch.where(neg, float("-inf"), out))
    return torch.where(seen(torch.isnan(xd)) | (pos & neg), float("nan"), out)


def _layer_view(st: dict[str, torch.Tensor], n_layers: int, i: int) -> dict[str, torch.Tensor]:
    """The state of layer ``i`` of a group of ``n_layers`` (contiguous views; the label
    counts are the group's)."""
    out = {}
    for k, v in st.items():
        if k == "label_count":
            out[k] = v
        elif k in ("hist", "hist32"):
            out[k] = v.view(n_layers, -1)[i]
        else:
            out[k] = v[i:i + 1]
    return out


def _key_values(keys: torch.Tensor, bottom: bool) -> torch.Tensor:
    """float32 values of int64 keys (an EMPTY key decodes to some value; callers mask it)."""
    hi = torch.div(keys, LOW, rounding_mode="floor")
    ordered = ((-hi - 1) if bottom else hi).to(torch.int32)
    return bits_from_ordered(ordered).view(torch.float32)


def _column_keys(cols: torch.Tensor, tok: torch.Tensor, k: int, top: bool) -> torch.Tensor:
    """int64 ``[R, k]``: the keys of the ``k`` best entries of each row of ``cols`` ``[R, n]``
    (float32 activations of the batch's ``n`` tokens ``tok``)."""
    vals, idx = cols.topk(k, dim=1, largest=top)
    edge = vals[:, k - 1:k]
    at_least = ((cols > edge) if top else (cols < edge)) | (cols == edge)
    n_at_least = at_least.sum(1, dtype=torch.int32)
    ordered = ordered_from_bits(vals.contiguous().view(torch.int32)).long()
    keys = make_keys(ordered, tok[idx], not top)
    bad = torch.nonzero(n_at_least != k).squeeze(1)  # ties at the edge, or NaN
    if bad.numel():
        c = cols[bad].contiguous()
        exact = make_keys(ordered_from_bits(c.view(torch.int32)).long(), tok.view(1, -1),
                          not top)
        keys[bad] = torch.topk(exact, k, dim=1).values
    return keys
