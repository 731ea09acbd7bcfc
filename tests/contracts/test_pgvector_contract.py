"""pgvector passes the vector contract (tests/contracts/vector.py) against a real PostgreSQL 18 with
pgvector 0.8 (the `postgres` session fixture): one database per test."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pytest

from tests.conftest import Postgres, free_port
from tests.contracts.bundles import qdrant_bundle_with_multivector
from tests.contracts.vector import VectorContract
from tests.helpers import Cli

pytestmark = pytest.mark.postgres


class TestPgvector(VectorContract):
    # Not "sparse": sparsevec keeps no explicit zero, which the contract's sparse vectors hold
    # (tests/connectors/test_pgvector.py tests sparsevec).
    supports = frozenset({"named", "nested", "bigint"})
    unreachable = f"pgvector://postgres@127.0.0.1:{free_port()}/postgres"
    server: ClassVar[Postgres]

    @pytest.fixture(autouse=True)
    def _server(self, postgres: Postgres) -> None:
        type(self).server = postgres

    def uri(self, tmp_path: Path) -> str:
        """A database of the test's own (made once per test folder: source and target share it)."""
        name = "t" + re.sub(r"[^a-z0-9]", "", str(tmp_path).lower())[-40:]
        if name not in _made:
            self.server.database(name)
            _made.add(name)
        return self.server.uri(name)

    def refused(self, tmp_path: Path, cli: Cli) -> tuple[str, str, bool]:
        return qdrant_bundle_with_multivector(tmp_path, cli), "multivectors", True


_made: set[str] = set()
