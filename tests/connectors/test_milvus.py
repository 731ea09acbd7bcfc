"""Milvus connector against real Milvus Lite (milvus-lite 3.x, served from a thread of this process): nothing
is faked. Stores are seeded with pymilvus's own client; each test's store is served only while it is used
(:func:`native` releases the server it started), as the connector does."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pymilvus import DataType, MilvusClient

from aibackup.connectors.base import DatasetDescription
from aibackup.connectors.milvus.connector import MilvusConnector
from aibackup.connectors.milvus.plan import plan_collection
from aibackup.connectors.milvus.records import _float32_vector, batch_to_rows, float32_value, rows_to_batch
from aibackup.connectors.milvus.schema import layout_of
from aibackup.connectors.registry import parse_location
from aibackup.errors import SourceDataError, UnsupportedFeatureError
from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import arrow_schema
from tests.helpers import Cli, chroma_contents, manifest_json, ok, one_line_error, seed_chroma

logging.getLogger("grpc._server").setLevel(
    logging.CRITICAL + 1
)  # Milvus Lite's unimplemented calls, logged with a traceback

QUOTED_IDS = ['a"b', "c\\d", "x'y", "ünï ✓", "line\nbreak", "tab\tx", 'e\\"f', "z" * 60]


@contextmanager
def native(path: Path) -> Iterator[MilvusClient]:
    """pymilvus's own client on a Milvus Lite store; the server it started is stopped afterwards."""
    from milvus_lite.server_manager import server_manager_instance

    running = str(path) in server_manager_instance._servers
    client = MilvusClient(str(path))
    try:
        yield client
    finally:
        client.close()
        if not running:
            server_manager_instance.release_server(str(path))


def connector(path: Path, *, target: bool = False, **options: Any) -> MilvusConnector:
    return MilvusConnector(parse_location(f"milvus:{path}", target=target), create=target, **options)


def seed(path: Path) -> None:
    """Two collections covering what the mapping knows: "items" (INT64 keys, negative ones too, a sparse
    vector, typed scalar fields, dynamic keys, a second partition, an HNSW and a scalar index) and "docs"
    (VARCHAR keys with quotes and backslashes, two vectors, document/uri fields and a JSON metadata field)."""
    with native(path) as client:
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True, description="items")
        s.add_field("pk", DataType.INT64, is_primary=True)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
        s.add_field("sp", DataType.SPARSE_FLOAT_VECTOR)
        s.add_field("text", DataType.VARCHAR, max_length=200, nullable=True)
        s.add_field("n", DataType.INT32)
        s.add_field("score", DataType.INT16, default_value=7)
        s.add_field("f", DataType.FLOAT)
        s.add_field("d", DataType.DOUBLE, nullable=True)
        s.add_field("ok", DataType.BOOL)
        s.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4, max_length=16)
        s.add_field("j", DataType.JSON, nullable=True)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 8, "efConstruction": 64})
        index.add_index("sp", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        index.add_index("n", index_type="INVERTED")
        client.create_collection("items", schema=s, index_params=index)
        client.create_partition("items", "p1")
        rng = np.random.default_rng(3)
        rows = []
        for i in range(40):
            row: dict[str, Any] = {
                "pk": i - 10,
                "vector": rng.standard_normal(4).astype(np.float32),
                "sp": {1 + i: 0.5, 100 + i: float(i + 1) / 8},
                "text": None if i % 5 == 0 else f"text {i} ✓",
                "n": i * 1000,
                "f": i / 10,
                "d": None if i % 3 == 0 else i / 3,
                "ok": i % 2 == 0,
                "tags": ["a", "β"][: i % 3],
                "j": None if i % 4 == 0 else {"deep": {"list": [1, "two", None]}, "k": i},
            }
            if i % 2:
                row["score"] = i
            if i % 3 == 1:
                row["dyn"] = {"nested": [i, {"x": "ü"}]}
            rows.append(row)
        client.insert("items", rows[:30])
        client.insert("items", rows[30:], partition_name="p1")

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
        s.add_field("title", DataType.FLOAT_VECTOR, dim=3)
        s.add_field("document", DataType.VARCHAR, max_length=100, nullable=True)
        s.add_field("uri", DataType.VARCHAR, max_length=100, nullable=True)
        s.add_field("metadata", DataType.JSON, nullable=True)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="L2")
        index.add_index("title", index_type="AUTOINDEX", metric_type="IP")
        client.create_collection("docs", schema=s, index_params=index)
        ids = QUOTED_IDS + [f"doc-{i:02d}" for i in range(12)]
        client.insert(
            "docs",
            [
                {
                    "id": rid,
                    "vector": [float(i), 1.0, -0.5, 0.25],
                    "title": [0.5, float(i) / 4, 1.0],
                    "document": None if i % 4 == 3 else f"document {i}",
                    "uri": f"s3://b/{i}" if i % 3 == 0 else None,
                    "metadata": None if i % 5 == 2 else {"n": i, "word": "naïve", "nested": {"x": [i]}},
                }
                for i, rid in enumerate(ids)
            ],
        )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("milvus-seed") / "source.db"
    seed(path)
    return path


