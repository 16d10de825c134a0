"""Progress reporting for long jobs: rich bars with counts, job-specific fields and ETA."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class BarReporter:
    """Messages and bars on stderr when ``enabled``; silent otherwise (the Python API's
    choice in tests). Subclasses add their own columns through :meth:`_bar`."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress: Progress | None = None

    def info(self, msg: str) -> None:
        if self.enabled:
            self.console.print(msg, highlight=False, soft_wrap=True)

    def _bar(self, *fields: ProgressColumn) -> Progress:
        """Start (once) a bar: description, bar, done/total, ``fields``, elapsed, ETA."""
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                *fields, TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False)
            self.progress.start()
        return self.progress

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class Reporter(BarReporter):
    """Extraction: examples done, tokens/s and ETA per run."""

    def __init__(self, enabled: bool = True):
        super().__init__(enabled)
        self._tokens: dict[int, int] = {}
        self._t0: dict[int, float] = {}

    def task(self, description: str, total: int) -> int:
        if not self.enabled:
            return 0
        bar = self._bar(TextColumn("{task.fields[tps]} tok/s"))
        tid = bar.add_task(description, total=total, tps="-")
        self._tokens[tid] = 0
        self._t0[tid] = time.perf_counter()
        return tid

    def advance(self, task: int, n: int, tokens: int = 0) -> None:
        if not self.enabled or self.progress is None:
            return
        self._tokens[task] += tokens
        dt = max(time.perf_counter() - self._t0[task], 1e-9)
        self.progress.update(task, advance=n, tps=f"{self._tokens[task] / dt:,.0f}")
