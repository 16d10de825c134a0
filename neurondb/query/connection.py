"""The embedded DuckDB connection: views over every table of the store(s), the
``activations(...)``/``gradients(...)`` table macros, and a read-only sandbox.

Views: ``runs``, ``examples``, ``tokens``, ``rows``, ``neuron_profile``, ``neuron_top`` and one per registered result kind
(:data:`neurondb.store.kinds.RESULT_KINDS`) that has files under ``results/<table>/``. Every
identifier the connection creates is quoted, so a kind named like a keyword (``overlaps``)
breaks nothing; users write such a view quoted (``SELECT * FROM "overlaps"``).

The sandbox is made of the engine's own guarantees, not a keyword filter:

* the store's files reach DuckDB as Arrow datasets and tables registered on the connection, so
  DuckDB itself never needs the file system: ``enable_external_access = false`` then refuses
  every file access a statement could make (``COPY ... TO``, ``EXPORT``, ``ATTACH``,
  ``INSTALL``/``LOAD``, ``read_text``/``read_csv``/``read_parquet``/``glob`` ..., however the
  statement is wrapped: ``EXPLAIN ANALYZE``, CTEs, ``query()``); extensions are neither
  installed nor loaded automatically, Python variables are not scanned by name, and
  ``lock_configuration = true`` stops a statement from undoing any of it;
* a statement check (:meth:`QueryConnection.check`) lets through reading statements only
  (``SELECT``/``WITH``/``FROM``/``VALUES``, ``PIVOT``/``UNPIVOT``, ``SUMMARIZE``, ``DESCRIBE``,
  ``SHOW`` and ``EXPLAIN [ANALYZE]`` of those), looking inside ``EXPLAIN``, because the engine
  setting does not stop in-memory ``CREATE``/``DROP`` (``CREATE OR REPLACE VIEW examples``
  would silently shadow a view for the rest of a session); where the DuckDB build reports it,
  the binder's own "this statement writes" flag is checked as well.

Result files are checked against their catalog entry (size and sha256) before they are
exposed; a damaged, unreadable or missing result file makes every query that reads its view
fail with a one-line :class:`~neurondb.errors.QueryError` naming the file and the fix, while
the other views keep working. A file is never dropped from a view silently.
"""

from __future__ import annotations

import atexit
import re
import weakref
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from neurondb.errors import one_line
from neurondb.query.errors import QueryError
from neurondb.query.parquet_files import ComputedTable, constant_array, lazy_table
from neurondb.query.parquet_files import source_protocol as _lazy_ok
from neurondb.store.catalog import recorded_results
from neurondb.store.errors import StoreError
from neurondb.store.io import read_parquet
from neurondb.store.kinds import RESERVED_VIEWS, RESULT_KINDS, quote_ident
from neurondb.store.layout import EXAMPLES, RESULTS_DIR, ROWS, RUN_TABLE, TOKENS
from neurondb.store.run import EXAMPLES_SCHEMA, ROWS_SCHEMA, TOKENS_SCHEMA, RunInfo
from neurondb.store.verify import result_problem

MAX_MACRO_VALUES = 50_000_000

#: Prefix of the connection's internal names (registered Arrow objects, helper functions);
#: they are not listed as views.
INTERNAL = "_nd_"

#: Settings applied before the configuration is locked (the engine half of the sandbox).
SANDBOX_SETTINGS = (
    "SET allow_persistent_secrets = false",
    "SET enable_external_access = false",
    "SET python_enable_replacements = false",
    "SET lock_configuration = true",
)
CONNECT_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
}

#: First keywords of a statement that only reads (the whole statement, not a clause).
READING_STARTS = frozenset({"SELECT", "FROM", "VALUES", "TABLE", "PIVOT", "UNPIVOT",
                            "PIVOT_WIDER", "PIVOT_LONGER", "SUMMARIZE", "DESCRIBE", "SHOW"})
ACCEPTED = ("SELECT (with WITH, FROM, VALUES), PIVOT, UNPIVOT, SUMMARIZE, DESCRIBE, SHOW "
            "and EXPLAIN [ANALYZE] of those")

TENSOR_ROW = pa.struct([
    ("run", pa.string()), ("split", pa.string()), ("example_id", pa.int64()),
    ("position", pa.int32()), ("stack", pa.string()), ("layer", pa.int32()),
    ("neuron", pa.int32()), ("value", pa.float32()), ("slot", pa.string()),
])