@pytest.fixture
def seeded(template: Path, tmp_path: Path) -> Path:
    """A copy of the seeded store of its own (seeding takes seconds; a copy of the folder, milliseconds)."""
    path = tmp_path / "source.db"
    shutil.copytree(template, path)
    return path


def contents(path: Path, name: str) -> dict[Any, tuple[str, dict[str, Any]]]:
    """pk -> (partition, row) as pymilvus returns a collection's records."""
    out = {}
    with native(path) as client:
        client.load_collection(name)
        for partition in client.list_partitions(name):
            for row in client.query(name, filter="", output_fields=["*"], partition_names=[partition]):
                row = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in row.items()}
                out[row.get("pk", row.get("id"))] = (partition, row)
    return out


def schema_of(path: Path, name: str) -> dict[str, Any]:
    with connector(path) as conn:
        [described] = conn.describe([name])
    assert described.config.native is not None
    return dict(described.config.native)


# --- Milvus -> Milvus --------------------------------------------------------------------------------------


def test_milvus_to_milvus_keeps_schema_partitions_indexes_and_records(seeded: Path, tmp_path: Path, cli: Cli) -> None:
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"milvus:{seeded}", "--repo", repo))
    manifest = manifest_json(repo)
    datasets = {d["name"]: d for d in manifest["datasets"]}
    items = datasets["items"]["config"]
    assert [(d["name"], d["size"], d["distance"]) for d in items["dense"]] == [("", 4, "cosine")]
    assert [s["name"] for s in items["sparse"]] == ["sp"]
    native_items = items["native"]
    assert native_items["partitions"] == ["_default", "p1"] and native_items["enable_dynamic_field"] is True
    assert {i["field"]: i["index_type"] for i in native_items["indexes"]} == {
        "n": "INVERTED",
        "sp": "SPARSE_INVERTED_INDEX",
        "vector": "HNSW",
    }
    pk = next(f for f in native_items["fields"] if f.get("is_primary"))
    assert (pk["name"], pk["type"]) == ("pk", "INT64")
    assert datasets["items"]["id_types"] == {"string": 10, "uint": 30}  # negative int64 keys: see id_types
    assert datasets["docs"]["id_types"] == {"string": 20}

    target = tmp_path / "copy.db"
    result = ok(cli("restore", "latest", "--repo", repo, "--to", f"milvus:{target}", "--json")).json()
    assert isinstance(result, dict)
    for dataset in result["datasets"]:
        assert dataset["ok"] and dataset["dropped"] == [], dataset
        assert all(c["ok"] for c in dataset["checks"]), dataset["checks"]
    checks = {c["name"]: c["detail"] for c in result["datasets"][1]["checks"]}
    assert checks["indexes"] == "3 rebuilt: n INVERTED/NONE, sp SPARSE_INVERTED_INDEX/IP, vector HNSW/COSINE"
    for name in ("items", "docs"):
        assert schema_of(target, name) == schema_of(seeded, name)
        assert contents(target, name) == contents(seeded, name)
    restored = contents(target, "items")
    assert {pk for pk, (partition, _) in restored.items() if partition == "p1"} == set(range(20, 30))
    assert restored[-9][1]["dyn"] == {"nested": [1, {"x": "ü"}]} and restored[-9][1]["score"] == 1
    assert restored[-10][1]["score"] == 7 and restored[-10][1]["d"] is None  # the default; a null
    assert restored[-9][1]["f"] == pytest.approx(0.1) and restored[-9][1]["f"] == contents(seeded, "items")[-9][1]["f"]


