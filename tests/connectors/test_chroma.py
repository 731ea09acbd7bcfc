"""The Chroma connector against real Chroma: embedded PersistentClient stores and `chroma run` (no fakes).

Seeding always goes through chromadb's own client with explicit embeddings (the default embedding function
is never called: it would download a model).
"""

from __future__ import annotations

import http.server
import json
import math
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import chromadb
import numpy as np
import pyarrow as pa
import pytest
from chromadb.api.types import IntInvertedIndexConfig, Schema
from chromadb.base_types import SparseVector
from chromadb.config import Settings
from chromadb.utils.embedding_functions import known_embedding_functions

from aibackup.connectors.base import DatasetDescription, ImportPlan
from aibackup.connectors.chroma import metadata as cm
from aibackup.connectors.chroma.connector import (
    LARGE_COLLECTION,
    LARGE_PAGE_ROWS,
    PAGE_ROWS,
    ChromaConnector,
    raw_get,
)
from aibackup.connectors.chroma.reading import FETCH_AHEAD
from aibackup.connectors.registry import open_connector, parse_location
from aibackup.errors import (
    ConnectorError,
    ConnectorNotInstalledError,
    DatasetNotFoundError,
    SourceDataError,
    TargetNotEmptyError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
)
from aibackup.manifests.digest import DatasetDigest
from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import arrow_schema, canonical_json, metadata_json
from tests.conftest import Server

SETTINGS = Settings(anonymized_telemetry=False)

# Every type a Chroma record's metadata holds, with unicode and the int/float distinction.
RICH = {
    "int": 7,
    "neg": -3,
    "max": 2**63 - 1,
    "float": 0.1,
    "whole": 2.0,
    "tiny": 5e-324,
    "yes": True,
    "no": False,
    "text": "naïve ✓",
    "emoji": "🚀🙂",
    "empty": "",
    "ints": [1, 2, 3],
    "floats": [0.5, 1.5],
    "strs": ["a", "ß"],
    "bools": [True, False],
}


# --- helpers ---------------------------------------------------------------------------------------------


@contextmanager
def seed(path: Path) -> Iterator[Any]:
    """chromadb's own embedded client, closed afterwards so the connector opens the path fresh."""
    client = chromadb.PersistentClient(path=str(path), settings=SETTINGS)
    try:
        yield client
    finally:
        client.close()


def source(path: Path, **options: Any) -> ChromaConnector:
    return ChromaConnector(parse_location(f"chroma:{path}"), **options)


def target(path: Path) -> ChromaConnector:
    return ChromaConnector(parse_location(f"chroma:{path}", target=True), create=True)


def server(srv: Server) -> ChromaConnector:
    return ChromaConnector(parse_location(f"chroma+http://{srv.host}:{srv.port}"))


def records(n: int, dim: int, seed_: int = 0, prefix: str = "r") -> dict[str, Any]:
    """Keyword arguments for collection.add(): varied documents, uris and metadata (some none)."""
    rng = np.random.default_rng(seed_)
    vectors = (rng.standard_normal((n, dim)) * rng.uniform(0.01, 100, (n, 1))).astype(np.float32)
    return {
        "ids": [f"{prefix}-{i:05d}" for i in range(n)],
        "embeddings": vectors,
        "documents": [None if i % 5 == 0 else ("" if i % 5 == 1 else f"doc {i} 🚀") for i in range(n)],
        "uris": [f"s3://b/{i}" if i % 3 == 0 else None for i in range(n)],
        "metadatas": [None if i % 4 == 0 else {**RICH, "i": i} for i in range(n)],
    }


def export_table(conn: ChromaConnector, name: str) -> pa.Table:
    desc = conn.describe([name])[0]
    return pa.Table.from_batches(list(conn.export(desc)), schema=desc.schema)


def digest(batches: Any, exclude: tuple[str, ...] = ()) -> str:
    d = DatasetDigest(exclude)
    for b in batches:
        d.add_batch(b)
    return d.hexdigest


def vectors_by_id(table: pa.Table, column: str = "vector") -> dict[str, np.ndarray]:
    arr = table.column(column).combine_chunks()
    size = arr.type.list_size
    matrix = arr.values.to_numpy(zero_copy_only=False).reshape(-1, size)
    return dict(zip(table.column("id").to_pylist(), matrix, strict=True))


