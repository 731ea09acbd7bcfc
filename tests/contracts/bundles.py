"""Bundles holding what some backend cannot hold, for the contract's ``refused`` cases: written from a real
Qdrant local store (the one backend that holds sparse vectors and multivectors) and backed up by the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models

from tests.contracts.vector import collection
from tests.helpers import Cli, ok


def qdrant_bundle(tmp_path: Path, cli: Cli, what: str, points: list[Any], **collection_config: Any) -> str:
    """A repository holding one bundle of a Qdrant collection made with `collection_config` and `points`."""
    path, name = tmp_path / "qdrant-source", collection(tmp_path, what)
    client = QdrantClient(path=str(path))
    try:
        client.create_collection(name, **collection_config)
        client.upsert(name, points)
    finally:
        client.close()
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"qdrant:{path}", "--repo", repo, "--queries", "0"))
    return repo


def qdrant_bundle_with_sparse(tmp_path: Path, cli: Cli) -> str:
    """An l2 collection of 3 points with a sparse vector `bm25` (Chroma and LanceDB have no such type)."""
    points = [
        models.PointStruct(
            id=i, vector={"": [float(i), 1.0, 0.5, 0.25], "bm25": models.SparseVector(indices=[i], values=[1.0])}
        )
        for i in range(3)
    ]
    return qdrant_bundle(
        tmp_path,
        cli,
        "sparse",
        points,
        vectors_config=models.VectorParams(size=4, distance=models.Distance.EUCLID),
        sparse_vectors_config={"bm25": models.SparseVectorParams()},
    )


def qdrant_bundle_with_multivector(tmp_path: Path, cli: Cli) -> str:
    """A collection of 3 points with a named vector `text` and a multivector `colbert` (pgvector and
    Milvus have no multivector type)."""
    multivector = models.VectorParams(
        size=2,
        distance=models.Distance.DOT,
        multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
    )
    points = [
        models.PointStruct(
            id=i,
            vector={"text": [float(i), 1.0, 0.5, 0.25], "colbert": [[1.0, float(i)], [0.5, 0.5]]},
            payload={"n": i},
        )
        for i in range(3)
    ]
    config = {"text": models.VectorParams(size=4, distance=models.Distance.COSINE), "colbert": multivector}
    return qdrant_bundle(tmp_path, cli, "multi", points, vectors_config=config)