def test_export_maps_every_field_and_pages_over_quoted_keys(seeded: Path) -> None:
    with connector(seeded, batch_rows=3) as conn:
        [docs, items] = conn.describe()
        batches = list(conn.export(docs))
        rows = {r["id"]: r for b in batches for r in b.to_pylist()}
        assert len(batches) == 7 and sorted(rows) == sorted([*QUOTED_IDS, *(f"doc-{i:02d}" for i in range(12))])
        first = rows['a"b']
        assert first["vector"] == [0.0, 1.0, -0.5, 0.25] and first["vector:title"] == [0.5, 0.0, 1.0]
        assert first["document"] == "document 0" and first["uri"] == "s3://b/0"
        assert json.loads(first["metadata"]) == {"n": 0, "word": "naïve", "nested": {"x": [0]}}
        assert rows["x'y"]["metadata"] is None  # the JSON metadata field's null
        item = {r["id"]: r for b in conn.export(items) for r in b.to_pylist()}
    assert len(item) == 40
    one = item["-9"]  # record 1
    assert one["sparse:sp"] == {"indices": [2, 101], "values": [0.5, 0.25]}
    assert one["document"] == "text 1 ✓" and item["-10"]["document"] is None
    assert json.loads(one["metadata"]) == {
        "n": 1000,
        "score": 1,
        "f": 0.1,  # a FLOAT field: the shortest decimal of its float32
        "d": 1 / 3,
        "ok": False,
        "tags": ["a"],
        "j": {"deep": {"list": [1, "two", None]}, "k": 1},
        "dyn": {"nested": [1, {"x": "ü"}]},
    }
    assert json.loads(item["20"]["metadata"])["_aibackup_partition"] == "p1"  # record 30
    assert "_aibackup_partition" not in json.loads(item["19"]["metadata"])


def test_export_refuses_a_collection_written_during_the_backup(seeded: Path) -> None:
    with connector(seeded, batch_rows=5) as conn:
        [docs] = conn.describe(["docs"])
        pages = conn.export(docs)
        next(pages)
        # Behind the iterator's cursor (ids are read in order): this backup would miss it.
        conn._require().insert("docs", [{"id": "0-early", "vector": [1.0] * 4, "title": [1.0] * 3}])
        with pytest.raises(SourceDataError, match="changed during the backup"):
            list(pages)


# --- across backends ---------------------------------------------------------------------------------------


