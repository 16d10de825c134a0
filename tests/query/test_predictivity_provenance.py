"""Baselines from a store of another model are refused (issue 11: provenance enforced)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.errors import ProvenanceError
from neurondb.query import predictivity
from neurondb.store import open_store
from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run

from .conftest import PLANTS, SLOTS, planted


def _stores(tmp_path, fp_train: str):
    ev_root = make_store(tmp_path / "ev", fingerprint="a" * 32, name="model-a")
    tr_root = make_store(tmp_path / "tr", fingerprint=fp_train, name="model-b")
    tr = planted(60, SLOTS, seed=71, plants=PLANTS)
    ev = planted(30, SLOTS, seed=72, plants=PLANTS)
    write_stats_run(tr_root, "tr", "train", tr.labels, SLOTS, tr.acts)
    write_periodic_run(ev_root, "ev", "validation", ev.labels, SLOTS, ev.acts, dtype="float32")
    return ev_root, tr_root


def test_baselines_of_another_model_are_refused_naming_both(tmp_path):
    ev_root, tr_root = _stores(tmp_path, "b" * 32)
    with pytest.raises(ProvenanceError) as e:
        predictivity(open_store(ev_root), "ev", "tr", train_store=tr_root, write=False)
    msg = str(e.value)
    assert "model-a" in msg and "model-b" in msg and "allow_foreign=True" in msg
    assert "\n" not in msg
    # stores opened together are checked the same way
    with pytest.raises(ProvenanceError):
        predictivity(open_store(ev_root, tr_root), "ev", "tr", write=False)
    df = predictivity(open_store(ev_root), "ev", "tr", train_store=tr_root, write=False,
                      allow_foreign=True)
    assert len(df) == 32


def test_same_model_in_two_stores_is_accepted(tmp_path):
    ev_root, tr_root = _stores(tmp_path, "a" * 32)
    df = predictivity(open_store(ev_root), "ev", "tr", train_store=tr_root, write=False)
    assert len(df) == 32


def test_cli_refuses_in_one_line_and_writes_nothing(tmp_path):
    ev_root, tr_root = _stores(tmp_path, "b" * 32)
    res = CliRunner().invoke(app, ["rank", str(ev_root), "--eval", "ev", "--train", "tr",
                                   "--train-store", str(tr_root), "--name", "x"])
    assert res.exit_code == 2, res.output
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "another model" in errors[0]
    assert not (ev_root / "results" / "rankings" / "x.parquet").exists()
    res = CliRunner().invoke(app, ["rank", str(ev_root), "--eval", "ev", "--train", "tr",
                                   "--train-store", str(tr_root), "--name", "x",
                                   "--allow-foreign"])
    assert res.exit_code == 0, res.output
    assert (ev_root / "results" / "rankings" / "x.parquet").exists()
