"""Rich progress bars for prompt tuning (steps, loss, accuracy, best validation) and transfer."""

from __future__ import annotations

from rich.progress import TextColumn

from neurondb.extract.progress import BarReporter


class TrainProgress(BarReporter):
    """One bar per seed on stderr when ``enabled``; silent otherwise."""

    def task(self, description: str, total: int) -> int:
        if not self.enabled:
            return 0
        bar = self._bar(
            TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("acc {task.fields[acc]}"), TextColumn("val {task.fields[val]}"))
        return bar.add_task(description, total=total, epoch="-", loss="-", acc="-",
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



class CountProgress(BarReporter):
    """A bar over a fixed number of jobs (e.g. transfer cells), naming the current one."""

    def __init__(self, enabled: bool = True):
        super().__init__(enabled)
        self.task_id = 0

    def start(self, description: str, total: int) -> None:
        if not self.enabled:
            return
        bar = self._bar(TextColumn("{task.fields[current]}"))
        self.task_id = bar.add_task(description, total=total, current="")

    def step(self, current: str, advance: int = 1) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, advance=advance, current=current)