def test_milvus_into_qdrant_and_chroma_into_milvus_are_proven(seeded: Path, tmp_path: Path, cli: Cli) -> None:
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"milvus:{seeded}", "--repo", repo, "--collection", "items"))
    result = ok(cli("restore", "latest", "--repo", repo, "--to", f"qdrant:{tmp_path / 'q'}", "--json")).json()
    assert isinstance(result, dict) and result["ok"], result

    chroma = tmp_path / "chroma"
    records = seed_chroma(chroma, "docs", n=120, dim=8, space="cosine")
    chroma_repo = str(tmp_path / "chroma-repo")
    ok(cli("backup", f"chroma:{chroma}", "--repo", chroma_repo))
    restored = ok(cli("restore", "latest", "--repo", chroma_repo, "--to", "milvus", "--json")).json()
    assert isinstance(restored, dict) and restored["ok"], restored
    [dataset] = restored["datasets"]
    assert dataset["dropped"] == [] and all(c["ok"] for c in dataset["checks"])
    target = tmp_path / "aibackup-restore" / "milvus" / "milvus.db"
    native_docs = schema_of(target, "docs")
    assert [(f["name"], f["type"]) for f in native_docs["fields"]] == [
        ("id", "VARCHAR"),
        ("vector", "FLOAT_VECTOR"),
        ("document", "VARCHAR"),
        ("uri", "VARCHAR"),
        ("metadata", "JSON"),
    ]
    assert [(i["index_type"], i["metric_type"]) for i in native_docs["indexes"]] == [("HNSW", "COSINE")]
    with connector(target) as conn:
        [docs] = conn.describe(["docs"])
        assert docs.config.metadata == {"team": "search ✓"}
        back = {r["id"]: r for b in conn.export(docs) for r in b.to_pylist()}
    expected = chroma_contents(chroma, "docs")
    assert set(back) == set(records["ids"]) == set(expected)
    for rid, (vector, document, metadata, uri) in expected.items():
        row = back[rid]
        assert np.asarray(row["vector"], dtype=np.float32).tobytes() == vector
        assert (row["document"], row["uri"]) == (document, uri)
        assert (json.loads(row["metadata"]) if row["metadata"] else None) == (metadata or None)


def test_vectors_milvus_cannot_name_or_hold() -> None:
    cfg = VectorsConfig(
        dense=(
            DenseVectorSpec("text-dense", 4, "manhattan"),
            DenseVectorSpec("vector", 3, "ip"),
            DenseVectorSpec("colbert", 2, "ip", multivector=True),
        ),
        sparse=(SparseVectorSpec("bm25", modifier="idf"),),
    )
    with pytest.raises(UnsupportedFeatureError, match="multivectors"):
        plan_collection(cfg, "docs", lite=True, allow_lossy=False)
    plan = plan_collection(cfg, "docs", lite=False, allow_lossy=True)
    fields = [(f["name"], f["type"]) for f in plan.native["fields"]]
    assert fields[:4] == [
        ("id", "VARCHAR"),
        ("text_dense", "FLOAT_VECTOR"),
        ("vector_2", "FLOAT_VECTOR"),
        ("bm25", "SPARSE_FLOAT_VECTOR"),
    ]
    assert dict(plan.columns) == {
        "vector:text_dense": "vector:text-dense",
        "vector:vector_2": "vector:vector",
        "sparse:bm25": "sparse:bm25",
    }
    assert len(plan.dropped) == 5  # multivector, two names, manhattan, idf
    with pytest.raises(UnsupportedFeatureError, match="server cannot name a collection 'my-docs'"):
        plan_collection(VectorsConfig(dense=(DenseVectorSpec("", 4, "l2"),)), "my-docs", lite=False, allow_lossy=False)


def test_renamed_vectors_and_sparse_zero_weights_under_allow_lossy(tmp_path: Path) -> None:
    cfg = VectorsConfig(dense=(DenseVectorSpec("text-dense", 3, "l2"),), sparse=(SparseVectorSpec("bm25"),))
    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["a", "b"],
            "vector:text-dense": pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4, 5, 6], pa.float32()), 3),
            "sparse:bm25": [{"indices": [9, 2], "values": [0.5, 0.0]}, {"indices": [1], "values": [2.0]}],
            "document": [None, "b"],
            "uri": [None, None],
            "metadata": ['{"big":1180591620717411303424,"nan":NaN}', None],
        },
        schema=arrow_schema(cfg),
    )
    source = DatasetDescription("mixed", cfg, 2)
    with connector(tmp_path / "t.db", target=True) as conn:
        with pytest.raises(UnsupportedFeatureError, match="text-dense"):
            conn.plan_import(source, "mixed", mode="create", allow_lossy=False)
        plan = conn.plan_import(source, "mixed", mode="create", allow_lossy=True)
        assert conn.validate_records(plan, [batch]) == 2 and conn.import_(plan, [batch]) == 2
        [described] = conn.describe(["mixed"])
        back = {r["id"]: r for b in conn.export(described) for r in b.to_pylist()}
    assert described.schema.equals(plan.target.schema)
    assert back["a"]["vector:text_dense"] == [1.0, 2.0, 3.0]
    assert back["a"]["sparse:bm25"] == {"indices": [9], "values": [0.5]}  # sorted, the zero weight dropped
    assert json.loads(back["a"]["metadata"]) == {"big": float(2**70), "nan": None}
    assert [r for b in [plan.transform(batch)] for r in b.to_pylist()] == [back["a"], back["b"]]


