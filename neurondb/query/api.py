"""``rank(store, method=...)``: one entry point for every ranking method (the CLI's ``rank``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from neurondb.errors import UsageError
from neurondb.store.reader import Store

METHODS = ("predictivity", "attribution", "activation", "gradient", "random")


def rank(store: Store | str | Path, method: str = "predictivity", **kw) -> pd.DataFrame:
    """Rank neurons by ``method`` and write the ranking; keyword arguments go to the method.

    ``predictivity``: :func:`neurondb.query.predictivity.predictivity` (``eval``, ``train``,
    ``multiclass``, ``combine_order``, ``balance_seed``, ``check_exactness``, ...; see
    ``docs/CONVENTIONS.md`` for the reference code's conventions and the defaults);
    ``attribution``/``activation``/``gradient``: :func:`neurondb.query.attribution.attribution`
    (``runs``, ...); ``random``: :func:`neurondb.query.attribution.random_ranking` (``seed``).
    """
    if method == "predictivity":
        from neurondb.query.predictivity import predictivity

        return predictivity(store, **kw)
    if method in ("attribution", "activation", "gradient"):
        from neurondb.query.attribution import attribution

        return attribution(store, method=method, **kw)
    if method == "random":
        from neurondb.query.attribution import random_ranking

        return random_ranking(store, **kw)
    raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
