"""``extract --profile --also-capture POSITIONS``: a profile run and a per-token run of a few
positions from one forward pass, each equal to the run its own extraction would write."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoModel, AutoTokenizer

import neurondb
from neurondb.errors import ExtractError
from tests.extract.test_resume import interrupt_at_commit
from tests.profile.test_extract_profile import KW, PROFILE, assert_same_tables

TWIN = "first,last"


@pytest.fixture(scope="module")
def tokens_only(tmp_path_factory, relu_model, sentiment_dir):
    out = tmp_path_factory.mktemp("tok") / "s"
    neurondb.extract(relu_model, str(sentiment_dir), out, positions=TWIN, dtype="float32",
                     **dict(KW, run="p-tokens")).close()
    return out


def activations(path, run: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The run's ``(example_id, position)`` rows sorted, and each layer's rows in that order."""
    st = neurondb.open(path)
    rows = st.rows(run=run).to_pandas()
    order = np.lexsort((rows["position"], rows["example_id"]))
    keys = rows[["example_id", "position"]].to_numpy()[order]
    acts = {la: st.activations(layer=la, run=run)[order]
            for la in range(st.shape.n_layers(st.shape.stacks[0]))}
    st.close()
    return keys, acts


def assert_same_tokens_run(a, b, run: str = "p-tokens") -> None:
    (kg, got), (kr, ref) = activations(a, run), activations(b, run)
    assert len(kr) > 0
    np.testing.assert_array_equal(kg, kr)
    for la in ref:
        np.testing.assert_array_equal(got[la], ref[la])


