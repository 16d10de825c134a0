"""DuckDB table macros for the questions people ask of a store's results.

The connection (:mod:`neurondb.query.connection`) runs each string of :data:`MACROS` after
creating its views (``runs, examples, tokens, rows``, the ``activations(...)`` table macro, and
one view per ``results/<table>``); a macro whose views do not exist yet (no ranking written,
say) fails to create and is skipped, so each string holds exactly one macro.

==========================================================  ==========================================
``skill_neurons(ranking_name, fraction := 0.05)``           per-layer top fraction of a ranking
``top_neurons(ranking_name, k := 20)``                      the k best-scoring neurons of the model
``skill_layer_histogram(ranking_name, fraction := 0.05)``   layers of the global top fraction
``skill_neurons_only_in(ranking_a, ranking_b, fraction)``   per-layer top of A that are not top of B
``neuron_scores(stack_name, layer_idx, neuron_idx)``        one neuron's score and rank in every ranking
``top_examples(run_name, stack_name, layer_idx, neuron_idx, k := 10)``  where a neuron fires most
``ranking_correlation(ranking_a, ranking_b)``               per-layer Spearman / top-k overlap
``mask_neurons(mask_name)`` / ``mask_layer_histogram(mask_name)``       a mask and its layer counts
``top_contexts(run_name, stack_name, layer_idx, neuron_idx, k := 10, width := 5)``  a profile
  run's top-k tokens of a neuron with ``width`` tokens of context on each side
==========================================================  ==========================================

A ranking, mask or correlation name that the store does not hold is an error naming the ones
it holds (``no ranking named 'x'; rankings in this store: a, b``), not an empty table; through
the CLI and :meth:`QueryConnection.arrow` it is a one-line ``QueryError``. The check runs when
the rows are fetched (a DuckDB relation is lazy).

Ties are broken like the Python API: by score, then ``neuron`` (and ``stack, layer`` globally);
a fraction selects ``floor(fraction * n)`` neurons (the references' ``int(p * d)``; see
``neurondb.query.rankings.fraction_count``).
"""

from __future__ import annotations


def _known(param: str, view: str, what: str, fix: str) -> str:
    """SQL scalar subquery: ``param`` when some row of ``view`` has ``name = param``, otherwise
    a DuckDB ``error()`` naming the unknown name and the valid ones (``what`` is the singular
    noun, ``fix`` how to make one). Used in place of ``param`` in a macro's ``WHERE``, so an
    unknown name fails instead of returning an empty table; the subquery is one aggregate row,
    so it fails even when the view has no rows."""
    return (f"(SELECT CASE WHEN count(*) FILTER (WHERE name = {param}) > 0 THEN {param} "
            f"ELSE error('no {what} named ' || coalesce('''' || {param} || '''', 'NULL')"
            f" || '; {what}s in this store: ' || coalesce(string_agg(DISTINCT name, ', ' "
            f"ORDER BY name), '(none)') || ' ({fix})') END FROM {view})")


def _ranking(param: str) -> str:
    return _known(param, "rankings", "ranking", "make one with neurondb rank")


def _mask(param: str) -> str:
    return _known(param, "masks", "mask", "make one with neurondb mask")


def _pair(param_a: str, param_b: str) -> str:
    """Like :func:`_known` for a correlation's ranking pair ``(a, b)``: ``param_a`` when the
    pair was correlated, otherwise an error listing the correlated pairs."""
    return (f"(SELECT CASE WHEN count(*) FILTER (WHERE a = {param_a} AND b = {param_b}) > 0 "
            f"THEN {param_a} ELSE error('no correlation of rankings ' || "
            f"coalesce('''' || {param_a} || '''', 'NULL') || ' and ' || "
            f"coalesce('''' || {param_b} || '''', 'NULL') || '; correlated pairs (a, b): ' "
            f"|| coalesce(string_agg(DISTINCT a || ', ' || b, '; ' ORDER BY a || ', ' || b), "
            f"'(none)') || ' (make one with neurondb correlate)') END FROM correlations)")


