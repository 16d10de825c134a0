"""Errors of the report: one line that names the problem and the fix."""

from __future__ import annotations

from neurondb.store.errors import NeurondbError


class ReportError(NeurondbError):
    """The report cannot be made as asked (a missing prompt directory, an unwritable path)."""
