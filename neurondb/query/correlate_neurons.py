"""``neurondb correlate-neurons``: Pearson r of every neuron of run A with every neuron of run
B over the same tokens (SPEC §9), streamed in row blocks (:mod:`neurondb.profile.pearson`).

The runs must hold the same tokens: the same examples (text), and the same captured
``(example_id, position)`` rows in the same order with the same token ids; otherwise the
request is refused. The result table ``neuron_correlations`` has one row per neuron of A and
partner rank: ``a, b, stack, layer, neuron, partner_rank, partner_layer, partner_neuron, corr``
(``partner_rank`` 1 is ``max_j r``). The figure shows, per layer of A, the distribution of
that maximum (Gurnee et al.'s plot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.errors import QueryError, arg
from neurondb.profile.pearson import PearsonAccumulator, best_partners
from neurondb.query.layout import split_names
from neurondb.query.plots import save_figure
from neurondb.query.results import as_store, check_absent, default_name, write_result
from neurondb.store.io import check_output_file

TABLE = "neuron_correlations"


@dataclass
class NeuronCorrelation:
    """``table``: the result rows; ``max_corr[layer]``: ``max_j r`` per neuron of A
    ``[d_ff]``; ``name``, ``path`` (the result file) and ``png`` (the figure)."""

    table: pd.DataFrame
    max_corr: dict[int, np.ndarray]
    name: str
    path: Path | None = None
    png: Path | None = None


def _pair(store, runs) -> tuple:
    names = split_names(runs)
    if len(names) != 2:
        raise QueryError(f"{arg('runs')} takes two runs, A,B (or one profile run extracted "
                         f"with {arg('correlate_layers')}); got {names}")
    infos = [store.run(n) for n in names]
    for i in infos:
        if i.mode != "tokens":
            raise QueryError(f"run {i.run!r} is a {i.mode} run; correlate-neurons needs "
                             f"per-token activations (extract with {arg('positions')} ...)")
    return infos


#: p x q float64 arrays alive at once at the peak (4.2 measured with tracemalloc: the sums,
#: then the correlations and their temporaries in PearsonAccumulator.corr and best_partners)
PEAK_MATRICES = 5


def check_memory(p: int, q: int, block: int, what: str) -> None:
    """Refuse a correlation of ``p`` neurons with ``q`` whose ``[p, q]`` float64 arrays
    (:data:`PEAK_MATRICES` at the peak) and blocks of ``block`` rows exceed free memory."""
    from neurondb.runtime.memory import available_memory

    need = PEAK_MATRICES * 8 * p * q + 2 * 8 * (p + q) * block
    free = available_memory("cpu")
    if free is not None and need > free:
        raise QueryError(f"correlating {p:,} neurons of {what} needs about {need / 1e9:,.2f} GB "
                         f"of memory at its peak ({PEAK_MATRICES} float64 [{p:,} x {q:,}] "
                         f"arrays), more than the {free / 1e9:,.2f} GB free; give fewer "
                         f"{arg('layers')}")


def check_same_tokens(store, a, b, stack: str) -> int:
    """Refuse runs ``a``, ``b`` (RunInfo) that do not hold the same tokens; returns the rows."""
    ra, rb = store.rows(run=a.run, stack=stack), store.rows(run=b.run, stack=stack)
    what = f"runs {a.run!r} and {b.run!r}"
    for col in ("example_id", "position"):
        if ra.num_rows != rb.num_rows or not ra.column(col).equals(rb.column(col)):
            raise QueryError(f"{what} do not capture the same tokens ({col} differs row by "
                             f"row); extract both with the same data, {arg('positions')} and "
                             f"{arg('max_examples')}")
    ta = _token_ids(store, a.run, stack, ra)
    if not np.array_equal(ta, _token_ids(store, b.run, stack, rb)):
        raise QueryError(f"{what} have different token ids at the same positions (another "
                         "tokenizer or template); correlate runs over the same tokens")
    ea = store.examples(run=a.run).to_pandas().set_index("example_id")["text"]
    eb = store.examples(run=b.run).to_pandas().set_index("example_id")["text"]
    if not ea.sort_index().equals(eb.sort_index()):
        raise QueryError(f"{what} hold different examples (texts differ); correlate runs over "
                         "the same examples")
    return ra.num_rows


def _token_ids(store, run: str, stack: str, rows) -> np.ndarray:
    tok = store.tokens(run=run).to_pandas()
    tok = tok[tok["stack"] == stack].set_index(["example_id", "position"])["token_id"]
    idx = pd.MultiIndex.from_arrays([rows.column("example_id").to_numpy(),
                                     rows.column("position").to_numpy()])
    return tok.reindex(idx).to_numpy()


def _layers(store, run: str, stack: str, layers: Sequence[int] | None) -> list[int]:
    n = store.shape_of(run).n_layers(stack)
    out = list(range(n)) if layers is None else [int(x) for x in layers]
    for la in out:
        store._check_layer(stack, la, run)
    return out


def _read(store, run: str, stack: str, layers: list[int], rows: slice) -> np.ndarray:
    return np.concatenate([store.activations(la, run=run, stack=stack, rows=rows)
                           for la in layers], axis=1)


def pearson_runs(store, a: str, b: str, stack: str, layers_a: list[int], layers_b: list[int],
                 n_rows: int, block_rows: int = 4096) -> np.ndarray:
    """r ``[sum d_ff(A layers), sum d_ff(B layers)]`` over the ``n_rows`` shared rows."""
    p = sum(store.shape_of(a).d_ff(stack, la) for la in layers_a)
    q = sum(store.shape_of(b).d_ff(stack, la) for la in layers_b)
    acc = PearsonAccumulator(p, q)
    for start in range(0, n_rows, block_rows):
        rows = slice(start, min(start + block_rows, n_rows))
        acc.update(_read(store, a, stack, layers_a, rows), _read(store, b, stack, layers_b, rows))
    return acc.corr()


def _partner_table(a, b, stack, store, layers_a, layers_b, corr, top) -> pd.DataFrame:
    la_of = np.concatenate([np.full(store.shape_of(a).d_ff(stack, la), la) for la in layers_a])
    na_of = np.concatenate([np.arange(store.shape_of(a).d_ff(stack, la)) for la in layers_a])
    lb_of = np.concatenate([np.full(store.shape_of(b).d_ff(stack, la), la) for la in layers_b])
    nb_of = np.concatenate([np.arange(store.shape_of(b).d_ff(stack, la)) for la in layers_b])
    idx, r = best_partners(corr, top)
    k = idx.shape[1]
    return pd.DataFrame({
        "a": a, "b": b, "stack": stack, "layer": np.repeat(la_of, k).astype(np.int32),
        "neuron": np.repeat(na_of, k).astype(np.int32),
        "partner_rank": np.tile(np.arange(1, k + 1), len(la_of)).astype(np.int32),
        "partner_layer": lb_of[idx.reshape(-1)].astype(np.int32),
        "partner_neuron": nb_of[idx.reshape(-1)].astype(np.int32), "corr": r.reshape(-1)})


def correlate_neurons(store, runs: str | Sequence[str], *, layers: Sequence[int] | None = None,
                      top: int = 5, stack: str | None = None, name: str | None = None,
                      png: str | Path | None = None, overwrite: bool = False,
                      write: bool = True, block_rows: int = 4096,
                      say: Callable[[str], None] | None = None) -> NeuronCorrelation:
    """Correlate every neuron of run A (``layers``, default all) with every neuron of run B
    (the same layers); write ``results/neuron_correlations/<name>.parquet`` and, with
    ``png``, the max-correlation figure. Everything is checked before anything is written;
    ``say`` then hears the memory the accumulation takes."""
    check_output_file(png, "png", "--png", "max_corr.png", makes_parents=True)
    store = as_store(store)
    names = split_names(runs)
    if len(names) == 1 and store.run(names[0]).mode == "profile":
        return within_model(store, names[0], top=top, name=name, png=png,
                            overwrite=overwrite, write=write)
    a, b = _pair(store, runs)
    stack = store.default_stack(stack, a.run)
    if top < 1:
        raise QueryError(f"{arg('top')} must be at least 1, not {top}")
    if block_rows < 1:
        raise QueryError(f"{arg('block_rows')} must be at least 1, not {block_rows}")
    layers_a, layers_b = _layers(store, a.run, stack, layers), _layers(store, b.run, stack, layers)
    name = name or default_name("ncorr", [a.run, b.run])
    if write:
        check_absent(store, TABLE, name, overwrite)
    n_rows = check_same_tokens(store, a, b, stack)
    p, q = (sum(store.shape_of(r).d_ff(stack, la) for la in ls)
            for r, ls in ((a.run, layers_a), (b.run, layers_b)))
    check_memory(p, q, min(block_rows, n_rows), f"{a.run} with {q:,} of {b.run}")
    if say is not None:
        say(f"correlating {p} neurons of {a.run} with {q} of {b.run} over {n_rows} tokens: "
            f"{PearsonAccumulator.state_bytes(p, q) / 1e6:,.1f} MB of float64 sums, plus "
            f"{8 * (p + q) * min(block_rows, n_rows) / 1e6:,.1f} MB per block")
    corr = pearson_runs(store, a.run, b.run, stack, layers_a, layers_b, n_rows, block_rows)
    same = a.run == b.run  # within one model: a neuron is not its own partner (r = 1)
    if same:
        np.fill_diagonal(corr, np.nan)
    table = _partner_table(a.run, b.run, stack, store, layers_a, layers_b, corr, top)
    title = (f"max r per neuron of {a.run} with another neuron" if same
             else f"max r per neuron of {a.run} vs {b.run}")
    meta = {"runs": [a.run, b.run], "stack": stack, "layers": layers_a, "top": top,
            "rows": n_rows} | ({"within_model": True} if same else {})
    return _finish(store, table, name, png, title, meta if write else None, overwrite)


def _finish(store, table: pd.DataFrame, name: str, png, title: str, meta: dict | None,
            overwrite: bool) -> NeuronCorrelation:
    """The result of a partner table: the max correlation per layer (rank-1 partners), the
    figure when ``png`` is given, and the result written when ``meta`` is (its parameters)."""
    first = table[table.partner_rank == 1]
    max_corr = {int(la): g["corr"].to_numpy() for la, g in first.groupby("layer")}
    out = NeuronCorrelation(table=table, max_corr=max_corr, name=name)
    if png is not None:
        out.png = plot_max_corr(max_corr, png, title)
    if meta is not None:
        out.path = write_result(store, TABLE, name, table, meta, overwrite=overwrite)
    return out


def within_model(store, run: str, *, top: int = 5, name: str | None = None,
                 png: str | Path | None = None, overwrite: bool = False,
                 write: bool = True) -> NeuronCorrelation:
    """Best partners among the neurons of one model, from the correlation sums a profile run
    accumulated on the device (``extract --profile --correlate-layers``); a neuron is not
    its own partner. Same table and figure as two runs (``a`` = ``b`` = ``run``)."""
    from neurondb.profile.read import run_state

    if top < 1:
        raise QueryError(f"{arg('top')} must be at least 1, not {top}")
    c = run_state(store, run).corr
    if c is None:
        raise QueryError(f"profile run {run!r} has no within-model correlation sums; extract "
                         f"it with {arg('correlate_layers')}, or give two per-token runs A,B")
    name = name or default_name("ncorr", [run])
    if write:
        check_absent(store, TABLE, name, overwrite)
    corr = c.corr()
    np.fill_diagonal(corr, np.nan)
    layers = list(c.layers)
    table = _partner_table(run, run, c.stack, store, layers, layers, corr, top)
    return _finish(store, table, name, png, f"max r per neuron of {run} with another neuron",
                   {"runs": [run], "stack": c.stack, "layers": layers, "top": top,
                    "rows": c.n, "within_model": True} if write else None, overwrite)


def plot_max_corr(max_corr: dict[int, np.ndarray], path: str | Path, title: str) -> Path:
    """Per layer, the distribution of ``max_j r`` (a box plot per layer)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    layers = sorted(max_corr)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(layers), 4))
    data = [np.nan_to_num(max_corr[la], nan=0.0) for la in layers]
    ax.boxplot(data, positions=range(len(layers)), widths=0.6)
    ax.set_xticks(range(len(layers)), [str(la) for la in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("max correlation with any neuron of B")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