TENSOR_MACRO = """
CREATE MACRO {qname}(run := NULL, split := NULL, stack := NULL, layer := NULL,
                     neuron := NULL, neurons := NULL, all_runs := false) AS TABLE
SELECT unnest("_nd_tensor"('{name}', CAST(run AS VARCHAR), CAST(split AS VARCHAR),
                           CAST(stack AS VARCHAR), CAST(layer AS INTEGER),
                           CAST(coalesce(neurons, CASE WHEN neuron IS NULL THEN NULL
                                                       ELSE [neuron] END) AS INTEGER[]),
                           CAST(coalesce(all_runs, false) AS BOOLEAN)),
              recursive := true)
"""


_OPEN: weakref.WeakSet = weakref.WeakSet()
_CATALOG_WORDS = ("duckdb_functions", "information_schema", "pg_catalog", "show functions")
_MACRO_NAME = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?MACRO\s+(\w+)", re.IGNORECASE)


def check_one_run(kind: str, split: str, runs: list[str]) -> None:
    """Refuse ``{kind}(split := ...)`` when the split matches several runs (their rows would
    be merged, so a per-label mean counts every example once per run). The message follows
    :meth:`neurondb.store.reader.Store.run`: the runs, then how to name one or merge them."""
    if len(runs) > 1:
        raise StoreError(f"split {split!r} has several runs with {kind} ({', '.join(runs)}); "
                         f"name one with run := '{runs[0]}', or pass all_runs := true to "
                         "merge them")


@atexit.register
def _close_all() -> None:
    """Close connections left open at exit (DuckDB's bindings complain about leaks otherwise)."""
    for c in list(_OPEN):
        c.close()


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


