"""Partitioned backups and restores of a Milvus server (issue 21), against Milvus Lite's gRPC server in a
process of its own: ranges of primary keys of one listing, read by the workers of a Dask cluster, give the
single-process bundle; a partitioned restore's workers upsert into a load collection the restore renames
into place, and the proof reads it back by ranges; a collection written after the listing is refused; a
failed restore leaves no collection behind."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import Server
from tests.helpers import Cli, flip_middle_byte, manifest_json, ok, one_line_error, partitioned_restore

ROWS = 2400


def client(server: Server) -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(server.url)


def key(i: int) -> str:
    """VARCHAR keys, some with a quote or a backslash (the range filters must escape them)."""
    return f"k{i:05d}" + ('"q' if i % 97 == 0 else "\\b" if i % 89 == 0 else "")


def seeded(server: Server) -> str:
    """A collection of ROWS records with VARCHAR keys, a third of them in a partition of their own."""
    from pymilvus import DataType

    name = f"part_{uuid.uuid4().hex[:8]}"
    milvus = client(server)
    schema = milvus.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("text", DataType.VARCHAR, max_length=200)
    schema.add_field("n", DataType.INT64)
    index = milvus.prepare_index_params()
    index.add_index("vector", metric_type="COSINE", index_type="AUTOINDEX")
    milvus.create_collection(name, schema=schema, index_params=index)
    milvus.create_partition(name, "later")
    rng = np.random.default_rng(5)
    records = [
        {"id": key(i), "vector": rng.standard_normal(8).astype("float32").tolist(), "text": f"text {i} ✓", "n": i}
        for i in range(ROWS)
    ]
    for start in range(0, ROWS, 600):
        chunk = records[start : start + 600]
        milvus.insert(name, chunk, partition_name="later" if start % 1200 else "_default")
    return name


def contents(server: Server, name: str) -> dict[str, tuple[Any, ...]]:
    milvus = client(server)
    milvus.load_collection(name)
    got = milvus.query(name, filter="", output_fields=["id", "text", "n"], limit=ROWS + 100)
    return {r["id"]: (r["text"], r["n"]) for r in got}


def test_a_partitioned_backup_and_restore_of_a_milvus_server(milvus_server: Server, tmp_path: Path, cli: Cli) -> None:
    name = seeded(milvus_server)
    uri = f"milvus+{milvus_server.url}"
    one, many = tmp_path / "one", tmp_path / "many"
    ok(cli("backup", uri, "--collection", name, "--repo", str(one)))
    result = ok(cli("backup", uri, "--collection", name, "--repo", str(many), "--workers", "2", "--json")).json()
    assert any(f"partitioned: 4 ranges of primary keys of one listing of its {ROWS} keys" in n for n in result["notes"])
    (single,) = manifest_json(one)["datasets"]
    (spread,) = manifest_json(many)["datasets"]
    assert (spread["rows"], spread["digest"], spread["id_types"]) == (
        single["rows"],
        single["digest"],
        single["id_types"],
    )
    assert spread["rows"] == ROWS and len(spread["parts"]) >= 2

    restored = f"{name}_back"
    args = ("restore", "latest", "--repo", str(many), "--to", uri, "--collection", f"{name}={restored}")
    dataset = partitioned_restore(cli, *args, read_back="ranges of primary keys")
    checks = {c["name"]: c["detail"] for c in dataset["checks"]}
    assert checks["ids"] == f"all {ROWS} ids match" and "1 rebuilt" in checks["indexes"]
    assert contents(milvus_server, restored) == contents(milvus_server, name)
    milvus = client(milvus_server)
    assert sorted(milvus.list_partitions(restored)) == ["_default", "later"]
    assert not [c for c in milvus.list_collections() if c.startswith("aibackup_load_")]

    # overwrite: the load collection replaces the old one; a create into a collection with records is refused.
    milvus.delete(restored, filter="n < 100")
    ok(cli(*args, "--workers", "2", "--mode", "overwrite"))
    assert contents(milvus_server, restored) == contents(milvus_server, name)
    one_line_error(cli(*args, "--workers", "2"), 2, "already holds")

    # The next night's link: each worker looks its range's records up in the parent's digests.
    milvus.upsert(name, [{**milvus.get(name, ids=[key(3)])[0], "text": "changed"}])
    milvus.delete(name, ids=[key(5)])
    nightly = ok(cli("backup", uri, "--collection", name, "--repo", str(many), "--workers", "2", "--json")).json()
    (entry,) = nightly["datasets"]
    assert entry["incremental"] and (entry["new_rows"], entry["deleted"]) == (1, 1), nightly["notes"]
    ok(cli("backup", uri, "--collection", name, "--repo", str(one), "--full"))
    assert manifest_json(many)["datasets"][0]["digest"] == manifest_json(one)["datasets"][0]["digest"]


def test_a_collection_written_after_the_listing_is_refused(milvus_server: Server) -> None:
    """A range read after a record was added to it holds other keys than the listing: refused."""
    from aibackup.connectors.registry import open_connector
    from aibackup.errors import SourceDataError

    name = seeded(milvus_server)
    with open_connector(f"milvus+{milvus_server.url}") as connector:
        (description,) = connector.describe([name])
        split = connector.partition(description, 3)
        assert split is not None and len(split.partitions) == 3
        assert list(connector.export_partition(description, split.partitions[0]))  # as listed: read whole
        vector = [0.5] * 8
        client(milvus_server).insert(name, [{"id": "a-first", "vector": vector, "text": "late", "n": -1}])
        with pytest.raises(SourceDataError, match="changed during the backup"):
            list(connector.export_partition(description, split.partitions[0]))  # no lower bound: it holds it


def test_a_failed_partitioned_restore_leaves_no_collection(milvus_server: Server, tmp_path: Path, cli: Cli) -> None:
    name = seeded(milvus_server)
    uri = f"milvus+{milvus_server.url}"
    repo = tmp_path / "repo"
    ok(cli("backup", uri, "--collection", name, "--repo", str(repo), "--workers", "2"))
    (dataset,) = manifest_json(repo)["datasets"]
    flip_middle_byte(repo / dataset["parts"][-1]["path"])
    restored = f"{name}_bad"
    args = ("restore", "latest", "--repo", str(repo), "--to", uri, "--collection", f"{name}={restored}")
    one_line_error(cli(*args, "--workers", "2"), 1, "sha256")
    left = client(milvus_server).list_collections()
    assert restored not in left and not [c for c in left if c.startswith("aibackup_load_")]
