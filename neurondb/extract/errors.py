"""Extraction errors: one line naming the problem and the fix."""

from neurondb.store.errors import NeurondbError


class ExtractError(NeurondbError):
    """Bad input to an extraction (model, data, template, prompt, output directory)."""
