"""What the app keeps between requests: the open store, one lock around it, and caches.

The store's HDF5 readers and its DuckDB connection are not safe to use from two threads at
once, so every request that touches the store holds :attr:`ServeContext.lock`. Caches hold
what does not change while a run is complete: run layouts, example tables and token indexes;
result tables are re-read when their files change (:class:`~neurondb.serve.results.
ResultCache`).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from neurondb.errors import StoreError
from neurondb.query.layout import RunLayout, load_layout
from neurondb.serve.errors import NotFoundError
from neurondb.serve.results import ResultCache
from neurondb.store.catalog import recorded_runs
from neurondb.store.reader import Store
from neurondb.store.run import RunInfo
from neurondb.store.stats import RunningStats

#: Most ``rows x neurons`` values neuron correlations are computed from (on the fly; a larger
#: run is sampled at evenly spaced rows) ...
PARTNER_BUDGET = 16_000_000
#: ... and the largest run (``rows x neurons``) sampled at all: its tensors are read once.
PARTNER_MAX_SCAN = 2_000_000_000


@dataclass
class TokenIndex:
    """A run's tokens of one stack sorted by ``(example_id, position)``; the tokens of an
    example are ``slice(start[i], end[i])`` for ``i = searchsorted(example_ids, id)``."""

    example_ids: np.ndarray
    start: np.ndarray
    end: np.ndarray
    position: np.ndarray
    token: np.ndarray
    kind: np.ndarray

    def of(self, example_id: int) -> slice | None:
        i = int(np.searchsorted(self.example_ids, example_id))
        if i >= self.example_ids.size or self.example_ids[i] != example_id:
            return None
        return slice(int(self.start[i]), int(self.end[i]))


@dataclass
class ServeContext:
    """The open store and the caches of one app."""

    store: Store
    lock: threading.RLock = field(default_factory=threading.RLock)
    results: ResultCache = field(init=False)
    _layouts: dict = field(default_factory=dict)
    _examples: dict = field(default_factory=dict)
    _tokens: dict = field(default_factory=dict)
    _zscores: dict = field(default_factory=dict)
    _stats: dict = field(default_factory=dict)
    _example_rows: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.results = ResultCache(self.store)
        self._given = self.store  # the caller's store: closed by the caller, not here
        self._catalog = self._catalog_signature()

    # -- runs committed while the browser runs -----------------------------------------------
    def _catalog_signature(self) -> tuple:
        """The runs each root's catalog records: changes when a run is committed or dropped."""
        return tuple(tuple(recorded_runs(root)) for root in self.store.roots)

    def refresh(self) -> bool:
        """Reopen the store when runs were committed or dropped since it was opened (an
        extraction that finished while the browser runs); the caches start again. One
        directory listing per root; call it holding :attr:`lock`."""
        now = self._catalog_signature()
        if now == self._catalog:
            return False
        fresh = Store(self.store.roots, partial=self.store.partial,
                      verify=not self.store.skip_damaged)
        old, self.store, self._catalog = self.store, fresh, now
        self.results = ResultCache(fresh)
        for cache in (self._layouts, self._examples, self._tokens, self._zscores, self._stats,
                      self._example_rows):
            cache.clear()
        if old is not self._given:
            old.close()
        return True

    @contextlib.contextmanager
    def locked(self):
        """Hold :attr:`lock` with the store up to date (:meth:`refresh`)."""
        with self.lock:
            self.refresh()
            yield self

    def close(self) -> None:
        """Close a store this context reopened (the one it was given is the caller's)."""
        if self.store is not self._given:
            self.store.close()

    # -- runs --------------------------------------------------------------------------
    def run(self, name: str) -> RunInfo:
        """The run ``name``, or a 404."""
        for info in self.store.runs():
            if info.run == name:
                return info
        raise NotFoundError(f"the store has no run {name!r} (runs: "
                            f"{', '.join(i.run for i in self.store.runs()) or 'none'})")

    def layout(self, info: RunInfo, stack: str) -> RunLayout:
        key = (info.run, stack)
        if key not in self._layouts:
            self._layouts[key] = load_layout(self.store, info, stack)
        return self._layouts[key]

    def example_rows(self, info: RunInfo, stack: str) -> tuple[np.ndarray, np.ndarray]:
        """``(order, bounds)``: the rows of example index ``e`` of the run's layout are
        ``order[bounds[e]:bounds[e + 1]]``."""
        key = (info.run, stack)
        if key not in self._example_rows:
            ex = self.layout(info, stack).ex_idx
            order = np.argsort(ex, kind="stable")
            n_ex = self.layout(info, stack).example_ids.size
            bounds = np.searchsorted(ex[order], np.arange(n_ex + 1))
            self._example_rows[key] = (order, bounds)
        return self._example_rows[key]

    def examples(self, info: RunInfo) -> pd.DataFrame:
        """The run's examples indexed by ``example_id`` (text, label, pred, correct, ...)."""
        if info.run not in self._examples:
            df = self.store.examples(run=info.run).to_pandas()
            self._examples[info.run] = df.set_index("example_id", drop=False).sort_index()
        return self._examples[info.run]

    def tokens(self, info: RunInfo, stack: str) -> TokenIndex | None:
        """The run's token index for ``stack``; None when the run stored no tokens."""
        key = (info.run, stack)
        if key not in self._tokens:
            self._tokens[key] = self._read_tokens(info, stack)
        return self._tokens[key]

    def _read_tokens(self, info: RunInfo, stack: str) -> TokenIndex | None:
        try:
            t = self.store.tokens(run=info.run)
        except StoreError:
            return None
        t = t.filter(pc.equal(t.column("stack"), stack)).sort_by(
            [("example_id", "ascending"), ("position", "ascending")])
        ex = t.column("example_id").to_numpy().astype(np.int64)
        if ex.size == 0:
            return None
        starts = np.flatnonzero(np.r_[True, ex[1:] != ex[:-1]])
        ends = np.r_[starts[1:], ex.size]
        return TokenIndex(example_ids=ex[starts], start=starts, end=ends,
                          position=t.column("position").to_numpy().astype(np.int64),
                          token=np.asarray(t.column("token").to_pylist(), dtype=object),
                          kind=np.asarray(t.column("kind").to_pylist(), dtype=object))

    def stats(self, info: RunInfo) -> RunningStats:
        """The running statistics of a stats-mode run (merged over its shards)."""
        if info.run not in self._stats:
            self._stats[info.run] = self.store.stats(run=info.run)
        return self._stats[info.run]

    # -- neuron correlations --------------------------------------------------------------
    def zscores(self, info: RunInfo, stack: str) -> np.ndarray | None:
        """``[rows, neurons of every layer of stack]`` standardized activations of a tokens
        run (zero where a neuron is constant): all its rows, or evenly spaced rows when all
        would exceed :data:`PARTNER_BUDGET` values; None when even the sample would be too
        small a part of a very large run (:data:`PARTNER_MAX_SCAN`)."""
        key = (info.run, stack)
        if key not in self._zscores:
            self._zscores[key] = self._standardized(info, stack)
        return self._zscores[key]

    def _standardized(self, info: RunInfo, stack: str) -> np.ndarray | None:
        widths = self.store.shape_of(info.run).widths[stack]
        rows = int(info.n_rows.get(stack, 0))
        total = sum(widths)
        if info.mode != "tokens" or rows < 3 or rows * total > PARTNER_MAX_SCAN:
            return None
        keep = min(rows, max(3, PARTNER_BUDGET // total))
        pick = None if keep == rows else np.linspace(0, rows - 1, keep).round().astype(np.int64)
        parts = []
        for layer in range(len(widths)):
            x = self.store.activations(layer, run=info.run, stack=stack, rows=pick)
            x = x - x.mean(axis=0)
            sd = x.std(axis=0)
            parts.append(np.divide(x, sd, out=np.zeros_like(x), where=sd > 0))
        return np.concatenate(parts, axis=1).astype(np.float32)
