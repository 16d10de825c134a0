"""Progress reporting for long jobs: a rich bar with examples, tokens/s and ETA."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Prints to stderr when ``enabled``; silent otherwise (the Python API's default in tests)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress: Progress | None = None
        self._tokens: dict[int, int] = {}
        self._t0: dict[int, float] = {}

    def info(self, msg: str) -> None:
        if self.enabled:
            self.console.print(msg, highlight=False, soft_wrap=True)

    def task(self, description: str, total: int) -> int:
        if not self.enabled:
            return 0
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.console, transient=False)
            self.progress.start()
        tid = self.progress.add_task(description, total=total, tps="-")
        self._tokens[tid] = 0
        self._t0[tid] = time.perf_counter()
        return tid

    def advance(self, task: int, n: int, tokens: int = 0) -> None:
        if not self.enabled or self.progress is None:
            return
        self._tokens[task] += tokens
        dt = max(time.perf_counter() - self._t0[task], 1e-9)
        self.progress.update(task, advance=n, tps=f"{self._tokens[task] / dt:,.0f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
