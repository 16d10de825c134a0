"""Remove what dead writers left in a store (``neurondb verify --repair``).

A killed writer can leave, anywhere in a store:

- temporary files ``.NAME.tmp-PID`` (a manifest, ``run.json``, a result, a catalog entry);
- partial shards ``runs/<run>/shards/.partial-c…-PID``;
- a run directory without ``run.json`` and without a complete shard (killed between creating
  the directory and writing ``run.json``), whose run lock nobody holds;
- the holder file ``.locks/<lock>.holder`` of a lock nobody holds any more.

:func:`repair` removes exactly those whose writer process is no longer running (the pid in the
name, or the lock's holder), under the store lock, and never anything of a live process.
Committed data (manifest, complete shards, run files, results, catalog entries) is never
touched.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from neurondb.store import locks
from neurondb.store.errors import StoreError
from neurondb.store.io import leftover_pid, os_errors, remove_dead_leftovers
from neurondb.store.layout import MANIFEST, RUN_JSON, RUNS_DIR, SHARD_JSON, SHARDS_DIR


def _has_complete_shard(run_dir: Path) -> bool:
    sd = run_dir / SHARDS_DIR
    return sd.is_dir() and any(p.name.startswith("c") and (p / SHARD_JSON).exists()
                               for p in sd.iterdir())


def _describe(p: Path, root: Path) -> str:
    try:
        rel = p.relative_to(root)
    except ValueError:
        rel = p
    return str(rel)


def repair(root: str | Path) -> list[str]:
    """Remove every leftover of a dead process from store ``root``; returns one line per
    removed thing (a path relative to ``root`` and why). Safe while other writers run: what a
    live process is writing, and anything committed, is kept. Raises
    :class:`~neurondb.errors.StoreError` if ``root`` is not a store, and
    :class:`~neurondb.errors.LockedError` if the store lock stays busy."""
    root = Path(root)
    if not (root / MANIFEST).exists():
        raise StoreError(f"{root} is not a neurondb store (no {MANIFEST}); nothing to repair")
    done: list[str] = []
    with locks.store_lock(root), os_errors(root):
        for p in remove_dead_leftovers(root, recursive=True):
            done.append(f"removed {_describe(p, root)} (left by process {leftover_pid(p.name)}, "
                        "which is no longer running)")
        runs = root / RUNS_DIR
        for d in sorted(runs.iterdir()) if runs.is_dir() else []:
            if not d.is_dir() or (d / RUN_JSON).exists() or _has_complete_shard(d):
                continue
            if locks.is_locked(locks.run_lock_path(root, d.name)):
                continue  # a live writer is creating it right now
            shutil.rmtree(d, ignore_errors=True)
            done.append(f"removed {_describe(d, root)} (a run directory without {RUN_JSON} "
                        "or complete shards, left by a stopped extraction)")
        ldir = locks.locks_dir(root)
        for h in sorted(ldir.glob("*.lock.holder")) if ldir.is_dir() else []:
            lock_path = h.with_name(h.name[: -len(".holder")])
            holder = locks.read_holder(lock_path)
            if locks.is_locked(lock_path) or (holder is not None and holder.alive()):
                continue  # held (or just being taken or released) by a live process
            with contextlib.suppress(FileNotFoundError):
                h.unlink()
            who = holder.describe() if holder else "an unreadable holder"
            done.append(f"removed {_describe(h, root)} (stale lock holder: {who})")
    return done
