"""Provenance: a ranking, mask or means of another model of the same shape (other weights) is
refused by the manifest fingerprint, naming both models, unless --allow-foreign; results
are written only into a store of the model that computed them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app
from neurondb.errors import ProvenanceError
from neurondb.intervene import NeuronMask
from neurondb.intervene.job import PruneRequest, run_prune
from neurondb.intervene.suppress import suppress
from neurondb.query.results import write_result

runner = CliRunner()
SCORE = dict(template="{text} It was {mask}.", verbalizer=["bad", "good"], device="cpu",
             progress=False)


def _store(path, model, data):
    neurondb.extract(str(model), str(data), path, positions="mask", stats_split="train",
                     template=SCORE["template"], verbalizer=SCORE["verbalizer"], progress=False)
    rng = np.random.default_rng(0)
    rows = [("encoder", la, n) for la in range(2) for n in range(48)]
    df = pd.DataFrame(rows, columns=["stack", "layer", "neuron"])
    df["score"] = rng.random(len(df))
    df["rank"] = df["score"].rank(ascending=False, method="first").astype(int)
    df["method"] = "test"
    with neurondb.open(path) as st:
        write_result(st, "rankings", "r", df, {"method": "test"})
    return path


@pytest.fixture(scope="module")
def two(tmp_path_factory, tiny_path, sentiment_dir):
    """Stores of two tiny BERTs of the same shape and other weights (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("prov")
    m0, m1 = tiny_path("bert"), tiny_path("bert", seed=1)
    s0 = _store(root / "s0", m0, sentiment_dir)
    s1 = _store(root / "s1", m1, sentiment_dir)
    return m0, m1, s0, s1, sentiment_dir


def _results(store, table="suppression"):
    return sorted(p.name for p in (store / "results" / table).glob("*.parquet"))


def test_suppress_refuses_a_foreign_ranking_naming_both(two):
    m0, m1, s0, s1, data = two
    with pytest.raises(ProvenanceError) as e:
        suppress(str(m0), str(data), store=s1, ranking="r", rates="10", seeds=0, **SCORE)
    msg = str(e.value)
    assert "\n" not in msg and str(s1) in msg and str(m1) in msg and str(m0) in msg
    assert "allow_foreign=True" in msg and "--allow-foreign" not in msg
    assert _results(s1) == []  # nothing was written into the foreign store


def test_suppress_allow_foreign_writes_only_to_this_models_store(two, tmp_path):
    m0, m1, s0, s1, data = two
    res = suppress(str(m0), str(data), store=s1, ranking="r", rates="10", seeds=0,
                   allow_foreign=True, name="cross", png=s1 / "results" / "suppression" / "x.png",
                   **SCORE)
    assert res.path is None and res.png is None and "not written" in res.note
    assert _results(s1) == [] and not (s1 / "results" / "suppression" / "x.png").exists()
    res = suppress(str(m0), str(data), store=s1, ranking="r", rates="10", seeds=0,
                   allow_foreign=True, results_store=s0, name="cross", **SCORE)
    assert res.path == s0 / "results" / "suppression" / "cross.parquet" and res.path.exists()
    with pytest.raises(ProvenanceError, match="results_store="):
        suppress(str(m0), str(data), store=s0, ranking="r", rates="10", seeds=0,
                 results_store=s1, name="other", **SCORE)
    own = suppress(str(m1), str(data), store=s1, ranking="r", rates="10", seeds=0,
                   name="own", **SCORE)
    assert own.path == s1 / "results" / "suppression" / "own.parquet"


def test_suppress_refuses_foreign_means_and_mask(two, tmp_path):
    m0, m1, s0, s1, data = two
    mask = NeuronMask({("encoder", 0): [1, 2, 3]})
    with pytest.raises(ProvenanceError, match="means"):
        suppress(str(m0), str(data), store=s1, mask=mask, mode="mean", seeds=0, **SCORE)
    f = tmp_path / "m1.parquet"
    NeuronMask({("encoder", 0): [1, 2, 3]}, {"store": str(s1)}).to_file(f)
    with pytest.raises(ProvenanceError) as e:
        suppress(str(m0), str(data), mask=f, seeds=0, **SCORE)
    assert str(f) in str(e.value) and str(m1) in str(e.value)
    res = suppress(str(m0), str(data), mask=f, seeds=0, allow_foreign=True, **SCORE)
    assert len(res.table) == 2
    g = tmp_path / "fp.parquet"
    NeuronMask({("encoder", 0): [1]}, {"model_fingerprint": "0" * 32, "model": "elsewhere"}
               ).to_file(g)
    with pytest.raises(ProvenanceError, match="elsewhere"):
        suppress(str(m0), str(data), mask=g, seeds=0, **SCORE)


def test_prune_refuses_foreign_ranking_and_means(two, tmp_path):
    m0, m1, s0, s1, data = two
    with pytest.raises(ProvenanceError) as e:
        run_prune(PruneRequest(model=str(m0), out=tmp_path / "p", store=s1, ranking="r",
                               ratio=0.3))
    assert str(m1) in str(e.value) and str(m0) in str(e.value)
    assert not (tmp_path / "p").exists()
    f = tmp_path / "own.parquet"
    NeuronMask({("encoder", 0): [1, 2, 3]}, {"store": str(s0)}).to_file(f)
    with pytest.raises(ProvenanceError, match="means"):
        run_prune(PruneRequest(model=str(m0), out=tmp_path / "p", mask=f, store=s1,
                               mean_compensation=True))
    out = run_prune(PruneRequest(model=str(m0), out=tmp_path / "p", store=s1, ranking="r",
                                 ratio=0.3, allow_foreign=True))
    assert out.export.prune.n_removed > 0
    ok = run_prune(PruneRequest(model=str(m0), out=tmp_path / "q", mask=f, store=s0,
                                mean_compensation=True))
    assert ok.export.prune.mean_compensation


def test_cli_refuses_then_allows(two, tmp_path):
    m0, m1, s0, s1, data = two
    args = ["prune", str(m0), "--out", str(tmp_path / "p"), "--store", str(s1), "--ranking", "r",
            "--ratio", "0.3"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert r.output.strip().count("\n") == 0 and r.output.startswith("error: the ranking 'r'")
    assert "fingerprint" in r.output and "--allow-foreign" in r.output
    r = runner.invoke(app, [*args, "--allow-foreign"])
    assert r.exit_code == 0, r.output
