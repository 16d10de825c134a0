"""Concurrent writers of one store, with real separate processes (issue 11, part B):
different runs extract side by side and an interrupt in one never touches the other's files;
a second writer of the same run is refused at once naming the holder; a dead holder's lock is
taken over (and said so); kills at the manifest rename and between creating a run directory
and writing its run.json resume with the same command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import neurondb
from neurondb.errors import ExtractError
from neurondb.store import failpoints, locks
from neurondb.store.verify import verify_store

KW = dict(template="{text} It was {mask}.", verbalizer=["bad", "good"], positions="mask,first,last",
          batch_size=2, chunk_examples=3, progress=False, writer_thread=False)

# One extraction in its own process. argv[1] is JSON: model, data, out, kw, and optionally
# sync (a folder), tag, pause_before_commit / pause_after_commit (wait for sync/go at that
# commit, after writing sync/<tag>-ready), kill (manifest | rundir | commit) with kill_at.
WORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    import neurondb
    from neurondb.store import failpoints
    a = json.loads(sys.argv[1])
    sync = Path(a.get("sync") or ".")
    def pause():
        (sync / (a["tag"] + "-ready")).write_text(str(os.getpid()))
        while not (sync / "go").exists():
            time.sleep(0.05)
    kill = failpoints.action("kill")
    if a.get("pause_before_commit"):
        failpoints.arm("shard.commit.before", lambda **_: pause(), nth=a["pause_before_commit"])
    if a.get("pause_after_commit"):
        failpoints.arm("shard.commit.after", lambda **_: pause(), nth=a["pause_after_commit"])
    if a.get("kill") == "commit":                # right after a shard was renamed into place
        failpoints.arm("shard.commit.after", kill, nth=a["kill_at"])
    elif a.get("kill") == "manifest":            # at the rename of manifest.json into place
        def manifest(path, **_):
            if Path(path).name == "manifest.json":
                kill()
        failpoints.arm("atomic.replace", manifest, repeat=True)
    elif a.get("kill") == "rundir":              # run directory made, run.json not yet written
        failpoints.arm("run.begin", kill)
    neurondb.extract(a["model"], a["data"], a["out"], **a["kw"]).close()
    print("DONE", flush=True)
""")


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_stray_workers():
    """Kill (by their own pid) any worker a failed test left waiting."""
    yield
    while _STARTED:
        p = _STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.communicate()


def _start(model, data, out, sync=None, **args) -> subprocess.Popen:
    kw = dict(KW, **args.pop("kw", {}))
    spec = dict(model=str(model), data=str(data), out=str(out), kw=kw,
                sync=None if sync is None else str(sync), **args)
    p = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(p)
    return p


def _wait_for(cond, timeout: float, what: str, procs=()) -> None:
    t0 = time.monotonic()
    while not cond():
        for p in procs:
            if p.poll() is not None and p.returncode != 0:
                raise AssertionError(f"a worker failed while waiting for {what}: "
                                     f"{p.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _same_run(a: Path, b: Path, run_a: str, run_b: str | None = None) -> None:
    """Run ``run_a`` of store ``a`` equals run ``run_b`` of ``b``: examples, rows, values."""
    run_b = run_b or run_a
    sa, sb = neurondb.open(a), neurondb.open(b)
    ia, ib = sa.run(run_a), sb.run(run_b)
    assert (ia.n_examples, ia.n_rows, ia.accuracy) == (ib.n_examples, ib.n_rows, ib.accuracy)
    ea, eb = sa.examples(run=run_a).to_pandas(), sb.examples(run=run_b).to_pandas()
    assert ea.drop(columns="run").equals(eb.drop(columns="run"))
    for layer in range(2):
        np.testing.assert_array_equal(sa.activations(layer, run=run_a),
                                      sb.activations(layer, run=run_b))
    sa.close()
    sb.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_path, sentiment_dir):
    """An uninterrupted store with runs ``a`` and ``b`` (the same data under two names)."""
    out = tmp_path_factory.mktemp("ref") / "store"
    for run in ("a", "b"):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, run=run, **KW).close()
    return out


def test_interrupt_of_one_run_leaves_the_others_files(tmp_path, tiny_path, sentiment_dir,
                                                      reference):
    """Two extractions of different runs start together on a new store; a Ctrl-C in one
    (before it completed any shard) removes only its own run: the other completes."""
    out, sync = tmp_path / "s", tmp_path / "sync"
    sync.mkdir()
    m = tiny_path("bert")
    pa = _start(m, sentiment_dir, out, sync, tag="a", pause_before_commit=1, kw={"run": "a"})
    pb = _start(m, sentiment_dir, out, sync, tag="b", pause_after_commit=1, kw={"run": "b"})
    _wait_for(lambda: (sync / "a-ready").exists() and (sync / "b-ready").exists(), 180,
              "both extractions to be under way", [pa, pb])
    assert (out / "runs" / "b" / "shards" / "c000000" / "shard.json").exists()
    pa.send_signal(signal.SIGINT)
    _, err_a = pa.communicate(timeout=60)
    assert pa.returncode != 0 and "KeyboardInterrupt" in err_a
    assert (out / "manifest.json").exists(), "the interrupted writer removed the manifest"
    assert not (out / "runs" / "a").exists()  # its own run, with no complete shard: removed
    (sync / "go").write_text("")
    out_b, err_b = pb.communicate(timeout=120)
    assert pb.returncode == 0, err_b[-2000:]
    assert verify_store(out).ok
    _same_run(out, reference, "b")
    # the interrupted run resumes (here: starts again) with the same command
    neurondb.extract(str(m), str(sentiment_dir), out, run="a", **KW).close()
    _same_run(out, reference, "a")


