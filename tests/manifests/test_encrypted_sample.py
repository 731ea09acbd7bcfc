"""An encrypted repository written by aibackup 0.5.0 keeps opening, verifying and restoring.

``samples-encrypted/repo-0.5.0/`` (passphrase below): a Chroma collection (cosine, documents, metadata)
backed up in full, then an incremental link (5 records changed, 2 deleted, 2 added), then the master key
rotated and a full backup under key 2, pinned. Never edit it; add a new one when the encrypted format
changes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import Cli, ok, one_line_error

SAMPLE = Path(__file__).parent / "samples-encrypted" / "repo-0.5.0"
PASSPHRASE = "sample passphrase 0.5.0"


def test_the_encrypted_sample_verifies_and_restores_every_bundle(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE, repo)
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    verified = ok(cli("verify", "--read-data", "--repo", str(repo), "--json")).json()
    assert verified["ok"] and verified["bundles"] == 3 and verified["authenticated"] is True
    bundles = ok(cli("list", "--repo", str(repo), "--json")).json()
    assert [b["datasets"][0]["rows"] for b in bundles] == [40, 40, 40]
    keys = ok(cli("key", "list", "--repo", str(repo), "--json")).json()
    assert [g["id"] for g in keys["generations"]] == [1, 2]
    for n, bundle in enumerate(bundles):
        restored = ok(
            cli("restore", bundle["bundle_id"], "--repo", str(repo), "--to", f"qdrant:{tmp_path / f'q{n}'}", "--json")
        ).json()
        assert restored["ok"], restored
    monkeypatch.setenv("AIBACKUP_KEY", "not the sample passphrase")
    one_line_error(cli("list", "--repo", str(repo)), 2, "wrong key")
