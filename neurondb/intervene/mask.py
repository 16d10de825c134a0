"""``NeuronMask``: a set of selected FFN neurons ``{(stack, layer): neuron indices}``.

The selected neurons are the ones suppression replaces and pruning removes (SPEC §5–§6).
A mask is read from / written to the portable mask file (:mod:`neurondb.store.maskfile`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurondb.arch import ModelShape
from neurondb.intervene.errors import MaskShapeError
from neurondb.store.maskfile import read_mask, write_mask

LayerKey = tuple[str, int]


def _as_indices(values: Iterable[int] | np.ndarray) -> np.ndarray:
    """Sorted unique int64 indices."""
    return np.unique(np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                                dtype=np.int64).ravel())


@dataclass(frozen=True, eq=False)
class NeuronMask:
    """Selected neurons per ``(stack, layer)``: sorted unique ``int64`` arrays of indices into
    ``h`` (``[d_ff]`` of that layer). Layers with nothing selected are absent.

    ``meta`` is the provenance carried with the mask (ranking, store, method, fraction,
    ``shape`` = ``ModelShape.to_dict()`` of the model it was made for).
    """

    neurons: Mapping[LayerKey, np.ndarray]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[LayerKey, np.ndarray] = {}
        for (stack, layer), idx in self.neurons.items():
            arr = _as_indices(idx)
            if arr.size:
                clean[(str(stack), int(layer))] = arr
        object.__setattr__(self, "neurons", dict(sorted(clean.items())))
        object.__setattr__(self, "meta", dict(self.meta or {}))

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_arrays(cls, stack: Iterable[str], layer: Iterable[int], neuron: Iterable[int],
                    meta: dict | None = None) -> NeuronMask:
        """From three equal-length sequences (one row per selected neuron)."""
        s = np.asarray(list(stack), dtype=object)
        la = np.asarray(list(layer), dtype=np.int64)
        n = np.asarray(list(neuron), dtype=np.int64)
        if not (len(s) == len(la) == len(n)):
            raise MaskShapeError(f"mask columns differ in length ({len(s)}, {len(la)}, {len(n)})")
        rows: dict[LayerKey, list[int]] = {}
        for i, key in enumerate(zip(s.tolist(), la.tolist())):
            rows.setdefault((str(key[0]), int(key[1])), []).append(i)
        return cls({k: n[v] for k, v in rows.items()}, meta or {})

    @classmethod
    def from_file(cls, path: str | Path) -> NeuronMask:
        """Read a mask file; its provenance (schema metadata) becomes ``meta``."""
        table, meta = read_mask(path)
        d = table.to_pydict()
        return cls.from_arrays(d["stack"], d["layer"], d["neuron"], meta)

    def to_file(self, path: str | Path, meta: dict | None = None) -> Path:
        """Write the portable mask file; ``meta`` (default: ``self.meta``) is its provenance."""
        stack, layer, neuron = self.to_arrays()
        return write_mask(path, stack, layer, neuron, self.meta if meta is None else meta)

    def to_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(stack, layer, neuron)`` columns, one row per selected neuron, sorted."""
        stack: list[str] = []
        layers, neurons = [], []
        for (s, la), idx in self.neurons.items():
            stack.extend([s] * idx.size)
            layers.append(np.full(idx.size, la, dtype=np.int64))
            neurons.append(idx)
        empty = np.zeros(0, np.int64)
        return (stack, np.concatenate(layers) if layers else empty,
                np.concatenate(neurons) if neurons else empty)

    # -- access -----------------------------------------------------------------------
    def __repr__(self) -> str:
        per = ", ".join(f"{s}/{la}: {v.size}" for (s, la), v in self.neurons.items())
        src = self.meta.get("ranking") or self.meta.get("mask") or "?"
        return f"<NeuronMask {len(self)} neurons from {src!s} ({per or 'empty'})>"

    def __len__(self) -> int:
        return int(sum(v.size for v in self.neurons.values()))

    def __iter__(self) -> Iterator[LayerKey]:
        return iter(self.neurons)

    def items(self):
        return self.neurons.items()

    def get(self, stack: str, layer: int) -> np.ndarray:
        """Selected indices of one layer (empty ``int64`` array if none)."""
        return self.neurons.get((stack, int(layer)), np.zeros(0, np.int64))

    def counts(self) -> dict[LayerKey, int]:
        return {k: int(v.size) for k, v in self.neurons.items()}

    def sha256(self) -> str:
        """Hash of the selection itself (independent of file encoding and metadata)."""
        h = hashlib.sha256()
        for (s, la), idx in self.neurons.items():
            h.update(f"{s}/{la}:".encode())
            h.update(idx.astype("<i8").tobytes())
        return h.hexdigest()

    # -- checks and derived masks -------------------------------------------------------
    def check_shape(self, shape: ModelShape) -> None:
        """Raise :class:`MaskShapeError` unless every selected neuron exists in ``shape``.

        Also refuses a mask whose recorded shape (``meta['shape']``) is another model's.
        """
        rec = self.meta.get("shape")
        if rec:
            try:
                other = ModelShape.from_dict(rec)
            except (KeyError, TypeError, ValueError):
                other = None
            if other is not None and (other.d_model != shape.d_model
                                      or other.widths != shape.widths):
                raise MaskShapeError(
                    f"the mask was made for another model shape (d_model {other.d_model}, "
                    f"widths {_brief(other)}) than this model's (d_model {shape.d_model}, "
                    f"widths {_brief(shape)}); make the mask from a store of this model")
        for (s, la), idx in self.neurons.items():
            if s not in shape.widths:
                raise MaskShapeError(f"the mask names stack {s!r}, which this "
                                     f"{shape.family} model lacks (stacks: "
                                     f"{', '.join(shape.stacks)}); it is a mask of another model")
            n_layers = shape.n_layers(s)
            if not 0 <= la < n_layers:
                raise MaskShapeError(f"the mask names layer {la} of stack {s!r}, which has "
                                     f"layers 0..{n_layers - 1}; it is a mask of another model")
            d_ff = shape.d_ff(s, la)
            if idx[0] < 0 or idx[-1] >= d_ff:
                bad = int(idx[-1] if idx[-1] >= d_ff else idx[0])
                raise MaskShapeError(f"the mask names neuron {bad} of {s} layer {la}, which has "
                                     f"d_ff {d_ff}; it is a mask of another model")

    def _shape_or(self, shape: ModelShape | None) -> ModelShape:
        if shape is not None:
            return shape
        if self.meta.get("shape"):
            return ModelShape.from_dict(self.meta["shape"])
        raise MaskShapeError("the mask records no model shape; pass the model's shape "
                             "(neurondb.arch.adapter_for(model).shape(model))")

    def random_like(self, seed: int, shape: ModelShape | None = None) -> NeuronMask:
        """The suppression control: as many neurons per layer as this mask, drawn uniformly
        without replacement from that layer's ``d_ff`` with ``numpy.random.default_rng(seed)``.

        ``shape`` defaults to the one recorded in ``meta['shape']``.
        """
        shape = self._shape_or(shape)
        self.check_shape(shape)
        rng = np.random.default_rng(seed)
        out = {k: rng.choice(shape.d_ff(*k), size=v.size, replace=False)
               for k, v in self.neurons.items()}
        meta = {**self.meta, "selection": "random", "seed": int(seed)}
        return NeuronMask(out, meta)

    def kept(self, shape: ModelShape) -> dict[LayerKey, np.ndarray]:
        """The complement per layer: sorted indices NOT selected, for every layer of ``shape``."""
        out = {}
        for s, widths in shape.widths.items():
            for la, d in enumerate(widths):
                keep = np.ones(d, dtype=bool)
                keep[self.get(s, la)] = False
                out[(s, la)] = np.flatnonzero(keep)
        return out

    def ensure_nonempty(self, shape: ModelShape,
                        priority: Mapping[LayerKey, np.ndarray] | None = None
                        ) -> tuple[NeuronMask, list[tuple[str, int, int]]]:
        """Unselect one neuron in every layer the mask would empty.

        The neuron kept is the first of ``priority[(stack, layer)]`` (neuron indices,
        highest-ranked first) or, without a priority, neuron 0. Returns the new mask and
        the ``(stack, layer, neuron)`` kept this way.
        """
        out = dict(self.neurons)
        kept_one: list[tuple[str, int, int]] = []
        for (s, la), idx in self.neurons.items():
            if idx.size < shape.d_ff(s, la):
                continue
            order = priority.get((s, la)) if priority else None
            keep = int(order[0]) if order is not None and len(order) else 0
            out[(s, la)] = idx[idx != keep]
            kept_one.append((s, la, keep))
        return NeuronMask(out, self.meta), kept_one


def _brief(shape: ModelShape) -> str:
    return "; ".join(f"{s} {list(w)}" for s, w in shape.widths.items())
