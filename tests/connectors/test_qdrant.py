"""Qdrant connector against real Qdrant local mode (qdrant-client's embedded store): nothing is faked.

Local mode persists ~1000 points/s, so each test stays at a few hundred points.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models as m

from aibackup.connectors.base import DatasetDescription, VectorConnector
from aibackup.connectors.jsonnumbers import json_number_problem
from aibackup.connectors.qdrant.config import describe_config, plan_collection
from aibackup.connectors.qdrant.connector import AIBACKUP_NAMESPACE, QdrantConnector
from aibackup.connectors.qdrant.points import id_types, lossy_numbers, points_to_batch, to_point_id
from aibackup.connectors.registry import open_connector, parse_location
from aibackup.errors import (
    DatasetNotFoundError,
    SourceDataError,
    TargetNotEmptyError,
    UnavailableError,
    UnsupportedFeatureError,
)
from aibackup.manifests.digest import DatasetDigest
from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import arrow_schema, metadata_json

BIG = 2**70
UUID_UPPER = "6F1C2B7A-0D3E-4C5B-9A8F-1E2D3C4B5A69"


def connector(path: Path, *, target: bool = False, **options: Any) -> QdrantConnector:
    if options:
        return QdrantConnector(parse_location(f"qdrant:{path}", target=target), create=target, **options)
    opened = open_connector(f"qdrant:{path}", target=target)
    assert isinstance(opened, QdrantConnector)
    return opened


def native(conn: VectorConnector) -> QdrantClient:
    """The connector's own client, to change the store behind its back."""
    assert isinstance(conn, QdrantConnector)
    return conn._require()


def rows_of(conn: VectorConnector, name: str) -> dict[str, dict[str, Any]]:
    [dataset] = conn.describe([name])
    out: dict[str, dict[str, Any]] = {}
    for batch in conn.export(dataset):
        assert batch.schema.equals(dataset.schema)
        for row in batch.to_pylist():
            assert row["id"] not in out, "a point was exported twice"
            out[row["id"]] = row
    return out


def digest_of(batches: Iterator[pa.RecordBatch] | list[pa.RecordBatch], exclude: tuple[str, ...] = ()) -> str:
    digest = DatasetDigest(exclude)
    for batch in batches:
        digest.add_batch(batch)
    return digest.hexdigest


# --- a realistic Qdrant store, seeded with the native client -------------------------------------------


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    client = QdrantClient(path=str(path))
    client.create_collection(
        "rich",
        vectors_config={
            "text": m.VectorParams(size=3, distance=m.Distance.COSINE),
            "image": m.VectorParams(size=2, distance=m.Distance.EUCLID, on_disk=True, datatype=m.Datatype.FLOAT16),
            "colbert": m.VectorParams(
                size=2,
                distance=m.Distance.DOT,
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
            ),
        },
        sparse_vectors_config={"bm25": m.SparseVectorParams(modifier=m.Modifier.IDF)},
        metadata={"owner": "search-team", "version": 3},
    )
    client.upsert(
        "rich",
        points=[
            m.PointStruct(
                id=7,
                vector={
                    "text": [3.0, 4.0, 0.0],
                    "image": [0.1, -2.5],
                    "colbert": [[1.0, 2.0], [3.0, 4.5]],
                    "bm25": m.SparseVector(indices=[9, 2], values=[0.5, 1.5]),
                },
                payload={
                    "one": 1,
                    "one_float": 1.0,
                    "big": BIG,
                    "ok": True,
                    "no": False,
                    "none": None,
                    "tags": ["a", 2, 2.5],
                    "nested": {"deeper": {"x": [1, {"y": "z"}]}},
                    "text": "naïve café ☕ 🚀 日本語",
                },
            ),
            # Upper-case UUID in, canonical lower-case out; no named "image" vector: a null cell.
            m.PointStruct(id=UUID_UPPER, vector={"text": [0.0, 0.0, 2.0]}, payload={}),
            m.PointStruct(id=2**64 - 1, vector={"text": [1.0, 1.0, 1.0], "image": [5.0, 6.0]}),
        ],
    )
    client.create_collection("plain", vectors_config=m.VectorParams(size=4, distance=m.Distance.DOT))
    client.upsert(
        "plain",
        points=m.Batch(
            ids=list(range(250)),
            vectors=np.arange(1000, dtype=np.float32).reshape(250, 4).tolist(),
            payloads=[{"i": i} for i in range(250)],
        ),
    )
    client.close()
    return path


