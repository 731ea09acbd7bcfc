"""The time aibackup believes it is: the real UTC clock, or ``AIBACKUP_NOW`` when set.

``AIBACKUP_NOW`` (ISO 8601, e.g. ``2026-11-25T02:00:00Z``) exists for drills and tests that simulate many
nights without sleeping: it dates bundles, ages them against their RPO and places them in retention
buckets. Durations (a restore's achieved RTO, a lock's heartbeat) are always measured on the real
monotonic clock.
"""

from __future__ import annotations

import datetime as dt
import os

from aibackup.errors import ConfigError

NOW_ENV = "AIBACKUP_NOW"
#: The times AIBACKUP_NOW may name: bundle ids are dated from it, and ages and windows are added to it.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def now() -> dt.datetime:
    """The current UTC time (``AIBACKUP_NOW`` if set)."""
    text = os.environ.get(NOW_ENV)
    if not text:
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{NOW_ENV}={text!r} is not an ISO 8601 time") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    if not EARLIEST <= moment <= LATEST:  # times are added to it (lock ages, retention windows)
        raise ConfigError(f"{NOW_ENV}={text!r} is outside {EARLIEST.year}-{LATEST.year}")
    return moment
