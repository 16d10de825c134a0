"""The small things a user meets at once: ``--version``, help that reads cleanly, long names."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def commands() -> dict:
    """``{name: command}`` of the app (typer's own click copy or click: duck-typed)."""
    return dict(typer.main.get_command(app).commands)


def test_version_flag_prints_the_package_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"neurondb {neurondb.__version__}"
    assert re.fullmatch(r"neurondb \d+\.\d+\.\d+\S*", res.stdout.strip())


def test_version_flag_through_the_console_entry_point():
    code = "import sys; sys.argv = ['neurondb', '--version']; from neurondb.cli.app import main; main()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"neurondb {neurondb.__version__}"


def test_commands_still_run_under_the_version_callback():
    res = runner.invoke(app, ["top", "--help"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "neurondb top" in res.stdout


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_shows_flags_as_flags_and_positionals_in_capitals(name):
    res = runner.invoke(app, [name, "--help"], env=WIDE)
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "<bool>" not in text, f"{name} --help shows a type for an on/off flag"
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage
    for param in commands()[name].params:
        if param.param_type_name == "argument":
            shown = param.name.upper() if param.required else f"[{param.name.upper()}]"
            assert shown in usage, (shown, usage)


def test_value_options_keep_type_and_default():
    res = runner.invoke(app, ["extract", "--help"], env=WIDE)
    line = next(x for x in res.stdout.splitlines() if "--batch-size" in x)
    assert "<int>" in line and "[default: 32]" in line, line
    grad = next(x for x in res.stdout.splitlines() if "--grad " in x)
    assert "Also record gradients" in grad and "<" not in grad.split("Also")[0], grad


def test_every_short_flag_has_a_long_name():
    missing = []
    for name, cmd in commands().items():
        for param in cmd.params:
            if param.param_type_name == "option":
                opts = list(param.opts) + list(param.secondary_opts)
                if not any(o.startswith("--") for o in opts):
                    missing.append(f"{name} {'/'.join(opts)}")
    assert not missing, f"short flags without a long name: {missing}"


def test_top_k_long_and_short_forms_agree():
    top = {p.name: p for p in commands()["top"].params}
    corr = {p.name: p for p in commands()["correlate"].params}
    assert {"--top-k", "-k"} <= set(top["k"].opts)
    assert {"--top-k", "-k"} <= set(corr["k"].opts)
