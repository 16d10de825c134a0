"""Typed requests of the analyses that read a store: ``rank``, ``correlate``, ``overlap``,
``mask`` and ``top``.

Each is a frozen dataclass validated once, in ``__post_init__``: the choices and ranges of its
fields, with errors that name an option as the caller spells it (``--count-rule`` while a
CLI command runs, ``count_rule`` from Python: :func:`neurondb.errors.arg`). The CLI flags and
the keyword arguments of the Python functions (:func:`neurondb.query.rank`,
:func:`~neurondb.query.correlate`, :func:`~neurondb.query.activated_overlap`,
:func:`~neurondb.query.make_mask`, :func:`~neurondb.query.top_examples`) map one to one onto
the fields. A request is never changed: what is derived from it (the scope a method ranks in
when none is given, ``k`` per layer from a fraction, the runs a split names, the default
result name) is a property of the request or is computed by the kernel that carries it out.

This module is light (the standard library and :mod:`neurondb.errors`): a request can be built
before pandas, SciPy or a store is imported. It is also the one home of the analyses' choices
(methods, scopes, count rules, aggregations, modes) and of the comma-list rule
(:func:`split_names`); the kernels import them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from neurondb.errors import QueryError, UsageError, arg
from neurondb.store.io import check_output_file

# -- the choices ------------------------------------------------------------------------------
METHODS = ("predictivity", "attribution", "activation", "gradient", "random")
ATTRIBUTION_METHODS = ("attribution", "activation", "gradient")
SCOPES = ("layer", "global")
OVER_PROMPTS = ("mean", "min")
OVER_CLASSES = ("mean", "max")
MULTICLASS = ("one-vs-rest", "subtasks")
COMBINE_ORDERS = ("classes-first", "slots-first")
TOKEN_AGGS = ("sum", "mean", "max")
ABS_WHEN = ("token", "after")
OVERLAP_MODES = ("examples", "mean")
# How a fraction ``p`` of ``n`` neurons becomes a count (SPEC §2 step 6):
# ``int``: ``int(p * n)``, truncation, as both reference implementations do (Skill-Neuron's
# ``finfo``: ``range(int(p*3072))``; Robust-Neurons the same), 5 % of 1,536 = 76; the default.
# ``round``: the nearest integer, halves up (``floor(p * n + 0.5)``), 5 % of 1,536 = 77.
COUNT_RULES = ("int", "round")
DEFAULT_COUNT_RULE = "int"
_COUNT_RULE_HINT = " (int: int(p*d) as the reference code; round: nearest)"


# -- the checks (one message each) ------------------------------------------------------------
def check_choice(value: Any, choices: Sequence[str], name: str, flag: str | None = None, *,
                 label: str | None = None, hint: str = "", pair: bool = False) -> Any:
    """``value`` if it is one of ``choices``, else a one-line :class:`UsageError` naming the
    option (``label``, or :func:`~neurondb.errors.arg` of ``name``/``flag``): "must be one of
    a, b, c", or with ``pair`` (two choices) "must be 'a' or 'b'"."""
    if value in choices:
        return value
    listed = (f"{choices[0]!r} or {choices[1]!r}" if pair and len(choices) == 2
              else "one of " + ", ".join(choices))
    raise UsageError(f"{label or arg(name, flag)} must be {listed}{hint}, not {value!r}")


def check_count_rule(rule: str, label: str = "count rule") -> str:
    """``rule`` if it is one of :data:`COUNT_RULES`, else a one-line :class:`UsageError`."""
    return check_choice(rule, COUNT_RULES, "count_rule", label=label, hint=_COUNT_RULE_HINT)


def check_scope(scope: str) -> str:
    """``scope`` if it is ``layer`` or ``global``, else a one-line :class:`UsageError`."""
    return check_choice(scope, SCOPES, "scope", pair=True)


def check_fraction(value: float, name: str, flag: str | None = None, *,
                   what: str = "a fraction in (0, 1]") -> float:
    """``value`` if it is in ``(0, 1]``, else a one-line :class:`UsageError`."""
    if not 0 < value <= 1:
        raise UsageError(f"{arg(name, flag)} must be {what}, not {value}")
    return value


