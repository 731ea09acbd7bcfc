"""Keep rules: which bundles of one source a retention policy keeps (pure functions, no I/O).

The rules are restic's (``restic forget``), applied to the bundles of **one source** (``prune`` groups the
bundles by their manifest's source kind and uri and calls :func:`decide` once per group). A bundle kept by
any rule is kept (the rules are ORed); a bundle no rule keeps goes.

==================  =========================================================================================
rule                keeps
==================  =========================================================================================
``keep_last N``     the N newest bundles (reason ``last N``)
``keep_hourly N``   the newest bundle of each of the N newest hours that hold a bundle (``hourly 2026-11-24
                    02:00``)
``keep_daily N``    the newest bundle of each of the N newest days that hold one (``daily 2026-11-24``)
``keep_weekly N``   ... of the N newest ISO weeks, Monday to Sunday (``weekly 2026-W48``)
``keep_monthly N``  ... of the N newest months (``monthly 2026-11``)
``keep_yearly N``   ... of the N newest years (``yearly 2026``)
``keep_within D``   every bundle created at most D before the newest bundle of the source, or before *now*
                    if that is earlier (``within 7d``)
pinned              a pinned bundle (``aibackup pin``) is always kept (``pinned``)
==================  =========================================================================================

Details, each chosen to keep rather than lose:

- Calendar buckets are taken in **UTC**, from the manifest's ``created_at``. Buckets without a bundle do not
  count: ``keep_daily 7`` keeps the newest bundle of each of the 7 newest days *that have a bundle*, so a
  week without backups never empties a repository. Within one bucket the newest bundle is the one kept
  (ties in ``created`` are broken by the bundle id, which sorts by start time).
- ``keep_within`` counts back from the newest bundle of the source (as restic does), or from *now* if that
  is earlier (a bundle dated in the future never shrinks the window). A source whose backups stopped a
  month ago therefore still keeps its last D of bundles instead of losing every one.
- The rules do not see pins: a pinned bundle still fills the bucket it is the newest of, so pinning an
  old bundle never changes which other bundles are kept.
- A count of 0 (or None) is no rule; a negative count means no limit (restic's ``-1``): every bucket.
- A policy without any rule is refused (:class:`~aibackup.errors.UsageError`), never read as "keep
  nothing". With any rule the newest bundle of the source is always kept.

The policy is anything with the fields of ``aibackup.config.RetentionPolicy`` (:class:`KeepPolicy`):
``keep_last``, ``keep_hourly``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``, ``keep_yearly``
(``int | None``), ``keep_within`` (``timedelta | None``) and ``is_empty()``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aibackup.errors import UsageError

if TYPE_CHECKING:
    from aibackup.manifests.model import BundleManifest

NO_RULE = (
    "no keep rule: pass --keep-last N (or --keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/"
    "--keep-yearly N, --keep-within DURATION) or set retention in the config"
)


def series_key(manifest: BundleManifest) -> str:
    """The series a bundle belongs to, the group the keep rules are applied to: the store (kind and uri) and
    the collections backed up, so `backup chroma:X --collection docs` and `--collection faq` are kept apart
    (each keeps its own newest bundles) instead of one series pruning the other. JSON so any value is
    hashable. Every rule keeps a series' newest bundle, which the nightly copy relies on (aibackup.copy)."""
    source = manifest.source
    names = sorted(d.name for d in manifest.datasets)
    return json.dumps([source.get("kind"), source.get("uri"), names], sort_keys=True, default=str)


class KeepPolicy(Protocol):
    """What :func:`decide` reads of a retention policy (``aibackup.config.RetentionPolicy`` has it)."""

    @property
    def keep_last(self) -> int | None: ...
    @property
    def keep_hourly(self) -> int | None: ...
    @property
    def keep_daily(self) -> int | None: ...
    @property
    def keep_weekly(self) -> int | None: ...
    @property
    def keep_monthly(self) -> int | None: ...
    @property
    def keep_yearly(self) -> int | None: ...
    @property
    def keep_within(self) -> dt.timedelta | None: ...
    def is_empty(self) -> bool: ...


@dataclass(frozen=True)
class Candidate:
    """One bundle of a source, as the rules see it."""

    bundle_id: str
    created: dt.datetime  # UTC, from the manifest's created_at
    pinned: bool = False


