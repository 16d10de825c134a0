"""Prompt tuning and transfer (SPEC §7): ``tune_prompt``, ``evaluate``, ``transfer``.

``neurondb.tune`` is both this package and a function: ``neurondb.tune(model, data, out,
...)`` calls :func:`neurondb.tune.train.tune_prompt`.

Names are imported on first use so that ``import neurondb.tune.defaults`` (the CLI) stays
light.
"""

from __future__ import annotations

from neurondb.callable_module import lazy_exports, make_callable

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

lazy_exports(__name__, _EXPORTS)


make_callable(__name__, "neurondb.tune.train:tune_prompt")
