"""LangChain on PostgreSQL (issue 14): a langchain-postgres ``PGVector`` store restored into Chroma and Qdrant,
and a LangChain store of Chroma restored into PostgreSQL, each opened by the framework's own class on the
target. langchain-postgres keeps every collection in two tables (``langchain_pg_collection`` and
``langchain_pg_embedding``); pgvector without an index scans exactly, as Chroma's HNSW over a few hundred
records and Qdrant local mode do, so both sides must return the very same documents.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from qdrant_client import QdrantClient
from qdrant_client.http import models

from tests.aibackup.test_frameworks import EMBED, QUERIES, lc_chroma, lc_docs, lc_qdrant, lc_view, restored
from tests.conftest import Postgres
from tests.helpers import Cli, manifest_json, ok

pytestmark = pytest.mark.postgres


def pg_store(server: Postgres, db: str, collection: str, distance: str = "COSINE") -> Any:
    from langchain_postgres import PGVector
    from langchain_postgres.vectorstores import DistanceStrategy

    url = f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{db}"
    return PGVector(
        embeddings=EMBED,
        collection_name=collection,
        connection=url,
        use_jsonb=True,
        distance_strategy=getattr(DistanceStrategy, distance),
    )


def database(server: Postgres, tmp_path: Path, what: str) -> str:
    return server.database(f"lc_{what}_{abs(hash(str(tmp_path))) % 10**8}")


def test_langchain_postgres_to_qdrant_and_chroma(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    db = database(postgres, tmp_path, "src")
    source = pg_store(postgres, db, "kb-pg", "EUCLIDEAN")
    ids = [f"doc-{i:03d}" for i in range(200)]
    try:
        source.add_documents(lc_docs(200), ids=ids)
        expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}
    finally:
        source._engine.dispose()
    repo = tmp_path / "repo"
    ok(cli("backup", postgres.uri(db), "--repo", str(repo)))
    (dataset,) = manifest_json(repo)["datasets"]
    layout = dataset["config"]["layout"]
    assert (layout["framework"], layout["backend"]) == ("langchain", "pgvector")
    evidence = layout["evidence"]
    assert (evidence["table"], evidence["collection"], evidence["records"]) == ("langchain_pg_embedding", "kb-pg", 200)

    # Into Qdrant: a collection named as LangChain's, in langchain-qdrant's payload.
    result = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert result["target"] == "kb-pg" and result["layout"] == "langchain (pgvector -> qdrant)"
    assert [c["ok"] for c in result["checks"] if c["name"] == "layout"] == [True]
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        target = lc_qdrant(client, "kb-pg", models.Distance.EUCLID)
        assert {q: lc_view(target.similarity_search(q, k=4)) for q in QUERIES} == expected
    finally:
        client.close()

    # Into Chroma, under the application's own ids.
    result = restored(cli, repo, f"chroma:{tmp_path / 'chroma'}")
    assert result["target"] == "kb-pg"
    back = lc_chroma(tmp_path / "chroma", "kb-pg")
    assert {q: lc_view(back.similarity_search(q, k=4)) for q in QUERIES} == expected
    assert lc_view(back.get_by_ids(["doc-007"])) == [("text 7 ✓", {"source": "s1", "n": 7})]


def test_langchain_chroma_to_postgres(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    source = lc_chroma(tmp_path / "chroma", "kb-lc")
    ids = [f"doc-{i:03d}" for i in range(200)]
    source.add_documents(lc_docs(200), ids=ids)
    expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))

    db = database(postgres, tmp_path, "dst")
    result = restored(cli, repo, postgres.uri(db))
    assert result["target"] == "langchain_pg_embedding" and result["layout"] == "langchain (chroma -> pgvector)"
    assert [c["ok"] for c in result["checks"] if c["name"] == "layout"] == [True]
    assert any("collection_name='kb-lc'" in n and "DistanceStrategy.EUCLIDEAN" in n for n in result["notes"])
    app = pg_store(postgres, db, "kb-lc", "EUCLIDEAN")
    try:
        assert {q: lc_view(app.similarity_search(q, k=4)) for q in QUERIES} == expected
        assert lc_view(app.get_by_ids(["doc-007"])) == [("text 7 ✓", {"source": "s1", "n": 7})]
        # The application goes on writing: its documents land beside the restored ones, its ids delete them.
        added = str(uuid.uuid4())
        app.add_documents([Document(page_content="added later", metadata={"n": 200})], ids=[added])
        app.delete(ids=["doc-008"])
        assert lc_view(app.get_by_ids([added, "doc-008"])) == [("added later", {"n": 200})]
    finally:
        app._engine.dispose()
    with postgres.connect(db) as conn:
        collections = conn.execute("SELECT name FROM langchain_pg_collection").fetchall()
        counts = conn.execute(
            "SELECT c.name, count(*) FROM langchain_pg_embedding e JOIN langchain_pg_collection c "
            "ON c.uuid = e.collection_id GROUP BY c.name"
        ).fetchall()
        (fk,) = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f'").fetchone()
    assert collections == [("kb-lc",)] and counts == [("kb-lc", 200)]
    assert "REFERENCES langchain_pg_collection(uuid) ON DELETE CASCADE" in fk

    # And back again: the restored tables are recorded in LangChain's layout on pgvector.
    ok(cli("backup", postgres.uri(db), "--repo", str(repo)))
    layout = manifest_json(repo)["datasets"][0]["config"]["layout"]
    assert (layout["backend"], layout["evidence"]["collection"]) == ("pgvector", "kb-lc")
    result = restored(cli, repo, f"chroma:{tmp_path / 'again'}")
    again = lc_chroma(tmp_path / "again", "kb-lc")
    got = again.get_by_ids(["doc-007"])
    assert lc_view(got) == [("text 7 ✓", {"source": "s1", "n": 7})]
    assert json.dumps(sorted(again.get()["ids"]))  # every id readable


def test_tables_of_several_langchain_collections_stay_raw(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    """Two LangChain collections share langchain_pg_embedding: no one collection to name on another backend,
    so the backup records no layout and the restore writes raw records (whole, proven)."""
    db = database(postgres, tmp_path, "two")
    for name in ("one", "two"):
        store = pg_store(postgres, db, name)
        try:
            store.add_documents(lc_docs(5), ids=[f"{name}-{i}" for i in range(5)])
        finally:
            store._engine.dispose()
    repo = tmp_path / "repo"
    ok(cli("backup", postgres.uri(db), "--repo", str(repo)))
    assert "layout" not in manifest_json(repo)["datasets"][0]["config"]
    result = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert result["layout"] == "raw" and result["rows"] == 10


def test_a_cosine_collection_is_searched_as_cosine_on_the_restored_tables(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    """langchain-postgres's embedding column has no index, so PostgreSQL cannot say its distance (the
    application picks it per query): the restore's search check uses the bundle's (cosine), not l2, and
    the runbook tells the application to do the same."""
    import numpy as np

    from tests.helpers import chroma_client

    col = chroma_client(tmp_path / "chroma").create_collection(
        "notes", metadata={"hnsw:space": "cosine"}, embedding_function=None
    )
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((60, 8)).astype(np.float32) * rng.uniform(0.1, 10, (60, 1)).astype(np.float32)
    col.add(ids=[f"n{i}" for i in range(60)], embeddings=vectors, documents=[f"note {i}" for i in range(60)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    result = restored(cli, repo, postgres.uri(database(postgres, tmp_path, "cos")))
    (search,) = [c for c in result["checks"] if c["name"] == "search"]
    assert search["ok"] and search["measures"]["recall"] >= search["measures"]["needs"]
    assert any("DistanceStrategy.COSINE" in n for n in result["notes"])


def test_merging_into_a_collection_langchain_made_with_another_uuid(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    """The application already has a collection of that name (langchain-postgres gave it a uuid4): its rows
    keep theirs, and the restored records join that collection, not a second one of the same name."""
    source = lc_chroma(tmp_path / "chroma", "kb-lc")
    source.add_documents(lc_docs(20), ids=[f"doc-{i:03d}" for i in range(20)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    db = database(postgres, tmp_path, "merge")
    app = pg_store(postgres, db, "kb-lc", "EUCLIDEAN")
    try:
        app.add_documents([Document(page_content="already there", metadata={"n": -1})], ids=["own-1"])
    finally:
        app._engine.dispose()
    result = ok(cli("restore", "latest", "--repo", str(repo), "--to", postgres.uri(db), "--mode", "merge", "--json"))
    assert result.json()["ok"]
    app = pg_store(postgres, db, "kb-lc", "EUCLIDEAN")
    try:
        assert lc_view(app.get_by_ids(["own-1", "doc-003"])) == [
            ("already there", {"n": -1}),
            ("text 3 ✓", {"source": "s0", "n": 3}),
        ]
    finally:
        app._engine.dispose()
    with postgres.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM langchain_pg_collection").fetchone() == (1,)
