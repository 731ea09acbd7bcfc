"""The repository lock: real repositories on disk and on S3 (moto's server), and a real second process.

Ages come from AIBACKUP_NOW (a crash "hours ago" without sleeping); where the heartbeat thread must be
observed, intervals are a few hundredths of a second and the test polls with a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from aibackup import lock as lock_module
from aibackup.errors import EXIT_UNAVAILABLE, UsageError
from aibackup.lock import LOCKS, LockedError, RepositoryLock, live_locks
from aibackup.repository import Repository
from tests.helpers import Cli, ok

T0 = "2026-11-25T02:00:03Z"
FAST = timedelta(seconds=0.05)
HOST = socket.gethostname()
PID = os.getpid()


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(str(tmp_path / "repo"))


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Set the time aibackup believes it is (AIBACKUP_NOW)."""

    def set_now(when: str) -> None:
        monkeypatch.setenv("AIBACKUP_NOW", when)

    return set_now


def lock_files(repo: Repository) -> list[str]:
    return [n for n in repo.storage.list_names(LOCKS) if n.endswith(".json")]


def read_lock(repo: Repository, lock: RepositoryLock) -> dict[str, object]:
    assert lock.path is not None
    record = json.loads(repo.storage.read_bytes(lock.path))
    assert isinstance(record, dict)
    return record


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- conflicts -------------------------------------------------------------------------------------------


def test_second_backup_of_the_same_source_is_refused_naming_the_first(
    repo: Repository, at: Callable[[str], None]
) -> None:
    at(T0)
    with RepositoryLock(repo, "backup", "chroma:/data") as first:
        [name] = lock_files(repo)
        assert name.startswith("backup-") and first.path == f"{LOCKS}/{name}"
        record = read_lock(repo, first)
        assert record["kind"] == "backup" and record["scope"] == "chroma:/data"
        assert record["pid"] == PID and record["host"] == HOST
        assert record["started_at"] == record["heartbeat_at"] == "2026-11-25T02:00:03.000000Z"
        at("2026-11-25T02:00:43Z")
        with pytest.raises(LockedError) as refused:
            RepositoryLock(repo, "backup", "chroma:/data").acquire()
        assert str(refused.value) == (
            f"repository is locked by backup of chroma:/data (pid {PID} on {HOST}, started 02:00:03Z, "
            "heartbeat 40 s ago); try again later (the lock of a crashed run expires 10 min after its last "
            "heartbeat)"
        )
        assert refused.value.exit_code == EXIT_UNAVAILABLE == 3
        assert refused.value.code == "locked"
        assert [h["path"] for h in refused.value.holders] == [first.path]
        assert lock_files(repo) == [name]  # the refused run took its own lock away again
        assert not first.lost
    assert lock_files(repo) == []
    with RepositoryLock(repo, "backup", "chroma:/data") as again:
        assert again.notes == []


def test_backups_of_different_sources_run_side_by_side(repo: Repository) -> None:
    with RepositoryLock(repo, "backup", "chroma:/a"), RepositoryLock(repo, "backup", "qdrant+http://q:6333"):
        assert len(lock_files(repo)) == 2
        assert sorted(lock["scope"] for lock in live_locks(repo)) == ["chroma:/a", "qdrant+http://q:6333"]
    assert lock_files(repo) == []


@pytest.mark.parametrize(
    ("held", "wanted", "named"),
    [
        (("backup", "chroma:/a"), ("prune", "*"), "backup of chroma:/a"),
        (("prune", "*"), ("backup", "chroma:/a"), "prune"),
        (("prune", "*"), ("prune", "*"), "prune"),
    ],
)
def test_prune_and_backup_exclude_each_other(
    repo: Repository, held: tuple[str, str], wanted: tuple[str, str], named: str
) -> None:
    with RepositoryLock(repo, *held):
        with pytest.raises(LockedError, match=rf"^repository is locked by {named} \(pid {PID} on "):
            RepositoryLock(repo, *wanted).acquire()
        assert len(lock_files(repo)) == 1
    with RepositoryLock(repo, *wanted):
        pass


def test_a_prune_is_refused_while_any_of_several_backups_runs(repo: Repository) -> None:
    with RepositoryLock(repo, "backup", "chroma:/a"), RepositoryLock(repo, "backup", "chroma:/b"):
        with pytest.raises(LockedError, match=r"locked by backup of chroma:/a .* and 1 more; try again") as refused:
            RepositoryLock(repo, "prune", "*").acquire()
        assert len(refused.value.holders) == 2


# --- stale and live --------------------------------------------------------------------------------------


