"""The restore-test drill's golden-query check (aibackup.drill): the target's recall of each golden query
against the source's at backup, with the noise of two HNSW builds allowed for, as the search check does."""

from __future__ import annotations

import pytest

from aibackup.drill import _golden_check
from aibackup.manifests.baseline import GoldenBaseline
from aibackup.recall_rule import CheckOptions

# Twelve golden queries on hard data: how the source's HNSW build answered each at backup, and how another
# build of the same records (a perfect restore) answers them: a tenth lower on seven, the same on five.
SOURCE = (0.9, 0.8, 1.0, 0.7, 0.9, 0.8, 1.0, 0.6, 0.9, 0.8, 0.7, 1.0)
REBUILT = (0.8, 0.7, 1.0, 0.6, 0.9, 0.7, 0.9, 0.5, 0.9, 0.7, 0.7, 1.0)
SHA = "ab" * 32


def baseline(recalls: tuple[float, ...] | None) -> GoldenBaseline:
    return GoldenBaseline(SHA, len(SOURCE), round(sum(SOURCE) / len(SOURCE), 6), recalls)


def test_a_perfect_restore_within_the_noise_of_twelve_queries_passes() -> None:
    check = _golden_check("golden queries", REBUILT, baseline(SOURCE), CheckOptions())
    m = check.measures
    # 0.058 below the source: the tolerance alone (0.05) would call it failed; 12 paired queries cannot
    # resolve that, and the allowance widens to 4.5 standard errors of their differences.
    assert m["source_recall"] - m["recall"] > 0.05
    assert check.ok and m["standard_error"] == pytest.approx(0.01486, abs=1e-4)
    assert "4.5 standard errors of this measurement" in check.detail and m["queries"] == 12


def test_a_target_that_answers_clearly_worse_still_fails() -> None:
    worse = tuple(max(0.0, r - 0.4) for r in SOURCE)
    for recorded in (SOURCE, None):
        check = _golden_check("golden queries", worse, baseline(recorded), CheckOptions())
        assert not check.ok and check.measures["rule"] == "baseline"


def test_an_older_bundle_without_each_querys_recall_allows_for_more_noise() -> None:
    paired = _golden_check("golden queries", REBUILT, baseline(SOURCE), CheckOptions())
    unpaired = _golden_check("golden queries", REBUILT, baseline(None), CheckOptions())
    assert unpaired.ok and unpaired.measures["standard_error"] > 2 * paired.measures["standard_error"]
    assert unpaired.measures["needs"] < paired.measures["needs"]


def test_identical_answers_keep_the_tolerance() -> None:
    check = _golden_check("golden queries", SOURCE, baseline(SOURCE), CheckOptions())
    assert check.ok and check.measures["standard_error"] == 0.0
    assert check.measures["needs"] == pytest.approx(check.measures["source_recall"] - 0.05)
    single = _golden_check("golden queries", (0.5,), GoldenBaseline(SHA, 1, 1.0, (1.0,)), CheckOptions())
    assert not single.ok and single.measures["standard_error"] == 0.0  # one query: no spread to measure
