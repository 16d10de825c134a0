"""``/compare?rankings=A,B``: Spearman per layer and a scatter of the two rankings' scores."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from neurondb.query.compare import compare_vectors
from neurondb.query.rankings import check_same_shape, ranking_vectors
from neurondb.serve import params as P
from neurondb.serve import svg
from neurondb.serve.context import ServeContext
from neurondb.serve.errors import BadRequestError, NotFoundError

PARAMS = ("rankings", "top")


def _layer_labels(table) -> list[str]:
    multi = table["stack"].nunique() > 1
    return [f"{s[:3]}{la}" if multi else str(la) for s, la in zip(table["stack"], table["layer"])]


def compare_page(ctx: ServeContext, query: Mapping[str, str]) -> dict:
    """Two rankings compared; without ``rankings`` only the form (with the names to pick)."""
    P.known(query, PARAMS)
    names = [r.result.name for r in ctx.results.rankings()]
    spec = P.text(query, "rankings")
    top = P.number(query, "top", 0.05, 0.001, 1.0)
    page = {"names": names, "a": None, "b": None, "top": top}
    if spec is None:
        return page
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(parts):
        raise BadRequestError("parameter 'rankings' must name two rankings: A,B")
    for p in parts:
        if p not in names:
            raise NotFoundError(f"the store has no ranking {p!r} (rankings: "
                                f"{', '.join(names) or 'none'})")
    a, b = (ctx.results.ranking(p) for p in parts)
    check_same_shape(parts[0], a.frame, parts[1], b.frame)
    va, vb = ranking_vectors(a.frame), ranking_vectors(b.frame)
    table = compare_vectors(va, vb, fraction=top)
    x = np.concatenate([va[k] for k in va])
    y = np.concatenate([vb[k] for k in va])
    page.update(a=parts[0], b=parts[1], table=table.to_dict("records"),
                mean_spearman=float(table["spearman"].mean()),
                mean_overlap=float(table["topk_overlap"].mean()),
                scatter=svg.scatter(x, y, f"{parts[0]} against {parts[1]}",
                                    f"score in {parts[0]}", f"score in {parts[1]}"),
                rho=svg.signed_bars(_layer_labels(table), table["spearman"],
                                    "Spearman per layer", "layer (Spearman's rho, -1 to 1)"))
    return page