def test_a_stale_lock_is_taken_over_and_removed_with_a_note(repo: Repository, at: Callable[[str], None]) -> None:
    at(T0)
    crashed = RepositoryLock(repo, "backup", "chroma:/x").acquire()  # its heartbeat (60 s) never fires here
    crashed_path = crashed.path
    at("2026-11-25T05:00:04Z")
    with RepositoryLock(repo, "backup", "chroma:/x") as taker:
        assert taker.notes == [
            f"removed the stale lock of a backup of chroma:/x (pid {PID} on {HOST}, started 02:00:03Z, "
            "heartbeat 3 h ago)"
        ]
        assert [f"{LOCKS}/{n}" for n in lock_files(repo)] == [taker.path]
        assert crashed_path != taker.path
    crashed.release()  # its lock is already gone: releasing is harmless
    assert lock_files(repo) == []


def test_a_prune_takes_over_a_stale_backup_lock(repo: Repository, at: Callable[[str], None]) -> None:
    at(T0)
    crashed = RepositoryLock(repo, "backup", "chroma:/x").acquire()
    at("2026-11-27T02:00:04Z")
    with RepositoryLock(repo, "prune", "*") as prune:
        assert prune.notes == [
            f"removed the stale lock of a backup of chroma:/x (pid {PID} on {HOST}, started 2026-11-25T02:00:03Z, "
            "heartbeat 2 d ago)"
        ]
    crashed.release()


def test_a_live_lock_is_not_taken_over(repo: Repository, at: Callable[[str], None]) -> None:
    at(T0)
    with RepositoryLock(repo, "backup", "chroma:/x") as holder:
        at("2026-11-25T02:10:02Z")  # 9 min 59 s after its heartbeat: still live
        with pytest.raises(LockedError, match="heartbeat 9 min ago"):
            RepositoryLock(repo, "backup", "chroma:/x").acquire()
        with pytest.raises(LockedError):
            RepositoryLock(repo, "backup", "chroma:/x", stale_after=timedelta(hours=1)).acquire()
        assert [f"{LOCKS}/{n}" for n in lock_files(repo)] == [holder.path]
        at("2026-11-25T02:10:04Z")  # past 10 min: stale for a run that waits 10 min, not for one that waits 1 h
        with pytest.raises(LockedError):
            RepositoryLock(repo, "prune", "*", stale_after=timedelta(hours=1)).acquire()
        assert live_locks(repo) == []
        assert [lock["path"] for lock in live_locks(repo, timedelta(hours=1))] == [holder.path]


def test_a_lock_is_never_stale_before_three_of_its_own_heartbeats(repo: Repository, at: Callable[[str], None]) -> None:
    at(T0)
    slow = RepositoryLock(repo, "backup", "chroma:/x", heartbeat=timedelta(hours=1), stale_after=timedelta(hours=3))
    slow.acquire()
    try:
        at("2026-11-25T04:00:03Z")  # 2 h: stale for the default 10 min, but its holder beats hourly
        with pytest.raises(LockedError, match="heartbeat 2 h ago"):
            RepositoryLock(repo, "backup", "chroma:/x").acquire()
        at("2026-11-25T05:00:04Z")
        with RepositoryLock(repo, "backup", "chroma:/x") as taker:
            assert len(taker.notes) == 1
    finally:
        slow.release()


def test_an_unreadable_lock_is_aged_by_its_modification_time(repo: Repository) -> None:
    junk = Path(repo.storage.full(f"{LOCKS}/backup-0000-junk.json"))
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"{not json")
    (junk.parent / ".tmp-0123").write_bytes(b"a write in flight is not a lock")
    with pytest.raises(LockedError, match=rf"locked by an unreadable lock {LOCKS}/backup-0000-junk.json \(written "):
        RepositoryLock(repo, "backup", "chroma:/x").acquire()
    [shown] = live_locks(repo)
    assert shown["kind"] is None and shown["path"] == f"{LOCKS}/backup-0000-junk.json"
    hours_ago = time.time() - 3 * 3600
    os.utime(junk, (hours_ago, hours_ago))
    with RepositoryLock(repo, "backup", "chroma:/x") as taker:
        assert taker.notes == [f"removed a stale unreadable lock {LOCKS}/backup-0000-junk.json (written 3 h ago)"]
    assert not junk.exists()


