"""What the demo found, stated against the papers' claims: *holds*, *does not hold*, or *too
noisy to tell*, each with its numbers.

One rule decides every verdict (:func:`judge`): a measured value is set against the spread a
control gives (the random draws of a suppression rate, or the binomial noise of an accuracy
on ``n`` sentences). The claim holds when the value lies beyond the whole spread on the
claimed side, does not hold when it lies beyond it on the other side, and is too noisy to
tell when it lies inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
TOO_NOISY = "too noisy to tell"
Verdict = Literal["holds", "does not hold", "too noisy to tell"]


def judge(value: float, low: float, high: float, claim: Literal["below", "above"]) -> Verdict:
    """The verdict on a claim that ``value`` lies ``below`` (or ``above``) a control whose
    spread is ``[low, high]``: beyond the spread on the claimed side -> holds; beyond it on
    the other side -> does not hold; inside it (ends included) -> too noisy to tell."""
    if not (math.isfinite(value) and math.isfinite(low) and math.isfinite(high)) or low > high:
        return TOO_NOISY
    if claim == "below":
        return HOLDS if value < low else DOES_NOT_HOLD if value > high else TOO_NOISY
    if claim == "above":
        return HOLDS if value > high else DOES_NOT_HOLD if value < low else TOO_NOISY
    raise ValueError(f"claim must be 'below' or 'above', not {claim!r}")


def accuracy_noise(accuracy: float, n: int) -> float:
    """Two binomial standard errors of an accuracy measured on ``n`` examples."""
    if n <= 0:
        return math.inf
    p = min(max(accuracy, 0.0), 1.0)
    return 2.0 * math.sqrt(max(p * (1.0 - p), 0.25 / n) / n)


@dataclass
class Finding:
    """One claim, where it comes from, the verdict and the numbers behind it."""

    claim: str
    source: str
    verdict: Verdict
    evidence: str

    def text(self) -> str:
        """One line: ``claim (source): VERDICT — evidence``."""
        return f"{self.claim} ({self.source}): {self.verdict.upper()} — {self.evidence}"

    def to_dict(self) -> dict:
        return asdict(self)


SUPPRESSION_CLAIM = "suppressing skill neurons lowers accuracy more than suppressing random ones"
SUPPRESSION_SOURCE = "Wang et al. 2022"


def suppression_rate_verdict(row: Mapping) -> Verdict:
    """One rate of a suppression summary (``selected``, ``random_min``, ``random_max``): is
    the skill accuracy below every random draw?"""
    return judge(float(row["selected"]), float(row["random_min"]), float(row["random_max"]),
                 "below")


def suppression_finding(rows: Sequence[Mapping]) -> Finding | None:
    """The suppression claim over every rate of a summary (rate, n_neurons, selected,
    random_min, random_max, random_mean); None without rows. The overall verdict holds (does
    not hold) only when every rate says so; otherwise it is too noisy to tell."""
    rows = [r for r in rows if float(r["rate"]) > 0]
    if not rows:
        return None
    verdicts = [suppression_rate_verdict(r) for r in rows]
    parts = [f"{100 * float(r['rate']):g}%: skill {float(r['selected']):.3f} vs random "
             f"{float(r['random_mean']):.3f} [{float(r['random_min']):.3f}, "
             f"{float(r['random_max']):.3f}] -> {v}" for r, v in zip(rows, verdicts)]
    overall = verdicts[0] if len(set(verdicts)) == 1 else TOO_NOISY
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in (HOLDS, DOES_NOT_HOLD, TOO_NOISY)
                       if v in verdicts)
    return Finding(SUPPRESSION_CLAIM, SUPPRESSION_SOURCE, overall,
                   f"at {len(rows)} rates ({counts}); " + "; ".join(parts)
                   + " (skill below the lowest random draw = holds, above the highest = "
                     "does not hold)")


def pruning_finding(ratio: float | None, acc_full: float, acc_pruned: float | None,
                    margin: float, n: int) -> Finding:
    """Skeleton's claim that pruning FFN neurons by attribution keeps accuracy: a claim of no
    drop, so it holds when the pruned accuracy stays above the lower edge of the full model's
    noise band (two standard errors on ``n`` examples, at least ``margin``) and does not hold
    below it. No acceptable ratio (``ratio`` None or 0) does not hold."""
    claim = "pruning FFN neurons by attribution keeps the task's accuracy"
    source = "Skeleton, Yang et al. 2024"
    if ratio is None or ratio <= 0 or acc_pruned is None:
        return Finding(claim, source, DOES_NOT_HOLD,
                       f"no ratio on the grid kept accuracy within {margin:g} of the full "
                       f"model's {acc_full:.3f}")
    band = max(accuracy_noise(acc_full, n), margin)
    edge = acc_full - band
    return Finding(claim, source, judge(acc_pruned, edge, edge, "above"),
                   f"{100 * ratio:.0f}% of FFN neurons pruned: accuracy {acc_full:.3f} -> "
                   f"{acc_pruned:.3f} on {n} sentences (lower edge of the noise band "
                   f"{edge:.3f}; the ratio was chosen on these sentences)")


def condensation_finding(before: float, after: float, n: int) -> Finding:
    """Skeleton's claim that re-tuning the prompt on the pruned model recovers accuracy:
    ``after`` against ``before``'s noise band (two standard errors on ``n`` examples)."""
    band = accuracy_noise(before, n)
    return Finding("re-tuning the prompt on the pruned model raises its accuracy",
                   "Skeleton, Yang et al. 2024 (knowledge condensation)",
                   judge(after, before - band, before + band, "above"),
                   f"accuracy {before:.3f} -> {after:.3f} on {n} sentences (noise band "
                   f"±{band:.3f})")
