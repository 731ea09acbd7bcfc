"""Crash consistency: a backup killed with SIGKILL at any storage step leaves the repository sound.

A child process runs ``aibackup backup`` with every storage step counted (part created, part data written,
part completed, small object written exclusively: lock, manifest, report; object removed), before and
after each, and SIGKILLs itself at the step numbered ``CRASH_AT``. A probe run without a kill counts the
steps; the points are a seeded sample of them (all of them with ``-m slow``), on a local repository and on
S3 (moto's server, where parts are uploads). After every kill:

- ``verify --read-data`` is clean and ``list`` shows only committed bundles (the killed run's bundle
  exists only if its manifest was written before the kill, and then it verifies too);
- the next backup succeeds (taking the dead run's lock over once it is stale);
- at the end, ``prune --grace 0s`` removes every orphan part, and the repository still verifies.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Cli, ok, repository_url, seed_chroma

SEED = 20261125
#: Kill points per repository kind in CI (local + S3 >= 20); `-m slow` kills at every step.
CI_POINTS = 12

CHILD = r"""
import json, os, signal, sys, threading
from aibackup import storage

crash_at = int(os.environ["CRASH_AT"])
count = 0
guard = threading.Lock()

def step():
    global count
    with guard:
        count += 1
        if count == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

def counted(cls, name):
    original = getattr(cls, name)
    def wrapper(*args, **kwargs):
        step()
        result = original(*args, **kwargs)
        step()
        return result
    setattr(cls, name, wrapper)

for name in ("write_exclusive", "create", "close_part", "remove"):
    counted(storage.Storage, name)
counted(storage.HashingWriter, "write")

from aibackup.cli import main
try:
    main(sys.argv[1:])
finally:
    print(json.dumps({"steps": count}), file=sys.stderr)
"""


def _child(args: list[str], crash_at: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {}), "CRASH_AT": str(crash_at)},
    )


def _steps(proc: subprocess.CompletedProcess[str]) -> int:
    assert proc.returncode == 0, proc.stderr
    return int(json.loads(proc.stderr.strip().splitlines()[-1])["steps"])


def _later(minutes: int) -> dict[str, str]:
    """AIBACKUP_NOW `minutes` ahead: a killed run's lock (10 minutes to stale) can then be taken over."""
    return {"AIBACKUP_NOW": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).isoformat()}


def _crash_suite(tmp_path: Path, cli: Cli, repo: str, points: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "chroma"
    seed_chroma(store, "docs", n=400)
    seed_chroma(store, "more", n=150, dim=8)
    source = f"chroma:{store}"
    args = ["backup", source, "--repo", repo]
    ok(cli(*args))  # the repository exists; the crashes hit later backups
    total = _steps(_child(args, 0))  # the probe: a whole backup, counted
    committed = 2
    chosen = range(1, total + 1) if points is None else sorted(random.Random(SEED).sample(range(1, total + 1), points))
    minutes = 0
    for n in chosen:
        minutes += 11  # each kill leaves a lock that turns stale 10 minutes later
        killed = _child(args, n, _later(minutes))
        assert killed.returncode == -9, (n, killed.returncode, killed.stderr)
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        listed = ok(cli("list", "--repo", repo, "--json")).json()
        assert len(listed) in (committed, committed + 1), (n, len(listed))
        committed = len(listed)
        verified = ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()
        assert verified["ok"] and verified["bundles"] == committed, (n, verified)
        minutes += 11
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        ok(cli(*args))  # the next backup succeeds
        committed += 1
    pruned = ok(cli("prune", "--repo", repo, "--keep-last", "1000", "--grace", "0s", "--json")).json()
    assert pruned["removed"] == [] and pruned["parts_removed"] == []  # only orphans go
    after = ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()
    assert after["ok"] and after["bundles"] == committed
    orphans = _orphan_parts(cli, repo)
    assert orphans == [], (orphans, pruned)


def _orphan_parts(cli: Cli, repo: str) -> list[str]:
    """Parts no committed bundle references (a dry-run prune with grace 0 lists what it would remove)."""
    plan: Any = ok(cli("prune", "--repo", repo, "--keep-last", "1000", "--grace", "0s", "--dry-run", "--json")).json()
    return list(plan["orphans_removed"]) + list(plan["orphans_waiting"])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_killed_backup_leaves_the_repository_sound(
    where: str, tmp_path: Path, cli: Cli, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_suite(tmp_path, cli, repository_url(where, tmp_path, request), CI_POINTS, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_backup_killed_at_every_step_leaves_the_repository_sound(
    where: str, tmp_path: Path, cli: Cli, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_suite(tmp_path, cli, repository_url(where, tmp_path, request), None, monkeypatch)
