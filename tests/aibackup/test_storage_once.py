"""Issue 15: one run resolves its repository URL once. One `aibackup backup` of a local source into a new
local repository builds exactly one aibackup.storage.Storage for the repository."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest

from aibackup.storage import Storage
from tests.helpers import Cli, ok


def test_one_backup_builds_one_storage_for_its_repository(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text(json.dumps({"user_id": "u1", "input": "héllo", "output": "hi"}) + "\n")
    repo = tmp_path / "repo"

    built: list[str] = []  # where each Storage of the repository was built (shown when the count is wrong)
    original = Storage.__init__

    def counting(self: Storage, url: str) -> None:
        original(self, url)
        if self.is_local and self.root == str(repo.resolve()):
            built.append("".join(traceback.format_stack(limit=6)[:-1]))

    monkeypatch.setattr(Storage, "__init__", counting)
    ok(cli("backup", f"conversations:{logs}", "--repo", str(repo), "--json"))
    assert len(built) == 1, f"{len(built)} Storage objects for {repo}:\n" + "\n---\n".join(built)
