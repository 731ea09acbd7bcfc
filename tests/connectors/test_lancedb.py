"""LanceDB connector against real embedded LanceDB databases, through the CLI where a user would go:
exact LanceDB -> LanceDB round trips (types, schema, indexes), ids, the row-count guard, streaming, and
restores into and out of Qdrant and Chroma, proven. Nothing is faked."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("LANCEDB_LOG", "error")  # before lancedb loads: its Rust warnings go to stderr

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import FTS, BTree, HnswSq, IvfPq

from aibackup.connectors.base import DatasetDescription
from aibackup.connectors.lancedb import records
from aibackup.connectors.lancedb.connector import LanceDBConnector
from aibackup.connectors.registry import open_connector, parse_location
from aibackup.errors import ConnectorNotInstalledError, SourceDataError, UnsupportedFeatureError
from aibackup.manifests.vectors import metadata_json
from tests.helpers import Cli, chroma_contents, manifest_json, ok, one_line_error, seed_chroma
from tests.vectordata import vectors

warnings.filterwarnings("ignore", category=DeprecationWarning, module="lancedb")


def database(path: Path) -> Any:
    return lancedb.connect(str(path))


def fixed(matrix: np.ndarray, dtype: Any = np.float32) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(dtype).ravel()), matrix.shape[1])


def rich_table(n: int) -> pa.Table:
    """A table of many column types, nulls and unicode, with an int id, a float16 vector and a struct in a
    struct (the kind LanceDB once wrote as 0 rows from a sliced batch)."""
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "vector": fixed(vectors(n, 16, seed=1)),
            "title": fixed(vectors(n, 8, seed=2), np.float16),
            "text": [f"doc {i}: naïve ✓ 🚀" if i % 5 else None for i in range(n)],
            "i8": pa.array([i % 100 - 50 for i in range(n)], pa.int8()),
            "u64": pa.array([2**64 - 1 - i for i in range(n)], pa.uint64()),
            "f32": pa.array([i / 3 for i in range(n)], pa.float32()),
            "ts": pa.array(
                [dt.datetime(2024, 1, 1) + dt.timedelta(microseconds=i) for i in range(n)], pa.timestamp("us", "UTC")
            ),
            "day": pa.array([dt.date(1969, 12, 31) + dt.timedelta(days=i) for i in range(n)]),
            "price": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
            "blob": pa.array([bytes([i % 256, 0]) if i % 4 else None for i in range(n)]),
            "tags": pa.array([["a", "β"][: i % 3] for i in range(n)], pa.list_(pa.string())),
            "nested": pa.array([{"x": i, "y": {"z": [i, None]}} if i % 7 else None for i in range(n)]),
            "counts": pa.array([[("k", i)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
            "ok": pa.array([i % 2 == 0 if i % 9 else None for i in range(n)]),
            "kind": pa.array(["x", "y", "z"] * (n // 3) + ["x"] * (n % 3)).dictionary_encode(),
        }
    )


def rows_by_id(table: Any) -> pa.Table:
    return table.to_arrow().sort_by("id")


# --- LanceDB -> LanceDB ------------------------------------------------------------------------------------


def test_a_table_round_trips_exactly_with_its_indexes(tmp_path: Path, cli: Cli) -> None:
    source = database(tmp_path / "source")
    table = source.create_table("docs", rich_table(400))
    table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=4, num_sub_vectors=4))
    table.create_index("title", config=HnswSq(distance_type="dot", m=10, ef_construction=60))
    table.create_index("text", config=FTS(with_position=True, stem=False))
    table.create_index("i8", config=BTree())
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"lancedb:{tmp_path / 'source'}", "--repo", repo))
    config = manifest_json(repo)["datasets"][0]["config"]
    dense = {d["name"]: (d["size"], d["distance"], d["datatype"]) for d in config["dense"]}
    assert dense == {"": (16, "cosine", "float32"), "title": (8, "ip", "float16")}
    assert config["hnsw"] == {"m": 10, "ef_construction": 60}
    assert config["native"]["version"] == table.version
    assert config["native"]["columns"]["document"] == "text"

    result = ok(cli("restore", "latest", "--repo", repo, "--to", f"lancedb:{tmp_path / 'target'}", "--json"))
    checks = {c["name"]: c for c in result.json()["datasets"][0]["checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert "4 rebuilt" in checks["indexes"]["detail"]
    restored = database(tmp_path / "target").open_table("docs")
    assert restored.schema.equals(table.schema, check_metadata=True)
    assert rows_by_id(restored).equals(rows_by_id(table))

    def indexes(t: Any) -> dict[str, Any]:
        return {
            i.name: (i.index_type, i.columns, {k: v for k, v in i.index_details.items() if k != "runtime_hints"})
            for i in t.list_indices()
        }

    assert indexes(restored) == indexes(table)


def test_a_backup_reads_the_version_it_described(tmp_path: Path) -> None:
    table = database(tmp_path / "db").create_table("docs", rich_table(30))
    with LanceDBConnector(parse_location(f"lancedb:{tmp_path / 'db'}")) as conn:
        (described,) = conn.describe(["docs"])
        table.add(rich_table(3))  # a writer goes on meanwhile
        table.delete("id < 5")
        exported = pa.Table.from_batches(list(conn.export(described)))
        state = conn.export_state("docs")
    assert exported.num_rows == 30 and sorted(map(int, exported.column("id").to_pylist())) == list(range(30))
    assert state is not None and state.state == {"version": described.config.native["version"]}


def test_export_streams_batches_of_one_version(tmp_path: Path) -> None:
    n = 1000
    database(tmp_path / "db").create_table(
        "docs", pa.table({"id": [f"r{i}" for i in range(n)], "vector": fixed(vectors(n, 8))})
    )
    with LanceDBConnector(parse_location(f"lancedb:{tmp_path / 'db'}"), batch_rows=64) as conn:
        (described,) = conn.describe()
        sizes = [b.num_rows for b in conn.export(described)]
    assert len(sizes) >= n // 64 and max(sizes) <= 64 and sum(sizes) == n


# --- ids ---------------------------------------------------------------------------------------------------


def test_a_table_without_an_id_column_is_refused_unless_lossy(tmp_path: Path, cli: Cli, monkeypatch: Any) -> None:
    n = 40
    data = pa.table({"key": [f"k{i}" for i in range(n)], "vector": fixed(vectors(n, 8)), "n": list(range(n))})
    database(tmp_path / "db").create_table("noid", data)
    uri = f"lancedb:{tmp_path / 'db'}"
    repo = str(tmp_path / "repo")
    one_line_error(cli("backup", uri, "--repo", repo), 2, "'noid'", "'id'", "?id=")
    ok(cli("backup", f"{uri}?id=key", "--repo", repo))  # the id column named

    # With the lossy option (the core passes --allow-lossy to the source as options["allow_lossy"]):
    # the ids are row positions of the version read, and the export says so.
    with open_connector(uri, options={"allow_lossy": True}) as conn:
        (described,) = conn.describe()
        ids = pa.Table.from_batches(list(conn.export(described))).column("id").to_pylist()
        state = conn.export_state("noid")
    assert ids == [str(i) for i in range(n)]
    assert state is not None and "row positions" in state.notes[0]

    # A whole backup with --allow-lossy, and restores of it.
    lossy_repo = str(tmp_path / "lossy-repo")
    backed_up = ok(cli("backup", uri, "--repo", lossy_repo, "--allow-lossy"))
    assert "noid: no id column 'id': the record ids are the row positions" in backed_up.out
    target = tmp_path / "target"
    ok(cli("restore", "latest", "--repo", lossy_repo, "--to", f"lancedb:{target}"))
    restored = database(target).open_table("noid")
    assert restored.schema.equals(data.schema) and restored.to_arrow().equals(data)  # no id column made up
    one_line_error(
        cli("restore", "latest", "--repo", lossy_repo, "--to", f"lancedb:{target}", "--mode", "merge"), 2, "merge"
    )
    ok(cli("restore", "latest", "--repo", lossy_repo, "--to", f"qdrant:{tmp_path / 'qdrant'}"))


def test_null_and_repeated_ids_are_refused(tmp_path: Path, cli: Cli) -> None:
    db = database(tmp_path / "db")
    db.create_table("twice", pa.table({"id": ["a", "b", "a", "c", "b"], "vector": fixed(vectors(5, 4))}))
    repo = str(tmp_path / "repo")
    line = one_line_error(cli("backup", f"lancedb:{tmp_path / 'db'}", "--repo", repo), 2, "'twice'", "not unique")
    assert "'a' (2 rows)" in line and "'b' (2 rows)" in line
    db.drop_table("twice")
    db.create_table("nulls", pa.table({"id": ["a", None, "c"], "vector": fixed(vectors(3, 4))}))
    one_line_error(cli("backup", f"lancedb:{tmp_path / 'db'}", "--repo", repo), 2, "'nulls'", "null id")


# --- what LanceDB cannot hold, and the guard -----------------------------------------------------------------


def test_vector_values_that_cannot_travel_exactly_are_refused(tmp_path: Path, cli: Cli) -> None:
    db = database(tmp_path / "db")
    wide = vectors(6, 4).astype(np.float64)
    db.create_table("exact", pa.table({"id": list("abcdef"), "vector": fixed(wide, np.float64)}))
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"lancedb:{tmp_path / 'db'}", "--repo", repo))  # float32 values in float64: exact
    ok(cli("restore", "latest", "--repo", repo, "--to", f"lancedb:{tmp_path / 'copy'}"))
    assert database(tmp_path / "copy").open_table("exact").to_arrow().equals(db.open_table("exact").to_arrow())

    db.create_table("rounded", pa.table({"id": ["a"], "vector": fixed(np.full((1, 4), 0.1), np.float64)}))
    one_line_error(cli("backup", f"lancedb:{tmp_path / 'db'}", "--repo", repo), 2, "'rounded'", "float64")

    # A NaN in a short vector column LanceDB does not check: backed up as it is, refused by a restore before
    # anything is written (LanceDB's writer would refuse it or turn it into null).
    nan = vectors(3, 4)
    nan[1, 2] = np.nan
    nan_db = database(tmp_path / "nan-db")
    nan_db.create_table("emb", pa.table({"id": ["x", "y", "z"], "emb": fixed(nan)}))
    nan_repo = str(tmp_path / "nan-repo")
    ok(cli("backup", f"lancedb:{tmp_path / 'nan-db'}", "--repo", nan_repo, "--queries", "0"))
    target = tmp_path / "nan-target"
    one_line_error(cli("restore", "latest", "--repo", nan_repo, "--to", f"lancedb:{target}"), 2, "'y'", "NaN")
    assert "emb" not in database(target).list_tables().tables


def test_a_count_that_differs_from_what_was_written_fails_the_restore(
    tmp_path: Path, cli: Cli, monkeypatch: Any
) -> None:
    """LanceDB 0.40 writes 0 rows, without an error, from a sliced batch holding a struct in a struct: the
    restore never sends one, and if it did, count_rows() would catch it."""
    database(tmp_path / "db").create_table("docs", rich_table(60))
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"lancedb:{tmp_path / 'db'}", "--repo", repo, "--queries", "0"))
    convert = records.TableBatches.convert

    def sliced(self: records.TableBatches, batch: pa.RecordBatch) -> pa.RecordBatch:
        out = convert(self, batch)
        return pa.concat_batches([out, out]).slice(out.num_rows)  # the same rows, at an offset

    monkeypatch.setattr(records.TableBatches, "convert", sliced)
    target = tmp_path / "target"
    one_line_error(cli("restore", "latest", "--repo", repo, "--to", f"lancedb:{target}"), 2, "LanceDB wrote 0 rows")
    assert "docs" not in database(target).list_tables().tables  # not left behind as if restored


def test_merge_needs_the_same_columns(tmp_path: Path, cli: Cli) -> None:
    db = database(tmp_path / "db")
    db.create_table("docs", pa.table({"id": ["a", "b"], "vector": fixed(vectors(2, 4)), "n": [1, 2]}))
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"lancedb:{tmp_path / 'db'}", "--repo", repo, "--queries", "0"))
    other = database(tmp_path / "other")
    other.create_table("docs", pa.table({"id": ["c"], "vector": fixed(vectors(1, 4)), "m": ["x"]}))
    target = f"lancedb:{tmp_path / 'other'}"
    one_line_error(cli("restore", "latest", "--repo", repo, "--to", target, "--mode", "merge"), 2, "other columns")
    one_line_error(cli("restore", "latest", "--repo", repo, "--to", target), 2, "already holds 1 rows")
    ok(cli("restore", "latest", "--repo", repo, "--to", f"lancedb:{tmp_path / 'db'}", "--mode", "merge"))


def test_a_missing_library_names_the_extra(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "lancedb", None)
    with pytest.raises(ConnectorNotInstalledError, match=r"pip install 'aibackup\[lancedb\]'"):
        LanceDBConnector(parse_location(f"lancedb:{tmp_path}"))


def test_a_sparse_vector_or_a_dotted_name_is_refused_before_writing(tmp_path: Path) -> None:
    from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig

    with LanceDBConnector(parse_location(f"lancedb:{tmp_path}", target=True), create=True) as conn:
        sparse = VectorsConfig(dense=(DenseVectorSpec("", 4, "l2"),), sparse=(SparseVectorSpec("bm25"),))
        with pytest.raises(UnsupportedFeatureError, match="sparse vectors"):
            conn.plan_import(DatasetDescription("c", sparse, 1), "c", mode="create", allow_lossy=False)
        plan = conn.plan_import(DatasetDescription("c", sparse, 1), "c", mode="create", allow_lossy=True)
        assert plan.dropped and plan.target.config.sparse == ()
        dotted = VectorsConfig(dense=(DenseVectorSpec("a.b", 4, "l2"),))
        with pytest.raises(UnsupportedFeatureError, match=r"'a\.b'"):
            conn.plan_import(DatasetDescription("c", dotted, 1), "c", mode="create", allow_lossy=True)
        with pytest.raises(UnsupportedFeatureError, match="cannot name a table"):
            conn.plan_import(DatasetDescription("c", sparse, 1), "a b", mode="create", allow_lossy=True)


def test_a_qdrant_vector_named_vector_is_refused_before_writing(tmp_path: Path, cli: Cli) -> None:
    """A Qdrant collection whose one named vector is called 'vector': LanceDB's 'vector' column is a table's
    unnamed vector, so written there it read back as another vector and failed the content check after the
    table was made. Refused now, before anything is written."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    params = {"vector": models.VectorParams(size=2, distance=models.Distance.COSINE)}
    client.create_collection("named", vectors_config=params)
    client.upsert("named", [models.PointStruct(id=1, vector={"vector": [1.0, 0.5]}, payload={"a": 1})])
    client.close()
    ok(cli("backup", f"qdrant:{tmp_path / 'q'}", "--repo", str(tmp_path / "repo")))
    target = tmp_path / "lance"
    refused = cli("restore", "latest", "--repo", str(tmp_path / "repo"), "--to", f"lancedb:{target}")
    one_line_error(refused, 2, "'vector'", "unnamed vector")
    assert not target.exists() or "named" not in lancedb.connect(str(target)).table_names()


