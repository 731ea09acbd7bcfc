"""The contract every vector connector passes (in the manner of fsspec's ``tests/abstract``): a test class
that each backend subclasses with its own fixtures, in tests/contracts/test_vector_backends.py.

A subclass gives: ``uri(tmp_path)`` (a store of its own for the test: an embedded path, or a server with
the test's own collection names), ``supports`` (the optional features it holds: ``named`` (several dense
vectors), ``sparse``, ``multivector``, ``nested`` (nested metadata), ``bigint`` (ints beyond int64)),
``unreachable`` (a server URI nobody answers), and ``refused(tmp_path)``: a bundle in a repository holding
something the backend cannot hold, with the feature's name and whether ``--allow-lossy`` maps it.

A new backend (pgvector, LanceDB, Milvus) takes part by adding one such subclass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest

from aibackup.connectors.base import DatasetDescription, VectorConnector
from aibackup.connectors.registry import open_connector
from aibackup.errors import DatasetNotFoundError, TargetNotEmptyError
from aibackup.manifests.digest import DatasetDigest
from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import arrow_schema, metadata_json
from tests.helpers import Cli, one_line_error
from tests.vectordata import WORDS, vectors

DIM = 6


def collection(tmp_path: Path, what: str) -> str:
    """A collection name no other test uses (server fixtures share one server)."""
    return f"c-{what}-{abs(hash(str(tmp_path))) % 10**8:08d}"


def rich_config(supports: frozenset[str], distance: str = "l2") -> VectorsConfig:
    dense = [DenseVectorSpec("", DIM, distance)]
    if "named" in supports:
        dense = [DenseVectorSpec("text", DIM, distance), DenseVectorSpec("title", DIM + 2, distance)]
    if "multivector" in supports:
        dense.append(DenseVectorSpec("colbert", 3, "ip", multivector=True))
    sparse = (SparseVectorSpec("bm25"),) if "sparse" in supports else ()
    return VectorsConfig(dense=tuple(dense), sparse=sparse)


def rich_batch(cfg: VectorsConfig, supports: frozenset[str], ids: list[str]) -> pa.RecordBatch:
    """Every column kind `cfg` has, with unicode, nulls, nested metadata and big ints where supported."""
    n = len(ids)
    columns: dict[str, Any] = {"id": ids}
    for spec in cfg.dense:
        col = "vector" if spec.name == "" else f"vector:{spec.name}"
        if spec.multivector:
            columns[col] = [vectors(1 + i % 3, spec.size, 100 + i).tolist() for i in range(n)]
        else:
            v = vectors(n, spec.size, seed=len(spec.name))
            columns[col] = pa.FixedSizeListArray.from_arrays(pa.array(v.ravel(), pa.float32()), spec.size)
    for s in cfg.sparse:
        columns[f"sparse:{s.name}"] = [{"indices": [1, 7 + i], "values": [0.25, i / 8]} for i in range(n)]
    columns["document"] = [None if i % 4 == 3 else f"document {i}: {WORDS[i % len(WORDS)]} 🚀" for i in range(n)]
    columns["uri"] = [f"s3://bucket/{i}.txt" if i % 3 == 0 else None for i in range(n)]
    metadata: list[dict[str, Any] | None] = []
    for i in range(n):
        meta: dict[str, Any] = {"n": i, "score": i / 3, "ok": i % 2 == 0, "word": WORDS[(i + 3) % len(WORDS)]}
        if "nested" in supports:
            meta["nested"] = {"list": [1, "two", None], "deep": {"x": -0.5}}
        if "bigint" in supports:
            meta["big"] = 2**70 + i
        metadata.append(None if i == 1 else meta)
    columns["metadata"] = [metadata_json(m) for m in metadata]
    return pa.RecordBatch.from_pydict(columns, schema=arrow_schema(cfg))


def digest(batches: Any) -> tuple[str, int]:
    d = DatasetDigest()
    for b in batches:
        d.add_batch(b)
    return d.hexdigest, d.rows


class VectorContract:
    """The tests every vector connector passes (see the module docstring)."""

    supports: ClassVar[frozenset[str]] = frozenset()
    unreachable: ClassVar[str] = ""

    def uri(self, tmp_path: Path) -> str:
        raise NotImplementedError

    def refused(self, tmp_path: Path, cli: Cli) -> tuple[str, str, bool]:
        """(repository, feature named in the refusal, whether --allow-lossy maps it)."""
        raise NotImplementedError

    # --- helpers -----------------------------------------------------------------------------------------

    def open(self, tmp_path: Path, *, target: bool = True) -> VectorConnector:
        opened = open_connector(self.uri(tmp_path), target=target)
        assert isinstance(opened, VectorConnector)
        return opened

    def write(
        self, conn: VectorConnector, name: str, cfg: VectorsConfig, batch: pa.RecordBatch, mode: str = "create"
    ) -> Any:
        plan = conn.plan_import(DatasetDescription(name, cfg, batch.num_rows), name, mode=mode, allow_lossy=False)
        assert conn.validate_records(plan, [batch]) == batch.num_rows
        assert conn.import_(plan, [batch]) == batch.num_rows
        return plan

    def read(self, conn: VectorConnector, name: str) -> pa.Table:
        (described,) = conn.describe([name])
        return pa.Table.from_batches(list(conn.export(described)), schema=described.schema)

    # --- the contract ------------------------------------------------------------------------------------

    def test_describe_names_every_collection_and_refuses_a_missing_one(self, tmp_path: Path) -> None:
        cfg = rich_config(frozenset())
        a, b = collection(tmp_path, "a"), collection(tmp_path, "b")
        with self.open(tmp_path) as conn:
            for name in (a, b):
                self.write(conn, name, cfg, rich_batch(cfg, frozenset(), ["x", "y"]))
            names = [d.name for d in conn.describe()]
            assert a in names and b in names and names == sorted(names)
            (described,) = conn.describe([b])
            assert (described.name, described.rows, described.config.dense[0].size) == (b, 2, DIM)
            with pytest.raises(DatasetNotFoundError, match="ghost"):
                conn.describe([collection(tmp_path, "ghost")])

    def test_every_supported_column_kind_round_trips_exactly(self, tmp_path: Path) -> None:
        cfg = rich_config(self.supports)
        name = collection(tmp_path, "rich")
        batch = rich_batch(cfg, self.supports, [f"r{i}-é" for i in range(12)])
        with self.open(tmp_path) as conn:
            plan = self.write(conn, name, cfg, batch)
            back = self.read(conn, name)
        assert back.schema.equals(plan.target.schema)
        assert digest(back.to_batches()) == digest([plan.transform(batch)])
        assert plan.transform(batch).equals(batch)  # nothing mapped: the backend holds all of it

    def test_ids_come_back_as_they_went_in(self, tmp_path: Path) -> None:
        ids = ["42", "00123", "doc-1", "6f1c2b7a-0d3e-4c5b-9a8f-1e2d3c4b5a69", "6F1C2B7A-0D3E-4C5B-9A8F-1E2D3C4B5A69"]
        ids += ["ünï-cødé ✓", "18446744073709551616", "a" * 200]
        cfg = rich_config(frozenset())
        name = collection(tmp_path, "ids")
        with self.open(tmp_path) as conn:
            self.write(conn, name, cfg, rich_batch(cfg, frozenset(), ids))
            back = self.read(conn, name)
            assert sorted(back.column("id").to_pylist()) == sorted(ids)
            # Search answers in the same ids: each record's own vector finds it first.
            vectors_of = dict(zip(back.column("id").to_pylist(), back.column("vector").to_pylist(), strict=True))
            found = conn.search(name, "", np.asarray([vectors_of[i] for i in ids], dtype=np.float32), 1)
            assert [f[0] for f in found] == ids

    @pytest.mark.parametrize("distance", ["cosine", "l2", "ip"])
    def test_distances_map_both_ways(self, tmp_path: Path, distance: str) -> None:
        cfg = rich_config(frozenset(), distance)
        name = collection(tmp_path, distance)
        with self.open(tmp_path) as conn:
            self.write(conn, name, cfg, rich_batch(cfg, frozenset(), [f"d{i}" for i in range(5)]))
            (described,) = conn.describe([name])
            assert [d.distance for d in described.config.dense] == [distance]

    def test_an_empty_collection(self, tmp_path: Path) -> None:
        cfg = rich_config(frozenset())
        name = collection(tmp_path, "empty")
        with self.open(tmp_path) as conn:
            self.write(conn, name, cfg, rich_batch(cfg, frozenset(), []))
            (described,) = conn.describe([name])
            assert described.rows == 0 and list(conn.export(described)) == []

    def test_a_10_mb_document_round_trips(self, tmp_path: Path) -> None:
        cfg = rich_config(frozenset())
        batch = rich_batch(cfg, frozenset(), ["big", "small"])
        text = ("ünïcode ✓ " * 1_100_000)[:10_000_000]
        documents = batch.column("document").to_pylist()
        batch = batch.set_column(batch.schema.get_field_index("document"), "document", pa.array([text, documents[1]]))
        name = collection(tmp_path, "10mb")
        with self.open(tmp_path) as conn:
            self.write(conn, name, cfg, batch)
            back = self.read(conn, name)
        assert dict(zip(back.column("id").to_pylist(), back.column("document").to_pylist(), strict=True))["big"] == text

    def test_modes_create_overwrite_merge(self, tmp_path: Path) -> None:
        cfg = rich_config(frozenset())
        name = collection(tmp_path, "modes")
        first = rich_batch(cfg, frozenset(), ["a", "b", "c"])
        second = rich_batch(cfg, frozenset(), ["c", "d"])
        with self.open(tmp_path) as conn:
            self.write(conn, name, cfg, first)
            with pytest.raises(TargetNotEmptyError, match=name):
                conn.plan_import(DatasetDescription(name, cfg, 2), name, mode="create", allow_lossy=False)
            self.write(conn, name, cfg, second, mode="merge")
            assert sorted(self.read(conn, name).column("id").to_pylist()) == ["a", "b", "c", "d"]
            self.write(conn, name, cfg, second, mode="overwrite")
            assert sorted(self.read(conn, name).column("id").to_pylist()) == ["c", "d"]

    def test_what_it_cannot_hold_is_refused_in_one_line(self, tmp_path: Path, cli: Cli) -> None:
        repo, feature, lossy = self.refused(tmp_path, cli)
        target = self.uri(tmp_path / "target")
        line = one_line_error(cli("restore", "latest", "--repo", repo, "--to", target), 2, feature)
        bundle = json.loads(cli("list", "--repo", repo, "--json").out)[0]
        assert any(d["name"] in line for d in bundle["datasets"])  # the collection is named
        lossy_run = cli("restore", "latest", "--repo", repo, "--to", target, "--allow-lossy", "--json")
        if lossy:
            assert lossy_run.code == 0 and lossy_run.json()["ok"], lossy_run
            assert lossy_run.json()["datasets"][0]["dropped"]
        else:
            one_line_error(lossy_run, 2, feature)

    def test_an_unreachable_server_is_exit_3(self, cli: Cli) -> None:
        host = self.unreachable.split("//")[1].split(":")[0]
        one_line_error(cli("backup", self.unreachable), 3, host)
