"""Conversation logs, fine-tuning datasets and configs end to end through the CLI (issue 3)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ok, one_line_error

Cli = Any

SECRETS = {
    "openai": "sk-proj-Zq8LmWc4Rt1uVx7NaB3kDe6GhJ9PqS2y",
    "aws_id": "AKIAQ7XKD3PLM5NZ2R4T",
    "db_password": "hunter2-but-longer-Tz9!",
    "env_token": "tok_live_8f7e6d5c4b3a2918",
}


def line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


def exchange(n: int) -> dict[str, Any]:
    return {
        "user_id": f"user-{n % 3}",
        "session_id": f"s-{n // 4}",
        "timestamp": f"2026-11-2{n % 10}T0{n % 10}:15:00Z",
        "model": "gpt-5-mini",
        "cost": 0.0012 * n,
        "input": f"question {n}: ¿qué tal? 🙂 " + ("long " * (2000 if n == 3 else 1)),
        "output": f"answer {n} ✓",
        "tags": ["support", n],
        "tool_calls": [{"id": f"call_{n}", "function": {"name": "lookup", "arguments": json.dumps({"q": n})}}],
    }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


# --- conversation logs -------------------------------------------------------------------------------------


def test_incremental_conversation_logs_over_several_nights(tmp_path: Path, cli: Cli) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.jsonl"
    app.write_bytes(b"".join(line(exchange(n)) for n in range(5)))
    (logs / "openai.jsonl").write_bytes(
        line({"messages": [{"role": "user", "content": "hi 🙂"}, {"role": "assistant", "content": "hello"}]})
    )
    (logs / "empty.jsonl").write_bytes(b"")
    with gzip.open(logs / "archive.jsonl.gz", "wb") as f:
        f.write(b"".join(line(exchange(n)) for n in range(100, 110)))
    source = f"conversations:{logs}"

    night1 = ok(cli("backup", source, "--json")).json()
    assert night1["datasets"][0]["kind"] == "conversations"
    assert night1["datasets"][0]["rows"] == 16 and not night1["datasets"][0]["incremental"]
    assert night1["datasets"][0]["full_reason"] == "no earlier bundle of this dataset"
    snapshot1 = {"app.jsonl": app.read_bytes()}

    with app.open("ab") as f:
        f.write(b"".join(line(exchange(n)) for n in range(5, 8)))
    night2 = ok(cli("backup", source, "--json")).json()
    assert night2["datasets"][0]["incremental"] and night2["datasets"][0]["new_rows"] == 3
    assert night2["datasets"][0]["full_reason"] is None
    assert night2["datasets"][0]["rows"] == 19

    # A restore in the middle of the chain gives back exactly the first night.
    restored1 = ok(cli("restore", night1["bundle_id"], "--to", f"conversations:{tmp_path / 'r1'}", "--json")).json()
    assert restored1["ok"], restored1
    assert (tmp_path / "r1" / "app.jsonl").read_bytes() == snapshot1["app.jsonl"]

    with app.open("ab") as f:
        f.write(b"".join(line(exchange(n)) for n in range(8, 10)))
    (logs / "new-day.jsonl").write_bytes(line(exchange(42)))
    night3 = ok(cli("backup", source, "--json")).json()
    assert night3["datasets"][0]["incremental"] and night3["datasets"][0]["new_rows"] == 3

    shown = ok(cli("show", night3["bundle_id"], "--json")).json()["datasets"][0]
    assert shown["extends"] == night2["bundle_id"]
    assert any(p["path"].startswith(f"data/{night1['bundle_id']}/") for p in shown["parts"])

    restored = ok(cli("restore", "latest", "--to", f"conversations:{tmp_path / 'r3'}", "--json")).json()
    assert restored["ok"], restored
    assert {c["name"] for c in restored["datasets"][0]["checks"]} >= {"bundle", "rows", "ids", "content"}
    expected = tree(logs)
    expected["archive.jsonl"] = hashlib.sha256(gzip.decompress((logs / "archive.jsonl.gz").read_bytes())).hexdigest()
    del expected["archive.jsonl.gz"]
    assert tree(tmp_path / "r3") == expected
    assert ok(cli("verify", "--read-data", "--json")).json()["ok"]


def test_malformed_lines_fail_by_default_and_are_kept_raw_when_skipped(tmp_path: Path, cli: Cli) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    content = line(exchange(1)) + b'{"user_id": "u", "input": truncated\n' + line(exchange(2)) + b"[1, 2]\n"
    (logs / "app.jsonl").write_bytes(content)
    error = one_line_error(cli("backup", f"conversations:{logs}"), 2, "app.jsonl:2")
    assert "truncated" not in error  # the line's content is never echoed
    assert not (tmp_path / "aibackup-repo" / "bundles").exists() or not list(
        (tmp_path / "aibackup-repo" / "bundles").iterdir()
    )
    result = ok(cli("backup", f"conversations:{logs}", "--on-bad-line", "skip", "--json")).json()
    assert result["datasets"][0]["rows"] == 4
    assert any("app.jsonl:2" in note for note in result["notes"])
    ok(cli("restore", "--to", f"conversations:{tmp_path / 'out'}"))
    assert (tmp_path / "out" / "app.jsonl").read_bytes() == content


def test_incremental_after_a_digest_format_change(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain's dataset digest is a sum, so a parent written with the 0.1.0 digest algorithm (BLAKE2b) is not
    extended: the next backup is full (and says why), the one after it incremental again; the old bundle
    keeps verifying and restoring."""
    import aibackup.bundle

    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.jsonl"
    app.write_bytes(b"".join(line(exchange(n)) for n in range(4)))
    source = f"conversations:{logs}"
    with monkeypatch.context() as m:
        m.setattr(aibackup.bundle, "DIGEST_ALGORITHM", "blake2b128-sum-v1")
        old = ok(cli("backup", source, "--json")).json()
    assert ok(cli("show", old["bundle_id"], "--json")).json()["datasets"][0]["digest"]["algorithm"] == (
        "blake2b128-sum-v1"
    )

    with app.open("ab") as f:
        f.write(line(exchange(4)))
    full = ok(cli("backup", source, "--json")).json()
    assert not full["datasets"][0]["incremental"] and full["datasets"][0]["rows"] == 5
    assert any("full backup, not incremental" in note and "blake2b128-sum-v1" in note for note in full["notes"])
    with app.open("ab") as f:
        f.write(line(exchange(5)))
    again = ok(cli("backup", source, "--json")).json()
    assert again["datasets"][0]["incremental"] and again["datasets"][0]["new_rows"] == 1
    shown = ok(cli("show", again["bundle_id"], "--json")).json()["datasets"][0]
    assert shown["extends"] == full["bundle_id"] and shown["digest"]["algorithm"] == "sha256-128-sum-v1"

    assert ok(cli("verify", "--read-data", "--json")).json()["ok"]
    restored = ok(cli("restore", old["bundle_id"], "--to", f"conversations:{tmp_path / 'r'}", "--json")).json()
    assert restored["ok"] and (tmp_path / "r" / "app.jsonl").read_bytes() == b"".join(
        line(exchange(n)) for n in range(4)
    )


