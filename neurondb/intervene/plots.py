"""Plots of the re-runs: suppression curves (accuracy against the suppressed fraction) and the
pruning ratio search (accuracy against the pruned fraction). matplotlib, Agg backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def draw_suppression(ax, table: pd.DataFrame, label: str = "") -> None:
    """Onto ``ax``: the selected neurons' accuracy (line), the random controls' mean with a
    min–max band over seeds, and the unsuppressed accuracy (dashed). x: percent of FFN neurons."""
    t = table
    base = t[t["selection"] == "none"]["accuracy"]
    chosen = t[t["selection"].isin(["skill", "mask"])].sort_values("rate")
    rnd = t[t["selection"] == "random"].groupby("rate")["accuracy"].agg(["mean", "min", "max"])
    pre = f"{label} " if label else ""
    if len(chosen):
        ax.plot(100 * chosen["rate"], chosen["accuracy"], "o-", color="tab:red",
                label=f"{pre}skill neurons" if chosen["selection"].iloc[0] == "skill"
                else f"{pre}mask")
    if len(rnd):
        x = 100 * rnd.index.to_numpy(dtype=float)
        n_seeds = int(t[t["selection"] == "random"]["seed"].nunique())
        ax.plot(x, rnd["mean"], "s--", color="tab:blue",
                label=f"{pre}random ({n_seeds} seeds, min-max)")
        ax.fill_between(x, rnd["min"], rnd["max"], color="tab:blue", alpha=0.2)
    if len(base):
        ax.axhline(float(base.iloc[0]), color="gray", ls=":", label=f"{pre}no suppression")
    ax.set_xlabel("suppressed FFN neurons (%)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)


def plot_suppression(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Accuracy against the suppressed fraction, skill vs random (see :func:`draw_suppression`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_suppression(ax, table)
    ax.set_title(title or "suppression")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_search(table: pd.DataFrame, path: str | Path, margin: float, title: str = "") -> Path:
    """Accuracy of every evaluation of the ratio search against the pruned fraction, with the
    accepted band (baseline − margin) and the chosen ratio marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    t = table.sort_values("ratio")
    base = float(t["baseline_accuracy"].iloc[0])
    ax.axhspan(base - margin, max(base, t["accuracy"].max()) + 0.005, color="tab:green",
               alpha=0.12, label=f"within {margin:g} of unpruned")
    ax.axhline(base, color="gray", ls=":", label="unpruned")
    ok = t["within_margin"].to_numpy(bool)
    ax.plot(100 * t["ratio"], t["accuracy"], "-", color="0.6")
    ax.scatter(100 * t["ratio"][ok], t["accuracy"][ok], color="tab:green", zorder=3,
               label="accepted")
    ax.scatter(100 * t["ratio"][~ok], t["accuracy"][~ok], color="tab:red", zorder=3,
               label="rejected")
    for r in t.itertuples():
        if r.step > 0:
            ax.annotate(str(r.step), (100 * r.ratio, r.accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    chosen = t[t["chosen"]]
    if len(chosen):
        ax.axvline(100 * float(chosen["ratio"].iloc[0]), color="tab:green", ls="--",
                   label=f"chosen {100 * float(chosen['ratio'].iloc[0]):g}%")
    ax.set_xlabel("pruned FFN neurons (%)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "pruning ratio search (numbers: evaluation order)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_ylim(bottom=max(0.0, min(np.nanmin(t["accuracy"]), base - margin) - 0.05))
    return _save(fig, path)
