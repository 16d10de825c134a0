"""Runs and shards: how one run (a dataset split under one template/prompt) is written.

A run's examples are processed in a fixed order and cut into chunks; each chunk becomes a
**shard** ``runs/<run>/shards/c<chunk>/`` holding that chunk's tables and tensors and a
``shard.json`` with its row counts and the sha256 of every file. A shard is written under
``shards/.partial-*`` and renamed into place when complete, so a reader never sees a partial
chunk, an interrupted extraction resumes from the shards that exist, and several processes
(ranks) write disjoint shards of one run. ``run.json`` says ``running`` until every shard is
in, then ``complete``.

Writers: one process writes a run at a time (``run_lock``, taken by the extraction); the
store-level steps (creating the run directory, completing it and recording it in the catalog)
run under the store lock. Leftovers (``.partial-*-PID`` shards, ``.NAME.tmp-PID`` files) are
removed only when their writer process is dead, never a live writer's.
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

from neurondb.profile.state import PROFILE_FILE, ProfileState
from neurondb.store import catalog, failpoints
from neurondb.store.errors import StoreError
from neurondb.store.io import atomic_file, read_json, remove_dead_leftovers
from neurondb.store.io import sha256_file as sha256_file  # imported from here by others
from neurondb.store.layout import (
    ACTIVATIONS,
    EXAMPLES,
    GRADIENTS,
    PARTIAL_PREFIX,
    ROWS,
    RUN_JSON,
    RUN_TABLE,
    RUNS_DIR,
    SHARD_JSON,
    SHARDS_DIR,
    STATS,
    TOKENS,
    atomic_write_json,
    check_run_name,
    shard_name,
)
from neurondb.store.locks import store_lock
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
    """Metadata of one run; ``mode`` is ``tokens`` (per-token tensors), ``stats`` (running
    statistics) or ``profile`` (a neuron profile reduced while extracting: ``profile.npz``)."""

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
    status: str = "complete"
    config_hash: str = ""
    config: dict = field(default_factory=dict)
    chunk_examples: int = 0
    n_chunks: int = 1
    world_size: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def stored_dtype(self) -> str | None:
        """The storage dtype of the run's tensors; None for a run that stores none (a profile
        or statistics run: ``dtype`` then only records the command's default)."""
        return self.dtype if self.mode == "tokens" else None

    @classmethod
    def from_dict(cls, d: dict) -> RunInfo:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def table(self) -> pa.Table:
        d = self.to_dict()
        d.pop("config", None)
        row = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in d.items()}
        row["n_labels"] = len(self.labels)
        return pa.Table.from_pylist([row])


@dataclass
class ShardInfo:
    """What ``shard.json`` records: the chunk, its counts and the sha256 of each file."""

    chunk: int
    n_examples: int
    n_rows: dict[str, int]
    n_correct: int = 0
    n_scored: int = 0
    n_tokens: int = 0
    rank: int = 0
    files: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def read(cls, shard_dir: Path) -> ShardInfo:
        d = read_json(Path(shard_dir) / SHARD_JSON)
        try:
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except TypeError as e:
            raise StoreError(f"{Path(shard_dir) / SHARD_JSON} is damaged (fields missing); run "
                             "`neurondb verify` and re-extract the run") from e


def run_dir(root: Path, run: str) -> Path:
    return Path(root) / RUNS_DIR / run


