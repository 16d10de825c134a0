"""Writers that cannot hurt each other, and leftovers (issue 11, part B), with real separate
processes: two writers of one result name (exactly one succeeds, the other is told), a result
file checked against its catalog record, dead writers' temporary files and partial export
folders removed and a live writer's kept, and ``repair`` removing only dead leftovers."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from neurondb.errors import LockedError, QueryError
from neurondb.query.results import read_result, write_result
from neurondb.store import catalog
from neurondb.store.reader import open_store
from neurondb.store.repair import repair
from neurondb.testing_stores import make_store


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def live_pid():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p.pid
    p.kill()
    p.wait()


def _wait_for(cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- two writers of one result name -------------------------------------------------------
RESULT_WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import pandas as pd
    from neurondb.query import results as R
    a = json.loads(sys.argv[1])
    sync = Path(a["sync"])
    orig = R.pq.write_table
    def slow(*args, **kw):          # a long write, so that the two overlap
        time.sleep(1.5)
        return orig(*args, **kw)
    R.pq.write_table = slow
    store = R.as_store(a["root"])
    (sync / a["tag"]).write_text("")
    while not all((sync / t).exists() for t in ("p", "q")):
        time.sleep(0.01)             # both start writing together
    df = pd.DataFrame({"stack": ["encoder"] * 3, "layer": [0, 0, 1], "neuron": [1, 2, 3],
                       "score": [float(ord(a["tag"]))] * 3})
    R.write_result(store, "rankings", "X", df, {"writer": a["tag"]})
    print("WROTE", a["tag"], flush=True)
""")


def test_two_writers_of_one_result_name_exactly_one_succeeds(tmp_path):
    root = make_store(tmp_path / "s")
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = {t: subprocess.Popen([sys.executable, "-c", RESULT_WRITER,
                                  json.dumps({"root": str(root), "sync": str(sync), "tag": t})],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for t in ("p", "q")}
    outs = {t: p.communicate(timeout=120) for t, p in procs.items()}
    ok = [t for t, p in procs.items() if p.returncode == 0]
    assert len(ok) == 1, {t: o[1][-1500:] for t, o in outs.items()}
    winner, loser = ok[0], ("q" if ok[0] == "p" else "p")
    err = outs[loser][1].strip().splitlines()[-1]
    # refused while the winner writes (holder named), or told the name exists: never silent
    assert (f"LockedError: rankings result 'X' of {root} is locked by pid "
            f"{procs[winner].pid} on {socket.gethostname()}" in err
            or "already exists" in err), err
    df, meta = read_result(open_store(root), "rankings", "X")
    assert meta["writer"] == winner and set(df.score) == {float(ord(winner))}
    entry = catalog.result_entry(root, "rankings", "X")
    assert entry is not None and entry["bytes"] == (root / "results/rankings/X.parquet").stat().st_size
    assert not list((root / "results" / "rankings").glob(".*tmp*"))


def _df(v: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"stack": ["encoder"], "layer": [0], "neuron": [1], "score": [v]})


def test_a_second_write_is_refused_unless_overwrite_and_the_catalog_follows(tmp_path):
    root = make_store(tmp_path / "s")
    st = open_store(root)
    path = write_result(st, "rankings", "X", _df(1.0), {})
    first = catalog.result_entry(root, "rankings", "X")
    assert first["sha256"] and first["bytes"] == path.stat().st_size
    with pytest.raises(QueryError, match="already exists.*overwrite=True"):
        write_result(st, "rankings", "X", _df(2.0), {})
    write_result(st, "rankings", "X", _df(2.0), {}, overwrite=True)
    assert catalog.result_entry(root, "rankings", "X")["sha256"] != first["sha256"]
    assert read_result(st, "rankings", "X")[0].score.tolist() == [2.0]


