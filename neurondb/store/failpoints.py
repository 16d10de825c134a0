"""Failpoints: named places in the store's write path where a run can be made to fail on
purpose, to test (or reproduce) what a crash, a Ctrl-C or a full disk leaves behind. They are
the public seam of the fault tests: nothing patches neurondb's private methods.

Arm one in Python with :func:`armed` (a context manager) or, for a child process, with the
environment variable ``NEURONDB_FAILPOINTS`` — ``name=action[@n[+]]`` items separated by
``;``, the action taking effect at the ``n``-th hit (default 1; ``n+``: that hit and every
one after it, like a disk that stays full)::

    NEURONDB_FAILPOINTS="shard.commit.after=kill@2" neurondb extract ...

Actions: ``kill`` (SIGKILL), ``interrupt`` (KeyboardInterrupt), ``enospc`` / ``eio`` (an
``OSError`` with that errno), or, in Python, any callable (called with the hit's keyword
context; what it raises propagates). A disarmed point costs one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Callable, Iterator

#: every failpoint, with where it is hit
POINTS = {
    "shard.append.after": "after a block of rows is appended to a shard's tensors",
    "shard.commit.before": "before a shard's files are checksummed and renamed into place",
    "shard.commit.after": "right after a shard was renamed into place",
    "shard.rename": "at the rename of a shard's partial directory (an OSError here is the "
                    "rename failing)",
    "tensor.flush": "when a buffered block of a tensor is written to HDF5",
    "parquet.write": "when a batch of table rows is written to a shard's Parquet file",
    "atomic.replace": "before a file written atomically (manifest, run.json, a result, ...) "
                      "is renamed over its name (context: path)",
    "run.begin": "after a run's directory is made, before its run.json says running",
    "run.finalize.before": "after every shard of a run is written, before the run is complete",
}

_ENV = "NEURONDB_FAILPOINTS"
_armed: dict[str, tuple[Callable, int, bool]] = {}
_hits: dict[str, int] = {}


def action(spec: str) -> Callable:
    """The callable of an action name (``kill``, ``interrupt``, ``enospc``, ``eio``)."""
    return _action(spec)


def _action(spec: str) -> Callable:
    if spec == "kill":
        return lambda **_: os.kill(os.getpid(), signal.SIGKILL)
    if spec == "interrupt":
        def interrupt(**_):
            raise KeyboardInterrupt
        return interrupt
    if spec in ("enospc", "eio"):
        code = errno.ENOSPC if spec == "enospc" else errno.EIO

        def fail(**_):
            raise OSError(code, os.strerror(code))
        return fail
    raise ValueError(f"{_ENV}: unknown action {spec!r} (kill, interrupt, enospc, eio)")


def _from_env() -> None:
    for item in filter(None, (s.strip() for s in os.environ.get(_ENV, "").split(";"))):
        name, _, spec = item.partition("=")
        action, _, nth = spec.partition("@")
        arm(name.strip(), _action(action.strip()), int(nth.rstrip("+") or 1),
            repeat=nth.endswith("+"))


def arm(name: str, action: Callable, nth: int = 1, repeat: bool = False) -> None:
    """Make the ``nth`` hit of failpoint ``name`` (with ``repeat``: every hit from the
    ``nth`` on) call ``action(**context)``."""
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}; failpoints: {', '.join(sorted(POINTS))}")
    _armed[name] = (action, int(nth), bool(repeat))
    _hits[name] = 0


def disarm(name: str) -> None:
    _armed.pop(name, None)
    _hits.pop(name, None)


@contextlib.contextmanager
def armed(name: str, action: Callable | str, nth: int = 1,
          repeat: bool = False) -> Iterator[None]:
    """Arm ``name`` for the ``with`` block (``action``: a callable or an action name)."""
    arm(name, _action(action) if isinstance(action, str) else action, nth, repeat)
    try:
        yield
    finally:
        disarm(name)


def hit(point: str, **context) -> None:
    """Called by the store at failpoint ``point``; does nothing unless it is armed."""
    if not _armed:
        return
    entry = _armed.get(point)
    if entry is None:
        return
    _hits[point] += 1
    action, nth, repeat = entry
    if _hits[point] == nth or (repeat and _hits[point] > nth):
        action(**context)


_from_env()
