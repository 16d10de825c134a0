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
"""

from __future__ import annotations

from neurondb.query.api import rank
from neurondb.query.attribution import attribution, random_ranking
from neurondb.query.baseline import load_baseline, running_stats_from_tokens
from neurondb.query.compare import compare_rankings, correlate
from neurondb.query.errors import QueryError
from neurondb.query.masks import make_mask
from neurondb.query.overlap import activated_overlap
from neurondb.query.predictivity import predictivity
from neurondb.query.rankings import load_ranking
from neurondb.query.results import list_results, read_result
from neurondb.query.top import top_examples

__all__ = [
    "QueryError", "activated_overlap", "attribution", "compare_rankings", "correlate",
    "list_results", "load_baseline", "load_ranking", "make_mask", "predictivity",
    "random_ranking", "rank", "read_result", "running_stats_from_tokens", "top_examples",
]
