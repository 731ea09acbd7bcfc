"""Every file-kind connector passes the contract of tests/contracts/files.py."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

from tests.contracts.files import FileContract

LOG_LINES = [
    {"user_id": "u1", "input": "héllo ✓", "output": "hi", "timestamp": "2026-11-25T02:00:00Z"},
    {"user_id": "u2", "messages": [{"role": "user", "content": "дельта"}], "cost": 0.25},
]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_logs(folder: Path) -> None:
    (folder / "nested").mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(b"".join(json.dumps(x, ensure_ascii=False).encode() + b"\n" for x in LOG_LINES))
    (folder / "nested" / "b.jsonl").write_bytes(json.dumps(LOG_LINES[0]).encode() + b"\n\n")  # a blank line


class TestConversationsFolder(FileContract):
    kind = "conversations"

    def seed(self, tmp_path: Path) -> str:
        if not (tmp_path / "logs").exists():
            write_logs(tmp_path / "logs")
        return f"conversations:{tmp_path / 'logs'}"

    def target(self, tmp_path: Path) -> str:
        return f"conversations:{tmp_path / 'restored'}"

    def same(self, tmp_path: Path) -> bool:
        return files_of(tmp_path / "logs") == files_of(tmp_path / "restored")


class TestConversationsSqlite(FileContract):
    kind = "conversations"
    merge = True

    def seed(self, tmp_path: Path) -> str:
        db = tmp_path / "app.sqlite"
        if not db.exists():
            with sqlite3.connect(db) as conn:
                conn.execute(
                    "CREATE TABLE logs (id INTEGER PRIMARY KEY, user_id TEXT, input TEXT, cost REAL, blob BLOB)"
                )
                conn.executemany(
                    "INSERT INTO logs (user_id, input, cost, blob) VALUES (?, ?, ?, ?)",
                    [("u1", "héllo ✓", 0.5, b"\x00\xff"), ("u2", None, None, None)],
                )
        return f"conversations+sqlite:{db}?table=logs"

    def missing(self, tmp_path: Path) -> str:
        return f"conversations+sqlite:{tmp_path / 'nothing-here.sqlite'}?table=logs"

    def target(self, tmp_path: Path) -> str:
        return f"conversations+sqlite:{tmp_path / 'restored.sqlite'}?table=logs"

    def same(self, tmp_path: Path) -> bool:
        def rows(db: Path) -> list[tuple[object, ...]]:
            with sqlite3.connect(db) as conn:
                return list(conn.execute("SELECT * FROM logs ORDER BY id"))

        return rows(tmp_path / "app.sqlite") == rows(tmp_path / "restored.sqlite")


class TestFinetuneFolder(FileContract):
    kind = "finetune"

    def seed(self, tmp_path: Path) -> str:
        folder = tmp_path / "ft"
        if not folder.exists():
            folder.mkdir()
            chat = {"messages": [{"role": "user", "content": "ζήτα?"}, {"role": "assistant", "content": "yes"}]}
            (folder / "train.jsonl").write_text(json.dumps(chat, ensure_ascii=False) + "\n" + "not json\n")
            with gzip.open(folder / "eval.jsonl.gz", "wb") as f:
                f.write(json.dumps({"prompt": "p", "completion": "c"}).encode() + b"\n")
        return f"finetune:{folder}"

    def target(self, tmp_path: Path) -> str:
        return f"finetune:{tmp_path / 'restored'}"

    def same(self, tmp_path: Path) -> bool:
        restored = files_of(tmp_path / "restored")
        source = files_of(tmp_path / "ft")
        # A compressed file comes back decompressed (documented), byte for byte what it held.
        source["eval.jsonl"] = gzip.decompress(source.pop("eval.jsonl.gz"))
        return restored == source


class TestConfigFolder(FileContract):
    kind = "config"
    merge = True

    def seed(self, tmp_path: Path) -> str:
        folder = tmp_path / "deploy"
        if not folder.exists():
            (folder / "prompts").mkdir(parents=True)
            (folder / "app.yaml").write_text("model: gpt-x\ntemperature: 0.2\nname: ünï ✓\n")
            (folder / "prompts" / "system.txt").write_text("You are helpful.\n")
        return f"config:{folder}"

    def target(self, tmp_path: Path) -> str:
        return f"config:{tmp_path / 'restored'}"

    def same(self, tmp_path: Path) -> bool:
        return files_of(tmp_path / "deploy") == files_of(tmp_path / "restored")
