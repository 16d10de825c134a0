"""Re-exports of :mod:`neurondb.errors` (the one home of neurondb's errors)."""

from neurondb.errors import (  # noqa: F401
    ExportError,
    MaskShapeError,
    NoAcceptableRatioError,
    PruneError,
)
