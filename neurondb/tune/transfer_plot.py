"""The transfer heatmap: sources (rows) by targets (columns), mean over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def plot_transfer(df: pd.DataFrame, path: str | Path) -> Path:
    """Colour: relative performance in percent where a prompt tuned on the target exists,
    else absolute accuracy in percent; each cell also prints the absolute accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurondb.tune.transfer import transfer_matrix

    rel = transfer_matrix(df, "relative")
    acc = transfer_matrix(df, "accuracy").reindex(index=rel.index, columns=rel.columns)
    has_rel = bool(np.isfinite(rel.to_numpy(dtype=float)).any())
    shown = (rel if has_rel else acc * 100).to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(3.5 + 1.6 * shown.shape[1], 2.4 + 0.8 * shown.shape[0]))
    im = ax.imshow(np.ma.masked_invalid(shown), cmap="viridis", aspect="auto")
    lo, hi = np.nanmin(shown) if np.isfinite(shown).any() else 0, np.nanmax(shown) \
        if np.isfinite(shown).any() else 1
    ax.set_xticks(range(shown.shape[1]), [str(c) for c in rel.columns], rotation=30, ha="right")
    ax.set_yticks(range(shown.shape[0]), [str(r) for r in rel.index])
    ax.set_xlabel("target")
    ax.set_ylabel("prompt tuned on")
    a = acc.to_numpy(dtype=float)
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            top = "n/a" if not np.isfinite(shown[i, j]) else f"{shown[i, j]:.0f}%"
            txt = f"{top}\nacc {a[i, j]:.3f}" if has_rel else f"acc {a[i, j]:.3f}"
            bright = np.isfinite(shown[i, j]) and hi > lo and (shown[i, j] - lo) / (hi - lo) > 0.6
            ax.text(j, i, txt, ha="center", va="center", fontsize=9,
                    color="black" if bright else "white")
    fig.colorbar(im, ax=ax, label="relative performance (%)" if has_rel else "accuracy (%)")
    ax.set_title("prompt transfer (mean over seeds)\nacc(T | prompt S) / acc(T | prompt T) x 100"
                 if has_rel else "prompt transfer: accuracy (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
