"""The proof: every kind of difference between bundle and target is found, named, and fails the restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aibackup.bundle_reader import BundleReader
from aibackup.checks import prove
from aibackup.connectors.registry import open_connector
from aibackup.proof import Check
from aibackup.repository import Repository
from aibackup.restore import description_of
from tests.helpers import ok, seed_chroma


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


@pytest.fixture
def restored(tmp_path: Path, cli: Any) -> tuple[Repository, Any]:
    """A 60-record Chroma collection backed up and restored into Qdrant local mode (all checks passing)."""
    seed_chroma(tmp_path / "chroma", "docs", n=60, dim=8, space="l2")
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    assert ok(cli("restore", "--to", f"qdrant:{tmp_path / 'q'}", "--json")).json()["ok"]
    repo = Repository.open("aibackup-repo")
    return repo, repo.resolve("latest").datasets[0]


def check_target(tmp_path: Path, repo: Repository, dataset: Any, tamper: Any) -> dict[str, Check]:
    """Tamper with the restored Qdrant collection through Qdrant's own client, then run the checks."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "q"))
    tamper(client)
    client.close()
    with open_connector(f"qdrant:{tmp_path / 'q'}", target=True) as connector:
        plan = connector.plan_import(description_of(dataset), "docs", mode="overwrite", allow_lossy=False)
        return by_name(prove(connector, plan, BundleReader(repo), dataset))


def point_of(client: Any, original_id: str) -> Any:
    from qdrant_client import models

    points, _ = client.scroll(
        "docs",
        scroll_filter=models.Filter(
            must=[models.FieldCondition(key="_aibackup_id", match=models.MatchValue(value=original_id))]
        ),
        with_payload=True,
        with_vectors=True,
    )
    return points[0]


def test_untouched_target_passes(tmp_path: Path, restored: Any) -> None:
    checks = check_target(tmp_path, *restored, tamper=lambda client: None)
    assert all(c.ok for c in checks.values()), checks


def test_changed_metadata_fails_content_naming_the_record(tmp_path: Path, restored: Any) -> None:
    def tamper(client: Any) -> None:
        point = point_of(client, "doc-00011")
        client.set_payload("docs", payload={"n": 12}, points=[point.id])

    checks = check_target(tmp_path, *restored, tamper)
    assert checks["content"].ok is False and "'doc-00011'" in checks["content"].detail
    assert checks["ids"].ok and checks["rows"].ok


def test_changed_vector_fails_content(tmp_path: Path, restored: Any) -> None:
    from qdrant_client import models

    def tamper(client: Any) -> None:
        point = point_of(client, "doc-00005")
        vector = list(point.vector)
        vector[0] += 1e-3
        client.upsert("docs", points=[models.PointStruct(id=point.id, vector=vector, payload=point.payload)])

    checks = check_target(tmp_path, *restored, tamper)
    assert checks["content"].ok is False and "'doc-00005'" in checks["content"].detail


def test_missing_and_unexpected_records_fail_rows_and_ids(tmp_path: Path, restored: Any) -> None:
    from qdrant_client import models

    def tamper(client: Any) -> None:
        point = point_of(client, "doc-00042")
        client.delete("docs", points_selector=models.PointIdsList(points=[point.id]))
        client.upsert("docs", points=[models.PointStruct(id=10**6, vector=[0.0] * 8, payload={})])
        client.upsert("docs", points=[models.PointStruct(id=10**6 + 1, vector=[0.0] * 8, payload={})])

    checks = check_target(tmp_path, *restored, tamper)
    assert checks["rows"].ok is False and "61" in checks["rows"].detail
    assert checks["ids"].ok is False
    assert "1 missing (e.g. 'doc-00042')" in checks["ids"].detail
    assert "2 unexpected" in checks["ids"].detail


def test_a_failed_check_fails_the_restore_with_exit_1(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load that silently loses a record (simulated in our own code, against the real backend)."""
    from aibackup.connectors.qdrant.connector import QdrantConnector

    seed_chroma(tmp_path / "chroma", "docs", n=40, dim=8)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    real_import = QdrantConnector.import_

    def lossy_import(self: QdrantConnector, plan: Any, batches: Any) -> int:
        return real_import(self, plan, (b.slice(1) if n == 0 else b for n, b in enumerate(batches)))

    monkeypatch.setattr(QdrantConnector, "import_", lossy_import)
    result = cli("restore", "--to", f"qdrant:{tmp_path / 'q'}", "--json")
    assert result.code == 1
    report = result.json()
    assert report["ok"] is False
    failed = {c["name"]: c["detail"] for c in report["datasets"][0]["checks"] if not c["ok"]}
    assert set(failed) >= {"rows", "ids"} and "'doc-00000'" in failed["ids"]
    text = cli("restore", "--to", f"qdrant:{tmp_path / 'q2'}")
    assert text.code == 1 and "RESTORE CHECKS FAILED" in text.out and "FAILED" in text.out