def test_sqlite_conversations_incremental_by_rowid_and_restored(tmp_path: Path, cli: Cli) -> None:
    db = tmp_path / "chat.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, user_id TEXT, timestamp TEXT, input TEXT, output TEXT, "
            "cost REAL, payload BLOB)"
        )
        conn.executemany(
            "INSERT INTO logs (user_id, timestamp, input, output, cost, payload) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (f"u{i}", f"2026-11-2{i}T10:00:00+01:00", f"q{i} 🙂", f"a{i}", i / 10, bytes([i, 0, 255]))
                for i in range(5)
            ],
        )
    source = f"conversations+sqlite:{db}?table=logs"
    first = ok(cli("backup", source, "--json")).json()
    assert first["datasets"][0]["rows"] == 5
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO logs (user_id, input) VALUES ('u9', 'late')")
    second = ok(cli("backup", source, "--json")).json()
    assert second["datasets"][0]["incremental"] and second["datasets"][0]["new_rows"] == 1
    target = tmp_path / "restored.db"
    assert ok(cli("restore", "--to", f"conversations+sqlite:{target}?table=logs_copy", "--json")).json()["ok"]
    with sqlite3.connect(target) as copy, sqlite3.connect(db) as original:
        assert (
            copy.execute("SELECT * FROM logs_copy ORDER BY rowid").fetchall()
            == original.execute("SELECT * FROM logs ORDER BY rowid").fetchall()
        )


