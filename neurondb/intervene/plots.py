"""Plots of the re-runs: suppression curves (accuracy against the suppressed fraction) and the
pruning ratio search (accuracy against the pruned fraction). matplotlib, Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    from neurondb.query.plots import save_figure

    return save_figure(fig, path, dpi=110)


def draw_suppression(ax, summary: pd.DataFrame, selection: str = "skill neurons",
                     title: str = "") -> None:
    """Onto ``ax``, from the rows of one mode of
    :func:`neurondb.intervene.suppress.summarize_suppression`: the selected neurons' accuracy
    (line), the random controls' mean with a min–max band over seeds, and the accuracy
    without suppression (dashed). x: percent of FFN neurons suppressed."""
    g = summary.sort_values("rate")
    base = float(g["baseline"].iloc[0]) if len(g) else np.nan
    x0 = [0.0] if np.isfinite(base) else []
    y0 = [base] if np.isfinite(base) else []
    sel = g[np.isfinite(g["selected"])]
    if len(sel):
        ax.plot(x0 + list(100 * sel["rate"]), y0 + list(sel["selected"]), "o-",
                color="tab:red", label=selection)
    rnd = g[g["seeds"] > 0]
    if len(rnd):
        x = np.array(x0 + list(100 * rnd["rate"]))
        seeds = int(rnd["seeds"].max())
        ax.plot(x, y0 + list(rnd["random_mean"]), "s-", color="tab:blue",
                label=f"random, mean of {seeds} seed{'s' * (seeds != 1)}")
        ax.fill_between(x, y0 + list(rnd["random_min"]), y0 + list(rnd["random_max"]),
                        color="tab:blue", alpha=0.2, label="random, min–max")
    if np.isfinite(base):
        ax.axhline(base, color="grey", ls="--", lw=1, label=f"no suppression ({base:.3f})")
    ax.set_xlabel("suppressed FFN neurons (%)")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def suppression_figure(table: pd.DataFrame, title: str = "suppression"):
    """A figure with one panel per mode of a suppression table (see :func:`draw_suppression`)."""
    from neurondb.intervene.suppress import summarize_suppression

    plt = _pyplot()
    s = summarize_suppression(table)
    modes = list(dict.fromkeys(s["mode"])) or ["zero"]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 3.8), squeeze=False)
    sel_name = "skill neurons" if (table["selection"] == "skill").any() else "mask"
    for ax, mode in zip(axes[0], modes):
        draw_suppression(ax, s[s["mode"] == mode], sel_name,
                         f"{title} ({mode})" if len(modes) > 1 else title)
    fig.tight_layout()
    return fig


def plot_suppression(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Accuracy against the suppressed fraction, skill vs random, written to a PNG."""
    return _save(suppression_figure(table, title or "suppression"), path)


def search_figure(table: pd.DataFrame, margin: float | None, title: str = "ratio search"):
    """Accuracy of every evaluation of a ratio search against the pruned percentage, the band
    within ``margin`` of the unpruned accuracy (when known), and the chosen ratio marked;
    points are labelled with their evaluation order."""
    plt = _pyplot()
    t = table.sort_values("ratio")
    base = float(t["baseline_accuracy"].iloc[0])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    if margin is not None:
        top = max(base, float(np.nanmax(t["accuracy"]))) + 0.005
        ax.axhspan(base - margin, top, color="tab:green", alpha=0.12,
                   label=f"within {margin:g} of unpruned")
    ax.axhline(base, color="grey", ls="--", lw=1, label=f"unpruned ({base:.3f})")
    ok = t["within_margin"].to_numpy(bool)
    x = 100 * t["ratio"].to_numpy(np.float64)
    y = t["accuracy"].to_numpy(np.float64)
    ax.plot(x, y, "-", color="0.6", zorder=1)
    ax.scatter(x[ok], y[ok], color="tab:green", zorder=3, label="within margin")
    ax.scatter(x[~ok], y[~ok], color="tab:red", zorder=3, label="outside margin")
    for r in t.itertuples():
        ax.annotate(str(int(r.step)), (100 * r.ratio, r.accuracy), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    chosen = t[t["chosen"].astype(bool)]
    if len(chosen):
        c = float(chosen["ratio"].iloc[0])
        ax.axvline(100 * c, color="tab:green", ls=":", lw=1.5, label=f"chosen: {100 * c:g}%")
    ax.set_xlabel("pruned FFN neurons (%)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (labels: evaluation order)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_search(table: pd.DataFrame, path: str | Path, margin: float | None,
                title: str = "") -> Path:
    """The ratio search (see :func:`search_figure`) written to a PNG."""
    return _save(search_figure(table, margin, title or "pruning ratio search"), path)
