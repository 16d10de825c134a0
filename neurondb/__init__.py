"""neurondb: an activation database and query tool for transformer language models."""

from __future__ import annotations

__version__ = "0.1.0"

from neurondb.store import reader as _reader  # noqa: E402
from neurondb.store.reader import Store, open_store  # noqa: E402

# the store opens its SQL connection from the query layer above it (no store -> query import)
_reader.CONNECTOR = "neurondb.query.connection:QueryConnection"

open = open_store  # noqa: A001  (neurondb.open(path) is the public spelling)
# callable packages: neurondb.extract(model, data, out, ...), neurondb.tune(model, data, out, ...)
from neurondb import extract, tune  # noqa: E402


def suppress(model, data, **kwargs):
    """Suppression evaluation (:func:`neurondb.intervene.suppress.suppress`)."""
    from neurondb.intervene.suppress import suppress as _suppress

    return _suppress(model, data, **kwargs)


def load_pruned(path, model_class=None, **kwargs):
    """Load a model exported by ``neurondb prune`` (see :func:`neurondb.runtime.pruned.load_pruned`)."""
    from neurondb.runtime.pruned import load_pruned as _load

    return _load(path, model_class=model_class, **kwargs)


__all__ = ["load_pruned", "Store", "open", "open_store", "extract", "tune", "suppress",
           "__version__"]