# --- fine-tuning datasets ----------------------------------------------------------------------------------


def test_finetune_files_validated_and_restored_byte_identical(tmp_path: Path, cli: Cli) -> None:
    data = tmp_path / "ft"
    data.mkdir()
    chat = b"".join(
        line(
            {
                "messages": [
                    {"role": "system", "content": "be kind"},
                    {"role": "user", "content": f"q{n} 🚀"},
                    {"role": "assistant", "content": f"a{n}"},
                ]
            }
        )
        for n in range(6)
    )
    (data / "train.jsonl").write_bytes(chat + b'{"messages": [{"role": "wizard", "content": "x"}]}\n' + b"not json\r\n")
    (data / "prefs.jsonl").write_bytes(
        line(
            {
                "input": {"messages": [{"role": "user", "content": "q"}]},
                "preferred_output": [{"role": "assistant", "content": "good"}],
                "non_preferred_output": [{"role": "assistant", "content": "bad"}],
            }
        )
    )
    (data / "plain.jsonl").write_bytes(b'{"prompt": "2+2", "completion": "4"}')  # no final newline
    job = tmp_path / "job.yaml"
    job.write_text(
        "base_model: gpt-4o-mini-2024-07-18\n"
        "hyperparameters:\n  n_epochs: 3\n  learning_rate_multiplier: 0.5\n"
        "seed: 42\njob_id: ftjob-abc123\n"
    )
    backup = ok(cli("backup", f"finetune:{data}", "--job-config", str(job), "--json")).json()
    assert backup["datasets"][0]["kind"] == "finetune" and backup["datasets"][0]["rows"] == 10
    config = ok(cli("show", "latest", "--json")).json()["datasets"][0]["config"]
    assert config["job_config"]["parsed"]["job_id"] == "ftjob-abc123"
    assert config["job_config"]["parsed"]["hyperparameters"]["n_epochs"] == 3
    train = next(f for f in config["files"] if f["name"] == "train.jsonl")
    assert (train["examples"], train["invalid"], train["roles"]["assistant"]) == (6, 2, 6)
    assert any("role" in p for p in train["problems"]) and any("not valid JSON" in p for p in train["problems"])
    text = ok(cli("backup", f"finetune:{data}", "--job-config", str(job))).out
    assert "train.jsonl" in text and "line 8" in text  # the per-file summary, with why lines are invalid
    restored = ok(cli("restore", "--to", f"finetune:{tmp_path / 'out'}", "--json")).json()
    assert restored["ok"], restored
    names = {c["name"] for c in restored["datasets"][0]["checks"]}
    assert "files" in names
    for name in ("train.jsonl", "prefs.jsonl", "plain.jsonl"):
        assert sha(tmp_path / "out" / name) == sha(data / name)
    assert (tmp_path / "out" / "job.yaml").read_bytes() == job.read_bytes()


# --- configs and secrets -------------------------------------------------------------------------------------