def test_describe_reads_the_whole_config(seeded: Path) -> None:
    with connector(seeded) as conn:
        described = conn.describe()
        assert [d.name for d in described] == ["plain", "rich"]
        rich = conn.describe(["rich"])[0]
    assert rich.rows == 3 and described[0].rows == 250
    cfg = rich.config
    assert [(d.name, d.size, d.distance, d.multivector) for d in cfg.dense] == [
        ("colbert", 2, "ip", True),
        ("image", 2, "l2", False),
        ("text", 3, "cosine", False),
    ]
    assert cfg.dense_by_name("image").options == {"on_disk": True}
    assert cfg.dense_by_name("image").datatype == "float16"
    assert cfg.dense_by_name("colbert").options == {"multivector_config": {"comparator": "max_sim"}}
    assert [(s.name, s.modifier) for s in cfg.sparse] == [("bm25", "idf")]
    assert cfg.metadata == {"owner": "search-team", "version": 3}
    assert cfg.hnsw is None  # local mode has no index: its hnsw figures are placeholders
    assert cfg.native is not None and cfg.native["kind"] == "qdrant" and cfg.native["mode"] == "local"
    image = cfg.native["config"]["params"]["vectors"]["image"]
    assert image == {"size": 2, "distance": "Euclid", "on_disk": True, "datatype": "float16"}
    plain = described[0].config
    assert [(d.name, d.size, d.distance) for d in plain.dense] == [("", 4, "ip")]
    assert VectorsConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg  # fits the manifest


def test_export_is_exact(seeded: Path) -> None:
    with connector(seeded) as conn:
        rows = rows_of(conn, "rich")
    assert set(rows) == {"7", UUID_UPPER.lower(), str(2**64 - 1)}
    first = rows["7"]
    assert first["vector:text"] == [3.0, 4.0, 0.0]  # reopened local store: the vector as it was given
    assert first["vector:image"] == [np.float32(0.1), -2.5]
    assert first["vector:colbert"] == [[1.0, 2.0], [3.0, 4.5]]
    assert first["sparse:bm25"] == {"indices": [2, 9], "values": [1.5, 0.5]}  # Qdrant sorts by index
    assert first["metadata"] == (
        '{"big":1180591620717411303424,"nested":{"deeper":{"x":[1,{"y":"z"}]}},"no":false,"none":null,'
        '"ok":true,"one":1,"one_float":1.0,"tags":["a",2,2.5],"text":"naïve café ☕ 🚀 日本語"}'
    )
    assert first["document"] is None and first["uri"] is None
    second = rows[UUID_UPPER.lower()]
    assert second["vector:image"] is None and second["vector:colbert"] is None
    assert second["sparse:bm25"] is None
    assert second["metadata"] is None  # an empty payload is null, never {}


def test_export_pages_return_every_point_once(seeded: Path) -> None:
    with connector(seeded, batch_rows=64) as conn:
        [plain] = conn.describe(["plain"])
        batches = list(conn.export(plain))
    assert [b.num_rows for b in batches] == [64, 64, 64, 58]
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert sorted(ids, key=int) == [str(i) for i in range(250)]
    vectors = np.concatenate([b.column("vector").values.to_numpy() for b in batches]).reshape(-1, 4)
    order = np.argsort([int(i) for i in ids])
    assert np.array_equal(vectors[order], np.arange(1000, dtype=np.float32).reshape(250, 4))