class QueryConnection:
    """Read-only SQL over a :class:`~neurondb.store.reader.Store` (see the module docstring).

    ``views``: the view names, in order; ``damaged``: view name -> the one-line message a query
    of that view fails with (a result file that is damaged, unreadable or missing).
    """

    def __init__(self, store):
        self.store = store
        self.views: list[str] = []
        self.damaged: dict[str, str] = {}
        self._internal_views: dict[str, str] = {}  # registered internal name -> view it serves
        self._keep: list = []  # the registered Arrow objects, alive as long as the connection
        self.con = duckdb.connect(":memory:", config=dict(CONNECT_CONFIG))
        _OPEN.add(self)
        try:
            self._create_views()
            self._create_macros()
            for s in SANDBOX_SETTINGS:
                self.con.execute(s)
        except BaseException:
            self.close()
            raise

    # -- setup ---------------------------------------------------------------------------
    def _register(self, name: str, obj, view: str | None = None) -> None:
        """Register an Arrow table/dataset under ``name`` (a temporary view of the connection)."""
        self.con.register(name, obj)
        self._keep.append(obj)
        if name.startswith(INTERNAL):
            self._internal_views[name] = view or name
        else:
            self.views.append(name)

    def _view(self, name: str, select: str) -> None:
        self.con.execute(f"CREATE VIEW {quote_ident(name)} AS {select}")
        self.views.append(name)

    def _shard_files(self, name: str) -> list[str]:
        out: list[str] = []
        for info in self.store.runs():
            out.extend(str(p) for p in self.store.shard_files(info.run, name))
        return out

    @staticmethod
    def _dataset(files: list[str], schema: pa.Schema,
                 constants: list[dict] | None = None):
        """Parquet ``files`` as a lazy table of ``schema`` (no file is opened here; DuckDB
        scans it through Arrow, so it needs no file access of its own)."""
        return lazy_table(files, schema, constants)

    def _table_view(self, name: str, filename: str, schema: pa.Schema) -> None:
        files = self._shard_files(filename)
        self._register(name, self._dataset(files, schema) if files else schema.empty_table())

    def _runs_view(self) -> None:
        tables: list[pa.Table] = []
        problems: list[str] = []
        for info in self.store.runs():
            f = self.store.run_dir(info.run) / RUN_TABLE
            if not f.exists():
                continue  # a run still being extracted (--partial) has no run table yet
            try:
                t = read_parquet(f)
            except (OSError, pa.ArrowException) as e:
                problems.append(one_line(
                    f"run table {f} cannot be read ({_first_line(e)}); run `neurondb verify "
                    f"{self.store.root_of(info.run)}` and re-extract the run"))
                continue
            if info.stored_dtype is None and "dtype" in t.column_names:
                # a profile or statistics run stores no tensors: its dtype is NULL, as in
                # `neurondb info` (the file keeps the command's default)
                t = t.set_column(t.column_names.index("dtype"), "dtype",
                                 pa.nulls(t.num_rows, pa.string()))
            store_col = constant_array(self.store.root_of(info.run).name, pa.string(), t.num_rows)
            if "store" in t.column_names:
                t = t.set_column(t.column_names.index("store"), "store", store_col)
            else:
                t = t.append_column("store", store_col)
            tables.append(t)
        if problems:
            self._damaged_view("runs", problems, tables, ("run", "split", "mode"))
            return
        if not tables:
            tables = [RunInfo(run="", split="", mode="", dataset="").table().slice(0, 0)]
        self._union("runs", tables)

    def _union(self, name: str, tables: list[pa.Table]) -> None:
        """View ``name`` over in-memory ``tables``, columns matched by name (types promoted)."""
        try:
            t = (pa.concat_tables(tables, promote_options="permissive")
                 if len(tables) > 1 else tables[0])
        except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
            # Arrow cannot promote a column across the tables (e.g. int in one result file,
            # string in another): one registered table each, united by DuckDB's own casts
            parts = []
            for i, t in enumerate(tables):
                part = f"{INTERNAL}{name}_{i}"
                self._register(part, t, name)
                parts.append(f"SELECT * FROM {quote_ident(part)}")
            self._view(name, " UNION ALL BY NAME ".join(parts))
            return
        self._register(name, t)

    def _rows_view(self) -> None:
        """``rows`` with global row numbers: each shard's local ``row`` plus its offset.

        Each shard's file carries its offsets as constant columns (one per stack), so one lazy
        table serves every run and shard.
        """
        files, offsets = [], []
        stacks: list[str] = []
        for info in self.store.runs():
            if info.mode != "tokens":
                continue
            run_stacks = list(self.store.shape_of(info.run).stacks)
            stacks.extend(s for s in run_stacks if s not in stacks)
            offs = {s: self.store.row_offsets(info.run, s) for s in run_stacks}
            for k, (p, _) in enumerate(self.store.shards(info.run)):
                f = p / ROWS
                if f.exists():
                    files.append(str(f))
                    offsets.append({s: o[k] for s, o in offs.items()})
        if not files:
            self._register("rows", ROWS_SCHEMA.empty_table())
            return
        cols = [f"{INTERNAL}o{i}" for i in range(len(stacks))]
        schema = ROWS_SCHEMA
        for c in cols:
            schema = schema.append(pa.field(c, pa.int64()))
        parts = [{c: off.get(s, 0) for c, s in zip(cols, stacks)} for off in offsets]
        inner = f"{INTERNAL}rows"
        self._register(inner, self._dataset(files, schema, parts), "rows")
        case = " ".join(f"WHEN {_lit(s)} THEN {quote_ident(c)}" for s, c in zip(stacks, cols))
        excl = ", ".join(quote_ident(c) for c in cols)
        self._view("rows", f"SELECT * EXCLUDE ({excl}) REPLACE "
                           f"(row + CASE stack {case} ELSE 0 END AS row) FROM {quote_ident(inner)}")

    def _create_views(self) -> None:
        from duckdb.sqltypes import BOOLEAN, VARCHAR

        self.con.create_function(f"{INTERNAL}fail", self._fail_udf, [VARCHAR], BOOLEAN,
                                 type="arrow", null_handling="special", side_effects=True)
        self._runs_view()
        self._table_view("examples", EXAMPLES, EXAMPLES_SCHEMA)
        self._table_view("tokens", TOKENS, TOKENS_SCHEMA)
        self._rows_view()
        self._profile_views()
        for table in RESULT_KINDS:
            if table not in RESERVED_VIEWS:
                self._result_view(table)

    def _profile_views(self) -> None:
        """``neuron_profile`` and ``neuron_top`` of the profile runs (:mod:`neurondb.profile.read`),
        computed when a query first reads them; empty, with their columns, in a store without
        profile runs. A damaged profile file fails the queries of these two views only."""
        from neurondb.profile.read import PROFILE_SCHEMA, TOP_SCHEMA, profile_table, top_table

        for name, make, schema in (("neuron_profile", profile_table, PROFILE_SCHEMA),
                                   ("neuron_top", top_table, TOP_SCHEMA)):
            def compute(make=make, name=name):
                try:
                    return make(self.store)
                except StoreError as e:  # one line through the query's error
                    raise OSError(f"the {name} view cannot be read: {one_line(str(e))}") from e

            self._register(name, ComputedTable(schema, compute) if _lazy_ok() else compute())

    # -- result views ----------------------------------------------------------------------
    def _result_files(self, table: str) -> Iterator[tuple[Path, Path, str]]:
        """``(root, file, name)`` of every result of ``table``: the files present and the
        files the catalog records (which may be missing)."""
        for root in self.store.roots:
            d = root / RESULTS_DIR / table
            names = {p.stem for p in d.glob("*.parquet")
                     if not p.name.startswith(".")} if d.is_dir() else set()
            names |= {n for t, n in recorded_results(root) if t == table}
            for name in sorted(names):
                yield root, d / f"{name}.parquet", name

    def _read_result(self, root: Path, table: str, name: str, path: Path) -> pa.Table:
        """The result file as a table, checked against its catalog entry; a one-line
        :class:`QueryError` naming the file and the fix if it is damaged, unreadable or gone."""
        kind = RESULT_KINDS[table]
        fix = (f"run `neurondb verify {root}` and re-create the {kind.singular} "
               f"({kind.hint}, with --overwrite)")
        problem = result_problem(root, table, path, full=True)  # the one result check
        if problem is not None:
            what = "missing" if not path.exists() else "damaged"
            raise QueryError(one_line(f"{kind.singular} {name!r} is {what}: {problem}; {fix}"))
        try:
            data = path.read_bytes()
        except OSError as e:
            raise QueryError(one_line(f"result file {path} cannot be read "
                                      f"({e.strerror or e}); {fix}")) from e
        try:
            return read_parquet(pa.BufferReader(data))
        except (pa.ArrowException, OSError, ValueError) as e:
            raise QueryError(one_line(f"result file {path} cannot be read as Parquet "
                                      f"({str(e).splitlines()[0] if str(e) else e}); "
                                      f"{fix}")) from e

    def _result_view(self, table: str) -> None:
        tables, problems = [], []
        for root, path, name in self._result_files(table):
            try:
                tables.append(self._read_result(root, table, name, path))
            except QueryError as e:
                problems.append(str(e))
        if not tables and not problems:
            return  # no result of this kind: no view
        if not problems:
            self._union(table, tables)
            return
        self._damaged_view(table, problems, tables, ("name", *RESULT_KINDS[table].required))

    def _damaged_view(self, view: str, problems: list[str], tables: list[pa.Table],
                      columns: tuple[str, ...]) -> None:
        """View ``view`` that fails every query reading it with ``problems[0]``; its columns are
        those of the intact ``tables`` (else ``columns``), so the view still describes."""
        msg = problems[0] + (f" (and {len(problems) - 1} more damaged {view} files)"
                             if len(problems) > 1 else "")
        self.damaged[view] = msg
        try:
            schema = pa.unify_schemas([t.schema for t in tables],
                                      promote_options="permissive") if tables else None
        except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
            schema = None  # schemas that do not unify: the kind's required columns, as text
        if schema is None:
            schema = pa.schema([(c, pa.string()) for c in dict.fromkeys(columns)])
        one_null_row = pa.table({f.name: pa.nulls(1, f.type) for f in schema})
        inner = f"{INTERNAL}damaged_{view}"
        self._register(inner, one_null_row, view)
        # The filter reads a one-row table, so any query that reads the view evaluates it.
        self._view(view, f"SELECT * FROM {quote_ident(inner)} "
                         f"WHERE {quote_ident(INTERNAL + 'fail')}({_lit(view)})")

    def _fail_udf(self, views: pa.Array) -> pa.Array:
        names = [v for v in views.to_pylist() if v is not None]
        raise QueryError(self.damaged.get(names[0] if names else "", "a view of the store "
                                          "is damaged; run `neurondb verify`"))

    # -- macros ----------------------------------------------------------------------------
    def _create_macros(self) -> None:
        """Declare the table macros; each is created in DuckDB when a query first names it
        (:meth:`_ensure_macros`), so opening a store does not pay for the ones it never uses."""
        self._pending: dict[str, str] = {}
        for name in ("activations", "gradients"):
            self._pending[name] = TENSOR_MACRO.format(qname=quote_ident(name), name=name)
        try:
            from neurondb.query.macros import MACROS
        except ImportError:
            MACROS = []
        for sql in MACROS:
            m = _MACRO_NAME.search(sql)
            if m:
                self._pending[m.group(1).lower()] = sql
        self._tensor_function = False

    def _ensure_macros(self, query: str) -> None:
        """Create the pending macros that ``query`` names (and those their bodies name)."""
        if not self._pending:
            return
        low = query.lower()
        if any(w in low for w in _CATALOG_WORDS):  # a listing shows every macro
            low = " ".join(self._pending)
        for name in list(self._pending):
            if name not in self._pending or not re.search(rf"\b{name}\b", low):
                continue  # created meanwhile (a macro the last one's body named), or not named
            sql = self._pending.pop(name)
            self._ensure_macros(sql)  # a macro over another macro
            if name in ("activations", "gradients"):
                self._create_tensor_function()
            try:
                self.con.execute(sql)
            except duckdb.Error:
                continue  # a macro over a result view that this store does not have yet

    def ensure_all_macros(self) -> None:
        """Create every macro now (for listings such as ``duckdb_functions()``)."""
        self._ensure_macros(" ".join(self._pending))

    def _create_tensor_function(self) -> None:
        if self._tensor_function:
            return
        from duckdb.sqltypes import BOOLEAN, INTEGER, VARCHAR

        ret = duckdb.list_type(duckdb.struct_type({
            "run": VARCHAR, "split": VARCHAR, "example_id": duckdb.sqltypes.BIGINT,
            "position": INTEGER, "stack": VARCHAR, "layer": INTEGER, "neuron": INTEGER,
            "value": duckdb.sqltypes.FLOAT, "slot": VARCHAR}))
        self.con.create_function(
            f"{INTERNAL}tensor", self._tensor_udf,
            [VARCHAR, VARCHAR, VARCHAR, VARCHAR, INTEGER, duckdb.list_type(INTEGER), BOOLEAN],
            ret,
            type="arrow", null_handling="special", side_effects=True)
        self._tensor_function = True

    # -- the tensor UDF -----------------------------------------------------------------
    def _tensor_udf(self, kind, run, split, stack, layer, neurons, all_runs):
        out = []
        for i in range(len(kind)):
            out.append(self._tensor_rows(
                kind[i].as_py(), run[i].as_py(), split[i].as_py(), stack[i].as_py(),
                layer[i].as_py(), neurons[i].as_py(), bool(all_runs[i].as_py())))
        offsets = np.cumsum([0] + [len(a) for a in out]).astype(np.int32)
        values = pa.concat_arrays(out) if out else pa.array([], TENSOR_ROW)
        return pa.ListArray.from_arrays(pa.array(offsets), values)

    def _tensor_rows(self, kind: str, run, split, stack, layer, neurons,
                     all_runs: bool = False) -> pa.StructArray:
        st = self.store
        runs = [i for i in st.runs() if i.mode == "tokens" and (run is None or i.run == run)
                and (split is None or i.split == split)]
        if run is not None and not runs:
            st.run(run)  # raises the one-line "not in the store" error
            raise StoreError(f"run {run!r} holds running statistics, not per-token {kind}")
        if kind == "gradients":
            runs = [i for i in runs if i.grad]
        if run is None and split is not None and not all_runs:
            check_one_run(kind, split, [i.run for i in runs])
        runs = [i for i in runs if st.shards(i.run)]  # a run with no complete shard yet
        parts = []
        total = 0
        for info in runs:
            shape = st.shape_of(info.run)
            if stack is not None and stack not in shape.stacks:
                continue
            stacks = [stack] if stack is not None else list(shape.stacks)
            for s in stacks:
                layers = [layer] if layer is not None else range(shape.n_layers(s))
                rows = None
                for lay in layers:
                    st._check_layer(s, lay, info.run)
                    d_ff = shape.d_ff(s, lay)
                    idx = np.arange(d_ff) if neurons is None else np.asarray(neurons, np.int64)
                    if idx.size and (idx.min() < 0 or idx.max() >= d_ff):
                        raise StoreError(f"neuron index out of range: layer {lay} of {s!r} has "
                                         f"neurons 0..{d_ff - 1}")
                    if rows is None:
                        rows = st.rows(run=info.run, stack=s)
                    n = rows.num_rows
                    total += n * idx.size
                    if total > MAX_MACRO_VALUES:
                        raise QueryError(f"{kind}(...) would return over {MAX_MACRO_VALUES:,} "
                                         "values; filter by run, layer and neuron, or read "
                                         "arrays with Store.iter_activations in Python")
                    vals = st.activations(lay, run=info.run, stack=s,
                                          neurons=None if neurons is None else idx, kind=kind)
                    k = idx.size
                    rep = lambda col, k=k: np.repeat(np.asarray(col), k)  # noqa: E731
                    parts.append(pa.StructArray.from_arrays([
                        pa.array(np.full(n * k, info.run, dtype=object), pa.string()),
                        pa.array(np.full(n * k, info.split, dtype=object), pa.string()),
                        pa.array(rep(rows.column("example_id")), pa.int64()),
                        pa.array(rep(rows.column("position")), pa.int32()),
                        pa.array(np.full(n * k, s, dtype=object), pa.string()),
                        pa.array(np.full(n * k, lay, dtype=np.int32)),
                        pa.array(np.tile(idx.astype(np.int32), n)),
                        pa.array(vals.reshape(-1).astype(np.float32)),
                        pa.array(rep(rows.column("slot").to_numpy(zero_copy_only=False)),
                                 pa.string()),
                    ], fields=list(TENSOR_ROW)))
        if not parts:
            return pa.array([], TENSOR_ROW)
        return pa.concat_arrays(parts)

    # -- querying -----------------------------------------------------------------------
    def check(self, query: str) -> None:
        """Refuse (one-line :class:`QueryError`) anything but reading statements.

        Every statement of ``query`` must be a SELECT (which DuckDB's parser also makes of
        ``WITH``, ``FROM``, ``VALUES``, ``SUMMARIZE``, ``DESCRIBE``, ``SHOW`` and ``PIVOT ... IN``),
        an ``EXPLAIN [ANALYZE]`` of one, or a ``PIVOT`` without ``IN`` list (which DuckDB
        parses into several statements) whose text is a reading statement; where the binder
        reports it, no statement may write.
        """
        if not isinstance(query, str):
            raise QueryError(f"a query is SQL text, not {type(query).__name__}")
        stmts = self._parse(query)
        if not stmts:
            raise QueryError("empty query: give a SELECT statement")
        for s in stmts:
            self._check_statement(s)

    def _parse(self, text: str) -> list:
        try:
            return list(self.con.extract_statements(text))
        except duckdb.Error as e:
            raise QueryError(f"SQL error: {_first_line(e)}") from e

    def _check_statement(self, s, explained: bool = False) -> None:
        kind = _kind(s)
        text = s.query
        if kind == "EXPLAIN" and not explained:
            inner = _explained(text)
            subs = self._parse(inner) if inner is not None and inner.strip() else []
            if len(subs) != 1:
                raise QueryError("EXPLAIN must be followed by one reading statement "
                                 f"(the query connection is read-only: {ACCEPTED})")
            try:
                self._check_statement(subs[0], explained=True)
            except QueryError as e:
                raise QueryError(f"EXPLAIN of a statement that is not allowed: {e}") from None
            if _kind(subs[0]) == "MULTI":
                return  # the binder cannot tell what a PIVOT without IN list does until it runs
        elif kind == "MULTI":  # a PIVOT without IN list, or EXPLAIN of one
            inner = _explained(text) if not explained else None
            if not _reads(text if inner is None else inner):
                raise QueryError(_refusal(_first_word(text if inner is None else inner)
                                          or kind))
        elif kind != "SELECT":
            raise QueryError(_refusal(kind))
        if kind != "MULTI":
            self._ensure_macros(text)  # the binder must see the macros the query names
            self._check_writes(s)

    def _check_writes(self, s) -> None:
        """The binder's own verdict, where this DuckDB build exposes it (``duckdb._seam``)."""
        try:
            from duckdb import _seam
        except ImportError:
            return
        bind = getattr(_seam, "bind", None)
        if bind is None:
            return
        try:
            sig = bind(self.con, s)
        except duckdb.Error as e:
            raise QueryError(_clean(str(e), self)) from e
        except (TypeError, AttributeError):
            return  # another build's private API: the engine settings still hold
        if getattr(sig, "writes", False):
            raise QueryError(_refusal(_kind(s)))

    def sql(self, query: str) -> Relation:
        """Run a reading statement; returns a DuckDB relation whose errors, also those raised
        while its rows are fetched, are one-line :class:`QueryError` errors."""
        self.check(query)
        self._ensure_macros(query)  # only after the check: a refused statement creates none
        try:
            if self.damaged:
                self._refuse_damaged(query)
            return Relation(self.con.sql(query), self)
        except duckdb.Error as e:
            raise QueryError(_clean(str(e), self)) from e

    def _refuse_damaged(self, query: str) -> None:
        """Fail now, not when the rows are fetched, if a statement's plan reads a damaged view
        (the plan holds its failing filter): the caller gets the one-line QueryError."""
        for s in self._parse(query):
            if _kind(s) not in ("SELECT", "MULTI") or _first_word(s.query) == "EXPLAIN":
                continue  # EXPLAIN ANALYZE runs at once and fails there
            plan = " ".join(str(r[-1]) for r in
                            self.con.execute(f"EXPLAIN (FORMAT json) {s.query}").fetchall())
            for view in _FAIL_CALL.findall(plan):
                if view in self.damaged:
                    raise QueryError(self.damaged[view])

    def arrow(self, query: str) -> pa.Table:
        """Run a query to completion as an Arrow table; errors become one-line QueryErrors."""
        rel = self.sql(query)
        if rel is None:
            raise QueryError("the query returned nothing: give a SELECT statement")
        try:
            t = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
            return t.read_all() if hasattr(t, "read_all") else t
        except duckdb.Error as e:
            raise QueryError(_clean(str(e), self)) from e

    def close(self) -> None:
        self.con.close()
        _OPEN.discard(self)


