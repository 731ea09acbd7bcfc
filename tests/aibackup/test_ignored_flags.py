"""Flags and settings that were accepted and then not applied (found by probing every verb; see
docs/reliability.md): each now does what it says, or is refused before anything is written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.helpers import Cli, ok, one_line_error

LOG_LINE = '{"user_id": "u", "input": "hi", "output": "hello"}\n'


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """./logs (a conversation log) and ./aibackup.yaml naming it, the repository ./repo; no key in the
    environment (the encrypted suite run's would encrypt every repository)."""
    for name in ("AIBACKUP_KEY", "AIBACKUP_KEY_FILE", "AIBACKUP_REPO"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.jsonl").write_text(LOG_LINE)
    config = tmp_path / "aibackup.yaml"
    config.write_text("repository: ./repo\nsources:\n  logs: {uri: 'conversations:./logs', rpo: 1h}\n")
    return config


def bundles(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "bundles").glob("*.json")) if (repo / "bundles").exists() else []


def test_the_configs_sources_are_backed_up_into_the_repository_given(
    logs: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backup --repo X` (or AIBACKUP_REPO) with the config's sources wrote into the config's repository,
    and `status --repo X --metrics-file` wrote the metrics of the config's repository beside X's table."""
    ok(cli("backup", "--repo", "./other"))
    assert len(bundles(tmp_path / "other")) == 1 and not (tmp_path / "repo").exists()
    monkeypatch.setenv("AIBACKUP_REPO", str(tmp_path / "from-env"))
    ok(cli("backup"))
    assert len(bundles(tmp_path / "from-env")) == 1 and not (tmp_path / "repo").exists()
    monkeypatch.delenv("AIBACKUP_REPO")
    ok(cli("status", "--repo", "./other", "--metrics-file", "m.prom"))
    metrics = (tmp_path / "m.prom").read_text()
    assert 'aibackup_rpo_breached{source="logs"} 0' in metrics and 'aibackup_backup_rows{source="logs"} 1' in metrics


def test_the_configs_key_file_opens_an_encrypted_repository_for_every_verb(
    logs: Path, tmp_path: Path, cli: Cli
) -> None:
    """list, show, pin, unpin, prune, status, restore-test and the metrics file said the repository needs a
    key although the config names its key_file (verify, diff, restore and backup used it)."""
    (tmp_path / "repo.key").write_text("a passphrase long enough for the test\n")
    logs.write_text(logs.read_text() + "key_file: ./repo.key\n")
    ok(cli("init", "--encrypt"))
    ok(cli("backup", "--metrics-file", "m.prom"))
    assert 'aibackup_backup_rows{source="logs"} 1' in (tmp_path / "m.prom").read_text()
    assert "logs (1)" in ok(cli("list")).out and "part data/" in ok(cli("show", "latest")).out
    ok(cli("pin", "latest"))
    ok(cli("unpin", "latest"))
    ok(cli("prune", "--keep-last", "5", "--dry-run"))
    ok(cli("restore-test"))
    # The runs' reports are sealed into the repository with that key too: status shows both.
    shown = ok(cli("status")).out
    assert "(1 of 1 rows)" in shown and re.search(r"ok \(\d+s\)$", shown.rstrip())
    # A wrong key in the config is one line, before anything is read.
    (tmp_path / "repo.key").write_text("another passphrase, not this repository's\n")
    one_line_error(cli("list"), 2, "wrong")


def test_prune_with_a_metrics_file_but_no_config_is_refused_before_it_removes_anything(
    logs: Path, tmp_path: Path, cli: Cli
) -> None:
    logs.unlink()
    for _ in range(2):
        ok(cli("backup", "conversations:./logs", "--repo", "./repo"))
        (tmp_path / "logs" / "app.jsonl").write_text(LOG_LINE * 2)
    one_line_error(cli("prune", "--repo", "./repo", "--keep-last", "1", "--metrics-file", "m.prom"), 2, "config")
    assert len(bundles(tmp_path / "repo")) == 2


def test_init_with_a_key_file_but_no_encrypt_is_refused(logs: Path, tmp_path: Path, cli: Cli) -> None:
    """It made a repository without encryption, silently; the next backup with that key file was refused."""
    (tmp_path / "repo.key").write_text("a passphrase long enough for the test\n")
    one_line_error(cli("init", "--repo", "./plain", "--key-file", "repo.key"), 2, "add --encrypt")
    logs.write_text(logs.read_text() + "key_file: ./repo.key\n")
    one_line_error(cli("init"), 2, "names a key_file: add --encrypt")  # the config's repository, ./repo
    assert not (tmp_path / "plain").exists() and not (tmp_path / "repo").exists()
    ok(cli("init", "--encrypt"))


def test_key_add_refuses_a_new_passphrase_and_a_kms_key_at_once(logs: Path, tmp_path: Path, cli: Cli) -> None:
    """The new passphrase was dropped without a word when --kms-key-id came with it (the API refuses both)."""
    (tmp_path / "repo.key").write_text("a passphrase long enough for the test\n")
    (tmp_path / "new.key").write_text("a second passphrase for a second slot\n")
    ok(cli("init", "--encrypt", "--key-file", "repo.key"))
    args = ("key", "add", "--key-file", "repo.key", "--kms-key-id", "alias/x")
    one_line_error(cli(*args, "--new-key-file", "new.key"), 2, "not both")
    os.environ["AIBACKUP_NEW_KEY"] = "from the environment"
    try:
        one_line_error(cli(*args), 2, "$AIBACKUP_NEW_KEY or --kms-key-id, not both")
    finally:
        del os.environ["AIBACKUP_NEW_KEY"]


def test_allow_lossy_reaches_the_configs_sources(logs: Path, tmp_path: Path, cli: Cli) -> None:
    """`backup --allow-lossy` with the config's sources failed saying to pass --allow-lossy; the config
    had no way to say it either. A model folder with a symlink leading out of it is the lossy case here."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 64)
    (tmp_path / "outside.txt").write_text("not the model's")
    (model / "zz-outside.txt").symlink_to(tmp_path / "outside.txt")
    logs.write_text("repository: ./repo\nsources:\n  m: {uri: 'model:./model', rpo: 24h}\n")
    refused = cli("backup")
    assert refused.code == 2 and "pass --allow-lossy" in refused.out
    done = ok(cli("backup", "--allow-lossy")).out
    assert "zz-outside.txt" in done and "skipped" in done
    logs.write_text("repository: ./repo\nsources:\n  m: {uri: 'model:./model', rpo: 24h, allow_lossy: true}\n")
    assert "skipped" in ok(cli("backup")).out


def test_restore_refuses_settings_of_another_kind_of_data(logs: Path, tmp_path: Path, cli: Cli) -> None:
    """A conversation log's restore took --layout, --queries, --min-recall, --recall-tolerance and
    --load-check, ignored them, and said "all checks passed" as if they had applied."""
    ok(cli("backup", "conversations:./logs", "--repo", "./repo"))
    restore = ("restore", "latest", "--repo", "./repo", "--to", "conversations:./out")
    for args, flags in [
        (("--queries", "5", "--min-recall", "0.99"), "--queries, --min-recall"),
        (("--layout", "langchain"), "--layout"),
        (("--recall-tolerance", "0"), "--recall-tolerance"),
        (("--load-check",), "--load-check"),
    ]:
        line = one_line_error(cli(*restore, *args), 2, f"{flags}: not for what bundle")
        assert "(conversations)" in line
    assert not (tmp_path / "out").exists()  # refused before anything was written
    ok(cli(*restore, "--recall-tolerance", "0.05"))  # the default, said again: nothing to refuse
