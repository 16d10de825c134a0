"""The one rule behind every finding, on known inputs."""

from __future__ import annotations

import math

import pytest

from neurondb.findings import (
    DOES_NOT_HOLD,
    HOLDS,
    TOO_NOISY,
    accuracy_noise,
    condensation_finding,
    judge,
    pruning_finding,
    suppression_finding,
    suppression_rate_verdict,
)


@pytest.mark.parametrize("value, low, high, claim, expected", [
    (0.50, 0.60, 0.70, "below", HOLDS),          # below every random draw
    (0.75, 0.60, 0.70, "below", DOES_NOT_HOLD),  # above every random draw
    (0.65, 0.60, 0.70, "below", TOO_NOISY),      # inside the spread
    (0.60, 0.60, 0.70, "below", TOO_NOISY),      # an end of the spread is inside
    (0.80, 0.60, 0.70, "above", HOLDS),
    (0.55, 0.60, 0.70, "above", DOES_NOT_HOLD),
    (0.70, 0.60, 0.70, "above", TOO_NOISY),
    (math.nan, 0.60, 0.70, "below", TOO_NOISY),
    (0.50, 0.70, 0.60, "below", TOO_NOISY),      # no spread to compare with
])
def test_judge(value, low, high, claim, expected):
    assert judge(value, low, high, claim) == expected


def test_judge_refuses_an_unknown_claim():
    with pytest.raises(ValueError, match="below"):
        judge(0.5, 0.4, 0.6, "sideways")


def test_the_issue_s_suppression_numbers_do_not_hold():
    # 15 %: skill 0.730 vs random mean 0.672 -- above every draw: the claim does not hold
    row = {"rate": 0.15, "selected": 0.730, "random_mean": 0.672, "random_min": 0.650,
           "random_max": 0.700}
    assert suppression_rate_verdict(row) == DOES_NOT_HOLD
    f = suppression_finding([{"rate": 0.0, "selected": 0.8, "random_mean": 0.8,
                              "random_min": 0.8, "random_max": 0.8}, row])
    assert f.verdict == DOES_NOT_HOLD and "15%: skill 0.730 vs random 0.672" in f.evidence
    assert "at 1 rates" in f.evidence          # the unsuppressed row is not a rate


def test_mixed_rates_are_too_noisy_overall():
    rows = [{"rate": 0.01, "selected": 0.5, "random_mean": 0.7, "random_min": 0.6,
             "random_max": 0.8},
            {"rate": 0.05, "selected": 0.9, "random_mean": 0.7, "random_min": 0.6,
             "random_max": 0.8}]
    f = suppression_finding(rows)
    assert f.verdict == TOO_NOISY and "1 holds, 1 does not hold" in f.evidence
    assert suppression_finding([]) is None


def test_accuracy_noise_is_two_binomial_standard_errors():
    assert accuracy_noise(0.8, 100) == pytest.approx(2 * math.sqrt(0.8 * 0.2 / 100))
    assert accuracy_noise(1.0, 100) == pytest.approx(2 * math.sqrt(0.25 / 100 / 100))
    assert accuracy_noise(0.5, 0) == math.inf


def test_pruning_and_condensation():
    assert pruning_finding(0.2, 0.80, 0.79, 0.01, 200).verdict == HOLDS
    assert pruning_finding(0.2, 0.80, 0.60, 0.01, 200).verdict == DOES_NOT_HOLD
    assert pruning_finding(None, 0.80, None, 0.01, 200).verdict == DOES_NOT_HOLD
    assert condensation_finding(0.70, 0.71, 200).verdict == TOO_NOISY   # band ±0.065
    assert condensation_finding(0.60, 0.80, 200).verdict == HOLDS
    assert condensation_finding(0.80, 0.60, 200).verdict == DOES_NOT_HOLD
