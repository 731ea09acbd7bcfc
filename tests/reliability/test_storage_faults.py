"""Storage faults: S3 that answers 500/503/SlowDown, resets connections, stalls, or applies a write and then
reports it failed. Backups and restores through :class:`tests.faultproxy.FaultProxy` (in front of moto's
real S3 server) either succeed through retries or fail with exit 3 and one line; looked at directly (without
the proxy), the repository never holds a committed bundle with a missing or short part, and every bundle a
backup reported as made is there and verifies.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from tests.conftest import CliResult, Server
from tests.faultproxy import FaultProxy
from tests.helpers import Cli, ok, seed_chroma

SEED = 20261125
#: (fault rate, runs) in CI; `-m slow` runs more at a higher rate.
CI_RUNS = 6


def _runs(tmp_path: Path, cli: Cli, s3: Server, monkeypatch: pytest.MonkeyPatch, rate: float, runs: int) -> None:
    bucket = "faults"
    boto3.client("s3").create_bucket(Bucket=bucket)
    repo = f"s3://{bucket}/repo"
    store = tmp_path / "chroma"
    seed_chroma(store, "docs", n=300)
    seed_chroma(store, "more", n=100, dim=8)
    # Small retry budgets would make every run fail; the defaults are what users get.
    made: list[str] = []
    outcomes: list[str] = []
    for run in range(runs):
        with FaultProxy(f"{s3.host}:{s3.port}", rate, SEED + run, stall=0.5) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
            backup = cli("backup", f"chroma:{store}", "--repo", repo, "--json")
            restore = cli("restore", "latest", "--repo", repo, "--to", f"qdrant:{tmp_path / f'q{run}'}", "--json")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
        for what, result in (("backup", backup), ("restore", restore)):
            assert result.code in (0, 3), (what, run, result.code, result.err, dict(proxy.injected))
            if result.code == 3:
                lines = result.err.strip().splitlines()
                assert len(lines) == 1 and "Traceback" not in result.err, (what, result.err)
        if backup.code == 0:
            made.append(backup.json()["bundle_id"])
        if restore.code == 0:
            assert restore.json()["ok"]
        outcomes.append(f"run {run}: backup {backup.code}, restore {restore.code}, faults {dict(proxy.injected)}")
        # Directly, without faults: every bundle verifies, whatever happened above.
        verified = ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()
        assert verified["ok"], (run, verified["problems"], outcomes)
        listed = {b["bundle_id"] for b in ok(cli("list", "--repo", repo, "--json")).json()}
        assert set(made) <= listed, (run, set(made) - listed, outcomes)
    assert made, f"no backup got through faults at rate {rate}: {outcomes}"


def test_backups_and_restores_through_a_faulty_s3(
    tmp_path: Path, cli: Cli, s3_env: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _runs(tmp_path, cli, s3_env, monkeypatch, 0.1, CI_RUNS)


@pytest.mark.slow
def test_backups_and_restores_through_a_very_faulty_s3(
    tmp_path: Path, cli: Cli, s3_env: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _runs(tmp_path, cli, s3_env, monkeypatch, 0.3, 20)


def _copy_source(tmp_path: Path, cli: Cli, source: str) -> list[str]:
    """Three bundles in `source` (a conversation chain of two and a Chroma store); their ids."""
    from tests.aibackup.test_copy import conversations

    for start in (0, 50):
        ok(cli("backup", f"conversations:{conversations(tmp_path / 'logs', 50, start)}", "--repo", source))
    seed_chroma(tmp_path / "chroma", "docs", n=300)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", source))
    return sorted(b["bundle_id"] for b in ok(cli("list", "--repo", source, "--json")).json())


def _judge_copy(cli: Cli, copied: CliResult, proxy: FaultProxy, run: int, dest: str, ids: list[str]) -> str:
    """One copy through faults: exit 0, or 3 with one line; looked at directly (no proxy), the destination
    lists only bundles of the source and verifies. Returns the run's outcome line."""
    assert copied.code in (0, 3), (run, copied.code, copied.err, dict(proxy.injected))
    if copied.code == 3:
        lines = copied.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in copied.err, copied.err
    outcome = f"run {run}: copy {copied.code}, faults {dict(proxy.injected)}"
    listed = cli("list", "--repo", dest, "--json")
    if listed.code == 0:  # the copy exists once its marker landed
        assert {b["bundle_id"] for b in listed.json()} <= set(ids), outcome
        verified = ok(cli("verify", "--read-data", "--repo", dest, "--json")).json()
        assert verified["ok"], (run, verified["problems"], outcome)
    return outcome