def test_live_locks_describe_the_holders(repo: Repository, at: Callable[[str], None]) -> None:
    at(T0)
    with RepositoryLock(repo, "backup", "chroma:/x") as holder:
        at("2026-11-25T02:00:13Z")
        [shown] = live_locks(repo)
        assert shown["path"] == holder.path
        assert shown["kind"] == "backup" and shown["scope"] == "chroma:/x"
        assert shown["pid"] == PID and shown["host"] == HOST
        assert shown["started_at"] == "2026-11-25T02:00:03.000000Z"
        assert shown["heartbeat_age_seconds"] == 10.0


# --- heartbeat, release, lost ----------------------------------------------------------------------------


def test_the_heartbeat_thread_rewrites_heartbeat_at(repo: Repository) -> None:
    with RepositoryLock(repo, "backup", "chroma:/x", heartbeat=FAST, stale_after=timedelta(minutes=10)) as lock:
        first = read_lock(repo, lock)
        wait_for(lambda: read_lock(repo, lock)["heartbeat_at"] != first["heartbeat_at"], "a heartbeat")
        later = read_lock(repo, lock)
        assert str(later["heartbeat_at"]) > str(first["heartbeat_at"])
        assert {k: v for k, v in later.items() if k != "heartbeat_at"} == {
            k: v for k, v in first.items() if k != "heartbeat_at"
        }
        assert not lock.lost
    assert lock_files(repo) == []
    assert [n for n in repo.storage.list_names(LOCKS) if n.startswith(".tmp-")] == []


def test_release_removes_the_lock_and_may_be_repeated(repo: Repository) -> None:
    lock = RepositoryLock(repo, "backup", "chroma:/x", heartbeat=FAST, stale_after=timedelta(seconds=1))
    lock.release()  # never acquired: nothing to do
    assert lock.acquire() is lock and lock.held
    with pytest.raises(RuntimeError, match="already held"):
        lock.acquire()
    lock.release()
    lock.release()
    assert not lock.held and lock_files(repo) == []
    time.sleep(0.15)  # a few heartbeat intervals: nothing writes the lock back
    assert lock_files(repo) == []
    with pytest.raises(ZeroDivisionError), RepositoryLock(repo, "prune", "*"):
        _ = 1 / 0
    assert lock_files(repo) == []


