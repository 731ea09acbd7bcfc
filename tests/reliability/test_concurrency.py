"""Concurrency: runs that overlap in one repository lose nothing and corrupt nothing.

Real processes run at the same time against one repository, local and S3:

- backups of two different sources run side by side and both commit (each is held at its commit, parts
  written, so the runs below are sure to overlap them);
- a restore meanwhile restores the newest *committed* bundle and proves it;
- a prune, or a second backup of a source being backed up, is refused meanwhile (exit 3), and the
  backups are unharmed; once they are done, prune goes ahead.

Afterwards everything verifies with ``verify --read-data``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import Cli, ok, repository_url, seed_chroma

#: Runs `aibackup ARGS` with its commit held: it writes its parts, says so (a file in PAUSE_DIR), then waits
#: for PAUSE_DIR/go before writing its manifest. So other runs can be started while it is mid-flight.
HELD = r"""
import os, sys, time
from pathlib import Path
from aibackup.repository import Repository
pause = Path(os.environ["PAUSE_DIR"])
commit = Repository.commit
def held(self, manifest):
    (pause / f"ready-{os.getpid()}").write_text("parts written")
    deadline = time.monotonic() + 120
    while not (pause / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    commit(self, manifest)
Repository.commit = held
from aibackup.cli import main
main(sys.argv[1:])
"""


def _start_held(pause: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HELD, *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PAUSE_DIR": str(pause)},
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _wait_ready(pause: Path, count: int, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    while len(list(pause.glob("ready-*"))) < count:
        assert all(p.poll() is None for p in procs), [_finish(p) for p in procs if p.poll() is not None]
        assert time.monotonic() < deadline, "the backups never reached their commit"
        time.sleep(0.05)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_overlapping_runs_lose_nothing(where: str, tmp_path: Path, cli: Cli, request: pytest.FixtureRequest) -> None:
    repo = repository_url(where, tmp_path, request)
    first, second = tmp_path / "first", tmp_path / "second"
    seed_chroma(first, "docs", n=3000, dim=64)
    seed_chroma(second, "notes", n=3000, dim=64)
    ok(cli("backup", f"chroma:{first}", "--repo", repo))
    committed = ok(cli("list", "--repo", repo, "--json")).json()[0]["bundle_id"]

    # Two sources at once, held at their commit (parts written, no manifest yet, locks held).
    pause = tmp_path / "pause"
    pause.mkdir()
    backups = [_start_held(pause, "backup", f"chroma:{src}", "--repo", repo) for src in (first, second)]
    _wait_ready(pause, 2, backups)
    # Meanwhile a restore takes the newest *committed* bundle, whole, and proves it ...
    proof = ok(cli("restore", "latest", "--repo", repo, "--to", f"qdrant:{tmp_path / 'q'}", "--json")).json()
    assert proof["ok"] and proof["bundle_id"] == committed and proof["datasets"][0]["rows"] == 3000
    # ... a prune is refused while backups run (it could not tell their parts from a crash's orphans) ...
    refused = cli("prune", "--repo", repo, "--keep-last", "1", "--grace", "0s")
    assert refused.code == 3 and "locked by backup" in refused.err, refused
    # ... and a second backup of a source already being backed up is refused too.
    again = cli("backup", f"chroma:{first}", "--repo", repo)
    assert again.code == 3 and "locked by backup" in again.err, again
    (pause / "go").write_text("go")
    results = [_finish(p) for p in backups]
    assert [code for code, _, _ in results] == [0, 0], results
    new_ids = [json.loads(out)["bundle_id"] for _, out, _ in results]
    listed = [b["bundle_id"] for b in ok(cli("list", "--repo", repo, "--json")).json()]
    assert sorted(listed) == sorted([committed, *new_ids])
    verified = ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()
    assert verified["ok"], verified["problems"]
    # Now that nothing runs, prune goes ahead: one bundle per source stays, and all of it still verifies.
    pruned = ok(cli("prune", "--repo", repo, "--keep-last", "1", "--grace", "0s", "--json")).json()
    assert [b["bundle_id"] for b in pruned["removed"]] == [committed]
    assert ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()["ok"]
