"""The unattended jobs end to end (issue 4): config-driven nightly backups, status and RPO, the restore-test
drill and its RTO, retention, locks, metrics, the examples. Nights are simulated with AIBACKUP_NOW."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from aibackup.repository import Repository
from tests.conftest import free_port
from tests.helpers import flip_middle_byte, manifest_json, ok, one_line_error, seed_chroma

Cli = Any
START = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.UTC)


def night(monkeypatch: pytest.MonkeyPatch, when: dt.datetime) -> None:
    monkeypatch.setenv("AIBACKUP_NOW", when.isoformat())


def write_config(tmp_path: Path, extra: str = "", kb_rto: str = "1h") -> Path:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "app.jsonl").write_text('{"user_id": "u1", "input": "hi", "output": "hello"}\n')
    path = tmp_path / "aibackup.yaml"
    path.write_text(
        "repository: ./repo\n"
        "metrics_file: ./metrics/aibackup.prom\n"
        "sources:\n"
        f"  kb:   {{uri: 'chroma:./chroma', rpo: 24h, rto: {kb_rto}}}\n"
        "  logs: {uri: 'conversations:./logs', rpo: 1h}\n"
        "retention: {keep_last: 2, keep_daily: 3, keep_monthly: 2}\n"
        "restore_test: {report: ./reports/drill}\n" + extra
    )
    return path


def test_nightly_backups_status_retention_and_metrics(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=30)
    write_config(tmp_path)
    for n in range(40):  # forty nights, one backup of every source each night
        night(monkeypatch, START + dt.timedelta(days=n))
        with (tmp_path / "logs" / "app.jsonl").open("a") as f:
            f.write(json.dumps({"user_id": "u2", "input": f"night {n}", "output": "ok"}) + "\n")
        result = ok(cli("backup", "--json")).json()
        assert result["ok"] and [s["source"] for s in result["sources"]] == ["kb", "logs"]
    last_night = START + dt.timedelta(days=39)

    night(monkeypatch, last_night + dt.timedelta(minutes=30))
    status = ok(cli("status", "--json")).json()
    assert status["ok"] and {s["source"]: s["rpo_breached"] for s in status["sources"]} == {"kb": False, "logs": False}

    # Two hours later the hourly logs source breaches its 1h RPO: status exits 1 (for monitoring).
    night(monkeypatch, last_night + dt.timedelta(hours=2))
    breached = cli("status", "--json")
    assert breached.code == 1
    assert {s["source"]: s["rpo_breached"] for s in breached.json()["sources"]} == {"kb": False, "logs": True}
    metrics = (tmp_path / "metrics" / "aibackup.prom").read_text()
    assert 'aibackup_rpo_breached{source="logs"} 1' in metrics
    assert 'aibackup_rpo_breached{source="kb"} 0' in metrics
    assert 'aibackup_backup_success{source="kb"} 1' in metrics
    for metric in (
        "aibackup_last_success_timestamp_seconds",
        "aibackup_backup_duration_seconds",
        "aibackup_backup_rows",
    ):
        assert f"# TYPE {metric} gauge" in metrics

    # Retention: per source, last 2 + 3 daily + 2 monthly (January's last night and February's).
    pruned = ok(cli("prune", "--dry-run", "--json")).json()
    assert len(pruned["removed"]) == 2 * 40 - 2 * 4
    ok(cli("pin", pruned["removed"][0]["bundle_id"]))
    pruned = ok(cli("prune", "--json")).json()
    assert len(pruned["removed"]) == 2 * 40 - 2 * 4 - 1
    # Every chain is still read by a kept bundle (January's last night extends the first full backup of
    # kb; the newest logs bundle extends every night's): their parts stay, none is removed.
    assert pruned["parts_kept_for_chains"] and pruned["parts_removed"] == []
    # The conversation log chain still restores whole after its middle links were pruned.
    restored = ok(
        cli("restore", "latest", "--collection", "logs", "--to", f"conversations:{tmp_path / 'out'}", "--json")
    )
    assert restored.json()["ok"]
    assert (tmp_path / "out" / "app.jsonl").read_bytes() == (tmp_path / "logs" / "app.jsonl").read_bytes()
    assert ok(cli("verify", "--read-data", "--json")).json()["ok"]


def test_a_source_down_does_not_stop_the_others(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=10)
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            "  logs:", f"  down: {{uri: 'qdrant+http://127.0.0.1:{free_port()}', rpo: 24h}}\n  logs:"
        )
    )
    night(monkeypatch, START)
    result = cli("backup", "--json")
    assert result.code == 3  # the failed source's exit code: unreachable
    runs = {r["source"]: r for r in result.json()["sources"]}
    assert runs["kb"]["ok"] and runs["logs"]["ok"] and not runs["down"]["ok"]
    assert "127.0.0.1" in runs["down"]["error"]
    text = cli("backup")
    assert text.code == 3 and "FAILED" in text.out and "down:" in text.out
    status = cli("status", "--json")
    assert status.code == 1 and [s["source"] for s in status.json()["sources"] if s["rpo_breached"]] == ["down"]


def test_restore_test_drill_reports_rto_and_fails_on_damage(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=40, space="cosine")
    write_config(tmp_path)
    ok(cli("backup"))
    drill = ok(cli("restore-test", "--json")).json()
    assert drill["ok"] and {r["source"] for r in drill["sources"]} == {"kb", "logs"}
    for r in drill["sources"]:
        assert r["rto_met"] and r["rto_seconds"] > 0 and all(c["ok"] for c in r["checks"])
    report = (tmp_path / "reports" / "drill.md").read_text()
    assert "Result: **passed**" in report and "| kb |" in report
    assert json.loads((tmp_path / "reports" / "drill.json").read_text())["ok"]
    assert not list(Path("/tmp").glob("aibackup-drill-kb-*"))  # the scratch stores are cleaned up
    status = ok(cli("status", "--json")).json()
    assert all(s["last_restore_test"]["ok"] for s in status["sources"])

    # Damage the newest kb bundle: the drill fails (exit 1) and says why; status shows it.
    newest = next(b for b in ok(cli("list", "--json")).json() if b["source"]["kind"] == "chroma")
    part = next((tmp_path / "repo" / "data" / newest["bundle_id"]).rglob("*.parquet"))
    flip_middle_byte(part)
    failed = cli("restore-test", "--source", "kb", "--json")
    assert failed.code == 1
    (result,) = failed.json()["sources"]
    assert not result["ok"] and "sha256" in result["error"]
    assert "FAILED" in (tmp_path / "reports" / "drill.md").read_text()
    assert ok(cli("status", "--json")).json()["sources"][0]["last_restore_test"]["ok"] is False


def test_restore_test_misses_an_rto(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=2000, dim=8)  # Qdrant local mode takes ~2 s for these
    config = write_config(tmp_path, kb_rto="1s")
    config.write_text(config.read_text() + "targets:\n  scratch: {uri: 'qdrant:./scratch'}\n")
    config.write_text(config.read_text().replace("restore_test: {report", "restore_test: {target: scratch, report"))
    ok(cli("backup", "--source", "kb"))
    missed = cli("restore-test", "--source", "kb", "--json")
    assert missed.code == 1
    (result,) = missed.json()["sources"]
    assert all(c["ok"] for c in result["checks"]) and not result["rto_met"] and result["rto_objective_seconds"] == 1


def test_overlapping_runs_and_prune_racing_a_backup(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from aibackup.lock import RepositoryLock
    from aibackup.repository import Repository

    seed_chroma(tmp_path / "chroma", "docs", n=10)
    write_config(tmp_path)
    ok(cli("backup"))
    repo = Repository.open(str(tmp_path / "repo"))
    source = f"chroma:{tmp_path / 'chroma'}"
    with RepositoryLock(repo, "backup", source):  # the previous night's run is still going
        overlapping = cli("backup", "--json")
        assert overlapping.code == 3
        runs = {r["source"]: r for r in overlapping.json()["sources"]}
        assert not runs["kb"]["ok"] and "locked" in runs["kb"]["error"] and runs["logs"]["ok"]
        one_line_error(cli("prune", "--keep-last", "1"), 3, "locked by backup")
    with RepositoryLock(repo, "prune", "*"):
        refused = cli("backup", "--source", "kb")  # a config run reports each source in its summary
        assert refused.code == 3 and "kb: repository is locked by prune" in refused.out
    ok(cli("prune", "--keep-last", "1"))
    assert ok(cli("verify", "--read-data", "--json")).json()["ok"]


def test_config_errors_name_file_line_and_key(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "aibackup.yaml").write_text("repository: ./repo\nsources:\n  kb: {uri: 'chroma:./c', rpo: 24x}\n")
    one_line_error(cli("status"), 2, "aibackup.yaml:3", "sources.kb.rpo")
    monkeypatch.setenv("SECRET_REPO", "s3://bucket-with-a-secret-name-9f8e7d")
    (tmp_path / "aibackup.yaml").write_text("repository: ${SECRET_REPO}\nsources:\n  kb: {uri: 'mysql:x'}\n")
    line = one_line_error(cli("status"), 2, "sources.kb")
    assert "9f8e7d" not in line
    one_line_error(cli("backup", "--config", str(tmp_path / "missing.yaml")), 2, "missing.yaml")


def test_examples_are_real_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every aibackup command line in examples/ parses with the real CLI; the example config loads."""
    from aibackup.cli import cli
    from aibackup.config import load_config

    examples = Path(__file__).resolve().parents[2] / "examples"
    import yaml

    commands = []
    for doc in yaml.safe_load_all((examples / "kubernetes" / "aibackup-cronjobs.yaml").read_text()):
        if doc["kind"] == "CronJob":
            (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            assert container["args"][0] == "aibackup"
            commands.append(container["args"][1:])
    for path in [examples / "crontab", *sorted((examples / "systemd").glob("*.service"))]:
        for text_line in path.read_text().splitlines():
            if "aibackup " in text_line and not text_line.lstrip().startswith("#"):
                commands.append(shlex.split(text_line.split("aibackup ", 1)[1].split(">")[0]))
    assert len(commands) == 2 + 5 + 2
    for words in commands:
        name, *rest = words
        command = cli.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None, words
        command.make_context(name, list(rest))  # parses every option: an unknown one raises
    config = load_config(str(examples / "aibackup.yaml"))
    assert set(config.sources) == {"kb", "logs", "tuning", "settings"}


def test_golden_queries_are_checked_by_the_drill(tmp_path: Path, cli: Cli) -> None:
    records = seed_chroma(tmp_path / "chroma", "docs", n=50, dim=8, space="l2")
    golden = [
        {"collection": "docs", "vector": records["embeddings"][i].tolist(), "expected": [records["ids"][i]]}
        for i in (3, 17, 42)
    ]
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("rto: 1h}", "rto: 1h, golden_queries: ./golden.json}"))
    ok(cli("backup", "--source", "kb"))
    passed = ok(cli("restore-test", "--source", "kb", "--json")).json()
    (check,) = [c for c in passed["sources"][0]["checks"] if c["name"] == "golden queries"]
    assert check["ok"] and "recall 1.000, the source's 1.000 at backup, over 3 golden queries" in check["detail"]
    assert check["measures"] == {
        "rule": "baseline",
        "recall": 1.0,
        "source_recall": 1.0,
        "needs": 0.95,
        "standard_error": 0.0,
        "queries": 3,
    }
    assert manifest_json(tmp_path / "repo")["datasets"][0]["baseline"]["golden"]["recalls"] == [1.0, 1.0, 1.0]
    report = (tmp_path / "reports" / "drill.md").read_text()
    assert "| golden queries | 1.000 | 1.000 | baseline | ok |" in report  # source vs restored, per check
    assert "| search | 1.000 | 1.000 | baseline | ok |" in report
    golden[0]["expected"] = ["doc-00044"]  # a wrong expectation (the record's own vector finds itself)
    golden[1]["expected"] = ["doc-00045"]
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    # The file changed since the backup: no baseline to compare with, so the absolute minimum applies.
    failed = cli("restore-test", "--source", "kb", "--json")
    assert failed.code == 1
    (check,) = [c for c in failed.json()["sources"][0]["checks"] if c["name"] == "golden queries"]
    assert not check["ok"] and "recall 0.333" in check["detail"] and "golden file changed" in check["detail"]
    # Backed up with these expectations, the source itself answers 1 of 3: a restore answering the same
    # is as good as the source was, and passes.
    ok(cli("backup", "--source", "kb"))
    again = ok(cli("restore-test", "--source", "kb", "--json")).json()
    (check,) = [c for c in again["sources"][0]["checks"] if c["name"] == "golden queries"]
    assert check["ok"] and "recall 0.333, the source's 0.333 at backup" in check["detail"]
    assert manifest_json(tmp_path / "repo")["datasets"][0]["baseline"]["golden"]["recalls"] == [0.0, 0.0, 1.0]


