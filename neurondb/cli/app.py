"""`neurondb` command line: parses, calls the library, prints.

Commands live in small modules that each expose ``register(app)``.
"""

from __future__ import annotations

import importlib
import sys

import typer

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
    "neurondb.cli.intervene_cmd",
    "neurondb.cli.suppress_cmd",
    "neurondb.cli.tune_cmd",
    "neurondb.cli.demo_cmd",
    "neurondb.cli.report_cmd",
)

for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _e:  # a command module not written yet
        if _e.name != _name:
            raise
        continue
    _mod.register(app)


def main() -> None:
    """Console entry point: a NeurondbError is one line on stderr and exit code 2."""
    from neurondb.cli.errors import print_error
    from neurondb.errors import NeurondbError

    try:
        app()
    except NeurondbError as e:
        print_error(e)
        sys.exit(2)


if __name__ == "__main__":
    main()