# -- statement text -------------------------------------------------------------------------
def _kind(stmt) -> str:
    return str(stmt.type).rsplit(".", 1)[-1]


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _refusal(kind: str) -> str:
    return (f"{kind.upper()} statements are not allowed: the query connection is read-only "
            f"({ACCEPTED}); write results with the neurondb API")


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _skip(text: str, i: int) -> int:
    """Index of the first character at or after ``i`` that is not whitespace or a comment
    (``-- ...`` to the end of the line; ``/* ... */``, nested)."""
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return i


def _quoted_end(text: str, i: int) -> int:
    """End of the quoted string or identifier starting at ``i`` (``'...'``, ``"..."``,
    ``$tag$...$tag$``); ``len(text)`` if it is not closed."""
    n = len(text)
    q = text[i]
    if q == "$":
        m = re.match(r"\$[A-Za-z_0-9]*\$", text[i:])
        if not m:
            return i + 1
        j = text.find(m.group(0), i + len(m.group(0)))
        return n if j < 0 else j + len(m.group(0))
    j = i + 1
    while j < n:
        if text[j] == q:
            if j + 1 < n and text[j + 1] == q:
                j += 2
                continue
            return j + 1
        if text[j] == "\\" and q == "'" and i > 0 and text[i - 1] in "eE":
            j += 2
            continue
        j += 1
    return n


