"""Errors name the caller's own spelling of an option: the Python API's argument
(``overwrite=True``, ``mode``) when called from Python, the CLI flag (``--overwrite``,
``--mode``) when the same check fails under a command (neurondb.errors.arg/switch/given)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from typer.testing import CliRunner

import neurondb
from neurondb.cli.app import app
from neurondb.errors import NeurondbError
from neurondb.intervene.job import PruneRequest
from neurondb.query.results import check_absent, write_result
from neurondb.testing_stores import make_store
from neurondb.tune.train import tune_prompt

runner = CliRunner()
TEMPLATE = "{text} It was {mask}."
FLAG = re.compile(r"(?<![\w-])--[a-z]")  # a CLI flag such as --overwrite (not `a--b`)


def _python(call, *words: str) -> str:
    """``call()`` raises one NeurondbError line naming ``words`` and no CLI flag."""
    with pytest.raises(NeurondbError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)
    assert not FLAG.search(msg), msg
    return msg


def _cli(args: list, *words: str) -> str:
    """``neurondb ARGS`` fails with ``error: ...`` (exit 2) naming ``words``."""
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    out = r.output
    assert out.startswith("error: ") and out.strip().count("\n") == 0, out
    for w in words:
        assert w in out, (w, out)
    return out


# -- extract: ExtractRequest's fields ------------------------------------------------------
@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tiny_path, sentiment_dir):
    out = tmp_path_factory.mktemp("names") / "s"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, template=TEMPLATE,
                     verbalizer=["bad", "good"], progress=False).close()
    return out


def test_extract_of_an_existing_run(extracted, tiny_path, sentiment_dir):
    model, data = str(tiny_path("bert")), str(sentiment_dir)
    _python(lambda: neurondb.extract(model, data, extracted, template=TEMPLATE,
                                     verbalizer=["bad", "good"], progress=False),
            "already exists", "pass overwrite=True or run=NAME")
    _cli(["extract", model, "--data", data, "--out", extracted, "--template", TEMPLATE,
          "--verbalizer", "bad,good", "-q"], "already exists", "pass --overwrite or --run NAME")


def test_extract_request_fields(tmp_path, tiny_path, sentiment_dir):
    model, data = str(tiny_path("bert")), str(sentiment_dir)
    msg = _python(lambda: neurondb.extract(model, data, tmp_path / "s", batch_size=0),
                  "batch_size must be at least 1")
    assert "(" not in msg  # no longer "batch_size (--batch-size)"
    _cli(["extract", model, "--data", data, "--out", tmp_path / "s", "--batch-size", "0"],
         "error: --batch-size must be at least 1")
    _python(lambda: neurondb.extract(model, data, tmp_path / "s", positions="middle"),
            "positions takes a comma list")
    _cli(["extract", model, "--data", data, "--out", tmp_path / "s", "--positions", "middle"],
         "--positions takes a comma list")
    assert not (tmp_path / "s").exists()


# -- prune: PruneRequest's fields (fmt is --format) ----------------------------------------
def test_prune_request_checks(tmp_path):
    out = tmp_path / "x"

    def check(**kw):
        return lambda: PruneRequest(model="m", out=out, **kw).check()

    _python(check(fmt="bad"), "fmt must be compact or zeroed")
    _cli(["prune", "m", "--out", out, "--format", "bad"], "--format must be compact or zeroed")
    _python(check(), "give either mask=FILE or store=STORE, ranking=NAME, ratio=R "
                     "(or search=True)")
    _cli(["prune", "m", "--out", out],
         "give either --mask FILE or --store STORE --ranking NAME --ratio R (or --search)")
    _python(check(search=True), "search=True needs store=STORE, ranking=NAME")
    _cli(["prune", "m", "--out", out, "--search"], "--search needs --store STORE --ranking NAME")
    _python(check(ranking="r", store=tmp_path), "ranking needs store=STORE and ratio=R")
    _cli(["prune", "m", "--out", out, "--ranking", "r", "--store", tmp_path],
         "--ranking needs --store STORE and --ratio R")
    out.mkdir()
    mask = tmp_path / "m.parquet"
    _python(check(mask=mask), "exists; pass overwrite=True or choose another out")
    _cli(["prune", "m", "--out", out, "--mask", mask], "exists; pass --overwrite or choose "
         "another --out")


# -- suppress: SuppressRequest's fields ----------------------------------------------------
def test_suppress_arguments(tmp_path, sentiment_dir):
    data, mask = str(sentiment_dir), tmp_path / "m.parquet"
    _python(lambda: neurondb.suppress("m", data, mask=mask, mode="bad"),
            "mode must be one of")
    _cli(["suppress", "m", "--data", data, "--mask", mask, "--mode", "bad"],
         "--mode must be one of")
    _python(lambda: neurondb.suppress("m", data, mask=mask, mode="mean"),
            "mode='mean' replaces", "store=STORE")
    _cli(["suppress", "m", "--data", data, "--mask", mask, "--mode", "mean"],
         "--mode mean replaces", "--store STORE")
    _python(lambda: neurondb.suppress("m", data), "give either mask=FILE or store=STORE, "
                                                  "ranking=NAME")
    _cli(["suppress", "m", "--data", data], "--mask FILE or --store STORE --ranking NAME")


# -- tune: TuneRequest's fields ------------------------------------------------------------
def test_tune_into_an_existing_output(tmp_path, sentiment_dir):
    out = tmp_path / "prompts"
    (out / "seed-1").mkdir(parents=True)
    data = str(sentiment_dir)
    _python(lambda: tune_prompt("m", data, out, seeds=(1,)),
            "already exists; pass overwrite=True to replace it or choose another out")
    _cli(["tune", "m", data, "--out", out, "--seeds", "1"],
         "already exists; pass --overwrite to replace it or choose another --out")
    _python(lambda: tune_prompt("m", data, tmp_path / "o", epochs=0), "epochs must be at least 1")
    _cli(["tune", "m", data, "--out", tmp_path / "o", "--epochs", "0"],
         "--epochs must be at least 1")


# -- a result name that exists -------------------------------------------------------------
def test_a_result_name_that_exists(tmp_path, sentiment_dir):
    root = make_store(tmp_path / "s")
    st = neurondb.open_store(root)
    write_result(st, "transfers", "t", pd.DataFrame({"accuracy": [0.5]}), {})
    _python(lambda: check_absent(st, "transfers", "t", False),
            "already exists", "choose another name (name=...) or replace it (overwrite=True)")
    st.close()
    _cli(["transfer", "--prompts", tmp_path / "p", "--data", str(sentiment_dir), "--store", root,
          "--name", "t"], "already exists",
         "choose another name (--name) or replace it (--overwrite)")


# -- the analyses' checks against what a store holds ---------------------------------------
def test_store_dependent_analysis_errors(extracted):
    """Checks that depend on the store's contents (no gradients, no matching slot) name the
    caller's spelling too: they run inside the query kernels, after the request was built."""
    from neurondb.query.attribution import attribution
    from neurondb.query.predictivity import predictivity

    run = neurondb.open(extracted).runs()[0].run
    _python(lambda: attribution(extracted, run, write=False),
            "has no gradients; re-extract it with grad=True, or rank by method='activation'")
    _cli(["rank", extracted, "--method", "attribution", "--eval", run],
         "re-extract it with --grad, or rank by --method activation")
    _python(lambda: predictivity(extracted, run, train=run, slots="nope", write=False),
            "matches slots='nope'")
    _cli(["rank", extracted, "--eval", run, "--train", run, "--slots", "nope"], "matches --slots nope")
