"""The shape of a model's neuron space (no torch: reading a store never imports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """Shape of a model's neuron space: ``stacks`` maps stack name to ``(n_layers, d_ff)``.

    ``d_ff`` is per layer (``widths[stack][layer]``) because pruned models differ per layer.
    """

    family: str
    d_model: int
    widths: dict[str, tuple[int, ...]]

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(self.widths)

    def n_layers(self, stack: str) -> int:
        return len(self.widths[stack])

    def d_ff(self, stack: str, layer: int = 0) -> int:
        return self.widths[stack][layer]

    def n_neurons(self) -> int:
        return sum(sum(w) for w in self.widths.values())

    def to_dict(self) -> dict:
        return {"family": self.family, "d_model": self.d_model,
                "widths": {k: list(v) for k, v in self.widths.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> ModelShape:
        return cls(family=d["family"], d_model=int(d["d_model"]),
                   widths={k: tuple(int(x) for x in v) for k, v in d["widths"].items()})
