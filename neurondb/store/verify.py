"""Integrity of a store: a quick check on open (files present with the sizes their shard
recorded, no failed verification on record) and a full ``verify`` (sha256 of every file,
HDF5 and Parquet row counts against ``shard.json``)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import pyarrow.parquet as pq

from neurondb.store.errors import StoreError
from neurondb.store.layout import (
    ACTIVATIONS,
    EXAMPLES,
    GRADIENTS,
    PARTIAL_PREFIX,
    ROWS,
    RUN_JSON,
    RUNS_DIR,
    SHARD_JSON,
    SHARDS_DIR,
    VERIFY_JSON,
    atomic_write_json,
    tensor_key,
)
from neurondb.store.manifest import Manifest
from neurondb.store.run import ShardInfo, sha256_file


@dataclass
class VerifyReport:
    store: str
    ok: bool = True
    checked_files: int = 0
    checked_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def problem(self, shard: Path | None, msg: str) -> None:
        self.ok = False
        self.problems.append(msg)
        if shard is not None and str(shard) not in self.damaged:
            self.damaged.append(str(shard))


def _check_shard(shard: Path, widths: dict, rep: VerifyReport, full: bool) -> None:
    try:
        info = ShardInfo.read(shard)
    except StoreError as e:
        rep.problem(shard, str(e))
        return
    for name, meta in info.files.items():
        f = shard / name
        if not f.exists():
            rep.problem(shard, f"{f} is missing")
            continue
        size = f.stat().st_size
        if size != meta["bytes"]:
            rep.problem(shard, f"{f} has {size} bytes, {meta['bytes']} recorded (truncated?)")
            continue
        if full:
            rep.checked_files += 1
            rep.checked_bytes += size
            if sha256_file(f) != meta["sha256"]:
                rep.problem(shard, f"{f} does not match its checksum (changed or corrupted)")
    if not full or str(shard) in rep.damaged:
        return
    for name in (ACTIVATIONS, GRADIENTS):
        f = shard / name
        if not f.exists():
            continue
        try:
            with h5py.File(f, "r") as h:
                for stack, ws in widths.items():
                    for layer in range(len(ws)):
                        n = h[tensor_key(stack, layer)].shape[0]
                        want = int(info.n_rows.get(stack, 0))
                        if n != want:
                            rep.problem(shard, f"{f}: {stack} layer {layer} has {n} rows, "
                                               f"{want} recorded")
        except (OSError, KeyError) as e:
            rep.problem(shard, f"{f} cannot be read as HDF5 ({e})")
    if (shard / ROWS).exists():
        n = pq.read_metadata(shard / ROWS).num_rows
        if n != sum(int(v) for v in info.n_rows.values()):
            rep.problem(shard, f"{shard / ROWS} has {n} rows, {sum(info.n_rows.values())} recorded")
    if (shard / EXAMPLES).exists():
        n = pq.read_metadata(shard / EXAMPLES).num_rows
        if n != info.n_examples:
            rep.problem(shard, f"{shard / EXAMPLES} has {n} examples, {info.n_examples} recorded")


def verify_store(root: str | Path, record: bool = True) -> VerifyReport:
    """Check every shard of every run; write ``verify.json`` with the result."""
    root = Path(root)
    rep = VerifyReport(store=str(root))
    try:
        widths = Manifest.read(root).model.shape.widths
    except StoreError as e:
        rep.problem(None, str(e))
        return rep
    rdir = root / RUNS_DIR
    for d in sorted(rdir.iterdir()) if rdir.is_dir() else []:
        if d.name.startswith(PARTIAL_PREFIX):
            continue
        try:
            run = json.loads((d / RUN_JSON).read_text())
        except (OSError, json.JSONDecodeError) as e:
            rep.problem(None, f"{d / RUN_JSON} is missing or damaged ({e})")
            continue
        shards = sorted(p for p in (d / SHARDS_DIR).iterdir()) if (d / SHARDS_DIR).is_dir() else []
        complete = [p for p in shards if not p.name.startswith(PARTIAL_PREFIX)]
        partial = [p for p in shards if p.name.startswith(PARTIAL_PREFIX)]
        if partial:
            rep.notes.append(f"run {d.name}: {len(partial)} unfinished shard(s) of an interrupted "
                             "extraction (removed when it resumes)")
        if run.get("status") != "complete":
            rep.notes.append(f"run {d.name} is still running or was interrupted: "
                             f"{len(complete)} of {run.get('n_chunks', '?')} shards; re-run the "
                             "same command to resume")
        elif run.get("n_chunks") and len(complete) != run["n_chunks"]:
            rep.problem(None, f"run {d.name} is marked complete but has {len(complete)} of "
                              f"{run['n_chunks']} shards")
        for shard in complete:
            if not (shard / SHARD_JSON).exists():
                rep.problem(shard, f"{shard} has no {SHARD_JSON}")
                continue
            _check_shard(shard, widths, rep, full=True)
    if record:
        atomic_write_json(root / VERIFY_JSON, asdict(rep))
    return rep


def check_store_quick(store) -> None:
    """On open: every listed shard's files exist with their recorded sizes, and the last
    ``verify`` (if any) found no damage. Raises a one-line StoreError otherwise."""
    for root in store.roots:
        vfile = root / VERIFY_JSON
        if vfile.exists():
            try:
                last = json.loads(vfile.read_text())
            except json.JSONDecodeError:
                last = {"ok": True}
            if not last.get("ok", True):
                raise StoreError(f"{root} failed verification on {last.get('time')}: "
                                 f"{(last.get('problems') or ['?'])[0]}; re-extract the damaged "
                                 "run, then `neurondb verify`, or open with --no-verify to read "
                                 "what is intact")
    for info in store.runs():
        rep = VerifyReport(store=str(store.root_of(info.run)))
        for shard, _ in store.shards(info.run):
            _check_shard(shard, {}, rep, full=False)
        if not rep.ok:
            raise StoreError(f"{rep.problems[0]}; run `neurondb verify {rep.store}`, or open with "
                             "--no-verify to read what is intact")


def damaged_shards(root: Path, dirs: list[Path]) -> set[str]:
    """Shards recorded as damaged by the last ``verify``, plus those failing the quick check:
    what ``--no-verify`` leaves out so that the intact rest can be read."""
    bad: set[str] = set()
    vfile = Path(root) / VERIFY_JSON
    if vfile.exists():
        try:
            bad.update(json.loads(vfile.read_text()).get("damaged", []))
        except json.JSONDecodeError:
            pass
    for d in dirs:
        rep = VerifyReport(store=str(root))
        _check_shard(d, {}, rep, full=False)
        if not rep.ok:
            bad.add(str(d))
    return bad