def _tokens(text: str) -> Iterator[tuple[str, str, int, int]]:
    """Top-level tokens of ``text``: ``(kind, value, start, end)`` with kind ``word``
    (value upper-cased), ``group`` (a balanced ``( ... )``, value its inside), ``quoted`` or
    ``other``; comments and whitespace are skipped."""
    i = _skip(text, 0)
    n = len(text)
    while i < n:
        c = text[i]
        if c == "(":
            depth, j = 1, i + 1
            while j < n and depth:
                j = _skip(text, j)
                if j >= n:
                    break
                if text[j] in "'\"$":
                    j = _quoted_end(text, j)
                elif text[j] == "(":
                    depth, j = depth + 1, j + 1
                elif text[j] == ")":
                    depth, j = depth - 1, j + 1
                else:
                    j += 1
            yield "group", text[i + 1:j - 1], i, j
            i = j
        elif c in "'\"$" and (c != "$" or re.match(r"\$[A-Za-z_0-9]*\$", text[i:])):
            j = _quoted_end(text, i)
            yield "quoted", text[i:j], i, j
            i = j
        elif m := _WORD.match(text, i):
            yield "word", m.group(0).upper(), i, m.end()
            i = m.end()
        else:
            yield "other", c, i, i + 1
            i += 1
        i = _skip(text, i)