# --- auto_id, float16, ids ----------------------------------------------------------------------------------


def test_auto_id_collections_need_allow_lossy_in_milvus_lite(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "auto.db"
    with native(path) as client:
        client.create_collection("auto", dimension=3, auto_id=True)
        client.insert("auto", [{"vector": [1.0, float(i), 0.5]} for i in range(5)])
        ids = sorted(r["id"] for r in client.query("auto", filter="", output_fields=["id"]))
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"milvus:{path}", "--repo", repo))
    target = f"milvus:{tmp_path / 'copy.db'}"
    one_line_error(cli("restore", "latest", "--repo", repo, "--to", target), 2, "'auto'", "auto_id", "--allow-lossy")
    result = ok(cli("restore", "latest", "--repo", repo, "--to", target, "--allow-lossy", "--json")).json()
    assert isinstance(result, dict) and result["ok"] and "auto_id" in result["datasets"][0]["dropped"][0]
    copied = schema_of(tmp_path / "copy.db", "auto")
    assert copied["auto_id"] is False and sorted(contents(tmp_path / "copy.db", "auto")) == ids


def test_float16_and_bfloat16_widen_exactly_and_come_back() -> None:
    values = np.array([[0.5, -2.0, 65504.0, 1.5e-5]], dtype=np.float16)
    assert _float32_vector([values[0].tobytes()], "FLOAT16_VECTOR").tolist() == values[0].astype(np.float32).tolist()
    wide = np.array([[1.0, -3.5, 2.0**100, 0.15625]], dtype=np.float32)
    top = (wide.view("<u4") >> 16).astype("<u2")
    assert _float32_vector(top[0].tobytes(), "BFLOAT16_VECTOR").tolist() == wide[0].tolist()
    native = {
        "kind": "milvus",
        "fields": [
            {"name": "pk", "type": "INT64", "is_primary": True},
            {"name": "h", "type": "FLOAT16_VECTOR", "params": {"dim": 4}},
            {"name": "b", "type": "BFLOAT16_VECTOR", "params": {"dim": 4}},
        ],
        "indexes": [{"field": "h", "name": "h", "index_type": "FLAT", "metric_type": "L2", "params": {}}],
        "partitions": ["_default"],
    }
    from aibackup.connectors.milvus.schema import config_of

    cfg = config_of(native)
    assert [(d.name, d.datatype, d.options.get("datatype")) for d in cfg.dense] == [
        ("b", "float32", "bfloat16"),
        ("h", "float16", None),
    ]
    lite = plan_collection(cfg, "c", lite=True, allow_lossy=False)
    assert [f["type"] for f in lite.native["fields"]][1:] == ["FLOAT_VECTOR", "FLOAT_VECTOR"] and len(lite.notes) == 2
    server = plan_collection(cfg, "c", lite=False, allow_lossy=False)
    assert [f["type"] for f in server.native["fields"]][1:] == ["FLOAT16_VECTOR", "BFLOAT16_VECTOR"]
    layout = layout_of(server.native)
    rows = [{"pk": 1, "h": [values[0].tobytes()], "b": top[0].tobytes()}]
    batch = rows_to_batch(rows, layout, arrow_schema(cfg), "c", None)
    assert batch.column("vector:h").to_pylist() == [values[0].astype(np.float32).tolist()]
    [written] = batch_to_rows(batch, layout, "c", lite=False)[None]
    assert written == {"pk": 1, "h": values[0].tobytes(), "b": top[0].tobytes()}
    inexact = batch.set_column(1, batch.schema.field(1), pa.array([[0.1, 0.0, 0.0, 0.0]], batch.schema.field(1).type))
    with pytest.raises(UnsupportedFeatureError, match=r"record '1' .*not exactly a bfloat16"):
        batch_to_rows(inexact, layout, "c", lite=False)
    assert float32_value(np.float32(0.1)) == 0.1


