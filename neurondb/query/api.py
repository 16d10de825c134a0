"""``rank(store, request)``: one entry point for every ranking method (the CLI's ``rank``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from neurondb.query.requests import METHODS, RankRequest, as_request  # noqa: F401
from neurondb.store.reader import Store


def rank(store: Store | str | Path, request: RankRequest | str | None = None, /,
         **kw) -> pd.DataFrame:
    """Rank neurons and write the ranking: ``rank(store, RankRequest(...))``, or
    ``rank(store, method=..., **fields)`` with the fields of
    :class:`~neurondb.query.requests.RankRequest` as keyword arguments (the method may also be
    the second positional argument).

    ``predictivity`` (default): :func:`neurondb.query.predictivity.predictivity` (``eval``,
    ``train``, ``multiclass``, ``combine_order``, ``balance_seed``, ``check_exactness``, ...;
    see ``docs/CONVENTIONS.md`` for the reference code's conventions and the defaults);
    ``attribution``/``activation``/``gradient``: :func:`neurondb.query.attribution.attribution`
    (``runs``, ...); ``random``: :func:`neurondb.query.attribution.random_ranking` (``seed``).
    """
    if request is not None and not isinstance(request, (RankRequest, str)):
        raise TypeError(f"rank() takes a RankRequest or a method name, not "
                        f"{type(request).__name__}")
    r = as_request(RankRequest, kw, method=request)
    if r.family == "predictivity":
        from neurondb.query.predictivity import run_predictivity

        return run_predictivity(store, r)
    if r.family == "attribution":
        from neurondb.query.attribution import run_attribution

        return run_attribution(store, r)
    from neurondb.query.attribution import run_random

    return run_random(store, r)
