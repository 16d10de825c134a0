"""Errors with one-line messages that name the problem and the fix."""


class NeurondbError(Exception):
    """Base class: its message is shown to CLI users as a single line."""


class StoreError(NeurondbError):
    """A store is missing, malformed, or does not fit the request."""
