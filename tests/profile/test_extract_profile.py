"""``extract --profile`` on tiny models against a per-token float32 capture of the same tokens
(brute force), ties included (a ReLU model: many exact zeros; duplicated sentences: equal
tops); chunking, a resumed run and a real 2-process run give the same tables as one pass."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import neurondb
from neurondb.errors import ExtractError, NeurondbError
from neurondb.profile.quantiles import COLUMNS, LEVELS
from neurondb.profile.read import PROFILE_SCHEMA, TOP_SCHEMA
from tests.extract.test_resume import interrupt_at_commit, run_ranks
from tests.profile.brute import brute_hist, brute_profile, brute_top

K, BINS = 6, 16
KW = dict(split="train", readout="none", batch_size=4, progress=False, run="p")
PROFILE = dict(KW, profile=True, top_k=K, profile_bins=BINS)


@pytest.fixture(scope="module")
def tokens_store(tmp_path_factory, relu_model, sentiment_dir):
    out = tmp_path_factory.mktemp("tok") / "s"
    neurondb.extract(relu_model, str(sentiment_dir), out, positions="all", dtype="float32",
                     **KW).close()
    return out


@pytest.fixture(scope="module")
def chunked(tmp_path_factory, relu_model, sentiment_dir):
    out = tmp_path_factory.mktemp("chunked") / "s"
    neurondb.extract(relu_model, str(sentiment_dir), out, chunk_examples=8, **PROFILE).close()
    return out


def tables(path) -> tuple[pd.DataFrame, pd.DataFrame]:
    st = neurondb.open(path)
    prof = st.profile(run="p").sort_values(["stack", "layer", "neuron"], ignore_index=True)
    top = st.profile_top(run="p")
    st.close()
    return prof, top


def assert_same_tables(a, b, exact: bool) -> None:
    """Equal tables; ``exact=False``: the float64 means/stds/label means to rounding."""
    (pa_, ta), (pb, tb) = tables(a), tables(b)
    pd.testing.assert_frame_equal(ta, tb)
    approx = ["mean", "std", "label_means"]
    pd.testing.assert_frame_equal(pa_.drop(columns=approx), pb.drop(columns=approx))
    for c in ("mean", "std"):
        np.testing.assert_allclose(pa_[c], pb[c], rtol=0 if exact else 1e-9, atol=0 if exact
                                   else 1e-12)
    np.testing.assert_allclose(np.stack(pa_.label_means), np.stack(pb.label_means),
                               rtol=0 if exact else 1e-9, atol=0 if exact else 1e-12)


def test_profile_equals_brute_force_over_a_float32_capture(tokens_store, one_pass):
    ref = neurondb.open(tokens_store)
    st = neurondb.open(one_pass)
    info = st.run("p")
    assert info.mode == "profile" and info.n_rows == ref.run("p").n_rows
    rows = ref.rows(run="p").to_pandas()
    ex, pos = rows.example_id.to_numpy(), rows.position.to_numpy()
    labels = ref.examples(run="p").to_pandas().set_index("example_id").label.loc[ex].to_numpy()
    prof = st.profile(run="p")
    ties = 0
    for layer in range(2):
        x = ref.activations(layer, run="p")
        bf = brute_profile(x, labels, 2)
        p = prof[prof.layer == layer].sort_values("neuron")
        assert (p["count"] == bf["count"]).all()
        np.testing.assert_array_equal(p["min"], bf["min"])
        np.testing.assert_array_equal(p["max"], bf["max"])
        np.testing.assert_allclose(p["frac_positive"], bf["frac_positive"], rtol=1e-15)
        np.testing.assert_allclose(p["mean"], bf["mean"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p["std"], bf["std"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(np.stack(p.label_means), bf["label_means"], rtol=1e-10,
                                   atol=1e-12)
        exact_q = np.quantile(x.astype(np.float64), LEVELS, axis=0).T
        err = np.abs(p[list(COLUMNS)].to_numpy() - exact_q)
        assert (err <= p["q_error"].to_numpy()[:, None] + 1e-12).all()
        top = st.profile_top(run="p", layer=layer)
        for kind in ("top", "bottom"):
            want = brute_top(x, ex, pos, K, kind)
            got = top[top.kind == kind].sort_values(["neuron", "rank"])
            for j in range(x.shape[1]):
                g = got[got.neuron == j]
                assert list(zip(g.value, g.example_id, g.position)) == want[j]
                ties += len(set(g.value)) < K
        for j in (0, 7, 47):
            edges, counts = st.profile_histogram("p", "encoder", layer, j)
            np.testing.assert_array_equal(counts, brute_hist(x[:, [j]], edges)[0])
    assert ties > 40  # ReLU zeros and duplicated sentences: the tie-break was exercised
    ref.close()
    st.close()


def test_chunks_merge_to_the_one_pass_tables(one_pass, chunked):
    # 8 examples a chunk, 4 a batch: the same batches as one pass, so the same per-token
    # values (another batching pads differently and changes values in their last bits)
    assert len(neurondb.open(chunked).shards("p")) == 3
    assert_same_tables(one_pass, chunked, exact=False)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, relu_model, sentiment_dir,
                                                       chunked, monkeypatch):
    out = tmp_path / "s"
    with interrupt_at_commit(3), pytest.raises(KeyboardInterrupt):
        neurondb.extract(relu_model, str(sentiment_dir), out, chunk_examples=8, **PROFILE)
    part = neurondb.open(out, partial=True)  # a run being extracted: its complete shards
    assert len(part.shards("p")) == 2
    n = sum(sh.n_rows["encoder"] for _, sh in part.shards("p"))
    assert n > 0 and (part.profile(run="p")["count"] == n).all()
    part.close()
    neurondb.extract(relu_model, str(sentiment_dir), out, chunk_examples=8, **PROFILE).close()
    assert_same_tables(out, chunked, exact=True)


def test_two_processes_equal_one_process(tmp_path, relu_model, sentiment_dir, chunked):
    out = tmp_path / "s"
    run_ranks(["extract", relu_model, "--data", str(sentiment_dir), "--split", "train",
               "--out", str(out), "--readout", "none", "--batch-size", "4",
               "--chunk-examples", "8", "--run", "p", "--profile", "--top-k", str(K),
               "--profile-bins", str(BINS), "--quiet"])
    st = neurondb.open(out)
    assert {sh.rank for _, sh in st.shards("p")} == {0, 1}
    st.close()
    assert_same_tables(out, chunked, exact=True)


def test_views_verify_and_a_damaged_profile_file(tmp_path, one_pass, tokens_store):
    import shutil

    from neurondb.store.verify import verify_store

    st = neurondb.open(one_pass)
    n = st.sql("SELECT count(*), count(DISTINCT layer) FROM neuron_profile").fetchall()[0]
    assert n == (96, 2)
    sql = st.sql("SELECT value, example_id, position FROM neuron_top WHERE layer = 1 AND "
                 "neuron = 5 AND kind = 'top' ORDER BY rank").fetchall()
    py = st.profile_top(run="p", layer=1, neuron=5, kind="top")
    assert sql == list(zip(py.value, py.example_id, py.position))
    st.close()
    assert verify_store(one_pass).ok
    bad = tmp_path / "bad"
    shutil.copytree(one_pass, bad)
    f = next(bad.glob("runs/p/shards/*/profile.npz"))
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    rep = verify_store(bad)
    assert not rep.ok and any("profile.npz" in p for p in rep.problems)
    plain = neurondb.open(tokens_store)  # a store without profile runs: empty views
    assert plain.sql("SELECT count(*) FROM neuron_profile").fetchall() == [(0,)]
    assert plain.sql("SELECT count(*) FROM neuron_top").fetchall() == [(0,)]
    assert list(plain.profile().columns) == PROFILE_SCHEMA.names
    assert list(plain.profile_top().columns) == TOP_SCHEMA.names
    plain.close()


def test_top_contexts_macro(one_pass):
    st = neurondb.open(one_pass)
    got = st.sql("SELECT rank, example_id, position, token, context FROM "
                 "top_contexts('p', 'encoder', 1, 3, k := 3, width := 1)").fetchall()
    top = st.profile_top(run="p", layer=1, neuron=3, kind="top").head(3)
    tok = st.tokens(run="p").to_pandas().set_index(["example_id", "position"]).token
    for (rank, e, p, token, ctx), (_, want) in zip(got, top.iterrows()):
        assert (rank, e, p) == (want["rank"], want.example_id, want.position)
        words = [f"[[{tok[(e, q)]}]]" if q == p else tok[(e, q)]
                 for q in (p - 1, p, p + 1) if (e, q) in tok.index]
        assert token == tok[(e, p)] and ctx == " ".join(words)
    with pytest.raises(NeurondbError, match="no profile of neuron encoder layer 1 neuron 3 in "
                                            "run 'nope'; profile runs in this store: p"):
        st.connection.arrow("SELECT * FROM top_contexts('nope', 'encoder', 1, 3)")
    with pytest.raises(NeurondbError, match="no profile of neuron encoder layer 9"):
        st.connection.arrow("SELECT * FROM top_contexts('p', 'encoder', 9, 3)")
    # an empty table or contexts without the firing token were answers to a mistyped call
    with pytest.raises(NeurondbError, match="top_contexts: k must be at least 1, not 0"):
        st.connection.arrow("SELECT * FROM top_contexts('p', 'encoder', 1, 3, k := 0)")
    with pytest.raises(NeurondbError, match="top_contexts: width must be 0 or more, not -1"):
        st.connection.arrow("SELECT * FROM top_contexts('p', 'encoder', 1, 3, width := -1)")
    every = st.profile_top(run="p", layer=1, neuron=3, kind="top")
    assert [c for (c,) in st.sql("SELECT context FROM top_contexts('p', 'encoder', 1, 3, "
                                 "width := 0)").fetchall()] == [
        f"[[{tok[(e, p)]}]]" for e, p in zip(every.example_id, every.position)]
    st.close()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, relu_model, sentiment_dir):
    out = tmp_path / "s"
    for kw, match in ((dict(top_k=100_000), "top_k=100000 is larger than the"),
                      (dict(top_k=0), "top_k must be at least 1"),
                      (dict(grad=True, readout="auto"), "grad=True needs a per-token run")):
        with pytest.raises(ExtractError, match=match) as e:
            neurondb.extract(relu_model, str(sentiment_dir), out, **dict(PROFILE, **kw))
        assert "\n" not in str(e.value) and not out.exists()


def test_a_state_larger_than_memory_is_refused_up_front(tmp_path, relu_model, sentiment_dir,
                                                        monkeypatch):
    """A billion histogram bins per neuron (terabytes of state) is refused before anything is
    allocated or written (it used to grow until the kernel killed it); so is a state the
    free memory cannot hold three times, and the line says what it takes."""
    from neurondb.extract import profiling

    out = tmp_path / "s"
    with pytest.raises(ExtractError, match=r"the profile's state takes [\d,.]+ GB and the host "
                                           r"needs .* lower profile_bins=1000000000 or top_k="):
        neurondb.extract(relu_model, str(sentiment_dir), out,
                         **dict(PROFILE, profile_bins=10**9))
    assert not out.exists()
    from neurondb.extract.run import ExtractConfig, _Extraction
    from neurondb.profile.state import profile_file_bytes

    ext = _Extraction(ExtractConfig(model=relu_model, data=str(sentiment_dir), out=out,
                                    **PROFILE))
    n_labels = len(ext.jobs[0][0].label_names)
    need = profile_file_bytes(ext.shape.widths, K, BINS, max(2, n_labels))
    monkeypatch.setattr(profiling.memory, "available_memory",
                        lambda device: profiling.HOST_COPIES * need - 1)
    with pytest.raises(ExtractError, match="more than its"):
        neurondb.extract(relu_model, str(sentiment_dir), out, **PROFILE)
    assert not out.exists()
    monkeypatch.setattr(profiling.memory, "available_memory",
                        lambda device: profiling.HOST_COPIES * need)
    assert profiling.check_memory(ext, n_labels).startswith(
        f"profile state: {need / 1e6:,.1f} MB")


def test_size_estimate_is_close(relu_model, sentiment_dir, chunked):
    from tests.extract.test_size_estimate import _estimate, _written

    total, _, _ = _estimate(relu_model, sentiment_dir, dict(PROFILE, chunk_examples=8))
    written = _written(chunked)
    assert abs(total - written) <= 0.05 * written, (total, written)


def test_top_command_answers_from_neuron_top(one_pass):
    from typer.testing import CliRunner

    from neurondb.cli.app import app
    from neurondb.query import top_examples

    st = neurondb.open(one_pass)
    df = top_examples(st, "p", 1, 2, k=3)
    want = st.profile_top(run="p", layer=1, neuron=2, kind="top").head(3)
    assert df.example_id.tolist() == want.example_id.tolist()
    assert df.position.tolist() == want.position.tolist() and df.text.notna().all()
    tok = st.tokens(run="p").to_pandas().set_index(["example_id", "position"]).token
    assert df.token.tolist() == [tok[(e, p)] for e, p in zip(df.example_id, df.position)]
    st.close()
    runner = CliRunner()
    res = runner.invoke(app, ["top", str(one_pass), "--run", "p", "--layer", "1", "--neuron",
                              "2", "-k", "3"])
    assert res.exit_code == 0 and str(df.text.iloc[0]) in res.output
    res = runner.invoke(app, ["top", str(one_pass), "--run", "p", "--layer", "1", "--neuron",
                              "2", "-k", str(K + 1)])
    assert res.exit_code == 2 and f"keeps the top {K} tokens" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_top_without_k_shows_what_a_small_profile_keeps(one_pass):
    """A profile keeping fewer than 10 tokens per neuron answers ``top`` without -k (it was
    refused: the default 10 was more than the run keeps), and a bad layer or neuron is named
    before any word about -k."""
    from typer.testing import CliRunner

    from neurondb.cli.app import app
    from neurondb.query import top_examples

    assert K < 10
    st = neurondb.open(one_pass)
    assert top_examples(st, "p", 1, 2)["rank"].tolist() == list(range(1, K + 1))
    st.close()
    runner = CliRunner()
    res = runner.invoke(app, ["top", str(one_pass), "--run", "p", "--layer", "1", "--neuron", "2"])
    assert res.exit_code == 0, res.output
    for args, msg in ((["--layer", "1", "--neuron", "999"], "neuron 999 is out of range"),
                      (["--layer", "7", "--neuron", "0"], "layer 7 is out of range"),
                      (["--layer", "1", "--neuron", "-1"], "neuron -1 is out of range")):
        res = runner.invoke(app, ["top", str(one_pass), "--run", "p", *args])
        assert res.exit_code == 2 and msg in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1


def test_profile_of_a_list_of_neurons(one_pass):
    """``profile``/``profile_top`` take one neuron or a list (rows in the order given); a bad
    one is a one-line QueryError."""
    from neurondb.errors import QueryError

    st = neurondb.open(one_pass)
    many = st.profile(run="p", layer=1, neuron=[5, 2])
    one = [st.profile(run="p", layer=1, neuron=n) for n in (5, 2)]
    assert many.neuron.tolist() == [5, 2]
    assert many.reset_index(drop=True).equals(
        pd.concat(one, ignore_index=True)), (many, one)
    top = st.profile_top(run="p", layer=1, neuron=[2, 5], kind="top")
    assert sorted(set(top.neuron)) == [2, 5]
    assert top[top.neuron == 5].reset_index(drop=True).equals(
        st.profile_top(run="p", layer=1, neuron=5, kind="top").reset_index(drop=True))
    width = st.shape.d_ff(st.shape.stacks[0], 1)
    for bad, msg in (([1, width], f"neuron {width} is out of range"), ([], "a list of them"),
                     ("a", "a list of them"), (True, "a list of them"),
                     ([-1], "neuron -1 is out of range")):
        with pytest.raises(QueryError, match=msg):
            st.profile(run="p", layer=1, neuron=bad)
    st.close()


def test_top_without_run_reads_the_only_run(one_pass, tmp_path, relu_model, sentiment_dir):
    """``top`` without --run answers from the store's only per-token or profile run, and
    names the runs when there are several."""
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    runner = CliRunner()
    args = ["--layer", "1", "--neuron", "2", "-k", "3"]
    alone = runner.invoke(app, ["top", str(one_pass), *args])
    named = runner.invoke(app, ["top", str(one_pass), "--run", "p", *args])
    assert alone.exit_code == 0 and alone.output == named.output, alone.output
    two = tmp_path / "two"
    for run in ("a", "b"):
        neurondb.extract(relu_model, str(sentiment_dir), two, **dict(PROFILE, run=run)).close()
    res = runner.invoke(app, ["top", str(two), *args])
    assert res.exit_code == 2 and "several runs (a, b); name one with --run" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("can_link", [True, False])
def test_a_one_shard_run_links_its_shard_state(tmp_path, relu_model, sentiment_dir,
                                               monkeypatch, can_link):
    """The run's profile.npz of a one-shard run is its shard's, byte for byte: a hard link
    (nothing read back and re-written), or, where the file system cannot link, the merged
    state written; either way the store verifies and reads the same."""
    import os

    from neurondb.store import run as run_mod
    from neurondb.store.verify import verify_store

    if not can_link:
        def no_link(src, dst):
            raise OSError(1, "Operation not permitted")
        monkeypatch.setattr(run_mod.os, "link", no_link)
    out = tmp_path / "s"
    neurondb.extract(relu_model, str(sentiment_dir), out, **PROFILE).close()
    (shard,) = out.glob("runs/p/shards/*/profile.npz")
    whole = out / "runs" / "p" / "profile.npz"
    assert whole.read_bytes() == shard.read_bytes()
    assert os.path.samefile(whole, shard) == can_link
    assert verify_store(out).ok
    st = neurondb.open(out)
    assert st.profile(run="p").shape[0] == 96
    st.close()


LINK_KILLER = """
import os, signal, sys
import neurondb
from neurondb.store import failpoints
def kill_at_the_run_state(path, **_):
    if path.name == "profile.npz" and path.parent.name == "p":  # linked, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