def begin_run(root: Path, info: RunInfo) -> Path:
    """Create the run directory with ``run.json`` saying ``running`` (idempotent), under the
    store lock. The caller holds the run's writer lock."""
    check_run_name(info.run)
    d = run_dir(root, info.run)
    with store_lock(root):
        (d / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        failpoints.hit("run.begin", run=info.run)
        info.status = "running"
        atomic_write_json(d / RUN_JSON, info.to_dict())
    return d


def completed_chunks(root: Path, run: str) -> set[int]:
    """Chunks whose shard is complete (renamed into place)."""
    sd = run_dir(root, run) / SHARDS_DIR
    if not sd.is_dir():
        return set()
    return {int(p.name[1:]) for p in sd.iterdir()
            if p.name.startswith("c") and (p / SHARD_JSON).exists()}


def shard_dirs(run_path: Path) -> list[Path]:
    """Complete shard directories of a run, in chunk order."""
    sd = Path(run_path) / SHARDS_DIR
    if not sd.is_dir():
        return []
    return sorted(p for p in sd.iterdir() if p.name.startswith("c") and (p / SHARD_JSON).exists())


def remove_partials(run_path: Path) -> list[Path]:
    """Drop what dead processes left half written in a run: ``shards/.partial-*-PID`` shards
    and ``.run.json.tmp-PID`` files. A live process's partial shard (another rank, another
    writer) is never touched. Returns what was removed."""
    run_path = Path(run_path)
    removed = remove_dead_leftovers(run_path / SHARDS_DIR)
    removed += remove_dead_leftovers(run_path)
    return removed


def finalize_run(root: Path, info: RunInfo) -> RunInfo:
    """Totals from the shards, ``run.parquet`` (a profile run: ``profile.npz``, its shards'
    states merged), and ``run.json`` saying ``complete``."""
    failpoints.hit("run.finalize.before", run=info.run)
    d = run_dir(root, info.run)
    shards = [ShardInfo.read(p) for p in shard_dirs(d)]
    if info.n_chunks and len(shards) != info.n_chunks:
        raise StoreError(f"run {info.run!r} has {len(shards)} of {info.n_chunks} shards; "
                         "re-run the same command to resume")
    info.n_examples = sum(s.n_examples for s in shards) or info.n_examples
    rows: dict[str, int] = {}
    for s in shards:
        for k, v in s.n_rows.items():
            rows[k] = rows.get(k, 0) + v
    if sum(rows.values()):
        info.n_rows = rows
    info.n_tokens = sum(s.n_tokens for s in shards) or info.n_tokens
    scored = sum(s.n_scored for s in shards)
    if scored:
        info.accuracy = sum(s.n_correct for s in shards) / scored
    info.status = "complete"
    own = {RUN_TABLE: d / RUN_TABLE}
    if info.mode == "profile":  # the shards' profiles merged once: readers read one file
        parts = [p / PROFILE_FILE for p in shard_dirs(d)]
        with atomic_file(d / PROFILE_FILE) as tmp:
            if not (len(parts) == 1 and _linked(parts[0], tmp)):
                ProfileState.merged(parts).save(tmp)
        own[PROFILE_FILE] = d / PROFILE_FILE
    with store_lock(root):
        with atomic_file(d / RUN_TABLE) as tmp:
            pq.write_table(info.table(), tmp)
        # the catalog entry is written from run.json's final bytes before they are renamed
        # into place, so no reader ever sees a complete run that the catalog does not record
        with atomic_file(d / RUN_JSON) as tmp:
            tmp.write_text(json.dumps(info.to_dict(), indent=2, default=str) + "\n")
            catalog.record_run(root, info.run, {RUN_JSON: tmp, **own}, len(shards))
    return info


def _linked(src: Path, dst: Path) -> bool:
    """Make ``dst`` a hard link to ``src`` (a one-shard profile run's state is its shard's,
    byte for byte: linking skips reading and re-writing 25 MB); False where the file system
    cannot link, and the caller writes the file instead."""
    try:
        os.link(src, dst)
    except OSError:
        return False
    return True


class ShardWriter:
    """Writes one chunk's tables and tensors; ``commit`` checksums them and renames the shard
    into place. ``stats`` is a :class:`RunningStats` for runs in ``stats`` mode; ``profile``
    the :class:`~neurondb.profile.state.ProfileState` of a ``profile`` run, set before commit."""

    def __init__(self, run_path: Path, chunk: int, info: RunInfo,
                 widths: dict[str, tuple[int, ...]], expected_rows: dict[str, int] | None = None,
                 rank: int = 0, n_examples: int | None = None):
        self.run_path = Path(run_path)
        self.expected_examples = n_examples  # the chunk's examples: a shorter shard never commits
        self.chunk = chunk
        self.info = info
        self.rank = rank
        self.final = self.run_path / SHARDS_DIR / shard_name(chunk)
        self.tmp = self.run_path / SHARDS_DIR / f"{PARTIAL_PREFIX}{shard_name(chunk)}-{os.getpid()}"
        if self.tmp.exists():  # our own (this pid's) earlier attempt at this chunk
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self._writers: dict[str, pq.ParquetWriter] = {}
        self.tensors: dict[str, TensorWriter] = {}
        self.stats: RunningStats | None = None
        self.profile: ProfileState | None = None
        self.counts = {"n_examples": 0, "n_correct": 0, "n_scored": 0, "n_tokens": 0}
        self.committed = False
        self.n_rows: dict[str, int] = dict.fromkeys(widths, 0)
        if info.mode == "tokens":
            self.tensors["activations"] = TensorWriter(self.tmp / ACTIVATIONS, widths, info.dtype,
                                                       expected_rows)
            if info.grad:
                self.tensors["gradients"] = TensorWriter(self.tmp / GRADIENTS, widths, info.dtype,
                                                         expected_rows)
        elif info.mode == "stats":
            self.stats = RunningStats(widths, max(1, len(info.labels)))
        elif info.mode != "profile":
            raise ValueError(f"unknown run mode {info.mode!r}")

    def _write(self, name: str, schema: pa.Schema, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        w = self._writers.get(name)
        if w is None:
            w = pq.ParquetWriter(self.tmp / name, schema, compression="zstd")
            self._writers[name] = w
        failpoints.hit("parquet.write", table=name)
        w.write_table(table.select(schema.names).cast(schema))

    def write_examples(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        self._write(EXAMPLES, EXAMPLES_SCHEMA, table)
        self.counts["n_examples"] += table.num_rows
        if "correct" in table.column_names:
            c = table.column("correct")
            self.counts["n_scored"] += table.num_rows - c.null_count
            self.counts["n_correct"] += int(pc.sum(c.cast(pa.int64())).as_py() or 0)
        if "n_tokens" in table.column_names:
            self.counts["n_tokens"] += int(pc.sum(table.column("n_tokens")).as_py() or 0)

    def write_tokens(self, table: pa.Table) -> None:
        self._write(TOKENS, TOKENS_SCHEMA, table)

    def write_rows(self, table: pa.Table) -> None:
        """Row index entries; ``row`` is the row within this shard (0-based)."""
        self._write(ROWS, ROWS_SCHEMA, table)
        if table.num_rows:
            for d in table.group_by("stack").aggregate([("row", "count")]).to_pylist():
                self.n_rows[d["stack"]] = self.n_rows.get(d["stack"], 0) + d["row_count"]

    def count_rows(self, stack: str, n: int) -> None:
        """Rows of a stats-mode shard (no row table)."""
        self.n_rows[stack] = self.n_rows.get(stack, 0) + n

    def append(self, kind: str, stack: str, layer: int, rows) -> None:
        """Append stored-dtype rows ``[n, d_ff]`` to ``activations`` or ``gradients``."""
        self.tensors[kind].append(stack, layer, rows)
        failpoints.hit("shard.append.after", kind=kind, stack=stack, layer=layer)

    def commit(self) -> ShardInfo:
        failpoints.hit("shard.commit.before", chunk=self.chunk)
        want, got = self.expected_examples, self.counts["n_examples"]
        if want is not None and got != want:  # writes of this shard were lost: never commit it
            raise StoreError(f"shard {self.final.name} of run {self.info.run!r} holds {got} of "
                             f"its {want} examples and is not committed; re-run the same "
                             "command to resume")
        for name, schema in ((EXAMPLES, EXAMPLES_SCHEMA), (TOKENS, TOKENS_SCHEMA),
                             (ROWS, ROWS_SCHEMA)):
            if name in self._writers:
                self._writers.pop(name).close()
            elif self.info.mode == "tokens" or name == EXAMPLES or (
                    name == TOKENS and self.info.mode == "profile"):
                pq.write_table(schema.empty_table(), self.tmp / name)
        records = {}  # the tensor files' block checksums, computed while they were written
        for t in self.tensors.values():
            records[t.path.name] = t.close()
        if self.stats is not None:
            self.stats.save(self.tmp / STATS)
        if self.info.mode == "profile":
            if self.profile is None:
                raise StoreError(f"shard {self.final.name} of profile run {self.info.run!r} "
                                 "has no profile state to commit")
            self.profile.save(self.tmp / PROFILE_FILE)
        files = {}
        for f in sorted(self.tmp.iterdir()):
            files[f.name] = records.get(f.name) or {"bytes": f.stat().st_size,
                                                     "sha256": sha256_file(f)}
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        info = ShardInfo(chunk=self.chunk, n_rows=self.n_rows, rank=self.rank, files=files,
                         **self.counts)
        atomic_write_json(self.tmp / SHARD_JSON, asdict(info))
        if self.final.exists():
            shutil.rmtree(self.final)
        failpoints.hit("shard.rename", src=self.tmp, dst=self.final)
        os.replace(self.tmp, self.final)
        self.committed = True
        failpoints.hit("shard.commit.after", chunk=self.chunk)
        return info

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:
                pass
        for t in self.tensors.values():
            t.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)


class RunWriter(ShardWriter):
    """A whole run in one shard (what tests and synthetic stores use): ``commit`` writes the
    shard and completes the run. An existing run of the same name is replaced."""

    def __init__(self, root: Path, info: RunInfo, widths: dict[str, tuple[int, ...]],
                 expected_rows: dict[str, int] | None = None):
        self.root = Path(root)
        d = run_dir(root, check_run_name(info.run))
        if d.exists():
            with store_lock(root):
                catalog.forget_run(root, info.run)
                shutil.rmtree(d)
        info.n_chunks = 1
        begin_run(self.root, info)
        super().__init__(d, 0, info, widths, expected_rows)

    def commit(self) -> Path:  # type: ignore[override]
        super().commit()
        finalize_run(self.root, self.info)
        return self.run_path

    def abort(self) -> None:
        super().abort()
        shutil.rmtree(self.run_path, ignore_errors=True)