def config_folder(root: Path) -> Path:
    cfg = root / "cfg"
    (cfg / "prompts").mkdir(parents=True)
    (cfg / ".env").write_text(f"OPENAI_API_KEY={SECRETS['openai']}\nTOKEN='{SECRETS['env_token']}'\nDEBUG=1\n")
    (cfg / "app.yaml").write_text(
        f'service: chat\ndatabase:\n  host: db.internal\n  password: "{SECRETS["db_password"]}"\n'
        f"aws:\n  access_key_id: {SECRETS['aws_id']}\n"
    )
    (cfg / "settings.toml").write_text('title = "bot ✓"\n[limits]\nrps = 5\n')
    (cfg / "prompts" / "system.txt").write_text("You are helpful. Never reveal the password to anyone.\n")
    (cfg / "prompts" / "system.txt").chmod(0o640)
    return cfg


def scan_for_secrets(*texts: str | bytes) -> list[str]:
    found = []
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        found += [name for name, value in SECRETS.items() if value.encode() in data]
    return found


def repository_bytes(repo: Path) -> list[bytes]:
    return [p.read_bytes() for p in repo.rglob("*") if p.is_file()]


def test_config_secrets_are_sealed_and_never_in_plaintext(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_folder(tmp_path)
    printed: list[str] = []

    def run(*args: str) -> Any:
        result = cli(*args)
        printed.extend([result.out, result.err])
        return result

    # An unencrypted repository refuses, naming file and line but never the value.
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)  # without a key, a backup creates an unencrypted one
    refused = run("backup", f"config:{cfg}")
    one_line_error(refused, 2, ".env", "--redact-secrets")

    monkeypatch.setenv("AIBACKUP_KEY", "correct horse battery staple")
    ok(run("init", "--encrypt", "--repo", "enc"))
    ok(run("backup", f"config:{cfg}", "--repo", "enc"))
    restored = ok(run("restore", "--repo", "enc", "--to", f"config:{tmp_path / 'out'}", "--json"))
    assert restored.json()["ok"], restored.out
    assert tree(tmp_path / "out") == tree(cfg)
    assert (tmp_path / "out" / "prompts" / "system.txt").stat().st_mode & 0o777 == 0o640
    ok(run("verify", "--read-data", "--repo", "enc"))
    ok(run("show", "latest", "--repo", "enc"))
    ok(run("list", "--repo", "enc"))

    # A wrong key fails cleanly and writes nothing; a missing key too.
    before = sorted(str(p) for p in (tmp_path / "enc").rglob("*"))
    monkeypatch.setenv("AIBACKUP_KEY", "not the key")
    one_line_error(run("backup", f"config:{cfg}", "--repo", "enc"), 2, "wrong key")
    one_line_error(run("restore", "--repo", "enc", "--to", f"config:{tmp_path / 'out2'}"), 2, "wrong key")
    monkeypatch.delenv("AIBACKUP_KEY")
    one_line_error(run("backup", f"config:{cfg}", "--repo", "enc"), 2, "AIBACKUP_KEY")
    assert sorted(str(p) for p in (tmp_path / "enc").rglob("*")) == before
    assert not (tmp_path / "out2").exists()

    # Redacted into a plain repository: no values stored, placeholders restored, the report says so.
    redacted = ok(run("backup", f"config:{cfg}", "--redact-secrets", "--repo", "plain", "--json"))
    assert any("redact" in note for note in redacted.json()["notes"])
    ok(run("restore", "--repo", "plain", "--to", f"config:{tmp_path / 'red'}"))
    assert SECRETS["openai"] not in (tmp_path / "red" / ".env").read_text()

    # The planted secrets appear in no byte of either repository and in no line printed.
    assert scan_for_secrets(*repository_bytes(tmp_path / "enc"), *repository_bytes(tmp_path / "plain")) == []
    assert scan_for_secrets(*printed) == []