failpoints.arm("atomic.replace", kill_at_the_run_state, repeat=True)
neurondb.extract(sys.argv[1], sys.argv[2], sys.argv[3], **eval(sys.argv[4]))
"""


def test_killed_between_link_and_rename_then_resumed(tmp_path, relu_model, sentiment_dir,
                                                     one_pass):
    """SIGKILL after the run's state was linked under its temporary name but before it was
    renamed into place: the same command completes the run, the leftover name is gone, and
    the tables equal one uninterrupted pass."""
    import subprocess
    import sys

    from neurondb.store.verify import verify_store

    out = tmp_path / "s"
    res = subprocess.run([sys.executable, "-c", LINK_KILLER, relu_model, str(sentiment_dir),
                          str(out), repr(PROFILE)], capture_output=True, text=True)
    assert res.returncode == -9, res.stderr[-2000:]
    run_dir = out / "runs" / "p"
    assert not (run_dir / "profile.npz").exists()
    assert any("profile.npz" in f.name for f in run_dir.iterdir()), "the link's temporary name"
    neurondb.extract(relu_model, str(sentiment_dir), out, **PROFILE).close()
    assert sorted(f.name for f in run_dir.iterdir() if "profile.npz" in f.name) == ["profile.npz"]
    assert verify_store(out).ok
    a, b = neurondb.open(out), neurondb.open(one_pass)
    assert a.profile(run="p").equals(b.profile(run="p"))
    assert a.profile_top(run="p").equals(b.profile_top(run="p"))
    a.close()
    b.close()
