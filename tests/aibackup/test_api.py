"""The Python API (issue 15): each method's result serialises to what the same command prints with
--json; errors carry the command's exit code; nothing is printed; docs/python-api.md runs as written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import aibackup
from aibackup.errors import BundleNotFoundError, NotARepositoryError, UsageError
from tests.helpers import Cli, ok, seed_chroma

DOCS = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
VOLATILE = {
    "seconds",
    "load_seconds",
    "check_seconds",
    "verify_seconds",
    "validate_seconds",
    "rto_seconds",
    "recorded_at",
}


def masked(doc: Any, **also: str) -> Any:
    """`doc` with timings (and the given keys) replaced, so two runs of one call compare equal."""
    if isinstance(doc, dict):
        return {k: "*" if k in VOLATILE or k in also else masked(v, **also) for k, v in doc.items()}
    if isinstance(doc, list):
        return [masked(v, **also) for v in doc]
    return doc


#: Byte counts of parts: two encryptions of the same rows differ by a few bytes (a page's checksum is over
#: its ciphertext, and Parquet stores it as a varint).
BYTE_COUNTS = {"bytes", "new_bytes"}


def byte_counts(doc: Any) -> list[int]:
    if isinstance(doc, dict):
        return [n for k, v in doc.items() for n in ([v] if k in BYTE_COUNTS else byte_counts(v))]
    if isinstance(doc, list):
        return [n for v in doc for n in byte_counts(v)]
    return []


def same_backup(by_api: Any, by_cli: Any, encrypted: bool, **also: str) -> None:
    """What a backup by the API returned is what the command printed; in an encrypted repository, byte
    counts within a few bytes."""
    if not encrypted:
        assert masked(by_api, **also) == masked(by_cli, **also)
        return
    also |= dict.fromkeys(BYTE_COUNTS, "*")
    assert masked(by_api, **also) == masked(by_cli, **also)
    api_bytes, cli_bytes = byte_counts(by_api), byte_counts(by_cli)
    assert len(api_bytes) == len(cli_bytes) > 0
    assert all(abs(a - c) <= 16 for a, c in zip(api_bytes, cli_bytes, strict=True)), (api_bytes, cli_bytes)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    seed_chroma(tmp_path / "chroma", "docs", n=60, dim=8)
    return tmp_path / "chroma"


def test_each_result_is_what_the_command_prints(tmp_path: Path, store: Path, cli: Cli, capsys: Any) -> None:
    capsys.readouterr()
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    backed_up = repo.backup(f"chroma:{store}", queries=10)
    assert capsys.readouterr() == ("", "")  # the API prints nothing
    by_cli = ok(cli("backup", f"chroma:{store}", "--repo", str(tmp_path / "cli-repo"), "--queries", "10", "--json"))
    same_backup(backed_up.to_json(), by_cli.json(), repo.fully_encrypted, bundle_id="*")
    assert backed_up.bundle_id == backed_up.manifest.bundle_id and backed_up.datasets[0].rows == 60

    url = str(tmp_path / "repo")
    assert repo.list().to_json() == ok(cli("list", "--repo", url, "--json")).json()
    assert repo.show("latest").to_json() == ok(cli("show", "latest", "--repo", url, "--json")).json()
    verified = repo.verify(read_data=True)
    assert masked(verified.to_json()) == masked(ok(cli("verify", "--read-data", "--repo", url, "--json")).json())

    to_api, to_cli = f"qdrant:{tmp_path / 'q-api'}", f"qdrant:{tmp_path / 'q-cli'}"
    restored = repo.restore("latest", to=to_api, queries=5)
    by_cli = ok(cli("restore", "latest", "--repo", url, "--to", to_cli, "--queries", "5", "--json"))
    assert masked(restored.to_json(), target="*") == masked(by_cli.json(), target="*")
    assert restored.ok and capsys.readouterr() == ("", "")

    pruned = repo.prune(keep_last=5, dry_run=True)
    assert pruned.to_json() == ok(cli("prune", "--keep-last", "5", "--dry-run", "--repo", url, "--json")).json()
    bundle = repo.pin("latest")
    assert bundle == backed_up.bundle_id and ok(cli("unpin", bundle, "--repo", url)).out == f"unpinned {bundle}\n"


def test_operations_results_are_what_the_commands_print(tmp_path: Path, store: Path, cli: Cli) -> None:
    config = tmp_path / "aibackup.yaml"
    config.write_text(
        f"repository: {tmp_path / 'repo'}\nsources:\n  kb: {{uri: 'chroma:{store}', rpo: 24h, rto: 1h}}\n"
        "restore_test: {queries: 5}\n"
    )
    # Each one the first backup of its own repository: a second backup of one repository would be incremental.
    twin = tmp_path / "twin.yaml"
    twin.write_text(config.read_text().replace(str(tmp_path / "repo"), str(tmp_path / "twin")))
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    nightly = repo.backup_sources(str(config), queries=5)
    by_cli = ok(cli("backup", "--config", str(twin), "--queries", "5", "--json")).json()
    same_backup(nightly.to_json(), by_cli, repo.fully_encrypted, bundle_id="*")
    assert nightly.ok and nightly.exit_code == 0

    drill = repo.restore_test(str(config))
    by_cli = ok(cli("restore-test", "--config", str(config), "--json")).json()
    assert masked(drill.to_json(), bundle_id="*", target="*") == masked(by_cli, bundle_id="*", target="*")
    drill.write(str(tmp_path / "reports" / "drill"))
    assert json.loads((tmp_path / "reports" / "drill.json").read_text()) == drill.to_json()
    assert (tmp_path / "reports" / "drill.md").read_text() == drill.markdown()

    status = repo.status(str(config))
    by_cli = ok(cli("status", "--config", str(config), "--json")).json()
    assert masked(status.to_json(), age_seconds="*", at="*") == masked(by_cli, age_seconds="*", at="*")


@pytest.mark.parametrize(
    ("call", "argv", "error"),
    [
        (
            lambda r, t: aibackup.Repository.open(str(t / "missing")),
            ["list", "--repo", "{t}/missing"],
            NotARepositoryError,
        ),
        (
            lambda r, t: r.show("20200101T000000.000000Z-deadbeef"),
            ["show", "20200101T000000.000000Z-deadbeef"],
            BundleNotFoundError,
        ),
        (
            lambda r, t: r.restore("latest", to=f"qdrant:{t}/q", collections=["ghost"]),
            ["restore", "latest", "--to", "qdrant:{t}/q", "--collection", "ghost"],
            BundleNotFoundError,  # latest holding 'ghost': none
        ),
        (lambda r, t: r.prune(), ["prune"], UsageError),
    ],
)
def test_errors_carry_the_exit_code_of_the_command(
    call: Any, argv: list[str], error: type[Exception], tmp_path: Path, store: Path, cli: Cli
) -> None:
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    repo.backup(f"chroma:{store}", queries=0)
    with pytest.raises(error) as raised:
        call(repo, tmp_path)
    argv = [a.replace("{t}", str(tmp_path)) for a in argv]
    if "--repo" not in argv:
        argv += ["--repo", str(tmp_path / "repo")]
    by_cli = cli(*argv)
    assert isinstance(raised.value, aibackup.AibackupError)
    assert raised.value.exit_code == by_cli.code != 0
    assert str(raised.value) in by_cli.err


def test_an_encrypted_repository_is_opened_with_its_key(tmp_path: Path, store: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True, key="correct horse battery staple")
    assert repo.encrypted
    repo.backup(f"config:{store}")  # a config source seals its secrets under the key
    again = aibackup.Repository.open(str(tmp_path / "repo"), key="correct horse battery staple")
    assert again.verify(read_data=True).to_json()["authenticated"] is True
    with pytest.raises(aibackup.AibackupError) as wrong:
        aibackup.Repository.open(str(tmp_path / "repo"), key="wrong")
    assert wrong.value.exit_code == 2


def test_the_python_api_page_runs_as_written(tmp_path: Path, monkeypatch: Any) -> None:
    seed_chroma(tmp_path / "data" / "chroma", "docs", n=40, dim=8)
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), namespace)
    assert namespace["restored"].ok and namespace["drill"].ok and namespace["nightly"].ok
    assert (tmp_path / "reports" / "restore-test.md").exists()
    assert namespace["pruned"].dry_run and len(namespace["repo"].list().entries) == 2  # nothing removed


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda r, s, t: r.backup(f"chroma:{s}", queries=-5), "queries must be a whole number from 0 to 10000"),
        (lambda r, s, t: r.backup(f"chroma:{s}", full_every=-1), "full_every must be a whole number from 0"),
        (lambda r, s, t: r.backup(f"chroma:{s}", on_bad_line="bogus"), "bad on_bad_line 'bogus'"),
        (lambda r, s, t: r.restore(to=f"chroma:{t}/o", queries=-1), "queries must be a whole number from 0"),
        (lambda r, s, t: r.restore(to=f"chroma:{t}/o", min_recall=5.0), "min_recall must be a number between 0"),
        (lambda r, s, t: r.restore(to=f"chroma:{t}/o", recall_tolerance=-3), "recall_tolerance must be a number"),
        (lambda r, s, t: r.restore(to=f"chroma:{t}/o", at="2026-01-01"), "must be a datetime, not str"),
        (lambda r, s, t: r.diff("latest", "latest", limit=None), "bad --limit None"),
    ],
)
def test_values_the_command_line_refuses_are_usage_errors_in_the_api_too(
    tmp_path: Path, store: Path, call: Any, needle: str
) -> None:
    """The API passed them on: a negative query count sliced the baseline (the proof ran over fewer queries
    than it said, ok), others committed a bundle or raised IndexError, TypeError or AttributeError."""
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    repo.backup(f"chroma:{store}", queries=10)
    count = len(repo.bundle_ids())
    with pytest.raises(UsageError, match=re.escape(needle)):
        call(repo, store, tmp_path)
    assert len(repo.bundle_ids()) == count and not (tmp_path / "o").exists()


def test_a_time_without_a_zone_is_utc_in_the_api_as_on_the_command_line(
    tmp_path: Path, store: Path, monkeypatch: Any
) -> None:
    """`at` without a zone was taken as the machine's local time: five hours later in New York, the
    newest bundle instead of the one the command line picks."""
    import datetime as dt
    import time

    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    for moment in ("2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z"):
        monkeypatch.setenv("AIBACKUP_NOW", moment)
        repo.backup(f"chroma:{store}", queries=0)
    first = repo.bundle_ids()[0]
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        picked = repo.restore(to=f"chroma:{tmp_path / 'o'}", at=dt.datetime(2026, 11, 20, 23, 0), queries=0)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert picked.bundle_id == first
