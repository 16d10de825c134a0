"""``/``: the store's model, its runs and its results."""

from __future__ import annotations

from dataclasses import dataclass

from neurondb.report.collect import StoreSummary, store_summary
from neurondb.serve.context import ServeContext
from neurondb.store.kinds import RESULT_KINDS


@dataclass
class ResultLink:
    """One result file: its kind, name, rows, and the page that shows it."""

    table: str
    name: str
    rows: int
    href: str


def result_href(table: str, name: str) -> str:
    """Rankings have their own page; other results open in the SQL console."""
    from urllib.parse import quote

    if table == "rankings":
        return f"/rankings/{quote(name, safe='')}"
    sql = f"SELECT * FROM \"{table}\" WHERE name = '{name.replace(chr(39), chr(39) * 2)}'"
    return f"/sql?q={quote(sql, safe='')}"


def mode_label(mode: str) -> str:
    """How the overview names a run's mode."""
    return {"tokens": "per-token", "stats": "running statistics",
            "profile": "profile"}.get(mode, mode)


def overview(ctx: ServeContext) -> dict:
    """The overview page's data: ``summary``, ``results`` (links by kind), ``problems``."""
    summary: StoreSummary = store_summary(ctx.store)
    links: dict[str, list[ResultLink]] = {}
    problems: list[str] = list(ctx.store.left_out)
    for table in RESULT_KINDS:
        for r in ctx.results.tables(table):
            links.setdefault(table, []).append(
                ResultLink(table, r.name, len(r.frame), result_href(table, r.name)))
        problems += ctx.results.problems(table)
    return {"summary": summary, "results": links, "problems": problems,
            "mode_label": mode_label, "first_neuron": first_neuron(ctx)}


def first_neuron(ctx: ServeContext) -> str:
    """The neuron page the overview links to first: the top of the first ranking, else 0/0/0."""
    ranks = ctx.results.rankings()
    stack = ctx.store.shape.stacks[0]
    if ranks:
        df = ranks[0].frame
        best = df.iloc[int(df["score"].fillna(-float("inf")).to_numpy().argmax())]
        return f"/neurons/{best['stack']}/{int(best['layer'])}/{int(best['neuron'])}"
    return f"/neurons/{stack}/0/0"