def test_same_kind_restore_recreates_the_collection(seeded: Path, tmp_path: Path) -> None:
    with connector(seeded) as src, connector(tmp_path / "copy", target=True) as dst:
        [rich] = src.describe(["rich"])
        plan = dst.plan_import(rich, "rich", mode="create", allow_lossy=False)
        assert plan.dropped == () and plan.tolerances == {"vector:text": "normalize"}
        assert dst.import_(plan, src.export(rich)) == 3
        [copy] = dst.describe()
        assert copy.config == rich.config and copy.rows == 3
        exclude = ("vector:text",)
        assert digest_of(dst.export(copy), exclude) == digest_of(src.export(rich), exclude)
        restored = rows_of(dst, "rich")
        assert dst.search("rich", "image", np.array([[5.0, 6.1], [0.0, -2.0]]), 2) == [
            [str(2**64 - 1), "7"],
            ["7", str(2**64 - 1)],
        ]
        assert dst.search("rich", "colbert", np.array([[1.0, 1.0]]), 3) == [["7"]]  # the only one with it
    # In the session that wrote it local mode returns the normalised vector (as a server always does).
    assert np.allclose(restored["7"]["vector:text"], [0.6, 0.8, 0.0], rtol=0, atol=1e-7)
    with connector(tmp_path / "copy") as reopened:
        # ... but it persists the original, which comes back after reopening.
        assert rows_of(reopened, "rich")["7"]["vector:text"] == [3.0, 4.0, 0.0]


# --- restoring a bundle from another backend (Chroma-like records) --------------------------------------


def chroma_like(n: int, dim: int, distance: str, seed: int = 0) -> tuple[DatasetDescription, list[pa.RecordBatch]]:
    """String ids, documents, uris and flat metadata, as a Chroma bundle holds them, in two batches."""
    cfg = VectorsConfig(
        dense=(DenseVectorSpec("", dim, distance),),
        metadata={"team": "a", "n": 1},
        hnsw={"m": 16, "ef_construction": 100, "ef_search": 10},
    )
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"doc-{i:04d}" for i in range(n - 4)] + ["0123", "42", str(uuid.UUID(int=9)), UUID_UPPER]
    table = pa.table(
        {
            "id": ids,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
            "document": [None if i % 5 == 0 else f"document {i} ✓ 🙂" for i in range(n)],
            "uri": [f"s3://bucket/{i}.txt" if i % 3 == 0 else None for i in range(n)],
            "metadata": [
                metadata_json(
                    {"n": i, "score": i / 3, "whole": float(i), "even": i % 2 == 0, "word": "дельта"} if i % 7 else None
                )
                for i in range(n)
            ],
        },
        schema=arrow_schema(cfg),
    )
    half = n // 2
    batches = [b for t in (table.slice(0, half), table.slice(half)) for b in t.to_batches()]
    return DatasetDescription("docs", cfg, n), batches


@pytest.mark.parametrize("distance", ["l2", "ip"])
def test_cross_kind_round_trip_is_exact(tmp_path: Path, distance: str) -> None:
    source, batches = chroma_like(120, 8, distance)
    with connector(tmp_path / "q", target=True) as conn:
        plan = conn.plan_import(source, "docs", mode="create", allow_lossy=False)
        assert plan.tolerances == {} and plan.dropped == ()
        assert plan.notes == (
            "HNSW ef_search=10 (Qdrant sets it per query)",
            "Qdrant local mode ignores HNSW settings (no data)",
        )
        assert conn.import_(plan, iter(batches)) == 120
        [restored] = conn.describe(["docs"])
        assert restored.schema.equals(source.schema) and restored.rows == 120
        assert restored.config.metadata == {"team": "a", "n": 1}
        assert digest_of(conn.export(restored)) == digest_of(batches)
        exported = rows_of(conn, "docs")
        assert conn.id_types(pa.array(list(exported))) == {"string": 118, "uint": 1, "uuid": 1}
    expected = {r["id"]: r for b in batches for r in b.to_pylist()}
    assert exported == expected  # ids, documents, uris and metadata come back as they went in