def canonical(cfg: VectorsConfig, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """A canonical batch from plain rows (vectors as float32 arrays, metadata as canonical JSON text)."""
    schema = arrow_schema(cfg)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def restore(
    conn: ChromaConnector,
    desc: DatasetDescription,
    batches: list[pa.RecordBatch],
    dest: str,
    mode: str = "create",
    allow_lossy: bool = False,
) -> tuple[ImportPlan, int]:
    plan = conn.plan_import(desc, dest, mode=mode, allow_lossy=allow_lossy)
    return plan, conn.import_(plan, iter(batches))


# --- export ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["l2", "ip"])
def test_export_of_native_data_is_exact(tmp_path: Path, space: str) -> None:
    data = records(120, 16)
    data["embeddings"][0] = [-0.0, 1e-45, 3e38, -3e38] * 4  # signed zero, subnormal, near float32 max
    with seed(tmp_path / "s") as client:
        col = client.create_collection(
            "docs",
            embedding_function=None,
            metadata={"team": "search", "v": 2},
            configuration={"hnsw": {"space": space, "max_neighbors": 24, "ef_construction": 80, "ef_search": 40}},
        )
        col.add(**data)
        expected_conf = col.configuration_json
    with source(tmp_path / "s") as conn:
        (desc,) = conn.describe()
        table = export_table(conn, "docs")
    assert desc.rows == 120
    assert desc.config.dense == (DenseVectorSpec("", 16, space),)
    assert desc.config.hnsw == {"m": 24, "ef_construction": 80, "ef_search": 40}
    assert desc.config.metadata == {"team": "search", "v": 2}
    assert desc.config.native is not None
    assert desc.config.native["kind"] == "chroma"
    assert desc.config.native["configuration"]["hnsw"] == expected_conf["hnsw"]
    index = desc.config.native["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]
    assert index["config"]["space"] == space
    assert table.num_rows == 120
    assert table.schema == desc.schema
    got = vectors_by_id(table)
    for i, rid in enumerate(data["ids"]):  # bit-exact float32, -0.0 and the subnormal included
        assert got[rid].tobytes() == data["embeddings"][i].tobytes(), rid
    rows = {r["id"]: r for r in table.to_pylist()}
    for i, rid in enumerate(data["ids"]):
        assert rows[rid]["document"] == data["documents"][i]
        assert rows[rid]["uri"] == data["uris"][i]
        assert rows[rid]["metadata"] == metadata_json(data["metadatas"][i])
    assert rows["r-00001"]["metadata"] is not None and '"whole":2.0' in rows["r-00001"]["metadata"]


def test_describe_maps_legacy_metadata_and_names(tmp_path: Path) -> None:
    with seed(tmp_path / "s") as client:
        client.create_collection(
            "zeta", embedding_function=None, metadata={"hnsw:space": "cosine", "hnsw:M": 32, "team": "x"}
        )
        client.create_collection("alpha", embedding_function=None).add(ids=["a"], embeddings=[[1.0, 2.0]])
        client.create_collection("mid-1", embedding_function=None, metadata={cm.VECTOR_NAME_KEY: "text"}).add(
            ids=["a"], embeddings=[[1.0]]
        )
    with source(tmp_path / "s") as conn:
        assert [d.name for d in conn.describe()] == ["alpha", "mid-1", "zeta"]
        assert [d.name for d in conn.describe(["zeta", "alpha"])] == ["zeta", "alpha"]
        zeta, named = conn.describe(["zeta", "mid-1"])
        with pytest.raises(DatasetNotFoundError, match=r"'nope'.*chroma:"):
            conn.describe(["alpha", "nope"])
        with pytest.raises(DatasetNotFoundError, match="'gone'"):
            list(conn.export(DatasetDescription("gone", named.config, 1)))
    # Never written to: no dimension yet, described without a dense vector; space and hnsw still travel.
    assert zeta.config.dense == () and zeta.rows == 0
    assert zeta.config.metadata == {"team": "x"}
    assert zeta.config.hnsw is not None and zeta.config.hnsw["m"] == 32
    assert named.config.dense == (DenseVectorSpec("text", 1, "l2"),)
    assert named.config.metadata is None  # the vector-name key is hidden from the neutral metadata
    assert named.schema.names == ["id", "vector:text", "document", "uri", "metadata"]


@pytest.mark.chroma_server
def test_large_embedded_collections_are_read_in_larger_pages(tmp_path: Path, chroma_server: Server) -> None:
    with seed(tmp_path / "s") as client:
        client.create_collection("few", embedding_function=None)
    with source(tmp_path / "s") as conn:
        assert conn.page_rows(100_000) == PAGE_ROWS == 2500
        assert conn.page_rows(LARGE_COLLECTION) == LARGE_PAGE_ROWS == 10_000
    with source(tmp_path / "s", batch_rows=300) as conn:
        assert conn.page_rows(LARGE_COLLECTION) == 300  # an explicit page size wins
    with server(chroma_server) as conn:
        assert conn.page_rows(LARGE_COLLECTION) == PAGE_ROWS  # the client's memory stays flat


def test_paging_returns_each_record_once(tmp_path: Path) -> None:
    data = records(2500, 4, seed_=3)
    with seed(tmp_path / "s") as client:
        col = client.create_collection("many", embedding_function=None)
        for start in range(0, 2500, 1000):
            col.add(**{k: v[start : start + 1000] for k, v in data.items()})
    with source(tmp_path / "s", batch_rows=300) as conn:
        desc = conn.describe(["many"])[0]
        batches = list(conn.export(desc))
    with source(tmp_path / "s", batch_rows=30_000) as conn:
        one_page = list(conn.export(desc))
    assert [b.num_rows for b in batches] == [300] * 8 + [100]
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == 2500 and set(ids) == set(data["ids"])
    assert len(one_page) == 1
    assert digest(batches) == digest(one_page)


def test_raw_pages_convert_like_public_pages(tmp_path: Path) -> None:
    """The export reads pages through the client's own call under ``Collection.get`` (vectors as lists of
    floats); a client without it, or with another signature for it, gets the public call (a float64
    matrix). All make the same batch."""
    data = records(60, 7, seed_=5)
    with seed(tmp_path / "s") as client:
        client.create_collection("raw", embedding_function=None).add(**data)
    with source(tmp_path / "s") as conn, seed(tmp_path / "s") as client:
        desc = conn.describe(["raw"])[0]
        col = client.get_collection("raw", embedding_function=None)
        include = ["documents", "metadatas", "uris", "embeddings"]
        raw = raw_get(col, include, limit=25, offset=20)
        public = raw_get(SimpleNamespace(get=col.get), include, limit=25, offset=20)  # no _client: public get

        def other_signature(**kwargs: Any) -> Any:  # what a chromadb with another `_get` does
            raise TypeError(f"_get() got an unexpected keyword argument {next(iter(kwargs))!r}")

        changed = SimpleNamespace(
            _client=SimpleNamespace(_get=other_signature),
            get=col.get,
            id=col.id,
            tenant=col.tenant,
            database=col.database,
        )
        fallback = raw_get(changed, include, limit=25, offset=20)
        assert isinstance(raw["embeddings"], list) and isinstance(public["embeddings"], np.ndarray)
        from_raw = cm.page_to_batch("raw", desc.schema, 7, raw)
        assert from_raw.equals(cm.page_to_batch("raw", desc.schema, 7, public))
        assert from_raw.equals(cm.page_to_batch("raw", desc.schema, 7, fallback))
    assert from_raw.column("id").to_pylist() == data["ids"][20:45]
    got = from_raw.column("vector").values.to_numpy().reshape(-1, 7)
    assert got.tobytes() == data["embeddings"][20:45].tobytes()


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        ([[1.0, 2.0]] * 3, r"'c': an embedding is not a list of 3 numbers"),
        ([[1.0, 2.0, 3.0]] * 2, r"'c': 2 embeddings for 3 records"),
        ([[1.0, 2.0, 3.0], None, [1.0, 2.0, 3.0]], r"'c': 3 embeddings for 3 records"),
        ([[1.0, 2.0, 3.0], ["x", 2.0, 3.0], [1.0, 2.0, 3.0]], r"'c': an embedding is not a list of 3 numbers"),
        (np.zeros((3, 2)), r"'c': embeddings of shape \(3, 2\), expected \(3, 3\)"),
    ],
)
def test_a_page_with_malformed_embeddings_is_refused(embeddings: Any, message: str) -> None:
    cfg = VectorsConfig(dense=(DenseVectorSpec("", 3, "l2"),))
    page = {"ids": ["a", "b", "c"], "embeddings": embeddings, "documents": None, "uris": None, "metadatas": None}
    with pytest.raises(SourceDataError, match=message):
        cm.page_to_batch("c", arrow_schema(cfg), 3, page)


