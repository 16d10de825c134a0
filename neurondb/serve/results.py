"""The store's result tables (rankings, masks, suppression, ...) as the browser reads them.

Tables are read through :func:`neurondb.report.collect.read_results` (each file checked against
its catalog entry; a damaged or incomplete file is left out and named in ``problems``) and kept
in memory until a file of that table changes (its path, size or modification time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from neurondb.report.collect import ResultTable, read_results, result_files
from neurondb.store.reader import Store


@dataclass
class RankingIndex:
    """One ranking with what the neuron page looks up: row of each neuron, and each neuron's
    0-based place in the order the suppression selection uses (``rank``, stack, layer,
    neuron), within its layer (``scope == 'layer'``) or over the model."""

    result: ResultTable
    scope: str
    row_of: dict[tuple[str, int, int], int]
    place: np.ndarray          # [rows] place of row i in its group's order
    group_size: np.ndarray     # [rows] size of row i's group

    @property
    def frame(self) -> pd.DataFrame:
        return self.result.frame


def ranking_index(r: ResultTable) -> RankingIndex:
    """Index a ranking table (see :class:`RankingIndex`)."""
    df = r.frame
    scope = ("layer" if "scope" in df.columns and len(df)
             and (df["scope"].astype(str) == "layer").all() else "global")
    keys = zip(df["stack"].astype(str), df["layer"].astype(int), df["neuron"].astype(int))
    row_of = {k: i for i, k in enumerate(keys)}
    order = np.lexsort((df["neuron"].to_numpy(), df["layer"].to_numpy(),
                        df["stack"].astype(str).to_numpy(), df["rank"].to_numpy(np.float64)))
    place = np.empty(len(df), np.int64)
    size = np.empty(len(df), np.int64)
    if scope == "layer":
        grp = df["stack"].astype(str) + "\x00" + df["layer"].astype(str)
        g_sorted = grp.to_numpy()[order]
        for g in pd.unique(g_sorted):
            idx = order[g_sorted == g]
            place[idx] = np.arange(idx.size)
            size[idx] = idx.size
    else:
        place[order] = np.arange(len(df))
        size[:] = len(df)
    return RankingIndex(result=r, scope=scope, row_of=row_of, place=place, group_size=size)


@dataclass
class ResultCache:
    """Result tables of one store, re-read when their files change."""

    store: Store
    _tables: dict[str, tuple[tuple, list[ResultTable], list[str]]] = field(default_factory=dict)
    _rankings: tuple[tuple, list[RankingIndex]] | None = None

    def _signature(self, table: str) -> tuple:
        out = []
        for name, path in result_files(self.store, table).items():
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((name, str(path), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def tables(self, table: str) -> list[ResultTable]:
        """The readable results of ``table``, by name."""
        return self._load(table)[1]

    def problems(self, table: str) -> list[str]:
        """What was left out of ``table`` (damaged, unreadable, lacking columns)."""
        return self._load(table)[2]

    def _load(self, table: str) -> tuple[tuple, list[ResultTable], list[str]]:
        sig = self._signature(table)
        cached = self._tables.get(table)
        if cached is None or cached[0] != sig:
            problems: list[str] = []
            cached = (sig, read_results(self.store, table, problems), problems)
            self._tables[table] = cached
        return cached

    def get(self, table: str, name: str) -> ResultTable | None:
        return next((r for r in self.tables(table) if r.name == name), None)

    def rankings(self) -> list[RankingIndex]:
        """Every readable ranking, indexed (see :class:`RankingIndex`)."""
        sig, tables, _ = self._load("rankings")
        if self._rankings is None or self._rankings[0] != sig:
            self._rankings = (sig, [ranking_index(r) for r in tables])
        return self._rankings[1]

    def ranking(self, name: str) -> RankingIndex | None:
        return next((r for r in self.rankings() if r.result.name == name), None)
