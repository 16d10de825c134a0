"""Extraction under faults: interruption and SIGKILL then resume, a changed command,
a full disk, queries during an extraction, and a 2-process (Gloo) run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import neurondb
from neurondb.extract.errors import ExtractError
from neurondb.store import failpoints

KW = dict(template="{text} It was {mask}.", verbalizer=["bad", "good"], positions="mask,first,last",
          batch_size=2, chunk_examples=3, grad=True, progress=False)


def assert_same_store(a: Path, b: Path) -> None:
    """Row for row and value for value (the order of examples and rows included)."""
    sa, sb = neurondb.open(a), neurondb.open(b)
    assert [i.run for i in sa.runs()] == [i.run for i in sb.runs()]
    for info in sa.runs():
        ib = sb.run(info.run)
        assert (info.n_examples, info.n_rows, info.accuracy) == (ib.n_examples, ib.n_rows, ib.accuracy)
        assert sa.examples(run=info.run).equals(sb.examples(run=info.run))
        if info.mode == "stats":
            x, y = sa.stats(run=info.run), sb.stats(run=info.run)
            for k in x.sum:
                np.testing.assert_array_equal(x.sum[k], y.sum[k])
                np.testing.assert_array_equal(x.label_sum[k], y.label_sum[k])
            continue
        assert sa.rows(run=info.run).equals(sb.rows(run=info.run))
        assert sa.tokens(run=info.run).equals(sb.tokens(run=info.run))
        for layer in range(2):
            np.testing.assert_array_equal(sa.activations(layer, run=info.run),
                                          sb.activations(layer, run=info.run))
            np.testing.assert_array_equal(sa.gradients(layer, run=info.run),
                                          sb.gradients(layer, run=info.run))
    sa.close()
    sb.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_path, sentiment_dir):
    out = tmp_path_factory.mktemp("ref") / "store"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, stats_split="train", **KW).close()
    return out


def test_sharded_store_reads_as_one(reference):
    st = neurondb.open(reference)
    assert len(st.shards(st.run(split="validation").run)) == 4  # 12 examples, 3 per chunk
    rows = st.rows().to_pandas()
    assert rows.row.tolist() == list(range(36))
    sql = st.sql("SELECT count(*), min(row), max(row), count(DISTINCT row) FROM rows "
                 "WHERE run = 'sentiment0-validation'").fetchall()[0]
    assert sql == (36, 0, 35, 36)
    x = st.activations(1)
    np.testing.assert_array_equal(st.activations(1, rows=np.array([35, 0, 17])), x[[35, 0, 17]])
    blocks = list(st.iter_activations(1, chunk_rows=4))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), x)
    assert [s for s, _ in blocks][:3] == [0, 4, 8]
    st.close()


def interrupt_at_commit(n: int):
    """Ctrl-C while the ``n``-th shard is committed (the failpoint before its commit); the
    earlier shards are committed."""
    return failpoints.armed("shard.commit.before", "interrupt", nth=n)


def test_interrupt_then_resume_equals_uninterrupted(tmp_path, tiny_path, sentiment_dir,
                                                    reference, monkeypatch):
    out = tmp_path / "s"
    with interrupt_at_commit(3), pytest.raises(KeyboardInterrupt):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, stats_split="train", **KW)
    assert neurondb.open(out).runs() == []  # nothing complete is visible
    assert len(neurondb.open(out, partial=True).shards("sentiment0-validation")) == 2
    assert not list((out / "runs" / "sentiment0-validation" / "shards").glob(".partial-*"))
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, stats_split="train", **KW).close()
    assert_same_store(out, reference)


KILLER = textwrap.dedent("""
    import sys
    import neurondb
    from neurondb.store import failpoints
    where, n = sys.argv[5], int(sys.argv[6])
    point = {"append": "shard.append.after",      # in the middle of a shard's tensors
             "flush": "tensor.flush",             # between whole-chunk writes of a tensor file
             "commit": "shard.commit.after",      # right after a shard was renamed into place
             "finalize": "run.finalize.before",   # all shards written, run not yet complete
             }[where]
    failpoints.arm(point, failpoints.action("kill"), nth=n)
    neurondb.extract(sys.argv[1], sys.argv[2], sys.argv[3], stats_split=sys.argv[4],
                     template="{text} It was {mask}.", verbalizer=["bad", "good"],
                     positions="mask,first,last", batch_size=2, chunk_examples=3, grad=True,
                     progress=False)
