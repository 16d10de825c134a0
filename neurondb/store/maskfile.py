"""The portable mask file: Parquet with columns ``(stack, layer, neuron)`` listing the selected
neurons (the ones suppression replaces and pruning removes), with provenance in the Parquet
schema metadata under the key ``neurondb`` (JSON: ranking, store, method, fraction, shape, ...).

The file is portable (copied between machines on its own), so its checksum travels inside it:
the schema metadata key ``neurondb_sha256`` holds the sha256 of the mask's content (the three
columns and the provenance JSON), checked on every read. A truncated file fails to parse, a
flipped byte either fails to parse or changes the content and so the checksum; either way
:func:`read_mask` refuses it with the file named. Files written before the checksum existed
are read unchecked; a file without the provenance key is refused. A mask written inside a store's ``results/<table>/`` is also recorded in
the store's catalog (:func:`neurondb.store.catalog.record_result`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neurondb.store.errors import StoreError
from neurondb.store.io import atomic_file, os_errors, read_parquet

MASK_SCHEMA = pa.schema([("stack", pa.string()), ("layer", pa.int32()), ("neuron", pa.int32())])
META_KEY = b"neurondb"
SHA_KEY = b"neurondb_sha256"


def mask_checksum(t: pa.Table, raw_meta: bytes) -> str:
    """Hex sha256 of a mask's content: each column's values (stack as UTF-8 with lengths,
    layer and neuron as a null mask and little-endian int32) and the provenance JSON bytes."""
    h = hashlib.sha256()
    stacks = [str(s) for s in t.column("stack").to_pylist()]
    h.update(len(stacks).to_bytes(8, "little"))
    for s in stacks:
        b = s.encode("utf-8")
        h.update(len(b).to_bytes(4, "little") + b)
    for c in ("layer", "neuron"):
        a = t.column(c).combine_chunks().cast(pa.int32())
        h.update(a.is_null().to_numpy(zero_copy_only=False).tobytes())  # [rows] bool
        h.update(a.fill_null(0).to_numpy(zero_copy_only=False).astype("<i4").tobytes())
    h.update(raw_meta)
    return h.hexdigest()


def write_mask(path: str | Path, stack, layer, neuron, meta: dict | None = None) -> Path:
    """Write a mask file. ``stack``/``layer``/``neuron`` are equal-length sequences.

    ``meta`` should include ``shape`` (``ModelShape.to_dict()``) so readers can check it.
    """
    path = Path(path)
    t = pa.table({"stack": pa.array(list(stack), pa.string()),
                  "layer": pa.array(np.asarray(layer), pa.int32()),
                  "neuron": pa.array(np.asarray(neuron), pa.int32())}, schema=MASK_SCHEMA)
    raw = json.dumps(meta or {}, default=str).encode()
    t = t.replace_schema_metadata({META_KEY: raw, SHA_KEY: mask_checksum(t, raw).encode()})
    with os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            pq.write_table(t, tmp)
    _record_if_in_store(path)
    return path


def _record_if_in_store(path: Path) -> None:
    """Record ``STORE/results/<table>/<name>.parquet`` in its store's catalog."""
    from neurondb.store.layout import MANIFEST, RESULTS_DIR

    p = path.absolute()
    if len(p.parents) >= 3 and p.parents[1].name == RESULTS_DIR and \
            (p.parents[2] / MANIFEST).exists():
        from neurondb.store.catalog import record_result

        record_result(p.parents[2], p.parent.name, p.stem, p)


def read_mask(path: str | Path) -> tuple[pa.Table, dict]:
    """``(table (stack, layer, neuron), provenance dict)``; a clear error for a bad file."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"mask file {path} does not exist; make one with `neurondb mask`")
    try:
        t, meta = _read_checked(path)
    except StoreError:
        raise
    except Exception as e:  # any parse failure of a damaged file (ArrowInvalid, OSError,
        # UnicodeDecodeError of a damaged string, ...)
        raise StoreError(f"{path} is not a readable Parquet mask file ({type(e).__name__}: "
                         f"{_short(e)}); it is damaged or not a mask: make it again with "
                         "`neurondb mask ... --out`") from e
    return t, meta


def _read_checked(path: Path) -> tuple[pa.Table, dict]:
    again = "make the mask again with `neurondb mask ... --out`"
    t = read_parquet(path)
    missing = [c for c in MASK_SCHEMA.names if c not in t.column_names]
    if missing:
        raise StoreError(f"{path} lacks mask column(s) {', '.join(missing)}; a mask file has "
                         "columns (stack, layer, neuron)")
    md = t.schema.metadata or {}
    if META_KEY not in md:
        # write_mask always stores provenance; without it the footer was damaged (pyarrow
        # drops or garbles key-value metadata it cannot parse) or this is not a neurondb mask
        raise StoreError(f"{path} has no neurondb provenance metadata (a damaged footer, or "
                         f"not a mask written by neurondb); {again}")
    raw = md[META_KEY]
    t = t.select(MASK_SCHEMA.names)
    try:
        t = t.cast(MASK_SCHEMA)
    except Exception as e:
        raise StoreError(f"{path} has mask columns of the wrong types ({_short(e)}); a mask "
                         "file has columns stack (string), layer and neuron (int32)") from e
    if SHA_KEY in md and md[SHA_KEY].decode("ascii", "replace") != mask_checksum(t, raw):
        raise StoreError(f"{path} does not match its checksum (changed or corrupted); {again}")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise StoreError(f"{path} has damaged provenance metadata ({_short(e)}); {again}") from e
    if not isinstance(meta, dict):
        raise StoreError(f"{path} has damaged provenance metadata (not a JSON object); {again}")
    return t, meta


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:200]