SKILL_NEURONS = f"""
CREATE OR REPLACE MACRO skill_neurons(ranking_name, fraction := 0.05) AS TABLE
SELECT * EXCLUDE (n_layer) FROM (
    SELECT r.*,
           row_number() OVER (PARTITION BY r.stack, r.layer
                              ORDER BY r.score DESC NULLS LAST, r.neuron) AS layer_rank,
           count(*) OVER (PARTITION BY r.stack, r.layer) AS n_layer
    FROM rankings r WHERE r.name = {_ranking("ranking_name")})
WHERE layer_rank <= floor(fraction * n_layer)
ORDER BY stack, layer, layer_rank
"""

TOP_NEURONS = f"""
CREATE OR REPLACE MACRO top_neurons(ranking_name, k := 20) AS TABLE
SELECT * FROM rankings WHERE name = {_ranking("ranking_name")}
ORDER BY score DESC NULLS LAST, stack, layer, neuron
LIMIT k
"""

SKILL_LAYER_HISTOGRAM = f"""
CREATE OR REPLACE MACRO skill_layer_histogram(ranking_name, fraction := 0.05) AS TABLE
WITH r AS (
    SELECT stack, layer,
           row_number() OVER (ORDER BY score DESC NULLS LAST, stack, layer, neuron) AS pos,
           count(*) OVER () AS total
    FROM rankings WHERE name = {_ranking("ranking_name")}),
sel AS (SELECT stack, layer FROM r WHERE pos <= floor(fraction * total)),
lay AS (SELECT stack, layer, count(*) AS width FROM rankings WHERE name = ranking_name
        GROUP BY stack, layer)
SELECT lay.stack, lay.layer, lay.width, count(sel.layer) AS n_skill,
       count(sel.layer) / greatest((SELECT count(*) FROM sel), 1) AS share
FROM lay LEFT JOIN sel ON sel.stack = lay.stack AND sel.layer = lay.layer
GROUP BY lay.stack, lay.layer, lay.width
ORDER BY lay.stack, lay.layer
"""

SKILL_NEURONS_ONLY_IN = f"""
CREATE OR REPLACE MACRO skill_neurons_only_in(ranking_a, ranking_b, fraction := 0.05) AS TABLE
WITH ranked AS (
    SELECT name, stack, layer, neuron, score,
           row_number() OVER (PARTITION BY name, stack, layer
                              ORDER BY score DESC NULLS LAST, neuron) AS layer_rank,
           count(*) OVER (PARTITION BY name, stack, layer) AS n_layer
    FROM rankings WHERE name = {_ranking("ranking_a")} OR name = {_ranking("ranking_b")}),
top AS (SELECT * FROM ranked WHERE layer_rank <= floor(fraction * n_layer)),
ta AS (SELECT * FROM top WHERE name = ranking_a),
tb AS (SELECT * FROM top WHERE name = ranking_b),
rb AS (SELECT * FROM ranked WHERE name = ranking_b)
SELECT ta.stack, ta.layer, ta.neuron, ta.score AS score_a, ta.layer_rank AS layer_rank_a,
       rb.score AS score_b, rb.layer_rank AS layer_rank_b
FROM ta
LEFT JOIN tb ON tb.stack = ta.stack AND tb.layer = ta.layer AND tb.neuron = ta.neuron
LEFT JOIN rb ON rb.stack = ta.stack AND rb.layer = ta.layer AND rb.neuron = ta.neuron
WHERE tb.neuron IS NULL
ORDER BY ta.stack, ta.layer, ta.layer_rank
"""

NEURON_SCORES = """
CREATE OR REPLACE MACRO neuron_scores(stack_name, layer_idx, neuron_idx) AS TABLE
SELECT name, method, score, rank, scope FROM rankings
WHERE stack = stack_name AND layer = layer_idx AND neuron = neuron_idx
ORDER BY name
"""

TOP_EXAMPLES = """
CREATE OR REPLACE MACRO top_examples(run_name, stack_name, layer_idx, neuron_idx, k := 10) AS TABLE
WITH best AS (
    SELECT example_id, max(value) AS value,
           arg_max(struct_pack(position := position, slot := slot), value) AS at
    FROM activations(run := run_name, stack := stack_name, layer := layer_idx,
                     neuron := neuron_idx)
    GROUP BY example_id)
SELECT b.example_id, b.value, b.at.position AS position, b.at.slot AS slot, e.label, e.pred,
       e.text
FROM best b
LEFT JOIN examples e ON e.run = run_name AND e.example_id = b.example_id
ORDER BY b.value DESC, b.example_id
LIMIT k
"""