def _explained(text: str) -> str | None:
    """The statement inside ``EXPLAIN [ANALYZE] [(options)] <statement>``; ``None`` if
    ``text`` does not read as that."""
    toks = _tokens(text)
    first = next(toks, None)
    if first is None or first[:2] != ("word", "EXPLAIN"):
        return None
    pos = first[3]
    for tok in toks:
        kind, value, start, end = tok
        if kind == "word" and value in ("ANALYZE", "ANALYSE") and pos == first[3]:
            pos = end
            continue
        if kind == "group" and not _reads(value):
            pos = end  # an option list, e.g. (FORMAT json) or (ANALYZE, FORMAT json)
        else:
            pos = start
        break
    return text[pos:]


def _first_word(text: str) -> str | None:
    for kind, value, _, _ in _tokens(text):
        return value if kind == "word" else None
    return None


def _reads(text: str) -> bool:
    """Whether statement ``text`` is a reading statement, judged from its leading keywords:
    ``SELECT``/``FROM``/``PIVOT``/... , a parenthesized reading statement, or ``WITH`` whose
    every CTE body and main statement read. Conservative: anything unrecognized is not."""
    toks = list(_tokens(text))
    if not toks:
        return False
    kind, value = toks[0][:2]
    if kind == "group":
        return _reads(value)
    if kind != "word":
        return False
    if value in READING_STARTS:
        return True
    if value != "WITH":
        return False
    i = 1
    if i < len(toks) and toks[i][:2] == ("word", "RECURSIVE"):
        i += 1
    while i < len(toks):
        if toks[i][0] not in ("word", "quoted"):  # the CTE's name
            return False
        i += 1
        if i < len(toks) and toks[i][0] == "group":  # its column list
            i += 1
        if i < len(toks) and toks[i][:2] == ("word", "USING"):  # USING KEY (...)
            i += 3
        if i >= len(toks) or toks[i][:2] != ("word", "AS"):
            return False
        i += 1
        while i < len(toks) and toks[i][:2] in (("word", "NOT"), ("word", "MATERIALIZED")):
            i += 1
        if i >= len(toks) or toks[i][0] != "group" or not _reads(toks[i][1]):
            return False
        i += 1
        if i < len(toks) and toks[i][:2] == ("other", ","):
            i += 1
            continue
        rest = text[toks[i][2]:] if i < len(toks) else ""
        return _reads(rest)
    return False


