"""Prompt tuning and transfer (SPEC §7): ``tune_prompt``, ``evaluate``, ``transfer``.

``neurondb.tune`` is both this package and a function: ``neurondb.tune(model, data, out,
...)`` calls :func:`neurondb.tune.train.tune_prompt`.

Names are imported on first use so that ``import neurondb.tune.defaults`` (the CLI) stays
light.
"""

from __future__ import annotations

import importlib

from neurondb.callable_module import make_callable

_EXPORTS = {
    "TuneError": "neurondb.tune.errors",
    "Evaluation": "neurondb.runtime.evaluate",
    "evaluate": "neurondb.runtime.evaluate",
    "PromptTuner": "neurondb.tune.train",
    "TuneConfig": "neurondb.tune.train",
    "TunedPrompt": "neurondb.tune.train",
    "tune_prompt": "neurondb.tune.train",
    "relative_performance": "neurondb.tune.transfer",
    "transfer": "neurondb.tune.transfer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'neurondb.tune' has no attribute {name!r}")


make_callable(__name__, "neurondb.tune.train:tune_prompt")
