"""The store manifest: schema version, the model's identity and shape, library versions."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from neurondb.arch.adapter import ModelShape
from neurondb.store.errors import StoreError
from neurondb.store.layout import FORMAT, MANIFEST, SCHEMA_VERSION, atomic_write_json


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

    def to_dict(self) -> dict:
        return {"format": FORMAT, "schema_version": self.schema_version, "created": self.created,
                "model": self.model.to_dict(), "libraries": self.libraries}

    def write(self, root: Path) -> None:
        atomic_write_json(Path(root) / MANIFEST, self.to_dict())

    @classmethod
    def read(cls, root: Path) -> Manifest:
        path = Path(root) / MANIFEST
        if not path.exists():
            raise StoreError(f"{root} is not a neurondb store (no {MANIFEST}); "
                             "create one with `neurondb extract ... --out DIR`")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{path} is not valid JSON ({e.msg}); the store is damaged") from e
        if d.get("format") != FORMAT:
            raise StoreError(f"{path} is not a neurondb manifest")
        if int(d.get("schema_version", -1)) > SCHEMA_VERSION:
            raise StoreError(f"{root} has schema version {d['schema_version']}, newer than this "
                             f"neurondb reads ({SCHEMA_VERSION}); upgrade neurondb")
        return cls(model=ModelIdentity.from_dict(d["model"]),
                   schema_version=int(d["schema_version"]), created=d.get("created", ""),
                   libraries=d.get("libraries", {}))
