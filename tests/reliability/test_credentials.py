"""Credentials never reach output, logs, reports, metrics or the repository.

Planted credential values (the S3 keys a real user sets, and API keys for Chroma/Qdrant servers) are in the
environment while every command runs against an S3 repository (moto's server), in text and JSON output,
with JSON logs, including runs that fail (a missing bucket, a bad target, an unreachable Chroma server that
is given an API key). Everything printed, and every byte of every object in the bucket and every file the
commands wrote locally, is scanned for the planted values.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from tests.conftest import Server, free_port
from tests.helpers import Cli, seed_chroma

PLANTED = {
    "AWS_SECRET_ACCESS_KEY": "PlantedSecretKey/3f9c2a7b81d44e6a9b0c5d1e2f3a4b5c",
    "CHROMA_API_KEY": "planted-chroma-token-8e1d7c6b5a4f",
    "QDRANT_API_KEY": "planted-qdrant-key-2b3c4d5e6f7a",
}


def test_planted_credentials_appear_nowhere(
    tmp_path: Path, cli: Cli, s3_env: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="creds")
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    # moto accepts any secret, so the planted one is the one really used to sign every request.
    repo = "s3://creds/repo"
    seed_chroma(tmp_path / "chroma", "docs", n=50)
    runs = [
        ("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", repo, "--log-format", "json"),
        ("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", repo, "--json"),
        ("list", "--repo", repo),
        ("list", "--repo", repo, "--json"),
        ("show", "latest", "--repo", repo),
        ("verify", "--read-data", "--repo", repo, "--json"),
        ("restore", "latest", "--repo", repo, "--to", f"qdrant:{tmp_path / 'q'}"),
        ("restore", "latest", "--repo", repo, "--to", f"qdrant:{tmp_path / 'q'}", "--mode", "overwrite", "--json"),
        ("prune", "--repo", repo, "--keep-last", "1", "--dry-run"),
        # Failing runs: their one-line errors must not carry a credential either.
        ("list", "--repo", "s3://no-such-bucket-here/repo"),
        ("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", "s3://no-such-bucket-here/repo", "--json"),
        ("backup", f"chroma+http://127.0.0.1:{free_port()}", "--repo", repo),
        ("restore", "latest", "--repo", repo, "--to", f"chroma+http://127.0.0.1:{free_port()}"),
    ]
    printed = []
    codes = []
    for args in runs:
        result = cli(*args)
        codes.append(result.code)
        printed.append(f"$ aibackup {' '.join(args)}\n{result.out}\n{result.err}")
    assert codes[:9] == [0] * 9, [p.splitlines()[0:4] for p, c in zip(printed, codes, strict=True) if c][:2]
    assert all(code != 0 for code in codes[9:]), list(zip(runs, codes, strict=True))
    stored = [
        s3.get_object(Bucket="creds", Key=o["Key"])["Body"].read()
        for o in s3.list_objects_v2(Bucket="creds")["Contents"]
    ]
    local = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".log")]
    assert len(stored) >= 5  # marker, manifests, parts, reports
    for name, value in PLANTED.items():
        leaks = [text.splitlines()[0] for text in printed if value in text]
        assert leaks == [], f"{name} printed by: {leaks}"
        assert not [b for b in stored + local if value.encode() in b], f"{name} stored"
