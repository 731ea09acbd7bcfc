"""What `status`, the metrics file and the drill report say when something is wrong, and only then: a source
without an RPO that has nothing, a bundle a later verify found damaged, a bundle dated past the clock, the
drill's cleanup kept out of its RTO (findings of a review of the operations side, each checked)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from aibackup import drill
from tests.helpers import Cli, flip_middle_byte, manifest_json, ok, seed_chroma

LINE = '{"user_id": "u%d", "input": "hi %d", "output": "hello"}\n'


def logs(folder: Path, n: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.jsonl").write_text("".join(LINE % (i, i) for i in range(n)))
    return folder


def config(tmp_path: Path, sources: str, extra: str = "") -> None:
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nmetrics_file: ./aibackup.prom\nsources:\n{sources}{extra}"
    )


def metric(tmp_path: Path, name: str, source: str) -> str | None:
    for line in (tmp_path / "aibackup.prom").read_text().splitlines():
        if line.startswith(f'{name}{{source="{source}"}} '):
            return line.rsplit(" ", 1)[1]
    return None


def test_a_source_without_an_rpo_and_without_a_bundle_sets_the_breach_gauge(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    logs(tmp_path / "logs")
    logs(tmp_path / "other")
    config(tmp_path, "  logs: {uri: 'conversations:./logs', rpo: 1h}\n  never: {uri: 'conversations:./other'}\n")
    ok(cli("backup", "--source", "logs"))
    assert cli("status").code == 1
    # An alert on aibackup_rpo_breached == 1 must fire for it (the sample was left out without an RPO).
    assert metric(tmp_path, "aibackup_rpo_breached", "never") == "1"
    assert metric(tmp_path, "aibackup_rpo_breached", "logs") == "0"
    assert metric(tmp_path, "aibackup_rpo_seconds", "never") is None


def test_a_bundle_a_later_verify_found_damaged_is_not_verified(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    logs(tmp_path / "logs", 200)
    config(tmp_path, "  logs: {uri: 'conversations:./logs', rpo: 24h}\n")
    ok(cli("backup"))
    ok(cli("verify", "--read-data"))
    ok(cli("status"))
    assert metric(tmp_path, "aibackup_verify_success", "logs") == "1"
    (part,) = (tmp_path / "repo" / "data").rglob("*.parquet")
    flip_middle_byte(part)
    time.sleep(0.01)  # reports are named by their time
    assert cli("verify", "--read-data").code == 1
    cli("status")
    assert metric(tmp_path, "aibackup_verify_success", "logs") == "0"


def test_a_bundle_dated_past_the_clock_breaches_the_rpo(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup made while the clock ran 3 days ahead: every later backup is refused ("fix the clock"), so
    status must not call the source fresh for 3 days plus its RPO."""
    monkeypatch.chdir(tmp_path)
    logs(tmp_path / "logs")
    config(tmp_path, "  logs: {uri: 'conversations:./logs', rpo: 1h}\n")
    monkeypatch.setenv("AIBACKUP_NOW", (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat())
    ok(cli("backup"))
    monkeypatch.delenv("AIBACKUP_NOW")
    assert cli("backup").code == 2
    result = cli("status")
    assert result.code == 1 and "ahead" in result.out and "BREACHED" in result.out, result.out
    assert metric(tmp_path, "aibackup_rpo_breached", "logs") == "1"
    # Within the step back a backup tolerates (a day), the same bundle is not an alarm.
    monkeypatch.setenv("AIBACKUP_NOW", (dt.datetime.now(dt.UTC) + dt.timedelta(days=2, hours=12)).isoformat())
    assert cli("status").code == 0


def test_the_drill_rto_stops_at_the_proof_and_its_report_says_what_stays(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    logs(tmp_path / "logs")
    config(
        tmp_path,
        "  logs: {uri: 'conversations:./logs', rpo: 1h, rto: 3s}\n",
        "targets:\n  scratch: {uri: 'conversations:./scratch'}\nrestore_test: {target: scratch, report: ./drill}\n",
    )
    ok(cli("backup"))
    clean = drill._clean_scratch

    def slow_clean(*args: object, **kwargs: object) -> str:
        time.sleep(4)  # removing a large scratch store: after the restore was proven
        return clean(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(drill, "_clean_scratch", slow_clean)
    result = ok(cli("restore-test", "--json")).json()
    (source,) = result["sources"]
    assert source["rto_met"] and source["rto_seconds"] < 3, source
    report = (tmp_path / "drill.md").read_text()
    assert f"Cleanup: {source['cleanup']}" in report and source["cleanup"], report


def test_status_json_keeps_the_last_successful_run_beside_a_failed_one(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = logs(tmp_path / "logs")
    config(tmp_path, "  logs: {uri: 'conversations:./logs', rpo: 1h}\n")
    ok(cli("backup"))
    with (folder / "app.jsonl").open("a") as f:
        f.write("not json\n")
    time.sleep(0.01)
    assert cli("backup").code != 0
    (entry,) = json.loads(cli("status", "--json").out)["sources"]
    assert entry["last_backup"]["ok"] is False
    assert entry["last_successful_backup"]["ok"] is True and entry["last_successful_backup"]["new_bytes"] > 0


def test_a_repository_that_cannot_be_read_is_a_breach_in_the_metrics_file(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unmounted disk: status fails in one line, and the metrics file no longer says the last good
    numbers (node_exporter would serve them for as long as nobody looks)."""
    monkeypatch.chdir(tmp_path)
    logs(tmp_path / "logs")
    config(tmp_path, "  logs: {uri: 'conversations:./logs', rpo: 1h}\n")
    ok(cli("backup"))
    ok(cli("status"))
    assert metric(tmp_path, "aibackup_rpo_breached", "logs") == "0"
    (tmp_path / "repo").rename(tmp_path / "repo.unmounted")
    result = cli("status")
    assert result.code != 0 and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert metric(tmp_path, "aibackup_rpo_breached", "logs") == "1"
    assert metric(tmp_path, "aibackup_bundle_age_seconds", "logs") is None


def test_a_backup_of_one_collection_by_hand_is_not_the_whole_store_sources_newest(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source of a whole store: a later `backup --collection docs` by hand holds nothing of faq, so status
    must not count it as the source's fresh backup, and the drill must test the whole-store bundle."""
    monkeypatch.chdir(tmp_path)
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    seed_chroma(tmp_path / "chroma", "faq", n=20)
    config(tmp_path, "  kb: {uri: 'chroma:./chroma', rpo: 1d}\n")
    start = dt.datetime.now(dt.UTC)
    monkeypatch.setenv("AIBACKUP_NOW", start.isoformat())
    ok(cli("backup"))
    whole = manifest_json(tmp_path / "repo")["bundle_id"]
    monkeypatch.setenv("AIBACKUP_NOW", (start + dt.timedelta(days=3)).isoformat())
    ok(cli("backup", "chroma:./chroma", "--collection", "docs", "--repo", "./repo"))
    assert manifest_json(tmp_path / "repo")["source"]["collections"] == ["docs"]
    (entry,) = json.loads(cli("status", "--json").out)["sources"]
    assert entry["newest_bundle"] == whole and entry["rpo_breached"], entry
    drilled = json.loads(cli("restore-test", "--json").out)["sources"][0]
    assert drilled["bundle_id"] == whole, drilled
