"""The extraction's writer thread (neurondb.extract.writer.BackgroundWriter): after a job fails,
no later job runs until the caller drains it, so a shard whose writes were skipped can never
be committed by a commit job queued behind them."""

from __future__ import annotations

import threading

import pytest

from neurondb.extract.writer import BackgroundWriter, WriteFaultError


def _fail() -> None:
    raise OSError(5, "Input/output error", "/store/shard/activations.h5")


@pytest.mark.parametrize("threaded", [True, False])
def test_nothing_runs_after_a_failure_until_drained(threaded):
    w = BackgroundWriter(threaded=threaded)
    ran: list[str] = []
    try:
        if threaded:
            w.submit(_fail)
            with pytest.raises(WriteFaultError):
                w.flush()  # the failure is reported once ...
        else:
            with pytest.raises(WriteFaultError):
                w.submit(_fail)
        for name in ("batch", "commit"):  # ... and the writer stays failed
            with pytest.raises(WriteFaultError):
                w.submit(ran.append, name)
        with pytest.raises(WriteFaultError):
            w.flush()
        assert ran == []
        w.drain()  # the caller aborts the shards, then the writer is usable again
        w.submit(ran.append, "after")
        w.flush()
        assert ran == ["after"]
    finally:
        w.close()


def test_jobs_queued_before_the_failure_was_reported_do_not_run():
    """The race that could commit an empty shard: the main thread, told of the failure,
    cleared it while a shard's batch writes and its commit were still queued; those then ran
    (the skipped batches' shard committed). Here the writer is held after the failure until
    the main thread has been told."""
    w = BackgroundWriter(max_pending=8)
    hold, ran = threading.Event(), []
    get = w._q.get

    def held_get(*a, **k):
        item = get(*a, **k)
        if w._error is not None:  # after the failure: wait until the main thread knows
            hold.wait(10)
        return item

    w._q.get = held_get
    try:
        w.submit(_fail)
        w.submit(ran.append, "batch")
        w.submit(ran.append, "commit")
        while w._error is None:  # the failure happened
            pass
        with pytest.raises(WriteFaultError):
            w.submit(ran.append, "next")  # the main thread learns of it
        hold.set()
        w.drain()
        assert ran == []
    finally:
        hold.set()
        w.close()


def test_a_shard_that_lost_writes_is_never_committed(tmp_path, tiny_path, sentiment_dir,
                                                     monkeypatch):
    """Defence in depth: whatever loses a batch's writes, the shard's commit compares its
    examples with its chunk's and refuses; the same command then resumes to the full store."""
    import neurondb
    from neurondb.errors import StoreError
    from neurondb.extract.run import _Extraction
    from tests.extract.test_resume import KW, assert_same_store

    kw = KW
    ref = tmp_path / "ref"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), ref, **kw).close()
    real, calls = _Extraction._write_batch, []

    def lossy(self, shard, *a):
        calls.append(1)
        if len(calls) != 3:  # the third batch's writes are lost
            real(self, shard, *a)

    out = tmp_path / "s"
    with monkeypatch.context() as m:
        m.setattr(_Extraction, "_write_batch", lossy)
        with pytest.raises(StoreError, match=r"holds 1 of its 3 examples and is not committed"):
            neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **kw)
    assert not list(out.glob("runs/*/shards/.partial-*"))
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, **kw).close()
    assert_same_store(out, ref)
