"""What a store holds, read into typed records for the report (no plotting, no HTML).

Result tables are found by path, ``<root>/results/<table>/<name>.parquet`` for every store
opened together (the first store wins on a name clash, as :func:`neurondb.query.results.
find_result` does), so tables that :data:`neurondb.query.results.TABLES` does not list yet are
read too. A file that cannot be read, or lacks the columns the report needs, is not fatal: it
is left out and named in :attr:`StoreContents.problems`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from neurondb.query.results import META_KEY
from neurondb.report.errors import ReportError
from neurondb.runtime.prompt_files import PROMPT_JSON
from neurondb.store.io import read_parquet
from neurondb.store.kinds import RESULT_KINDS
from neurondb.store.layout import RESULTS_DIR
from neurondb.store.reader import Store
from neurondb.store.verify import result_problem
from neurondb.tune.curve import CURVE_CSV, EpochRecord, read_curve_csv

#: Columns a result table must have for its section to be drawn (the result-kind registry).
REQUIRED: dict[str, tuple[str, ...]] = {t: k.required for t, k in RESULT_KINDS.items()}


@dataclass
class RunSummary:
    """One run of the store, as the report's header lists it."""

    run: str
    split: str
    mode: str                   # "tokens" (per-token tensors) or "stats" (running sums only)
    dataset: str
    template: str
    readout: str
    prompt: str | None
    n_prompt: int               # soft-prompt tokens
    positions: list[str]
    n_examples: int
    n_rows: int                 # captured token rows, summed over stacks
    accuracy: float | None      # in [0, 1]; None without a readout
    dtype: str | None  # None: the run stores no tensors (a profile or statistics run)
    grad: bool
    store: str                  # the directory name of the store that holds the run


@dataclass
class StoreSummary:
    """The store's provenance: model identity and shape, and its runs."""

    paths: list[Path]
    model: str
    revision: str | None
    fingerprint: str
    model_class: str
    family: str
    d_model: int
    widths: dict[str, tuple[int, ...]]      # {stack: d_ff per layer}
    created: str
    libraries: dict[str, str]
    runs: list[RunSummary]

    @property
    def n_neurons(self) -> int:
        """FFN neurons of the model, all stacks and layers."""
        return sum(sum(w) for w in self.widths.values())


@dataclass
class ResultTable:
    """One result file: ``results/<table>/<name>.parquet`` with its provenance ``meta``."""

    table: str
    name: str
    frame: pd.DataFrame
    meta: dict
    path: Path


@dataclass
class PruningResult:
    """A ratio search (``pruning``) and the full-vs-pruned evaluation (``pruned_eval``) of one
    name; either may be missing."""

    name: str
    search: ResultTable | None
    evaluation: ResultTable | None


@dataclass
class TunedSeed:
    """One tuned prompt's directory: its training curve and best validation accuracy."""

    path: Path
    seed: int | None
    records: list[EpochRecord]
    best_epoch: int | None
    best_eval_accuracy: float | None    # in [0, 1]
    data: str | None                    # the data it was tuned on
    model: str | None


@dataclass
class CondensedPrompt:
    """A prompt re-tuned on a pruned model (``neurondb tune --from-prompt``): validation
    accuracy ``before`` re-tuning (the original prompt on the pruned model) and ``after``,
    on ``n`` validation examples."""

    seed: TunedSeed
    before: float
    after: float
    n: int | None
    source_prompt: str | None


@dataclass
class StoreContents:
    """Everything the report shows. ``prompts`` (``condensed``) is None when no prompt
    (re-tuned prompt) directory was given; ``latency_context``: the threads and load average
    the pruned model's latency was measured under, when the caller recorded them."""

    store: StoreSummary
    results: dict[str, list[ResultTable]] = field(default_factory=dict)
    prompts: list[TunedSeed] | None = None
    problems: list[str] = field(default_factory=list)
    condensed: list[CondensedPrompt] | None = None
    latency_context: dict | None = None

    def tables(self, table: str) -> list[ResultTable]:
        """The readable results of ``table``, sorted by name (empty if none)."""
        return self.results.get(table, [])

    @property
    def pruning(self) -> list[PruningResult]:
        """Ratio searches and pruned evaluations paired by name."""
        search = {r.name: r for r in self.tables("pruning")}
        ev = {r.name: r for r in self.tables("pruned_eval")}
        return [PruningResult(n, search.get(n), ev.get(n)) for n in sorted(set(search) | set(ev))]


