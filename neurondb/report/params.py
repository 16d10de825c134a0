"""Why pruning a share of the FFN neurons removes a smaller share of the parameters.

Pruning neuron ``i`` removes row ``i`` of the FFN input projection(s) with its bias and
column ``i`` of the output projection; embeddings, attention, layer norms and the output
projection's bias stay. So the parameters removed per neuron follow from the full and pruned
counts and the number of neurons removed, and the FFN neurons' share of the model is that
figure times the number of neurons.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ParameterBreakdown:
    """Counts of one pruning: ``per_neuron`` parameters removed with each neuron, the FFN
    neurons' parameters (``ffn``) and their ``ffn_share`` of the full model, the fraction of
    neurons removed (``neuron_share``) and of parameters removed (``removed_share``)."""

    params_full: int
    params_pruned: int
    n_removed: int
    n_neurons: int
    per_neuron: float
    ffn: float
    ffn_share: float
    neuron_share: float
    removed_share: float

    def text(self) -> str:
        """The explanation in one sentence, with the numbers."""
        return (f"Pruning {100 * self.neuron_share:.1f}% of the FFN neurons "
                f"({self.n_removed:,} of {self.n_neurons:,}) removes "
                f"{100 * self.removed_share:.1f}% of the parameters "
                f"({self.params_full:,} -> {self.params_pruned:,}) because the FFN neurons hold "
                f"{100 * self.ffn_share:.1f}% of the model's parameters ({self.n_neurons:,} "
                f"neurons × {self.per_neuron:,.0f} parameters each: a row of the input "
                f"projection with its bias and a column of the output projection); the other "
                f"{100 * (1 - self.ffn_share):.1f}% (embeddings, attention, layer norms, output "
                f"biases) are kept.")


def parameter_breakdown(params_full: int, params_pruned: int, n_removed: int,
                        n_neurons: int) -> ParameterBreakdown | None:
    """The breakdown of one pruning; None when nothing was removed or counts are missing."""
    if n_removed <= 0 or n_neurons <= 0 or params_full <= 0 or params_pruned > params_full:
        return None
    per = (params_full - params_pruned) / n_removed
    ffn = per * n_neurons
    return ParameterBreakdown(params_full=int(params_full), params_pruned=int(params_pruned),
                              n_removed=int(n_removed), n_neurons=int(n_neurons),
                              per_neuron=per, ffn=ffn, ffn_share=ffn / params_full,
                              neuron_share=n_removed / n_neurons,
                              removed_share=(params_full - params_pruned) / params_full)
