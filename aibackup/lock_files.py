"""The lock files under ``locks/``: what one says (:class:`LockFile`: kind, scope, owner, heartbeat, the
process that holds it), reading and rewriting them on any storage, and saying them in words. The lock
protocol itself is :mod:`aibackup.lock`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aibackup import clock
from aibackup.errors import AibackupError, IntegrityError
from aibackup.storage import Storage

LOCKS = "locks"
BACKUP = "backup"
PRUNE = "prune"
KINDS = (BACKUP, PRUNE)
LOCK_FORMAT = "aibackup-lock"
LOCK_VERSION = 1
#: The scope of a lock on the whole repository.
EVERYTHING = "*"
#: How far ahead of this machine's clock another host's may run before its times are distrusted.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class LockFile:
    """Another lock as read from ``locks/``."""

    name: str
    record: dict[str, Any] | None  # None: unreadable
    beat: dt.datetime | None  # heartbeat_at, or the object's modification time when unreadable

    @property
    def kind(self) -> str | None:
        kind = self.record.get("kind") if self.record else None
        return kind if isinstance(kind, str) else None

    @property
    def scope(self) -> str | None:
        scope = self.record.get("scope") if self.record else None
        return scope if isinstance(scope, str) else None

    def stale_after(self, stale_after: timedelta) -> timedelta:
        """The reader's timeout, but never less than the holder's own (which is at least three of its
        heartbeats): the holder counts its lock as lost before any reader may take it over."""
        longest = stale_after
        for field, factor in (("stale_after_seconds", 1), ("heartbeat_seconds", 3)):
            seconds = self.record.get(field) if self.record else None
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and math.isfinite(seconds):
                longest = max(longest, timedelta(seconds=factor * max(0.0, float(seconds))))
        return longest

    def is_stale(self, now: dt.datetime, stale_after: timedelta) -> bool:
        if self.holder_is_gone():
            return True
        return self.beat is not None and now - self.beat > self.stale_after(stale_after)

    def holder_is_gone(self) -> bool:
        """True when the holder provably no longer runs: its lock names this host, this boot and this PID
        namespace, and no process has its pid (a crashed run on this machine need not wait for the heartbeat
        to age). Anything less certain (another host or container, a pid now reused) counts as running."""
        record = self.record or {}
        pid = record.get("pid")
        space = process_space()
        if not space or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return False
        if record.get("host") != socket.gethostname() or any(record.get(k) != v for k, v in space.items()):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # it exists (owned by another user)
        return False

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.record) if self.record else {"kind": None, "problem": "unreadable lock"}
        out["path"] = f"{LOCKS}/{self.name}"
        out["heartbeat_age_seconds"] = round((now - self.beat).total_seconds(), 3) if self.beat else None
        return out

    def stale_phrase(self, now: dt.datetime) -> str:
        """`the stale lock of a backup of chroma:/x (…)`, `a stale unreadable lock locks/x.json (…)`."""
        if self.record is None or self.kind is None:
            return f"a stale {self.describe(now).removeprefix('an ')}"
        if self.holder_is_gone():
            return f"the lock of a {self.describe(now)}, whose process is gone"
        return f"the stale lock of a {self.describe(now)}"

    def describe(self, now: dt.datetime) -> str:
        """`backup of chroma:/data (pid 123 on db1, started 02:00:03Z, heartbeat 40 s ago)`."""
        beat = f"heartbeat {ago(now - self.beat)} ago" if self.beat else "no heartbeat"
        if self.record is None or self.kind is None:
            written = f"written {ago(now - self.beat)} ago" if self.beat else "age unknown"
            return f"an unreadable lock {LOCKS}/{self.name} ({written})"
        purpose = self.record.get("purpose")
        kind = purpose if isinstance(purpose, str) and purpose else self.kind  # `key rotate`, not `prune`
        what = kind if self.scope in (None, EVERYTHING) else f"{kind} of {self.scope}"
        who = f"pid {self.record.get('pid', '?')} on {self.record.get('host', '?')}"
        started = parse_time(self.record.get("started_at"))
        when = f", started {short_time(started, now)}" if started else ""
        return f"{what} ({who}{when}, {beat})"


def process_space() -> dict[str, str]:
    """Where a pid means one process: this boot of this machine and this PID namespace (Linux); empty
    elsewhere, and then only the heartbeat tells whether a lock's holder still runs."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return {}
    return {"boot_id": boot, "pid_namespace": namespace}