# --- across backends ----------------------------------------------------------------------------------------


def test_lancedb_into_qdrant_and_chroma_proven(tmp_path: Path, cli: Cli) -> None:
    n = 150
    data = pa.table(
        {
            "id": [f"doc-{i}" for i in range(n)],
            "vector": fixed(vectors(n, 12, seed=4)),
            "text": [f"text {i} ✓" for i in range(n)],
            "uri": [f"s3://b/{i}" if i % 3 == 0 else None for i in range(n)],
            "lang": ["en" if i % 2 else "de" for i in range(n)],
            "score": pa.array([i / 7 for i in range(n)], pa.float32()),
            "when": pa.array([dt.datetime(2025, 5, 1, 12, 0, i % 60) for i in range(n)], pa.timestamp("ms")),
        }
    )
    database(tmp_path / "db").create_table("docs", data)
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"lancedb:{tmp_path / 'db'}", "--repo", repo))
    for target in (f"qdrant:{tmp_path / 'qdrant'}", f"chroma:{tmp_path / 'chroma'}"):
        result = ok(cli("restore", "latest", "--repo", repo, "--to", target, "--json")).json()
        assert result["ok"] and result["datasets"][0]["rows"] == n, result
    got = chroma_contents(tmp_path / "chroma", "docs")["doc-3"]
    # A float32 travels as its shortest decimal: what Chroma keeps as it is, and reads back as the same float32.
    assert got[1:] == ("text 3 ✓", {"lang": "en", "score": 0.42857143, "when": "2025-05-01 12:00:03.000"}, "s3://b/3")


