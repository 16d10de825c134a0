"""The training curve of one tuned prompt: a CSV and a PNG (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class EpochRecord:
    """One epoch. Losses are mean cross-entropy in nats; accuracies in [0, 1]; ``train_*``
    are running figures over the epoch's batches (the prompt moves during the epoch),
    ``eval_*`` are measured after the epoch. ``seconds``: wall time of the epoch."""

    epoch: int
    train_loss: float
    train_accuracy: float
    eval_loss: float | None
    eval_accuracy: float | None
    seconds: float


CURVE_CSV = "curve.csv"
CURVE_PNG = "curve.png"


def write_curve_csv(records: list[EpochRecord], path: str | Path) -> Path:
    path = Path(path)
    fields = list(EpochRecord.__dataclass_fields__)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return path


def read_curve_csv(path: str | Path) -> list[EpochRecord]:
    out: list[EpochRecord] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.append(EpochRecord(
                epoch=int(row["epoch"]), train_loss=float(row["train_loss"]),
                train_accuracy=float(row["train_accuracy"]),
                eval_loss=float(row["eval_loss"]) if row["eval_loss"] else None,
                eval_accuracy=float(row["eval_accuracy"]) if row["eval_accuracy"] else None,
                seconds=float(row["seconds"])))
    return out


def plot_curve(records: list[EpochRecord], path: str | Path, title: str = "",
               best_epoch: int | None = None) -> Path:
    """Loss (left) and accuracy (right) per epoch, train and validation; the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r.epoch for r in records]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [r.train_loss for r in records], "o-", label="train (running)")
    a2.plot(ep, [r.train_accuracy for r in records], "o-", label="train (running)")
    if any(r.eval_loss is not None for r in records):
        a1.plot(ep, [r.eval_loss for r in records], "s-", label="validation")
        a2.plot(ep, [r.eval_accuracy for r in records], "s-", label="validation")
    for ax, name in ((a1, "cross-entropy (nats)"), (a2, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"kept (epoch {best_epoch})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
