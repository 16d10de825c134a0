"""`neurondb` command line: parses, calls the library, prints.

Commands live in small modules that each expose ``register(app)``.
"""

from __future__ import annotations

import importlib
import sys

import typer

from neurondb import __version__


def _tidy_rich_help() -> None:
    """Make typer's rich help show a flag as a flag and a positional as ``MODEL``.

    Cause: typer 0.2x renders help through its own copy of click and its rich help prints
    ``TyperOption.display_type_rich`` for every option, so an on/off flag that takes no value
    reads ``--grad <bool>``; its usage line wraps each required positional in braces
    (``{model}``) where click and every man page write ``MODEL`` (optional: ``[MODEL]``).
    The plain (non-rich) help already leaves flags without a type. Older typers have neither
    method and already render both the usual way, so nothing is changed there.
    """
    from typer import core

    option = getattr(core, "TyperOption", None)
    if option is not None and hasattr(option, "display_type_rich"):
        type_of = option.display_type_rich

        def display_type_rich(self, ctx):  # noqa: ANN001, ANN202 - typer's signature
            if getattr(self, "is_flag", False) and getattr(self, "metavar", None) is None:
                return None  # an on/off flag takes no value: no type to show
            return type_of(self, ctx)

        option.display_type_rich = display_type_rich

    argument = getattr(core, "TyperArgument", None)
    if argument is not None and hasattr(argument, "_usage_display_name"):

        def _usage_display_name(self) -> str:
            name = self.metavar if self.metavar is not None else self.name.upper()
            if not self.required:
                name = f"[{name}]"
            if self.nargs != 1:
                name += "..."
            return name

        argument._usage_display_name = _usage_display_name


_tidy_rich_help()

app = typer.Typer(
    name="neurondb",
    help="An activation database for transformer FFN neurons: extract, query, rank, prune.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = (
    "neurondb.cli.extract_cmd",
    "neurondb.cli.store_cmd",
    "neurondb.cli.analyze_cmd",
    "neurondb.cli.profile_cmd",
    "neurondb.cli.intervene_cmd",
    "neurondb.cli.suppress_cmd",
    "neurondb.cli.tune_cmd",
    "neurondb.cli.demo_cmd",
    "neurondb.cli.report_cmd",
    "neurondb.cli.serve_cmd",
)



def _print_version(value: bool) -> None:
    """``--version``: print ``neurondb X.Y.Z`` and stop."""
    if value:
        typer.echo(f"neurondb {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the neurondb version and exit."),
) -> None:
    """An activation database for transformer FFN neurons: extract, query, rank, prune."""


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _e:  # a command module not written yet
        if _e.name != _name:
            raise
        continue
    _mod.register(app)


def _one_line_warnings() -> None:
    """Show neurondb's own warnings as ``warning: <message>`` (one line, no source line);
    any other warning the usual way."""
    import warnings

    from neurondb.errors import NeurondbWarning

    plain = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):  # noqa: ANN001, ANN202
        if isinstance(category, type) and issubclass(category, NeurondbWarning):
            return f"warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


def main() -> None:
    """Console entry point: a NeurondbError is one line on stderr and exit code 2."""
    from neurondb.cli.errors import print_error
    from neurondb.errors import NeurondbError, cli_surface

    _one_line_warnings()
    try:
        with cli_surface():
            app()
    except NeurondbError as e:
        print_error(e)
        sys.exit(2)


if __name__ == "__main__":
    main()
