"""The NumPy state of a profile: per ``(stack, layer)`` sums, extremes, histogram, label sums
and the exact top/bottom-K; exact merging; the shard file ``profile.npz``.

Units: ``h`` as the model computes it (the input of the FFN output projection, SPEC §1),
reduced as float32 values; sums in float64. Shapes: ``d`` = the layer's ``d_ff``, ``K`` = top_k,
``N`` = histogram bins, ``L`` = label count.

Merging is exact for counts, min, max, ``n_positive``, the histogram and the top/bottom-K
(the entry order is strict: :mod:`neurondb.profile.keys`); the float64 sums add, so they are
bitwise equal for the same chunking (a resumed run, several ranks) and equal to float64
rounding (about 1e-16 relative) for another chunking.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurondb.errors import StoreError
from neurondb.profile.keys import split_keys_np

PROFILE_FILE = "profile.npz"
KINDS = ("top", "bottom")


@dataclass
class LayerState:
    """One ``(stack, layer)``: ``count`` tokens; ``sum``/``sumsq`` float64 ``[d]``;
    ``min``/``max`` float32 ``[d]``; ``n_positive`` int64 ``[d]`` (count of ``h > 0``);
    ``edges`` float64 ``[N+1]``; ``hist`` int64 ``[d, N+2]`` (``[:, 0]`` underflow,
    ``[:, -1]`` overflow); ``label_count`` int64 ``[L]``; ``label_sum`` float64 ``[L, d]``;
    ``keys[kind]`` int64 ``[d, K]`` (best first; :data:`~neurondb.profile.keys.EMPTY` where
    fewer than K tokens were seen)."""

    count: int
    sum: np.ndarray
    sumsq: np.ndarray
    min: np.ndarray
    max: np.ndarray
    n_positive: np.ndarray
    edges: np.ndarray
    hist: np.ndarray
    label_count: np.ndarray
    label_sum: np.ndarray
    keys: dict[str, np.ndarray]

    @property
    def width(self) -> int:
        return int(self.sum.shape[0])

    def entries(self, kind: str, n_positions: int):
        """``(value float32, example_id, position, valid)`` ``[d, K]`` of ``kind``."""
        return split_keys_np(self.keys[kind], kind == "bottom", n_positions)

    def merge(self, other: LayerState, top_k: int) -> None:
        """Add ``other`` (exact; see the module docstring)."""
        if not np.array_equal(self.edges, other.edges):
            raise StoreError("profile states with different histogram edges cannot be merged "
                             "(shards of different extractions); re-extract the run")
        self.count += other.count
        self.sum = self.sum + other.sum
        self.sumsq = self.sumsq + other.sumsq
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.n_positive = self.n_positive + other.n_positive
        self.hist = self.hist + other.hist
        self.label_count = self.label_count + other.label_count
        self.label_sum = self.label_sum + other.label_sum
        for kind in KINDS:
            both = np.concatenate([self.keys[kind], other.keys[kind]], axis=1)
            self.keys[kind] = np.sort(both, axis=1)[:, ::-1][:, :top_k].copy()


@dataclass
class CorrSums:
    """Within-model correlation sums (``extract --profile --correlate-layers``) over the
    neurons of ``layers`` of ``stack``, concatenated in layer order (``D`` in all): ``n``
    tokens, float64 ``sum``/``sumsq`` ``[D]`` and ``sxy`` ``[D, D]``. They add exactly."""

    stack: str
    layers: tuple[int, ...]
    n: int
    sum: np.ndarray
    sumsq: np.ndarray
    sxy: np.ndarray

    def merge(self, other: CorrSums) -> None:
        if (self.stack, tuple(self.layers)) != (other.stack, tuple(other.layers)):
            raise StoreError("correlation sums of different layers cannot be merged; "
                             "re-extract the run")
        self.n += other.n
        self.sum = self.sum + other.sum
        self.sumsq = self.sumsq + other.sumsq
        self.sxy = self.sxy + other.sxy

    def corr(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Pearson r ``[D, D]`` (NaN for a constant neuron); ``rows``: only these rows
        (``corr(np.array([i]))[0]``: neuron ``i`` against every neuron, ``[D]``)."""
        n = max(self.n, 1)
        cov = self.sxy[rows] - np.outer(self.sum[rows], self.sum) / n
        var = np.maximum(self.sumsq - self.sum * self.sum / n, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cov / np.sqrt(np.outer(var[rows], var))
        r[~np.isfinite(r)] = np.nan
        return np.clip(r, -1.0, 1.0)


@dataclass
class ProfileState:
    """The profile of some tokens of a run: ``layers[(stack, layer)]`` and the run constants
    (``top_k``, ``n_bins``, ``n_labels``, ``n_positions``: positions < n_positions)."""

    top_k: int
    n_bins: int
    n_labels: int
    n_positions: int
    layers: dict[tuple[str, int], LayerState] = field(default_factory=dict)
    corr: CorrSums | None = None

    def merge(self, other: ProfileState) -> ProfileState:
        """Add ``other`` into this state (exact); returns self."""
        mine = (self.top_k, self.n_bins, self.n_labels, self.n_positions)
        theirs = (other.top_k, other.n_bins, other.n_labels, other.n_positions)
        if mine != theirs:
            raise StoreError(f"profile states of different shapes cannot be merged ({mine} "
                             f"vs {theirs}); re-extract the run")
        for key, st in other.layers.items():
            if key in self.layers:
                self.layers[key].merge(st, self.top_k)
            else:  # a layer the other tokens reached and these did not
                self.layers[key] = copy.deepcopy(st)
        if (self.corr is None) != (other.corr is None):
            raise StoreError("profile states with and without correlation sums cannot be "
                             "merged; re-extract the run")
        if self.corr is not None:
            self.corr.merge(other.corr)
        return self

    @classmethod
    def merged(cls, paths: list[Path]) -> ProfileState:
        """The states of ``paths`` (``profile.npz`` files) merged in the order given."""
        if not paths:
            raise StoreError("no profile state to merge (a profile run without shards)")
        st = cls.load(paths[0])
        for f in paths[1:]:
            st.merge(cls.load(f))
        return st

    # -- persistence -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The ``profile.npz`` bytes (uncompressed NumPy archive, no pickles)."""
        arrays: dict[str, np.ndarray] = {}
        meta = {"top_k": self.top_k, "n_bins": self.n_bins, "n_labels": self.n_labels,
                "n_positions": self.n_positions, "layers": [], "format": 1}
        for i, ((stack, layer), st) in enumerate(sorted(self.layers.items())):
            meta["layers"].append({"stack": stack, "layer": layer, "count": int(st.count)})
            for name in ("sum", "sumsq", "min", "max", "n_positive", "edges", "hist",
                         "label_count", "label_sum"):
                arrays[f"l{i}_{name}"] = getattr(st, name)
            for kind in KINDS:
                arrays[f"l{i}_keys_{kind}"] = st.keys[kind]
        if self.corr is not None:
            c = self.corr
            meta["corr"] = {"stack": c.stack, "layers": list(c.layers), "n": int(c.n)}
            arrays.update(corr_sum=c.sum, corr_sumsq=c.sumsq, corr_sxy=c.sxy)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load_bytes(cls, data: bytes, path: Path | str = "profile state") -> ProfileState:
        """A state from :meth:`to_bytes` output."""
        return cls._load(io.BytesIO(data), path)

    @classmethod
    def load(cls, path: Path) -> ProfileState:
        """Read a ``profile.npz``; damage is a one-line StoreError naming the file."""
        return cls._load(path, path)

    @classmethod
    def _load(cls, src, path) -> ProfileState:
        try:
            with np.load(src, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                st = cls(int(meta["top_k"]), int(meta["n_bins"]), int(meta["n_labels"]),
                         int(meta["n_positions"]))
                for i, lay in enumerate(meta["layers"]):
                    a = {k[len(f"l{i}_"):]: z[k] for k in z.files if k.startswith(f"l{i}_")}
                    st.layers[(str(lay["stack"]), int(lay["layer"]))] = LayerState(
                        count=int(lay["count"]), sum=a["sum"], sumsq=a["sumsq"],
                        min=a["min"], max=a["max"], n_positive=a["n_positive"],
                        edges=a["edges"], hist=a["hist"], label_count=a["label_count"],
                        label_sum=a["label_sum"],
                        keys={kind: a[f"keys_{kind}"] for kind in KINDS})
                if "corr" in meta:
                    c = meta["corr"]
                    st.corr = CorrSums(str(c["stack"]), tuple(int(x) for x in c["layers"]),
                                       int(c["n"]), z["corr_sum"], z["corr_sumsq"],
                                       z["corr_sxy"])
        except StoreError:
            raise
        except Exception as e:  # zipfile/NumPy/JSON errors of a damaged file
            raise StoreError(f"{path} cannot be read as a profile ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:160]}); run `neurondb verify` and "
                             "re-extract the run") from e
        return st


def empty_layer(d: int, edges: np.ndarray, n_labels: int, top_k: int) -> LayerState:
    """The state of no tokens (what merging starts from)."""
    from neurondb.profile.keys import EMPTY

    n_bins = edges.size - 1
    return LayerState(
        count=0, sum=np.zeros(d), sumsq=np.zeros(d),
        min=np.full(d, np.inf, np.float32), max=np.full(d, -np.inf, np.float32),
        n_positive=np.zeros(d, np.int64), edges=np.asarray(edges, np.float64),
        hist=np.zeros((d, n_bins + 2), np.int64), label_count=np.zeros(n_labels, np.int64),
        label_sum=np.zeros((n_labels, d)), keys={k: np.full((d, top_k), EMPTY, np.int64)
                                                  for k in KINDS})



def profile_file_bytes(widths: dict[str, tuple[int, ...]], top_k: int, n_bins: int,
                       n_labels: int, corr_neurons: int = 0) -> int:
    """Bytes of a ``profile.npz``: the arrays, about 270 bytes of zip and ``.npy`` headers
    per array (11 per layer) and the JSON metadata; ``corr_neurons``: ``D`` of the
    within-model correlation sums (``8 D (D + 2)`` bytes)."""
    total, header = 1024, 272
    if corr_neurons:
        total += 8 * corr_neurons * (corr_neurons + 2) + 3 * header
    for ws in widths.values():
        for d in ws:
            total += d * (8 * 2 + 4 * 2 + 8 + 8 * (n_bins + 2) + 8 * n_labels + 16 * top_k)
            total += 8 * (n_bins + 1) + 8 * n_labels + 11 * header + 40
    return int(total)
