"""neurondb: an activation database and query tool for transformer language models."""

from __future__ import annotations

__version__ = "0.1.0"

from neurondb.store.reader import Store, open_store  # noqa: E402

open = open_store  # noqa: A001  (neurondb.open(path) is the public spelling)


def extract(*args, **kwargs):
    """Run a model over a dataset and record FFN activations into a store.

    See :func:`neurondb.extract.run.extract` for the arguments.
    """
    from neurondb.extract.run import extract as _extract

    return _extract(*args, **kwargs)


__all__ = ["Store", "open", "open_store", "extract", "__version__"]
