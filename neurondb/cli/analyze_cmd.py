"""`neurondb rank`, `correlate`, `overlap`, `mask` and `top`: the analyses of a store.

Thin: parse, build the command's request (:mod:`neurondb.query.requests`, which validates
it), call :mod:`neurondb.query`, print a rich table. The options these commands share are
declared once in :mod:`neurondb.cli.options`. Every result is also written into the store
(``results/<table>/<name>.parquet``) for SQL.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from neurondb.cli import options
from neurondb.cli.errors import one_line_errors
from neurondb.errors import UsageError
from neurondb.query.requests import (
    ATTRIBUTION_METHODS,
    CorrelateRequest,
    MaskRequest,
    OverlapRequest,
    RankRequest,
    TopRequest,
)

WITH_HELP = options.WITH_HELP  # the name other modules imported


def _open(store: Path, also: list[Path] | None):
    from neurondb.store import open_store

    return open_store(store, *(also or []))


def _print(df: pd.DataFrame, title: str, columns: list[str] | None = None, n: int | None = None) -> None:
    con = Console(soft_wrap=True)
    con = Console(soft_wrap=True, width=max(con.width, 150))
    t = Table(title=title)
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    for c in cols:
        t.add_column(c, justify="right" if pd.api.types.is_numeric_dtype(df[c]) else "left")
    for _, row in (df if n is None else df.head(n)).iterrows():
        t.add_row(*[Text(_fmt(row[c])) for c in cols])  # data, not rich markup
    con.print(t)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        vals = v.tolist() if hasattr(v, "tolist") else list(v)
        return ",".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in vals)
    return str(v)


def _rank_request(method: str, eval_: str, flags: dict, common: dict) -> RankRequest:
    """The request of ``neurondb rank``: ``--eval`` is the evaluation runs of predictivity and
    the runs with gradients of attribution. Every flag goes to the request, which refuses one
    that another method reads when it is given (the CLI's defaults are the request's), so a
    flag is never dropped in silence."""
    if method == "predictivity":
        return RankRequest(eval=eval_, **flags, **common)
    if method in ATTRIBUTION_METHODS:
        return RankRequest(runs=eval_, **flags, **common)
    return RankRequest(**flags, **common)


def _print_ranking(df: pd.DataFrame, method: str, show: int) -> None:
    cols = ["stack", "layer", "neuron", "score", "rank", "slot", "accuracy", "excitatory", "class"]
    if (df["scope"] == "layer").all():
        view = df[df["rank"] <= show]
    else:
        view = df.head(show * max(1, df.groupby(["stack", "layer"]).ngroups))
    _print(view, f"ranking {df.attrs['name']} ({method}, {df['scope'].iloc[0]}); "
           f"{len(df)} neurons", cols)


def rank_command(
    store: Path = options.store_dir(),
    method: str = typer.Option("predictivity", "--method", "-m",
                               help="predictivity, attribution, activation, gradient or random."),
    train: str = typer.Option("train", "--train", help="Training run(s) or split for the "
                              "predictivity baselines (comma-separated, one per --eval run)."),
    eval_: str = typer.Option("validation", "--eval", help="Run(s) or split to score: evaluation "
                              "runs (predictivity; several = several prompts) or the runs with "
                              "gradients (attribution)."),
    train_store: Path | None = typer.Option(None, "--train-store", help="Store holding the "
                                            "training runs (baselines of another dataset)."),
    allow_foreign: bool = typer.Option(False, "--allow-foreign", help="Accept baselines from a "
                                       "store of another model (a cross-model study)."),
    also: list[Path] | None = options.also(),
    global_: bool = options.global_scope("Rank over all layers (predictivity ranks per layer "
                                         "by default)."),
    per_layer: bool = options.per_layer("Rank within each layer (attribution ranks globally "
                                        "by default)."),
    over_prompts: str = typer.Option("mean", "--over-prompts", help="mean or min over prompts."),
    over_classes: str = typer.Option("mean", "--over-classes", help="mean or max over classes "
                                     "(one-vs-rest, multi-class tasks)."),
    multiclass: str = typer.Option("one-vs-rest", "--multiclass", help="Multi-class tasks: "
                                   "one-vs-rest (one binary task per class) or subtasks "
                                   "(Skill-Neuron's two balanced binary subtasks, union selection)."),
    combine_order: str = typer.Option("classes-first", "--combine-order", help="classes-first "
                                      "(combine classes per slot, then max over slots; default) or "
                                      "slots-first (max over slots per class, then combine)."),
    balance_seed: int | None = typer.Option(None, "--balance-seed", help="--multiclass subtasks: "
                                            "draw the balanced samples with this seed (default: "
                                            "the reference's first-examples rule)."),
    exactness_check: bool = typer.Option(True, "--exactness-check/--no-exactness-check",
                                         help="16-bit stores: count values within one storage "
                                         "step of the baseline and warn (default on)."),
    slots: str | None = options.slots("Slots to use, glob patterns (e.g. 'prompt:*,mask'); "
                                      "default all captured."),
    stacks: list[str] | None = options.stack(),
    token_agg: str = typer.Option("sum", "--token-agg", help="Attribution: sum, mean or max over tokens."),
    abs_when: str = typer.Option("token", "--abs", help="Attribution: |.| per token or 'after' aggregation."),
    target: str | None = typer.Option(None, "--target", help="Attribution: require gradients of this target."),
    examples: int | None = typer.Option(None, "--examples", help="Attribution: first N examples per run."),
    seed: int = typer.Option(0, "--seed", help="Random ranking: seed."),
    name: str | None = options.name("Ranking name (default from method and runs)."),
    overwrite: bool = options.overwrite("Replace a ranking of the same name."),
    threads: int | None = typer.Option(None, "--threads", help="Kernel threads (default: cores, at most 4)."),
    show: int = typer.Option(5, "--show", help="Neurons shown per layer (global: in total x layers)."),
) -> None:
    """Rank every neuron by a method; the ranking is written to STORE/results/rankings/NAME."""
    import warnings

    from neurondb.query import rank
    from neurondb.query.predictivity import ExactnessWarning

    with one_line_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExactnessWarning)
        if show < 0:
            raise UsageError(f"--show must be 0 or more, not {show}")
        flags = dict(train=train, train_store=train_store, over_prompts=over_prompts,
                     over_classes=over_classes, slots=slots, threads=threads,
                     multiclass=multiclass, combine_order=combine_order,
                     balance_seed=balance_seed, check_exactness=exactness_check,
                     allow_foreign=allow_foreign, token_agg=token_agg, abs_when=abs_when,
                     target=target, max_examples=examples, seed=seed)
        req = _rank_request(method, eval_, flags, dict(
            method=method, scope=options.scope(global_, per_layer), stacks=stacks, name=name,
            overwrite=overwrite))
        st = _open(store, also)
        df = rank(st, req)
        _print_ranking(df, method, show)
        for w in caught:  # ExactnessWarning and any other, one line each on stderr
            Console(stderr=True, soft_wrap=True).print(f"warning: {w.message}", markup=False)
        st.close()


def correlate_command(
    store: Path = options.store_dir(),
    rankings: str = typer.Option(..., "--rankings", "-r", help="Two or more ranking names, comma-separated."),
    top: float = options.fraction("--top", "Fraction of each layer for the top-k overlap."),
    k: int | None = options.top_k(None, "A fixed k for the top-k overlap instead of --top."),
    count_rule: str = options.count_rule("How --top becomes k per layer: int (int(p*d), the "
                                         "reference code's rule; default) or round."),
    png: Path | None = options.png("Write a heatmap of the Spearman matrix."),
    name: str | None = options.name("Result name (default corr_A+B...)."),
    overwrite: bool = options.overwrite("Replace a result of the same name."),
    also: list[Path] | None = options.also(),
) -> None:
    """Spearman correlation per layer (with p-values) and top-k overlap between rankings."""
    from neurondb.query import correlate

    with one_line_errors():
        req = CorrelateRequest(rankings=rankings, fraction=top, k=k, count_rule=count_rule,
                               name=name, png=png, overwrite=overwrite)
        st = _open(store, also)
        res = correlate(st, req)
        names = list(res.matrix.index)
        if len(names) == 2:
            per = res.table[(res.table["a"] == names[0]) & (res.table["b"] == names[1])]
            _print(per, f"{names[0]} vs {names[1]}: mean Spearman {res.mean:.4f}, "
                   f"mean p {res.mean_p:.4g}",
                   ["stack", "layer", "spearman", "p_value", "k", "topk_overlap"])
        m = res.matrix.reset_index(names="ranking")
        _print(m, "Spearman rho, mean over layers")
        if res.p_matrix is not None:
            _print(res.p_matrix.reset_index(names="ranking"), "Spearman p-value, mean over layers")
        o = res.overlap.reset_index(names="ranking")
        _print(o, "top-k overlap, mean over layers")
        if res.png:
            Console().print(f"heatmap: {res.png}")
        st.close()


def overlap_command(
    store: Path = options.store_dir(),
    runs: str = typer.Option(..., "--runs", help="Two or more runs (or splits), comma-separated."),
    slot: str | None = typer.Option(None, "--slot", help="Slot to binarize (default: mask, first, "
                                    "or the first position after the prompt)."),
    groups: str = typer.Option("all", "--groups", help="'all' layers, or a group size (3: consecutive groups of 3)."),
    mode: str = typer.Option("examples", "--mode", help="examples (same examples, per example) or "
                             "mean (mean over each run's examples, then > 0)."),
    png: Path | None = options.png("Write heatmaps (one per layer group)."),
    name: str | None = options.name("Result name (default on_A+B...)."),
    overwrite: bool = options.overwrite("Replace a result of the same name."),
    also: list[Path] | None = options.also(),
) -> None:
    """Activated-neuron overlap (ON) between runs: cosine of binary h > 0 vectors."""
    from neurondb.query import activated_overlap

    with one_line_errors():
        req = OverlapRequest(runs=runs, slot=slot, groups=groups, mode=mode, png=png, name=name,
                             overwrite=overwrite)
        st = _open(store, also)
        res = activated_overlap(st, req)
        for label, m in res.matrices.items():
            _print(m.reset_index(names="run"), f"ON overlap, layers {label}")
        if res.png:
            Console().print(f"heatmap: {res.png}")
        st.close()


def mask_command(
    store: Path = options.store_dir(),
    ranking: str = typer.Option(..., "--ranking", "-r", help="Ranking name."),
    fraction: float = options.fraction(),
    global_: bool = options.global_scope("Top fraction of the whole model (default: of each "
                                         "layer)."),
    count_rule: str = options.count_rule("How the fraction becomes a count: int (int(p*d): 5% "
                                         "of 1536 = 76, the reference code's rule; default) or "
                                         "round (nearest: 77)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the portable mask file here."),
    name: str | None = options.name("Mask name in the store."),
    overwrite: bool = options.overwrite("Replace a mask of the same name."),
    also: list[Path] | None = options.also(),
) -> None:
    """Select the top fraction of a ranking as a mask (table in the store and a mask file)."""
    from neurondb.query import make_mask

    with one_line_errors():
        req = MaskRequest(ranking=ranking, fraction=fraction,
                          scope=options.scope(global_) or "layer", count_rule=count_rule,
                          name=name, out=out, overwrite=overwrite)
        st = _open(store, also)
        m = make_mask(st, req)
        hist = m.groupby(["stack", "layer"]).size().reset_index(name="neurons")
        _print(hist, f"mask {m.attrs['name']}: {len(m)} neurons from ranking {ranking}")
        if out is not None:
            Console().print(f"mask file: {out}")
        st.close()


def top_command(
    store: Path = options.store_dir(),
    run: str | None = typer.Option(None, "--run", help="Run (or split) with per-token activations, or a profile run (answered from neuron_top); default: the store's only such run."),
    layer: int = typer.Option(..., "--layer", help="Layer."),
    neuron: int = typer.Option(..., "--neuron", help="Neuron index in the layer."),
    stack: str | None = options.stack("Stack (default: the first)."),
    k: int | None = options.top_k(None, "Examples shown (default 10, or all a profile run keeps when it keeps fewer)."),
    slots: str | None = options.slots("Only these slots (glob patterns)."),
    also: list[Path] | None = options.also(),
) -> None:
    """The examples on which one neuron fires most."""
    from neurondb.query import top_examples

    with one_line_errors():
        req = TopRequest(run=run, layer=layer, neuron=neuron, stack=stack, k=k, slots=slots)
        st = _open(store, also)
        df = top_examples(st, req)
        _print(df, f"top examples of neuron {neuron}, layer {layer}")
        st.close()


def register(app: typer.Typer) -> None:
    app.command("rank")(rank_command)
    app.command("correlate")(correlate_command)
    app.command("overlap")(overlap_command)
    app.command("mask")(mask_command)
    app.command("top")(top_command)
