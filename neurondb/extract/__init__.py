"""Extraction: hooks, batching, templates/verbalizers, soft prompts and the capture loop.

``neurondb.extract`` is both this package and a function: ``neurondb.extract(model, data,
out, ...)`` calls :func:`neurondb.extract.run.extract`.
"""

from __future__ import annotations

from neurondb.callable_module import make_callable

make_callable(__name__, "neurondb.extract.run:extract")