def test_string_ids_map_to_uuid5_with_the_original_in_the_payload(tmp_path: Path) -> None:
    source, batches = chroma_like(20, 4, "l2")
    with connector(tmp_path / "q", target=True) as conn:
        conn.import_(conn.plan_import(source, "docs", mode="create", allow_lossy=False), iter(batches))
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        by_id = {str(p.id): p.payload or {} for p in client.scroll("docs", limit=100)[0]}
    finally:
        client.close()
    assert by_id[str(uuid.uuid5(AIBACKUP_NAMESPACE, "doc-0001"))]["_aibackup_id"] == "doc-0001"
    assert by_id[str(uuid.uuid5(AIBACKUP_NAMESPACE, "0123"))]["_aibackup_id"] == "0123"
    assert "_aibackup_id" not in by_id["42"]  # a canonical uint id is the point id itself
    assert "_aibackup_id" not in by_id[str(uuid.UUID(int=9))]
    assert by_id[str(uuid.uuid5(AIBACKUP_NAMESPACE, UUID_UPPER))]["_aibackup_id"] == UUID_UPPER
    assert by_id[str(uuid.uuid5(AIBACKUP_NAMESPACE, "doc-0001"))]["_aibackup_document"] == "document 1 ✓ 🙂"
    assert by_id[str(uuid.uuid5(AIBACKUP_NAMESPACE, "doc-0003"))]["_aibackup_uri"] == "s3://bucket/3.txt"


def test_id_mapping_rules() -> None:
    assert to_point_id("0") == (0, False)
    assert to_point_id(str(2**64 - 1)) == (2**64 - 1, False)
    u = str(uuid.uuid4())
    assert to_point_id(u) == (u, False)
    for other in (str(2**64), "007", "-1", "1.0", "١٢", "", UUID_UPPER, "{" + u + "}", "doc-1"):
        assert to_point_id(other) == (str(uuid.uuid5(AIBACKUP_NAMESPACE, other)), True), other


def test_vectorised_id_types_agree_with_the_mapping_rules() -> None:
    """The manifest's id-type counts are computed with patterns per batch; they must say what the mapping
    rules (to_point_id) say for every id, including the edges the patterns do not settle themselves."""
    u = str(uuid.uuid4())
    tricky = ["0", "1", "00", "007", "9" * 19, str(2**64 - 1), str(2**64), "1" * 21, "-1", "+1", " 1", "1\n"]
    tricky += [u, UUID_UPPER, "{" + u + "}", u.replace("-", ""), "١٢", "", "doc-1", "1.0"]
    rng = random.Random(5)
    ids = tricky + [str(rng.getrandbits(rng.randint(1, 70))) for _ in range(500)]
    ids += [str(uuid.uuid4()) for _ in range(50)]
    expected = Counter("string" if to_point_id(i)[1] else "uint" if i.isdigit() else "uuid" for i in ids)
    assert id_types(pa.array(ids, pa.string())) == expected
    assert id_types(pa.array([], pa.string())) == Counter()


