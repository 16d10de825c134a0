"""Result tables in the store: ``STORE/results/<table>/<name>.parquet``, written atomically.

Every analysis writes one Parquet file per named result. The DuckDB connection exposes each
``results/<table>/*.parquet`` as a view ``<table>`` (``union_by_name``), so results join with
the run tables in SQL. Provenance (which store, runs and parameters made a result) is kept
twice: as JSON in the Parquet schema metadata under ``neurondb`` and in a ``params`` column.

Writers: a result is written under its own lock (``result_lock``) and the store lock; the name
is checked again under the lock, so two writers of one name never both succeed (the second is
refused, with the holder named while the first is still writing) and nothing is replaced
unless ``overwrite``. Every written result is recorded in the store's catalog (size and
sha256), and :func:`read_result` refuses a file that no longer matches its record.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from neurondb.errors import on_cli, switch
from neurondb.query.errors import QueryError
from neurondb.store import catalog
from neurondb.store.io import atomic_file, os_errors, read_parquet, remove_dead_leftovers
from neurondb.store.kinds import RESULT_KINDS, TABLES, result_kind  # noqa: F401
from neurondb.store.layout import RESULTS_DIR
from neurondb.store.locks import result_lock, store_lock
from neurondb.store.reader import Store, open_store

META_KEY = b"neurondb"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,127}$")


def _singular(table: str) -> str:
    k = RESULT_KINDS.get(table)
    return k.singular if k else table


def as_store(store: Store | str | Path) -> Store:
    """A :class:`Store`, opening ``store`` if it is a path."""
    return store if isinstance(store, Store) else open_store(store)


def check_name(name: str, table: str = "rankings") -> str:
    """A result name is a file stem: letters, digits and ``_ . = + -``, at most 128 characters."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise QueryError(f"{_singular(table)} name {name!r} is not allowed: use letters, "
                         "digits and _ . = + - (at most 128 characters, not starting with a symbol)")
    return name


def default_name(prefix: str, runs: list[str] | tuple[str, ...] = ()) -> str:
    """``prefix_A+B+...``: the prefix and every run (or ranking) it was made from, so that two
    results of different inputs never get the same default name. Characters a name cannot
    hold become ``_``; a name that would be longer than 128 characters (or that lost
    characters) is cut and ends in ``-`` and 8 hex digits of the full list's sha256."""
    full = prefix if not runs else f"{prefix}_" + "+".join(runs)
    name = re.sub(r"[^A-Za-z0-9_.=+-]", "_", full)
    if name != full or len(name) > 128:
        digest = hashlib.sha256("\0".join((prefix, *runs)).encode()).hexdigest()[:8]
        name = f"{name[:119]}-{digest}"
    return name


def result_path(store: Store, table: str, name: str) -> Path:
    """Where result ``name`` of ``table`` is written (in the first store opened)."""
    result_kind(table)
    return store.results_dir / table / f"{check_name(name, table)}.parquet"


def find_result(store: Store, table: str, name: str) -> Path | None:
    """The file of result ``name`` in any of the stores opened together (first wins)."""
    check_name(name, table)
    for root in store.roots:
        p = root / RESULTS_DIR / table / f"{name}.parquet"
        if p.exists():
            return p
    return None


def list_results(store: Store | str | Path, table: str) -> list[str]:
    """Names of the results of ``table`` in every store opened together, sorted."""
    store = as_store(store)
    names: set[str] = set()
    for root in store.roots:
        d = root / RESULTS_DIR / table
        if d.exists():
            names.update(p.stem for p in d.glob("*.parquet") if not p.name.startswith("."))
    return sorted(names)


def check_absent(store: Store, table: str, name: str, overwrite: bool) -> Path:
    """The path to write ``name`` to; an error if it exists and ``overwrite`` is false."""
    path = result_path(store, table, name)
    if path.exists() and not overwrite:
        what = _singular(table)
        raise QueryError(f"{what} {name!r} already exists in {path.parent}; choose another name "
                         f"({'--name' if on_cli() else 'name=...'}) or replace it "
                         f"({switch('overwrite')})")
    return path


def write_result(store: Store, table: str, name: str, df: pd.DataFrame, meta: dict,
                 overwrite: bool = False) -> Path:
    """Write ``df`` as ``results/<table>/<name>.parquet`` (tmp file + rename); returns the path.

    ``meta`` (JSON-able) goes into the schema metadata and, as a JSON string, a ``params``
    column, so SQL can filter on it. A ``name`` column is added first. The write holds the
    result's lock and the store lock: another process writing the same name at the same time
    is refused (:class:`~neurondb.errors.LockedError` naming it), and a result that appeared
    meanwhile is refused unless ``overwrite``. The file is recorded in the catalog, and dead
    writers' temporary files in its folder are removed.
    """
    path = check_absent(store, table, name, overwrite)
    meta = {"name": name, "table": table, "store": str(store.path),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
    params = json.dumps(meta, default=str, sort_keys=True)
    out = df.copy()
    if "name" in out.columns:
        out = out.drop(columns=["name"])
    out.insert(0, "name", name)
    out["params"] = params
    t = pa.Table.from_pandas(out, preserve_index=False)
    t = t.replace_schema_metadata({META_KEY: params.encode()})
    root = store.path
    with result_lock(root, table, name), store_lock(root):
        path = check_absent(store, table, name, overwrite)  # again, now that we hold the lock
        with os_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_dead_leftovers(path.parent)
            with atomic_file(path) as tmp:
                pq.write_table(t, tmp, compression="zstd")
            catalog.record_result(root, table, name, path)
    return path


def _check_recorded(path: Path, table: str) -> None:
    """Refuse a result file that is not as its catalog entry records (the one check:
    :func:`neurondb.store.verify.result_problem`)."""
    from neurondb.store.verify import result_problem

    problem = result_problem(path.parents[2], table, path, full=True)
    if problem is not None:
        raise QueryError(f"{_singular(table)} {path.stem!r} cannot be read: {problem}")


def read_result(store: Store | str | Path, table: str, name: str) -> tuple[pd.DataFrame, dict]:
    """``(table as DataFrame, provenance dict)`` of result ``name``; a clear error if absent."""
    store = as_store(store)
    path = find_result(store, table, name)
    if path is None:
        for root in store.roots:
            if catalog.result_entry(root, table, name) is not None:
                raise QueryError(f"{_singular(table)} {name!r} is recorded in the catalog of "
                                 f"{root} but its file {root / RESULTS_DIR / table / name}"
                                 ".parquet is missing: the store is damaged; run `neurondb "
                                 f"verify` and re-create it with {switch('overwrite')}")
        have = ", ".join(list_results(store, table)) or "none"
        what = _singular(table)
        hint = result_kind(table).hint
        raise QueryError(f"no {what} named {name!r} in the store ({table}: {have}); {hint}")
    _check_recorded(path, table)
    t = read_parquet(path)
    meta = json.loads((t.schema.metadata or {}).get(META_KEY, b"{}"))
    return t.to_pandas(), meta
