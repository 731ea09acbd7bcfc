"""Helpers shared by the end-to-end tests: seeding Chroma natively, reading it back, judging CLI results."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import CliResult
from tests.vectordata import chroma_records

#: The `cli` fixture: runs `aibackup ARGS...` in-process and returns its CliResult.
Cli = Callable[..., CliResult]


def repository_url(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh repository for a test parametrized over ``where``: a local folder, or ("s3") a new bucket of
    its own on the moto server (the test's folder name makes it unique within the session)."""
    if where == "local":
        return str(tmp_path / "repo")
    request.getfixturevalue("s3_env")
    import boto3

    bucket = f"t-{tmp_path.name.lower().replace('_', '-')[-50:]}".rstrip("-")
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/repo"


def chroma_client(path: Path):  # type: ignore[no-untyped-def]
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def seed_chroma(path: Path, name: str = "docs", n: int = 300, dim: int = 16, space: str = "l2") -> dict[str, Any]:
    records = chroma_records(n, dim, seed=len(name))
    collection = chroma_client(path).create_collection(
        name, metadata={"hnsw:space": space, "team": "search ✓"}, embedding_function=None
    )
    collection.add(**records)
    return records


def chroma_contents(path: Path, name: str) -> dict[str, tuple[Any, ...]]:
    """id -> (float32 vector bytes, document, metadata, uri) as Chroma's own client returns them."""
    got = chroma_client(path).get_collection(name).get(include=["embeddings", "documents", "metadatas", "uris"])
    out = {}
    for i, rid in enumerate(got["ids"]):
        vector = np.asarray(got["embeddings"][i], dtype=np.float32).tobytes()
        out[rid] = (vector, got["documents"][i], got["metadatas"][i], got["uris"][i])
    return out


def ok(result: CliResult) -> CliResult:
    assert result.code == 0, (result.code, result.out, result.err)
    return result


def one_line_error(result: CliResult, code: int, *needles: str) -> str:
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
