"""``neurondb serve``: a local, read-only web app over a store."""

from __future__ import annotations

from pathlib import Path

import typer

from neurondb.cli.errors import one_line_errors


def serve_command(
    store: Path = typer.Argument(..., help="Store directory."),
    also: list[Path] | None = typer.Option(None, "--with", help="Open another store together "
                                           "with STORE (repeatable)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this "
                             "machine only)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a --host other "
                                      "than loopback (anyone who reaches it reads the store)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Read a store that failed "
                                   "verification (what is intact)."),
) -> None:
    """Browse a store in a web browser: runs, rankings, neuron pages, a SQL console."""
    from neurondb.serve.server import serve

    with one_line_errors():
        serve([store, *(also or [])], host=host, port=port, allow_remote=allow_remote,
              verify=not no_verify, say=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
