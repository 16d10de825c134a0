"""How CLI commands turn neurondb's own errors into one-line messages.

Only :class:`neurondb.errors.NeurondbError` is caught: any other exception is a bug and
shows as a traceback.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from neurondb.errors import NeurondbError, cli_surface, one_line


def print_error(e: BaseException) -> None:
    # the message itself, not str(): a KeyError's str() wraps it in quotes, and stripping
    # quotes off the ends would clip a message that ends in a quoted value ("not 'both'")
    text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    msg = one_line(text.strip()) or type(e).__name__
    typer.echo(f"error: {msg}", err=True)


@contextlib.contextmanager
def one_line_errors():
    """Print a NeurondbError as ``error: ...`` and exit 2; anything else propagates. Errors
    raised inside name CLI flags (:func:`neurondb.errors.cli_surface`)."""
    try:
        with cli_surface():
            yield
    except NeurondbError as e:
        print_error(e)
        sys.exit(2)
