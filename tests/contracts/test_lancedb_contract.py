"""LanceDB (embedded) passes the vector contract of tests/contracts/vector.py."""

from __future__ import annotations

from pathlib import Path

from tests.contracts.bundles import qdrant_bundle_with_sparse
from tests.contracts.vector import VectorContract
from tests.helpers import Cli, one_line_error


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