# -- errors ---------------------------------------------------------------------------------
_FAIL_CALL = re.compile(re.escape(INTERNAL) + r"fail\('([^']*)'\)")
_STREAM = re.compile(r"reading the stream registered as '([^']*)' failed: (.*)")


def _clean(msg: str, con: QueryConnection | None = None) -> str:
    """One line: the neurondb message raised in a UDF, a refused file access, an unreadable
    store file (naming its view), or DuckDB's first line."""
    first = msg.strip().splitlines()[0] if msg.strip() else msg
    for marker in ("QueryError: ", "StoreIOError: ", "StoreError: ", "NeurondbError: "):
        if marker in first:
            return first.split(marker, 1)[1]
    if "Permission Error" in first or "disabled by configuration" in first:
        return ("not allowed: the query connection is read-only and reads only the store's "
                f"views and macros ({first})")
    m = _STREAM.search(first)
    if m:
        name = m.group(1)
        view = con._internal_views.get(name, name) if con is not None else name
        roots = " ".join(str(r) for r in con.store.roots) if con is not None else "STORE"
        return one_line(f"a file of the store's {view} view cannot be read ({m.group(2)}); "
                        f"run `neurondb verify {roots}` to find it")
    if first.startswith("Invalid Input Error: "):  # raised by error() in a macro: its text
        return first[len("Invalid Input Error: "):]
    return f"SQL error: {first}"