@pytest.mark.parametrize("kernel", ["native", "torch"])
def test_one_pass_writes_both_runs_equal_to_their_own_extractions(
        tmp_path, relu_model, sentiment_dir, one_pass, tokens_only, monkeypatch, kernel):
    """With the CPU kernel the profile reduces inside the hooks, which store the twin's rows
    alone (after the first batch); with the torch reduction the hooks copy the profile's rows
    and the twin takes its own out of them. Both give the same two runs."""
    from neurondb.profile import native
    from neurondb.profile.reduce import ProfileAccumulator

    if kernel == "native" and not native.available():
        pytest.skip(f"no CPU kernel: {native.why_not()}")
    monkeypatch.setenv(native.ENV_KERNEL, kernel)
    wheres = []
    begin = ProfileAccumulator.begin_batch
    monkeypatch.setattr(ProfileAccumulator, "begin_batch",
                        lambda self, rows, where=None: (wheres.append(where is not None),
                                                        begin(self, rows, where)))
    model = AutoModel.from_pretrained(relu_model)
    tok = AutoTokenizer.from_pretrained(relu_model)
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    out = tmp_path / "s"
    neurondb.extract(model, str(sentiment_dir), out, tokenizer=tok, also_capture=TWIN,
                     dtype="float32", **PROFILE).close()
    n_batches = -(-24 // KW["batch_size"])
    assert len(calls) == n_batches  # one forward per batch for both runs
    # the kernel: every batch but each shard's first (the edges) streams with the twin
    assert (sum(wheres) >= n_batches // 2) if kernel == "native" else not wheres
    st = neurondb.open(out)
    info = {r.run: r for r in st.runs()}
    assert sorted(info) == ["p", "p-tokens"]
    assert info["p"].mode == "profile" and info["p-tokens"].mode == "tokens"
    assert info["p-tokens"].positions == ["first", "last"]
    st.close()
    # one_pass is reduced by the kernel: the torch reduction adds its float64 sums in
    # another order
    assert_same_tables(out, one_pass, exact=kernel == "native")
    assert_same_tokens_run(out, tokens_only)


def test_interrupted_between_the_two_shards_then_resumed(tmp_path, relu_model, sentiment_dir,
                                                         one_pass, tokens_only):
    out = tmp_path / "s"
    kw = dict(PROFILE, also_capture=TWIN, dtype="float32", chunk_examples=8)
    with interrupt_at_commit(4), pytest.raises(KeyboardInterrupt):  # chunk 1's twin shard
        neurondb.extract(relu_model, str(sentiment_dir), out, **kw)
    neurondb.extract(relu_model, str(sentiment_dir), out, **kw).close()
    assert_same_tables(out, one_pass, exact=False)  # other chunking: sums to rounding
    assert_same_tokens_run(out, tokens_only)


def test_default_names_and_the_cli(tmp_path, relu_model, sentiment_dir):
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    out = tmp_path / "s"
    res = CliRunner().invoke(app, ["extract", relu_model, "--data", str(sentiment_dir), "--out",
                                   str(out), "--split", "train", "--readout", "none",
                                   "--profile", "--also-capture", "first"])
    assert res.exit_code == 0, res.output
    st = neurondb.open(out)
    assert sorted(r.run for r in st.runs()) == [f"{sentiment_dir.name}-train",
                                 f"{sentiment_dir.name}-train-profile"]
    st.close()
    # the size estimate names the dtype of the tensors written: the twin's float32 (the
    # profile run, float16 by its positions' default, writes none)
    line = next(x for x in res.output.splitlines() if "estimated store size" in x)
    assert " MB as float32 (float16: " in line, line
    res = CliRunner().invoke(app, ["extract", relu_model, "--data", str(sentiment_dir), "--out",
                                   str(tmp_path / "p"), "--split", "train", "--readout", "none",
                                   "--profile"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if "estimated store size" in x)
    assert " as float" not in line, line


@pytest.mark.parametrize("kw, msg", [
    (dict(KW, also_capture="first"), "add profile=True"),
    (dict(PROFILE, positions="first", also_capture="last"), "not among the profile's"),
    (dict(PROFILE, also_capture="middle"), "also_capture takes a comma list"),
    (dict(PROFILE, dtype="float16"), "a profile=True run stores none"),
])
def test_bad_requests_are_one_line_and_write_nothing(tmp_path, relu_model, sentiment_dir, kw,
                                                     msg):
    out = tmp_path / "s"
    with pytest.raises(ExtractError, match=msg) as e:
        neurondb.extract(relu_model, str(sentiment_dir), out, **kw)
    assert "\n" not in str(e.value) and "--" not in str(e.value)  # Python names its arguments
    assert not out.exists()


def test_bad_request_through_the_cli_names_the_flags(tmp_path, relu_model, sentiment_dir):
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    out = tmp_path / "s"
    res = CliRunner().invoke(app, ["extract", relu_model, "--data", str(sentiment_dir), "--out",
                                   str(out), "--readout", "none", "--profile", "--positions",
                                   "first", "--also-capture", "last"])
    assert res.exit_code == 2
    assert "--also-capture last is not among the profile's --positions first" in res.output
    assert not out.exists()
    for args, msg in ((["--also-capture", "middle"], "--also-capture takes a comma list"),
                      (["--dtype", "bfloat16"], "--dtype is the storage dtype of per-token "
                                                "tensors, and a --profile run stores none")):
        res = CliRunner().invoke(app, ["extract", relu_model, "--data", str(sentiment_dir),
                                       "--out", str(out), "--readout", "none", "--profile",
                                       *args])
        assert res.exit_code == 2 and msg in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_two_processes_write_both_runs(tmp_path, relu_model, sentiment_dir, one_pass,
                                       tokens_only):
    from tests.extract.test_resume import run_ranks

    out = tmp_path / "s"
    run_ranks(["extract", relu_model, "--data", str(sentiment_dir), "--split", "train",
               "--out", str(out), "--readout", "none", "--batch-size", "4",
               "--chunk-examples", "8", "--run", "p", "--profile", "--top-k",
               str(PROFILE["top_k"]), "--profile-bins", str(PROFILE["profile_bins"]),
               "--also-capture", TWIN, "--dtype", "float32", "--quiet"])
    st = neurondb.open(out)
    for run in ("p", "p-tokens"):
        assert {sh.rank for _, sh in st.shards(run)} == {0, 1}
    st.close()
    assert_same_tables(out, one_pass, exact=False)
    assert_same_tokens_run(out, tokens_only)


def test_with_a_statistics_split(tmp_path, relu_model, sentiment_dir):
    out = tmp_path / "s"
    neurondb.extract(relu_model, str(sentiment_dir), out, also_capture=TWIN,
                     stats_split="validation", **PROFILE).close()
    st = neurondb.open(out)
    modes = {r.run: r.mode for r in st.runs()}
    # only the per-token run stores tensors: the others' dtype is NULL in SQL (as in `info`)
    dtypes = dict(st.sql("SELECT mode, dtype FROM runs").fetchall())
    st.close()
    assert sorted(modes.values()) == ["profile", "stats", "tokens"], modes
    assert dtypes == {"profile": None, "stats": None, "tokens": "float32"}, dtypes
