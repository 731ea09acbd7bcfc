"""The keep rules on their own: restic's buckets in UTC, ties, pins, keep_within, refusal of an empty policy."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from aibackup.errors import UsageError
from aibackup.retention import Candidate, Decision, decide, format_duration, is_empty

UTC = dt.UTC


@dataclass(frozen=True)
class Policy:
    """The fields of aibackup.config.RetentionPolicy (what decide reads)."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: dt.timedelta | None = None

    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.keep_last,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
                self.keep_within,
            )
        )


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def bundle(moment: dt.datetime, suffix: str = "00000000", pinned: bool = False) -> Candidate:
    return Candidate(f"{moment:%Y%m%dT%H%M%S.%f}Z-{suffix}", moment, pinned)


def kept(decisions: list[Decision]) -> list[str]:
    return [d.bundle_id for d in decisions if d.keep]


def nights(first: str, last: str) -> list[Candidate]:
    day, end = at(f"{first}T02:00:00"), at(f"{last}T02:00:00")
    out = []
    while day <= end:
        out.append(bundle(day))
        day += dt.timedelta(days=1)
    return out


def test_a_year_of_nightly_bundles_keeps_exactly_the_restic_set() -> None:
    candidates = nights("2025-01-01", "2026-01-31")
    policy = Policy(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=5)
    decisions = decide(candidates, policy, at("2026-01-31T12:00:00"))
    assert [d.bundle_id for d in decisions] == sorted((c.bundle_id for c in candidates), reverse=True)
    expected_days = [
        # daily 7 (and last 3: the 29th to the 31st)
        "2026-01-31", "2026-01-30", "2026-01-29", "2026-01-28", "2026-01-27", "2026-01-26", "2026-01-25",
        # weekly 4: the Sundays ending ISO weeks 2026-W04..W02 (W05 is the 31st, a Saturday; W04 is the 25th)
        "2026-01-18", "2026-01-11",
        # monthly 12: the last night of each month back to February 2025 (January 2025 is the 13th month)
        "2025-12-31", "2025-11-30", "2025-10-31", "2025-09-30", "2025-08-31", "2025-07-31", "2025-06-30",
        "2025-05-31", "2025-04-30", "2025-03-31", "2025-02-28",
        # yearly 5: 2026 (the 31st) and 2025 (December 31st): only two years hold bundles, so the rule has
        # slots left and, as in restic 0.17, the oldest bundle is kept too
        "2025-01-01",
    ]  # fmt: skip
    assert kept(decisions) == [bundle(at(f"{d}T02:00:00")).bundle_id for d in expected_days]
    reasons = {d.bundle_id[:8]: d.reasons for d in decisions}
    assert reasons["20260131"] == ("last 3", "daily 2026-01-31", "weekly 2026-W05", "monthly 2026-01", "yearly 2026")
    assert reasons["20260125"] == ("daily 2026-01-25", "weekly 2026-W04")
    assert reasons["20251231"] == ("monthly 2025-12", "yearly 2025")
    assert reasons["20250101"] == ("oldest (yearly)",)
    assert reasons["20250131"] == ()
    assert all(
        not d.keep and d.reasons == ()
        for d in decisions
        if d.bundle_id[:8] not in {x.replace("-", "") for x in expected_days}
    )


def test_iso_weeks_cross_the_new_year() -> None:
    # Monday 2025-12-29 belongs to ISO week 2026-W01; Sunday 2025-12-28 closes 2025-W52.
    decisions = decide(nights("2025-12-20", "2025-12-31"), Policy(keep_weekly=3), at("2026-01-01T00:00:00"))
    assert [(d.bundle_id[:8], d.reasons) for d in decisions if d.keep] == [
        ("20251231", ("weekly 2026-W01",)),
        ("20251228", ("weekly 2025-W52",)),
        ("20251221", ("weekly 2025-W51",)),
    ]


def test_the_newest_bundle_of_a_day_is_its_daily_one_and_empty_days_do_not_count() -> None:
    candidates = [
        bundle(at("2026-11-24T01:00:00")),
        bundle(at("2026-11-24T23:59:59.999999")),
        bundle(at("2026-11-24T09:00:00")),
        bundle(at("2026-11-20T05:00:00")),  # three empty days between
        bundle(at("2026-11-20T04:00:00")),
        bundle(at("2026-11-19T04:00:00")),
    ]
    decisions = decide(candidates, Policy(keep_daily=2), at("2026-11-25T00:00:00"))
    assert [(d.bundle_id[:15], d.reasons) for d in decisions if d.keep] == [
        ("20261124T235959", ("daily 2026-11-24",)),
        ("20261120T050000", ("daily 2026-11-20",)),
    ]
    assert len(decisions) == 6


