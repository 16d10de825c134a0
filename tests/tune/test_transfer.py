"""Transfer: every prompt on every dataset, relative performance as SPEC §7 defines it."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.runtime.data import load_data
from neurondb.runtime.evaluate import evaluate
from neurondb.runtime.model import load_model
from neurondb.runtime.naming import data_key, parse_data_spec
from neurondb.runtime.prompt import load_prompt
from neurondb.tune.train import tune_prompt
from neurondb.tune.transfer import expand_prompt_dirs, relative_performance, transfer

TEMPLATE = "{text} It was {mask}."
VERB = ["terrible", "great"]

runner = CliRunner()


def test_relative_performance_formula_on_known_accuracies():
    df = pd.DataFrame({
        "source":     ["A", "A", "B", "A", "A", "B", "A"],
        "target_key": ["A", "A", "A", "B", "B", "B", "C"],
        "accuracy":   [0.80, 0.90, 0.60, 0.50, 0.70, 0.75, 0.40],
    })
    out = relative_performance(df)
    # acc(A | prompt A) is the mean over A's two seeds: 0.85; acc(B | prompt B) = 0.75
    assert out["own_accuracy"].tolist()[:6] == pytest.approx([0.85] * 3 + [0.75] * 3)
    assert out["relative"].tolist()[:6] == pytest.approx(
        [0.80 / 0.85 * 100, 0.90 / 0.85 * 100, 0.60 / 0.85 * 100,
         0.50 / 0.75 * 100, 0.70 / 0.75 * 100, 100.0])
    assert math.isnan(out["relative"].iloc[6])  # no prompt tuned on C


def test_data_specs_and_keys(tmp_path):
    assert parse_data_spec("movie_reviews:train") == ("movie_reviews", "train")
    assert parse_data_spec("sst2") == ("sst2", "validation")
    assert parse_data_spec("/x/y.parquet:test") == ("/x/y.parquet", "test")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text("text,label\na,0\n")
    assert data_key(str(tmp_path / "d")) == data_key(str(tmp_path / "d" / "train.csv"))
    assert data_key("movie_reviews") == "movie_reviews"


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory, sharp_path, sentiment_dir):
    """Prompts tuned on two datasets (two seeds on the first, one on the second)."""
    root = tmp_path_factory.mktemp("transfer")
    other = root / "other"
    other.mkdir()
    texts = ["good music", "a funny dog", "happy cat", "love the tree", "bad car",
             "a dull house", "sad dog", "hate the river"]
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    for split in ("train", "validation"):
        pq.write_table(pa.table({"text": texts, "label": labels}), other / f"{split}.parquet")
    kw = dict(prompt_tokens=3, epochs=2, lr=0.1, template=TEMPLATE, verbalizer=VERB,
              progress=False)
    a = tune_prompt(str(sharp_path("lm")), str(sentiment_dir), root / "a", seeds=(1, 2), **kw)
    b = tune_prompt(str(sharp_path("lm")), str(other), root / "b", seeds=(1,), **kw)
    return root, a, b, other


def test_transfer_table_matches_direct_evaluation(two_tasks, sentiment_dir, sharp_path):
    root, a, b, other = two_tasks
    df = transfer([root / "a", b[0]], [f"{sentiment_dir}:validation", (str(other), "validation")],
                  png=root / "t.png", csv=root / "t.csv", progress=False)
    assert len(df) == 6
    assert df["prompt"].tolist() == [str(a[0])] * 2 + [str(a[1])] * 2 + [str(b[0])] * 2
    lm = load_model(str(sharp_path("lm")), "mlm", "cpu")
    for r in df.itertuples():
        data = load_data(r.target, r.split)
        assert r.accuracy == evaluate(lm, load_prompt(r.prompt), data).accuracy
        assert r.n == len(data)
    key_a, key_b = data_key(str(sentiment_dir)), data_key(str(other))
    assert set(df["source"]) == {key_a, key_b}
    own_a = df[(df.source == key_a) & (df.target_key == key_a)]["accuracy"].mean()
    own_b = df[(df.source == key_b) & (df.target_key == key_b)]["accuracy"].iloc[0]
    for r in df.itertuples():
        own = own_a if r.target_key == key_a else own_b
        assert r.own_accuracy == pytest.approx(own)
        assert r.relative == pytest.approx(r.accuracy / own * 100)
    assert (root / "t.png").read_bytes()[:4] == b"\x89PNG"
    back = pd.read_csv(root / "t.csv")
    assert back["relative"].tolist() == pytest.approx(df["relative"].tolist())


def test_transfer_cli(two_tasks, sentiment_dir):
    root, a, b, other = two_tasks
    assert expand_prompt_dirs([root / "a"]) == a
    res = runner.invoke(app, ["transfer", "--prompts", f"{a[0]},{root / 'b'}",
                              "--data", f"{sentiment_dir}:validation,{other}:validation",
                              "--csv", str(root / "cli.csv"), "--png", str(root / "cli.png"),
                              "-q"])
    assert res.exit_code == 0, res.output
    assert "rel %" in res.output and "sentiment" in res.output
    df = pd.read_csv(root / "cli.csv")
    assert len(df) == 4 and (root / "cli.png").exists()
    # a prompt on the data it was tuned on is 100 % of itself
    diag = df[df.source == df.target_key]
    assert diag["relative"].tolist() == pytest.approx([100.0, 100.0])
    # --store: the same table lands in results/transfers, visible to SQL
    from neurondb.testing_stores import make_store

    store = make_store(root / "store")
    res = runner.invoke(app, ["transfer", "--prompts", f"{a[0]},{root / 'b'}",
                              "--data", f"{sentiment_dir}:validation,{other}:validation",
                              "--store", str(store), "--name", "tr", "-q"])
    assert res.exit_code == 0, res.output
    saved = pd.read_parquet(store / "results" / "transfers" / "tr.parquet")
    assert saved["accuracy"].tolist() == pytest.approx(df["accuracy"].tolist())
    again = runner.invoke(app, ["transfer", "--prompts", str(a[0]), "--data",
                                f"{sentiment_dir}:validation", "--store", str(store), "--name",
                                "tr", "-q"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_tune_cli_prints_a_summary(tmp_path, tiny_path, sentiment_dir):
    res = runner.invoke(app, ["tune", str(tiny_path("bert")), str(sentiment_dir), "--out",
                              str(tmp_path / "o"), "--seeds", "1,2", "--prompt-tokens", "2",
                              "--epochs", "1", "--template", TEMPLATE, "--verbalizer",
                              ",".join(VERB), "-q"])
    assert res.exit_code == 0, res.output
    assert "seed-1" in res.output and "seed-2" in res.output and "val acc" in res.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["seed-1", "seed-2"]