def test_chroma_into_lancedb_and_back_proven(tmp_path: Path, cli: Cli) -> None:
    records_in = seed_chroma(tmp_path / "chroma", "docs", n=120, dim=8, space="cosine")
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", repo))
    result = ok(cli("restore", "latest", "--repo", repo, "--to", f"lancedb:{tmp_path / 'lance'}", "--json")).json()
    assert result["ok"], result
    table = database(tmp_path / "lance").open_table("docs")
    assert table.schema.names == ["id", "vector", "document", "uri", "metadata"]
    assert table.schema.field("vector").metadata == {b"aibackup:distance": b"cosine"}
    first = table.search().where("id = 'doc-00002'").to_arrow().to_pylist()[0]
    assert json.loads(first["metadata"]) == records_in["metadatas"][2]
    assert first["metadata"] == metadata_json(records_in["metadatas"][2])

    # ... and from that table into Chroma again: the same records and distance as the first store.
    again = str(tmp_path / "repo-again")
    ok(cli("backup", f"lancedb:{tmp_path / 'lance'}", "--repo", again))
    config = manifest_json(again)["datasets"][0]["config"]
    assert config["dense"][0]["distance"] == "cosine" and config["metadata"] == {"team": "search ✓"}
    ok(cli("restore", "latest", "--repo", again, "--to", f"chroma:{tmp_path / 'chroma-again'}"))
    first_store, second = (
        chroma_contents(tmp_path / "chroma", "docs"),
        chroma_contents(tmp_path / "chroma-again", "docs"),
    )
    assert {k: v[1:] for k, v in second.items()} == {k: v[1:] for k, v in first_store.items()}
    for rid, (vector, *_) in second.items():  # Chroma's cosine space moves a component by an ulp (its tolerance)
        np.testing.assert_allclose(
            np.frombuffer(vector, np.float32), np.frombuffer(first_store[rid][0], np.float32), rtol=1e-6
        )