def test_identical_times_are_ordered_by_bundle_id() -> None:
    moment = at("2026-11-24T02:00:00")
    low, high = bundle(moment, "00000001"), bundle(moment, "ffffffff")
    decisions = decide([low, high], Policy(keep_daily=1), moment)
    assert [d.bundle_id for d in decisions] == [high.bundle_id, low.bundle_id]
    assert kept(decisions) == [high.bundle_id]


def test_hourly_buckets_are_utc() -> None:
    # 01:30+02:00 is 23:30 UTC the day before: a different hour (and day) than 00:10 UTC.
    zoned = dt.datetime(2026, 11, 25, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    candidates = [bundle(at("2026-11-25T00:10:00")), Candidate("20261124T233000.000000Z-00000000", zoned)]
    decisions = decide(candidates, Policy(keep_hourly=5, keep_daily=1), at("2026-11-25T01:00:00"))
    assert [d.reasons for d in decisions] == [
        ("hourly 2026-11-25 00:00", "daily 2026-11-25"),
        ("hourly 2026-11-24 23:00", "oldest (hourly)"),  # five hourly slots, two hours: the oldest stays
    ]


def test_a_pinned_bundle_outside_every_rule_stays_and_takes_no_bucket() -> None:
    candidates = nights("2026-11-01", "2026-11-10")
    candidates[0] = Candidate(candidates[0].bundle_id, candidates[0].created, pinned=True)
    candidates[9] = Candidate(candidates[9].bundle_id, candidates[9].created, pinned=True)
    decisions = decide(candidates, Policy(keep_last=2), at("2026-11-10T12:00:00"))
    assert [(d.bundle_id[:8], d.reasons) for d in decisions if d.keep] == [
        ("20261110", ("last 2", "pinned")),
        ("20261109", ("last 2",)),
        ("20261101", ("pinned",)),
    ]


def test_keep_within_counts_back_from_the_newest_bundle_or_now_whichever_is_earlier() -> None:
    candidates = nights("2026-10-01", "2026-10-10")
    week = dt.timedelta(days=7)
    # Backups stopped a month ago: the last week of bundles stays (restic does the same), not nothing.
    stopped = decide(candidates, Policy(keep_within=week), at("2026-11-10T00:00:00"))
    assert [d.bundle_id[:8] for d in stopped if d.keep] == [f"202610{d:02d}" for d in range(10, 2, -1)]
    assert {d.reasons for d in stopped if d.keep} == {("within 7d",)}
    # A bundle dated in the future does not move the window forward.
    future = [*candidates, bundle(at("2026-12-31T00:00:00"))]
    decisions = decide(future, Policy(keep_within=dt.timedelta(days=2)), at("2026-10-10T12:00:00"))
    assert [d.bundle_id[:8] for d in decisions if d.keep] == ["20261231", "20261010", "20261009"]


def test_rules_are_ored() -> None:
    candidates = nights("2026-01-01", "2026-03-31")
    decisions = decide(
        candidates, Policy(keep_last=1, keep_monthly=2, keep_within=dt.timedelta(days=1)), at("2026-03-31T03:00:00")
    )
    assert [(d.bundle_id[:8], d.reasons) for d in decisions if d.keep] == [
        ("20260331", ("last 1", "monthly 2026-03", "within 1d")),
        ("20260330", ("within 1d",)),
        ("20260228", ("monthly 2026-02",)),
    ]


def test_a_negative_count_means_every_bucket() -> None:
    candidates = nights("2026-01-01", "2026-03-31")
    decisions = decide(candidates, Policy(keep_monthly=-1), at("2026-04-01T00:00:00"))
    assert [d.bundle_id[:8] for d in decisions if d.keep] == ["20260331", "20260228", "20260131"]
    assert kept(decide(candidates, Policy(keep_last=-1), at("2026-04-01T00:00:00"))) == sorted(
        (c.bundle_id for c in candidates), reverse=True
    )


@pytest.mark.parametrize("policy", [Policy(), Policy(keep_last=0), Policy(keep_daily=0, keep_within=dt.timedelta(0))])
def test_a_policy_without_a_rule_is_refused(policy: Policy) -> None:
    assert is_empty(policy)
    with pytest.raises(UsageError, match="no keep rule: pass --keep-last N"):
        decide(nights("2026-01-01", "2026-01-03"), policy, at("2026-01-04T00:00:00"))


def test_no_candidates_and_durations() -> None:
    assert decide([], Policy(keep_last=1), at("2026-01-01T00:00:00")) == []
    assert [format_duration(dt.timedelta(**kw)) for kw in ({"days": 7}, {"hours": 36}, {"minutes": 90}, {})] == [
        "7d",
        "1d12h",
        "1h30m",
        "0s",
    ]
