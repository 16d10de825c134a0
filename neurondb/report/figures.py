"""The report's figures as PNG bytes (matplotlib, Agg backend: no display needed).

Heatmaps reuse :func:`neurondb.query.plots.heatmap` and :func:`neurondb.tune.transfer_plot.
plot_transfer`, which write a file: they are drawn into a temporary directory and read back.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from neurondb.report.collect import TunedSeed
from neurondb.report.summaries import layer_scores, top_count

DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def fig_png(fig) -> bytes:
    """Encode a matplotlib figure as PNG bytes and close it."""
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def file_png(draw: Callable[[Path], object]) -> bytes:
    """Run ``draw(path)``, a function that writes a PNG at ``path``, and return its bytes."""
    with tempfile.TemporaryDirectory(prefix="neurondb-report-") as d:
        path = Path(d) / "figure.png"
        draw(path)
        return path.read_bytes()


def _integer_axis(axis) -> None:
    """Ticks at whole numbers only (layers, epochs, counts)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _layer_labels(keys: Sequence[tuple[str, int]]) -> list[str]:
    stacks = list(dict.fromkeys(s for s, _ in keys))
    return [str(layer) if len(stacks) == 1 else f"{s[:3]} {layer}" for s, layer in keys]


def ranking_png(frame: pd.DataFrame, name: str, fraction: float) -> bytes:
    """Left: max and mean score per layer (one pair of lines per stack). Right: how many of
    the global top ``fraction`` of neurons each layer holds."""
    plt = _pyplot()
    ls = layer_scores(frame, fraction)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for stack, g in ls.groupby("stack", sort=False):
        pre = f"{stack} " if ls["stack"].nunique() > 1 else ""
        a1.plot(g["layer"], g["max"], "o-", label=f"{pre}max")
        a1.plot(g["layer"], g["mean"], "s--", label=f"{pre}mean")
    a1.set_xlabel("layer")
    _integer_axis(a1.xaxis)
    a1.set_ylabel("score")
    a1.set_title(f"{name}: score per layer", fontsize=10)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    keys = list(zip(ls["stack"], ls["layer"]))
    x = np.arange(len(keys))
    a2.bar(x, ls["n_top"], color="tab:purple")
    a2.set_xticks(x, _layer_labels(keys), rotation=0 if len(keys) <= 16 else 90, fontsize=8)
    a2.set_xlabel("layer")
    a2.set_ylabel("neurons")
    _integer_axis(a2.yaxis)
    n = top_count(len(frame), fraction)
    a2.set_title(f"layers of the top {n} neurons of the model ({100 * n / len(frame):.2g}%)",
                 fontsize=10)
    a2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig_png(fig)


def heatmap_png(panels: Sequence[tuple[str, pd.DataFrame]], vmin: float, vmax: float) -> bytes:
    """Matrices side by side, via :func:`neurondb.query.plots.heatmap`."""
    from neurondb.query.plots import heatmap

    return file_png(lambda p: heatmap(list(panels), p, vmin=vmin, vmax=vmax))


def transfer_png(frame: pd.DataFrame) -> bytes:
    """The transfer heatmap of :func:`neurondb.tune.transfer_plot.plot_transfer`."""
    from neurondb.tune.transfer_plot import plot_transfer

    return file_png(lambda p: plot_transfer(frame, p))


def suppression_png(frame: pd.DataFrame, title: str) -> bytes:
    """The suppression curves of :func:`neurondb.intervene.plots.suppression_figure`."""
    from neurondb.intervene.plots import suppression_figure

    return fig_png(suppression_figure(frame, title))


def pruning_png(frame: pd.DataFrame, margin: float | None, title: str) -> bytes:
    """The ratio search of :func:`neurondb.intervene.plots.search_figure`."""
    from neurondb.intervene.plots import search_figure

    return fig_png(search_figure(frame, margin, title))


def masks_png(masks: Sequence[tuple[str, pd.DataFrame]]) -> bytes:
    """Neurons per layer of each mask (grouped bars)."""
    plt = _pyplot()
    counts = {n: m.groupby(["stack", "layer"]).size() for n, m in masks}
    keys = sorted(set().union(*[set(c.index) for c in counts.values()]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(keys) * max(1, len(masks)) + 2), 3.4))
    x = np.arange(len(keys))
    w = 0.8 / max(1, len(masks))
    for i, (n, c) in enumerate(counts.items()):
        ax.bar(x + (i - (len(masks) - 1) / 2) * w, c.reindex(keys).fillna(0), w, label=n)
    ax.set_xticks(x, _layer_labels(keys), fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons in the mask")
    _integer_axis(ax.yaxis)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig_png(fig)


def tuning_png(seeds: Sequence[TunedSeed]) -> bytes:
    """Loss (left) and accuracy (right) per epoch of every seed: validation solid, training
    (running) dotted; the kept epoch of each seed marked with a star."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(seeds):
        if not s.records:
            continue
        c = colors[i % len(colors)]
        lab = f"seed {s.seed}" if s.seed is not None else s.path.name
        ep = [r.epoch for r in s.records]
        a1.plot(ep, [r.train_loss for r in s.records], ":", color=c)
        a2.plot(ep, [r.train_accuracy for r in s.records], ":", color=c)
        if any(r.eval_loss is not None for r in s.records):
            a1.plot(ep, [np.nan if r.eval_loss is None else r.eval_loss for r in s.records],
                    "o-", color=c, ms=3, label=lab)
            a2.plot(ep, [np.nan if r.eval_accuracy is None else r.eval_accuracy
                         for r in s.records], "o-", color=c, ms=3, label=lab)
        else:
            a1.plot([], [], "o-", color=c, label=lab)
        if s.best_epoch is not None and s.best_eval_accuracy is not None:
            a2.plot([s.best_epoch], [s.best_eval_accuracy], "*", color=c, ms=12)
    for ax, name in ((a1, "cross-entropy (nats)"), (a2, "accuracy")):
        ax.set_xlabel("epoch")
        _integer_axis(ax.xaxis)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    a1.set_title("loss: validation (solid), training (dotted)", fontsize=10)
    a2.set_title("accuracy; * = kept epoch", fontsize=10)
    a1.legend(fontsize=8)
    fig.tight_layout()
    return fig_png(fig)
