"""Integrity of a store: a quick check on every open and a full ``verify``.

What is recorded at commit (see :mod:`neurondb.store.catalog`): every shard's files with size
and sha256 in its ``shard.json``; every completed run's ``run.json`` and ``run.parquet`` with
size and sha256, and its shard count, in ``catalog/runs/<run>.json``; every result file in
``catalog/results/<table>/<name>.json``; the manifest carries the sha256 of its own content.

**On open** (:func:`check_store_quick`, a few ms for a 100-shard store): the manifest and the
last verification are sound; every run the catalog lists is present; every complete run is in
the catalog, has all its shards (``n_chunks`` shard directories, each with its
``shard.json``), and its files have their recorded sizes; the small files (``run.json``,
``run.parquet``, the JSON files) are checked against their sha256 too. Large files are not
read on open: a flipped byte in an HDF5 or shard Parquet file is found by ``verify``, and a
store whose last ``verify`` failed is refused on open (``verify.json``).

**verify** (:func:`verify_store`) reads everything: sha256 of every recorded file, HDF5 and
Parquet row counts against ``shard.json``, runs the catalog lists but the disk lacks, runs and
results the disk has but the catalog lacks. Every problem is a finding naming the file and the
fix; damage never raises.

A damaged **result** file concerns that result alone: opening the store still works, and
reading that result refuses (:func:`result_problem`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from neurondb.errors import switch, switch_off
from neurondb.store import catalog
from neurondb.store.blockhash import BLOCK_KINDS, block_checksum_file
from neurondb.store.errors import StoreError
from neurondb.store.io import read_json, sha256_file
from neurondb.store.layout import (
    ACTIVATIONS,
    EXAMPLES,
    GRADIENTS,
    MANIFEST,
    PARTIAL_PREFIX,
    RESULTS_DIR,
    ROWS,
    RUN_JSON,
    RUNS_DIR,
    SHARD_JSON,
    SHARDS_DIR,
    VERIFY_JSON,
    atomic_write_json,
    shard_name,
    tensor_key,
)
from neurondb.store.manifest import Manifest
from neurondb.store.run import RunInfo, ShardInfo

#: The largest ``block_bytes`` a tensor file's checksum record may give (a record is read, not
#: trusted: the blocks are read into memory one at a time).
MAX_BLOCK = 1 << 30
#: Files up to this size (bytes) are hashed on open as well as sized: JSON, ``run.parquet``.
SMALL_FILE = 1 << 20

FIX_RUN = "re-extract the run (`neurondb extract ... --overwrite`) or restore it from a copy"


@dataclass
class VerifyReport:
    """The findings of a verification (also what ``verify.json`` records).

    ``damaged``: shard directories with a problem; ``damaged_runs``: runs whose own files
    (``run.json``, ``run.parquet``, catalog entry) are damaged or gone; ``damaged_results``:
    ``table/name`` of damaged result files; ``store_ok``: no problem outside result files
    (a store with only damaged results still opens; those results refuse to be read).
    """

    store: str
    ok: bool = True
    store_ok: bool = True
    checked_files: int = 0
    checked_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    damaged_runs: list[str] = field(default_factory=list)
    damaged_results: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def problem(self, shard: Path | None, msg: str, *, run: str | None = None,
                result: str | None = None) -> None:
        """Record one finding; ``shard``/``run``/``result`` say what it damages."""
        self.ok = False
        self.problems.append(msg)
        if result is None:
            self.store_ok = False
        else:
            _add(self.damaged_results, result)
        if shard is not None:
            _add(self.damaged, str(shard))
        if run is not None:
            _add(self.damaged_runs, run)


def _add(lst: list[str], item: str) -> None:
    if item not in lst:
        lst.append(item)


def _rel(root: Path, p: Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return str(p)


# -- pieces shared by open and verify -------------------------------------------------------
def read_shard_info(shard: Path) -> ShardInfo:
    """``shard.json`` of a shard; damage is a one-line StoreError naming the file."""
    f = Path(shard) / SHARD_JSON
    d = read_json(f)
    try:
        info = ShardInfo(**{k: v for k, v in d.items() if k in ShardInfo.__dataclass_fields__})
        bad = _bad_fields(info.files, info.n_rows, info.n_examples)
    except TypeError as e:
        bad = str(e)
    if bad:
        raise StoreError(f"{f} is damaged ({bad}); run `neurondb verify` and re-extract the "
                         "run")
    return info


def _bad_fields(files, n_rows=None, n_examples=0) -> str | None:
    """What is malformed in a recorded ``files`` map (``{name: {"bytes", "sha256"}}``) and
    counts, or None."""
    if not isinstance(files, dict) or not all(
            isinstance(r, dict) and isinstance(r.get("bytes"), int) for r in files.values()):
        return "its file list is malformed"
    if n_rows is not None and (not isinstance(n_rows, dict) or not all(
            isinstance(x, int) for x in n_rows.values())):
        return "its row counts are malformed"
    if not isinstance(n_examples, int):
        return "its example count is malformed"
    return None


def read_run_info(run_path: Path) -> RunInfo:
    """``run.json`` of a run; damage is a one-line StoreError naming the file."""
    d = read_json(Path(run_path) / RUN_JSON)
    try:
        return RunInfo.from_dict(d)
    except TypeError as e:
        raise StoreError(f"{Path(run_path) / RUN_JSON} is damaged (fields: {e}); run `neurondb "
                         "verify`") from e


def shard_listing(run_path: Path) -> tuple[list[Path], list[Path]]:
    """``(shards with shard.json, shard directories without one)`` of a run, in chunk order
    (unfinished ``.partial-*`` shards are neither). Uses ``os.scandir``: this runs on every
    open, for every shard."""
    sd = os.path.join(run_path, SHARDS_DIR)
    try:
        names = sorted(e.name for e in os.scandir(sd) if e.name.startswith("c") and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    good: list[Path] = []
    bad: list[Path] = []
    base = Path(sd)
    for n in names:
        (good if os.path.isfile(os.path.join(sd, n, SHARD_JSON)) else bad).append(base / n)
    return good, bad


def _file_problem(f: Path, rec: dict, full: bool | None) -> str | None:
    """Compare one file against its ``{"bytes", "sha256"}`` record (a tensor file's:
    ``{"bytes", "xxh3_128_blocks", "block_bytes"}``, or ``"sha256_blocks"`` in older stores;
    :mod:`neurondb.store.blockhash`). ``full``: True always hashes, None hashes files up to
    :data:`SMALL_FILE` bytes, False only compares sizes."""
    try:
        size = f.stat().st_size
    except FileNotFoundError:
        return f"{f} is missing"
    except OSError as e:
        return f"{f} cannot be read ({e.strerror or e})"
    want = rec.get("bytes")
    if want is not None and size != want:
        return f"{f} has {size} bytes, {want} recorded (truncated or changed)"
    kind = next((k for k in BLOCK_KINDS if rec.get(k)), None)
    if not (full or (full is None and size <= SMALL_FILE)):
        return None
    if not (kind or rec.get("sha256")):
        return (f"{f} has no checksum this neurondb knows in its record (keys "
                f"{', '.join(sorted(map(str, rec)))}); upgrade neurondb if a newer one wrote it, "
                "else re-extract the run (`neurondb extract ... --overwrite`)")
    block = rec.get("block_bytes")
    if kind and not (type(block) is int and 0 < block <= MAX_BLOCK):
        return (f"{f} has a malformed checksum record (block_bytes {block!r}); re-extract "
                "the run (`neurondb extract ... --overwrite`) or restore it from a copy")
    try:
        got = block_checksum_file(f, block, kind) if kind else sha256_file(f)
        if got != rec[kind or "sha256"]:
            return f"{f} does not match its checksum (changed or corrupted)"
    except OSError as e:
        return f"{f} cannot be read ({e.strerror or e})"
    return None


def shard_problems(shard: Path, info: ShardInfo | None, full: bool,
                   infos: dict[Path, ShardInfo] | None = None) -> list[str]:
    """Problems of one shard's files against its ``shard.json`` (sizes; sha256 if ``full``).
    ``infos``: where to put the ``ShardInfo`` read (so a reader need not read it again)."""
    if info is None:
        try:
            info = read_shard_info(shard)
        except StoreError as e:
            return [str(e)]
    if infos is not None:
        infos[shard] = info
    out = []
    if full:
        for name, meta in (info.files or {}).items():
            msg = _file_problem(Path(shard) / name, meta if isinstance(meta, dict) else {}, True)
            if msg:
                out.append(msg)
        return out
    sdir = str(shard)
    for name, meta in (info.files or {}).items():  # sizes only, with plain os calls
        f = os.path.join(sdir, name)
        want = meta.get("bytes") if isinstance(meta, dict) else None
        try:
            size = os.stat(f).st_size
        except FileNotFoundError:
            out.append(f"{f} is missing")
            continue
        except OSError as e:
            out.append(f"{f} cannot be read ({e.strerror or e})")
            continue
        if want is not None and size != want:
            out.append(f"{f} has {size} bytes, {want} recorded (truncated or changed)")
    return out


def run_problems(root: Path, run: str, info: RunInfo | None, manifest_catalog: bool,
                 full: bool, infos: dict[Path, ShardInfo] | None = None,
                 ) -> tuple[list[str], list[str], list[tuple[Path, str]]]:
    """Problems of one run directory: ``(problems of the run's own files, missing shards,
    [(shard, problem)])``.

    Checks the catalog entry (present in a catalog store; its files' sizes, and sha256 when
    ``full`` or small), the shard count against ``n_chunks`` and each shard's files (sizes;
    sha256 when ``full``). ``info``: the run's ``run.json`` already read (else read here);
    ``infos`` receives each shard's ``ShardInfo``.
    """
    root = Path(root)
    d = root / RUNS_DIR / run
    own: list[str] = []
    missing: list[str] = []
    shards: list[tuple[Path, str]] = []
    try:
        entry = catalog.run_entry(root, run)
    except StoreError as e:
        own.append(str(e))
        entry = None
    if entry is not None and _bad_fields(entry.get("files", {})):
        own.append(f"{catalog._run_entry(root, run)} is damaged ({_bad_fields(entry.get('files'))}"
                   f"); {FIX_RUN}")
        entry = {"n_chunks": entry.get("n_chunks")} if "n_chunks" in entry else {}
    if info is None:
        try:
            info = read_run_info(d)
        except StoreError as e:
            own.append(str(e))
    if entry is None and not own and manifest_catalog:
        own.append(f"run {run!r} is complete but not in the catalog "
                   f"({_rel(root, catalog._run_entry(root, run))} is missing: its commit was "
                   "interrupted or the entry was deleted); re-run the `neurondb extract` "
                   "command that made it (it completes the commit)")
    for name, rec in ((entry or {}).get("files") or {}).items():
        # the run's own files are small (metadata): hashed on open too
        msg = _file_problem(d / name, rec, full or None)
        if msg:
            own.append(f"{msg}; {FIX_RUN}")
    n_chunks = None
    try:
        if entry is not None and "n_chunks" in entry:
            n_chunks = int(entry["n_chunks"])
        elif info is not None and info.n_chunks:
            n_chunks = int(info.n_chunks)
    except (TypeError, ValueError):
        own.append(f"the shard count of run {run!r} is not a number in "
                   f"{catalog._run_entry(root, run)} or {d / RUN_JSON}; {FIX_RUN}")
    good, no_json = shard_listing(d)
    for p in no_json:
        shards.append((p, f"{p / SHARD_JSON} is missing; {FIX_RUN}"))
    if n_chunks is not None and len(good) + len(no_json) != n_chunks:
        have = {p.name for p in good + no_json}
        gone = [shard_name(i) for i in range(n_chunks) if shard_name(i) not in have]
        what = f" ({', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''} missing)" if gone else ""
        missing.append(f"run {run!r} has {len(good) + len(no_json)} of its {n_chunks} shards in "
                   f"{d / SHARDS_DIR}{what}; {FIX_RUN}")
    for p in good:
        for msg in shard_problems(p, None, full=False, infos=infos):
            shards.append((p, msg))
    return own, missing, shards


def missing_runs(root: Path) -> list[tuple[str, str]]:
    """``(run, problem)`` of every run the catalog lists whose directory or ``run.json`` is
    gone (a deleted run: an error, never a run that silently vanishes)."""
    out = []
    root = Path(root)
    for run in catalog.recorded_runs(root):
        d = root / RUNS_DIR / run
        if not (d / RUN_JSON).exists():
            gone = d if not d.exists() else d / RUN_JSON
            out.append((run, f"run {run!r} was committed "
                             f"({_rel(root, catalog._run_entry(root, run))}) but {gone} is "
                             f"missing; restore it from a copy, re-extract it (`neurondb "
                             f"extract ... --overwrite`), or delete that catalog entry to drop "
                             f"the run for good"))
    return out


def last_verification(root: Path) -> dict | None:
    """The last ``verify.json`` of a store (None if never verified); damage is a StoreError."""
    vfile = Path(root) / VERIFY_JSON
    if not vfile.exists():
        return None
    return read_json(vfile)


def _last_blocks(last: dict) -> bool:
    return not last.get("store_ok", last.get("ok", True))


def result_problem(root: str | Path, table: str, path: str | Path,
                   full: bool | None = True) -> str | None:
    """Why result file ``path`` (``results/<table>/<name>.parquet``) must not be read, or None.

    Checks its catalog entry (a store with a catalog records every result), its size and
    sha256 (``full``; ``None``: small files only; ``False``: sizes only, and then also the last
    verification's findings). Readers of a result call this and refuse with the message (a
    StoreError), so damage there concerns that result alone.
    """
    root, path = Path(root), Path(path)
    name = path.stem
    try:
        entry = catalog.result_entry(root, table, name)
    except StoreError as e:
        return str(e)
    entry_path = _rel(root, catalog._result_entry(root, table, name))
    fix = (f"write the result again (with {switch('overwrite')}), or delete {path.name} and "
           f"{entry_path} to drop it")
    if entry is None:
        try:
            cat = Manifest.read(root).catalog
        except StoreError as e:
            return str(e)
        if cat and path.exists():
            return (f"{path} is not in the catalog ({entry_path} is missing: written outside "
                    f"neurondb, or the entry was deleted); {fix}")
        if not path.exists():
            return f"{path} is missing"
        return None
    msg = _file_problem(path, entry, full)
    if msg:
        return f"{msg}; {fix}"
    if full:
        return None  # hashed just now: what the last verify found no longer matters
    try:
        last = last_verification(root)
    except StoreError as e:
        return str(e)
    if last and f"{table}/{name}" in (last.get("damaged_results") or []):
        return (f"{path} failed verification on {last.get('time')}; {fix}, then `neurondb "
                "verify`")
    return None


def check_result(root: str | Path, table: str, path: str | Path,
                 full: bool | None = True) -> None:
    """Raise a one-line StoreError if result file ``path`` must not be read."""
    msg = result_problem(root, table, path, full)
    if msg:
        raise StoreError(msg)


# -- full verification ---------------------------------------------------------------------
def _row_counts(shard: Path, info: ShardInfo, widths: dict, rep: VerifyReport) -> None:
    for name in (ACTIVATIONS, GRADIENTS):
        f = shard / name
        if not f.exists():
            continue
        try:
            import h5py  # only when a tensor file is checked (a light import)

            with h5py.File(f, "r") as h:
                for stack, ws in widths.items():
                    for layer in range(len(ws)):
                        n = h[tensor_key(stack, layer)].shape[0]
                        want = int(info.n_rows.get(stack, 0))
                        if n != want:
                            rep.problem(shard, f"{f}: {stack} layer {layer} has {n} rows, "
                                               f"{want} recorded; {FIX_RUN}")
        except Exception as e:  # a damaged file raises whatever its parser raises
            rep.problem(shard, f"{f} cannot be read as HDF5 ({type(e).__name__}: "
                               f"{_short(e)}); {FIX_RUN}")
    for name, want in ((ROWS, sum(int(v) for v in info.n_rows.values())),
                       (EXAMPLES, info.n_examples)):
        f = shard / name
        if not f.exists():
            continue
        try:
            n = pq.read_metadata(f).num_rows
        except Exception as e:
            rep.problem(shard, f"{f} cannot be read as Parquet ({type(e).__name__}: "
                               f"{_short(e)}); {FIX_RUN}")
            continue
        if n != want:
            rep.problem(shard, f"{f} has {n} rows, {want} recorded; {FIX_RUN}")


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def _verify_shard(shard: Path, widths: dict | None, rep: VerifyReport) -> None:
    try:
        info = read_shard_info(shard)
    except StoreError as e:
        rep.problem(shard, str(e))
        return
    before = len(rep.problems)
    for name, meta in (info.files or {}).items():
        f = shard / name
        msg = _file_problem(f, meta if isinstance(meta, dict) else {}, full=True)
        if msg:
            rep.problem(shard, f"{msg}; {FIX_RUN}")
        elif f.exists():
            rep.checked_files += 1
            rep.checked_bytes += f.stat().st_size
    if widths is not None and len(rep.problems) == before:
        _row_counts(shard, info, widths, rep)


def _verify_run(root: Path, d: Path, widths: dict | None, manifest_catalog: bool,
                rep: VerifyReport) -> None:
    run = d.name
    try:
        info = read_run_info(d)
    except StoreError as e:
        rep.problem(None, f"{e}; {FIX_RUN}", run=run)
        return
    good, _ = shard_listing(d)
    partial = [p for p in (d / SHARDS_DIR).iterdir() if p.name.startswith(PARTIAL_PREFIX)] \
        if (d / SHARDS_DIR).is_dir() else []
    if partial:
        rep.notes.append(f"run {run}: {len(partial)} unfinished shard(s) of an interrupted "
                         "extraction (removed when it resumes)")
    if info.status != "complete":
        rep.notes.append(f"run {run} is still running or was interrupted: {len(good)} of "
                         f"{info.n_chunks or '?'} shards; re-run the same command to resume")
        for shard in good:
            _verify_shard(shard, widths, rep)
        return
    own, missing, shard_msgs = run_problems(root, run, info, manifest_catalog, full=True)
    for msg in own:
        rep.problem(None, msg, run=run)
    for msg in missing:
        rep.problem(None, msg)
    for shard, msg in shard_msgs:
        if not (shard / SHARD_JSON).is_file():
            rep.problem(shard, msg)
    for name in ("run.json", "run.parquet"):
        f = d / name
        if f.exists() and not any(str(f) in m for m in own):
            rep.checked_files += 1
            rep.checked_bytes += f.stat().st_size
    for shard in good:
        _verify_shard(shard, widths, rep)


def _verify_results(root: Path, manifest_catalog: bool, rep: VerifyReport) -> None:
    rdir = root / RESULTS_DIR
    seen: set[tuple[str, str]] = set()
    for tdir in sorted(rdir.iterdir()) if rdir.is_dir() else []:
        if not tdir.is_dir() or tdir.name.startswith("."):
            continue
        for f in sorted(tdir.glob("*.parquet")):
            if f.name.startswith("."):
                continue
            seen.add((tdir.name, f.stem))
            msg = result_problem(root, tdir.name, f, full=True)
            if msg:
                rep.problem(None, msg, result=f"{tdir.name}/{f.stem}")
            else:
                try:
                    pq.read_metadata(f)
                except Exception as e:
                    rep.problem(None, f"{f} cannot be read as Parquet ({type(e).__name__}: "
                                      f"{_short(e)})", result=f"{tdir.name}/{f.stem}")
                    continue
                rep.checked_files += 1
                rep.checked_bytes += f.stat().st_size
    try:
        recorded = catalog.recorded_results(root)
    except OSError as e:
        rep.problem(None, f"{root / catalog.CATALOG_DIR} cannot be listed ({e})")
        return
    for table, name in recorded:
        if (table, name) in seen:
            continue
        path = rdir / table / f"{name}.parquet"
        try:
            entry = catalog.result_entry(root, table, name)
        except StoreError as e:
            rep.problem(None, str(e), result=f"{table}/{name}")
            continue
        if entry is not None:
            rep.problem(None, f"result {table}/{name} was committed "
                              f"({_rel(root, catalog._result_entry(root, table, name))}) but "
                              f"{path} is missing; write it again (with {switch('overwrite')}), "
                              "or delete "
                              "that catalog entry to drop it", result=f"{table}/{name}")


def verify_store(root: str | Path, record: bool = True) -> VerifyReport:
    """Check everything in the store and write ``verify.json`` with the findings.

    Damage never raises: each problem is a finding naming the file and the fix
    (``rep.problems``); ``rep.ok`` is False when there is any.
    """
    root = Path(root)
    rep = VerifyReport(store=str(root))
    widths: dict | None = None
    manifest_catalog = True
    if not (root / MANIFEST).exists():
        rep.problem(None, f"{root / MANIFEST} is missing; the store is damaged: restore it from "
                          "a copy or re-extract the store")
    else:
        try:
            m = Manifest.read(root)
            widths = dict(m.model.shape.widths)
            manifest_catalog = bool(m.catalog)
        except StoreError as e:
            rep.problem(None, str(e))
    for run, msg in missing_runs(root):
        rep.problem(None, msg, run=run)
    rdir = root / RUNS_DIR
    for d in sorted(rdir.iterdir()) if rdir.is_dir() else []:
        if d.name.startswith(PARTIAL_PREFIX) or not d.is_dir():
            continue
        if not (d / RUN_JSON).exists():
            if catalog.run_entry_exists(root, d.name):
                continue  # reported by missing_runs
            rep.notes.append(f"{d} has no {RUN_JSON} (an extraction that never started "
                             "writing); it is not listed")
            continue
        try:
            _verify_run(root, d, widths, manifest_catalog, rep)
        except OSError as e:  # an unreadable directory: a finding, not a crash
            rep.problem(None, f"{d} cannot be read ({e}); check the disk", run=d.name)
    try:
        _verify_results(root, manifest_catalog, rep)
    except OSError as e:
        rep.problem(None, f"{root / RESULTS_DIR} cannot be read ({e}); check the disk")
    if record:
        try:
            atomic_write_json(root / VERIFY_JSON, asdict(rep))
        except StoreError as e:
            rep.notes.append(f"the findings could not be recorded: {e}")
    return rep


# -- on open ---------------------------------------------------------------------------------
@dataclass
class QuickFinding:
    """One problem the open-time check found: what it concerns and the message."""

    root: Path
    msg: str
    run: str | None = None
    shard: Path | None = None
    #: the run's own files are damaged or gone: ``--no-verify`` leaves the whole run out
    whole_run: bool = False


def quick_findings(store) -> list[QuickFinding]:
    """Every problem the open-time check finds in ``store`` (nothing large is read).

    Stores: an unreadable or failed last verification. Runs: committed runs that are gone,
    complete runs missing from the catalog, missing shards (``n_chunks`` against the shard
    directories), ``run.json``/``run.parquet`` sizes and sha256 (small files), every shard's
    files' sizes against its ``shard.json``.
    """
    out: list[QuickFinding] = []
    for root in store.roots:
        try:
            last = last_verification(root)
        except StoreError as e:
            out.append(QuickFinding(root, f"{e} (it records the last `neurondb verify`)"))
            last = None
        if last is not None and _last_blocks(last):
            first = next((p for p in last.get("problems") or [] if p), "?")
            out.append(QuickFinding(root, f"{root} failed verification on {last.get('time')}: "
                                          f"{first}"))
        for run, msg in missing_runs(root):
            out.append(QuickFinding(root, msg, run=run, whole_run=True))
        m = store.manifests.get(root)
        cat = bool(m.catalog) if m is not None else False
        for info in store.runs():
            if store.root_of(info.run) != root or info.status != "complete":
                continue
            infos: dict[Path, ShardInfo] = {}
            own, missing, shards = run_problems(root, info.run, info, cat, full=False,
                                                infos=infos)
            out.extend(QuickFinding(root, msg, run=info.run, whole_run=True) for msg in own)
            out.extend(QuickFinding(root, msg, run=info.run) for msg in missing)
            if not (own or missing or shards or store.skip_damaged):
                # what Store.shards() would read again: keep it (same order, chunk order)
                store._shards[info.run] = sorted(infos.items(), key=lambda kv: kv[0].name)
            out.extend(QuickFinding(root, msg, run=info.run, shard=p) for p, msg in shards)
    return out


def check_store_quick(store) -> None:
    """On open: raise a one-line StoreError naming the first problem found by
    :func:`quick_findings` (the run, the file and the fix)."""
    found = quick_findings(store)
    if found:
        f = found[0]
        more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
        raise StoreError(f"{f.msg}{more}; run `neurondb verify {f.root}` for the full list, "
                         f"or open with {switch_off('verify')} to read what is intact")


def damaged_shards(root: Path, dirs: list[Path]) -> set[str]:
    """Shards recorded as damaged by the last ``verify``, plus those failing the quick check:
    what ``--no-verify`` leaves out so that the intact rest can be read."""
    bad: set[str] = set()
    try:
        last = last_verification(root)
    except StoreError:
        last = None
    if last:
        bad.update(last.get("damaged") or [])
    for d in dirs:
        if shard_problems(d, None, full=False):
            bad.add(str(d))
    return bad


def damaged_runs(root: Path) -> set[str]:
    """Runs the last ``verify`` found damaged in their own files (``run.json``,
    ``run.parquet``, catalog entry): what ``--no-verify`` leaves out whole."""
    try:
        last = last_verification(root)
    except StoreError:
        return set()
    return set((last or {}).get("damaged_runs") or [])
