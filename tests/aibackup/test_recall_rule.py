"""The rules a search check is judged by (aibackup.recall_rule.judge)."""

from __future__ import annotations

import pytest

from aibackup.recall_rule import CheckOptions, judge


def test_without_a_baseline_the_absolute_minimum_applies() -> None:
    assert judge(0.9, None, CheckOptions()).ok and not judge(0.899, None, CheckOptions()).ok
    verdict = judge(0.5, None, CheckOptions(min_recall=0.4))
    assert (verdict.ok, verdict.rule, verdict.needs, verdict.words) == (True, "absolute", 0.4, "needs 0.40")


@pytest.mark.parametrize(
    ("target", "source", "ok"),
    [(0.838, 0.888, True), (0.837, 0.888, False), (1.0, 0.5, True), (0.45, 0.5, True), (0.449, 0.5, False)],
)
def test_with_a_baseline_the_target_answers_as_well_as_the_source_within_the_tolerance(
    target: float, source: float, ok: bool
) -> None:
    verdict = judge(target, source, CheckOptions())
    assert verdict.ok is ok and verdict.rule == "baseline" and verdict.needs == pytest.approx(source - 0.05)


def test_recalls_on_the_bar_pass_despite_float_round_off() -> None:
    # 0.93 - 0.05 is 0.88000000000000001 in floats: a target at exactly 0.88 (88 hits of 100) passes.
    assert judge(88 / 100, 0.93, CheckOptions()).ok
    assert judge(0.7, 0.7, CheckOptions(recall_tolerance=0.0)).ok


def test_min_recall_is_a_floor_besides_the_comparison() -> None:
    options = CheckOptions(min_recall=0.95)
    verdict = judge(0.9, 0.92, options)
    assert not verdict.ok and verdict.needs == 0.95 and verdict.words == "needs 0.950: --min-recall"
    assert not judge(0.5, 0.8, CheckOptions(min_recall=0.3)).ok  # the comparison still applies
    assert judge(0.96, 0.92, options).ok


def test_an_approximate_target_of_an_exact_source_is_held_to_a_floor() -> None:
    verdict = judge(0.77, 1.0, CheckOptions(), source_exact=True)
    assert verdict.ok and verdict.rule == "approximate-target" and verdict.needs == 0.5
    assert not judge(0.2, 1.0, CheckOptions(), source_exact=True).ok
    assert not judge(0.77, 1.0, CheckOptions(min_recall=0.8), source_exact=True).ok  # the user's floor wins
    # Exact on both sides: the comparison with the source holds (a broken exact target fails it).
    both = judge(0.9, 1.0, CheckOptions(), source_exact=True, target_exact=True)
    assert not both.ok and both.rule == "baseline"


def test_a_shortfall_within_the_noise_of_the_measurement_is_not_a_failure() -> None:
    # 30 queries on hard data: a standard error of 0.03 cannot resolve a tolerance of 0.05.
    verdict = judge(0.70, 0.813, CheckOptions(), noise=0.03)
    assert verdict.ok and verdict.needs == pytest.approx(0.813 - 0.135)
    assert "4.5 standard errors of this measurement" in verdict.words
    assert not judge(0.677, 0.813, CheckOptions(), noise=0.03).ok  # beyond the noise: a failure
    # A precise measurement keeps the tolerance as it is.
    assert judge(0.75, 0.813, CheckOptions(), noise=0.01).needs == pytest.approx(0.763)