def test_vectors_convert_to_the_same_float32_bits_as_numpy() -> None:
    """Scroll's vectors (Python floats) become float32 through struct; every value must give numpy's bits,
    edge values included, and a vector of another size is refused."""
    cfg = VectorsConfig(dense=(DenseVectorSpec("", 4, "l2"),))
    rng = np.random.default_rng(3)
    edges = [[float("nan"), -0.0, 1e-45, 3.4028235e38], [1, 2, -3, 0], [1e-40, -1e-310, 1 / 3, 2.0**-149]]
    vectors: list[Any] = edges + [list(map(float, row)) for row in rng.standard_normal((50, 4))] + [None]
    points = [m.Record(id=i, vector=v, payload={}) for i, v in enumerate(vectors)]
    batch = points_to_batch(points, cfg, arrow_schema(cfg), "c")
    column = batch.column("vector")
    got = column.values.to_numpy(zero_copy_only=False).view(np.uint32).reshape(-1, 4)
    want = np.asarray([v if v is not None else [0.0] * 4 for v in vectors], dtype=np.float32).view(np.uint32)
    assert (got == want).all() and column.null_count == 1 and column[len(vectors) - 1].as_py() is None
    bad = [m.Record(id=0, vector=[1.0] * 4, payload={}), m.Record(id=1, vector=[1.0] * 3, payload={})]
    with pytest.raises(SourceDataError, match="does not have the described size 4"):
        points_to_batch(bad, cfg, arrow_schema(cfg), "c")


def test_cosine_vectors_come_back_normalised_within_tolerance(tmp_path: Path) -> None:
    source, batches = chroma_like(60, 16, "cosine")
    with connector(tmp_path / "q", target=True) as conn:
        plan = conn.plan_import(source, "docs", mode="create", allow_lossy=False)
        assert plan.tolerances == {"vector": "normalize"}
        conn.import_(plan, iter(batches))
        exported = rows_of(conn, "docs")
        [restored] = conn.describe(["docs"])
        assert digest_of(conn.export(restored), ("vector",)) == digest_of(batches, ("vector",))
    for row in (r for b in batches for r in b.to_pylist()):
        given = np.asarray(row["vector"], dtype=np.float64)
        stored = np.asarray(exported[row["id"]]["vector"], dtype=np.float64)
        unit = given / np.linalg.norm(given)
        assert np.abs(stored - unit).max() <= 1e-6 * np.linalg.norm(unit)
        assert not np.allclose(stored, given)  # really normalised, not passed through


def test_search_returns_neighbours_with_original_ids(tmp_path: Path) -> None:
    source, batches = chroma_like(80, 8, "l2")
    with connector(tmp_path / "q", target=True) as conn:
        conn.import_(conn.plan_import(source, "docs", mode="create", allow_lossy=False), iter(batches))
        table = pa.Table.from_batches(batches)
        vectors = table.column("vector").combine_chunks().values.to_numpy().reshape(-1, 8)
        ids = table.column("id").to_pylist()
        picks = [0, 5, 77, 79]
        found = conn.search("docs", "", vectors[picks], 5)
    for pick, result in zip(picks, found, strict=True):
        distances = np.linalg.norm(vectors - vectors[pick], axis=1)
        assert result == [ids[i] for i in np.argsort(distances, kind="stable")[:5]]
        assert result[0] == ids[pick]


# --- modes ---------------------------------------------------------------------------------------------


def test_modes(tmp_path: Path) -> None:
    source, batches = chroma_like(30, 4, "l2")
    other, other_batches = chroma_like(10, 4, "l2", seed=1)
    first = other_batches[0]
    renamed = [first.set_column(0, "id", pa.array([f"new-{i}" for i in range(first.num_rows)]))]
    with connector(tmp_path / "q", target=True) as conn:
        conn.import_(conn.plan_import(source, "docs", mode="create", allow_lossy=False), iter(batches))
        with pytest.raises(TargetNotEmptyError, match=r"'docs'.*--mode overwrite.*--mode merge"):
            conn.plan_import(source, "docs", mode="create", allow_lossy=False)
        # merge: the existing points stay, the bundle's are added
        conn.import_(conn.plan_import(other, "docs", mode="merge", allow_lossy=False), iter(renamed))
        merged = rows_of(conn, "docs")
        assert len(merged) == 30 + renamed[0].num_rows and "new-0" in merged and "doc-0000" in merged
        # overwrite: only the bundle's points remain
        plan = conn.plan_import(other, "docs", mode="overwrite", allow_lossy=False)
        conn.import_(plan, iter(other_batches))
        assert set(rows_of(conn, "docs")) == {r["id"] for b in other_batches for r in b.to_pylist()}
        # create onto an existing but empty collection recreates it
        dot2 = m.VectorParams(size=2, distance=m.Distance.DOT)
        native(conn).create_collection("empty", vectors_config=dot2)
        conn.import_(conn.plan_import(source, "empty", mode="create", allow_lossy=False), iter(batches))
        [empty] = conn.describe(["empty"])
        assert empty.rows == 30 and empty.config.dense[0].size == 4
        # merge refuses a collection whose vectors differ
        wider, _ = chroma_like(4, 6, "l2")
        differ = r"cannot merge into Qdrant collection 'docs'.*:4/l2.*:6/l2"
        with pytest.raises(UnsupportedFeatureError, match=differ):
            conn.plan_import(wider, "docs", mode="merge", allow_lossy=False)


