"""A writer thread: host copies, encoding and file writes overlap the next forward pass.

``submit(fn, *args)`` queues work (bounded, so memory stays bounded by a few batches);
an error raised in the thread is re-raised by every later ``submit``/``flush``, and no queued
job runs after it, until ``drain``. An
operating-system error there (a full disk, an I/O error) comes back as one
:class:`WriteFaultError` line naming the file and the errno (see :func:`write_fault`).
"""

from __future__ import annotations

import errno as errno_mod
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from neurondb.errors import ExtractError, StoreIOError
from neurondb.store.codec import encode
from neurondb.store.tensors import clean_os_error

_STOP = object()
_FULL = (errno_mod.ENOSPC, errno_mod.EDQUOT)


class WriteFaultError(ExtractError, StoreIOError):
    """An operating-system error (ENOSPC, EIO, ...) while an extraction writes its store; the
    complete shards are kept and the same command resumes."""


def _os_error_of(e: BaseException) -> tuple[OSError, str | None] | None:
    """The OSError behind ``e`` (itself, or the cause of a StoreIOError) and its path."""
    code = getattr(e, "errno", None)
    if isinstance(e, StoreIOError) and isinstance(code, int):  # from tensors.tensor_io_error
        return OSError(code, os.strerror(code), getattr(e, "filename", None)), \
            getattr(e, "filename", None)
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError):
            return cur, getattr(e, "filename", None) or cur.filename
        cur = cur.__cause__
    return None


def write_fault(e: BaseException, where: str | Path) -> WriteFaultError | None:
    """``e`` as a one-line :class:`WriteFaultError` naming the file (else ``where``) and the
    errno, or None when ``e`` is not an operating-system error (a bug, an interrupt).

    A full disk reads ``the disk filled up while writing PATH (ENOSPC, errno 28); ...``;
    every other errno ``<strerror> (<NAME>, errno N) while writing PATH; ...``.
    """
    if isinstance(e, WriteFaultError):
        return e
    if not isinstance(e, (OSError, StoreIOError)):
        return None
    found = _os_error_of(e)
    if found is None:
        return None
    os_err, path = found
    path = path or str(where)
    clean = clean_os_error(os_err, path)
    code = clean.errno
    name = errno_mod.errorcode.get(code, "EIO") if code else "unknown errno"
    tag = f"{name}, errno {code}" if code else name
    if code in _FULL:
        msg = (f"the disk filled up while writing {path} ({tag}); the complete shards are kept: "
               "free space and re-run the same command to resume")
    else:
        msg = (f"{clean.strerror} ({tag}) while writing {path}; the complete shards are kept: "
               "check the disk, then re-run the same command to resume")
    err = WriteFaultError(msg)
    err.errno = code  # type: ignore[attr-defined]
    err.filename = path  # type: ignore[attr-defined]
    err.__cause__ = e
    return err


def _where(fn: Callable, args: tuple) -> str:
    """The shard directory (``ShardWriter.tmp``) a queued job writes into, if it names one."""
    for obj in (getattr(fn, "__self__", None), *args):
        tmp = getattr(obj, "tmp", None)
        if isinstance(tmp, (str, Path)):
            return str(tmp)
    return "the store"


class BackgroundWriter:
    def __init__(self, max_pending: int = 4, threaded: bool = True):
        self.threaded = threaded
        self._q: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="neurondb-writer", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:  # failed: nothing more runs until drain()
                    fn, args = item
                    fn(*args)
            except BaseException as e:  # surfaced to the main thread
                self._error = write_fault(e, _where(*item)) or e
            finally:
                self._q.task_done()

    def _raise(self) -> None:
        """Raise the failure, every time until :meth:`drain`: reporting it does not clear it,
        or jobs still queued behind it (a shard's commit after its skipped writes) would run
        once the main thread had been told."""
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable, *args) -> None:
        self._raise()
        if not self.threaded:
            try:
                fn(*args)
            except BaseException as e:
                fault = write_fault(e, _where(fn, args))
                self._error = fault or e
                if fault is None:
                    raise
                raise fault from e
            return
        self._q.put((fn, args))

    def flush(self) -> None:
        if self.threaded:
            self._q.join()
        self._raise()

    def drain(self) -> None:
        """Wait for queued work (skipped after a failure) and drop the failure: the caller
        aborts the uncommitted shards next, and the writer can be used again."""
        if self.threaded:
            self._q.join()
        self._error = None

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join()
            self._thread = None


class HostCopy:
    """A device tensor on its way to the host in the storage dtype.

    On CUDA the cast happens on the device and the copy goes to pinned memory without
    blocking; :meth:`numpy` (called in the writer thread) waits for that copy only.
    """

    def __init__(self, x: torch.Tensor, dtype: str):
        self.dtype = dtype
        if x.is_cuda:
            tdt = torch.int16 if dtype == "bfloat16" else getattr(torch, dtype)
            y = x.detach().to(getattr(torch, dtype))
            if dtype == "bfloat16":
                y = y.view(torch.int16)
            self.host = torch.empty(y.shape, dtype=tdt, pin_memory=True)
            self.host.copy_(y, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
            self.array = None
        else:
            self.host = None
            self.event = None
            self.array = encode(x, dtype)

    def numpy(self) -> np.ndarray:
        if self.array is None:
            self.event.synchronize()
            a = self.host.numpy()
            self.array = a.view(np.uint16) if self.dtype == "bfloat16" else a
        return self.array