def check_holder_notices_removal(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove a held lock while its heartbeat waits at a gate (so no rewrite is in flight and the removal
    cannot race one), then open the gate: the next heartbeat finds the lock gone."""
    gate = threading.Event()
    rewrite = lock_module.rewrite

    def gated(*args: Any) -> bool:
        gate.wait(10)
        return rewrite(*args)

    monkeypatch.setattr(lock_module, "rewrite", gated)
    lock = RepositoryLock(repo, "backup", "chroma:/x", heartbeat=FAST, stale_after=timedelta(minutes=10))
    with lock:
        assert lock.path is not None
        repo.storage.remove(lock.path)
        gate.set()
        wait_for(lambda: lock.lost, "the holder to notice")
        assert lock.lost_reason is not None and "was removed by another run" in lock.lost_reason
        time.sleep(0.15)
        assert lock_files(repo) == []  # the lost holder never writes its lock back
    assert lock.lost and lock_files(repo) == []


def test_a_holder_notices_that_its_lock_was_removed(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    check_holder_notices_removal(repo, monkeypatch)


def test_a_holder_that_cannot_write_its_heartbeat_counts_its_lock_as_lost(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: object) -> bool:
        raise OSError("storage went away")

    with RepositoryLock(repo, "backup", "chroma:/x", heartbeat=FAST, stale_after=3 * FAST) as lock:
        monkeypatch.setattr(lock_module, "rewrite", unreachable)
        wait_for(lambda: lock.lost, "the lock to count as lost")
        assert lock.lost_reason is not None and lock.lost_reason.startswith("no heartbeat was written for")
    assert lock_files(repo) == []


def test_a_stalled_holder_never_revives_its_lock(repo: Repository) -> None:
    with RepositoryLock(repo, "backup", "chroma:/x", heartbeat=FAST, stale_after=3 * FAST) as lock:
        with lock._io:  # the heartbeat thread stalls here, as in a process suspended for a while
            before = read_lock(repo, lock)
            time.sleep(0.3)
        wait_for(lambda: lock._lost is not None, "the heartbeat thread to give the lock up")
        assert lock.lost and str(lock.lost_reason).endswith("(storage unreachable or process stalled)")
        time.sleep(0.15)
        assert read_lock(repo, lock) == before  # no heartbeat after the silence
    assert lock_files(repo) == []


def test_bad_settings_are_refused(repo: Repository) -> None:
    with pytest.raises(UsageError, match="at least 3 heartbeats"):
        RepositoryLock(repo, "backup", "chroma:/x", stale_after=timedelta(minutes=2), heartbeat=timedelta(minutes=1))
    with pytest.raises(UsageError, match="unknown lock kind"):
        RepositoryLock(repo, "restore", "chroma:/x")
    with pytest.raises(UsageError, match="positive"):
        RepositoryLock(repo, "backup", "chroma:/x", heartbeat=timedelta(0))


# --- a real second process -------------------------------------------------------------------------------

HOLDER = """
import os, sys
from datetime import timedelta
from aibackup.lock import RepositoryLock
from aibackup.repository import Repository

beat = timedelta(seconds=float(sys.argv[2]))
lock = RepositoryLock(Repository.open(sys.argv[1]), "backup", "chroma:/data", heartbeat=beat)
lock.acquire()
print("held", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "crash":
        os._exit(9)
    if command == "release":
        lock.release()
        print("released", flush=True)
        sys.exit(0)
    if command == "lost?":
        print(f"lost={lock.lost} {lock.lost_reason}", flush=True)
"""


@pytest.fixture
def holder(repo: Repository) -> Iterator[Callable[[dict[str, str], float], subprocess.Popen[str]]]:
    """Start a process that holds a backup lock (heartbeat every `beat` seconds) and obeys commands."""
    procs: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], beat: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, repo.storage.url, str(beat)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def ask(proc: subprocess.Popen[str], command: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


@pytest.mark.parametrize("ending", ["release", "crash"])
def test_another_process_holds_the_lock_until_it_ends(
    repo: Repository,
    holder: Callable[[dict[str, str], float], subprocess.Popen[str]],
    at: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    monkeypatch.delenv("AIBACKUP_NOW", raising=False)
    proc = holder({}, 0.05)
    # The holder beats every 50 ms meanwhile: reading its lock while it is replaced is always whole JSON.
    for _ in range(20):
        with pytest.raises(LockedError, match=rf"locked by backup of chroma:/data \(pid {proc.pid} on {HOST}, "):
            RepositoryLock(repo, "backup", "chroma:/data").acquire()
        time.sleep(0.01)
    with RepositoryLock(repo, "backup", "chroma:/other"):
        pass  # another source is not blocked
    if ending == "release":
        assert ask(proc, "release") == "released"
        assert proc.wait(timeout=10) == 0
        with RepositoryLock(repo, "backup", "chroma:/data") as mine:
            assert mine.notes == []
    else:
        ask(proc, "crash")
        assert proc.wait(timeout=10) == 9
        assert len(lock_files(repo)) == 1  # left behind, but its process is gone on this very machine
        with RepositoryLock(repo, "backup", "chroma:/data") as mine:
            assert len(mine.notes) == 1
            assert mine.notes[0].startswith(f"removed the lock of a backup of chroma:/data (pid {proc.pid} on ")
            assert mine.notes[0].endswith(", whose process is gone")
    assert lock_files(repo) == []


@pytest.mark.parametrize("elsewhere", ["host", "boot_id", "pid_namespace"])
def test_a_dead_pid_counts_only_in_this_hosts_boot_and_pid_namespace(
    repo: Repository, at: Callable[[str], None], monkeypatch: pytest.MonkeyPatch, elsewhere: str
) -> None:
    """Another machine, boot or container may reuse host names and pids: there only the heartbeat counts."""
    monkeypatch.delenv("AIBACKUP_NOW", raising=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with RepositoryLock(repo, "backup", "chroma:/data") as mine:
        record = json.loads(repo.storage.read_bytes(mine.path or ""))
    record.update(pid=gone.pid, token="0" * 32)
    record[elsewhere] = "somewhere else"
    repo.storage.write_exclusive("locks/backup-crashed-elsewhere.json", json.dumps(record).encode())
    with pytest.raises(LockedError, match=rf"pid {gone.pid} on "):
        RepositoryLock(repo, "backup", "chroma:/data").acquire()
    at((lock_module.clock.now() + timedelta(minutes=11)).isoformat())
    with RepositoryLock(repo, "backup", "chroma:/data") as taken:
        assert taken.notes[0].startswith("removed the stale lock of a backup of chroma:/data")


def test_a_live_process_whose_lock_is_taken_over_learns_it_lost_it(
    repo: Repository, holder: Callable[[dict[str, str], float], subprocess.Popen[str]], at: Callable[[str], None]
) -> None:
    # The holder's clock is stuck hours back (its heartbeats keep writing 02:00:03): to everyone else it
    # looks like a crashed run, as a process suspended for hours would.
    # A slower heartbeat here: a takeover racing a rewrite (the rewrite wins) is refused, not a test subject.
    proc = holder({"AIBACKUP_NOW": T0}, 0.2)
    at("2026-11-25T05:00:00Z")
    with RepositoryLock(repo, "backup", "chroma:/data") as mine:
        assert len(mine.notes) == 1

        def holder_lost() -> bool:
            return ask(proc, "lost?").startswith("lost=True")

        wait_for(holder_lost, "the other process to notice")
        assert "was removed by another run" in ask(proc, "lost?")
        assert [f"{LOCKS}/{n}" for n in lock_files(repo)] == [mine.path]
        assert ask(proc, "release") == "released"
        assert [f"{LOCKS}/{n}" for n in lock_files(repo)] == [mine.path]  # its release leaves ours alone


# --- S3 --------------------------------------------------------------------------------------------------


@pytest.mark.s3
def test_the_lock_on_s3(s3_env: object, at: Callable[[str], None], monkeypatch: pytest.MonkeyPatch) -> None:
    boto3.client("s3").create_bucket(Bucket="locks")
    repo = Repository.init("s3://locks/repo")
    lock = RepositoryLock(repo, "backup", "chroma:/x", heartbeat=timedelta(seconds=0.1), stale_after=timedelta(hours=1))
    with lock:
        first = read_lock(repo, lock)
        wait_for(lambda: read_lock(repo, lock)["heartbeat_at"] != first["heartbeat_at"], "a heartbeat on S3")
        with pytest.raises(LockedError, match=rf"locked by backup of chroma:/x \(pid {PID} on "):
            RepositoryLock(repo, "prune", "*").acquire()
        with RepositoryLock(repo, "backup", "chroma:/y"):
            assert len(lock_files(repo)) == 2
        assert [lock["path"] for lock in live_locks(repo)] == [lock.path]
    assert lock_files(repo) == []
    with monkeypatch.context() as patch:
        check_holder_notices_removal(repo, patch)

    at(T0)
    crashed = RepositoryLock(repo, "backup", "chroma:/x").acquire()
    at("2026-11-25T05:00:04Z")
    with RepositoryLock(repo, "prune", "*") as prune:
        assert prune.notes == [
            f"removed the stale lock of a backup of chroma:/x (pid {PID} on {HOST}, started 02:00:03Z, "
            "heartbeat 3 h ago)"
        ]
        assert [f"{LOCKS}/{n}" for n in lock_files(repo)] == [prune.path]
    crashed.release()
    assert lock_files(repo) == []


def test_a_run_refused_by_a_key_verb_names_the_verb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key verbs take the exclusive lock a prune takes: a backup refused while `key rotate` ran was told
    the repository was locked by prune, and whoever looked for a prune found none."""
    from aibackup import keys
    from aibackup.api import Repository as ApiRepository

    monkeypatch.setenv("AIBACKUP_KEY", "a passphrase for the lock test")
    repo = ApiRepository.open(str(tmp_path / "enc"), create=True, key="a passphrase for the lock test")
    refusals: list[str] = []
    rotate = keys.rotate

    def rotate_while_a_backup_starts(*args: Any, **kwargs: Any) -> Any:
        try:
            RepositoryLock(Repository.open(str(tmp_path / "enc")), "backup", "chroma:/a").acquire()
        except LockedError as exc:
            refusals.append(str(exc))
        return rotate(*args, **kwargs)

    monkeypatch.setattr(keys, "rotate", rotate_while_a_backup_starts)
    repo.rotate_key()
    (refused,) = refusals
    assert refused.startswith(f"repository is locked by key rotate (pid {PID} on "), refused


def test_a_backup_that_fails_right_after_its_lock_leaves_no_lock(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error between taking the lock and the run's own error handling (reading the marker again, the
    parent bundle, the chunk index: an S3 blip) left the lock behind: the next backup of the source was
    refused until it went stale, and in a long-lived process its heartbeat kept it alive for good."""
    from aibackup import backup
    from aibackup.errors import UnavailableError

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text('{"user_id": "u", "input": "hi"}\n')
    repo = tmp_path / "repo"
    ok(cli("backup", f"conversations:{logs}", "--repo", str(repo)))

    def blip(*args: Any, **kwargs: Any) -> Any:
        raise UnavailableError("cannot reach the repository (a blip)")

    with monkeypatch.context() as patched:
        patched.setattr(backup, "_parent", blip)
        assert cli("backup", f"conversations:{logs}", "--repo", str(repo)).code == 3
    assert list((repo / LOCKS).glob("*.json")) == []
    ok(cli("backup", f"conversations:{logs}", "--repo", str(repo)))
