"""Queries over a store: the DuckDB connection and the analyses of SPEC §2–§4.

Every analysis reads a store (never the model), returns a pandas DataFrame and writes its
result as ``results/<table>/<name>.parquet``, which SQL sees as the view ``<table>``:

- :func:`predictivity` — skill-neuron predictivity ranking (§2);
- :func:`attribution`, :func:`random_ranking` — attribution and its baselines (§4);
- :func:`rank` — either of the above by method name;
- :func:`compare_rankings`, :func:`correlate` — Spearman / top-k overlap per layer (§3);
- :func:`activated_overlap` — activated-neuron overlap "ON" between runs (§3);
- :func:`make_mask` — top fraction of a ranking as a mask table and mask file;
- :func:`top_examples` — where one neuron fires most;
- :func:`running_stats_from_tokens` — the running statistics of a tokens run.

Each analysis takes a typed request (:class:`RankRequest`, :class:`CorrelateRequest`,
:class:`OverlapRequest`, :class:`MaskRequest`, :class:`TopRequest`, in
:mod:`neurondb.query.requests`), validated once, or keyword arguments that map one to one onto
its fields: ``rank(store, RankRequest(method="random", seed=3))`` is
``rank(store, method="random", seed=3)``.
"""

from __future__ import annotations

from neurondb.callable_module import lazy_exports

# names are imported on first use, so that opening a store and running SQL (which imports
# neurondb.query.connection, and so this package) does not import pandas and SciPy
_EXPORTS = {
    "rank": "neurondb.query.api",
    "attribution": "neurondb.query.attribution",
    "random_ranking": "neurondb.query.attribution",
    "load_baseline": "neurondb.query.baseline",
    "running_stats_from_tokens": "neurondb.query.baseline",
    "compare_rankings": "neurondb.query.compare",
    "correlate": "neurondb.query.compare",
    "QueryError": "neurondb.query.errors",
    "make_mask": "neurondb.query.masks",
    "activated_overlap": "neurondb.query.overlap",
    "predictivity": "neurondb.query.predictivity",
    "load_ranking": "neurondb.query.rankings",
    "list_results": "neurondb.query.results",
    "read_result": "neurondb.query.results",
    "top_examples": "neurondb.query.top",
    "RankRequest": "neurondb.query.requests",
    "CorrelateRequest": "neurondb.query.requests",
    "OverlapRequest": "neurondb.query.requests",
    "MaskRequest": "neurondb.query.requests",
    "TopRequest": "neurondb.query.requests",
}

lazy_exports(__name__, _EXPORTS)