def test_export_refuses_a_collection_that_changes_meanwhile(tmp_path: Path) -> None:
    with seed(tmp_path / "s") as client:
        client.create_collection("live", embedding_function=None).add(**records(50, 4))
    with source(tmp_path / "s", batch_rows=20) as conn:
        desc = conn.describe(["live"])[0]
        stream = conn.export(desc)
        first = next(stream)
        # Another writer in this process (same settings share Chroma's system for the path) deletes a record
        # already exported: later offset pages shift by one, so one record would silently be missed.
        other = chromadb.PersistentClient(path=str(tmp_path / "s"), settings=SETTINGS)
        other.get_collection("live", embedding_function=None).delete(ids=[first.column("id")[0].as_py()])
        with pytest.raises(SourceDataError, match=r"'live'.*changed during the backup"):
            list(stream)
        other.close()


def test_a_record_added_during_the_export_and_read_by_it_is_kept(tmp_path: Path) -> None:
    """Chroma appends new records after the existing ones, so a record added meanwhile is read by a later
    page: the export then equals the collection as the final ids pass sees it, which is accepted. (Pages of
    5: the export reads FETCH_AHEAD pages ahead, and the page that reads the new record must start after
    the add.)"""
    assert FETCH_AHEAD + 1 < 50 // 5
    with seed(tmp_path / "s") as client:
        client.create_collection("live", embedding_function=None).add(**records(50, 4))
    with source(tmp_path / "s", batch_rows=5) as conn:
        desc = conn.describe(["live"])[0]
        stream = conn.export(desc)
        batches = [next(stream)]
        other = chromadb.PersistentClient(path=str(tmp_path / "s"), settings=SETTINGS)
        other.get_collection("live", embedding_function=None).add(ids=["late"], embeddings=[[1.0] * 4])
        batches += list(stream)
        other.close()
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == 51 and "late" in ids


