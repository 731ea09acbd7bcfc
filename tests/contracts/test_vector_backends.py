"""Every vector backend passes the contract of tests/contracts/vector.py: embedded Chroma, Chroma's own
server (`chroma run`), Qdrant local mode. A backend added later adds one class here."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from tests.conftest import Server, free_port
from tests.contracts.bundles import qdrant_bundle_with_sparse
from tests.contracts.vector import VectorContract, collection
from tests.helpers import Cli, chroma_client, ok


class TestChromaEmbedded(VectorContract):
    unreachable = f"chroma+http://127.0.0.1:{free_port()}"

    def uri(self, tmp_path: Path) -> str:
        return f"chroma:{tmp_path / 'chroma'}"

    def refused(self, tmp_path: Path, cli: Cli) -> tuple[str, str, bool]:
        return qdrant_bundle_with_sparse(tmp_path, cli), "sparse vectors", True


@pytest.mark.chroma_server
class TestChromaServer(TestChromaEmbedded):
    server: ClassVar[Server]

    @pytest.fixture(autouse=True)
    def _server(self, chroma_server: Server) -> None:
        type(self).server = chroma_server

    def uri(self, tmp_path: Path) -> str:
        return f"chroma+http://{self.server.host}:{self.server.port}"


class TestQdrantLocal(VectorContract):
    supports = frozenset({"named", "sparse", "multivector", "nested", "bigint"})
    unreachable = f"qdrant+http://127.0.0.1:{free_port()}"

    def uri(self, tmp_path: Path) -> str:
        return f"qdrant:{tmp_path / 'qdrant'}"

    def refused(self, tmp_path: Path, cli: Cli) -> tuple[str, str, bool]:
        """A Chroma collection whose metadata uses a key Qdrant keeps for aibackup's own use (never mapped)."""
        path = tmp_path / "chroma-source"
        col = chroma_client(path).create_collection(collection(tmp_path, "reserved"), embedding_function=None)
        col.add(ids=["a"], embeddings=np.ones((1, 4), dtype=np.float32), metadatas=[{"_aibackup_uri": "mine"}])
        repo = str(tmp_path / "repo")
        ok(cli("backup", f"chroma:{path}", "--repo", repo, "--queries", "0"))
        return repo, "_aibackup_uri", False


def test_the_contract_runs_for_every_backend() -> None:
    """A guard: each class above, and those of the backends with files of their own (imported here, not at
    the top: pytest would collect them twice), is collected with every test of the contract."""
    from tests.contracts.test_lancedb_contract import TestLanceDB
    from tests.contracts.test_milvus_contract import TestMilvusLite
    from tests.contracts.test_pgvector_contract import TestPgvector

    contract = {name for name in dir(VectorContract) if name.startswith("test_")}
    assert len(contract) >= 9
    for cls in (TestChromaEmbedded, TestChromaServer, TestQdrantLocal, TestPgvector, TestLanceDB, TestMilvusLite):
        assert contract <= set(dir(cls))