def check_at_least(value: int, minimum: int, name: str, flag: str | None = None) -> int:
    """``value`` if it is at least ``minimum``, else a one-line :class:`UsageError`."""
    if value < minimum:
        raise UsageError(f"{arg(name, flag)} must be at least {minimum}, not {value}")
    return value


def check_top(fraction: float, k: int | None, count_rule: str) -> None:
    """A top-k selection: a fixed ``k`` (at least 1), or a ``fraction`` in ``(0, 1]`` turned
    into ``k`` per layer by ``count_rule`` (``correlate``'s ``--top``/``--top-k``)."""
    if k is None:
        check_fraction(fraction, "fraction", "--top")
    else:
        check_at_least(k, 1, "k", "--top-k")
    check_count_rule(count_rule, arg("count_rule"))


def split_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (blank items dropped)."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [s.strip() for s in items if s and s.strip()]


#: CLI flags of ``neurondb rank`` whose names are not the field's
_RANK_FLAGS = {"max_examples": "--examples", "abs_when": "--abs",
               "check_exactness": "--no-exactness-check", "runs": "--eval"}


def _unchanged(request: Any, names: set[str]) -> None:
    """Refuse a field outside ``names`` (those the request's method reads) given a value other
    than its default: it would be ignored."""
    for f in fields(request):
        if f.name in names:
            continue
        v = getattr(request, f.name)
        if (v is not None) if f.default is None else bool(v != f.default):
            owners = [m for m in METHODS if f.name in _RANK_FIELDS[_FAMILY[m]]]
            raise UsageError(f"{arg(f.name, _RANK_FLAGS.get(f.name))} applies to "
                             f"method{'s' if len(owners) > 1 else ''} {', '.join(owners)}, not "
                             f"{request.method!r}")


def as_request(cls: type, kw: dict, fixed: dict | None = None, **positional: Any) -> Any:
    """The request of one call of an analysis function: the request itself when it is given as
    the first positional argument (then nothing else; its fields must agree with ``fixed``),
    else ``cls(**fixed, **positional, **kw)`` with the positional arguments that are given
    (not None)."""
    given = {n: v for n, v in positional.items() if v is not None}
    first = next(iter(positional.values()), None)
    if isinstance(first, cls):
        if len(given) > 1 or kw:
            raise TypeError(f"give a {cls.__name__} or its fields as arguments, not both")
        for n, v in (fixed or {}).items():
            if getattr(first, n) != v:
                raise TypeError(f"this function takes a {cls.__name__} with {n}={v!r}, not "
                                f"{getattr(first, n)!r}")
        return first
    for n in given:
        if n in kw or n in (fixed or {}):
            raise TypeError(f"got multiple values for argument {n!r}")
    return cls(**(fixed or {}), **given, **kw)


# -- rank -------------------------------------------------------------------------------------
_FAMILY = {"predictivity": "predictivity", "random": "random",
           **{m: "attribution" for m in ATTRIBUTION_METHODS}}
_COMMON = {"method", "scope", "stacks", "name", "overwrite", "write"}
_RANK_FIELDS = {
    "predictivity": {"eval", "train", "train_store", "over_prompts", "over_classes",
                     "multiclass", "combine_order", "balance_seed", "check_exactness",
                     "allow_foreign", "threads", "slots"},
    "attribution": {"runs", "token_agg", "abs_when", "target", "max_examples", "chunk_rows",
                    "slots"},
    "random": {"seed"},
}