# --- round trips -----------------------------------------------------------------------------------------


def _default_ef(client: Any) -> Any:
    return client.create_collection("coll", metadata={"team": "a"})  # the default embedding function config


def _no_ef(client: Any) -> Any:
    return client.create_collection(
        "coll", embedding_function=None, configuration={"hnsw": {"space": "ip", "ef_search": 77}}
    )


def _legacy(client: Any) -> Any:
    metadata = {"hnsw:space": "l2", "hnsw:M": 8}
    return client.create_collection("coll", embedding_function=None, metadata=metadata)


def _bare(client: Any) -> Any:  # no embedding function recorded; ef_search changed after creation
    col = client.create_collection("coll", embedding_function=None, metadata={"team": "b"})
    col.modify(configuration={"hnsw": {"ef_search": 150}})
    return col


def _schema(client: Any) -> Any:
    schema = Schema()
    schema.delete_index(IntInvertedIndexConfig(), key="i")
    return client.create_collection("coll", schema=schema, embedding_function=None, metadata={"x": 1.5})


@pytest.mark.parametrize("create", [_default_ef, _no_ef, _legacy, _bare, _schema])
def test_chroma_round_trip_is_identical(tmp_path: Path, create: Any) -> None:
    with seed(tmp_path / "s") as client:
        create(client).add(**records(150, 8))
    with source(tmp_path / "s") as src:
        desc = src.describe(["coll"])[0]
        bundle = list(src.export(desc))
    with target(tmp_path / "t") as dst:
        plan, written = restore(dst, desc, bundle, "coll")
        back = dst.describe(["coll"])[0]
        assert digest(dst.export(back)) == digest(bundle)
    assert written == 150 and plan.dropped == () and plan.tolerances == {}
    assert back.config.native is not None and desc.config.native is not None
    for key in ("configuration", "schema", "metadata", "dimension"):  # recreated exactly, natively
        assert back.config.native[key] == desc.config.native[key], key
    assert back.config.dense == desc.config.dense


def test_embedding_function_config_is_restored_without_building_it(tmp_path: Path) -> None:
    # The bundle names OpenAI's embedding function, which cannot be built here (no openai package, no key):
    # chromadb alone would record it as "legacy"; the connector's config-only stand-in keeps it exactly.
    openai = {
        "type": "known",
        "name": "openai",
        "config": {"api_key_env_var": "CHROMA_OPENAI_API_KEY", "model_name": "text-embedding-3-small"},
    }
    with seed(tmp_path / "s") as client:
        _default_ef(client).add(**records(10, 4))
    with source(tmp_path / "s") as src:
        desc = src.describe(["coll"])[0]
        bundle = list(src.export(desc))
    assert desc.config.native is not None
    native = json.loads(
        json.dumps(desc.config.native).replace('{"type": "known", "name": "default", "config": {}}', json.dumps(openai))
    )
    assert native["configuration"]["embedding_function"] == openai
    desc = replace(desc, config=replace(desc.config, native=native))
    before = dict(known_embedding_functions)
    with target(tmp_path / "t") as dst:
        restore(dst, desc, bundle, "coll")
        back = dst.describe(["coll"])[0]
    assert back.config.native is not None
    assert back.config.native["configuration"] == native["configuration"]
    assert back.config.native["schema"] == native["schema"]
    assert known_embedding_functions == before  # the stand-ins were registered only while creating


def test_cosine_comes_back_within_the_ulp_tolerance(tmp_path: Path) -> None:
    data = records(300, 32, seed_=5)
    with seed(tmp_path / "s") as client:
        client.create_collection("cos", embedding_function=None, configuration={"hnsw": {"space": "cosine"}}).add(
            **data
        )
    with source(tmp_path / "s") as src:
        desc = src.describe(["cos"])[0]
        bundle = list(src.export(desc))
    exported = vectors_by_id(pa.Table.from_batches(bundle))
    native_ulps = max(_ulps(exported[rid], data["embeddings"][i]) for i, rid in enumerate(data["ids"]))
    with target(tmp_path / "t") as dst:
        plan, _ = restore(dst, desc, bundle, "cos")
        back = pa.Table.from_batches(list(dst.export(dst.describe(["cos"])[0])))
    assert plan.tolerances == {"vector": "ulp"}
    assert digest(back.to_batches(), exclude=("vector",)) == digest(bundle, exclude=("vector",))
    restored = vectors_by_id(back)
    assert native_ulps <= 2
    assert max(_ulps(restored[rid], vec) for rid, vec in exported.items()) <= 2


def _ulps(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.view(np.int32).astype(np.int64) - b.astype(np.float32).view(np.int32)).max())


