"""The repository lock: an overlapping run is refused cleanly, a crashed run never needs a hand unlock.

A lock is a small JSON object under ``<repo>/locks/``, named ``<kind>-<scope-hash>-<random>.json`` and
created with :meth:`Storage.write_exclusive` (so it never replaces another)::

    {"format": "aibackup-lock", "version": 1, "kind": "backup", "scope": "chroma:/data/chroma",
     "pid": 123, "host": "db1", "started_at": "...Z", "heartbeat_at": "...Z", "heartbeat_seconds": 60.0,
     "stale_after_seconds": 600.0, "token": "<32 hex>", "aibackup": "0.1.0"}

(plus ``"purpose": "key rotate"`` where the kind does not say what runs: the key verbs take a prune's lock.)

Rules:

- **Kinds and conflicts.** ``backup`` locks carry a scope (the source's URI); ``prune`` locks the whole
  repository (scope ``*``). A backup conflicts with a live backup of the *same* scope and with a live prune;
  a prune conflicts with every live lock. A lock of a kind this version does not know, or one it cannot
  read, conflicts with everything.
- **Acquire** writes its own lock first, then lists ``locks/`` and reads the others. If any live lock
  conflicts, it removes its own lock again and raises :class:`LockedError`. Because every acquirer writes
  before it looks, two overlapping acquirers can never both proceed; if they see each other, both back off.
- **Live and stale.** A lock is stale when its ``heartbeat_at`` is older than ``stale_after`` (default
  10 minutes; the longest of the reader's, the holder's own ``stale_after_seconds`` and 3 × the holder's
  ``heartbeat_seconds``, so a holder always counts its lock as lost before anyone may take it over) on
  :func:`aibackup.clock.now` (``AIBACKUP_NOW`` lets drills and tests age a lock without waiting). Stale locks
  are ignored for conflicts and removed, best effort, by the next acquirer, which says so in
  :attr:`RepositoryLock.notes`. Before removing one, the acquirer reads it again and keeps it if its
  heartbeat moved meanwhile; after removing any, it lists once more, and a removed lock that is back (its
  holder was only slow and rewrote it) counts as live. A lock that cannot be parsed is aged by its
  object's modification time.
  Hosts sharing a repository need clocks that agree to within a heartbeat (NTP). A lock whose holder
  provably no longer runs is stale at once: it names this host, this boot (``boot_id``) and this PID
  namespace (``pid_namespace``, so another container with the same host name never counts), and no process
  has its pid (restic's rule, made safe for containers).
- **Heartbeat.** While held, a daemon thread rewrites the lock with a new ``heartbeat_at`` every
  ``heartbeat`` (default 60 s, real time; ``stale_after`` < 3 × ``heartbeat`` is refused): on local disk a
  temp file moved over it with ``os.replace``, on S3 a plain put. Before each rewrite it reads the lock back;
  if the lock is gone (someone removed it as stale) or is not its own, the holder has **lost** the lock and
  stops writing.
- **Lost.** The lock is also lost when no heartbeat was written for ``stale_after`` minus one
  ``heartbeat`` (storage unreachable, process stalled or suspended), measured on real time: soon after,
  another run may take it over. A holder that finds itself silent that long never rewrites its lock again,
  so a taken-over lock cannot come back to life (given clocks that agree to within a heartbeat). A backup
  checks :attr:`RepositoryLock.lost` before committing its manifest and fails if it is set, so prune never
  removes what a committed bundle needs.
- **Release** stops the thread (waiting for a heartbeat in flight, so the lock is never written again) and
  removes the lock; releasing twice is harmless, and a lock that cannot be removed is left to expire.
- **Exit code.** :class:`LockedError` exits 3, as an unreachable repository does: the repository cannot be
  used *now*, and the same command will work later. Its one line names the holder, e.g. ``repository is
  locked by backup of chroma:/data (pid 123 on db1, started 02:00:03Z, heartbeat 40 s ago); try again
  later``.

A kill -9, a power cut or a cron timeout leaves a lock behind that simply stops beating; the next run on
the same machine takes it over at once (its process is gone), a run elsewhere after ``stale_after``. There
is no "unlock" command to forget.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from datetime import timedelta
from types import TracebackType
from typing import Any

from aibackup import __version__, clock
from aibackup.errors import EXIT_UNAVAILABLE, AibackupError, UsageError
from aibackup.lock_files import (
    EVERYTHING,
    KINDS,
    LOCK_FORMAT,
    LOCK_VERSION,
    LOCKS,
    PRUNE,
    LockFile,
    ago,
    conflicts,
    encode,
    lock_names,
    process_space,
    read_lock,
    remove_quietly,
    rewrite,
)
from aibackup.repository import Repository, iso

DEFAULT_STALE_AFTER = timedelta(minutes=10)
DEFAULT_HEARTBEAT = timedelta(seconds=60)


class LockedError(AibackupError):
    """Another live run holds a conflicting lock; the message names it. Exit 3: try again later.

    ``holders`` describes the conflicting locks (the dicts :func:`live_locks` returns)."""

    exit_code = EXIT_UNAVAILABLE
    code = "locked"

    def __init__(self, message: str, holders: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.holders = holders or []


class RepositoryLock:
    """A lock on a repository for one run: ``with RepositoryLock(repo, "backup", uri): ...``.

    :meth:`acquire` raises :class:`LockedError` when a conflicting live lock exists (see the module
    docstring for the rules); storage errors pass through as the usual aibackup errors. ``notes`` collects
    what acquiring did besides taking the lock (stale locks removed), for the run's report.
    """

    def __init__(
        self,
        repo: Repository,
        kind: str,
        scope: str,
        *,
        stale_after: timedelta = DEFAULT_STALE_AFTER,
        heartbeat: timedelta = DEFAULT_HEARTBEAT,
        purpose: str | None = None,
    ) -> None:
        """`purpose`: what the run is, where its kind does not say (the key verbs take the exclusive lock a
        prune takes): recorded in the lock, and named by a run the lock refuses."""
        if kind not in KINDS:
            raise UsageError(f"unknown lock kind {kind!r}: expected one of {', '.join(KINDS)}")
        if not scope:
            raise UsageError("a repository lock needs a scope (the source, or '*' for the whole repository)")
        if heartbeat <= timedelta(0):
            raise UsageError("the lock heartbeat must be a positive interval")
        if stale_after < 3 * heartbeat:
            raise UsageError(
                f"a lock's stale timeout ({ago(stale_after)}) must be at least 3 heartbeats "
                f"({ago(3 * heartbeat)}), or a live run could lose its lock between two heartbeats"
            )
        self.repo = repo
        self.kind = kind
        self.scope = EVERYTHING if kind == PRUNE else scope
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.purpose = purpose
        self.notes: list[str] = []
        self._rel: str | None = None
        self._record: dict[str, Any] = {}
        self._io = threading.Lock()  # one storage write at a time: a heartbeat never follows release
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._beat_mono = 0.0
        self._beat_wall = 0.0

    # --- holding ---------------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release` (even if the lock was lost)."""
        return self._rel is not None

    @property
    def path(self) -> str | None:
        """The lock object's path relative to the repository while held."""
        return self._rel

    @property
    def lost(self) -> bool:
        """True if this run can no longer trust its lock: the lock object was removed or replaced, or no
        heartbeat was written for so long that another run may take it over. No storage I/O."""
        if self._lost is None and self._rel is not None:
            self._check_silence(time.monotonic(), time.time())
        return self._lost is not None

    @property
    def lost_reason(self) -> str | None:
        """Why the lock was lost (one phrase), or None."""
        return self._lost if self.lost else None

    def acquire(self) -> RepositoryLock:
        """Take the lock, or raise :class:`LockedError` naming who holds a conflicting one. Returns self."""
        if self._rel is not None:
            raise RuntimeError("this repository lock is already held")
        storage = self.repo.storage
        now = clock.now()
        name = f"{self.kind}-{self.repo.opaque(self.scope)}-{secrets.token_hex(8)}.json"
        rel = f"{LOCKS}/{name}"
        self._record = {
            "format": LOCK_FORMAT,
            "version": LOCK_VERSION,
            "kind": self.kind,
            "scope": self.scope,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **process_space(),
            "started_at": iso(now),
            "heartbeat_at": iso(now),
            "heartbeat_seconds": self.heartbeat.total_seconds(),
            "stale_after_seconds": self.stale_after.total_seconds(),
            "token": secrets.token_hex(16),
            "aibackup": __version__,
        }
        if self.purpose:
            self._record["purpose"] = self.purpose
        mono, wall = time.monotonic(), time.time()
        storage.write_exclusive(rel, encode(self._record))
        self._mark_beat(mono, wall)
        try:
            holders, notes = self._survey(name)
        except BaseException:
            remove_quietly(storage, rel)
            raise
        if holders:
            remove_quietly(storage, rel)
            now = clock.now()
            holders.sort(key=lambda s: str((s.record or {}).get("started_at") or ""))
            more = f" and {len(holders) - 1} more" if len(holders) > 1 else ""
            raise LockedError(
                f"repository is locked by {holders[0].describe(now)}{more}; try again later "
                f"(the lock of a crashed run expires {ago(holders[0].stale_after(self.stale_after))} after its "
                "last heartbeat)",
                [h.as_dict(now) for h in holders],
            )
        self.notes.extend(notes)
        self._rel = rel
        self._lost = None
        self._stop = threading.Event()  # a fresh one: a thread of an earlier hold never wakes up again
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=f"aibackup-lock-{self.kind}", daemon=True
        )
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the lock (best effort: a lock that cannot be removed expires)."""
        rel = self._rel
        if rel is None:
            return
        self._stop.set()
        with self._io:  # waits for a heartbeat in flight; none starts after this
            self._rel = None
            try:
                self.repo.storage.remove(rel)
            except AibackupError as exc:
                self.notes.append(f"could not remove the lock {rel} ({exc}); it expires by itself")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> RepositoryLock:
        return self.acquire()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    # --- internals -------------------------------------------------------------------------------------

    def _survey(self, own: str) -> tuple[list[LockFile], list[str]]:
        """The live locks that conflict with ours; stale ones are removed on the way (with a note each)."""
        storage = self.repo.storage
        holders: list[LockFile] = []
        notes: list[str] = []
        removed: set[str] = set()
        for name in lock_names(storage):
            if name == own:
                continue
            seen = read_lock(storage, name)
            if seen is None:
                continue  # released meanwhile
            now = clock.now()
            if seen.is_stale(now, self.stale_after):
                again = read_lock(storage, name)  # its holder may have come back to life meanwhile
                if again is None:
                    continue
                if again.beat == seen.beat and again.record == seen.record:
                    try:
                        storage.remove(f"{LOCKS}/{name}")
                    except AibackupError as exc:
                        notes.append(f"could not remove {seen.stale_phrase(now)}: {exc}")
                    else:
                        removed.add(name)
                        notes.append(f"removed {seen.stale_phrase(now)}")
                    continue
                seen = again
                if seen.is_stale(clock.now(), self.stale_after):
                    continue  # it changed but is still stale; ignore it, the next run cleans it up
            if conflicts(self.kind, self.scope, seen):
                holders.append(seen)
        if removed:
            # A holder that was only slow may have rewritten its lock between our check and the removal
            # (the rewrite recreates it): a removed lock that is back again belongs to a live run.
            back = set(lock_names(storage)) & removed
            for name in sorted(back):
                seen = read_lock(storage, name)
                if seen is not None and conflicts(self.kind, self.scope, seen):
                    holders.append(seen)
        return holders, notes

    def _mark_beat(self, mono: float, wall: float) -> None:
        self._beat_mono, self._beat_wall = mono, wall

    def _check_silence(self, mono: float, wall: float) -> bool:
        """Lose the lock if the last heartbeat is so old that another run may take it over; True if so.

        Real time on both clocks: monotonic ignores wall clock steps, wall time counts a suspended machine.
        """
        silent = max(mono - self._beat_mono, wall - self._beat_wall)
        if silent < (self.stale_after - self.heartbeat).total_seconds():
            return False
        self._lose(
            f"no heartbeat was written for {ago(timedelta(seconds=silent))} (storage unreachable or process stalled)"
        )
        return True

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat.total_seconds()):
            if not self._beat(stop):
                return

    def _beat(self, stop: threading.Event) -> bool:
        """Rewrite our lock with a fresh heartbeat; False once the lock is lost or released."""
        storage = self.repo.storage
        with self._io:
            rel = self._rel
            if rel is None or stop.is_set() or self._lost is not None:
                return False
            # Times taken before heartbeat_at: the holder never thinks its lock younger than others do.
            mono, wall = time.monotonic(), time.time()
            if self._check_silence(mono, wall):
                return False  # silent that long, the lock may be taken over already: never revive it
            self._record["heartbeat_at"] = iso(clock.now())
            try:
                written = rewrite(storage, rel, encode(self._record), lambda: self._still_ours(rel))
            except Exception:  # unreachable for now: the lock counts as lost if this lasts
                return True
            if written:
                self._mark_beat(mono, wall)
            return written

    def _still_ours(self, rel: str) -> bool:
        try:
            current = json.loads(self.repo.storage.read_bytes(rel))
        except FileNotFoundError:
            self._lose(f"the lock {rel} was removed by another run (taken over as stale?)")
            return False
        if not isinstance(current, dict) or current.get("token") != self._record["token"]:
            self._lose(f"the lock {rel} was replaced by another run")
            return False
        return True


def live_locks(repo: Repository, stale_after: timedelta = DEFAULT_STALE_AFTER) -> list[dict[str, Any]]:
    """The live locks in a repository, oldest first (for ``aibackup status``); nothing is removed.

    Each dict holds the lock's own fields (kind, scope, pid, host, started_at, heartbeat_at, …) plus
    ``path`` (relative to the repository) and ``heartbeat_age_seconds``; a lock that cannot be read has
    ``kind`` None and a ``problem``.
    """
    storage = repo.storage
    found: list[LockFile] = []
    for name in lock_names(storage):
        seen = read_lock(storage, name)
        if seen is not None and not seen.is_stale(clock.now(), stale_after):
            found.append(seen)
    now = clock.now()
    out = [s.as_dict(now) for s in found]
    out.sort(key=lambda d: (str(d.get("started_at") or ""), d["path"]))
    return out
