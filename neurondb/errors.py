"""neurondb's own errors: one base class, one line each, naming the problem and the fix.

The CLI turns exactly these (and nothing else) into ``error: <message>`` and exit code 2, so a
real bug still shows as a traceback. Sub-packages import their error classes from here; the
old per-package modules (``neurondb.store.errors`` ...) re-export them.
"""

from __future__ import annotations


class NeurondbError(Exception):
    """Base class: its message is shown to CLI users as a single line."""


class UsageError(NeurondbError, ValueError):
    """A bad argument value (a flag out of range, an unknown choice).

    Also a ``ValueError`` so that Python callers that catch ``ValueError`` keep working.
    """


class StoreError(NeurondbError):
    """A store is missing, malformed, damaged, or does not fit the request."""


class StoreIOError(StoreError):
    """An operating-system error (disk full, I/O error, permission) while reading or writing a
    store; the message names the path and the errno."""


class LockedError(StoreError):
    """Another live process holds the lock of a store, a run or a result."""


class ProvenanceError(StoreError):
    """A ranking, mask, means or store of another model (fingerprints differ)."""


class QueryError(StoreError):
    """An analysis or SQL query was asked something the store cannot answer as asked."""


class ExtractError(NeurondbError):
    """Bad input to an extraction (model, data, template, prompt, output directory)."""


class InputDecodeError(ExtractError):
    """A data file whose text cannot be decoded, or whose text is missing."""


class TuneError(ExtractError):
    """Bad input to prompt tuning or transfer."""


class MaskShapeError(NeurondbError):
    """A mask names a stack, layer or neuron the model does not have (a mask of another model)."""


class PruneError(NeurondbError):
    """A pruning request that cannot be carried out as asked (bad ratio, missing means, ...)."""


class NoAcceptableRatioError(PruneError):
    """The ratio search found no grid ratio within the margin (the search table is written)."""


class ExportError(NeurondbError):
    """An export directory that exists, or an export that cannot be written or read back."""


class ReportError(NeurondbError):
    """The report cannot be made as asked (a missing prompt directory, an unwritable path)."""


def one_line(msg: str) -> str:
    """Collapse whitespace so a message built from several parts stays on one line."""
    return " ".join(str(msg).split())


class ServeError(NeurondbError):
    """A request the store browser (``neurondb serve``) cannot answer as asked; ``status`` is
    the HTTP status it is answered with."""

    status = 400


class NotFoundError(ServeError):
    """A URL naming a run, ranking, layer or neuron the store does not have (HTTP 404)."""

    status = 404


class BadRequestError(ServeError):
    """A malformed query parameter (HTTP 400)."""

    status = 400
