"""The embedded DuckDB connection: views over every table of the store(s), the
``activations(...)``/``gradients(...)`` table macros, and a read-only guard.

Views: ``runs``, ``examples``, ``tokens``, ``rows`` and one per ``results/<table>/``
directory. The guard accepts only SELECT statements (and EXPLAIN) and locks the
configuration, so a query cannot write, copy over, or delete anything in a store.
"""

from __future__ import annotations

import atexit
import weakref

import duckdb
import numpy as np
import pyarrow as pa

from neurondb.query.errors import QueryError
from neurondb.store.errors import StoreError
from neurondb.store.layout import EXAMPLES, RESULTS_DIR, ROWS, RUN_TABLE, TOKENS
from neurondb.store.run import EXAMPLES_SCHEMA, ROWS_SCHEMA, TOKENS_SCHEMA

MAX_MACRO_VALUES = 50_000_000
ALLOWED = {"SELECT", "EXPLAIN"}

TENSOR_ROW = pa.struct([
    ("run", pa.string()), ("split", pa.string()), ("example_id", pa.int64()),
    ("position", pa.int32()), ("stack", pa.string()), ("layer", pa.int32()),
    ("neuron", pa.int32()), ("value", pa.float32()), ("slot", pa.string()),
])

TENSOR_MACRO = """
CREATE MACRO {name}(run := NULL, split := NULL, stack := NULL, layer := NULL,
                    neuron := NULL, neurons := NULL) AS TABLE
SELECT unnest(_nd_tensor('{name}', CAST(run AS VARCHAR), CAST(split AS VARCHAR),
                         CAST(stack AS VARCHAR), CAST(layer AS INTEGER),
                         CAST(coalesce(neurons, CASE WHEN neuron IS NULL THEN NULL
                                                     ELSE [neuron] END) AS INTEGER[])),
              recursive := true)
"""


