"""SQL macros given an unknown ranking, mask or correlation name fail naming the valid ones."""

from __future__ import annotations

import duckdb
import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.query import correlate, make_mask, predictivity, random_ranking
from neurondb.query.errors import QueryError
from neurondb.store import open_store


@pytest.fixture
def named(skill_store):
    """A store with rankings ``A`` and ``R``, correlation ``AR`` and mask ``mA``."""
    st = skill_store
    predictivity(st, "ev", "tr", name="A")
    random_ranking(st, seed=1, name="R")
    correlate(st, "A,R", name="AR")
    make_mask(st, "A", 0.25, name="mA")
    return open_store(st.path)  # a new connection sees the result views


RANKING_MACROS = [
    "skill_neurons('nope')",
    "skill_neurons('nope', fraction := 0.5)",
    "top_neurons('nope', k := 3)",
    "skill_layer_histogram('nope')",
    "skill_neurons_only_in('nope', 'A')",
    "skill_neurons_only_in('A', 'nope')",
]


@pytest.mark.parametrize("call", RANKING_MACROS)
def test_unknown_ranking_is_an_error_naming_the_rankings(named, call):
    with pytest.raises(QueryError, match=r"no ranking named 'nope'; rankings in this store: A, R"):
        named.connection.arrow(f"SELECT * FROM {call}")
    # through Store.sql the error comes when the rows are fetched (a DuckDB relation is lazy)
    with pytest.raises((QueryError, duckdb.Error), match=r"no ranking named 'nope'.*A, R"):
        named.sql(f"SELECT * FROM {call}").fetchall()


@pytest.mark.parametrize("call", ["mask_neurons('nope')", "mask_layer_histogram('nope')"])
def test_unknown_mask_is_an_error_naming_the_masks(named, call):
    with pytest.raises(QueryError, match=r"no mask named 'nope'; masks in this store: mA"):
        named.connection.arrow(f"SELECT * FROM {call}")


def test_unknown_correlation_pair_is_an_error_naming_the_pairs(named):
    with pytest.raises(QueryError, match=r"no correlation of rankings 'A' and 'nope'; "
                                         r"correlated pairs \(a, b\): A, R; R, A"):
        named.connection.arrow("SELECT * FROM ranking_correlation('A', 'nope')")
    with pytest.raises(QueryError, match=r"no correlation of rankings 'A' and 'A'"):
        named.connection.arrow("SELECT * FROM ranking_correlation('A', 'A')")
    assert named.connection.arrow("SELECT * FROM ranking_correlation('R', 'A')").num_rows > 0


def test_known_names_still_answer(named):
    assert named.connection.arrow("SELECT * FROM skill_neurons('A', fraction := 0.25)").num_rows
    assert named.connection.arrow("SELECT * FROM top_neurons('R', k := 3)").num_rows == 3
    assert named.connection.arrow("SELECT * FROM mask_neurons('mA')").num_rows
    # a name that holds no selected neuron is not an error: just no rows
    assert named.connection.arrow("SELECT * FROM skill_neurons('A', fraction := 0)").num_rows == 0
    assert named.connection.arrow("SELECT * FROM skill_neurons_only_in('A', 'A')").num_rows == 0


def test_cli_query_unknown_ranking_is_one_line(named):
    res = CliRunner().invoke(app, ["query", str(named.path), "SELECT * FROM skill_neurons('nope')"])
    assert res.exit_code != 0
    out = (res.stdout + (res.stderr or "")).strip()
    assert "no ranking named 'nope'" in out and "A, R" in out, out
    assert "Traceback" not in out