RANKING_CORRELATION = f"""
CREATE OR REPLACE MACRO ranking_correlation(ranking_a, ranking_b) AS TABLE
SELECT stack, layer, spearman, p_value, k, topk_overlap, name AS correlation
FROM correlations WHERE a = {_pair("ranking_a", "ranking_b")} AND b = ranking_b
ORDER BY name, stack, layer
"""

MASK_NEURONS = f"""
CREATE OR REPLACE MACRO mask_neurons(mask_name) AS TABLE
SELECT stack, layer, neuron, score FROM masks WHERE name = {_mask("mask_name")}
ORDER BY stack, layer, neuron
"""

MASK_LAYER_HISTOGRAM = f"""
CREATE OR REPLACE MACRO mask_layer_histogram(mask_name) AS TABLE
SELECT stack, layer, count(*) AS n_neurons FROM masks WHERE name = {_mask("mask_name")}
GROUP BY stack, layer ORDER BY stack, layer
"""

def _profiled(run: str, stack: str, layer: str, neuron: str) -> str:
    """Like :func:`_known` for a neuron of a profile run: ``run`` when ``neuron_profile`` has
    the neuron, otherwise an error naming the profile runs."""
    return (f"(SELECT CASE WHEN count(*) FILTER (WHERE run = {run} AND stack = {stack} AND "
            f"layer = {layer} AND neuron = {neuron}) > 0 THEN {run} ELSE error('no profile of "
            f"neuron ' || coalesce({stack}, 'NULL') || ' layer ' || coalesce(CAST({layer} AS "
            f"VARCHAR), 'NULL') || ' neuron ' || coalesce(CAST({neuron} AS VARCHAR), 'NULL') || "
            f"' in run ' || coalesce('''' || {run} || '''', 'NULL') || '; profile runs in this "
            f"store: ' || coalesce(string_agg(DISTINCT run, ', ' ORDER BY run), '(none)') || "
            f"' (make one with neurondb extract --profile)') END FROM neuron_profile)")


TOP_CONTEXTS = f"""
CREATE OR REPLACE MACRO top_contexts(run_name, stack_name, layer_idx, neuron_idx, k := 10,
                                     width := 5) AS TABLE
WITH t AS (
    SELECT * FROM neuron_top
    WHERE run = {_profiled("run_name", "stack_name", "layer_idx", "neuron_idx")}
      AND stack = stack_name AND layer = layer_idx AND neuron = neuron_idx
      AND kind = 'top' AND rank <= CASE WHEN k < 1 THEN
          error('top_contexts: k must be at least 1, not ' || k) ELSE k END
      AND CASE WHEN width < 0 THEN error('top_contexts: width must be 0 or more, not ' || width)
               ELSE true END),
ctx AS (
    SELECT t.rank,
           string_agg(CASE WHEN tok.position = t.position THEN '[[' || tok.token || ']]'
                           ELSE tok.token END, ' ' ORDER BY tok.position) AS context,
           max(CASE WHEN tok.position = t.position THEN tok.token END) AS token
    FROM t JOIN tokens tok ON tok.run = t.run AND tok.example_id = t.example_id
         AND tok.stack = t.stack AND tok.position BETWEEN t.position - width
                                                      AND t.position + width
    GROUP BY t.rank)
SELECT t.rank, t.value, t.example_id, t.position, ctx.token, ctx.context, e.label, e.text
FROM t LEFT JOIN ctx ON ctx.rank = t.rank
LEFT JOIN examples e ON e.run = t.run AND e.example_id = t.example_id
ORDER BY t.rank
"""

MACROS: list[str] = [
    SKILL_NEURONS.strip(), TOP_NEURONS.strip(), SKILL_LAYER_HISTOGRAM.strip(),
    SKILL_NEURONS_ONLY_IN.strip(), NEURON_SCORES.strip(), TOP_EXAMPLES.strip(),
    RANKING_CORRELATION.strip(), MASK_NEURONS.strip(), MASK_LAYER_HISTOGRAM.strip(),
    TOP_CONTEXTS.strip(),
]
