"""Extraction: hooks, batching, templates/verbalizers, soft prompts and the capture loop.

``neurondb.extract`` is both this package and a function: ``neurondb.extract(model, data,
out, ...)`` calls :func:`neurondb.extract.run.extract`.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from neurondb.extract.run import extract

        return extract(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