@dataclass(frozen=True)
class RankRequest:
    """One ranking (``neurondb rank``; :func:`neurondb.query.rank`).

    ``method``: one of :data:`METHODS`. Predictivity (SPEC §2,
    :mod:`neurondb.query.predictivity`): ``eval`` (evaluation runs or splits, several = several
    prompts) against the baselines of ``train`` (in ``train_store``, default the store itself;
    another model's only with ``allow_foreign``), combined ``over_prompts`` and
    ``over_classes``, ``multiclass`` and ``combine_order`` as in the module's docstring,
    ``balance_seed`` for the balanced subtasks, ``check_exactness`` for 16-bit stores,
    ``threads`` for the kernel (default: the cores, at most 4). Attribution, activation and
    gradient (SPEC §4, :mod:`neurondb.query.attribution`): ``runs`` (pooled), ``token_agg`` and
    ``abs_when``, ``target`` (required gradient target), ``max_examples`` (first N per run),
    ``chunk_rows``. Random: ``seed``. Every method: ``scope`` (``layer`` or ``global``; None:
    per layer for predictivity, global otherwise, :attr:`ranking_scope`), ``stacks``,
    ``slots`` (glob patterns; not random), ``name``, ``overwrite``, ``write`` (False: return
    the ranking without writing it). A field another method reads is refused unless left at
    its default.
    """

    method: str = "predictivity"
    # predictivity
    eval: str | Sequence[str] | None = None
    train: str | Sequence[str] = "train"
    train_store: Any = None
    over_prompts: str = "mean"
    over_classes: str = "mean"
    multiclass: str = "one-vs-rest"
    combine_order: str = "classes-first"
    balance_seed: int | None = None
    check_exactness: bool = True
    allow_foreign: bool = False
    threads: int | None = None
    # attribution, activation, gradient
    runs: str | Sequence[str] | None = None
    token_agg: str = "sum"
    abs_when: str = "token"
    target: str | None = None
    max_examples: int | None = None
    chunk_rows: int | None = None
    # random
    seed: int = 0
    # every method
    scope: str | None = None
    slots: str | Sequence[str] | None = None
    stacks: Sequence[str] | None = None
    name: str | None = None
    overwrite: bool = False
    write: bool = True

    def __post_init__(self) -> None:
        check_choice(self.method, METHODS, "method")
        _unchanged(self, _COMMON | _RANK_FIELDS[self.family])
        if self.threads is not None:  # -3 ran as if it were the default, 0 too
            check_at_least(self.threads, 1, "threads", "--threads")
        if self.scope is not None:
            check_scope(self.scope)
        if self.family == "predictivity":
            if self.eval is None:
                raise UsageError(f"method 'predictivity' needs {arg('eval')} (the evaluation "
                                 "runs or splits)")
            check_choice(self.over_prompts, OVER_PROMPTS, "over_prompts", pair=True)
            check_choice(self.over_classes, OVER_CLASSES, "over_classes", pair=True)
            check_choice(self.multiclass, MULTICLASS, "multiclass")
            check_choice(self.combine_order, COMBINE_ORDERS, "combine_order")
        elif self.family == "attribution":
            if self.runs is None:
                raise UsageError(f"method {self.method!r} needs {arg('runs', '--eval')} (the "
                                 "runs with gradients)")
            check_choice(self.token_agg, TOKEN_AGGS, "token_agg",
                         label=f"{arg('token_agg')} (the token aggregation)")
            check_choice(self.abs_when, ABS_WHEN, "abs_when", "--abs", pair=True)
            if self.max_examples is not None:
                check_at_least(self.max_examples, 1, "max_examples", "--examples")

    @property
    def family(self) -> str:
        """``predictivity``, ``attribution`` (also activation and gradient) or ``random``."""
        return _FAMILY[self.method]

    @property
    def ranking_scope(self) -> str:
        """The scope ranked in: ``scope``, else per layer for predictivity (as the references
        select skill neurons) and global for the others (Skeleton prunes by one order)."""
        return self.scope or ("layer" if self.family == "predictivity" else "global")