def _copy_runs(tmp_path: Path, cli: Cli, s3: Server, monkeypatch: pytest.MonkeyPatch, rate: float, runs: int) -> None:
    """`copy` from a local repository into S3 through the fault proxy: each run succeeds through retries or
    fails with exit 3 and one line; looked at directly, the copy holds only complete bundles and verifies;
    a copy without faults then completes it."""
    source = str(tmp_path / "repo")
    ids = _copy_source(tmp_path, cli, source)
    bucket = f"faults-copy-{runs}"  # its own per test: moto's server (and so its buckets) lives for the session
    boto3.client("s3").create_bucket(Bucket=bucket)
    dest = f"s3://{bucket}/repo"
    outcomes: list[str] = []
    for run in range(runs):
        with FaultProxy(f"{s3.host}:{s3.port}", rate, SEED + run, stall=0.5) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
            copied = cli("copy", "--repo", source, "--to-repo", dest, "--json")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
        outcomes.append(_judge_copy(cli, copied, proxy, run, dest, ids))
    done = ok(cli("copy", "--repo", source, "--to-repo", dest, "--json")).json()
    assert done["ok"] and sorted(done["copied"] + done["skipped"]) == ids, (done, outcomes)
    assert ok(cli("verify", "--read-data", "--repo", dest, "--json")).json()["ok"]


def test_copies_into_a_faulty_s3(tmp_path: Path, cli: Cli, s3_env: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _copy_runs(tmp_path, cli, s3_env, monkeypatch, 0.1, CI_RUNS)


@pytest.mark.slow
def test_copies_into_a_very_faulty_s3(
    tmp_path: Path, cli: Cli, s3_env: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_runs(tmp_path, cli, s3_env, monkeypatch, 0.3, 12)


def test_copies_out_of_a_faulty_s3(tmp_path: Path, cli: Cli, s3_env: Server) -> None:
    """`copy` from an S3 repository reached through the fault proxy (its URL's own ``?endpoint=``; the
    destination, a new local folder each run, is not) with reads that also break off mid-body: each run
    succeeds through retries or fails with exit 3 and one line; the copy holds only complete bundles and
    verifies; a copy without faults completes it."""
    boto3.client("s3").create_bucket(Bucket="faults-source")
    source = "s3://faults-source/repo"
    ids = _copy_source(tmp_path, cli, source)
    outcomes: list[str] = []
    kinds = ("500", "503", "reset", "stall", "lost", "cut")
    for run in range(CI_RUNS):
        dest = str(tmp_path / f"copy-{run}")
        with FaultProxy(f"{s3_env.host}:{s3_env.port}", 0.2, SEED + run, kinds=kinds, stall=0.5) as proxy:
            copied = cli("copy", "--repo", f"{source}?endpoint={proxy.url}", "--to-repo", dest, "--json")
        outcomes.append(_judge_copy(cli, copied, proxy, run, dest, ids))
        done = ok(cli("copy", "--repo", source, "--to-repo", dest, "--json")).json()
        assert done["ok"] and sorted(done["copied"] + done["skipped"]) == ids, (done, outcomes)
    assert any("copy 0" in o for o in outcomes), outcomes
