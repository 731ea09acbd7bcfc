"""Helpers shared by the end-to-end tests: seeding Chroma natively, reading it back, judging CLI results,
reading and rewriting a repository's documents and parts through aibackup's storage (so that a test works
on an unencrypted repository and on an encrypted one alike)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from aibackup.repository import Repository
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


# --- a repository's documents and parts, read and written as aibackup does (both plain and encrypted) ---


def _opened(repo_dir: Path | str) -> Repository:

    return Repository.open(str(repo_dir))


def _rel(repo_dir: Path | str, path: Path | str) -> str:
    """`path` relative to the repository root, with `/` (given relative, or as a path under the root)."""
    if Path(path).is_absolute():
        return Path(path).resolve().relative_to(Path(repo_dir).resolve()).as_posix()
    return Path(path).as_posix()


def repo_doc(repo_dir: Path | str, path: Path | str) -> bytes:
    """The plaintext of a repository document (a manifest, report, pin, lock): opened with the key
    (AIBACKUP_KEY) in an encrypted repository, the bytes as stored in a plain one."""
    return bytes(_opened(repo_dir).storage.read_bytes(_rel(repo_dir, path)))


def repo_json(repo_dir: Path | str, path: Path | str) -> Any:
    import json

    return json.loads(repo_doc(repo_dir, path))


def manifest_json(repo_dir: Path | str, bundle_id: str | None = None) -> Any:
    """The manifest of a bundle (the newest when none is named) as a JSON document, read as by repo_doc."""
    bundle_id = bundle_id or _opened(repo_dir).bundle_ids()[-1]
    return repo_json(repo_dir, f"bundles/{bundle_id}.json")


def write_repo_doc(repo_dir: Path | str, path: Path | str, data: bytes) -> None:
    """Replace a repository document with `data` (sealed with the key in an encrypted repository), as a
    writer holding the key would."""
    _opened(repo_dir).storage.replace(_rel(repo_dir, path), data)


def resigned_manifest(repo_dir: Path | str, doc: dict[str, Any]) -> bytes:
    """The bytes of manifest `doc`, changed by a test, as a writer holding the key would store them: its
    MAC (an encrypted repository's manifests carry one) and its checksum recomputed."""
    import hashlib

    from aibackup.manifests.model import MAC_CONTEXT, canonical_bytes

    doc = dict(doc)
    if doc.get("authentication") is not None:
        body = {k: v for k, v in doc.items() if k not in ("checksum", "authentication")}
        key = _opened(repo_dir).key()
        assert key is not None, "a manifest with a MAC in a repository without a key"
        doc["authentication"] = {**doc["authentication"], "value": key.keyed_hash(MAC_CONTEXT + canonical_bytes(body))}
    body = {k: v for k, v in doc.items() if k != "checksum"}
    doc["checksum"] = {**doc["checksum"], "value": hashlib.sha256(canonical_bytes(body)).hexdigest()}
    return canonical_bytes(doc) + b"\n"


def read_part(repo_dir: Path | str, path: Path | str) -> pa.Table:
    """A Parquet part's rows (decrypted with the key in an encrypted repository)."""
    import pyarrow.parquet as pq

    repo, rel = _opened(repo_dir), _rel(repo_dir, path)
    with repo.storage.open_read(rel) as f:
        return pq.read_table(f, decryption_properties=repo.part_decryption(rel))


def dataset_folder_number(part_path: str) -> str:
    """The NNN of a part's dataset folder, ``data/<bundle>/NNN-<name>/...`` in a plain repository and
    ``data/<bundle>/NNN/...`` in an encrypted one (names are not stored in the clear)."""
    return part_path.split("/")[2].split("-", 1)[0]


def legacy_encrypted_repository(repo_dir: Path, passphrase: str) -> None:
    """An empty repository as aibackup 0.4 encrypted it: manifests plaintext and authenticated (a MAC under
    the key), config secrets sealed, parts not encrypted."""
    import json

    from aibackup.crypto import new_encryption

    repo_dir.mkdir(parents=True)
    repository_id = "6f1d3c1e-8a55-4a53-9a4e-0c5f2f6d7b10"
    marker = {
        "format": "aibackup-repository",
        "version": 1,
        "id": repository_id,
        "created_at": "2026-11-30T00:00:00.000000Z",
        "created_by": "aibackup 0.4.0",
        "encryption": new_encryption(passphrase.encode(), repository_id),
    }
    (repo_dir / "aibackup.json").write_text(json.dumps(marker, indent=2) + "\n")


def flip_middle_byte(path: Path) -> None:
    """Damage a stored file as a bad disk would: its middle byte inverted, its size kept."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def ok(result: CliResult) -> CliResult:
    assert result.code == 0, (result.code, result.out, result.err)
    return result


def partitioned_restore(cli: Callable[..., CliResult], *args: str, read_back: str) -> dict[str, Any]:
    """`restore ARGS --workers 2 --json` of one collection, which must pass, loaded by the workers and proven
    by tasks reading the target back by partitions whose description holds `read_back`; its dataset's report."""
    (dataset,) = ok(cli(*args, "--workers", "2", "--json")).json()["datasets"]
    assert dataset["ok"], dataset["checks"]
    assert any(n.startswith("partitioned:") for n in dataset["notes"]), dataset["notes"]
    proof = [n for n in dataset["notes"] if n.startswith("proof: the target read back by")]
    assert proof and read_back in proof[0], dataset["notes"]
    return dict(dataset)


def one_line_error(result: CliResult, code: int, *needles: str) -> str:
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def flip_byte_in_chunk(repo: str, chunk: bytes) -> Path:
    """Flip one byte in the middle of `chunk`'s stored data inside its pack (found through the chunk index and
    the pack's own Parquet metadata, decrypted with the key in an encrypted repository). Returns the pack."""
    import pyarrow.parquet as pq

    from aibackup.chunks import ChunkIndex

    repository = Repository.open(repo)
    repository.use_key(repository.key())
    place = ChunkIndex.load(repository).get(chunk)
    assert place is not None
    path = Path(repo) / place.pack
    with path.open("rb") as f:
        meta = pq.ParquetFile(f, decryption_properties=repository.part_decryption(place.pack)).metadata
    column = meta.row_group(place.row).column(3)  # "data"
    assert column.path_in_schema == "data"
    offset = column.data_page_offset + column.total_compressed_size // 2
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path