# --- bad input ----------------------------------------------------------------------------------------------


def test_missing_file_and_locked_stores(tmp_path: Path, cli: Cli) -> None:
    one_line_error(cli("backup", f"milvus:{tmp_path / 'nothing.db'}"), 2, "does not exist")
    (tmp_path / "file.db").write_text("not a store")
    one_line_error(cli("backup", f"milvus:{tmp_path / 'file.db'}"), 2, "is a file")
    path = tmp_path / "locked.db"
    with native(path) as client:
        client.create_collection("c", dimension=2)
    hold = f"from pymilvus import MilvusClient; MilvusClient({str(path)!r}); print('ok', flush=True)"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"{hold}; import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ok"
        started = time.monotonic()
        one_line_error(cli("backup", f"milvus:{path}"), 3, "in use by another process")
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_larger_collection_round_trips_page_by_page(tmp_path: Path, cli: Cli) -> None:
    """12,000 records of 128 dimensions in three partitions: many iterator pages each way, every check."""
    path = tmp_path / "big.db"
    rng = np.random.default_rng(11)
    with native(path) as client:
        client.create_collection("big", dimension=128, metric_type="L2", id_type="string", max_length=32)
        for partition in ("p1", "p2"):
            client.create_partition("big", partition)
        for start in range(0, 12_000, 2_000):
            vectors = rng.standard_normal((2_000, 128)).astype(np.float32)
            rows = [{"id": f"r{start + i:06d}", "vector": vectors[i], "n": start + i} for i in range(2_000)]
            client.insert("big", rows, partition_name=("_default", "p1", "p2")[start // 4_000])
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"milvus:{path}", "--repo", repo))
    result = ok(cli("restore", "latest", "--repo", repo, "--to", f"milvus:{tmp_path / 'copy.db'}", "--json")).json()
    assert isinstance(result, dict) and result["ok"], result
    restored = contents(tmp_path / "copy.db", "big")
    assert restored == contents(path, "big") and len(restored) == 12_000
    assert {p for p, _ in restored.values()} == {"_default", "p1", "p2"}


def test_a_merge_into_a_collection_indexed_for_another_metric_is_refused(tmp_path: Path, cli: Cli) -> None:
    """Chroma, Qdrant and pgvector refuse it; Milvus upserted l2 records into an IP collection, and the
    search check, which does not run on a merge, could not see it (all checks passed)."""
    seed_chroma(tmp_path / "ip", "docs", n=20, dim=8, space="ip")
    seed_chroma(tmp_path / "l2", "docs", n=20, dim=8, space="l2")
    for space in ("ip", "l2"):
        ok(cli("backup", f"chroma:{tmp_path / space}", "--repo", str(tmp_path / f"repo-{space}"), "--queries", "0"))
    target = f"milvus:{tmp_path / 'm.db'}"
    ok(cli("restore", "latest", "--repo", str(tmp_path / "repo-ip"), "--to", target))
    merge = ("restore", "latest", "--repo", str(tmp_path / "repo-l2"), "--to", target, "--mode", "merge")
    line = one_line_error(cli(*merge), 2, "cannot merge into Milvus collection 'docs'")
    assert "indexed for IP, the bundle's is searched by L2" in line, line
    ok(cli("restore", "latest", "--repo", str(tmp_path / "repo-ip"), "--to", target, "--mode", "merge"))