def test_a_backup_by_uri_records_the_configured_golden_queries(tmp_path: Path, cli: Cli) -> None:
    """`aibackup backup chroma:./chroma` with a config naming that store: the bundle gets its golden baseline."""
    records = seed_chroma(tmp_path / "chroma", "docs", n=50, dim=8, space="l2")
    golden = [{"collection": "docs", "vector": records["embeddings"][5].tolist(), "expected": [records["ids"][5]]}]
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("rto: 1h}", "rto: 1h, golden_queries: ./golden.json}"))
    ok(cli("backup", "chroma:./chroma", "--queries", "5"))
    drill = ok(cli("restore-test", "--source", "kb", "--json")).json()
    checks = {c["name"]: c for c in drill["sources"][0]["checks"]}
    assert checks["golden queries"]["measures"]["rule"] == "baseline"
    assert checks["search"]["measures"]["rule"] == "baseline" and checks["search"]["measures"]["queries"] == 5


def test_operator_edges(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review findings, each checked: exact metric values, a metrics file that cannot be written, a damaged
    newest manifest, a scratch target emptied after the drill, `pin latest`, report paths with dots,
    credentials refused in URIs, and a lock dated in the future that still goes stale."""
    import os

    seed_chroma(tmp_path / "chroma", "docs", n=20)
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace("restore_test: {report", "restore_test: {target: scratch, report")
        + "targets:\n  scratch: {uri: 'qdrant:./scratch'}\n"
    )
    night(monkeypatch, START)
    ok(cli("backup"))
    metrics = (tmp_path / "metrics" / "aibackup.prom").read_text()
    assert f'aibackup_last_success_timestamp_seconds{{source="kb"}} {int(START.timestamp())}\n' in metrics

    # A metrics file that cannot be written: the result is still printed, then one error line, exit 3.
    broken = cli("backup", "--source", "logs", "--metrics-file", "/proc/no/such/aibackup.prom")
    assert broken.code == 3 and "logs    ok" in broken.out and "metrics file" in broken.err

    # The drill empties the configured scratch target afterwards; reports keep dots in their names.
    drill = ok(cli("restore-test", "--source", "kb", "--report", str(tmp_path / "drill.2026.02"), "--json")).json()
    assert drill["sources"][0]["cleanup"] == "restored collections removed from scratch"
    assert (tmp_path / "drill.2026.02.md").exists() and (tmp_path / "drill.2026.02.json").exists()
    from qdrant_client import QdrantClient

    scratch = QdrantClient(path=str(tmp_path / "scratch"))
    assert scratch.get_collections().collections == []
    scratch.close()

    # A damaged newest manifest fails the drill instead of quietly testing an older bundle.
    night(monkeypatch, START + dt.timedelta(days=1))
    newest = ok(cli("backup", "--source", "kb", "--json")).json()["sources"][0]["bundle_id"]
    (tmp_path / "repo" / "bundles" / f"{newest}.json").write_text("{}")
    failed = cli("restore-test", "--source", "kb", "--json")
    assert failed.code == 1 and newest in failed.json()["sources"][0]["error"]
    (tmp_path / "repo" / "bundles" / f"{newest}.json").unlink()

    assert "pinned" in ok(cli("pin", "latest")).out

    # A credential in a URI is refused, and not echoed back.
    refused = cli("backup", "chroma+http://127.0.0.1:1?api_key=SuperSecret123")
    assert refused.code == 2 and "SuperSecret123" not in refused.err and "api_key_env" in refused.err

    # A backup killed under a later AIBACKUP_NOW leaves a lock dated in the future: it still goes stale.
    from aibackup.lock import RepositoryLock
    from aibackup.repository import Repository

    night(monkeypatch, dt.datetime(2027, 6, 1, tzinfo=dt.UTC))
    lock = RepositoryLock(Repository.open(str(tmp_path / "repo")), "backup", f"chroma:{tmp_path / 'chroma'}").acquire()
    path = tmp_path / "repo" / lock.path
    leftover = path.read_bytes()
    lock.release()
    path.write_bytes(leftover)  # what the killed run left behind: a heartbeat dated June 2027
    monkeypatch.delenv("AIBACKUP_NOW")
    past = dt.datetime.now().timestamp() - 3600
    os.utime(path, (past, past))
    taken = ok(cli("backup", "--source", "kb", "--json")).json()
    assert taken["ok"] and any("stale lock" in n for s in taken["sources"] for n in s["notes"])


def test_the_drill_report_shows_both_recalls_for_every_collection(tmp_path: Path, cli: Cli) -> None:
    """A source of several collections: each collection's search check keeps its measures, so the report's
    source-vs-restored table has a row per collection (the check names carry the collection)."""
    seed_chroma(tmp_path / "chroma", "docs", n=40, dim=8, space="l2")
    seed_chroma(tmp_path / "chroma", "faqs", n=30, dim=8, space="cosine")
    write_config(tmp_path)
    ok(cli("backup", "--source", "kb"))
    drill = ok(cli("restore-test", "--source", "kb", "--json")).json()
    searches = {c["name"]: c for c in drill["sources"][0]["checks"] if c["name"].endswith(": search")}
    assert set(searches) == {"docs: search", "faqs: search"}
    assert all(c["measures"]["rule"] and "recall" in c["measures"] for c in searches.values())
    report = (tmp_path / "reports" / "drill.md").read_text()
    for name in searches:
        assert f"| {name} | 1.000 | 1.000 | baseline | ok |" in report


def test_prune_removes_the_reports_no_reader_needs(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A nightly `verify --read-data` adds a report that every later backup reads (the damaged parts a chain
    must not extend): prune removes the ones that decide nothing any more, and keeps the history of the
    bundles it keeps, what status shows, and every report of a damaged part still stored."""
    seed_chroma(tmp_path / "chroma", "docs", n=10)
    write_config(tmp_path)
    logs: list[str] = []
    for n in range(6):
        night(monkeypatch, START + dt.timedelta(days=n))
        with (tmp_path / "logs" / "app.jsonl").open("a") as f:
            f.write(json.dumps({"user_id": "u2", "input": f"night {n}", "output": "ok"}) + "\n")
        ok(cli("backup"))
        logs.append(manifest_json(tmp_path / "repo")["bundle_id"])  # the newest bundle: the logs source's
        night(monkeypatch, START + dt.timedelta(days=n, hours=1))
        ok(cli("verify", "--read-data"))
    # The third night's log link goes bad on disk; a verify of that bundle alone finds it. Every later log
    # link's chain still reads the part, so its report must outlive the bundle it names.
    parts = [p["path"] for p in manifest_json(tmp_path / "repo", logs[2])["datasets"][0]["parts"]]
    (damaged,) = [p for p in parts if p.startswith(f"data/{logs[2]}/")]
    flip_middle_byte(tmp_path / "repo" / damaged)
    night(monkeypatch, START + dt.timedelta(days=5, hours=2))
    assert cli("verify", "--read-data", logs[2]).code == 1
    before = cli("status", "--json")  # exit 1: the hourly logs source is past its RPO by now

    def listing(folder: str) -> set[str]:
        return {f"reports/{folder}/{p.name}" for p in (tmp_path / "repo" / "reports" / folder).iterdir()}

    verifies, backups = listing("verify"), listing("backups")
    assert (len(verifies), len(backups)) == (7, 12)
    planned = ok(cli("prune", "--keep-last", "2", "--dry-run", "--json")).json()
    assert (listing("verify"), listing("backups")) == (verifies, backups)  # a dry run removes nothing
    pruned = ok(cli("prune", "--keep-last", "2", "--json")).json()
    assert pruned["reports_removed"] == planned["reports_removed"]
    assert damaged in pruned["parts_kept_for_chains"]
    # Kept: the last nightly verify (the newest to decide every kept bundle) and the one that found the
    # damaged part; the backups of the two nights kept (recorded from the oldest kept bundle's start on).
    kept_verifies = sorted(verifies)[-2:]
    kept_backups = sorted(backups)[-4:]
    assert listing("verify") == set(kept_verifies) and listing("backups") == set(kept_backups)
    assert set(pruned["reports_removed"]) == (verifies - set(kept_verifies)) | (backups - set(kept_backups))
    after = cli("status", "--json")
    assert (after.code, after.json()) == (before.code, before.json())
    assert ok(cli("prune", "--keep-last", "2", "--dry-run", "--json")).json()["reports_removed"] == []  # all done
    # The damaged part's report still stops the next backup from extending the chain that reads it.
    night(monkeypatch, START + dt.timedelta(days=6))
    result = ok(cli("backup", "--json")).json()
    (logs_run,) = [s for s in result["sources"] if s["source"] == "logs"]
    fresh = manifest_json(tmp_path / "repo", logs_run["bundle_id"])["datasets"][0]
    assert not fresh.get("chain") and all(
        p["path"].startswith(f"data/{logs_run['bundle_id']}/") for p in fresh["parts"]
    )


def test_a_command_on_another_repository_leaves_the_configs_metrics_file_alone(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config's metrics file describes the config's repository: `prune --repo COPY` rewrote it with the
    copy's view (no backup or drill reports there: aibackup_verify_success fell to 0 and the backup metrics
    vanished). The config's repository spelled another way is still the config's."""
    config = write_config(tmp_path, extra="copies: [{repository: ./copy}]\n")
    config.write_text(config.read_text().replace("  kb:", "  # kb:"))
    night(monkeypatch, START)
    ok(cli("backup"))
    ok(cli("verify", "--read-data"))
    ok(cli("status"))
    metrics = tmp_path / "metrics" / "aibackup.prom"
    before = metrics.read_text()
    assert 'aibackup_verify_success{source="logs"} 1' in before and "aibackup_backup_success" in before
    metrics.unlink()
    ok(cli("prune", "--repo", "./copy", "--keep-last", "1", "--config", "aibackup.yaml"))
    ok(cli("status", "--repo", str(tmp_path / "copy")))
    assert not metrics.exists()
    ok(cli("prune", "--repo", str(tmp_path / "repo" / "."), "--keep-last", "1", "--config", "aibackup.yaml"))
    assert metrics.read_text() == before
    explicit = tmp_path / "copy.prom"
    ok(cli("status", "--repo", "./copy", "--metrics-file", str(explicit)))  # asked for: the copy's view
    assert 'aibackup_verify_success{source="logs"} 0' in explicit.read_text()


def test_the_next_drill_removes_the_scratch_store_of_a_killed_one(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill killed outright (kill -9, the OOM killer) cannot remove its temporary scratch store, a whole
    restored copy of the source; the next drill removes it, as a killed command's spool is removed."""
    seed_chroma(tmp_path / "chroma", "docs", n=3000, dim=64)
    write_config(tmp_path)
    ok(cli("backup", "--source", "kb", "--queries", "0"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    drill = subprocess.Popen(
        [sys.executable, "-m", "aibackup", "restore-test", "--source", "kb"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(scratch.glob("aibackup-drill-kb-*/owner.lock")) and drill.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        if drill.poll() is None:
            os.kill(drill.pid, signal.SIGKILL)
        drill.wait()
    (left,) = scratch.glob("aibackup-drill-kb-*")  # what a killed drill leaves
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR once: let this process read it too
    ok(cli("restore-test", "--source", "kb"))
    assert not left.exists() and not list(scratch.iterdir())


def test_prune_keeps_the_report_of_a_kept_bundle_made_after_the_clock_stepped_back(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is named by the clock, the bundle id is moved past the newest: the kept bundle's own
    report predates the oldest kept bundle's id, and prune removed it while it kept a removed bundle's."""
    write_config(tmp_path)
    (tmp_path / "aibackup.yaml").write_text(
        (tmp_path / "aibackup.yaml").read_text().replace("  kb:", "  # kb:").replace("restore_test", "# r")
    )
    for when in ("2026-01-02T02:00:00", "2026-01-03T02:00:00", "2026-01-02T12:00:00"):  # the clock went back
        monkeypatch.setenv("AIBACKUP_NOW", when)
        with (tmp_path / "logs" / "app.jsonl").open("a") as f:
            f.write(json.dumps({"user_id": "u", "input": when, "output": "ok"}) + "\n")
        ok(cli("backup"))
    kept = manifest_json(tmp_path / "repo")["bundle_id"]
    ok(cli("prune", "--keep-last", "1"))
    storage = Repository.open(str(tmp_path / "repo")).storage
    names = [p.name for p in (tmp_path / "repo" / "reports" / "backups").iterdir()]
    assert kept in {json.loads(storage.read_bytes(f"reports/backups/{n}"))["bundle_id"] for n in names}
