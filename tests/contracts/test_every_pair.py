"""Every vector backend restores into every other, proven: Chroma, Qdrant, pgvector, LanceDB and Milvus.

One collection per backend, written through its own connector (the same 40 records with documents and
metadata of every JSON scalar kind, cosine), backed up once; then each bundle is restored into each other
backend under the name ``from_<source>`` and every check of the restore must pass (records, ids, the search
proof against the source's baseline). The mappings each pair applies are in docs/stores.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aibackup.backup import run_backup
from aibackup.connectors.base import DatasetDescription, VectorConnector
from aibackup.connectors.registry import open_connector
from tests.conftest import Postgres
from tests.contracts.vector import rich_batch, rich_config
from tests.helpers import Cli

BACKENDS = ("chroma", "qdrant", "pgvector", "lancedb", "milvus")
NAME = "pairs"

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pairs")
    return {
        "chroma": f"chroma:{root / 'chroma'}",
        "qdrant": f"qdrant:{root / 'qdrant'}",
        "pgvector": postgres.uri(postgres.database("every_pair")),
        "lancedb": f"lancedb:{root / 'lancedb'}",
        "milvus": f"milvus:{root / 'milvus.db'}",
    }


@pytest.fixture(scope="module")
def bundles(stores: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A repository per backend holding one bundle of its `pairs` collection."""
    root = tmp_path_factory.mktemp("pair-repos")
    cfg = rich_config(frozenset(), "cosine")
    batch = rich_batch(cfg, frozenset(), [f"rec-{i}" for i in range(40)])
    repos = {}
    for kind, uri in stores.items():
        with open_connector(uri, target=True) as conn:
            assert isinstance(conn, VectorConnector)
            plan = conn.plan_import(
                DatasetDescription(NAME, cfg, batch.num_rows), NAME, mode="create", allow_lossy=False
            )
            conn.import_(plan, [batch])
        repos[kind] = str(root / kind)
        run_backup(repos[kind], uri, [NAME])
    yield repos


@pytest.mark.parametrize(("source", "target"), [(s, t) for s in BACKENDS for t in BACKENDS if s != t])
def test_every_backend_restores_into_every_other(
    source: str, target: str, stores: dict[str, str], bundles: dict[str, str], cli: Cli
) -> None:
    run = cli(
        "restore", "latest", "--repo", bundles[source], "--to", stores[target],
        "--collection", f"{NAME}=from_{source}", "--json",
    )  # fmt: skip
    assert run.code == 0, (run.out, run.err)
    result = run.json()
    failed = [(c["name"], c["detail"]) for d in result["datasets"] for c in d["checks"] if not c["ok"]]
    assert result["ok"] and not failed, failed
    assert result["datasets"][0]["rows"] == 40
