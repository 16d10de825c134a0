"""``activations(split := ...)`` refuses to merge several runs, like ``Store.activations``."""

from __future__ import annotations

import pytest

from neurondb.errors import NeurondbError
from neurondb.store import open_store
from neurondb.testing_stores import write_periodic_run

from .conftest import SLOTS, planted


@pytest.fixture
def two_prompt_store(skill_store):
    """The planted store with a second validation run ``ev2`` (another prompt, same split)."""
    ev2 = planted(50, SLOTS, seed=3)
    write_periodic_run(skill_store.path, "ev2", "validation", ev2.labels, SLOTS, ev2.acts,
                       id_offset=1000)
    return open_store(skill_store.path)


def test_split_matching_several_runs_is_refused_with_the_runs_named(two_prompt_store):
    st = two_prompt_store
    with pytest.raises(NeurondbError) as sql_err:
        st.sql("SELECT count(*) FROM activations(split := 'validation', layer := 0, "
               "neuron := 1)").fetchall()
    msg = str(sql_err.value)
    assert "split 'validation' has several runs" in msg and "ev, ev2" in msg
    assert "run := 'ev'" in msg and "all_runs := true" in msg and "\n" not in msg.strip()
    # the Python API refuses the same way (same opening words)
    with pytest.raises(NeurondbError, match="split 'validation' has several runs"):
        st.activations(0, split="validation")


def test_run_or_all_runs_answers(two_prompt_store):
    st = two_prompt_store
    one = st.sql("SELECT count(*) FROM activations(run := 'ev', split := 'validation', "
                 "layer := 0, neuron := 1)").fetchall()[0][0]
    both = st.sql("SELECT run, count(*) FROM activations(split := 'validation', layer := 0, "
                  "neuron := 1, all_runs := true) GROUP BY run ORDER BY run").fetchall()
    assert one == 200 * len(SLOTS)
    assert both == [("ev", 200 * len(SLOTS)), ("ev2", 50 * len(SLOTS))]
    # no split filter at all is an explicit "every run" (the rows carry `run`)
    every = st.sql("SELECT count(DISTINCT run) FROM activations(layer := 0, neuron := 1)")
    assert every.fetchall()[0][0] == 2


def test_a_split_with_one_run_needs_no_run(skill_store):
    n = skill_store.sql("SELECT count(*) FROM activations(split := 'validation', layer := 1, "
                        "neuron := 5)").fetchall()[0][0]
    assert n == 200 * len(SLOTS)