def test_create_refuses_at_import_time_too(tmp_path: Path) -> None:
    source, batches = chroma_like(10, 4, "l2")
    with connector(tmp_path / "q", target=True) as conn:
        plan = conn.plan_import(source, "docs", mode="create", allow_lossy=False)
        conn.import_(plan, iter(batches))
        with pytest.raises(TargetNotEmptyError):
            conn.import_(plan, iter(batches))


# --- what Qdrant cannot hold ---------------------------------------------------------------------------


def test_reserved_metadata_keys_and_nan_vectors_are_refused(tmp_path: Path) -> None:
    source, batches = chroma_like(10, 4, "l2")
    meta = batches[0].schema.get_field_index("metadata")
    clash = batches[0].set_column(meta, "metadata", pa.array(['{"_aibackup_id":"x"}'] * batches[0].num_rows))
    vec = np.ones((batches[0].num_rows, 4), dtype=np.float32)
    vec[2, 1] = np.nan
    nan = batches[0].set_column(1, "vector", pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), 4))
    with connector(tmp_path / "q", target=True) as conn:
        plan = conn.plan_import(source, "docs", mode="overwrite", allow_lossy=True)
        with pytest.raises(UnsupportedFeatureError, match=r"'_aibackup_id'.*reserves"):
            conn.import_(plan, iter([clash]))
        with pytest.raises(UnsupportedFeatureError, match=r"NaN or Infinity"):
            conn.import_(plan, iter([nan]))


def test_local_mode_keeps_big_ints_and_nan_in_payloads(tmp_path: Path) -> None:
    source, batches = chroma_like(4, 4, "l2")
    odd = '{"big":1180591620717411303424,"nan":NaN,"neg":-Infinity}'
    batch = batches[0].set_column(4, "metadata", pa.array([odd] * batches[0].num_rows))
    with connector(tmp_path / "q", target=True) as conn:
        conn.import_(conn.plan_import(source, "docs", mode="create", allow_lossy=False), iter([batch]))
        assert {r["metadata"] for r in rows_of(conn, "docs").values()} == {odd}


def test_server_lossy_mapping_of_json_numbers() -> None:
    assert json_number_problem({"a": [1, {"b": 2**63}]}) == "a.1.b = 9223372036854775808 is outside int64"
    assert json_number_problem({"a": float("nan")}) == "a = nan"
    assert json_number_problem({"a": [2**63 - 1, -(2**63), 1.5, True, None, "x"]}) is None
    schema = pa.schema([("metadata", pa.string())])
    batch = pa.RecordBatch.from_pylist(
        [{"metadata": '{"a":[9223372036854775808,NaN],"b":1}'}, {"metadata": None}, {"metadata": '{"c":1}'}],
        schema=schema,
    )
    mapped = lossy_numbers(batch).column(0).to_pylist()
    assert mapped == ['{"a":[9.223372036854776e+18,null],"b":1}', None, '{"c":1}']


