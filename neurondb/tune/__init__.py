"""Prompt tuning and transfer (SPEC §7): ``tune_prompt``, ``evaluate``, ``transfer``."""

from __future__ import annotations

from neurondb.tune.errors import TuneError
from neurondb.tune.evaluate import Evaluation, evaluate
from neurondb.tune.train import PromptTuner, TuneConfig, TunedPrompt, tune_prompt
from neurondb.tune.transfer import relative_performance, transfer

__all__ = ["Evaluation", "PromptTuner", "TuneConfig", "TuneError", "TunedPrompt", "evaluate",
           "relative_performance", "transfer", "tune_prompt"]
