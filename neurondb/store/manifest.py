"""The store manifest: schema version, the model's identity and shape, library versions.

A manifest cannot hold the sha256 of its own file, so it holds the sha256 of its own content:
``checksum`` is the hex sha256 of the canonical JSON (sorted keys, no whitespace) of every
other field, checked on every read. Whitespace changes are harmless; any change to a value,
key or the checksum itself is caught. ``catalog: 1`` says the store records every committed
run and result in ``catalog/`` (so a run or result without an entry is damage, not an older
store). Manifests written before these fields are accepted as they are.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from neurondb.arch.shape import ModelShape
from neurondb.store.errors import StoreError
from neurondb.store.io import read_json
from neurondb.store.layout import FORMAT, MANIFEST, SCHEMA_VERSION, atomic_write_json

CHECKSUM = "checksum"


def content_checksum(d: dict) -> str:
    """Hex sha256 of the canonical JSON of ``d`` without its ``checksum`` field."""
    body = {k: v for k, v in d.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


@dataclass
class ModelIdentity:
    """What a store was extracted from. ``fingerprint`` hashes config and weight samples."""

    name: str
    revision: str | None
    fingerprint: str
    shape: ModelShape
    model_class: str = ""
    dtype: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = self.shape.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelIdentity:
        d = dict(d)
        d["shape"] = ModelShape.from_dict(d["shape"])
        return cls(**d)


def model_fingerprint(model) -> str:
    """sha256 of the config (minus volatile keys) and the first values of every parameter.

    Cheap for any model size and different for different weights of the same shape.
    """
    import torch

    h = hashlib.sha256()
    cfg = model.config.to_dict()
    for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash",
              "architectures", "auto_map"):
        cfg.pop(k, None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            sample = p.detach().reshape(-1)[:64].to("cpu", torch.float32).numpy().tobytes()
            h.update(sample)
    return h.hexdigest()[:32]


def library_versions() -> dict[str, str]:
    import duckdb
    import h5py
    import numpy
    import pyarrow
    import torch
    import transformers

    import neurondb

    return {
        "neurondb": neurondb.__version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__, "h5py": h5py.__version__, "duckdb": duckdb.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Manifest:
    model: ModelIdentity
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    libraries: dict[str, str] = field(default_factory=dict)
    #: 1 when the store records its runs and results in ``catalog/`` (0: an older store).
    catalog: int = 1

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "schema_version": self.schema_version, "created": self.created,
             "model": self.model.to_dict(), "libraries": self.libraries}
        if self.catalog:
            d["catalog"] = self.catalog
        return d

    def write(self, root: Path) -> None:
        d = self.to_dict()
        d[CHECKSUM] = content_checksum(d)
        atomic_write_json(Path(root) / MANIFEST, d)

    @classmethod
    def read(cls, root: Path) -> Manifest:
        """Read and check ``ROOT/manifest.json``; any damage is a one-line StoreError naming
        the file and the fix."""
        path = Path(root) / MANIFEST
        if not path.exists():
            raise StoreError(f"{root} is not a neurondb store (no {MANIFEST}); "
                             "create one with `neurondb extract ... --out DIR`")
        damaged = (f"the store's manifest is damaged: restore {MANIFEST} from a copy (or "
                   "re-extract the store); `neurondb verify` lists what else is damaged")
        d = read_json(path, fix=damaged)
        if d.get("format") != FORMAT:
            raise StoreError(f"{path} is not a neurondb manifest")
        if CHECKSUM in d and d[CHECKSUM] != content_checksum(d):
            raise StoreError(f"{path} does not match its checksum (changed or corrupted); "
                             f"{damaged}")
        try:
            version = int(d.get("schema_version", -1))
        except (TypeError, ValueError):
            version = -1
        if version > SCHEMA_VERSION:
            raise StoreError(f"{root} has schema version {d['schema_version']}, newer than this "
                             f"neurondb reads ({SCHEMA_VERSION}); upgrade neurondb")
        try:
            return cls(model=ModelIdentity.from_dict(d["model"]), schema_version=version,
                       created=d.get("created", ""), libraries=d.get("libraries", {}),
                       catalog=int(d.get("catalog", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{path} lacks a valid model entry ({type(e).__name__}: {e}); "
                             f"{damaged}") from e