# --- a server's config (payload indexes, HNSW, optimizers): read from what a server returns ----------------


SERVER_INFO = {
    "status": "green",
    "optimizer_status": "ok",
    "segments_count": 2,
    "points_count": 0,
    "config": {
        "params": {
            "vectors": {"size": 8, "distance": "Cosine", "on_disk": True},
            "shard_number": 2,
            "replication_factor": 1,
            "on_disk_payload": True,
        },
        "hnsw_config": {"m": 32, "ef_construct": 200, "full_scan_threshold": 10000},
        "optimizer_config": {
            "deleted_threshold": 0.2,
            "vacuum_min_vector_number": 1000,
            "default_segment_number": 0,
            "flush_interval_sec": 5,
            "indexing_threshold": 10000,
        },
        "wal_config": {"wal_capacity_mb": 64, "wal_segments_ahead": 0},
        "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}},
        "metadata": {"owner": "ml"},
    },
    "payload_schema": {
        "city": {"data_type": "keyword", "params": {"type": "keyword", "is_tenant": True}, "points": 10},
        "year": {"data_type": "integer", "points": 10},
    },
}


def test_server_config_is_described_and_recreated(tmp_path: Path) -> None:
    info = m.CollectionInfo.model_validate(SERVER_INFO)
    cfg = describe_config(info, local=False)
    assert cfg.hnsw == {"m": 32, "ef_construction": 200}
    assert cfg.payload_indexes == (
        {"field": "city", "type": "keyword", "is_tenant": True},
        {"field": "year", "type": "integer"},
    )
    assert cfg.native is not None and cfg.native["mode"] == "server"
    assert cfg.native["payload_schema"]["city"] == {
        "data_type": "keyword",
        "params": {"type": "keyword", "is_tenant": True},
    }
    made = plan_collection(cfg, "c", local_target=False, allow_lossy=False)
    kwargs = made.create_kwargs
    assert kwargs["hnsw_config"] == m.HnswConfigDiff(
        m=32, ef_construct=200, full_scan_threshold=10000, max_indexing_threads=0
    )
    assert kwargs["quantization_config"] == m.ScalarQuantization(
        scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99, always_ram=True)
    )
    assert kwargs["optimizers_config"].indexing_threshold == 10000
    assert kwargs["wal_config"].wal_capacity_mb == 64 and kwargs["shard_number"] == 2
    assert kwargs["vectors_config"] == m.VectorParams(size=8, distance=m.Distance.COSINE, on_disk=True)
    assert kwargs["metadata"] == {"owner": "ml"} and kwargs["on_disk_payload"] is True
    assert made.payload_indexes == (
        ("city", m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, is_tenant=True)),
        ("year", m.PayloadSchemaType.INTEGER),
    )
    # Into local mode the same bundle restores; what local mode ignores is noted, not refused.
    source = DatasetDescription("c", cfg, 0)
    with connector(tmp_path / "q", target=True) as conn:
        plan = conn.plan_import(source, "c", mode="create", allow_lossy=False)
        assert plan.dropped == ()
        assert "payload indexes" in plan.notes[0] and "HNSW" in plan.notes[0]
        conn.import_(plan, iter([]))
        [created] = conn.describe(["c"])
    assert created.config.dense == cfg.dense and created.config.metadata == {"owner": "ml"}


def test_custom_sharding_needs_allow_lossy() -> None:
    doc = json.loads(json.dumps(SERVER_INFO))
    doc["config"]["params"]["sharding_method"] = "custom"
    cfg = describe_config(m.CollectionInfo.model_validate(doc), local=False)
    with pytest.raises(UnsupportedFeatureError, match=r"'c' uses Qdrant custom sharding.*--allow-lossy"):
        plan_collection(cfg, "c", local_target=False, allow_lossy=False)
    made = plan_collection(cfg, "c", local_target=False, allow_lossy=True)
    assert "sharding_method" not in made.create_kwargs and made.dropped


