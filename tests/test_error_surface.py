"""Errors name the caller's own spelling: CLI flags on the command line, arguments in Python."""

from __future__ import annotations

import threading

from neurondb.cli.errors import one_line_errors
from neurondb.errors import arg, cli_surface, given, on_cli, switch, switch_off, together


def test_python_surface_names_arguments():
    assert not on_cli()
    assert arg("batch_size") == "batch_size"
    assert switch("overwrite") == "overwrite=True"
    assert switch_off("verify") == "verify=False"


def test_cli_surface_names_flags_and_is_restored():
    with cli_surface():
        assert arg("batch_size") == "--batch-size"
        assert arg("store_path", "--store") == "--store"
        assert switch("overwrite") == "--overwrite"
        assert switch_off("verify") == "--no-verify"
    assert arg("batch_size") == "batch_size"


def test_cli_surface_reaches_worker_threads_and_one_line_errors_enters_it():
    seen = []
    with one_line_errors():
        t = threading.Thread(target=lambda: seen.append(arg("overwrite")))
        t.start()
        t.join()
    assert seen == ["--overwrite"]
    assert not on_cli()


def test_given_writes_the_value_as_the_caller_would():
    assert given("top_k", 5) == "top_k=5"
    assert given("mode", "mean") == "mode='mean'"
    assert given("store", "STORE") == "store=STORE"
    with cli_surface():
        assert given("top_k", 5) == "--top-k 5"
        assert given("mode", "mean") == "--mode mean"
        assert given("store_path", "STORE", "--store") == "--store STORE"
        assert together(given("store", "STORE"), switch("search")) == "--store STORE --search"
    assert together(given("store", "STORE"), switch("search")) == "store=STORE, search=True"


def test_a_message_ending_in_a_quoted_value_keeps_its_quote(capsys):
    import pytest

    from neurondb.errors import StoreError, UsageError

    for exc in (UsageError("mode must be 'a' or 'b', not 'both'"),
                StoreError("mode must be 'a' or 'b', not 'both'")):
        with pytest.raises(SystemExit), one_line_errors():
            raise exc
        assert capsys.readouterr().err.strip() == "error: mode must be 'a' or 'b', not 'both'"
