"""LanceDB (embedded) passes the vector contract of tests/contracts/vector.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from tests.contracts.vector import VectorContract, collection
from tests.helpers import Cli, ok, one_line_error


def qdrant_bundle_with_sparse(tmp_path: Path, cli: Cli) -> str:
    """A bundle of a Qdrant collection with a sparse vector, which LanceDB has no type for."""
    path, name = tmp_path / "qdrant-source", collection(tmp_path, "sparse")
    client = QdrantClient(path=str(path))
    try:
        client.create_collection(
            name,
            vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE),
            sparse_vectors_config={"bm25": models.SparseVectorParams()},
        )
        vectors = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
        points = [
            models.PointStruct(
                id=i, vector={"": vectors[i].tolist(), "bm25": models.SparseVector(indices=[i], values=[1.0])}
            )
            for i in range(3)
        ]
        client.upsert(name, points)
    finally:
        client.close()
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"qdrant:{path}", "--repo", repo, "--queries", "0"))
    return repo


class TestLanceDB(VectorContract):
    supports = frozenset({"named", "multivector", "nested", "bigint"})

    def uri(self, tmp_path: Path) -> str:
        return f"lancedb:{tmp_path / 'lancedb'}"

    def refused(self, tmp_path: Path, cli: Cli) -> tuple[str, str, bool]:
        return qdrant_bundle_with_sparse(tmp_path, cli), "sparse vectors", True

    def test_an_unreachable_server_is_exit_3(self, cli: Cli, tmp_path: Path) -> None:  # type: ignore[override]
        """LanceDB is embedded (no server to miss): a path that is a file, or that does not exist, is exit 2."""
        a_file = tmp_path / "not-a-database"
        a_file.write_text("x")
        one_line_error(cli("backup", f"lancedb:{a_file}", "--repo", str(tmp_path / "repo")), 2, str(a_file))
        one_line_error(cli("backup", f"lancedb:{tmp_path / 'missing'}", "--repo", str(tmp_path / "repo")), 2, "missing")
