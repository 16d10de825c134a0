"""The store's catalog: what has been committed, recorded outside the things it records.

``STORE/catalog/runs/<run>.json`` is written when a run completes and lists every file of the
run directory that is not inside a shard (``run.json``, ``run.parquet``) with its size and
sha256, plus the run's shard count; shards record their own files in ``shard.json``.
``STORE/catalog/results/<table>/<name>.json`` records one result file. A run or result whose
catalog entry exists but whose files are gone is *missing*, not absent: ``verify`` reports it
and readers refuse it, so a deleted directory never silently shrinks an answer.

Entries are written atomically (tmp + rename) under the store lock.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from neurondb.store.io import atomic_write_json, file_record, read_json

CATALOG_DIR = "catalog"


def _run_entry(root: Path, run: str) -> Path:
    return Path(root) / CATALOG_DIR / "runs" / f"{run}.json"


def _result_entry(root: Path, table: str, name: str) -> Path:
    return Path(root) / CATALOG_DIR / "results" / table / f"{name}.json"


def record_run(root: str | Path, run: str, files: list[Path] | dict[str, Path],
               n_chunks: int) -> dict:
    """Record a completed run: its files and shard count.

    ``files``: paths inside the run directory, or ``{name: path}`` where a file is recorded
    under its final name from a temporary path (written before it is renamed into place).
    """
    root = Path(root)
    named = files if isinstance(files, dict) else {Path(f).name: Path(f) for f in files}
    entry = {"run": run, "n_chunks": int(n_chunks),
             "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "files": {name: file_record(f) for name, f in named.items()}}
    p = _run_entry(root, run)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, entry)
    return entry


def run_entry(root: str | Path, run: str) -> dict | None:
    p = _run_entry(Path(root), run)
    return read_json(p) if p.exists() else None


def run_entry_exists(root: str | Path, run: str) -> bool:
    """Whether the catalog records ``run`` (without reading the entry)."""
    return _run_entry(Path(root), run).exists()


def recorded_runs(root: str | Path) -> list[str]:
    d = Path(root) / CATALOG_DIR / "runs"
    return sorted(p.stem for p in d.glob("*.json") if not p.name.startswith(".")) \
        if d.is_dir() else []


def forget_run(root: str | Path, run: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _run_entry(Path(root), run).unlink()


def record_result(root: str | Path, table: str, name: str, path: Path) -> dict:
    """Record result file ``path`` (``results/<table>/<name>.parquet``)."""
    entry = {"table": table, "name": name,
             "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "file": Path(path).name, **file_record(path)}
    p = _result_entry(Path(root), table, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, entry)
    return entry


def result_entry(root: str | Path, table: str, name: str) -> dict | None:
    p = _result_entry(Path(root), table, name)
    return read_json(p) if p.exists() else None


def recorded_results(root: str | Path) -> list[tuple[str, str]]:
    """``(table, name)`` of every recorded result."""
    d = Path(root) / CATALOG_DIR / "results"
    if not d.is_dir():
        return []
    return sorted((t.name, p.stem) for t in d.iterdir() if t.is_dir()
                  for p in t.glob("*.json") if not p.name.startswith("."))
