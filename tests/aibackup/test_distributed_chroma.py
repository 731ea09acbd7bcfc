"""Partitioned backups and restores of a Chroma server (issue 21), against `chroma run`: the ids of one
listing split among the workers of a Dask cluster give the single-process bundle; a partitioned restore's
workers add to the collection the restore made, at once, and the content check proves it; a failure drops
the collection it made. An embedded store is one process's: it does not split."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import chromadb

from tests.conftest import Server
from tests.helpers import Cli, flip_middle_byte, manifest_json, ok, one_line_error, partitioned_restore
from tests.vectordata import chroma_records

ROWS = 1200


def client(server: Server) -> Any:
    return chromadb.HttpClient(host=server.host, port=server.port)


def seeded(server: Server) -> tuple[str, dict[str, Any]]:
    name = f"part-{uuid.uuid4().hex[:8]}"
    records = chroma_records(ROWS, 16, seed=3)
    collection = client(server).create_collection(name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    for start in range(0, ROWS, 500):
        collection.add(**{k: v[start : start + 500] for k, v in records.items()})
    return name, records


def contents(server: Server, name: str) -> dict[str, tuple[Any, ...]]:
    got = client(server).get_collection(name).get(include=["documents", "metadatas", "uris"])
    return {rid: (got["documents"][i], got["metadatas"][i], got["uris"][i]) for i, rid in enumerate(got["ids"])}


def test_a_partitioned_backup_and_restore_of_a_chroma_server(chroma_server: Server, tmp_path: Path, cli: Cli) -> None:
    name, _ = seeded(chroma_server)
    uri = f"chroma+{chroma_server.url}"
    one, many = tmp_path / "one", tmp_path / "many"
    ok(cli("backup", uri, "--collection", name, "--repo", str(one)))
    result = ok(cli("backup", uri, "--collection", name, "--repo", str(many), "--workers", "2", "--json")).json()
    assert any(f"partitioned: 4 groups of one listing of its {ROWS} ids" in n for n in result["notes"]), result
    (single,) = manifest_json(one)["datasets"]
    (spread,) = manifest_json(many)["datasets"]
    assert (spread["rows"], spread["digest"]) == (single["rows"], single["digest"]) == (ROWS, single["digest"])
    assert len(spread["parts"]) >= 2

    restored = f"{name}-back"
    args = ("restore", "latest", "--repo", str(many), "--to", uri, "--collection", f"{name}={restored}")
    dataset = partitioned_restore(cli, *args, read_back="listing")
    assert {c["name"]: c["detail"] for c in dataset["checks"]}["ids"] == f"all {ROWS} ids match"
    assert contents(chroma_server, restored) == contents(chroma_server, name)

    # The next night's link: each worker looks its ids' records up in the parent's digests.
    source = client(chroma_server).get_collection(name, embedding_function=None)
    source.update(ids=["doc-00001", "doc-00700"], metadatas=[{"changed": 1}, {"changed": 2}])
    source.delete(ids=["doc-00002"])
    nightly = ok(cli("backup", uri, "--collection", name, "--repo", str(many), "--workers", "2", "--json")).json()
    (entry,) = nightly["datasets"]
    assert entry["incremental"] and (entry["new_rows"], entry["deleted"]) == (2, 1), nightly["notes"]
    assert any("partitioned:" in n for n in nightly["notes"]), nightly["notes"]
    ok(cli("backup", uri, "--collection", name, "--repo", str(one), "--full"))
    assert manifest_json(many)["datasets"][0]["digest"] == manifest_json(one)["datasets"][0]["digest"]


def test_a_failed_partitioned_restore_drops_the_collection_it_made(
    chroma_server: Server, tmp_path: Path, cli: Cli
) -> None:
    name, _ = seeded(chroma_server)
    uri = f"chroma+{chroma_server.url}"
    repo = tmp_path / "repo"
    ok(cli("backup", uri, "--collection", name, "--repo", str(repo), "--workers", "2"))
    (dataset,) = manifest_json(repo)["datasets"]
    damaged = repo / dataset["parts"][-1]["path"]
    flip_middle_byte(damaged)
    restored = f"{name}-bad"
    args = ("restore", "latest", "--repo", str(repo), "--to", uri, "--collection", f"{name}={restored}")
    one_line_error(cli(*args, "--workers", "2"), 1, "sha256")
    assert restored not in {c.name for c in client(chroma_server).list_collections()}
