"""neurondb's own errors: one base class, one line each, naming the problem and the fix.

The CLI turns exactly these (and nothing else) into ``error: <message>`` and exit code 2, so a
real bug still shows as a traceback. Sub-packages import their error classes from here; the
old per-package modules (``neurondb.store.errors`` ...) re-export them.
"""

from __future__ import annotations

import contextlib
import re


class NeurondbError(Exception):
    """Base class: its message is shown to CLI users as a single line."""


class NeurondbWarning(UserWarning):
    """Base class of neurondb's own warnings: the CLI shows each as ``warning: <message>``,
    one line on stderr."""


class RandomWeightsWarning(NeurondbWarning):
    """A model loaded with weights its checkpoint does not have (initialised at random) in a
    part of the model whose activations neurondb reads."""


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


# Which surface the caller uses: "python" (the API; errors name its arguments) or "cli" (a
# command is running; errors name its flags). A process-wide flag rather than a ContextVar so
# that errors raised in worker threads (the writer thread, a data loader) read it too.
_surface = "python"


@contextlib.contextmanager
def cli_surface():
    """Within this block errors name CLI flags (``--overwrite``) instead of the Python API's
    arguments (``overwrite=True``); :func:`neurondb.cli.errors.one_line_errors` enters it."""
    global _surface
    before, _surface = _surface, "cli"
    try:
        yield
    finally:
        _surface = before


def on_cli() -> bool:
    """True while a CLI command runs (see :func:`cli_surface`)."""
    return _surface == "cli"


def arg(name: str, flag: str | None = None) -> str:
    """An option as the caller spells it: ``--name-with-dashes`` (or ``flag``) on the CLI,
    ``name`` in Python. ``arg("batch_size")`` → ``--batch-size`` / ``batch_size``."""
    if on_cli():
        return flag or "--" + name.replace("_", "-")
    return name


def switch(name: str, flag: str | None = None) -> str:
    """A boolean option as the caller would turn it on: ``--overwrite`` on the CLI,
    ``overwrite=True`` in Python."""
    return arg(name, flag) if on_cli() else f"{name}=True"


def switch_off(name: str, flag: str | None = None) -> str:
    """A boolean option as the caller would turn it off: ``--no-verify`` on the CLI,
    ``verify=False`` in Python."""
    if on_cli():
        return flag or "--no-" + name.replace("_", "-")
    return f"{name}=False"


def given(name: str, value: object, flag: str | None = None) -> str:
    """An option with its value as the caller writes it: ``--top-k 5`` on the CLI, ``top_k=5``
    in Python. A string value is quoted in Python (``--mode mean`` / ``mode='mean'``) unless it
    is a metavariable written in capitals (``--store STORE`` / ``store=STORE``)."""
    if on_cli():
        return f"{arg(name, flag)} {value}"
    if isinstance(value, str) and not re.fullmatch(r"[A-Z][A-Z_]*", value):
        value = repr(value)
    return f"{name}={value}"


def together(*options: str) -> str:
    """Options given together, as :func:`given` or :func:`switch` write them: one after the
    other on the CLI (``--store STORE --ranking NAME``), comma-separated in Python
    (``store=STORE, ranking=NAME``)."""
    return (" " if on_cli() else ", ").join(options)


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
