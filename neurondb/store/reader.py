"""Reading a store (or several stores opened together) from Python."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neurondb.arch.adapter import ModelShape
from neurondb.store.errors import StoreError
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
from neurondb.store.run import RunInfo
from neurondb.store.stats import RunningStats
from neurondb.store.tensors import TensorReader


class Store:
    """One or more store directories seen as one set of runs.

    Run names must be unique across the stores opened together. Arrays come back as
    float32 NumPy arrays ``[rows, neurons]`` whatever the storage dtype.
    """

    def __init__(self, paths: Sequence[str | Path]):
        if not paths:
            raise StoreError("no store given")
        self.roots = [Path(p).absolute() for p in paths]
        self.manifests: dict[Path, Manifest] = {}
        for root in self.roots:
            if not root.exists():
                raise StoreError(f"store {root} does not exist; create it with `neurondb extract`")
            self.manifests[root] = Manifest.read(root)
        self._runs: dict[str, tuple[Path, RunInfo]] = {}
        self._readers: dict[tuple[str, str], TensorReader] = {}
        self._conn = None
        self.refresh()

    # -- runs ------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-scan the run directories (complete runs only)."""
        runs: dict[str, tuple[Path, RunInfo]] = {}
        for root in self.roots:
            rdir = root / RUNS_DIR
            if not rdir.exists():
                continue
            for d in sorted(rdir.iterdir()):
                if d.name.startswith(PARTIAL_PREFIX) or not (d / RUN_JSON).exists():
                    continue
                info = RunInfo.from_dict(json.loads((d / RUN_JSON).read_text()))
                info.store = root.name
                if info.run in runs:
                    raise StoreError(f"run {info.run!r} is in both {runs[info.run][0]} and {root}; "
                                     "open the stores separately or rename a run")
                runs[info.run] = (root, info)
        self._runs = runs

    @property
    def manifest(self) -> Manifest:
        return self.manifests[self.roots[0]]

    @property
    def shape(self) -> ModelShape:
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
                         "name one with run=... / --run")

    def run_dir(self, run: str) -> Path:
        root, info = self._runs[self.run(run).run]
        return root / RUNS_DIR / info.run

    def default_stack(self, stack: str | None) -> str:
        stacks = self.shape.stacks
        if stack is None:
            return stacks[0]
        if stack not in stacks:
            raise StoreError(f"the model has no stack {stack!r} (stacks: {', '.join(stacks)})")
        return stack

    # -- tables ----------------------------------------------------------------------
    def _table(self, run: str, name: str) -> pa.Table:
        path = self.run_dir(run) / name
        if not path.exists():
            raise StoreError(f"run {run!r} has no {name} (mode {self.run(run).mode})")
        return pq.read_table(path)

    def examples(self, run: str | None = None, split: str | None = None) -> pa.Table:
        return self._table(self.run(run, split).run, EXAMPLES)

    def tokens(self, run: str | None = None, split: str | None = None) -> pa.Table:
        return self._table(self.run(run, split, "tokens" if run is None else None).run, TOKENS)

    def rows(self, run: str | None = None, split: str | None = None,
             stack: str | None = None) -> pa.Table:
        """Row index of the captured tokens of one stack, sorted by ``row``."""
        info = self.run(run, split, "tokens" if run is None else None)
        stack = self.default_stack(stack)
        t = pq.read_table(self.run_dir(info.run) / ROWS, filters=[("stack", "=", stack)])
        return t.sort_by("row")

    def stats(self, run: str | None = None, split: str | None = None) -> RunningStats:
        info = self.run(run, split, "stats" if run is None else None)
        path = self.run_dir(info.run) / STATS
        if not path.exists():
            raise StoreError(f"run {info.run!r} holds per-token tensors, not running statistics; "
                             "use neurondb.query.running_stats_from_tokens or --stats-split")
        return RunningStats.load(path)

    # -- tensors ---------------------------------------------------------------------
    def tensor(self, run: str, kind: str = "activations") -> TensorReader:
        info = self.run(run)
        if kind not in TENSOR_FILES:
            raise ValueError(f"kind must be one of {', '.join(TENSOR_FILES)}")
        key = (info.run, kind)
        if key not in self._readers:
            path = self.run_dir(info.run) / TENSOR_FILES[kind]
            if not path.exists():
                hint = ("re-extract with --grad" if kind == "gradients"
                        else "this run holds running statistics only")
                raise StoreError(f"run {info.run!r} has no {kind}; {hint}")
            try:
                self._readers[key] = TensorReader(path)
            except OSError as e:
                raise StoreError(f"{path} cannot be read ({e}); the file is damaged, "
                                 "re-extract the run") from e
        return self._readers[key]

    def activations(self, layer: int, run: str | None = None, split: str | None = None,
                    stack: str | None = None, neurons: Sequence[int] | None = None,
                    rows: slice | np.ndarray | None = None, kind: str = "activations") -> np.ndarray:
        """float32 ``[rows, neurons]`` of one (stack, layer); rows align with :meth:`rows`."""
        info = self.run(run, split, "tokens" if run is None else None)
        stack = self.default_stack(stack)
        self._check_layer(stack, layer)
        return self.tensor(info.run, kind).read(stack, layer, rows, neurons)

    def gradients(self, layer: int, **kw) -> np.ndarray:
        return self.activations(layer, kind="gradients", **kw)

    def iter_activations(self, layer: int, run: str | None = None, split: str | None = None,
                         stack: str | None = None, neurons: Sequence[int] | None = None,
                         chunk_rows: int | None = None,
                         kind: str = "activations") -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, float32 [n, neurons])`` blocks; memory bounded by a block."""
        info = self.run(run, split, "tokens" if run is None else None)
        stack = self.default_stack(stack)
        self._check_layer(stack, layer)
        yield from self.tensor(info.run, kind).iter_chunks(stack, layer, chunk_rows, neurons)

    def _check_layer(self, stack: str, layer: int) -> None:
        n = self.shape.n_layers(stack)
        if not 0 <= layer < n:
            raise StoreError(f"layer {layer} is out of range: stack {stack!r} has layers 0..{n - 1}")

    # -- SQL -------------------------------------------------------------------------
    @property
    def connection(self):
        """The read-only DuckDB connection with views over every table."""
        if self._conn is None:
            from neurondb.query.connection import QueryConnection

            self._conn = QueryConnection(self)
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


def open_store(*paths: str | Path) -> Store:
    """Open one store, or several as one (``neurondb.open(a, b)``)."""
    flat: list[str | Path] = []
    for p in paths:
        flat.extend(p if isinstance(p, (list, tuple)) else [p])
    return Store(flat)