def store_summary(store: Store) -> StoreSummary:
    """The header's facts from the manifest and ``store.runs()``."""
    m = store.manifest
    runs = [RunSummary(run=i.run, split=i.split, mode=i.mode, dataset=i.dataset,
                       template=i.template, readout=i.readout, prompt=i.prompt,
                       n_prompt=int(i.n_prompt), positions=list(i.positions),
                       n_examples=int(i.n_examples), n_rows=int(sum(i.n_rows.values())),
                       accuracy=i.accuracy, dtype=i.stored_dtype, grad=bool(i.grad), store=i.store)
            for i in store.runs()]
    shape = store.shape
    return StoreSummary(paths=list(store.roots), model=m.model.name, revision=m.model.revision,
                        fingerprint=m.model.fingerprint, model_class=m.model.model_class,
                        family=shape.family, d_model=int(shape.d_model),
                        widths={k: tuple(v) for k, v in shape.widths.items()},
                        created=m.created, libraries=dict(m.libraries), runs=runs)


def result_files(store: Store, table: str) -> dict[str, Path]:
    """``{name: path}`` of ``results/<table>/*.parquet`` in every store opened together."""
    out: dict[str, Path] = {}
    for root in store.roots:
        d = root / RESULTS_DIR / table
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.parquet")):
            if not p.name.startswith("."):
                out.setdefault(p.stem, p)
    return dict(sorted(out.items()))


def read_table(table: str, path: Path) -> ResultTable:
    """Read one result file; provenance from the schema metadata, else the ``params`` column."""
    t = read_parquet(path)
    df = t.to_pandas()
    raw = (t.schema.metadata or {}).get(META_KEY)
    if raw is None and "params" in df.columns and len(df):
        raw = df["params"].iloc[0]
    try:
        meta = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        meta = {}
    return ResultTable(table=table, name=path.stem, frame=df,
                       meta=meta if isinstance(meta, dict) else {}, path=path)


def read_results(store: Store, table: str, problems: list[str]) -> list[ResultTable]:
    """Every readable result of ``table``; unreadable or incomplete files go to ``problems``."""
    out = []
    for name, path in result_files(store, table).items():
        problem = result_problem(path.parents[2], table, path, full=True)
        if problem is not None:  # a damaged result is named and left out, never drawn
            problems.append(f"{table}/{name}: {problem}; left out")
            continue
        try:
            r = read_table(table, path)
        except Exception as e:  # a damaged file must not stop the report
            problems.append(f"{table}/{name}: cannot be read ({type(e).__name__}: {e})")
            continue
        missing = [c for c in REQUIRED.get(table, ()) if c not in r.frame.columns]
        if missing:
            problems.append(f"{table}/{name}: lacks column(s) {', '.join(missing)}; left out")
            continue
        if r.frame.empty:
            problems.append(f"{table}/{name}: has no rows; left out")
            continue
        out.append(r)
    return out


