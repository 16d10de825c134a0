"""`neurondb rank / correlate / overlap / mask / top` as a user runs them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.query import read_result
from neurondb.store.maskfile import read_mask

runner = CliRunner()


def ok(args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def fails(args, *words):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    for w in words:
        assert w in line, line
    return line


def test_rank_correlate_mask_top(skill_store, tmp_path):
    root = skill_store.path
    out = ok(["rank", root, "--method", "predictivity", "--train", "tr", "--eval", "ev", "--name", "P"])
    assert "ranking P (predictivity, layer)" in out and "prompt:1" in out
    ok(["rank", root, "--method", "predictivity", "--train", "train", "--eval", "validation",
        "--global", "--name", "G", "--slots", "prompt:*"])
    ok(["rank", root, "--method", "random", "--seed", "2", "--name", "R"])
    df, meta = read_result(root, "rankings", "G")
    assert (df["scope"] == "global").all() and df.iloc[0]["rank"] == 1
    png = tmp_path / "c.png"
    out = ok(["correlate", root, "--rankings", "P,G,R", "--png", png])
    assert "Spearman rho" in out and png.exists()
    out = ok(["correlate", root, "-r", "P,R", "-k", "3", "--name", "pr"])
    assert "mean Spearman" in out
    mfile = tmp_path / "mask.parquet"
    out = ok(["mask", root, "--ranking", "P", "--fraction", "0.125", "--out", mfile])
    table, mmeta = read_mask(mfile)
    assert table.num_rows == 4 and mmeta["ranking"] == "P" and mmeta["scope"] == "layer"
    ok(["mask", root, "--ranking", "G", "--fraction", "0.1", "--global", "--name", "gm"])
    out = ok(["top", root, "--run", "ev", "--layer", "1", "--neuron", "5", "-k", "3"])
    assert "synthetic example" in out


def test_errors_are_one_line(skill_store):
    root = skill_store.path
    fails(["rank", root, "--eval", "nope", "--train", "tr"], "no run or split named 'nope'")
    fails(["rank", root, "--train", "tr", "--eval", "ev", "--show", "-1"],
          "--show must be 0 or more, not -1")
    fails(["rank", root, "--train", "tr", "--eval", "ev", "--threads", "-3"],
          "--threads must be at least 1, not -3")
    # a flag another method reads is refused, not dropped in silence
    fails(["rank", root, "--train", "tr", "--eval", "ev", "--examples", "3"],
          "--examples applies to methods attribution, activation, gradient, not 'predictivity'")
    fails(["rank", root, "--train", "tr", "--eval", "ev", "--token-agg", "max"],
          "--token-agg applies to methods attribution")
    fails(["rank", root, "--method", "random", "--abs", "after"], "--abs applies to methods")
    fails(["rank", root, "--method", "random", "--threads", "2"],
          "--threads applies to method predictivity, not 'random'")
    ok(["rank", root, "--train", "tr", "--eval", "ev", "--name", "P"])
    fails(["rank", root, "--train", "tr", "--eval", "ev", "--name", "P"], "already exists", "--overwrite")
    ok(["rank", root, "--train", "tr", "--eval", "ev", "--name", "P", "--overwrite"])
    fails(["rank", root, "--method", "attribution", "--eval", "ev"], "no gradients")
    fails(["rank", root, "--method", "nonsense"], "--method")
    fails(["correlate", root, "--rankings", "P"], "at least two")
    fails(["mask", root, "--ranking", "nope", "--fraction", "0.1"], "no ranking named 'nope'")
    fails(["overlap", root, "--runs", "ev,tr"], "running statistics")
    fails(["top", root, "--run", "ev", "--layer", "9", "--neuron", "0"], "out of range")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tiny_path, sentiment_dir):
    """A store made by `neurondb extract` from a tiny BERT: stats train split, tokens
    validation with gradients, positions mask and first."""
    out = tmp_path_factory.mktemp("x") / "store"
    ok(["extract", tiny_path("bert"), "--data", sentiment_dir, "--template", "{text} It was {mask}.",
        "--verbalizer", "bad,good", "--positions", "mask,first", "--stats-split", "train",
        "--grad", "--out", out])
    return out


def test_on_an_extracted_store(extracted, tmp_path):
    import neurondb

    st = neurondb.open(extracted)
    runs = {i.split: i for i in st.runs()}
    ok(["rank", extracted, "--train", runs["train"].run, "--eval", runs["validation"].run,
        "--name", "skill"])
    df, meta = read_result(extracted, "rankings", "skill")
    assert len(df) == st.shape.n_neurons() and set(df["slot"]) <= {"mask", "first"}
    assert df["score"].between(0.5, 1.0).all()
    ok(["rank", extracted, "--method", "attribution", "--eval", runs["validation"].run,
        "--name", "attr", "--examples", "5"])
    ok(["rank", extracted, "--method", "activation", "--eval", runs["validation"].run, "--name", "act"])
    ok(["correlate", extracted, "--rankings", "skill,attr,act", "--png", tmp_path / "m.png"])
    ok(["mask", extracted, "--ranking", "attr", "--fraction", "0.1", "--global",
        "--out", tmp_path / "m.parquet"])
    ok(["top", extracted, "--run", runs["validation"].run, "--layer", "0", "--neuron", "1"])


def test_output_paths_are_checked_before_anything_is_written(skill_store, tmp_path):
    """A figure or mask path that is a directory (a traceback after the result was written,
    or a misleading 'EISDIR at /.tmp.tmp-PID') is refused in one line naming the flag, before
    any result is computed or written; a missing parent of a figure is made."""
    from pathlib import Path

    root = skill_store.path
    ok(["rank", root, "--train", "tr", "--eval", "ev", "--name", "Q"])
    ok(["rank", root, "--method", "random", "--seed", "3", "--name", "Q2"])
    results = Path(root) / "results"
    before = sorted(p.name for p in results.rglob("*"))
    for args, flag in ((["mask", root, "--ranking", "Q", "--out", tmp_path], "--out"),
                       (["correlate", root, "--rankings", "Q,Q2", "--png", tmp_path], "--png"),
                       (["overlap", root, "--runs", "ev,ev", "--png", tmp_path], "--png"),
                       (["mask", root, "--ranking", "Q", "--out",
                         Path(__file__) / "m.parquet"], "--out")):
        fails(args, f"{flag}: ", "is a directory" if args[-1] == tmp_path else
              "is not a directory")
    assert sorted(p.name for p in results.rglob("*")) == before
    png = tmp_path / "new" / "deeper" / "c.png"
    ok(["correlate", root, "--rankings", "Q,Q2", "--png", png, "--name", "qq"])
    assert png.stat().st_size > 1000