# --- cross-kind sources and lossy rules -------------------------------------------------------------------


def _vec(i: int, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(dim).astype(np.float32)


def test_one_named_vector_round_trips_with_its_name(tmp_path: Path) -> None:
    cfg = VectorsConfig(
        dense=(DenseVectorSpec("text", 4, "l2"),),
        metadata={"owner": "ops"},
        hnsw={"m": 12, "ef_construction": 60},
    )
    rows = [{"id": str(i), "vector:text": _vec(i), "metadata": metadata_json({"n": i})} for i in range(20)]
    bundle = [canonical(cfg, rows)]
    with target(tmp_path / "t") as dst:
        plan, written = restore(dst, DatasetDescription("src", cfg, 20), bundle, "named")
        back = dst.describe(["named"])[0]
        assert digest(dst.export(back)) == digest(bundle)
    assert written == 20 and plan.dropped == ()
    assert back.config.dense == (DenseVectorSpec("text", 4, "l2"),)
    assert back.config.metadata == {"owner": "ops"}
    assert back.config.hnsw is not None and back.config.hnsw["m"] == 12
    assert back.config.hnsw["ef_construction"] == 60


def test_features_chroma_cannot_hold_are_refused_then_mapped(tmp_path: Path) -> None:
    cfg = VectorsConfig(
        dense=(
            DenseVectorSpec("b", 4, "manhattan"),
            DenseVectorSpec("a", 4, "manhattan"),
            DenseVectorSpec("m", 4, "cosine", multivector=True),
        ),
        sparse=(SparseVectorSpec("bm25"),),
        metadata={"tags": ["x"], "none": None, "ok": 1},
    )
    desc = DatasetDescription("src", cfg, 3)
    schema = arrow_schema(cfg)
    rows = [
        {
            "id": f"p{i}",
            "vector:a": _vec(i),
            "vector:b": _vec(i + 9),
            "vector:m": [_vec(i)],
            "sparse:bm25": {"indices": [1], "values": [0.5]},
            "metadata": metadata_json({"n": i}),
        }
        for i in range(3)
    ]
    bundle = [pa.RecordBatch.from_pylist(rows, schema=schema)]
    with target(tmp_path / "t") as dst:
        for feature in (
            "multivectors",
            "more than one vector",
            "sparse vectors",
            "manhattan",
            "collection metadata",
        ):
            narrowed = DatasetDescription("src", _only(cfg, feature), 3)
            with pytest.raises(UnsupportedFeatureError, match=f"'dest'.*{feature}"):
                dst.plan_import(narrowed, "dest", mode="create", allow_lossy=False)
        with pytest.raises(UnsupportedFeatureError, match="no plain vector remains"):
            only_multi = VectorsConfig(dense=(DenseVectorSpec("m", 4, "cosine", multivector=True),))
            dst.plan_import(DatasetDescription("src", only_multi, 3), "dest", mode="create", allow_lossy=True)
        plan, written = restore(dst, desc, bundle, "dest", allow_lossy=True)
        back = dst.describe(["dest"])[0]
        exported = list(dst.export(back))
    assert written == 3
    assert any("'m'" in d for d in plan.dropped) and any("keep only 'a'" in d for d in plan.dropped)
    assert any("bm25" in d for d in plan.dropped) and any("manhattan" in d for d in plan.dropped)
    assert back.config.dense == (DenseVectorSpec("a", 4, "l2"),)  # first by name, manhattan -> l2
    assert back.config.metadata == {"tags": '["x"]', "ok": 1}
    expected = [plan.transform(b) for b in bundle]
    assert expected[0].schema.names == ["id", "vector:a", "document", "uri", "metadata"]
    assert digest(exported) == digest(expected)


def _only(cfg: VectorsConfig, feature: str) -> VectorsConfig:
    """`cfg` narrowed to exhibit exactly one unsupported feature."""
    plain = DenseVectorSpec("", 4, "l2")
    return {
        "multivectors": VectorsConfig(dense=(plain, cfg.dense[2])),
        "more than one vector": VectorsConfig(dense=(plain, DenseVectorSpec("a", 4, "l2"))),
        "sparse vectors": VectorsConfig(dense=(plain,), sparse=cfg.sparse),
        "manhattan": VectorsConfig(dense=(DenseVectorSpec("", 4, "manhattan"),)),
        "collection metadata": VectorsConfig(dense=(plain,), metadata=cfg.metadata),
    }[feature]


AWKWARD = {
    "nested": {"a": {"b": 1}},
    "null": None,
    "big": 2**70,
    "small": -(2**64),
    "empty_list": [],
    "mixed": [1, "a"],
    "ints_floats": [1, 2.5],
    "nan": math.nan,
    "inf": -math.inf,
    "negzero": -0.0,
    "zeros": [-0.0, 1.0],
    "#hash": 1,
    "": 2,
    "fine": "ok",
    "sparse": {"#type": "sparse_vector", "indices": [1], "values": [0.5]},
}
MAPPED = {
    "nested": '{"a":{"b":1}}',
    "big": str(2**70),
    "small": str(-(2**64)),
    "empty_list": "[]",
    "mixed": '[1,"a"]',
    "ints_floats": "[1,2.5]",
    "nan": "NaN",
    "inf": "-Infinity",
    "negzero": 0.0,
    "zeros": [0.0, 1.0],
    "fine": "ok",
    "sparse": '{"#type":"sparse_vector","indices":[1],"values":[0.5]}',
}


def test_record_metadata_chroma_cannot_hold(tmp_path: Path) -> None:
    cfg = VectorsConfig(dense=(DenseVectorSpec("", 4, "l2"),))
    desc = DatasetDescription("src", cfg, 4)
    bundle = [
        canonical(
            cfg,
            [
                {"id": "good", "vector": _vec(1), "metadata": metadata_json({"n": 1})},
                {"id": "bad", "vector": _vec(2), "metadata": canonical_json(AWKWARD)},
                {"id": "nulls-only", "vector": _vec(3), "metadata": canonical_json({"x": None})},
                {"id": "plain", "vector": _vec(4), "metadata": None},
            ],
        )
    ]
    with target(tmp_path / "t") as dst:
        plan = dst.plan_import(desc, "meta", mode="create", allow_lossy=False)
        with pytest.raises(UnsupportedFeatureError, match=r"'meta': record 'bad'.*'nested'.*--allow-lossy"):
            dst.validate_records(plan, iter(bundle))
        with pytest.raises(DatasetNotFoundError):  # validating wrote nothing
            dst.describe(["meta"])
        with pytest.raises(UnsupportedFeatureError, match=r"'meta': record 'bad'.*'nested'.*--allow-lossy"):
            dst.import_(plan, iter(bundle))
        plan = dst.plan_import(desc, "meta", mode="overwrite", allow_lossy=True)
        assert dst.validate_records(plan, iter(bundle)) == 4
        written = dst.import_(plan, iter(bundle))
        table = export_table(dst, "meta")
    rows = {r["id"]: r["metadata"] for r in table.to_pylist()}
    assert written == 4
    assert rows["bad"] == canonical_json(MAPPED)
    assert rows["nulls-only"] is None and rows["plain"] is None and rows["good"] == '{"n":1}'
    assert digest(table.to_batches()) == digest(plan.transform(b) for b in bundle)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_ints_beyond_int64_are_never_turned_into_floats(tmp_path: Path, value: int) -> None:
    cfg = VectorsConfig(dense=(DenseVectorSpec("", 2, "l2"),))
    bundle = [canonical(cfg, [{"id": "x", "vector": _vec(0, 2), "metadata": canonical_json({"n": value})}])]
    with target(tmp_path / "t") as dst:
        plan = dst.plan_import(DatasetDescription("s", cfg, 1), "ints", mode="create", allow_lossy=False)
        with pytest.raises(UnsupportedFeatureError, match="outside int64"):
            dst.import_(plan, iter(bundle))


def test_sparse_vector_metadata_uses_chromas_wire_form() -> None:
    sv = SparseVector(indices=[1, 5], values=[0.5, 0.25], labels=["a", "b"])
    canonical_md = cm.from_chroma({"sv": sv, "n": 1})
    assert canonical_md == {
        "sv": {"#type": "sparse_vector", "indices": [1, 5], "values": [0.5, 0.25], "tokens": ["a", "b"]},
        "n": 1,
    }
    assert cm.to_chroma(canonical_md, SparseVector) == {"sv": sv, "n": 1}
    assert cm.record_problems(canonical_md, sparse_ok=True) == []
    assert cm.record_problems(canonical_md) == ["'sv': a sparse vector value (local Chroma cannot hold it)"]
    unsorted = {"sv": {"#type": "sparse_vector", "indices": [5, 1], "values": [0.5, 0.25]}}
    assert cm.record_problems(unsorted, sparse_ok=True) == [
        "'sv': a sparse vector value whose indices are not ascending ints >= 0"
    ]


def test_sparse_vector_metadata_import(tmp_path: Path) -> None:
    cfg = VectorsConfig(dense=(DenseVectorSpec("", 2, "l2"),))
    tagged = {"#type": "sparse_vector", "indices": [1, 5], "values": [0.5, 0.25]}
    bundle = [canonical(cfg, [{"id": "s", "vector": _vec(0, 2), "metadata": canonical_json({"sv": tagged})}])]
    desc = DatasetDescription("s", cfg, 1)
    with target(tmp_path / "t") as dst:
        plan = dst.plan_import(desc, "sparse-md", mode="create", allow_lossy=False)
        with pytest.raises(UnsupportedFeatureError, match=r"record 's'.*sparse vector value"):
            dst.import_(plan, iter(bundle))
        # A store that holds them gets a real SparseVector: local Chroma itself then refuses it.
        dst.sparse_metadata = True
        plan = dst.plan_import(desc, "sparse-md", mode="overwrite", allow_lossy=False)
        with pytest.raises(ConnectorError, match=r"'sparse-md'.*(MetadataValue|Sparse vector)"):
            dst.import_(plan, iter(bundle))
        dst.sparse_metadata = False
        restore(dst, desc, bundle, "sparse-md", mode="overwrite", allow_lossy=True)
        (row,) = export_table(dst, "sparse-md").to_pylist()
    assert row["metadata"] == canonical_json({"sv": canonical_json(tagged)})


def test_bad_vectors_are_refused_naming_the_record(tmp_path: Path) -> None:
    cfg = VectorsConfig(dense=(DenseVectorSpec("", 2, "cosine"),))
    desc = DatasetDescription("s", cfg, 2)
    cases = {"null": None, "nan": np.array([np.nan, 1], np.float32), "huge": np.array([1e30, 1], np.float32)}
    with target(tmp_path / "t") as dst:
        for rid, vec in cases.items():
            batch = canonical(cfg, [{"id": "ok", "vector": _vec(0, 2)}, {"id": rid, "vector": vec}])
            plan = dst.plan_import(desc, "vecs", mode="overwrite", allow_lossy=True)
            with pytest.raises(UnsupportedFeatureError, match=f"record '{rid}'"):
                dst.import_(plan, iter([batch]))
        with pytest.raises(UnsupportedFeatureError, match="cannot name a collection 'x'"):
            dst.plan_import(desc, "x", mode="create", allow_lossy=False)


# --- modes -----------------------------------------------------------------------------------------------


def test_modes_create_overwrite_merge(tmp_path: Path) -> None:
    cfg = VectorsConfig(dense=(DenseVectorSpec("", 4, "l2"),))
    desc = DatasetDescription("s", cfg, 3)
    first = [
        canonical(
            cfg,
            [{"id": f"a{i}", "vector": _vec(i), "metadata": canonical_json({"old": [1, 2]})} for i in range(3)],
        )
    ]
    second = [
        canonical(
            cfg,
            [{"id": f"a{i}", "vector": _vec(i + 50), "metadata": canonical_json({"new": i})} for i in (1, 2, 3)],
        )
    ]
    with target(tmp_path / "t") as dst:
        restore(dst, desc, first, "modes")
        with pytest.raises(TargetNotEmptyError, match=r"'modes'.*3 records.*--mode overwrite.*--mode merge"):
            dst.plan_import(desc, "modes", mode="create", allow_lossy=False)
        restore(dst, desc, second, "modes", mode="merge")  # a1, a2 replaced (not merged), a3 added, a0 kept
        merged = {r["id"]: r["metadata"] for r in export_table(dst, "modes").to_pylist()}
        assert merged == {"a0": '{"old":[1,2]}', "a1": '{"new":1}', "a2": '{"new":2}', "a3": '{"new":3}'}
        assert vectors_by_id(export_table(dst, "modes"))["a1"].tobytes() == _vec(51).tobytes()
        # Overwrite: only the bundle's records remain, and none inherits the old list metadata (Chroma
        # 1.5.9 leaves a deleted collection's list rows behind for records that reuse their row ids).
        _, written = restore(dst, desc, second, "modes", mode="overwrite")
        table = export_table(dst, "modes")
        assert written == 3 and digest(table.to_batches()) == digest(second)
        dst.describe(["modes"])  # still there
        # Create into an existing empty collection: recreated from the bundle's config.
        with seed_client(dst) as client:
            client.create_collection("empty-ip", embedding_function=None, configuration={"hnsw": {"space": "ip"}})
        restore(dst, desc, first, "empty-ip")
        assert dst.describe(["empty-ip"])[0].config.dense == (DenseVectorSpec("", 4, "l2"),)
        # Planning writes nothing; merge creates a missing collection, refuses another dimension or distance.
        dst.plan_import(desc, "fresh", mode="merge", allow_lossy=False)
        with pytest.raises(DatasetNotFoundError):
            dst.describe(["fresh"])
        with pytest.raises(UsageError, match="unknown mode 'append'"):
            dst.plan_import(desc, "fresh", mode="append", allow_lossy=False)
        restore(dst, desc, first, "fresh", mode="merge")
        assert dst.describe(["fresh"])[0].rows == 3
        with seed_client(dst) as client:  # empty, so no dimension yet, but its distance is set
            client.create_collection("cos-empty", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
        with pytest.raises(UnsupportedFeatureError, match=r"'cos-empty'.*distance 'cosine'.*cannot merge"):
            dst.plan_import(desc, "cos-empty", mode="merge", allow_lossy=False)
        for other in (
            DenseVectorSpec("", 5, "l2"),
            DenseVectorSpec("", 4, "cosine"),
            DenseVectorSpec("v", 4, "l2"),
        ):
            src = DatasetDescription("s", VectorsConfig(dense=(other,)), 1)
            with pytest.raises(UnsupportedFeatureError, match=r"'fresh'.*cannot merge"):
                dst.plan_import(src, "fresh", mode="merge", allow_lossy=False)


@contextmanager
def seed_client(conn: ChromaConnector) -> Iterator[Any]:
    """A second chromadb client on the connector's embedded path (same settings: shares its system)."""
    client = chromadb.PersistentClient(path=str(conn.location.path), settings=SETTINGS)
    try:
        yield client
    finally:
        client.close()


# --- search ----------------------------------------------------------------------------------------------


def test_search_returns_the_nearest_neighbours(tmp_path: Path) -> None:
    data = records(200, 8, seed_=9)
    with seed(tmp_path / "s") as client:
        client.create_collection("near", embedding_function=None).add(**data)
    vectors = data["embeddings"].astype(np.float64)
    queries = vectors[:5] + 0.01
    with source(tmp_path / "s") as conn:
        found = conn.search("near", "", queries, 5)
        with pytest.raises(UsageError, match="no vector 'text'"):
            conn.search("near", "text", queries, 5)
    for q, ids in zip(queries, found, strict=True):
        exact = np.argsort(((vectors - q) ** 2).sum(axis=1))[:5]
        assert ids == [data["ids"][i] for i in exact]


# --- opening, closing, errors ----------------------------------------------------------------------------


def test_missing_store_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    with pytest.raises(DatasetNotFoundError, match=str(missing)):
        open_connector(f"chroma:{missing}")
    assert not missing.exists()
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"no chroma\.sqlite3"):
        source(tmp_path / "empty-dir")


def test_close_releases_the_store_for_reopening(tmp_path: Path) -> None:
    with seed(tmp_path / "s") as client:
        client.create_collection("keep", embedding_function=None).add(ids=["a"], embeddings=[[1.0, 2.0]])
    for _ in range(2):
        conn = open_connector(f"chroma:{tmp_path / 's'}")
        assert isinstance(conn, ChromaConnector)
        assert conn.describe()[0].rows == 1
        conn.close()
        conn.close()  # safe twice
    # Chroma refuses a second in-process client with other settings while a system for the path lives:
    # this only opens because close() released the connector's.
    other = chromadb.PersistentClient(
        path=str(tmp_path / "s"), settings=Settings(anonymized_telemetry=False, allow_reset=True)
    )
    assert other.get_collection("keep", embedding_function=None).count() == 1
    other.close()


def test_token_is_sent_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    # `chroma run` has no auth to test against: record what the connector sends to an HTTP endpoint that
    # answers every request with 401, as a Chroma server with token auth does for a wrong token.
    seen: list[dict[str, str]] = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TEAM_TOKEN", "s3cret")
    try:
        with pytest.raises(UnavailableError, match=f"127.0.0.1:{httpd.server_port} does not answer like"):
            open_connector(f"chroma+http://127.0.0.1:{httpd.server_port}?api_key_env=TEAM_TOKEN")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen and seen[0].get("Authorization") == "Bearer s3cret"
    assert seen[0].get("X-Chroma-Token") == "s3cret"


def test_missing_chromadb_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "chromadb", None)  # what an install without the extra looks like
    with pytest.raises(ConnectorNotInstalledError, match=r"pip install 'aibackup\[chroma\]'"):
        target(tmp_path / "t")