def prompt_dirs(paths: list[str | Path]) -> list[Path]:
    """Seed directories: each path itself if it holds a tuned prompt (``neurondb_prompt.json``
    or ``curve.csv``), else its ``seed-*`` directories in seed order (a ``neurondb tune --out``
    directory). A path that is neither is an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ReportError(f"prompt directory {p} does not exist; pass a `neurondb tune --out` "
                              "directory or one of its seed-<k> directories")
        if _is_seed_dir(p):
            out.append(p)
            continue
        subs = sorted((d for d in p.glob("seed-*") if d.is_dir() and _is_seed_dir(d)),
                      key=lambda d: (len(d.name), d.name))
        if not subs:
            raise ReportError(f"{p} holds no tuned prompt (no {PROMPT_JSON} or {CURVE_CSV}, no "
                              "seed-<k>/ directories); pass a `neurondb tune --out` directory")
        out.extend(subs)
    return out


def _is_seed_dir(p: Path) -> bool:
    return (p / PROMPT_JSON).exists() or (p / CURVE_CSV).exists()


def read_seed(path: Path, problems: list[str]) -> TunedSeed:
    """One seed directory: ``curve.csv`` and the prompt's meta (``neurondb_prompt.json``)."""
    meta: dict = {}
    prompt_json = path / PROMPT_JSON
    if prompt_json.exists():
        try:
            meta = json.loads(prompt_json.read_text())
        except ValueError as e:
            problems.append(f"{prompt_json}: not valid JSON ({e})")
    records: list[EpochRecord] = []
    if (path / CURVE_CSV).exists():
        try:
            records = read_curve_csv(path / CURVE_CSV)
        except (KeyError, ValueError, OSError) as e:
            problems.append(f"{path / CURVE_CSV}: cannot be read ({type(e).__name__}: {e})")
    else:
        problems.append(f"{path}: no {CURVE_CSV} (training curve)")
    seed = meta.get("seed")
    if seed is None:
        m = re.fullmatch(r"seed-(-?\d+)", path.name)
        seed = int(m.group(1)) if m else None
    best = meta.get("best_eval_accuracy")
    if best is None:
        evals = [r.eval_accuracy for r in records if r.eval_accuracy is not None]
        best = max(evals) if evals else None
    best_epoch = meta.get("best_epoch")
    if best_epoch is None and records and best is not None:
        best_epoch = next((r.epoch for r in records if r.eval_accuracy == best), None)
    data = (meta.get("data") or {}).get("key") or (meta.get("data") or {}).get("source")
    return TunedSeed(path=path, seed=None if seed is None else int(seed), records=records,
                     best_epoch=None if best_epoch is None else int(best_epoch),
                     best_eval_accuracy=None if best is None else float(best),
                     data=None if data is None else str(data), model=meta.get("model"))


TABLE_ORDER = ("rankings", "correlations", "overlaps", "masks", "transfers", "suppression",
               "pruning", "pruned_eval")


def read_condensed(path: Path, problems: list[str]) -> CondensedPrompt | None:
    """A re-tuned prompt's directory; None (and a problem) when it records no accuracy
    before re-tuning (it was not tuned ``from_prompt``)."""
    seed = read_seed(path, problems)
    try:
        meta = json.loads((path / PROMPT_JSON).read_text())
    except (OSError, ValueError):
        meta = {}
    before = (meta.get("from_prompt") or {}).get("eval_accuracy_before")
    if before is None or seed.best_eval_accuracy is None:
        problems.append(f"{path}: not a prompt re-tuned from another (no "
                        "from_prompt.eval_accuracy_before); left out of condensation")
        return None
    n = (meta.get("data") or {}).get("n_eval_examples")
    return CondensedPrompt(seed=seed, before=float(before), after=seed.best_eval_accuracy,
                           n=None if n is None else int(n),
                           source_prompt=(meta.get("from_prompt") or {}).get("prompt"))


def collect(store: Store, prompts: list[str | Path] | None = None,
            condensed: list[str | Path] | None = None,
            latency_context: dict | None = None) -> StoreContents:
    """Read the store's provenance, every result table, the given prompt directories and
    re-tuned (condensed) prompt directories."""
    problems: list[str] = []
    seeds = None
    if prompts:
        seeds = [read_seed(d, problems) for d in prompt_dirs(list(prompts))]
    cond = None
    if condensed:
        got = [read_condensed(d, problems) for d in prompt_dirs(list(condensed))]
        cond = [c for c in got if c is not None]
    results = {t: read_results(store, t, problems) for t in TABLE_ORDER}
    return StoreContents(store=store_summary(store), results=results, prompts=seeds,
                         problems=problems, condensed=cond, latency_context=latency_context)
