"""The app's endpoints: each validates its parameters, gathers its page's data under the
store lock, and renders a template (or JSON / CSV for the SQL API). All are GET-only."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from neurondb.errors import NeurondbError, QueryError, one_line
from neurondb.serve import params as P
from neurondb.serve.context import ServeContext
from neurondb.serve.errors import BadRequestError
from neurondb.serve.pages import compare, neuron, overview, rankings, runs, sql

STATIC = Path(__file__).parent / "static"
SQL_PARAMS = ("q", "limit")


class Pages:
    """The endpoints of one app, bound to its context and template environment."""

    def __init__(self, ctx: ServeContext, env):
        self.ctx = ctx
        self.env = env

    def render(self, template: str, data: dict, status: int = 200) -> HTMLResponse:
        store = self.ctx.store
        page = self.env.get_template(template).render(
            **data, store_name=", ".join(p.name for p in store.roots),
            model=store.manifest.model.name)
        return HTMLResponse(page, status_code=status)

    def page(self, template: str, gather: Callable[[Request], dict]) -> Callable:
        """A sync endpoint (Starlette runs it in a worker thread) rendering ``template``."""
        def endpoint(request: Request) -> HTMLResponse:
            with self.ctx.locked():
                data = gather(request)
            return self.render(template, data)
        return endpoint

    def error(self, status: int, message: str) -> HTMLResponse:
        titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed"}
        return self.render("error.html", {"status": status, "message": one_line(message),
                                          "title": titles.get(status, "Error")}, status)

    # -- SQL ---------------------------------------------------------------------------
    def _sql_args(self, request: Request, max_rows: int) -> tuple[str | None, int]:
        q = request.query_params
        P.known(q, SQL_PARAMS)
        return P.text(q, "q"), P.integer(q, "limit", min(sql.DEFAULT_ROWS, max_rows), 1,
                                         max_rows)

    def sql_page(self, request: Request) -> HTMLResponse:
        query, limit = self._sql_args(request, sql.MAX_ROWS)
        data = {"q": query or "", "limit": limit, "result": None, "error": None,
                "views": sql.views(self.ctx), "examples": EXAMPLES}
        if query is None:
            return self.render("sql.html", data)
        try:
            data["result"] = sql.run_sql(self.ctx, query, limit)
        except QueryError as e:
            data["error"] = one_line(str(e))
            return self.render("sql.html", data, 400)
        return self.render("sql.html", data)

    def sql_api(self, request: Request) -> JSONResponse:
        try:
            query, limit = self._sql_args(request, sql.MAX_ROWS)
            if query is None:
                raise BadRequestError("parameter 'q' (the SQL) is required")
            r = sql.run_sql(self.ctx, query, limit)
        except NeurondbError as e:
            return JSONResponse({"error": one_line(str(e))}, status_code=400)
        return JSONResponse({"columns": r.columns, "rows": r.rows, "truncated": r.truncated,
                             "seconds": round(r.seconds, 4)})

    def sql_csv(self, request: Request) -> Response:
        query, limit = self._sql_args(request, sql.CSV_ROWS)
        if query is None:
            raise BadRequestError("parameter 'q' (the SQL) is required")
        r = sql.run_sql(self.ctx, query, limit if "limit" in request.query_params
                        else sql.CSV_ROWS)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(r.columns)
        w.writerows(r.rows)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": 'attachment; filename="query.csv"'})

    def neuron_jump(self, request: Request) -> RedirectResponse:
        """``/neurons?stack=&layer=&neuron=[&run=]``: the jump form's redirect (303) to the
        neuron's page; 400 for a malformed number, 404 for a neuron the model lacks."""
        q = request.query_params
        P.known(q, ("stack", "layer", "neuron", "run"))
        with self.ctx.locked():
            stack = P.text(q, "stack", self.ctx.store.shape.stacks[0])
            layer = P.integer(q, "layer", 0, 0, 10**6)
            index = P.integer(q, "neuron", 0, 0, 10**8)
            key = neuron.locate(self.ctx, stack, str(layer), str(index))
        run = P.text(q, "run")
        url = f"/neurons/{quote(key[0], safe='')}/{key[1]}/{key[2]}"
        return RedirectResponse(url + (f"?run={quote(run, safe='')}" if run else ""), 303)

    # -- routes ------------------------------------------------------------------------
    def routes(self) -> list:
        ctx = self.ctx
        get = ["GET"]
        pp = request_path
        return [
            Route("/", self.page("overview.html", lambda r: overview.overview(ctx)), methods=get),
            Route("/runs/{run}", self.page("run.html", lambda r: runs.run_page(
                ctx, pp(r, "run"), r.query_params)), methods=get),
            Route("/rankings/{name}", self.page("ranking.html", lambda r: rankings.ranking_page(
                ctx, pp(r, "name"), r.query_params)), methods=get),
            Route("/neurons", self.neuron_jump, methods=get),
            Route("/neurons/{stack}/{layer}/{neuron}", self.page(
                "neuron.html", lambda r: neuron.neuron_page(
                    ctx, pp(r, "stack"), pp(r, "layer"), pp(r, "neuron"), r.query_params)),
                methods=get),
            Route("/compare", self.page("compare.html", lambda r: compare.compare_page(
                ctx, r.query_params)), methods=get),
            Route("/sql", self.sql_page, methods=get),
            Route("/sql.csv", self.sql_csv, methods=get),
            Route("/api/sql", self.sql_api, methods=get),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ]


def request_path(request: Request, name: str) -> str:
    """A path parameter as text (validated by the page)."""
    return str(request.path_params[name])


EXAMPLES = (
    ("Runs", "SELECT run, split, mode, n_examples, accuracy FROM runs"),
    ("Accuracy per label", "SELECT run, label, count(*) AS n, avg(correct::INT) AS accuracy "
                           "FROM examples GROUP BY ALL ORDER BY ALL"),
    ("Best neurons", "SELECT name, stack, layer, neuron, score FROM rankings "
                     "ORDER BY score DESC LIMIT 20"),
)