_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close connections left open at exit (DuckDB's bindings complain about leaks otherwise)."""
    for c in list(_OPEN):
        c.close()




class QueryConnection:
    """Read-only SQL over a :class:`~neurondb.store.reader.Store`."""

    def __init__(self, store):
        self.store = store
        self.con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
        self._create_views()
        self._create_macros()
        self.con.execute("SET lock_configuration = true")
        _OPEN.add(self)

    # -- setup ---------------------------------------------------------------------------
    def _files(self, name: str) -> list[str]:
        out = []
        for info in self.store.runs():
            if name == RUN_TABLE:
                p = self.store.run_dir(info.run) / name
                out.extend([str(p)] if p.exists() else [])
            else:
                out.extend(str(p) for p in self.store.shard_files(info.run, name))
        return out

    def _rows_view(self) -> None:
        """``rows`` with global row numbers: each shard's local rows plus its offset."""
        parts = []
        for info in self.store.runs():
            if info.mode != "tokens":
                continue
            shards = self.store.shards(info.run)
            offs = {s: self.store.row_offsets(info.run, s)
                    for s in self.store.shape_of(info.run).stacks}
            for k, (p, _) in enumerate(shards):
                f = p / ROWS
                if not f.exists():
                    continue
                case = " ".join(f"WHEN '{s}' THEN {o[k]}" for s, o in offs.items())
                path = str(f).replace("'", "''")
                parts.append(f"SELECT * REPLACE (row + CASE stack {case} ELSE 0 END AS row) "
                             f"FROM read_parquet('{path}')")
        if parts:
            self.con.execute("CREATE VIEW rows AS " + " UNION ALL ".join(parts))
        else:
            self._view("rows", [], ROWS_SCHEMA)

    def _view(self, view: str, files: list[str], empty: pa.Schema | None) -> None:
        if files:
            lst = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{lst}], "
                             "union_by_name = true)")
        elif empty is not None:
            self.con.register(f"_empty_{view}", empty.empty_table())
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM _empty_{view}")

    def _create_views(self) -> None:
        parts = []
        for info in self.store.runs():
            f = self.store.run_dir(info.run) / RUN_TABLE
            if f.exists():
                path = str(f).replace("'", "''")
                name = self.store.root_of(info.run).name.replace("'", "''")
                parts.append(f"SELECT * REPLACE ('{name}' AS store) FROM read_parquet('{path}')")
        if parts:
            self.con.execute("CREATE VIEW runs AS " + " UNION ALL BY NAME ".join(parts))
        else:
            self.con.execute("CREATE VIEW runs AS SELECT NULL::VARCHAR AS run, "
                             "NULL::VARCHAR AS split WHERE false")
        self._view("examples", self._files(EXAMPLES), EXAMPLES_SCHEMA)
        self._view("tokens", self._files(TOKENS), TOKENS_SCHEMA)
        self._rows_view()
        tables: dict[str, list[str]] = {}
        for root in self.store.roots:
            rdir = root / RESULTS_DIR
            if not rdir.is_dir():
                continue
            for d in sorted(rdir.iterdir()):
                files = sorted(str(f) for f in d.glob("*.parquet")) if d.is_dir() else []
                if files and d.name.isidentifier():
                    tables.setdefault(d.name, []).extend(files)
        reserved = {"runs", "examples", "tokens", "rows", "activations", "gradients"}
        for name, files in tables.items():
            if name not in reserved:
                self._view(name, files, None)

    def _create_macros(self) -> None:
        from duckdb.sqltypes import INTEGER, VARCHAR

        ret = duckdb.list_type(duckdb.struct_type({
            "run": VARCHAR, "split": VARCHAR, "example_id": duckdb.sqltypes.BIGINT,
            "position": INTEGER, "stack": VARCHAR, "layer": INTEGER, "neuron": INTEGER,
            "value": duckdb.sqltypes.FLOAT, "slot": VARCHAR}))
        self.con.create_function(
            "_nd_tensor", self._tensor_udf,
            [VARCHAR, VARCHAR, VARCHAR, VARCHAR, INTEGER, duckdb.list_type(INTEGER)], ret,
            type="arrow", null_handling="special", side_effects=True)
        for name in ("activations", "gradients"):
            self.con.execute(TENSOR_MACRO.format(name=name))
        try:
            from neurondb.query.macros import MACROS
        except ImportError:
            MACROS = []
        for sql in MACROS:
            try:
                self.con.execute(sql)
            except duckdb.Error:
                continue  # a macro over a result view that this store does not have yet

    # -- the tensor UDF -----------------------------------------------------------------
    def _tensor_udf(self, kind, run, split, stack, layer, neurons):
        out = []
        for i in range(len(kind)):
            out.append(self._tensor_rows(
                kind[i].as_py(), run[i].as_py(), split[i].as_py(), stack[i].as_py(),
                layer[i].as_py(), neurons[i].as_py()))
        offsets = np.cumsum([0] + [len(a) for a in out]).astype(np.int32)
        values = pa.concat_arrays(out) if out else pa.array([], TENSOR_ROW)
        return pa.ListArray.from_arrays(pa.array(offsets), values)

    def _tensor_rows(self, kind: str, run, split, stack, layer, neurons) -> pa.StructArray:
        st = self.store
        runs = [i for i in st.runs() if i.mode == "tokens" and (run is None or i.run == run)
                and (split is None or i.split == split)]
        if run is not None and not runs:
            st.run(run)  # raises the one-line "not in the store" error
            raise StoreError(f"run {run!r} holds running statistics, not per-token {kind}")
        if kind == "gradients":
            runs = [i for i in runs if i.grad]
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
        try:
            stmts = self.con.extract_statements(query)
        except duckdb.Error as e:
            raise QueryError(f"SQL error: {str(e).splitlines()[0]}") from e
        if not stmts:
            raise QueryError("empty query")
        for s in stmts:
            kind = str(s.type).rsplit(".", 1)[-1]
            if kind not in ALLOWED:
                raise QueryError(f"{kind} statements are not allowed: the query connection is "
                                 "read-only (SELECT only); write results with the neurondb API")

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        self.check(query)
        try:
            return self.con.sql(query)
        except duckdb.Error as e:
            raise QueryError(_clean(str(e))) from e

    def arrow(self, query: str) -> pa.Table:
        """Run a query to completion as an Arrow table; errors become one-line QueryErrors."""
        rel = self.sql(query)
        try:
            t = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
            return t.read_all() if hasattr(t, "read_all") else t
        except duckdb.Error as e:
            raise QueryError(_clean(str(e))) from e

    def close(self) -> None:
        self.con.close()
        _OPEN.discard(self)


def _clean(msg: str) -> str:
    """DuckDB wraps errors raised in the tensor UDF; keep the neurondb message only."""
    first = msg.splitlines()[0]
    for marker in ("StoreError: ", "QueryError: ", "NeurondbError: "):
        if marker in first:
            return first.split(marker, 1)[1]
    return f"SQL error: {first}"


def describe_views(con: QueryConnection) -> dict[str, list[str]]:
    """View name -> column names (for `neurondb info`)."""
    rows = con.con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
    out = {}
    for name, _ in rows:
        if name.startswith("_empty_"):
            continue
        cols = [c[0] for c in con.con.execute(f"DESCRIBE {name}").fetchall()]
        out[name] = cols
    return out


