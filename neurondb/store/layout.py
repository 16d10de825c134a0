"""File names, schema version and atomic file helpers for a store directory."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from neurondb.store.io import atomic_write_json, atomic_write_text  # noqa: F401

SCHEMA_VERSION = 1
FORMAT = "neurondb-store"
MANIFEST = "manifest.json"
RUNS_DIR = "runs"
RESULTS_DIR = "results"
PARTIAL_PREFIX = ".partial-"

RUN_JSON = "run.json"
RUN_TABLE = "run.parquet"
EXAMPLES = "examples.parquet"
TOKENS = "tokens.parquet"
ROWS = "rows.parquet"
ACTIVATIONS = "activations.h5"
GRADIENTS = "gradients.h5"
STATS = "stats.h5"

SHARDS_DIR = "shards"
SHARD_JSON = "shard.json"
VERIFY_JSON = "verify.json"

TENSOR_FILES = {"activations": ACTIVATIONS, "gradients": GRADIENTS}


def shard_name(chunk: int) -> str:
    """Directory name of the shard holding chunk ``chunk`` of a run's example order."""
    return f"c{chunk:06d}"

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,127}$")


def check_run_name(name: str) -> str:
    if not _RUN_NAME.match(name):
        from neurondb.store.errors import StoreError

        raise StoreError(
            f"run name {name!r} is not allowed: use letters, digits and _ . = + - "
            "(at most 128 characters, not starting with a symbol)"
        )
    return name


def tensor_key(stack: str, layer: int) -> str:
    """HDF5 dataset path of one (stack, layer)."""
    return f"{stack}/{layer:03d}"


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free
