"""The portable mask file: Parquet with columns ``(stack, layer, neuron)`` listing the selected
neurons (the ones suppression replaces and pruning removes), with provenance in the Parquet
schema metadata under the key ``neurondb`` (JSON: ranking, store, method, fraction, shape, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neurondb.store.errors import StoreError

MASK_SCHEMA = pa.schema([("stack", pa.string()), ("layer", pa.int32()), ("neuron", pa.int32())])
META_KEY = b"neurondb"


def write_mask(path: str | Path, stack, layer, neuron, meta: dict | None = None) -> Path:
    """Write a mask file. ``stack``/``layer``/``neuron`` are equal-length sequences.

    ``meta`` should include ``shape`` (``ModelShape.to_dict()``) so readers can check it.
    """
    path = Path(path)
    t = pa.table({"stack": pa.array(list(stack), pa.string()),
                  "layer": pa.array(np.asarray(layer), pa.int32()),
                  "neuron": pa.array(np.asarray(neuron), pa.int32())}, schema=MASK_SCHEMA)
    t = t.replace_schema_metadata({META_KEY: json.dumps(meta or {}, default=str).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(t, tmp)
    tmp.replace(path)
    return path


def read_mask(path: str | Path) -> tuple[pa.Table, dict]:
    """``(table (stack, layer, neuron), provenance dict)``; a clear error for a bad file."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"mask file {path} does not exist; make one with `neurondb mask`")
    try:
        t = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"{path} is not a readable Parquet mask file ({e})") from e
    missing = [c for c in MASK_SCHEMA.names if c not in t.column_names]
    if missing:
        raise StoreError(f"{path} lacks mask column(s) {', '.join(missing)}; a mask file has "
                         "columns (stack, layer, neuron)")
    raw = (t.schema.metadata or {}).get(META_KEY, b"{}")
    return t.select(MASK_SCHEMA.names).cast(MASK_SCHEMA), json.loads(raw)
