"""Suppression evaluation (SPEC §5) on a model whose skill neurons are planted by construction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app
from neurondb.intervene import NeuronMask, PruneError
from neurondb.intervene.scoring import prepare_scorer
from neurondb.intervene.selection import top_from_ranking
from neurondb.intervene.suppress import Selection, parse_rates, suppress, suppression_table
from neurondb.query.results import write_result
from neurondb.testing_planted import NEG_NEURON, POS_NEURON, build_planted, sentences

runner = CliRunner()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def planted_store(planted, tmp_path_factory):
    """A store of the planted model with a global ranking: the planted neurons first, then
    the rest of layer 0 and layer 1 interleaved."""
    out = tmp_path_factory.mktemp("pstore") / "store"
    neurondb.extract(str(planted.model_dir), str(planted.data_dir), out,
                     prompt=str(planted.prompt_dir), split="validation", progress=False,
                     device="cpu", stats_split="train")
    order = [("encoder", 0, POS_NEURON), ("encoder", 0, NEG_NEURON)]
    rest = [("encoder", la, n) for n in range(48) for la in (0, 1)
            if not (la == 0 and n in (POS_NEURON, NEG_NEURON))]
    order += rest
    df = pd.DataFrame(order, columns=["stack", "layer", "neuron"])
    df["score"] = np.linspace(1.0, 0.0, len(df))
    df["rank"] = np.arange(1, len(df) + 1)
    df["method"] = "planted"
    with neurondb.open(out) as st:
        write_result(st, "rankings", "planted", df, {"method": "planted"})
    return out


def _hits(mask: NeuronMask) -> bool:
    idx = mask.get("encoder", 0)
    return bool(np.isin([POS_NEURON, NEG_NEURON], idx).any())


def test_planted_model_reads_the_label_through_the_planted_neurons(planted):
    sc = prepare_scorer(None, str(planted.data_dir), prompt=planted.prompt_dir, device="cpu")
    assert sc.evaluate().accuracy == 1.0
    only_pos = NeuronMask({("encoder", 0): [POS_NEURON]})
    from neurondb.intervene import replace_neurons

    with replace_neurons(sc.lm.model, only_pos):
        ev = sc.evaluate()
    labels = sc.data.labels
    # negatives are still read, positives fall to the tie-break (label 0)
    assert (ev.predictions[labels == 0] == 0).all() and (ev.predictions[labels == 1] == 0).all()


def test_removing_planted_neurons_drops_to_chance_random_ones_do_not(planted, planted_store):
    res = suppress(None, str(planted.data_dir), prompt=planted.prompt_dir, store=planted_store,
                   ranking="planted", rates=(0.03, 0.10, 0.15), seeds=4, device="cpu",
                   progress=False)
    t = res.table
    assert list(t.columns) == ["rate", "selection", "seed", "accuracy", "n", "n_neurons",
                               "mode", "data", "split"]
    assert t[t.selection == "none"].accuracy.tolist() == [1.0]
    skill = t[t.selection == "skill"]
    assert skill.rate.tolist() == [0.03, 0.10, 0.15]
    assert skill.n_neurons.tolist() == [3, 10, 14]  # floor(r * 96 + 0.5)
    assert (skill.accuracy == 0.5).all()  # balanced labels, tie broken towards label 0
    rnd = t[t.selection == "random"]
    assert len(rnd) == 3 * 4 and (rnd.n == 40).all()
    df = pd.read_parquet(planted_store / "results" / "rankings" / "planted.parquet")
    sc = prepare_scorer(None, str(planted.data_dir), prompt=planted.prompt_dir, device="cpu")
    shape = sc.shape()
    for r in rnd.itertuples():
        m = top_from_ranking(df, r.rate, shape).random_like(r.seed, shape)
        assert r.n_neurons == len(m)
        # a random draw that misses both planted neurons leaves every prediction intact
        assert (r.accuracy == 1.0) == (not _hits(m)), (r.rate, r.seed, r.accuracy)
    assert rnd.accuracy.mean() >= 0.8
    # the table is in the store, with provenance, and SQL sees it
    saved = pq.read_table(res.path).to_pandas()
    assert saved.accuracy.tolist() == t.accuracy.tolist()
    meta = json.loads(saved.params.iloc[0])
    assert meta["ranking"] == "planted" and meta["mode"] == "zero" and meta["seeds"] == 4
    with neurondb.open(planted_store) as st:
        got = st.sql("SELECT count(*) FROM suppression WHERE selection = 'skill'").fetchall()
    assert got[0][0] == 3


def test_mean_and_noise_modes(planted, planted_store):
    # mean replacement of the planted neurons by their training means: constant u offset,
    # so every sentence gets the same sign -> one class only
    res = suppress(None, str(planted.data_dir), prompt=planted.prompt_dir, store=planted_store,
                   ranking="planted", rates=(0.03,), seeds=1, mode="mean", device="cpu",
                   name="mean", progress=False)
    assert res.table[res.table.selection == "skill"].accuracy.iloc[0] == 0.5
    noisy = suppress(None, str(planted.data_dir), prompt=planted.prompt_dir,
                     store=planted_store, ranking="planted", rates=(0.03,), seeds=1,
                     mode="noise", sigma=0.1, device="cpu", name="noise", progress=False)
    # small noise on h leaves the large planted signal readable
    assert noisy.table[noisy.table.selection == "skill"].accuracy.iloc[0] == 1.0
    again = suppress(None, str(planted.data_dir), prompt=planted.prompt_dir,
                     store=planted_store, ranking="planted", rates=(0.03,), seeds=1,
                     mode="noise", sigma=0.1, device="cpu", name="noise", overwrite=True,
                     progress=False)
    pd.testing.assert_frame_equal(noisy.table, again.table)


def test_ranking_of_one_dataset_on_another(planted, planted_store, tmp_path):
    """Masks from one dataset evaluated on another (clean ranking, shifted data)."""
    texts, labels = sentences(30, seed=99)
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame({"sentence": [t.upper().lower() + " ." for t in texts],
                  "label": labels}).to_parquet(other / "validation.parquet")
    res = suppress(None, str(other), prompt=planted.prompt_dir, store=planted_store,
                   ranking="planted", rates=(0.03,), seeds=2, device="cpu", progress=False)
    t = res.table
    assert t[t.selection == "none"].accuracy.iloc[0] == 1.0
    assert t[t.selection == "skill"].accuracy.iloc[0] == 0.5
    assert (t.data == str(other)).all() and (t.n == 30).all()


def test_mask_file_and_reference_loop(planted, tmp_path):
    """A mask file's rows, compared with a naive loop: zero the neurons by hand in the
    weights and score."""
    import torch

    mask = NeuronMask({("encoder", 0): [POS_NEURON, 3], ("encoder", 1): [5]})
    path = mask.to_file(tmp_path / "m.parquet")
    sc = prepare_scorer(None, str(planted.data_dir), prompt=planted.prompt_dir, device="cpu")
    t = suppression_table(sc, [Selection(3 / 96, mask, "mask")],
                          seeds=2, progress=False)
    # reference: zero W_out columns of the selected neurons (equals h_i = 0)
    model = sc.lm.model
    saved = {}
    with torch.no_grad():
        for (_s, la), idx in mask.items():
            w = model.encoder.layer[la].output.dense.weight
            saved[la] = w.clone()
            w[:, torch.as_tensor(idx)] = 0
    ref = sc.evaluate().accuracy
    with torch.no_grad():
        for la, w in saved.items():
            model.encoder.layer[la].output.dense.weight.copy_(w)
    assert t[t.selection == "mask"].accuracy.iloc[0] == ref == 0.5
    r = runner.invoke(app, ["suppress", "--data", str(planted.data_dir), "--mask", str(path),
                            "--prompt", str(planted.prompt_dir), "--seeds", "2",
                            "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert "0.5000" in r.output and "1.0000" in r.output


def test_cli_writes_table_and_plot(planted, planted_store):
    r = runner.invoke(app, ["suppress", "--data", str(planted.data_dir), "--store",
                            str(planted_store), "--ranking", "planted", "--rates", "3,10",
                            "--seeds", "2", "--prompt", str(planted.prompt_dir),
                            "--device", "cpu", "--name", "cli", "-q"])
    assert r.exit_code == 0, r.output
    png = planted_store / "results" / "suppression" / "cli.png"
    assert png.exists() and png.stat().st_size > 5000
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.std() > 0.01
    t = pd.read_parquet(planted_store / "results" / "suppression" / "cli.parquet")
    assert sorted(t.rate.unique().tolist()) == [0.0, 0.03, 0.10]
    # the same name again is refused, the table is kept
    again = runner.invoke(app, ["suppress", "--data", str(planted.data_dir), "--store",
                                str(planted_store), "--ranking", "planted", "--prompt",
                                str(planted.prompt_dir), "--name", "cli", "-q"])
    assert again.exit_code != 0 and "already exists" in again.output
    assert pd.read_parquet(planted_store / "results" / "suppression" / "cli.parquet").equals(t)


@pytest.mark.parametrize("args, message", [
    (["--rates", "0,5"], "outside (0, 1)"),
    (["--rates", "150"], "outside (0, 1)"),
    (["--rates", "a,b"], "comma list"),
    (["--mode", "drop"], "--mode must be one of"),
    (["--ranking", "nope"], "no ranking 'nope'"),
])
def test_bad_input_is_one_line(planted, planted_store, args, message):
    base = ["suppress", "--data", str(planted.data_dir), "--store", str(planted_store),
            "--prompt", str(planted.prompt_dir), "--device", "cpu", "-q"]
    if "--ranking" not in args:
        base += ["--ranking", "planted"]
    r = runner.invoke(app, base + args)
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_mask_of_another_model_and_missing_selection(planted, tmp_path):
    wide = NeuronMask({("encoder", 0): [60]})
    path = wide.to_file(tmp_path / "wide.parquet")
    r = runner.invoke(app, ["suppress", "--data", str(planted.data_dir), "--mask", str(path),
                            "--prompt", str(planted.prompt_dir), "--device", "cpu", "-q"])
    assert r.exit_code != 0 and "mask of another model" in r.output
    r = runner.invoke(app, ["suppress", "--data", str(planted.data_dir), "--prompt",
                            str(planted.prompt_dir), "-q"])
    assert r.exit_code != 0 and "--mask FILE or --store STORE --ranking NAME" in r.output
    with pytest.raises(PruneError, match="mode='mean' replaces"):
        suppress(None, str(planted.data_dir), prompt=planted.prompt_dir, mask=path, mode="mean")


def test_parse_rates():
    assert parse_rates("1,3,5,10,15") == (0.01, 0.03, 0.05, 0.10, 0.15)
    assert parse_rates([0.5, 0.1]) == (0.1, 0.5)
    assert parse_rates("0.2,0.4") == (0.2, 0.4)