def test_second_writer_of_one_run_is_refused_naming_the_holder(tmp_path, tiny_path,
                                                               sentiment_dir, reference):
    out, sync = tmp_path / "s", tmp_path / "sync"
    sync.mkdir()
    m = tiny_path("bert")
    procs = {tag: _start(m, sentiment_dir, out, sync, tag=tag, pause_before_commit=1,
                         kw={"run": "a"}) for tag in ("x", "y")}
    _wait_for(lambda: any(p.poll() is not None for p in procs.values()), 180,
              "one of two identical extractions to end")
    loser = next(t for t, p in procs.items() if p.poll() is not None)
    winner = "y" if loser == "x" else "x"
    _, err = procs[loser].communicate()
    assert procs[loser].returncode != 0
    line = err.strip().splitlines()[-1]
    assert "LockedError" in line and "run 'a'" in line, err[-2000:]
    assert f"pid {procs[winner].pid} on {socket.gethostname()}" in line
    assert (sync / f"{winner}-ready").exists()  # the holder was at work all along
    (sync / "go").write_text("")
    _, err = procs[winner].communicate(timeout=120)
    assert procs[winner].returncode == 0, err[-2000:]
    assert verify_store(out).ok
    _same_run(out, reference, "a")


def test_dead_holders_lock_is_taken_over_and_said(tmp_path, tiny_path, sentiment_dir, reference,
                                                  capfd):
    out = tmp_path / "s"
    m = tiny_path("bert")
    p = _start(m, sentiment_dir, out, kill="commit", kill_at=2, kw={"run": "a"})
    p.communicate(timeout=180)
    assert p.returncode == -signal.SIGKILL
    holder = locks.read_holder(out / ".locks" / "run-a.lock")
    assert holder is not None and holder.pid == p.pid  # the killed writer's holder file
    shards = out / "runs" / "a" / "shards"
    dead = shards / f".partial-c000002-{p.pid}"        # as if it died writing chunk 2
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    _STARTED.append(sleeper)
    live = shards / f".partial-c000009-{sleeper.pid}"  # a live process's: never touched
    for d in (dead, live):
        d.mkdir()
        (d / "examples.parquet").write_bytes(b"x" * 100)
    n = len(locks.TAKEOVERS)
    capfd.readouterr()
    neurondb.extract(str(m), str(sentiment_dir), out, **dict(KW, run="a", progress=True)).close()
    assert not dead.exists() and live.exists()
    shutil.rmtree(live)
    err = capfd.readouterr().err
    said = [t for t in locks.TAKEOVERS[n:] if f"pid {p.pid} " in t]
    assert said and "run 'a'" in said[0] and "no longer running" in said[0]
    assert f"left by pid {p.pid} " in " ".join(err.split())
    assert "resuming run a: 2 of 4 chunks" in " ".join(err.split())
    assert verify_store(out).ok
    _same_run(out, reference, "a")


@pytest.mark.parametrize("kill", ["manifest", "rundir"])
def test_kill_while_creating_then_the_same_command_resumes(tmp_path, tiny_path, sentiment_dir,
                                                           reference, kill):
    out = tmp_path / "s"
    m = tiny_path("bert")
    p = _start(m, sentiment_dir, out, kill=kill, kw={"run": "a"})
    _, err = p.communicate(timeout=180)
    assert p.returncode == -signal.SIGKILL, err[-2000:]
    if kill == "manifest":
        assert not (out / "manifest.json").exists()
        assert list(out.glob(".manifest.json.tmp-*"))
    else:
        assert (out / "runs" / "a").is_dir() and not (out / "runs" / "a" / "run.json").exists()
    neurondb.extract(str(m), str(sentiment_dir), out, run="a", **KW).close()
    assert not list(out.glob(".*.tmp-*")) and not list(out.glob("runs/a/.*.tmp-*"))
    assert verify_store(out).ok
    _same_run(out, reference, "a")


def test_a_stores_creation_by_another_model_is_refused(tmp_path, tiny_path, sentiment_dir,
                                                       monkeypatch):
    """Two processes creating one new store must agree on its manifest: the one that checks
    second (under the store lock) refuses a store of another model."""
    from neurondb.extract import run as X

    out = tmp_path / "s"
    job = X._Extraction(X.ExtractConfig(model=str(tiny_path("bert")), data=str(sentiment_dir),
                                        out=out, run="a", **KW))
    assert not job.existing  # nothing there when it looked
    other = _start(tiny_path("bert", seed=1), sentiment_dir, out, kw={"run": "b"})
    _, err = other.communicate(timeout=180)
    assert other.returncode == 0, err[-2000:]
    with pytest.raises(ExtractError, match="holds a store of another model"):
        job.run()
    assert verify_store(out).ok and [i.run for i in neurondb.open(out).runs()] == ["b"]
    assert not (out / "runs" / "a").exists()


def test_new_store_removed_after_an_error_when_nobody_else_wrote(tmp_path, tiny_path,
                                                                 sentiment_dir, monkeypatch):
    out = tmp_path / "s"
    with failpoints.armed("shard.commit.before", "interrupt"), pytest.raises(KeyboardInterrupt):
        neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, run="a", **KW)
    assert not out.exists()
    assert os.listdir(tmp_path) == []