def test_a_result_writer_waits_for_nobody_but_refuses_a_live_holder(tmp_path):
    """A live process holding the result's lock: refused at once, naming it."""
    root = make_store(tmp_path / "s")
    code = textwrap.dedent(f"""
        import sys, time
        from neurondb.store.locks import result_lock
        with result_lock({str(root)!r}, "rankings", "X"):
            print("HELD", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "HELD"
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=f"locked by pid {p.pid} on ") as e:
            write_result(open_store(root), "rankings", "X", _df(), {})
        assert time.monotonic() - t0 < 5 and "\n" not in str(e.value)
        assert not (root / "results" / "rankings" / "X.parquet").exists()
    finally:
        p.kill()
        p.wait()


def test_read_result_refuses_a_file_that_differs_from_its_record(tmp_path):
    root = make_store(tmp_path / "s")
    st = open_store(root)
    path = write_result(st, "rankings", "X", _df(1.0), {})
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    pq.write_table(t.set_column(t.schema.get_field_index("score"), "score",
                                pq.read_table(path).column("score").cast("float32")), path)
    with pytest.raises(QueryError, match=r"X\.parquet has \d+ bytes, \d+ recorded") as e:
        read_result(st, "rankings", "X")
    assert "\n" not in str(e.value) and "overwrite=True" in str(e.value)
    path.unlink()
    with pytest.raises(QueryError, match="recorded in the catalog .* is missing"):
        read_result(st, "rankings", "X")
    write_result(st, "rankings", "X", _df(3.0), {})  # the fix that the messages name works
    assert read_result(st, "rankings", "X")[0].score.tolist() == [3.0]


def test_result_writer_removes_dead_writers_tmp_files_only(tmp_path, live_pid):
    root = make_store(tmp_path / "s")
    d = root / "results" / "rankings"
    d.mkdir(parents=True)
    dead = d / f".A.parquet.tmp-{dead_pid()}"
    live = d / f".B.parquet.tmp-{live_pid}"
    other = d / "notes.txt"
    for f in (dead, live, other):
        f.write_bytes(b"x" * 1000)
    write_result(open_store(root), "rankings", "C", _df(), {})
    assert not dead.exists() and live.exists() and other.exists()
    assert (d / "C.parquet").exists()


# -- repair ---------------------------------------------------------------------------------
def test_repair_removes_only_dead_processes_leftovers(tmp_path, live_pid):
    root = make_store(tmp_path / "s")
    dpid = dead_pid()
    runs = root / "runs"
    # a run directory a killed extraction left without run.json, and one being created now
    (runs / "r1" / "shards").mkdir(parents=True)
    (runs / "r2" / "shards").mkdir(parents=True)
    holder_code = textwrap.dedent(f"""
        import time
        from neurondb.store.locks import run_lock
        with run_lock({str(root)!r}, "r2"):
            print("HELD", flush=True)
            time.sleep(60)
    """)
    h = subprocess.Popen([sys.executable, "-c", holder_code], stdout=subprocess.PIPE, text=True)
    try:
        assert h.stdout.readline().strip() == "HELD"
        r3 = runs / "r3"
        (r3 / "shards" / "c000000").mkdir(parents=True)
        (r3 / "run.json").write_text("{}")
        (r3 / "shards" / "c000000" / "shard.json").write_text("{}")
        dead_shard = r3 / "shards" / f".partial-c000001-{dpid}"
        live_shard = r3 / "shards" / f".partial-c000002-{live_pid}"
        for p in (dead_shard, live_shard):
            p.mkdir()
            (p / "activations.h5").write_bytes(b"x" * 4096)
        dead_tmp = root / f".manifest.json.tmp-{dpid}"
        live_tmp = root / f".manifest.json.tmp-{live_pid}"
        dead_run_tmp = r3 / f".run.json.tmp-{dpid}"
        dead_res_tmp = root / "results" / "rankings" / f".X.parquet.tmp-{dpid}"
        dead_res_tmp.parent.mkdir(parents=True)
        for f in (dead_tmp, live_tmp, dead_run_tmp, dead_res_tmp):
            f.write_text("x")
        ldir = root / ".locks"
        stale = ldir / "run-old.lock.holder"
        stale.write_text(json.dumps({"pid": dpid, "host": socket.gethostname(),
                                     "started": "2026-01-01T00:00:00Z", "command": "neurondb"}))
        (ldir / "run-old.lock").write_text("")
        live_holder = ldir / "run-r2.lock.holder"
        assert live_holder.exists()

        done = repair(root)

        for p in (dead_shard, dead_tmp, dead_run_tmp, dead_res_tmp, runs / "r1", stale):
            assert not p.exists(), p
        for p in (live_shard, live_tmp, runs / "r2", live_holder, r3 / "run.json",
                  r3 / "shards" / "c000000" / "shard.json", root / "manifest.json"):
            assert p.exists(), p
        text = "\n".join(done)
        assert len(done) == 6, text
        assert f"runs/r3/shards/.partial-c000001-{dpid} (left by process {dpid}" in text
        assert "runs/r1 (a run directory without run.json" in text
        assert f".locks/run-old.lock.holder (stale lock holder: pid {dpid}" in text
        assert repair(root) == []
    finally:
        h.kill()
        h.wait()


# -- partial export folders -----------------------------------------------------------------
EXPORT_KILLER = textwrap.dedent("""
    import os, signal, sys
    import transformers
    from neurondb.intervene import export_pruned
    from tests.intervene.helpers import layer_mask, make
    orig = transformers.PreTrainedModel.save_pretrained
    def save(self, *a, **kw):
        orig(self, *a, **kw)
        os.kill(os.getpid(), signal.SIGKILL)  # weights written, export not complete
    transformers.PreTrainedModel.save_pretrained = save
    model, tok, shape = make("bert")
    export_pruned(model, tok, layer_mask(shape), sys.argv[1])
""")


def test_killed_exports_partial_folder_is_removed_by_the_next_export(tmp_path, live_pid):
    from neurondb.intervene import export_pruned
    from tests.intervene.helpers import layer_mask, make

    out = tmp_path / "exp"
    p = subprocess.Popen([sys.executable, "-c", EXPORT_KILLER, str(out)], stderr=subprocess.PIPE,
                         text=True, cwd=Path(__file__).parents[2])
    _, err = p.communicate(timeout=180)
    assert p.returncode == -signal.SIGKILL, err[-2000:]
    left = [q for q in tmp_path.iterdir() if q.name.startswith(".")]
    assert len(left) == 1 and left[0].is_dir() and left[0].name.endswith(f"-{p.pid}")
    assert any(left[0].iterdir())  # the weights it wrote
    live = tmp_path / f".partial-exp.0000-{live_pid}"  # another export, still running
    live.mkdir()
    unrelated = tmp_path / f".notes.tmp-{dead_pid()}"  # not ours to remove
    unrelated.write_text("x")
    model, tok, shape = make("bert")
    export_pruned(model, tok, layer_mask(shape), out)
    assert not left[0].exists() and live.exists() and unrelated.exists()
    assert (out / "neurondb_prune.json").exists()
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(["exp", live.name, unrelated.name])



def test_a_busy_lock_names_a_holder_that_is_still_writing_its_holder_file(tmp_path):
    """The holder takes the lock, then writes who it is: a contender arriving in between
    still names it (it waits a moment for the holder file)."""
    import subprocess
    import sys
    import textwrap

    from neurondb.errors import LockedError
    from neurondb.store import locks

    path = locks.run_lock_path(tmp_path, "r")
    path.parent.mkdir(parents=True)
    child = textwrap.dedent(f"""
        import json, os, socket, sys, time
        from filelock import FileLock
        lock = FileLock({str(path)!r}, thread_local=False)
        lock.acquire()
        print("locked", flush=True)
        time.sleep(0.3)   # the holder file comes a little after the lock
        open({str(path) + ".holder"!r}, "w").write(json.dumps(dict(
            pid=os.getpid(), host=socket.gethostname(), started="now", command="test")))
        time.sleep(5)
    """)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as e:
            with locks.run_lock(tmp_path, "r"):
                pass
        assert f"pid {p.pid}" in str(e.value)
    finally:
        p.kill()
        p.wait()