# -- correlate --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorrelateRequest:
    """Spearman per layer and top-k overlap between rankings (``neurondb correlate``;
    :func:`neurondb.query.correlate`).

    ``rankings``: two or more names (comma-separated or a list), each once. The top-k overlap
    takes a fixed ``k``, or ``fraction`` (``--top``) of each layer counted by ``count_rule``.
    ``png``: a heatmap of the mean Spearman matrix. ``name`` (default ``corr_A+B...``),
    ``overwrite``, ``write`` as for every result.
    """

    rankings: str | Sequence[str]
    fraction: float = 0.05
    k: int | None = None
    count_rule: str = DEFAULT_COUNT_RULE
    name: str | None = None
    png: str | Path | None = None
    overwrite: bool = False
    write: bool = True

    def __post_init__(self) -> None:
        names = split_names(self.rankings)
        if len(names) < 2:
            raise QueryError("give at least two rankings to correlate (comma-separated names)")
        if len(set(names)) != len(names):
            raise QueryError(f"ranking names repeat in {names}; give each once")
        check_top(self.fraction, self.k, self.count_rule)
        check_output_file(self.png, "png", "--png", "correlations.png", makes_parents=True)

    @property
    def names(self) -> list[str]:
        """The ranking names, in order."""
        return split_names(self.rankings)


# -- overlap ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OverlapRequest:
    """Activated-neuron overlap "ON" between runs (``neurondb overlap``;
    :func:`neurondb.query.activated_overlap`).

    ``runs``: two or more runs or splits. ``slot``: the slot binarized (default: ``mask``,
    ``first`` or the first position after the prompt). ``groups``: ``all`` layers or a group
    size (an integer, or its digits as a string: consecutive groups of that many). ``mode``:
    ``examples`` or ``mean`` (:mod:`neurondb.query.overlap`). ``stacks``, ``png``, ``name``
    (default ``on_A+B...``), ``overwrite``, ``write``.
    """

    runs: str | Sequence[str]
    slot: str | None = None
    groups: str | int = "all"
    mode: str = "examples"
    stacks: Sequence[str] | None = None
    name: str | None = None
    png: str | Path | None = None
    overwrite: bool = False
    write: bool = True

    def __post_init__(self) -> None:
        check_choice(self.mode, OVERLAP_MODES, "mode", pair=True)
        check_output_file(self.png, "png", "--png", "overlap.png", makes_parents=True)
        if self.groups != "all" and self.groups is not None:
            try:
                size = int(self.groups)
            except (TypeError, ValueError):
                raise UsageError(f"{arg('groups')} must be 'all' or a group size (a number of "
                                 f"layers), not {self.groups!r}") from None
            check_at_least(size, 1, "groups")

    @property
    def group_size(self) -> str | int:
        """``all``, or the group size as an integer."""
        return "all" if self.groups in ("all", None) else int(self.groups)


# -- mask -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskRequest:
    """The top ``fraction`` of ranking ``ranking`` as a mask (``neurondb mask``;
    :func:`neurondb.query.make_mask`): per layer or of the whole model (``scope``), counted by
    ``count_rule``; a table in the store (``name``, default ``<ranking>_top<fraction>_<scope>``)
    and, with ``out``, a portable mask file."""

    ranking: str
    fraction: float = 0.05
    scope: str = "layer"
    count_rule: str = DEFAULT_COUNT_RULE
    name: str | None = None
    out: str | Path | None = None
    overwrite: bool = False
    write: bool = True

    def __post_init__(self) -> None:
        check_fraction(self.fraction, "fraction", what="in (0, 1]")
        check_scope(self.scope)
        check_count_rule(self.count_rule, arg("count_rule"))
        check_output_file(self.out, "out", "--out", "mask.parquet", makes_parents=True)


# -- top --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopRequest:
    """The ``k`` examples on which neuron ``(stack, layer, neuron)`` fires most in ``run``
    (``neurondb top``; :func:`neurondb.query.top_examples`); ``slots``: only rows of these
    slots (glob patterns; per-token runs only); ``k`` None: 10, or every token a profile run
    keeps when it keeps fewer; ``run`` None: the store's only per-token or profile run. The
    layer and neuron are checked against the store's shape when the request is carried out."""

    run: str | None
    layer: int
    neuron: int
    stack: str | None = None
    k: int | None = None
    slots: str | Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.k is not None:
            check_at_least(self.k, 1, "k", "--top-k")
