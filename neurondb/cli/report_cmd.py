"""`neurondb report`: one self-contained HTML page of a store's provenance and results."""

from __future__ import annotations

from pathlib import Path

import typer

from neurondb.cli.errors import one_line_errors


def report_command(
    store: Path = typer.Argument(..., help="Store directory."),
    out: Path | None = typer.Option(None, "--out", "-o", help="The HTML file to write "
                                    "(default: STORE/report.html)."),
    prompts: str | None = typer.Option(None, "--prompts", help="Tuned-prompt directories, "
                                       "comma-separated (`neurondb tune --out` directories or "
                                       "their seed-<k> directories): adds the training curves."),
    condensed: str | None = typer.Option(None, "--condensed", help="Prompt directories "
                                         "re-tuned on a pruned model (`neurondb tune "
                                         "--from-prompt` output), comma-separated: adds the "
                                         "condensation section and finding."),
    title: str | None = typer.Option(None, "--title", help="Page title."),
    also: list[Path] | None = typer.Option(None, "--with", help="Open another store together "
                                           "with STORE (repeatable)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the integrity check."),
) -> None:
    """Write one HTML page (figures embedded, opens offline) with the store's model, runs and
    every result it holds: rankings, top examples, correlations, transfer, suppression,
    pruning, and prompt-tuning curves with --prompts."""
    from neurondb.report import write_report
    from neurondb.store import open_store

    with one_line_errors():
        st = open_store(store, *(also or []), verify=not no_verify)
        try:
            summary = write_report(st, out or Path(store) / "report.html", prompts=prompts,
                                   condensed=condensed, title=title)
        finally:
            st.close()
        typer.echo(summary.text())


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
