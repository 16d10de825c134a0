"""The demo's clock: an up-front estimate of its duration from its sizes, and a step timer
that prints a line per step with the elapsed time and never stays silent for long.

The estimate multiplies each step's work (sentences through the model, counted in forward
passes; a training sentence costs :data:`TRAIN_FORWARDS` of them) by a cost per forward pass
measured on 2 CPU cores with MiniLM on the movie-review sentences, and adds each
step's fixed cost (loading models, exporting, timing). It is an estimate for that machine:
it scales with the cores and with whatever else runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

#: A training sentence (forward, backward, optimizer step) in forward passes.
TRAIN_FORWARDS = 3.0
#: Seconds per forward pass of one sentence and fixed seconds, per step, fitted to measured runs
#: of the quick sizes on 2 CPU cores shared with other work (load average about 3: the demo got
#: 1.45 cores) and to the earlier 6 min 43 s of the full sizes on a quiet machine.
SECONDS_PER_FORWARD = {"tune": 0.011, "extract": 0.01, "suppress": 0.015,
                       "attribute": 0.03, "prune": 0.007, "condense": 0.004}
FIXED_SECONDS = {"tune": 4.0, "extract": 2.0, "rank": 1.0, "suppress": 2.0, "attribute": 1.0,
                 "prune": 5.0, "condense": 2.0, "report": 2.0}
#: Model evaluations of a ratio search on the 0.05 grid (the unpruned model, then a binary
#: search of 19 points: four or five) plus the export's full and pruned scoring.
PRUNE_EVALUATIONS = 7
#: Seconds without a line after which the step timer says the step is still running.
HEARTBEAT_SECONDS = 10.0


class Sizes(Protocol):
    """The sizes :func:`estimate_seconds` reads (a :class:`neurondb.demo.DemoConfig`)."""

    seeds: tuple[int, ...]
    train: int
    validation: int
    epochs: int
    rates: tuple[float, ...]
    random_seeds: int
    attribution_examples: int
    condense_epochs: int


def step_forwards(cfg: Sizes) -> dict[str, float]:
    """Each step's work in forward passes of one sentence."""
    seeds, val = len(cfg.seeds), cfg.validation
    per_epoch = cfg.train * TRAIN_FORWARDS + val
    return {
        "tune": seeds * cfg.epochs * per_epoch,
        "extract": seeds * 2 * val,                       # validation tokens + train statistics
        "suppress": (1 + len(cfg.rates) * (1 + cfg.random_seeds)) * val,
        "attribute": float(cfg.attribution_examples),
        "prune": PRUNE_EVALUATIONS * val,
        "condense": (cfg.condense_epochs * per_epoch + val) if cfg.condense_epochs else 0.0,
    }


def estimate_seconds(cfg: Sizes) -> dict[str, float]:
    """Estimated seconds per step on 2 quiet CPU cores (see the module docstring)."""
    work = step_forwards(cfg)
    out = {}
    for step, fixed in FIXED_SECONDS.items():
        if step == "condense" and not cfg.condense_epochs:
            continue
        out[step] = fixed + work.get(step, 0.0) * SECONDS_PER_FORWARD.get(step, 0.0)
    return out


def clock(seconds: float) -> str:
    """``m:ss``."""
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


class StepTimer:
    """Times named steps into ``seconds`` and prints, through ``say``, a line when a step
    starts (with the time since the timer started), a line every ``heartbeat`` seconds while
    it runs, and a line when it ends with its duration and, given the steps' ``estimates``,
    the time the rest should take at the pace measured so far (:meth:`remaining`): the
    up-front estimate is for one machine, and tuning often stops early."""

    def __init__(self, seconds: dict[str, float], say: Callable[[str], None],
                 heartbeat: float = HEARTBEAT_SECONDS,
                 clock_fn: Callable[[], float] = time.perf_counter,
                 estimates: dict[str, float] | None = None):
        self.seconds, self.say, self.heartbeat, self.now = seconds, say, heartbeat, clock_fn
        self.estimates = dict(estimates or {})
        self.t0 = clock_fn()

    def remaining(self) -> float | None:
        """The estimated seconds of the steps still to come, scaled by this machine's pace so
        far (seconds taken / seconds estimated over the steps done); None before any step
        with an estimate has ended, or when none is left."""
        done = [k for k in self.seconds if self.estimates.get(k)]
        todo = [k for k in self.estimates if k not in self.seconds]
        if not done or not todo:
            return None
        pace = sum(self.seconds[k] for k in done) / sum(self.estimates[k] for k in done)
        return pace * sum(self.estimates[k] for k in todo)

    def elapsed(self) -> float:
        """Seconds since the timer started."""
        return self.now() - self.t0

    @contextmanager
    def step(self, name: str, what: str, estimate: float | None = None) -> Iterator[None]:
        """Time the block as step ``name`` (``what``: the line printed at its start;
        ``estimate``: its estimated seconds, printed with it)."""
        est = f", about {clock(estimate)}" if estimate is not None else ""
        self.say(f"== [{clock(self.elapsed())}] {what}{est}")
        start = self.now()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat):
                self.say(f"   [{clock(self.elapsed())}] {name}: still running "
                         f"({clock(self.now() - start)} into this step)")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.seconds[name] = round(self.now() - start, 1)
            rest = self.remaining()
            self.say(f"   [{clock(self.elapsed())}] {name} done in {self.seconds[name]:.0f} s"
                     + (f"; the rest about {clock(rest)} at this pace" if rest is not None
                        else ""))
