"""Reading a store (or several stores opened together) from Python."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from neurondb.arch.shape import ModelShape
from neurondb.errors import UsageError, on_cli, switch, switch_off
from neurondb.store.errors import StoreError
from neurondb.store.io import read_parquet
from neurondb.store.layout import (
    EXAMPLES,
    PARTIAL_PREFIX,
    RESULTS_DIR,
    ROWS,
    RUN_JSON,
    RUNS_DIR,
    STATS,
    TENSOR_FILES,
    TOKENS,
)
from neurondb.store.manifest import Manifest
from neurondb.store.run import RunInfo, ShardInfo, shard_dirs
from neurondb.store.stats import RunningStats
from neurondb.store.tensors import TensorSet


class Store:
    """One or more store directories seen as one set of runs.

    Run names must be unique across the stores opened together. Arrays come back as
    float32 NumPy arrays ``[rows, neurons]`` whatever the storage dtype. A run is made of
    shards (chunks of its examples); readers see them as one table/array. ``partial=True``
    also lists runs still being extracted (their complete shards only).
    """

    def __init__(self, paths: Sequence[str | Path], partial: bool = False,
                 verify: bool = True):
        self.partial = partial
        self.skip_damaged = not verify
        #: with ``verify=False``: what was left out as damaged or missing (one line each)
        self.left_out: list[str] = []
        if not paths:
            raise StoreError("no store given")
        self.roots = [Path(p).absolute() for p in paths]
        self.manifests: dict[Path, Manifest] = {}
        for root in self.roots:
            if not root.exists():
                raise StoreError(f"store {root} does not exist; create it with `neurondb extract`")
            self.manifests[root] = Manifest.read(root)
        self._runs: dict[str, tuple[Path, RunInfo]] = {}
        self._readers: dict[tuple[str, str], TensorSet] = {}
        self._shards: dict[str, list[tuple[Path, ShardInfo]]] = {}
        self._conn = None
        self._profiles: dict = {}  # merged profile states (neurondb.profile.read)
        self.refresh()
        if verify:
            from neurondb.store.verify import check_store_quick

            check_store_quick(self)

    # -- runs ------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-scan the run directories (complete runs only).

        With ``verify=False`` a run whose own files are damaged or gone is left out (and
        said so in :attr:`left_out`); damaged shards are left out by :meth:`shards`.
        """
        from neurondb.store.verify import read_run_info

        runs: dict[str, tuple[Path, RunInfo]] = {}
        left_out: list[str] = []
        for root in self.roots:
            rdir = root / RUNS_DIR
            if not rdir.exists():
                continue
            for d in sorted(rdir.iterdir()):
                if d.name.startswith(PARTIAL_PREFIX) or not (d / RUN_JSON).exists():
                    continue
                try:
                    info = read_run_info(d)
                except StoreError as e:
                    if not self.skip_damaged:
                        raise StoreError(f"{e}; or open with {switch_off('verify')} to read "
                                         "the other runs") from e
                    left_out.append(f"run {d.name}: {e}")
                    continue
                if info.status != "complete" and not self.partial:
                    continue
                info.store = root.name
                if info.run in runs:
                    raise StoreError(f"run {info.run!r} is in both {runs[info.run][0]} and {root}; "
                                     "open the stores separately or rename a run")
                runs[info.run] = (root, info)
        self._runs = runs
        self._shards = {}
        self._profiles = {}
        for r in self._readers.values():
            r.close()
        self._readers = {}
        if self.skip_damaged:
            self._leave_out_damaged(left_out)

    def _leave_out_damaged(self, left_out: list[str]) -> None:
        """``verify=False``: drop runs whose own files are damaged or gone (by the open-time
        check and the last ``verify``) and record in :attr:`left_out` what was left out."""
        from neurondb.store.verify import damaged_runs, last_verification, quick_findings

        for f in quick_findings(self):
            if f.whole_run and f.run in self._runs:
                del self._runs[f.run]
            if f.shard is None:
                left_out.append(f"run {f.run}: {f.msg}" if f.run else f.msg)
            else:
                left_out.append(f"shard {f.shard.name} of run {f.run}: {f.msg}")
        for root in self.roots:
            try:
                last = last_verification(root) or {}
            except StoreError:
                last = {}
            for shard in last.get("damaged") or []:
                p = Path(shard)
                if len(p.parents) >= 3 and p.parents[1].name in self._runs:
                    left_out.append(f"shard {p.name} of run {p.parents[1].name}: damaged at "
                                    f"the last `neurondb verify` ({last.get('time')})")
            for run in sorted(damaged_runs(root)):
                if run in self._runs and self._runs[run][0] == root:
                    del self._runs[run]
                    left_out.append(f"run {run}: damaged at the last `neurondb verify`")
        self.left_out = list(dict.fromkeys(left_out))

    def __repr__(self) -> str:
        where = ", ".join(str(r) for r in self.roots)
        m = self.manifest.model
        widths = ", ".join(f"{s}: {len(w)}x{w[0] if w else 0}" for s, w in m.shape.widths.items())
        runs = len(self._runs)
        return (f"<neurondb.Store {where}: {runs} run{'s' if runs != 1 else ''}; model {m.name} "
                f"({m.shape.family}, {widths})>")

    @property
    def manifest(self) -> Manifest:
        return self.manifests[self.roots[0]]

    @property
    def shape(self) -> ModelShape:
        if len({id(m) for m in self.manifests.values()}) == 1 or len(self.manifests) == 1:
            return self.manifest.model.shape
        shapes = {json.dumps(m.model.shape.to_dict(), sort_keys=True) for m in self.manifests.values()}
        if len(shapes) > 1:
            raise StoreError("the stores opened together are of models with different shapes")
        return self.manifest.model.shape

    @property
    def path(self) -> Path:
        return self.roots[0]

    @property
    def results_dir(self) -> Path:
        return self.roots[0] / RESULTS_DIR

    def runs(self) -> list[RunInfo]:
        return [info for _, info in self._runs.values()]

    def run(self, run: str | None = None, split: str | None = None,
            mode: str | None = None) -> RunInfo:
        """Find a run by name, or the only run of ``split`` (and ``mode``)."""
        if run is not None:
            if run not in self._runs:
                raise StoreError(f"run {run!r} is not in the store (runs: "
                                 f"{', '.join(self._runs) or 'none'}); see `neurondb info STORE`")
            info = self._runs[run][1]
            if split is not None and info.split != split:
                raise StoreError(f"run {run!r} holds split {info.split!r}, not {split!r}")
            return info
        cands = [i for i in self.runs() if (split is None or i.split == split)
                 and (mode is None or i.mode == mode)]
        if len(cands) == 1:
            return cands[0]
        what = f"split {split!r}" if split else "the store"
        if not cands:
            have = ", ".join(f"{i.run} ({i.split}, {i.mode})" for i in self.runs()) or "none"
            raise StoreError(f"no run of {what}{f' in mode {mode}' if mode else ''} is in the store "
                             f"(runs: {have}); extract it or name another")
        raise StoreError(f"{what} has several runs ({', '.join(i.run for i in cands)}); "
                         "name one with " + ("--run" if on_cli() else "run=..."))

    def run_dir(self, run: str) -> Path:
        root, info = self._runs[self.run(run).run]
        return root / RUNS_DIR / info.run

    def root_of(self, run: str) -> Path:
        return self._runs[self.run(run).run][0]

    def shape_of(self, run: str) -> ModelShape:
        """The shape of the model a run was extracted from (stores opened together may differ)."""
        return self.manifests[self.root_of(run)].model.shape

    def default_stack(self, stack: str | None, run: str | None = None) -> str:
        stacks = (self.shape_of(run) if run is not None else self.shape).stacks
        if stack is None:
            return stacks[0]
        if stack not in stacks:
            raise StoreError(f"the model has no stack {stack!r} (stacks: {', '.join(stacks)})")
        return stack

    # -- shards and tables --------------------------------------------------------------
    def shards(self, run: str) -> list[tuple[Path, ShardInfo]]:
        """``(directory, ShardInfo)`` of the run's complete shards, in chunk order."""
        name = self.run(run).run
        if name not in self._shards:
            from neurondb.store.verify import read_shard_info

            dirs = shard_dirs(self.run_dir(name))
            if self.skip_damaged:
                from neurondb.store.verify import damaged_shards

                bad = damaged_shards(self.root_of(name), dirs)
                dirs = [p for p in dirs if str(p) not in bad]
            self._shards[name] = [(p, read_shard_info(p)) for p in dirs]
        return self._shards[name]

    def row_offsets(self, run: str, stack: str) -> list[int]:
        """Global row of each shard's first row in ``stack`` (``[n_shards]``)."""
        out, acc = [], 0
        for _, sh in self.shards(run):
            out.append(acc)
            acc += int(sh.n_rows.get(stack, 0))
        return out

    def shard_files(self, run: str, name: str) -> list[Path]:
        return [p / name for p, _ in self.shards(run) if (p / name).exists()]

    def _table(self, run: str, name: str, **kw) -> pa.Table:
        files = self.shard_files(run, name)
        if not files:
            raise StoreError(f"run {run!r} has no {name} (mode {self.run(run).mode})")
        tables = [_read_parquet(f, run, **kw) for f in files]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def examples(self, run: str | None = None, split: str | None = None) -> pa.Table:
        return self._table(self.run(run, split).run, EXAMPLES)

    def tokens(self, run: str | None = None, split: str | None = None) -> pa.Table:
        return self._table(self.run(run, split, "tokens" if run is None else None).run, TOKENS)

    def rows(self, run: str | None = None, split: str | None = None,
             stack: str | None = None) -> pa.Table:
        """Row index of the captured tokens of one stack, sorted by global ``row``."""
        import pyarrow.compute as pc

        info = self.run(run, split, "tokens" if run is None else None)
        stack = self.default_stack(stack, info.run)
        parts = []
        for (p, _), off in zip(self.shards(info.run), self.row_offsets(info.run, stack)):
            f = p / ROWS
            if not f.exists():
                continue
            t = _read_parquet(f, info.run)
            t = t.filter(pc.equal(t.column("stack"), stack))
            if off:
                i = t.schema.get_field_index("row")
                t = t.set_column(i, "row", pc.add(t.column("row"), off))
            parts.append(t)
        if not parts:
            if info.mode == "tokens":  # a run being extracted, no shard complete yet
                from neurondb.store.run import ROWS_SCHEMA

                return ROWS_SCHEMA.empty_table()
            raise StoreError(f"run {info.run!r} has no row index (mode {info.mode})")
        t = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        return t.sort_by("row")

    def stats(self, run: str | None = None, split: str | None = None) -> RunningStats:
        """Running statistics of a stats-mode run, merged (exactly) over its shards."""
        info = self.run(run, split, "stats" if run is None else None)
        files = self.shard_files(info.run, STATS)
        if not files:
            raise StoreError(f"run {info.run!r} holds per-token tensors, not running statistics; "
                             "use neurondb.query.running_stats_from_tokens or "
                             + ("--stats-split" if on_cli() else "extract with stats_split=..."))
        st = _load_stats(files[0], info.run)
        for f in files[1:]:
            st.merge(_load_stats(f, info.run))
        return st

    # -- profiles (runs extracted with --profile) ---------------------------------------
    def profile(self, run: str | None = None, stack: str | None = None,
                layer: int | None = None, neuron: int | Sequence[int] | None = None):
        """``neuron_profile`` rows (pandas DataFrame; every profile run by default; empty
        with the columns when the store has none); ``neuron``: one index or a list. See
        :mod:`neurondb.profile.read`."""
        from neurondb.profile.read import profile_frame

        return profile_frame(self, run, stack, layer, neuron)

    def profile_top(self, run: str | None = None, stack: str | None = None,
                    layer: int | None = None, neuron: int | Sequence[int] | None = None,
                    kind: str | None = None):
        """``neuron_top`` rows (top-K and bottom-K tokens per neuron) as a DataFrame;
        ``neuron``: one index or a list."""
        from neurondb.profile.read import top_frame

        return top_frame(self, run, stack, layer, neuron, kind)

    def profile_histogram(self, run: str, stack: str, layer: int, neuron: int):
        """``(edges float64 [n_bins+1], counts int64 [n_bins+2])`` of one neuron
        (``counts[0]`` underflow, ``counts[-1]`` overflow)."""
        from neurondb.profile.read import histogram

        return histogram(self, run, stack, layer, neuron)

    # -- tensors ---------------------------------------------------------------------
    def tensor(self, run: str, kind: str = "activations") -> TensorSet:
        """The run's tensors of ``kind`` over all its shards."""
        info = self.run(run)
        if kind not in TENSOR_FILES:
            raise UsageError(f"kind must be one of {', '.join(TENSOR_FILES)}")
        key = (info.run, kind)
        if key not in self._readers:
            files = self.shard_files(info.run, TENSOR_FILES[kind])
            if not files:
                hint = (f"re-extract with {switch('grad')}" if kind == "gradients"
                        else "it is a profile run (no per-token tensors): read Store.profile() "
                        "or the neuron_profile view" if info.mode == "profile"
                        else "this run holds running statistics only")
                raise StoreError(f"run {info.run!r} has no {kind}; {hint}")
            try:
                self._readers[key] = TensorSet(files)
            except StoreError:
                raise
            except (OSError, KeyError, ValueError, RuntimeError) as e:  # h5py on a damaged file
                raise _damaged_tensor(kind, info.run, e) from e
        return self._readers[key]

    def activations(self, layer: int, run: str | None = None, split: str | None = None,
                    stack: str | None = None, neurons: Sequence[int] | None = None,
                    rows: slice | np.ndarray | None = None, kind: str = "activations") -> np.ndarray:
        """float32 ``[rows, neurons]`` of one (stack, layer); rows align with :meth:`rows`."""
        info = self.run(run, split, "tokens" if run is None else None)
        stack = self.default_stack(stack, info.run)
        self._check_layer(stack, layer, info.run)
        ts = self.tensor(info.run, kind)
        try:
            return ts.read(stack, layer, rows, neurons)
        except (StoreError, UsageError, IndexError):
            raise
        except (OSError, KeyError, RuntimeError) as e:  # h5py on a damaged file
            raise _damaged_tensor(kind, info.run, e) from e

    def gradients(self, layer: int, **kw) -> np.ndarray:
        return self.activations(layer, kind="gradients", **kw)

    def iter_activations(self, layer: int, run: str | None = None, split: str | None = None,
                         stack: str | None = None, neurons: Sequence[int] | None = None,
                         chunk_rows: int | None = None,
                         kind: str = "activations") -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, float32 [n, neurons])`` blocks; memory bounded by a block."""
        info = self.run(run, split, "tokens" if run is None else None)
        stack = self.default_stack(stack, info.run)
        self._check_layer(stack, layer, info.run)
        ts = self.tensor(info.run, kind)
        try:
            yield from ts.iter_chunks(stack, layer, chunk_rows, neurons)
        except (StoreError, UsageError, IndexError):
            raise
        except (OSError, KeyError, RuntimeError) as e:  # h5py on a damaged file
            raise _damaged_tensor(kind, info.run, e) from e

    def _check_layer(self, stack: str, layer: int, run: str | None = None) -> None:
        n = (self.shape_of(run) if run is not None else self.shape).n_layers(stack)
        if not 0 <= layer < n:
            raise StoreError(f"layer {layer} is out of range: stack {stack!r} has layers 0..{n - 1}")

    # -- SQL -------------------------------------------------------------------------
    @property
    def connection(self):
        """The read-only DuckDB connection with views over every table."""
        if self._conn is None:
            self._conn = _connector()(self)
        return self._conn

    def sql(self, query: str):
        """Run a read-only SQL query; returns a DuckDB relation."""
        return self.connection.sql(query)

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _damaged(f: Path, run: str, e: Exception) -> StoreError:
    return StoreError(f"{f} of run {run!r} cannot be read ({type(e).__name__}: "
                      f"{' '.join(str(e).split())[:200]}); the file is damaged: run `neurondb "
                      "verify` and re-extract the run")


def _damaged_tensor(kind: str, run: str, e: Exception) -> StoreError:
    return StoreError(f"the {kind} of run {run!r} cannot be read ({type(e).__name__}: "
                      f"{' '.join(str(e).split())[:200]}); a file is damaged: run `neurondb "
                      "verify` and re-extract the run")


def _read_parquet(f: Path, run: str, **kw) -> pa.Table:
    """``pq.read_table`` whose failure on a damaged file is a one-line StoreError."""
    try:
        return read_parquet(f, **kw)
    except Exception as e:  # ArrowInvalid, OSError, ... whatever the damage makes it raise
        raise _damaged(f, run, e) from e


def _load_stats(f: Path, run: str) -> RunningStats:
    try:
        return RunningStats.load(f)
    except StoreError:
        raise
    except Exception as e:
        raise _damaged(f, run, e) from e


#: ``"module:Class"`` of the SQL connection a store opens. The store layer does not import
#: the query layer above it: ``neurondb/__init__.py`` names it here (one dependency
#: inversion, so there is no store -> query import)
CONNECTOR = ""


def _connector():
    if not CONNECTOR:
        raise RuntimeError("no SQL connection is registered (import neurondb first)")
    import importlib

    module, name = CONNECTOR.split(":")
    return getattr(importlib.import_module(module), name)


def open_store(*paths: str | Path, partial: bool = False, verify: bool = True) -> Store:
    """Open one store, or several as one (``neurondb.open(a, b)``).

    ``partial=True`` also shows runs still being extracted (complete shards only).
    Opening checks that every committed run and shard is present with its recorded sizes
    (and the small files' checksums) and that the last ``verify`` found no damage; any
    problem is a one-line StoreError naming the run, the file and the fix.
    ``verify=False`` (``--no-verify``) reads what is intact instead, knowingly: damaged or
    missing runs and shards are left out and listed in ``store.left_out``.
    """
    flat: list[str | Path] = []
    for p in paths:
        flat.extend(p if isinstance(p, (list, tuple)) else [p])
    return Store(flat, partial=partial, verify=verify)
