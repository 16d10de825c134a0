"""One-line errors of the intervention layer (suppression, pruning, export)."""

from neurondb.store.errors import NeurondbError


class MaskShapeError(NeurondbError):
    """A mask names a stack, layer or neuron the model does not have (a mask of another model)."""


class PruneError(NeurondbError):
    """A pruning request that cannot be carried out as asked (bad ratio, missing means, ...)."""


class NoAcceptableRatioError(PruneError):
    """The ratio search found no grid ratio within the margin (the search table is written)."""


class ExportError(NeurondbError):
    """An export directory that exists, or an export that cannot be written or read back."""