class Relation:
    """A DuckDB relation (``.df()``, ``.fetchall()``, ``.arrow()``, ``.show()`` ...) whose
    errors are one-line :class:`QueryError` errors, whenever they happen: DuckDB runs a relation
    lazily, so a refused file access or a macro's error appears only when rows are fetched."""

    __slots__ = ("_rel", "_con")

    def __init__(self, rel, con: QueryConnection):
        self._rel = rel
        self._con = con

    def _wrap(self, out):
        return Relation(out, self._con) if isinstance(out, duckdb.DuckDBPyRelation) else out

    def __getattr__(self, name: str):
        attr = getattr(self._rel, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return self._wrap(attr(*args, **kwargs))
            except duckdb.Error as e:
                raise QueryError(_clean(str(e), self._con)) from e

        return call

    def __repr__(self) -> str:
        try:
            return repr(self._rel)
        except duckdb.Error as e:
            raise QueryError(_clean(str(e), self._con)) from e

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self._rel)

    @property
    def relation(self) -> duckdb.DuckDBPyRelation:
        """The DuckDB relation itself (its errors are DuckDB's)."""
        return self._rel


def describe_views(con: QueryConnection) -> dict[str, list[str]]:
    """View name -> column names (for `neurondb info`), in the order the views were made."""
    out = {}
    for name in con.views:
        cols = [c[0] for c in con.con.execute(f"DESCRIBE {quote_ident(name)}").fetchall()]
        out[name] = cols
    return out
