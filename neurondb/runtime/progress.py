"""Progress reporting for long jobs, in every medium: rich bars with counts, job-specific
fields and ETA on a terminal (or in Jupyter); periodic plain lines otherwise (nohup, Slurm,
CI logs, pipes), one per active task every :func:`progress_interval` seconds, each with
done/total, rate, the job's fields (tokens/s, loss, ...), elapsed time and ETA.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

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
from rich.text import Text

from neurondb.errors import UsageError

#: Environment variable: seconds between plain progress lines (default 10; 0 = every update).
INTERVAL_ENV = "NEURONDB_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 10.0
_FIELD = re.compile(r"task\.fields\[(\w+)\]")


def progress_interval() -> float:
    """Seconds between plain progress lines: ``$NEURONDB_PROGRESS_SECONDS`` or 10."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not v >= 0:  # also NaN
        raise UsageError(f"{INTERVAL_ENV}={raw!r} is not a number of seconds >= 0; "
                         f"unset it or give e.g. {INTERVAL_ENV}=10")
    return v


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@dataclass
class _PlainTask:
    description: str
    total: float | None
    fields: dict
    t0: float = field(default_factory=time.perf_counter)
    completed: float = 0.0
    last_line: float = field(default_factory=time.perf_counter)
    printed_at: float = -1.0  # ``completed`` when the last line was printed
    finished: bool = False


class PlainProgress:
    """The part of :class:`rich.progress.Progress` the reporters use, for a console that is
    not a terminal: instead of a live bar, one plain line per task every ``interval``
    seconds (from :meth:`update` and from a heartbeat thread, so a stalled task still
    shows), at once when a task completes, and at :meth:`stop` for unfinished tasks. A line:
    ``seed 1: 120/300 (40%), 2.15 steps/s, epoch 2, loss 0.6931, elapsed 0:00:56, ETA 0:01:24``.
    ``columns`` are the bar's extra columns; their :class:`TextColumn` templates render the
    task's fields (a column whose field is still ``-`` or empty is left out)."""

    def __init__(self, console: Console, columns: tuple[ProgressColumn, ...],
                 interval: float, unit: str = "it"):
        self.console = console
        self.templates = [c.text_format for c in columns if isinstance(c, TextColumn)]
        self.interval = interval
        self.unit = unit
        self.tasks: dict[int, _PlainTask] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="neurondb-progress",
                                            daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(min(self.interval, 1.0)):
            now = time.perf_counter()
            with self._lock:
                for t in self.tasks.values():
                    if not t.finished and now - t.last_line >= self.interval:
                        self._emit(t, now)

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        with self._lock:
            tid = len(self.tasks)
            self.tasks[tid] = _PlainTask(description, total, dict(fields))
            return tid

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        with self._lock:
            t = self.tasks[task_id]
            if total is not None:
                t.total = total
            if completed is not None:
                t.completed = completed
            if advance:
                t.completed += advance
            if description is not None:
                t.description = description
            t.fields.update(fields)
            if t.finished:
                return
            now = time.perf_counter()
            if t.total is not None and t.completed >= t.total:
                t.finished = True
                self._emit(t, now)
            elif now - t.last_line >= self.interval and t.completed != t.printed_at:
                self._emit(t, now)

    def line(self, t: _PlainTask, now: float | None = None) -> str:
        """The plain progress line of task ``t`` (see the class docstring)."""
        now = time.perf_counter() if now is None else now
        dt = max(now - t.t0, 1e-9)
        done = t.completed
        parts = [f"{Text.from_markup(t.description).plain}: {done:,.0f}"
                 + (f"/{t.total:,.0f} ({100 * done / t.total:.0f}%)" if t.total else "")]
        parts.append(f"{done / dt:,.2f} {self.unit}/s")
        ns = SimpleNamespace(fields=t.fields, description=t.description, completed=done,
                             total=t.total)
        for tpl in self.templates:
            if any(str(t.fields.get(k, "")) in ("", "-") for k in _FIELD.findall(tpl)):
                continue
            try:
                parts.append(Text.from_markup(tpl.format(task=ns)).plain)
            except (KeyError, AttributeError, IndexError, ValueError):
                continue
        parts.append(f"elapsed {_hms(dt)}")
        if t.total and done >= t.total:
            parts.append("done")
        elif t.total and done > 0:
            parts.append(f"ETA {_hms((t.total - done) * dt / done)}")
        else:
            parts.append("ETA ?")
        return ", ".join(parts)

    def _emit(self, t: _PlainTask, now: float) -> None:
        self.console.print(self.line(t, now), highlight=False, markup=False, soft_wrap=True)
        t.last_line, t.printed_at = now, t.completed

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            now = time.perf_counter()
            for t in self.tasks.values():
                if not t.finished and t.completed != t.printed_at:
                    self._emit(t, now)
                t.finished = True


class BarReporter:
    """Messages and bars on stderr when ``enabled``; silent otherwise (the Python API's
    choice in tests). Subclasses add their own columns through :meth:`_bar`."""

    def __init__(self, enabled: bool = True, unit: str = "it"):
        self.enabled = enabled
        self.unit = unit  # what a task counts, for the plain lines' rate ("steps" -> steps/s)
        self.console = Console(stderr=True)
        self.progress: Progress | PlainProgress | None = None

    def info(self, msg: str) -> None:
        if self.enabled:
            self.console.print(msg, highlight=False, soft_wrap=True)

    @property
    def live(self) -> bool:
        """Whether progress shows as live rich bars (a terminal or Jupyter) rather than as
        periodic plain lines."""
        return self.console.is_terminal or self.console.is_jupyter

    def _bar(self, *fields: ProgressColumn) -> Progress | PlainProgress:
        """Start (once) a bar: description, bar, done/total, ``fields``, elapsed, ETA; on a
        console that is not a terminal, a :class:`PlainProgress` printing the same as lines
        every :func:`progress_interval` seconds."""
        if self.progress is None and not self.live:
            self.progress = PlainProgress(self.console, fields, progress_interval(), self.unit)
            self.progress.start()
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
        super().__init__(enabled, unit="examples")
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
