"""The one home of a store's file mechanics: sha256, atomic file and directory writes, JSON
that names its file when it is damaged, and OSError turned into a one-line error.

Temporary names carry the writer's pid (``.NAME.tmp-PID``, ``.partial-…-PID``) so that a later
writer holding the lock can tell a dead process's leftovers from a live one's
(:func:`leftover_pid`).
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from neurondb.errors import StoreError, StoreIOError, UsageError, arg
from neurondb.store import failpoints

_TMP = re.compile(r"^\..+\.tmp-(\d+)$")
_PARTIAL = re.compile(r"^\.partial-.*-(\d+)$")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path: str | Path) -> dict:
    """``{"bytes": size, "sha256": hex}`` of a file: what a commit records for it."""
    p = Path(path)
    return {"bytes": p.stat().st_size, "sha256": sha256_file(p)}


def tmp_path(path: str | Path) -> Path:
    """The temporary sibling a writer uses before renaming into ``path``."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, fsync, rename over ``path``."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with os_errors(path):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            failpoints.hit("atomic.replace", path=path)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync and rename it over ``path``, on any
    error remove it."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        yield tmp
        with os_errors(path):
            fsync_file(tmp)
            failpoints.hit("atomic.replace", path=path)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_json(path: str | Path,
              fix: str = "run `neurondb verify` and re-create it") -> dict:
    """Parse a JSON object file; a missing, undecodable or invalid file is a one-line
    StoreError that names the file and ``fix``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise StoreError(f"{path} is missing; the store is damaged: run `neurondb verify`") from e
    except OSError as e:
        raise StoreIOError(describe_os_error(e, path)) from e
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise StoreError(f"{path} is not valid JSON (not UTF-8 at byte {e.start}); {fix}") from e
    except json.JSONDecodeError as e:
        raise StoreError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); {fix}") from e
    if not isinstance(obj, dict):
        raise StoreError(f"{path} is not valid JSON for this file (not an object); {fix}")
    return obj


def output_file_problem(path: str | Path, example: str, makes_parents: bool = False
                        ) -> str | None:
    """Why ``path`` cannot be a new or replaced output file (a directory; a missing parent,
    unless the writer ``makes_parents``: figures), as one line suggesting ``example`` (a
    file name), or None when it can."""
    p = Path(path)
    if p.is_dir():
        return f"{p} is a directory; give a file name (e.g. {p / example})"
    parent = p.absolute().parent
    while makes_parents and not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        return f"cannot write {p}: {parent} {what}"
    return None


def check_output_file(path: str | Path | None, name: str, flag: str, example: str,
                      makes_parents: bool = False) -> None:
    """Refuse, before anything is computed or written, an output file (argument ``name``,
    CLI ``flag``) that cannot be written (:func:`output_file_problem`); None passes."""
    if path is None:
        return
    problem = output_file_problem(path, example, makes_parents)
    if problem:
        raise UsageError(f"{arg(name, flag)}: {problem}")


def describe_os_error(e: OSError, path: str | Path | None = None) -> str:
    """One line: the path, the errno name and what to do."""
    where = e.filename or path or "?"
    name = errno_mod.errorcode.get(e.errno or 0, "EIO") if e.errno else type(e).__name__
    text = e.strerror or str(e)
    fix = {
        errno_mod.ENOSPC: f"free space (or choose another {arg('out')}) and run the same command "
                          "again to resume",
        errno_mod.EDQUOT: "free space under your quota and run the same command again",
        errno_mod.EACCES: "check the permissions of that path",
        errno_mod.EROFS: "the file system is read-only; write elsewhere",
    }.get(e.errno or 0, "check the disk and run the same command again")
    return f"{text} ({name}) at {where}: {fix}"


@contextlib.contextmanager
def os_errors(path: str | Path | None = None) -> Iterator[None]:
    """Turn an OSError raised inside into a one-line :class:`StoreIOError` naming the path
    and errno (a neurondb error passes through unchanged)."""
    try:
        yield
    except StoreError:
        raise
    except OSError as e:
        raise StoreIOError(describe_os_error(e, path)) from e


def leftover_pid(name: str) -> int | None:
    """The writer pid in a temporary name (``.x.tmp-PID`` or ``.partial-…-PID``), else None."""
    m = _TMP.match(name) or _PARTIAL.match(name)
    return int(m.group(1)) if m else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_leftovers(directory: str | Path, recursive: bool = False) -> list[Path]:
    """Remove temporary files and partial folders under ``directory`` whose writer pid is dead
    (never a live process's, never our own); returns what was removed."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for p in list(directory.iterdir()):
        pid = leftover_pid(p.name)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            removed.append(p)
        elif recursive and p.is_dir() and not p.is_symlink():
            removed.extend(remove_dead_leftovers(p, recursive=True))
    return removed


def read_parquet(source, columns=None):
    """One Parquet file (a path or a buffer) as a ``pyarrow.Table``, through
    ``pyarrow.parquet.ParquetFile``: unlike ``pq.read_table`` it does not import Arrow's dataset
    module (and with it pandas), so reading a store stays a light import."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(source).read(columns=columns)
