"""Operating-system faults while an extraction writes: ENOSPC and EIO at several points are a
one-line error naming the file and the errno (exit 2, no traceback, no segfault), and the
same command afterwards resumes to the store an uninterrupted extraction writes.

A real full file system (a small tmpfs) is used where this process may mount one; elsewhere
those tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import neurondb
from neurondb.errors import NeurondbError
from neurondb.extract.writer import WriteFaultError, write_fault
from neurondb.store import failpoints, tensors

from .test_resume import assert_same_store

KW = dict(template="{text} It was {mask}.", verbalizer=["bad", "good"], positions="mask,first,last",
          batch_size=2, chunk_examples=3, grad=True, dtype="float16", progress=False)
CLI_ARGS = ["--dtype", "float16", "--template", "{text} It was {mask}.", "--verbalizer", "bad,good",
            "--positions", "mask,first,last", "--batch-size", "2", "--chunk-examples", "3",
            "--grad", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_path, sentiment_dir):
    out = tmp_path_factory.mktemp("ref") / "store"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **KW).close()
    return out


def _nth(n: int, exc: OSError):
    """A side effect raising ``exc`` on the ``n``-th call (1-based), passing others through."""
    calls = {"n": 0}

    def wrap(orig):
        def f(*a, **k):
            calls["n"] += 1
            if calls["n"] == n:
                raise exc
            return orig(*a, **k)
        return f
    return wrap


def _h5_error(code: int) -> OSError:
    # what h5py raises: the errno, a long multi-line text, no filename
    return OSError(code, f"Can't synchronously write data (file write failed: time = x\n, "
                         f"errno = {code}, error message = '{os.strerror(code)}')")


def _raise(exc: BaseException):
    def act(**_):
        raise exc
    return act


def _inject(monkeypatch, point: str, code: int) -> None:
    if point == "hdf5-append":
        failpoints.arm("tensor.flush", _raise(_h5_error(code)), nth=9)
    elif point == "hdf5-close":
        import h5py

        orig = h5py.File.flush
        monkeypatch.setattr(h5py.File, "flush",
                            _nth(2, RuntimeError(f"Can't flush cache (file write failed: "
                                                 f"errno = {code}, error message = 'x')"))(orig))
    elif point == "parquet-write":
        failpoints.arm("parquet.write", _raise(OSError(
            code, f"Error writing bytes to file. Detail: [errno {code}] {os.strerror(code)}")),
            nth=7)
    elif point == "pwrite":  # the tensor file's own write (neurondb.store.blockhash)
        monkeypatch.setattr(os, "pwrite", _nth(40, OSError(code, os.strerror(code)))(os.pwrite))
    elif point == "fdatasync":  # the writeback started while the file grows
        from neurondb.store import blockhash

        monkeypatch.setattr(blockhash, "SYNC_BYTES", 1)
        monkeypatch.setattr(os, "fdatasync",
                            _nth(3, OSError(code, os.strerror(code)))(os.fdatasync))
    elif point == "shard-rename":
        def rename(src, dst, **_):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))

        failpoints.arm("shard.rename", rename, nth=2)
    else:
        raise AssertionError(point)


@pytest.fixture(autouse=True)
def _disarmed():
    yield
    for name in failpoints.POINTS:
        failpoints.disarm(name)


@pytest.mark.parametrize("point,code", [
    ("hdf5-append", errno.ENOSPC), ("hdf5-append", errno.EIO), ("hdf5-close", errno.ENOSPC),
    ("parquet-write", errno.EIO), ("shard-rename", errno.ENOSPC), ("pwrite", errno.EIO),
    ("pwrite", errno.ENOSPC), ("fdatasync", errno.EIO)])
def test_fault_is_one_line_with_path_and_errno_then_resumes(tmp_path, tiny_path, sentiment_dir,
                                                             reference, monkeypatch, point, code):
    out = tmp_path / "s"
    with monkeypatch.context() as m:
        _inject(m, point, code)
        with pytest.raises(NeurondbError) as e:
            neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **KW)
    msg = str(e.value)
    assert isinstance(e.value, WriteFaultError), msg
    assert "\n" not in msg
    name = errno.errorcode[code]
    assert f"({name}, errno {code})" in msg
    assert str(out) in msg and ("resume" in msg)
    if code == errno.ENOSPC:
        assert msg.startswith("the disk filled up while writing ")
    assert not list(out.glob("runs/*/shards/.partial-*")), "a partial shard was left behind"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **KW).close()
    assert_same_store(out, reference)


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_fault_in_the_main_thread_finalize(tmp_path, tiny_path, sentiment_dir, reference,
                                           monkeypatch, code):
    import neurondb.store.run as run_mod

    real = run_mod.pq.write_table

    def write_table(table, where, *a, **k):
        if "run.parquet" in Path(str(where)).name:  # run.parquet or its temporary file
            raise OSError(code, f"Error writing bytes to file. Detail: [errno {code}] x")
        return real(table, where, *a, **k)

    out = tmp_path / "s"
    with monkeypatch.context() as m:
        m.setattr(run_mod.pq, "write_table", write_table)
        with pytest.raises(NeurondbError) as e:
            neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **KW)
    assert "\n" not in str(e.value) and f"errno {code}" in str(e.value)
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **KW).close()
    assert_same_store(out, reference)


def test_write_fault_describes_every_errno():
    e = write_fault(OSError(errno.EIO, "Input/output error", "/x/y.h5"), "/x")
    assert str(e) == ("Input/output error (EIO, errno 5) while writing /x/y.h5; the complete "
                      "shards are kept: check the disk, then re-run the same command to resume")
    full = write_fault(tensors.tensor_io_error(_h5_error(errno.ENOSPC), "/x/a.h5"), "/x")
    assert str(full).startswith("the disk filled up while writing /x/a.h5 (ENOSPC, errno 28)")
    assert write_fault(ValueError("a bug"), "/x") is None
    assert write_fault(KeyboardInterrupt(), "/x") is None


# -- a real small file system ---------------------------------------------------------------

@contextlib.contextmanager
def _tmpfs(size: str):
    """Mount a tmpfs of ``size`` (e.g. ``300k``); skip the test where mounting is not allowed."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command here")
    d = Path(f"/tmp/neurondb-tmpfs-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        d.rmdir()
        pytest.skip(f"cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN): "
                    f"{r.stderr.strip() or r.returncode}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
        with contextlib.suppress(OSError):
            d.rmdir()


def _remount(d: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(d)], check=True,
                   capture_output=True)


FILL_H5 = textwrap.dedent("""
    import sys
    import numpy as np
    from pathlib import Path
    from neurondb.errors import StoreIOError
    from neurondb.store.tensors import TensorWriter

    w = TensorWriter(Path(sys.argv[1]), {"encoder": (512, 512)}, "float32", {"encoder": 10**5})
    try:
        for _ in range(100000):
            for layer in (0, 1):
                w.append("encoder", layer, np.ones((64, 512), np.float32))
        w.close()
    except StoreIOError as e:
        print("error:", e)
        if sys.argv[2] == "abort":
            w.abort()
        sys.exit(2)
""")


@pytest.mark.parametrize("how", ["abort", "exit"])
def test_full_tmpfs_hdf5_writer_exits_cleanly(tmp_path, how):
    """The segfault after the error: HDF5 retried the failed flush at interpreter exit."""
    with _tmpfs("2m") as d:
        script = tmp_path / "fill.py"
        script.write_text(FILL_H5)
        r = subprocess.run([sys.executable, str(script), str(d / "a.h5"), how],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # -11 was the segfault
        assert r.stderr == ""
        out = r.stdout.strip().splitlines()
        assert len(out) == 1 and out[0].startswith("error: No space left on device (ENOSPC) at ")
        assert str(d / "a.h5") in out[0]


FILL_STATS = textwrap.dedent("""
    import sys
    import numpy as np
    from pathlib import Path
    from neurondb.errors import StoreIOError
    from neurondb.store.tensors import h5_writing

    try:
        with h5_writing(Path(sys.argv[1])) as f:
            for layer in range(20):
                f.create_dataset(f"sum{layer}", data=np.ones((4, 2048)))
    except StoreIOError as e:
        print("error:", e)
        sys.exit(2)
""")


def test_full_tmpfs_small_hdf5_file_is_one_line(tmp_path):
    """What running statistics use (store/stats.py): a plain h5py.File crashed here too."""
    with _tmpfs("200k") as d:
        script = tmp_path / "stats.py"
        script.write_text(FILL_STATS)
        r = subprocess.run([sys.executable, str(script), str(d / "stats.h5")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
        assert r.stderr == "" and r.stdout.startswith("error: No space left on device (ENOSPC)")
        assert not (d / "stats.h5").exists()
    ok = tmp_path / "ok.h5"
    r = subprocess.run([sys.executable, str(tmp_path / "stats.py"), str(ok)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import h5py

    with h5py.File(ok, "r") as f:
        assert len(f) == 20 and f["sum3"][0, 0] == 1.0


CLI = textwrap.dedent("""
    import sys
    import neurondb.extract.run as run_mod
    run_mod.free_bytes = lambda path: 1 << 40  # as if another process filled the disk later
    from neurondb.cli.app import app
    sys.argv = ["neurondb", *sys.argv[1:]]
    app()
""")


def test_full_tmpfs_extraction_is_one_line_then_resumes(tmp_path, tiny_path, sentiment_dir,
                                                        reference):
    with _tmpfs("160k") as d:
        script = tmp_path / "cli.py"
        script.write_text(CLI)
        out = d / "s"
        cmd = [sys.executable, str(script), "extract", str(tiny_path("bert")), "--data",
               str(sentiment_dir), "--out", str(out), *CLI_ARGS]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith(f"error: the disk filled up while writing {out}")
        assert "(ENOSPC, errno 28)" in lines[0]
        _remount(d, "4m")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert_same_store(out, reference)


# -- reading: damaged or failing shard files during `rank` ---------------------------------

@pytest.fixture(scope="module")
def rank_store(tmp_path_factory, tiny_path, sentiment_dir):
    out = tmp_path_factory.mktemp("rank") / "store"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, stats_split="train",
                     **{**KW, "grad": False})
    return out


def _rank(store: Path, name: str):
    from typer.testing import CliRunner

    from neurondb.cli.app import app

    return CliRunner().invoke(app, ["rank", str(store), "--name", name])


def test_rank_on_a_damaged_hdf5_shard_is_one_line(rank_store, tmp_path):
    assert _rank(rank_store, "ok").exit_code == 0
    store = tmp_path / "store"
    shutil.copytree(rank_store, store)
    h5 = sorted(store.glob("runs/*-validation/shards/c*/activations.h5"))[1]
    raw = bytearray(h5.read_bytes())
    at = raw.find(b"SNOD")  # the root group's symbol table node
    assert at > 0
    raw[at:at + 4] = b"XXXX"
    h5.write_bytes(bytes(raw))
    r = _rank(store, "damaged")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {h5}"), r.output
    assert "neurondb verify" in lines[0] and "Traceback" not in r.output


def test_rank_with_an_io_error_reading_a_shard_names_path_and_errno(rank_store, monkeypatch):
    real = os.preadv

    def preadv(fd, buffers, offset, *a):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "preadv", preadv)
    r = _rank(rank_store, "eio")
    monkeypatch.setattr(os, "preadv", real)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "(EIO)" in lines[0] and "activations.h5" in lines[0], r.output
