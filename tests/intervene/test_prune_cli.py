"""`neurondb prune` on tiny saved models: a mask file, a store ranking + ratio, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import typer
from typer.testing import CliRunner

from neurondb.arch import adapter_for
from neurondb.cli.intervene_cmd import register
from neurondb.intervene import NeuronMask, load_pruned, replace_neurons
from neurondb.runtime.automap import load_model
from neurondb.testing import save_tiny

from .helpers import inputs, layer_mask, logits


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    register(app)

    @app.callback()
    def _main() -> None:  # keeps `prune` a named sub-command
        pass

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny("bert", tmp_path_factory.mktemp("models") / "bert")


def _store_with_ranking(root, shape, scope=None):
    rng = np.random.default_rng(0)
    rows = [(s, la, n) for s, ws in shape.widths.items() for la, d in enumerate(ws)
            for n in range(d)]
    df = pd.DataFrame(rows, columns=["stack", "layer", "neuron"])
    df["score"] = rng.random(len(df))
    df["rank"] = df["score"].rank(ascending=False, method="first").astype(int)
    if scope:
        df["rank"] = df.groupby("layer")["score"].rank(ascending=False, method="first").astype(int)
        df["scope"] = scope
    df["name"], df["method"] = "skill", "test"
    (root / "results" / "rankings").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(df), root / "results" / "rankings" / "skill.parquet")
    return df


def test_prune_with_a_mask_file(cli, bert_dir, tmp_path):
    model, _ = load_model(bert_dir)
    shape = adapter_for(model).shape(model)
    mask = layer_mask(shape)
    mask_file = mask.to_file(tmp_path / "m.parquet")
    out = tmp_path / "pruned"
    res = cli("prune", bert_dir, "--mask", mask_file, "--out", out)
    assert res.exit_code == 0, res.output
    assert "43" in res.output and "30" in res.output and "parameters" in res.output
    kw = inputs("bert")
    with replace_neurons(model, mask):
        want = logits(model, kw)
    torch.testing.assert_close(logits(load_pruned(out), kw), want, atol=1e-5, rtol=0)
    res = cli("prune", bert_dir, "--mask", mask_file, "--out", out)
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.output
    assert cli("prune", bert_dir, "--mask", mask_file, "--out", out, "--overwrite").exit_code == 0


@pytest.mark.parametrize("scope, widths", [(None, None), ("layer", [24, 24])])
def test_prune_from_a_store_ranking(cli, bert_dir, tmp_path, scope, widths):
    model, _ = load_model(bert_dir)
    shape = adapter_for(model).shape(model)
    store = tmp_path / "store"
    df = _store_with_ranking(store, shape, scope)
    out = tmp_path / "pruned"
    res = cli("prune", bert_dir, "--store", store, "--ranking", "skill", "--ratio", 0.5,
              "--out", out, "--format", "zeroed")
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "neurondb_prune.json").read_text())
    assert rec["prune"]["n_removed"] == 48 and rec["format"] == "zeroed"
    assert rec["provenance"]["ranking"] == "skill" and rec["provenance"]["ratio"] == 0.5
    removed = NeuronMask.from_file(out / "neurondb_mask.parquet")
    if scope is None:
        worst = df.nlargest(48, "rank")
    else:
        worst = df.sort_values("rank").groupby("layer").tail(24)
        assert [c for _, c in sorted(removed.counts().items())] == widths
    assert set(zip(*removed.to_arrays())) == set(
        zip(worst["stack"], worst["layer"].astype(int), worst["neuron"].astype(int)))


def test_bad_input_is_one_line(cli, bert_dir, tmp_path):
    store = tmp_path / "store"
    model, _ = load_model(bert_dir)
    _store_with_ranking(store, adapter_for(model).shape(model))
    out = tmp_path / "x"
    for args, needle in [
        (("--store", store, "--ranking", "skill", "--ratio", 1.5), "outside (0, 1)"),
        (("--store", store, "--ranking", "skill", "--ratio", 0), "outside (0, 1)"),
        (("--store", store, "--ranking", "skill"), "needs --store STORE and --ratio"),
        ((), "give either --mask FILE or --store"),
        (("--store", store, "--ranking", "nope", "--ratio", 0.2), "no ranking 'nope'"),
        (("--store", store, "--ranking", "skill", "--ratio", 0.2, "--format", "tiny"),
         "--format must be compact or zeroed"),
    ]:
        res = cli("prune", bert_dir, "--out", out, *args)
        assert res.exit_code == 2, (args, res.output)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    foreign = NeuronMask({("encoder", 1): [60]}).to_file(tmp_path / "gpt.parquet")
    res = cli("prune", bert_dir, "--mask", foreign, "--out", out)
    assert res.exit_code == 2 and "it is a mask of another model" in res.output
    assert not out.exists()


def test_mean_compensation_takes_the_store_means(cli, bert_dir, tmp_path, monkeypatch):
    import neurondb
    from neurondb.store.stats import RunningStats

    model, _ = load_model(bert_dir)
    shape = adapter_for(model).shape(model)
    rng = np.random.default_rng(1)
    st = RunningStats({"encoder": shape.widths["encoder"]}, n_labels=2)
    ids = st.slot_ids("encoder", ["mask"] * 5 + ["first"] * 3)
    st.update_counts("encoder", ids, np.zeros(8, dtype=np.int64))
    means = {}
    for la, d in enumerate(shape.widths["encoder"]):
        x = rng.normal(0.2, 1.0, size=(8, d))
        st.update("encoder", la, ids, np.zeros(8, dtype=np.int64), x)
        means[("encoder", la)] = x.mean(axis=0)

    class FakeStore:  # what the command needs of a store: running statistics of a split
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def stats(self, run=None, split=None):
            assert split == "train" and run is None
            return st

    monkeypatch.setattr(neurondb, "open_store", lambda *a: FakeStore())
    store = tmp_path / "store"
    _store_with_ranking(store, shape)
    out = tmp_path / "mc"
    res = cli("prune", bert_dir, "--store", store, "--ranking", "skill", "--ratio", 0.25,
              "--mean-compensation", "--out", out)
    assert res.exit_code == 0, res.output
    removed = NeuronMask.from_file(out / "neurondb_mask.parquet")
    kw = inputs("bert")
    with replace_neurons(model, removed, mode="mean", means=means):
        want = logits(model, kw)
    torch.testing.assert_close(logits(load_pruned(out), kw), want, atol=1e-5, rtol=0)
    rec = json.loads((out / "neurondb_prune.json").read_text())
    assert rec["prune"]["mean_compensation"] is True
    res = cli("prune", bert_dir, "--mask", out / "neurondb_mask.parquet", "--mean-compensation",
              "--out", tmp_path / "mc2")
    assert res.exit_code == 2 and "--mean-compensation takes the neuron means" in res.output
