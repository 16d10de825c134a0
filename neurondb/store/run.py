"""One run (a dataset split under one template/prompt): its metadata and its writer.

A run is written into ``runs/.partial-<run>-<pid>/`` and renamed to ``runs/<run>/`` by
:meth:`RunWriter.commit`; until then no reader lists it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from neurondb.store.layout import (
    ACTIVATIONS,
    EXAMPLES,
    GRADIENTS,
    PARTIAL_PREFIX,
    ROWS,
    RUN_JSON,
    RUN_TABLE,
    RUNS_DIR,
    STATS,
    TOKENS,
    atomic_write_json,
    check_run_name,
)
from neurondb.store.stats import RunningStats
from neurondb.store.tensors import TensorWriter

EXAMPLES_SCHEMA = pa.schema([
    ("run", pa.string()), ("split", pa.string()), ("example_id", pa.int64()),
    ("idx", pa.int64()), ("text", pa.string()), ("label", pa.int64()), ("pred", pa.int64()),
    ("correct", pa.bool_()), ("n_tokens", pa.int32()), ("label_logits", pa.list_(pa.float32())),
])
TOKENS_SCHEMA = pa.schema([
    ("run", pa.string()), ("example_id", pa.int64()), ("stack", pa.string()),
    ("position", pa.int32()), ("token_id", pa.int32()), ("token", pa.string()),
    ("kind", pa.string()),
])
ROWS_SCHEMA = pa.schema([
    ("run", pa.string()), ("stack", pa.string()), ("row", pa.int64()),
    ("example_id", pa.int64()), ("position", pa.int32()), ("slot", pa.string()),
])


@dataclass
class RunInfo:
    """Metadata of one run; ``mode`` is ``tokens`` (per-token tensors) or ``stats``."""

    run: str
    split: str
    mode: str
    dataset: str
    dataset_config: str | None = None
    dataset_fingerprint: str = ""
    text_fields: list[str] = field(default_factory=list)
    label_field: str | None = None
    labels: list[str] = field(default_factory=list)
    template: str = ""
    readout: str = "none"
    verbalizer: list[str] = field(default_factory=list)
    prompt: str | None = None
    prompt_hash: str | None = None
    n_prompt: int = 0
    positions: list[str] = field(default_factory=list)
    grad: bool = False
    grad_target: str | None = None
    dtype: str = "float16"
    max_length: int = 0
    n_examples: int = 0
    n_tokens: int = 0
    n_rows: dict[str, int] = field(default_factory=dict)
    accuracy: float | None = None
    seconds: float = 0.0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    store: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunInfo:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def table(self) -> pa.Table:
        d = self.to_dict()
        row = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in d.items()}
        row["n_labels"] = len(self.labels)
        return pa.Table.from_pylist([row])


class RunWriter:
    """Writes one run's files into a partial directory; ``commit`` moves it into place."""

    def __init__(self, root: Path, info: RunInfo, widths: dict[str, tuple[int, ...]],
                 expected_rows: dict[str, int] | None = None):
        check_run_name(info.run)
        self.root = Path(root)
        self.info = info
        self.widths = widths
        self.final = self.root / RUNS_DIR / info.run
        self.tmp = self.root / RUNS_DIR / f"{PARTIAL_PREFIX}{info.run}-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self._writers: dict[str, pq.ParquetWriter] = {}
        self.tensors: dict[str, TensorWriter] = {}
        self.stats: RunningStats | None = None
        if info.mode == "tokens":
            self.tensors["activations"] = TensorWriter(self.tmp / ACTIVATIONS, widths, info.dtype,
                                                       expected_rows)
            if info.grad:
                self.tensors["gradients"] = TensorWriter(self.tmp / GRADIENTS, widths, info.dtype,
                                                         expected_rows)
        elif info.mode == "stats":
            self.stats = RunningStats(widths, max(1, len(info.labels)))
        else:
            raise ValueError(f"unknown run mode {info.mode!r}")

    def _write(self, name: str, schema: pa.Schema, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        w = self._writers.get(name)
        if w is None:
            w = pq.ParquetWriter(self.tmp / name, schema, compression="zstd")
            self._writers[name] = w
        w.write_table(table.select(schema.names).cast(schema))

    def write_examples(self, table: pa.Table) -> None:
        self._write(EXAMPLES, EXAMPLES_SCHEMA, table)

    def write_tokens(self, table: pa.Table) -> None:
        self._write(TOKENS, TOKENS_SCHEMA, table)

    def write_rows(self, table: pa.Table) -> None:
        self._write(ROWS, ROWS_SCHEMA, table)

    def append(self, kind: str, stack: str, layer: int, rows) -> None:
        """Append stored-dtype rows ``[n, d_ff]`` to ``activations`` or ``gradients``."""
        self.tensors[kind].append(stack, layer, rows)

    def commit(self) -> Path:
        for name, schema in ((EXAMPLES, EXAMPLES_SCHEMA), (TOKENS, TOKENS_SCHEMA),
                             (ROWS, ROWS_SCHEMA)):
            if name in self._writers:
                self._writers.pop(name).close()
            elif self.info.mode == "tokens" or name == EXAMPLES:
                pq.write_table(schema.empty_table(), self.tmp / name)
        for t in self.tensors.values():
            t.close()
        if self.stats is not None:
            self.stats.save(self.tmp / STATS)
        atomic_write_json(self.tmp / RUN_JSON, self.info.to_dict())
        pq.write_table(self.info.table(), self.tmp / RUN_TABLE)
        if self.final.exists():
            old = self.final.with_name(f"{PARTIAL_PREFIX}old-{self.info.run}-{os.getpid()}")
            os.replace(self.final, old)
            os.replace(self.tmp, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:
                pass
        for t in self.tensors.values():
            t.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)