def test_a_source_path_that_is_missing_or_a_file(tmp_path: Path) -> None:
    from aibackup.errors import DatasetNotFoundError, UsageError

    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        open_connector(f"lancedb:{tmp_path / 'nowhere'}")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        open_connector(f"lancedb:{tmp_path / 'file'}")
    with pytest.raises(SourceDataError, match="id column 'id' holds"):
        database(tmp_path / "db").create_table("bin", pa.table({"id": [b"x"], "vector": fixed(vectors(1, 4))}))
        open_connector(f"lancedb:{tmp_path / 'db'}").describe()


# --- the vectorised metadata paths give what the record-by-record ones give ------------------------------------


def test_metadata_json_column_by_column_is_the_record_by_record_text(monkeypatch: Any) -> None:
    from aibackup.connectors.lancedb.jsontext import metadata_texts
    from aibackup.connectors.lancedb.tables import columns_of, describe_config, plan_table
    from aibackup.connectors.lancedb.values import to_json_ready

    table = rich_table(300)
    n = table.num_rows
    edge = {
        "float": pa.array([float("nan"), float("inf"), -0.0, 1e16, 1e-5, None] * (n // 6)),
        "text": pa.array(['q"\\\n\x01é🚀', None, "\u2028", "", "x", "y"] * (n // 6)),
        "none": pa.nulls(n),
    }
    keys = [c for c in table.column_names if c not in ("id", "vector", "title", "text")]
    ready = [to_json_ready(table.column(k).combine_chunks()) for k in keys] + [to_json_ready(a) for a in edge.values()]
    keys += list(edge)
    ids = pa.array([str(i) for i in range(n)])
    fast = metadata_texts(keys, ready)
    assert fast.equals(records.metadata_rows(keys, ready, None, "t", "", ids))
    assert fast[1].as_py() is not None and fast.null_count == 0

    # Import: Arrow's JSON reader, and (when it refuses) json.loads per record, build the same columns.
    columns = columns_of(table.schema, "id", "t")
    described = DatasetDescription("t", describe_config(table.schema, columns, [], 1, "test"), n)
    batch = table.combine_chunks().to_batches()[0]
    canonical = records.to_canonical(batch, columns, described.schema, "t", 0)
    plan = plan_table(described, "t", "id", allow_lossy=False)
    arrow_path = records.TableBatches(plan, "t").convert(canonical)
    assert arrow_path.equals(batch)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise pa.ArrowInvalid("refused")

    monkeypatch.setattr(records.pa_json, "read_json", refuse)
    assert records.TableBatches(plan, "t").convert(canonical).equals(arrow_path)
