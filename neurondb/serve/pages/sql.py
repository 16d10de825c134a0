"""``/sql`` and ``/api/sql``: read-only SQL through the store's sandboxed connection.

Statements go through :class:`neurondb.query.connection.QueryConnection` (the store's own
``connection``, as ``neurondb query`` does): only reading statements run, DuckDB's external
access is off and its configuration locked. The console adds a row limit and a time limit: a
timer interrupts the connection (``duckdb.DuckDBPyConnection.interrupt``) when the query runs
too long.
"""

from __future__ import annotations

import datetime
import decimal
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from neurondb.errors import QueryError
from neurondb.query.connection import describe_views
from neurondb.serve.context import ServeContext

#: Rows a console page shows by default and at most, rows a CSV download holds at most.
DEFAULT_ROWS, MAX_ROWS, CSV_ROWS = 200, 5_000, 100_000
#: Seconds a console query may run.
TIME_LIMIT = 10.0


@dataclass
class SqlResult:
    """Columns, rows (JSON-safe values), whether rows were cut at the limit, seconds taken."""

    columns: list[str]
    rows: list[list]
    truncated: bool
    seconds: float


def jsonable(v):
    """A value JSON can carry: numbers (NaN/inf as None), text, lists, dicts."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, np.generic):
        return jsonable(v.item())
    if isinstance(v, decimal.Decimal):
        return jsonable(float(v))
    if isinstance(v, (datetime.date, datetime.datetime, datetime.time, datetime.timedelta)):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [jsonable(x) for x in v]
    return str(v)


def run_sql(ctx: ServeContext, query: str, limit: int = DEFAULT_ROWS,
            seconds: float = TIME_LIMIT) -> SqlResult:
    """Run one reading statement; at most ``limit`` rows, at most ``seconds`` seconds.

    Every failure is a one-line :class:`QueryError` (refused statement, SQL error, time limit).
    """
    with ctx.locked():
        con = ctx.store.connection
        fired = threading.Event()

        def stop() -> None:
            fired.set()
            con.con.interrupt()

        timer = threading.Timer(seconds, stop)
        t0 = time.perf_counter()
        timer.start()
        try:
            rel = con.sql(query)
            if rel is None:
                raise QueryError("the statement returned nothing: give a SELECT")
            columns = list(rel.columns)
            rows = rel.limit(limit + 1).fetchall()
        except QueryError as e:
            if fired.is_set():
                raise QueryError(f"the query ran past the time limit of {seconds:g} s and was "
                                 "stopped; add a LIMIT or a WHERE") from e
            raise
        finally:
            timer.cancel()
    return SqlResult(columns, [[jsonable(v) for v in r] for r in rows[:limit]],
                     len(rows) > limit, time.perf_counter() - t0)


def views(ctx: ServeContext) -> dict[str, list[str]]:
    """The connection's views and their columns (the console's reference panel)."""
    with ctx.locked():
        return describe_views(ctx.store.connection)