@dataclass(frozen=True)
class Decision:
    """Whether a bundle stays, and every reason it stays (empty when it goes)."""

    bundle_id: str
    keep: bool
    reasons: tuple[str, ...]  # e.g. ("last 3", "daily 2026-11-24", "within 7d", "pinned")


#: The calendar rules, in the order their reasons are listed: (policy field, reason label of a UTC time).
BUCKETS: tuple[tuple[str, Callable[[dt.datetime], str]], ...] = (
    ("keep_hourly", lambda t: f"hourly {t:%Y-%m-%d %H}:00"),
    ("keep_daily", lambda t: f"daily {t:%Y-%m-%d}"),
    ("keep_weekly", lambda t: "weekly {}-W{:02d}".format(*t.isocalendar()[:2])),
    ("keep_monthly", lambda t: f"monthly {t:%Y-%m}"),
    ("keep_yearly", lambda t: f"yearly {t:%Y}"),
)


def is_empty(policy: KeepPolicy) -> bool:
    """True when the policy has no rule that keeps anything (its own ``is_empty()`` or ours says so)."""
    counts = [_count(policy, name) for name in ("keep_last", *(name for name, _ in BUCKETS))]
    within = _within(policy)
    ours = all(n == 0 for n in counts) and within is None
    theirs = getattr(policy, "is_empty", None)
    return ours or (callable(theirs) and bool(theirs()))


def decide(candidates: Sequence[Candidate], policy: KeepPolicy, now: dt.datetime) -> list[Decision]:
    """Apply `policy` to the bundles of one source; one decision per candidate, newest first.

    Raises UsageError when the policy has no rule (rather than deciding to remove every bundle).
    """
    if is_empty(policy):
        raise UsageError(NO_RULE)
    ordered = sorted(candidates, key=lambda c: (_utc(c.created), c.bundle_id), reverse=True)
    reasons: dict[str, list[str]] = {c.bundle_id: [] for c in ordered}

    last = _count(policy, "keep_last")
    for position, candidate in enumerate(ordered):
        if last < 0 or position < last:
            reasons[candidate.bundle_id].append(f"last {last}" if last > 0 else "last")

    for name, label in BUCKETS:
        remaining = _count(policy, name)
        seen: str | None = None
        for candidate in ordered:
            if remaining == 0:
                break
            bucket = label(_utc(candidate.created))
            if bucket != seen:  # newest first: the first bundle met in a bucket is its newest
                seen = bucket
                remaining -= 1
                reasons[candidate.bundle_id].append(bucket)
        # As restic (0.16+) does: a rule with slots left over also keeps the oldest bundle, so a history
        # shorter than the rule asks for keeps its beginning.
        if remaining > 0 and ordered:
            oldest = ordered[-1].bundle_id
            rule = name.removeprefix("keep_")
            if f"oldest ({rule})" not in reasons[oldest]:
                reasons[oldest].append(f"oldest ({rule})")

    within = _within(policy)
    if within is not None and ordered:
        moment = min(_utc(now), _utc(ordered[0].created))
        earliest = dt.datetime.min.replace(tzinfo=dt.UTC)
        # A keep_within reaching back past year 1 (1000000d, written to mean "forever") keeps every bundle,
        # rather than overflowing the subtraction.
        cutoff = moment - within if within < moment - earliest else earliest
        for candidate in ordered:
            if _utc(candidate.created) >= cutoff:
                reasons[candidate.bundle_id].append(f"within {format_duration(within)}")

    for candidate in ordered:
        if candidate.pinned:
            reasons[candidate.bundle_id].append("pinned")
    return [Decision(c.bundle_id, bool(reasons[c.bundle_id]), tuple(reasons[c.bundle_id])) for c in ordered]


def format_duration(duration: dt.timedelta) -> str:
    """A compact duration for reasons: ``7d``, ``1d12h``, ``90m``, ``30s``."""
    seconds = int(duration.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if n)
    return text or "0s"


def _count(policy: KeepPolicy, name: str) -> int:
    value = getattr(policy, name, None)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"retention {name} must be a whole number, not {value!r}")
    return value


def _within(policy: KeepPolicy) -> dt.timedelta | None:
    value = getattr(policy, "keep_within", None)
    if value is None:
        return None
    if not isinstance(value, dt.timedelta):
        raise UsageError(f"retention keep_within must be a duration, not {value!r}")
    return value if value > dt.timedelta(0) else None


def _utc(moment: dt.datetime) -> dt.datetime:
    """UTC; a naive time is taken as UTC (manifests always say UTC)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
