"""Interventions on FFN neurons: suppression (replace ``h`` at selected neurons), structured
pruning, export of a pruned model Transformers can load, and loading it back.

Public API::

    NeuronMask                       selected neurons {(stack, layer): indices}
    replace_neurons(model, mask, mode="zero"|"mean"|"noise", means=None, sigma=0.1, seed=0)
    prune_model(model, mask, means=None, priority=None, fmt="compact"|"zeroed")
    export_pruned(model, tokenizer, mask, out_dir, format="compact"|"zeroed", ...)
    load_pruned(path, model_class=None, **from_pretrained_kwargs)
    mask_from_ranking(ranking_df, ratio, shape), read_ranking(store, name)
"""

from neurondb.intervene.errors import ExportError, MaskShapeError, PruneError
from neurondb.intervene.export import ExportReport, export_pruned
from neurondb.intervene.mask import NeuronMask
from neurondb.intervene.prune import (
    PruneReport,
    means_from_stats,
    parameter_count,
    prune_model,
    tensor_bytes,
)
from neurondb.intervene.replace import replace_neurons
from neurondb.intervene.selection import (
    check_ratio,
    mask_from_ranking,
    priority_from_ranking,
    read_ranking,
)
from neurondb.runtime.pruned import load_pruned

__all__ = [
    "ExportError", "ExportReport", "MaskShapeError", "NeuronMask", "PruneError", "PruneReport",
    "check_ratio", "export_pruned", "load_pruned", "mask_from_ranking", "means_from_stats",
    "parameter_count", "priority_from_ranking", "prune_model", "read_ranking",
    "replace_neurons", "tensor_bytes",
]
