"""``/rankings/{name}``: a ranking as a sortable, filterable table, with its figures."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from neurondb.report.summaries import layer_scores
from neurondb.serve import params as P
from neurondb.serve import svg
from neurondb.serve.context import ServeContext
from neurondb.serve.errors import NotFoundError

PARAMS = ("layer", "stack", "sort", "order", "page", "per")
SORTABLE = ("score", "rank", "layer", "neuron", "slot", "accuracy", "excitatory")
COLUMNS = ("stack", "layer", "neuron", "score", "rank", "slot", "accuracy", "excitatory",
           "class")
#: Top fraction of the model whose layers the histogram counts.
TOP_FRACTION = 0.01


def sort_frame(df: pd.DataFrame, key: str, ascending: bool) -> pd.DataFrame:
    """Sort by ``key`` (NaN last), ties by (stack, layer, neuron)."""
    return df.sort_values([key, "stack", "layer", "neuron"], ascending=[ascending, True, True, True],
                          na_position="last", kind="stable")


def layer_figures(df: pd.DataFrame, name: str) -> dict:
    """Per layer: the max score and how many of the model's top 1% it holds (SVG bars)."""
    ls = layer_scores(df, TOP_FRACTION)
    multi = ls["stack"].nunique() > 1
    labels = [f"{s[:3]}{la}" if multi else str(la) for s, la in zip(ls["stack"], ls["layer"])]
    n_top = int(ls["n_top"].sum())
    return {"top": svg.bars(labels, ls["n_top"], f"{name}: layers of the top {n_top} neurons",
                            f"layer (of the model's top {n_top} neurons)"),
            "max": svg.bars(labels, ls["max"], f"{name}: best score per layer",
                            "layer (best score)"),
            "table": ls.to_dict("records")}


def ranking_page(ctx: ServeContext, name: str, query: Mapping[str, str]) -> dict:
    """The ranking page's data (404 for an unknown ranking; 400 for bad parameters)."""
    P.known(query, PARAMS)
    idx = ctx.results.ranking(name)
    if idx is None:
        have = ", ".join(r.result.name for r in ctx.results.rankings()) or "none"
        raise NotFoundError(f"the store has no ranking {name!r} (rankings: {have})")
    df = idx.frame
    stacks = sorted(df["stack"].astype(str).unique())
    stack = P.choice(query, "stack", stacks)
    n_layers = int(df["layer"].max()) + 1 if len(df) else 0
    layer = P.optional_int(query, "layer", 0, max(n_layers - 1, 0))
    sortable = [c for c in SORTABLE if c in df.columns]
    key = P.choice(query, "sort", sortable, "score")
    order = P.choice(query, "order", ("asc", "desc"),
                     "asc" if key in ("rank", "layer", "neuron", "slot") else "desc")
    sel = _filtered(df, stack, layer)
    n_match = len(sel)
    per = P.integer(query, "per", 100, 10, 1000)
    pages = max(1, -(-len(sel) // per))
    page = P.integer(query, "page", 1, 1, pages)
    sel = sort_frame(sel, key, order == "asc").iloc[(page - 1) * per: page * per]
    cols = [c for c in COLUMNS if c in df.columns]
    scores = df["score"].to_numpy(np.float64)
    finite = scores[np.isfinite(scores)]
    hist = (svg.histogram(*_hist(finite), f"{name}: scores", "score") if finite.size else None)
    return {"name": name, "meta": idx.result.meta, "scope": idx.scope,
            "rows": sel[cols].to_dict("records"), "columns": cols, "n": len(df), "n_match": n_match,
            "page": page, "pages": pages, "per": per, "sort": key, "order": order,
            "sortable": sortable, "layer": layer, "stack": stack, "stacks": stacks,
            "n_layers": n_layers, "figures": layer_figures(df, name), "hist": hist}


def _filtered(df: pd.DataFrame, stack: str | None, layer: int | None) -> pd.DataFrame:
    if stack is not None:
        df = df[df["stack"].astype(str) == stack]
    if layer is not None:
        df = df[df["layer"] == layer]
    return df


def _hist(x: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = float(x.min()), float(x.max())
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi if hi > lo else lo + 1))
    return edges, counts
