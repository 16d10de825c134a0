"""Prompt-tuning errors: one line naming the problem and the fix."""

from neurondb.extract.errors import ExtractError


class TuneError(ExtractError):
    """Bad input to prompt tuning, evaluation or transfer (data, labels, prompt, output)."""