def test_config_restore_stays_inside_its_folder(tmp_path: Path, cli: Cli) -> None:
    cfg = tmp_path / "cfg"
    (cfg / "sub").mkdir(parents=True)
    (cfg / "sub" / "app.toml").write_text('name = "bot"\n')
    (cfg / "inside").symlink_to("sub/app.toml")
    (cfg / "outside").symlink_to("/etc/hostname")
    ok(cli("backup", f"config:{cfg}"))
    one_line_error(cli("restore", "--to", f"config:{tmp_path / 'out'}"), 2, "outside")
    assert not (tmp_path / "out" / "sub").exists()  # refused before anything was written
    lossy = ok(cli("restore", "--to", f"config:{tmp_path / 'out'}", "--allow-lossy", "--json")).json()
    assert lossy["ok"], lossy
    assert lossy["datasets"][0]["lost"] == ["1 records left out"]
    assert (tmp_path / "out" / "inside").resolve() == (tmp_path / "out" / "sub" / "app.toml").resolve()
    assert not (tmp_path / "out" / "outside").exists() and not (tmp_path / "out" / "outside").is_symlink()
    # A symlink already in the target that leads out is never followed.
    (tmp_path / "trap").mkdir()
    (tmp_path / "trap" / "sub").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    one_line_error(cli("restore", "--to", f"config:{tmp_path / 'trap'}", "--allow-lossy"), 2, "sub")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_dataset_goes_only_into_a_target_of_its_kind(tmp_path: Path, cli: Cli) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_bytes(line(exchange(1)))
    ok(cli("backup", f"conversations:{logs}"))
    for target in ("qdrant", f"chroma:{tmp_path / 'c'}", f"finetune:{tmp_path / 'f'}", f"config:{tmp_path / 'g'}"):
        one_line_error(cli("restore", "--to", target), 2, "holds conversations")
    assert not (tmp_path / "aibackup-restore").exists()  # refused before any target was touched


def test_latest_of_another_kind_is_refused_before_reading_and_names_the_newest_bundle_of_the_targets(
    tmp_path: Path, cli: Cli
) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "app.toml").write_text('name = "bot"\n')
    settings = ok(cli("backup", f"config:{tmp_path / 'cfg'}", "--json")).json()["bundle_id"]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_bytes(line(exchange(1)))
    newest = ok(cli("backup", f"conversations:{logs}", "--json")).json()
    shutil.rmtree(tmp_path / "aibackup-repo" / "data" / newest["bundle_id"])  # no part of it is read: the
    # kinds are told apart by the manifest
    error = one_line_error(cli("restore", "--to", f"config:{tmp_path / 'out'}"), 2, "holds conversations")
    assert f"the newest bundle of config is {settings} (of config:{tmp_path / 'cfg'})" in error, error
    assert not (tmp_path / "out").exists()
    # A bundle named by its id is the one meant: no other is suggested.
    named = one_line_error(cli("restore", newest["bundle_id"], "--to", f"config:{tmp_path / 'out'}"), 2, "holds")
    assert settings not in named


def test_file_sources_never_back_up_their_own_repository(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "settings.toml").write_text('name = "bot"\n')
    for _ in range(3):
        result = ok(cli("backup", f"config:{tmp_path}", "--json")).json()
        assert result["datasets"][0]["rows"] == 1  # ./aibackup-repo lies inside the source folder


def test_names_a_folder_restore_could_not_write_are_refused_at_backup(tmp_path: Path, cli: Cli) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.jsonl").write_bytes(line(exchange(1)))
    with gzip.open(logs / "app.jsonl.gz", "wb") as f:
        f.write(line(exchange(2)))
    one_line_error(cli("backup", f"conversations:{logs}"), 2, "would both be restored as 'app.jsonl'")
    (logs / "app.jsonl.gz").unlink()
    (logs / "we\\ird.jsonl").write_bytes(line(exchange(3)))
    one_line_error(cli("backup", f"conversations:{logs}"), 2, "backslash")
    assert not (tmp_path / "aibackup-repo").exists()  # a refused first backup leaves no repository behind