def test_neutral_sparse_and_multivector_config(tmp_path: Path) -> None:
    cfg = VectorsConfig(
        dense=(DenseVectorSpec("", 3, "manhattan"), DenseVectorSpec("late", 2, "cosine", multivector=True)),
        sparse=(SparseVectorSpec("kw", "idf"),),
    )
    with connector(tmp_path / "q", target=True) as conn:
        plan = conn.plan_import(DatasetDescription("x", cfg, 0), "x", mode="create", allow_lossy=False)
        assert plan.tolerances == {"vector:late": "normalize"}
        conn.import_(plan, iter([]))
        [made] = conn.describe(["x"])
    assert [(d.name, d.distance, d.multivector) for d in made.config.dense] == [
        ("", "manhattan", False),
        ("late", "cosine", True),
    ]
    assert made.config.sparse == (SparseVectorSpec("kw", "idf"),)
    assert made.schema.equals(arrow_schema(cfg))


# --- errors --------------------------------------------------------------------------------------------


def test_missing_or_empty_path_as_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "nope")):
        connector(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()  # nothing was created
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no Qdrant local store"):
        connector(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


def test_missing_collection(seeded: Path) -> None:
    with connector(seeded) as conn:
        with pytest.raises(DatasetNotFoundError, match=rf"'nope' not found in qdrant:{seeded}"):
            conn.describe(["rich", "nope"])
        with pytest.raises(DatasetNotFoundError, match="'nope'"):
            conn.search("nope", "", np.zeros((1, 4), dtype=np.float32), 3)


def test_lock_is_reported_and_released_by_close(seeded: Path) -> None:
    holder = QdrantClient(path=str(seeded))
    try:
        with pytest.raises(UnavailableError, match=rf"{seeded} is in use by another Qdrant client"):
            connector(seeded)
    finally:
        holder.close()
    conn = connector(seeded)
    conn.close()
    conn.close()  # idempotent
    with connector(seeded) as again:  # the lock was released
        assert again.describe(["plain"])[0].rows == 250


def test_lock_held_by_another_process(seeded: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from qdrant_client import QdrantClient; "
            f"c = QdrantClient(path={str(seeded)!r}); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(UnavailableError, match="in use by another Qdrant client"):
            connector(seeded)
    finally:
        holder.communicate("", timeout=30)
    with connector(seeded) as conn:  # the lock went with the process
        assert conn.describe(["plain"])[0].rows == 250


@pytest.mark.parametrize(
    ("deleted", "message"),
    [
        # A point written behind the scroll cursor is missed by this export: the count says so.
        ([], r"holds 101 points, 100 were exported"),
        # Behind the cursor one point appears, ahead of it one goes: the count stays 100, the id set does not.
        ([198], r"not each point once"),
    ],
)
def test_export_refuses_a_collection_that_changes(tmp_path: Path, deleted: list[int], message: str) -> None:
    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("c", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    client.upsert("c", points=m.Batch(ids=list(range(0, 200, 2)), vectors=[[1.0, 2.0]] * 100))
    client.close()
    with connector(tmp_path / "q", batch_rows=40) as conn:
        [c] = conn.describe(["c"])
        batches = conn.export(c)
        next(batches)
        native(conn).upsert("c", points=[m.PointStruct(id=1, vector=[1.0, 2.0])])
        if deleted:
            native(conn).delete("c", points_selector=m.PointIdsList(points=deleted))
        with pytest.raises(SourceDataError, match=message):
            list(batches)


def test_export_refuses_a_lying_reserved_key(tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("c", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    client.upsert("c", points=[m.PointStruct(id=1, vector=[1.0, 2.0], payload={"_aibackup_id": "doc-1"})])
    client.close()
    with connector(tmp_path / "q") as conn, pytest.raises(SourceDataError, match="_aibackup_id"):
        rows_of(conn, "c")