def conflicts(kind: str, scope: str, other: LockFile) -> bool:
    if kind == PRUNE or other.kind not in KINDS or other.kind == PRUNE:
        return True
    return other.scope == scope


# --- storage helpers -------------------------------------------------------------------------------------


def lock_names(storage: Storage) -> list[str]:
    # Temp files (".tmp-…") of writes in flight are not locks.
    return [n for n in storage.list_names(LOCKS) if n.endswith(".json") and not n.startswith(".")]


def read_lock(storage: Storage, name: str) -> LockFile | None:
    """A lock as stored, or None if it vanished. An unparseable lock is aged by its modification time."""
    rel = f"{LOCKS}/{name}"
    try:
        raw = storage.read_bytes(rel)
    except FileNotFoundError:
        return None
    except IntegrityError:  # an encrypted lock that does not authenticate: damaged, as unparseable
        raw = b""
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        record = None
    beat = parse_time(record.get("heartbeat_at")) if isinstance(record, dict) else None
    if not isinstance(record, dict) or beat is None:
        return LockFile(name, None, modified_at(storage, rel))
    if beat > clock.now() + CLOCK_SKEW:
        # A heartbeat from the future (a run under a later AIBACKUP_NOW, a host whose clock runs ahead)
        # would never go stale: age such a lock by when the storage last saw it written instead.
        modified = modified_at(storage, rel)
        if modified is not None:
            beat = min(beat, modified)
    return LockFile(name, record, beat)


def modified_at(storage: Storage, rel: str) -> dt.datetime | None:
    try:
        info = storage.fs.info(storage.full(rel))
    except Exception:
        return None
    value = info.get("LastModified", info.get("mtime"))
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return None


def rewrite(storage: Storage, rel: str, data: bytes, still_ours: Callable[[], bool]) -> bool:
    """Replace our existing lock atomically (readers see the old bytes or the new, never a mix).

    ``still_ours`` reads the lock back right before the replace; if it says no, nothing is written and the
    result is False. Everything slow (writing and syncing the temp file) happens before that check, so the
    window in which a removal could slip in between check and replace stays a few microseconds on disk.
    """
    path = storage.full(rel)
    data = storage.encode_document(rel, data)
    if not storage.is_local:
        if not still_ours():
            return False
        storage.fs.pipe_file(path, data)  # an S3 put replaces the object atomically
        return True
    tmp = os.path.join(os.path.dirname(path), f".tmp-{secrets.token_hex(8)}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not still_ours():
            return False
        os.replace(tmp, path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def remove_quietly(storage: Storage, rel: str) -> None:
    with contextlib.suppress(AibackupError):
        storage.remove(rel)


# --- formatting ------------------------------------------------------------------------------------------


def encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2) + "\n").encode()


def parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def short_time(moment: dt.datetime, now: dt.datetime) -> str:
    """`02:00:03Z` on the same UTC day as now, else `2026-11-24T02:00:03Z`."""
    moment = moment.astimezone(dt.UTC)
    if moment.date() == now.astimezone(dt.UTC).date():
        return moment.strftime("%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(delta: timedelta) -> str:
    """`40 s`, `12 min`, `3 h`, `2 d` (whole units, rounded down; never negative)."""
    seconds = max(0.0, delta.total_seconds())
    if seconds < 1:
        return f"{seconds:.2g} s" if seconds else "0 s"
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 2 * 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"
