"""Heatmaps of comparison matrices (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to the PNG ``path`` atomically (a temporary sibling renamed over it),
    close it, and return the path: the one way neurondb's figures reach the disk."""
    import matplotlib.pyplot as plt

    from neurondb.store.io import os_errors

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        with os_errors(path):  # a full disk, a directory in the way: one line naming it
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
            os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def heatmap(matrix: pd.DataFrame | Sequence[tuple[str, pd.DataFrame]], path: str | Path,
            title: str = "", vmin: float = -1.0, vmax: float = 1.0) -> Path:
    """Draw one matrix (or several ``(title, matrix)`` panels side by side) to a PNG at ``path``.

    Cells are annotated with their value (2 decimals) when the matrix is at most 12 x 12.
    The file is written atomically; returns its path.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    panels = [(title, matrix)] if isinstance(matrix, pd.DataFrame) else list(matrix)
    n = max(len(panels[0][1].index), 1)
    size = min(2.0 + 0.6 * n, 14.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    im = None
    for k, (ax, (t, m)) in enumerate(zip(axes[0], panels)):
        vals = m.to_numpy(dtype=float)
        im = ax.imshow(vals, vmin=vmin, vmax=vmax, cmap="coolwarm")
        ax.set_xticks(range(len(m.columns)), [str(c) for c in m.columns], rotation=45, ha="right")
        ax.set_yticks(range(len(m.index)), [str(c) for c in m.index])
        if k > 0 and list(m.index) == list(panels[0][1].index):
            ax.tick_params(labelleft=False)  # the row names are the first panel's
        ax.set_title(t)
        if vals.shape[0] <= 12 and vals.shape[1] <= 12:
            for (i, j), v in np.ndenumerate(vals):
                ax.text(j, i, "nan" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    return save_figure(fig, path)