# --- server ----------------------------------------------------------------------------------------------


@pytest.mark.chroma_server
def test_server_export_and_round_trip(chroma_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMA_API_KEY", "secret-token")  # sent as headers; this server has no auth
    name = f"srv-{uuid.uuid4().hex[:8]}"
    data = records(150, 12, seed_=11)
    client = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port, settings=SETTINGS)
    client.create_collection(name, embedding_function=None, metadata={"team": "x"}).add(**data)
    with server(chroma_server) as conn:
        desc = conn.describe([name])[0]
        bundle = list(conn.export(desc))
        found = conn.search(name, "", data["embeddings"][:3], 1)
    got = vectors_by_id(pa.Table.from_batches(bundle))
    for i, rid in enumerate(data["ids"]):  # the server sends decimals: float32 exactness still holds
        assert got[rid].tobytes() == data["embeddings"][i].tobytes()
    assert found == [[rid] for rid in data["ids"][:3]]
    # server -> embedded -> server: identical records and native config.
    with target(tmp_path / "t") as dst:
        restore(dst, desc, bundle, name)
        back = dst.describe([name])[0]
        middle = list(dst.export(back))
    with server(chroma_server) as conn:
        restore(conn, back, middle, name + "-copy")
        copy = conn.describe([name + "-copy"])[0]
        assert digest(conn.export(copy)) == digest(bundle)
    assert copy.config.native is not None and desc.config.native is not None
    assert copy.config.native["configuration"] == desc.config.native["configuration"]
    with server(chroma_server) as conn, pytest.raises(DatasetNotFoundError, match=r"'absent1'.*chroma\+http"):
        conn.describe(["absent1"])
