"""Advisory OS locks for store writers (``filelock``: ``flock`` on POSIX).

- :func:`store_lock` — short store-level changes (creating the manifest, the catalog, result
  writes). Waits up to ``timeout`` seconds, since such sections last milliseconds.
- :func:`run_lock` — a run's writer, held for the whole extraction; a second writer is refused
  at once with the holder named (pid, host, start time).
- :func:`result_lock` — one named result (``results/<table>/<name>``) while it is written.

The kernel releases an ``flock`` when its process dies, so a lock left by a killed process
never blocks: the next writer takes it over and says whose it was (the holder file it left).
Locks live under ``STORE/.locks/``. They do not hold on file systems without working
``flock`` (some network file systems): there, run one writer per store.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from neurondb.errors import LockedError, StoreIOError
from neurondb.store.io import describe_os_error, os_errors, pid_alive

LOCKS_DIR = ".locks"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started} ({self.command})"

    def alive(self) -> bool:
        return self.host == socket.gethostname() and pid_alive(self.pid)


def _holder_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".holder")


def read_holder(lock_path: Path) -> Holder | None:
    try:
        d = json.loads(_holder_path(lock_path).read_text())
        return Holder(int(d["pid"]), str(d["host"]), str(d["started"]), str(d.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _current_holder(lock_path: Path, wait: float = 1.0) -> Holder | None:
    """The live holder of a busy lock. A holder writes its holder file just after it takes the
    lock, so the file may be missing, or still name a dead earlier holder, for a moment: poll
    for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        h = read_holder(lock_path)
        if (h is not None and h.alive()) or time.monotonic() >= deadline:
            return h
        time.sleep(0.02)


def _me() -> Holder:
    cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    return Holder(os.getpid(), socket.gethostname(),
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), cmd or "python")


#: Locks this process holds, by path, with their re-entry count (a process never blocks on
#: its own lock: a result write inside an extraction takes the store lock again).
_HELD: dict[str, tuple[FileLock, int]] = {}

#: Messages about locks taken over from dead processes (printed by the CLI, kept for tests).
TAKEOVERS: list[str] = []


@contextlib.contextmanager
def hold(lock_path: Path, what: str, timeout: float = 0.0) -> Iterator[Holder | None]:
    """Hold the lock at ``lock_path``; refuse with :class:`LockedError` naming the holder if
    another live process keeps it longer than ``timeout`` seconds. Yields the holder of a dead
    process whose lock was taken over, else None."""
    lock_path = Path(lock_path)
    key = str(lock_path.absolute())
    if key in _HELD:
        lock, n = _HELD[key]
        _HELD[key] = (lock, n + 1)
        try:
            yield None
        finally:
            lock, n = _HELD[key]
            _HELD[key] = (lock, n - 1)
        return
    with os_errors(lock_path):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), thread_local=False)
    try:
        lock.acquire(timeout=timeout, poll_interval=0.05)
    except Timeout:  # before OSError: filelock's Timeout is a TimeoutError, an OSError
        h = _current_holder(lock_path)
        who = h.describe() if h else "another process"
        raise LockedError(f"{what} is locked by {who}; wait for it to finish, or stop it "
                          f"(the lock is {lock_path})") from None
    except OSError as e:
        raise StoreIOError(describe_os_error(e, lock_path)) from e
    previous = read_holder(lock_path)
    taken_over = previous if previous is not None and not previous.alive() else None
    if taken_over is not None:
        TAKEOVERS.append(f"took over the lock of {what} left by {taken_over.describe()}, "
                         "which is no longer running")
    me = _me()
    try:
        with os_errors(lock_path):
            _holder_path(lock_path).write_text(json.dumps(me.__dict__) + "\n")
        _HELD[key] = (lock, 1)
        yield taken_over
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            _holder_path(lock_path).unlink()
        lock.release()


def locks_dir(root: str | Path) -> Path:
    return Path(root) / LOCKS_DIR


def store_lock_path(root: str | Path) -> Path:
    return locks_dir(root) / "store.lock"


def run_lock_path(root: str | Path, run: str) -> Path:
    return locks_dir(root) / f"run-{run}.lock"


def result_lock_path(root: str | Path, table: str, name: str) -> Path:
    return locks_dir(root) / f"result-{table}-{name}.lock"


def store_lock(root: str | Path, timeout: float = 60.0):
    """The store-level lock (manifest, catalog, results): waits up to ``timeout`` seconds."""
    return hold(store_lock_path(root), f"store {root}", timeout=timeout)


def run_lock(root: str | Path, run: str, timeout: float = 0.0):
    """The writer lock of run ``run``; refused at once if a live process holds it."""
    return hold(run_lock_path(root, run), f"run {run!r} of {root}", timeout=timeout)


def result_lock(root: str | Path, table: str, name: str, timeout: float = 0.0):
    """The lock of one named result while it is written."""
    return hold(result_lock_path(root, table, name), f"{table} result {name!r} of {root}",
                timeout=timeout)


def is_locked(lock_path: Path) -> bool:
    """Whether a live process (other than this one) holds ``lock_path`` right now."""
    if str(Path(lock_path).absolute()) in _HELD:
        return False
    lock = FileLock(str(lock_path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False
