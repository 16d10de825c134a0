"""The registry of result kinds: one entry per ``results/<table>/`` directory.

The query connection (which views to create, quoted), ``verify`` (which files are results),
the writer (names, messages) and the report (which section draws a table) all read it here.
A new kind of result is one :func:`register` call.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResultKind:
    """One kind of result table.

    ``table``: the directory under ``results/`` and the SQL view's name (always quoted);
    ``singular``: how messages name one result; ``hint``: the command that makes one;
    ``required``: the columns the report needs to draw it; ``section``: the report section
    that shows it (``None``: not drawn).
    """

    table: str
    singular: str
    hint: str
    required: tuple[str, ...] = ()
    section: str | None = None


RESULT_KINDS: dict[str, ResultKind] = {}

#: Views the connection creates itself; no result kind may take these names.
RESERVED_VIEWS = frozenset({"runs", "examples", "tokens", "rows", "activations", "gradients",
                            "neuron_profile", "neuron_top"})


def register(kind: ResultKind) -> ResultKind:
    if kind.table in RESERVED_VIEWS:
        raise RuntimeError(f"result kind {kind.table!r} would shadow a store view")
    if kind.table in RESULT_KINDS and RESULT_KINDS[kind.table] != kind:
        raise RuntimeError(f"result kind {kind.table!r} is registered twice")
    RESULT_KINDS[kind.table] = kind
    return kind


def result_kind(table: str) -> ResultKind:
    from neurondb.errors import UsageError

    try:
        return RESULT_KINDS[table]
    except KeyError:
        raise UsageError(f"unknown result table {table!r} (tables: "
                         f"{', '.join(RESULT_KINDS)})") from None


for _k in (
    ResultKind("rankings", "ranking", "make one with `neurondb rank`",
               ("stack", "layer", "neuron", "score", "rank"), "rankings"),
    ResultKind("correlations", "correlation", "make one with `neurondb correlate`",
               ("a", "b", "stack", "layer", "spearman", "topk_overlap"), "correlations"),
    ResultKind("overlaps", "overlap", "make one with `neurondb overlap`",
               ("a", "b", "group", "overlap"), "overlaps"),
    ResultKind("masks", "mask", "make one with `neurondb mask`",
               ("stack", "layer", "neuron"), "masks"),
    ResultKind("suppression", "suppression result", "make one with `neurondb suppress`",
               ("rate", "selection", "seed", "accuracy"), "suppression"),
    ResultKind("pruning", "ratio search", "make one with `neurondb prune --search`",
               ("step", "ratio", "accuracy", "baseline_accuracy", "within_margin", "chosen"),
               "pruning"),
    ResultKind("pruned_eval", "pruned evaluation",
               "make one with `neurondb prune --search` (or --evaluate)",
               ("model", "accuracy", "latency_ms", "parameters"), "pruning"),
    ResultKind("transfers", "transfer table", "make one with `neurondb transfer --store`",
               ("source", "target_key", "split", "accuracy", "relative"), "transfers"),
    ResultKind("neuron_correlations", "neuron correlation",
               "make one with `neurondb correlate-neurons`",
               ("a", "b", "stack", "layer", "neuron", "partner_rank", "partner_layer",
                "partner_neuron", "corr")),
):
    register(_k)

TABLES: tuple[str, ...] = tuple(RESULT_KINDS)


def quote_ident(name: str) -> str:
    """A SQL identifier in double quotes (``"overlaps"``), safe for any name."""
    return '"' + name.replace('"', '""') + '"'