""")


@pytest.mark.parametrize("where,n", [("append", 5), ("flush", 4), ("commit", 2), ("commit", 5),
                                     ("finalize", 1)])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_path, sentiment_dir, reference,
                                                  where, n):
    out = tmp_path / "s"
    args = [sys.executable, "-c", KILLER, str(tiny_path("bert")), str(sentiment_dir), str(out),
            "train", where, str(n)]
    res = subprocess.run(args, capture_output=True, text=True)
    assert res.returncode == -9, res.stderr[-2000:]
    if where in ("append", "flush"):
        assert list(out.glob("runs/*/shards/.partial-*"))  # a half-written shard was left
    st = neurondb.open(out, partial=True)
    for info in st.runs():
        for _, sh in st.shards(info.run):  # whatever is visible is complete and intact
            assert sh.n_examples == 3
    st.close()
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, stats_split="train", **KW).close()
    assert not list(out.glob("runs/*/shards/.partial-*"))
    assert_same_store(out, reference)
    from neurondb.store.verify import verify_store

    assert verify_store(out).ok


def test_changed_command_is_refused_with_the_difference(tmp_path, tiny_path, sentiment_dir,
                                                        monkeypatch):
    out = tmp_path / "s"
    with interrupt_at_commit(2), pytest.raises(KeyboardInterrupt):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **KW)
    kw = dict(KW, template="{text} Overall {mask}.")
    with pytest.raises(ExtractError, match="started with another command \\(template"):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **kw)
    kw = dict(KW, batch_size=4)
    with pytest.raises(ExtractError, match="batch_size"):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **kw)
    st = neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out,
                          **dict(KW, template="{text} Overall {mask}.", overwrite=True))
    assert st.run().template == "{text} Overall {mask}."


def test_full_disk_ends_clearly_and_consistently(tmp_path, tiny_path, sentiment_dir, reference,
                                                 monkeypatch):
    out = tmp_path / "s"
    # two shards fit (2 layers x 2 kinds x 3 flushes), then the disk stays full
    with failpoints.armed("tensor.flush", "enospc", nth=13, repeat=True), \
            pytest.raises(ExtractError, match="disk filled up.*resume") as e:
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, stats_split="train", **KW)
    assert "\n" not in str(e.value)
    from neurondb.store.verify import verify_store

    rep = verify_store(out)
    assert rep.ok and any("still running or was interrupted" in n for n in rep.notes)
    assert not list(out.glob("runs/*/shards/.partial-*"))
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, stats_split="train", **KW).close()
    assert_same_store(out, reference)


def test_query_during_extraction_sees_only_complete_chunks(tmp_path, tiny_path, sentiment_dir,
                                                           monkeypatch):
    seen = []
    out = tmp_path / "s"

    def look(**_):
        st = neurondb.open(out, partial=True)
        n_rows = st.sql("SELECT count(*) FROM rows").fetchall()[0][0]
        n_ex = st.sql("SELECT count(*) FROM examples").fetchall()[0][0]
        n_act = st.sql("SELECT count(*) FROM activations(layer := 0, neuron := 0)").fetchall()[0][0]
        seen.append((n_ex, n_rows, n_act, len(st.shards("sentiment0-validation"))))
        st.close()
        assert neurondb.open(out).runs() == []  # not listed as complete

    # before every commit (repeat from the first)
    with failpoints.armed("shard.commit.before", look, nth=1, repeat=True):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **KW).close()
    assert seen == [(3 * k, 9 * k, 9 * k, k) for k in range(4)]


def test_verify_catches_truncation_and_flipped_bytes(tmp_path, reference):
    import shutil

    from typer.testing import CliRunner

    from neurondb.cli.app import app

    runner = CliRunner()
    for damage in ("truncate", "flip"):
        out = tmp_path / damage
        shutil.copytree(reference, out)
        shard = out / "runs" / "sentiment0-validation" / "shards" / "c000001"
        f = shard / "activations.h5"
        data = bytearray(f.read_bytes())
        if damage == "truncate":
            f.write_bytes(data[: len(data) // 2])
        else:
            data[len(data) - 100] ^= 0xFF
            f.write_bytes(bytes(data))
        res = runner.invoke(app, ["verify", str(out)])
        assert res.exit_code == 1 and "DAMAGED" in res.output
        assert ("truncated" if damage == "truncate" else "checksum") in res.output
        res = runner.invoke(app, ["query", str(out), "SELECT count(*) FROM rows"])
        assert res.exit_code == 2 and "failed verification" in res.output
        res = runner.invoke(app, ["query", str(out), "SELECT count(*) AS n FROM activations(layer := 0)",
                                  "--no-verify", "--format", "csv"])
        assert res.exit_code == 0 and res.output.strip().splitlines()[1] == str(27 * 48)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(args: list[str], world_size: int = 2, timeout: float = 180) -> None:
    """``neurondb ARGS`` in ``world_size`` processes as torchrun starts them (RANK,
    WORLD_SIZE, MASTER_ADDR/PORT on one free port); each must exit 0."""
    cmd = [sys.executable, "-m", "neurondb.cli.app", *args]
    port = str(_free_port())
    procs = [subprocess.Popen(cmd, env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r),
                                             WORLD_SIZE=str(world_size),
                                             MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world_size)]
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-2000:]


def test_two_processes_gloo_equal_one_process(tmp_path, tiny_path, sentiment_dir, reference):
    out = tmp_path / "s"
    run_ranks(["extract", str(tiny_path("bert")),
               "--data", str(sentiment_dir), "--out", str(out), "--stats-split", "train",
               "--template", "{text} It was {mask}.", "--verbalizer", "bad,good",
               "--positions", "mask,first,last", "--batch-size", "2", "--chunk-examples", "3",
               "--grad", "--quiet"], timeout=120)
    st = neurondb.open(out)
    ranks = {sh.rank for _, sh in st.shards("sentiment0-validation")}
    assert ranks == {0, 1}
    st.close()
    assert_same_store(out, reference)
