"""A rich progress bar for prompt tuning: steps, running loss and accuracy, best validation."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """One bar per seed on stderr when ``enabled``; silent otherwise."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress: Progress | None = None

    def info(self, msg: str) -> None:
        if self.enabled:
            self.console.print(msg, highlight=False, soft_wrap=True)

    def task(self, description: str, total: int) -> int:
        if not self.enabled:
            return 0
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
                TextColumn("acc {task.fields[acc]}"), TextColumn("val {task.fields[val]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False)
            self.progress.start()
        return self.progress.add_task(description, total=total, epoch="-", loss="-", acc="-",
                                      val="-")

    def update(self, task: int, advance: int = 0, *, total: int | None = None,
               epoch: int | None = None, loss: float | None = None, acc: float | None = None,
               val: float | None = None) -> None:
        if not self.enabled or self.progress is None:
            return
        fields: dict = {}
        if epoch is not None:
            fields["epoch"] = str(epoch)
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if acc is not None:
            fields["acc"] = f"{acc:.3f}"
        if val is not None:
            fields["val"] = f"{val:.3f}"
        self.progress.update(task, advance=advance, total=total, **fields)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class CountProgress:
    """A bar over a fixed number of jobs (e.g. transfer cells), naming the current one."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress: Progress | None = None
        self.task_id = 0

    def start(self, description: str, total: int) -> None:
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[current]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.task_id = self.progress.add_task(description, total=total, current="")

    def step(self, current: str, advance: int = 1) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, advance=advance, current=current)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
