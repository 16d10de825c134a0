"""How CLI commands turn library errors into one-line messages."""

from __future__ import annotations

import contextlib
import sys

import typer

from neurondb.store.errors import NeurondbError


@contextlib.contextmanager
def one_line_errors():
    """Print a NeurondbError (or a ValueError from argument checks) as ``error: ...``; exit 2."""
    try:
        yield
    except (NeurondbError, ValueError, FileNotFoundError, KeyError) as e:
        msg = str(e).strip().strip("'\"").splitlines()[0] if str(e).strip() else type(e).__name__
        typer.echo(f"error: {msg}", err=True)
        sys.exit(2)
