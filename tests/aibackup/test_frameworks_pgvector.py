"""LangChain on PostgreSQL (issue 14): a langchain-postgres ``PGVector`` store restored into Chroma and Qdrant,
and a LangChain store of Chroma restored into PostgreSQL, each opened by the framework's own class on the
target. langchain-postgres keeps every collection in two tables (``langchain_pg_collection`` and
``langchain_pg_embedding``); pgvector without an index scans exactly, as Chroma's HNSW over a few hundred
records and Qdrant local mode do, so both sides must return the very same documents.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from llama_index.core import Document as LlamaDocument
from llama_index.core import Settings, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.vector_stores.chroma import ChromaVectorStore
from qdrant_client import QdrantClient
from qdrant_client.http import models

from tests.aibackup.test_frameworks import (
    EMBED,
    QUERIES,
    lc_chroma,
    lc_docs,
    lc_qdrant,
    lc_view,
    li_chroma,
    li_docs,
    li_qdrant,
    li_view,
    restored,
)
from tests.conftest import Postgres
from tests.helpers import Cli, chroma_client, manifest_json, ok

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
    # Documents and flat metadata on Chroma are LangChain's shape but not only LangChain's: the default keeps
    # a table of the collection's own name; --layout langchain writes langchain-postgres's tables.
    raw = restored(cli, repo, postgres.uri(database(postgres, tmp_path, "raw")))
    assert raw["target"] == "kb-lc" and any("--layout langchain writes" in n for n in raw["notes"])
    result = restored(cli, repo, postgres.uri(db), "--layout", "langchain")
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
    col = chroma_client(tmp_path / "chroma").create_collection(
        "notes", metadata={"hnsw:space": "cosine"}, embedding_function=None
    )
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((60, 8)).astype(np.float32) * rng.uniform(0.1, 10, (60, 1)).astype(np.float32)
    col.add(ids=[f"n{i}" for i in range(60)], embeddings=vectors, documents=[f"note {i}" for i in range(60)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    result = restored(cli, repo, postgres.uri(database(postgres, tmp_path, "cos")), "--layout", "langchain")
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
    result = ok(
        cli(
            "restore",
            "latest",
            "--repo",
            str(repo),
            "--to",
            postgres.uri(db),
            "--mode",
            "merge",
            "--layout",
            "langchain",
            "--json",
        )
    )
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


# --- LlamaIndex on PostgreSQL ------------------------------------------------------------------------------


class UnitEmbedding(BaseEmbedding):
    """Deterministic unit vectors: PGVectorStore ranks by cosine and a PostgreSQL table without an index
    records no distance (l2 on other backends): on unit vectors both give one order."""

    def _get_text_embedding(self, text: str) -> list[float]:
        vector = np.array(EMBED.embed_query(text))
        return list(vector / np.linalg.norm(vector))

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


@pytest.fixture
def unit_embeddings() -> None:
    Settings.embed_model = UnitEmbedding()
    Settings.llm = None  # type: ignore[assignment]


def li_pg(server: Postgres, db: str, table: str) -> Any:
    from llama_index.vector_stores.postgres import PGVectorStore

    return PGVectorStore.from_params(
        host=server.host,
        port=str(server.port),
        user=server.user,
        password="",
        database=db,
        table_name=table,
        embed_dim=16,
    )


@pytest.mark.usefixtures("unit_embeddings")
def test_llamaindex_chroma_to_postgres_and_back(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    collection = chroma_client(tmp_path / "chroma").create_collection("kb-li", metadata={"hnsw:space": "cosine"})
    store = ChromaVectorStore(chroma_collection=collection)
    index = VectorStoreIndex.from_documents(li_docs(), storage_context=StorageContext.from_defaults(vector_store=store))
    expected = {q: li_view(index, q) for q in QUERIES}
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))

    db = database(postgres, tmp_path, "li")
    result = restored(cli, repo, postgres.uri(db))
    assert result["target"] == "data_kb-li" and result["layout"] == "llamaindex (chroma -> pgvector)"
    # Merged again: the rows are replaced by node id (PGVectorStore's table holds no unique key on them).
    merged = restored(cli, repo, postgres.uri(db), "--mode", "merge")
    assert merged["rows"] == 60 and all(c["ok"] for c in merged["checks"])
    with postgres.connect(db) as conn:
        assert conn.execute('SELECT count(*), count(DISTINCT node_id) FROM "data_kb-li"').fetchone() == (60, 60)
    assert [c["ok"] for c in result["checks"] if c["name"] == "layout"] == [True]
    assert any("table_name='kb-li', embed_dim=16" in n for n in result["notes"])
    app = li_pg(postgres, db, "kb-li")
    try:
        restored_index = VectorStoreIndex.from_vector_store(app)
        assert {q: li_view(restored_index, q) for q in QUERIES} == expected
        (node_id, text, metadata, ref_doc_id) = expected[QUERIES[0]][0]
        (node,) = app.get_nodes(node_ids=[node_id])
        assert (node.node_id, node.get_content(), node.metadata, node.ref_doc_id) == (
            node_id,
            text,
            metadata,
            ref_doc_id,
        )
        # The application goes on: its ref_doc_ids delete, what it adds is stored like the restored rows.
        app.delete(ref_doc_id="doc-8")
        restored_index.insert(LlamaDocument(text="added later", doc_id="doc-60"))
        with postgres.connect(db) as conn:
            rows = dict(conn.execute("SELECT metadata_->>'doc_id', text FROM \"data_kb-li\"").fetchall())
            assert "doc-8" not in rows and rows["doc-60"] == "added later" and rows["doc-9"] == "text 9 ✓"
            meta = dict(conn.execute("SELECT metadata_->>'doc_id', metadata_::text FROM \"data_kb-li\"").fetchall())
        added, old = json.loads(meta["doc-60"]), json.loads(meta["doc-9"])
        assert set(added) | {"source", "n"} == set(old)  # _node_content, _node_type, the ids, as restored
        assert json.loads(added["_node_content"])["text"] == json.loads(old["_node_content"])["text"] == ""
    finally:
        asyncio.run(app.close())  # PGVectorStore.close is a coroutine

    # And back out: the table is recorded as LlamaIndex's, its rows known by their node ids.
    ok(cli("backup", postgres.uri(db), "--repo", str(repo)))
    layout = manifest_json(repo)["datasets"][0]["config"]["layout"]
    assert (layout["framework"], layout["backend"], layout["evidence"]["collection"]) == (
        "llamaindex",
        "pgvector",
        "kb-li",
    )
    result = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert result["target"] == "kb-li" and result["rows"] == 60
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        back = VectorStoreIndex.from_vector_store(li_qdrant(client, "kb-li"))
        found = li_view(back, QUERIES[1])
        assert [n[0] for n in found] == [n[0] for n in li_view(restored_index_of(postgres, db), QUERIES[1])]
    finally:
        client.close()


def restored_index_of(server: Postgres, db: str) -> Any:
    return VectorStoreIndex.from_vector_store(li_pg(server, db, "kb-li"))


@pytest.mark.usefixtures("unit_embeddings")
def test_llamaindex_postgres_to_chroma(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    db = database(postgres, tmp_path, "lisrc")
    store = li_pg(postgres, db, "notes")
    try:
        index = VectorStoreIndex.from_documents(
            li_docs(), storage_context=StorageContext.from_defaults(vector_store=store)
        )
        expected = {q: li_view(index, q) for q in QUERIES}
    finally:
        asyncio.run(store.close())
    repo = tmp_path / "repo"
    ok(cli("backup", postgres.uri(db), "--repo", str(repo)))
    (dataset,) = manifest_json(repo)["datasets"]
    assert dataset["config"]["native"]["id_column"] == "node_id"
    result = restored(cli, repo, f"chroma:{tmp_path / 'chroma'}")
    assert result["target"] == "notes" and result["layout"] == "llamaindex (pgvector -> chroma)"
    target = VectorStoreIndex.from_vector_store(li_chroma(tmp_path / "chroma", "notes"))
    assert {q: li_view(target, q) for q in QUERIES} == expected


def test_two_langchain_collections_share_the_postgres_tables_one_at_a_time(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    """langchain-postgres keeps every collection in one table: a restore of two at once is refused before
    anything is written (the proof of each needs the table to itself); one, then the other merged, works
    and the application finds both."""
    for name in ("kb-one", "kb-two"):
        store = lc_chroma(tmp_path / "chroma", name)
        store.add_documents(lc_docs(30), ids=[f"{name}-{i}" for i in range(30)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    db = database(postgres, tmp_path, "two")
    target = postgres.uri(db)
    refused = cli("restore", "latest", "--repo", str(repo), "--to", target, "--layout", "langchain")
    assert refused.code == 2 and "would both be restored into 'langchain_pg_embedding'" in refused.err
    with postgres.connect(db) as conn:
        assert conn.execute("SELECT to_regclass('langchain_pg_embedding')").fetchone() == (None,)
    restored(cli, repo, target, "--layout", "langchain", "--collection", "kb-one")
    merged = restored(cli, repo, target, "--layout", "langchain", "--collection", "kb-two", "--mode", "merge")
    assert merged["rows"] == 30
    for name in ("kb-one", "kb-two"):
        app = pg_store(postgres, db, name, "EUCLIDEAN")
        try:
            assert {d.id for d in app.similarity_search("text 3 ✓", k=40)} == {f"{name}-{i}" for i in range(30)}
        finally:
            app._engine.dispose()


def test_a_langchain_chain_restored_partitioned_into_postgres(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    """A nightly bundle (a full backup and a link) of a LangChain store on Chroma, restored by two Dask
    workers into langchain-postgres's tables: the same tables and the same answers as a one-process restore,
    proven on the workers."""
    source = lc_chroma(tmp_path / "chroma", "kb-lc")
    source.add_documents(lc_docs(200), ids=[f"doc-{i:03d}" for i in range(200)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    source.add_documents([Document(page_content="later ✓", metadata={"source": "s9", "n": 999})], ids=["doc-999"])
    source.delete(ids=["doc-005"])
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    (dataset,) = manifest_json(repo)["datasets"]
    assert len(dataset["chain"]) == 2 and len(dataset["parts"]) == 2
    expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}

    one, many = database(postgres, tmp_path, "chain_one"), database(postgres, tmp_path, "chain_many")
    restored(cli, repo, postgres.uri(one), "--layout", "langchain")
    result = restored(cli, repo, postgres.uri(many), "--layout", "langchain", "--workers", "2")
    assert result["target"] == "langchain_pg_embedding"
    assert any(n.startswith("partitioned: 2 parts") for n in result["notes"]), result["notes"]
    assert any(n.startswith("proof: the target read back by") for n in result["notes"]), result["notes"]
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["layout"]["ok"] and checks["search"]["ok"] and checks["content"]["ok"]
    dumps = []
    for db in (one, many):
        with postgres.connect(db) as conn:
            dumps.append(
                conn.execute(
                    "SELECT id, document, cmetadata::text, embedding::text FROM langchain_pg_embedding ORDER BY id"
                ).fetchall()
            )
    assert dumps[0] == dumps[1] and len(dumps[0]) == 200
    # merge, partitioned: langchain-postgres's table has no unique id, so the ids the bundle holds are
    # deleted before its rows go in, in the publishing transaction; a record of the application's stays.
    with postgres.connect(many) as conn:
        conn.execute("UPDATE langchain_pg_embedding SET document = 'edited' WHERE id = 'doc-007'")
        conn.execute(
            "INSERT INTO langchain_pg_embedding (id, collection_id, embedding, document, cmetadata) "
            "SELECT 'app-1', collection_id, embedding, 'the app''s own', '{}' FROM langchain_pg_embedding "
            "WHERE id = 'doc-008'"
        )
    merged = restored(cli, repo, postgres.uri(many), "--layout", "langchain", "--workers", "2", "--mode", "merge")
    assert any(n.startswith("partitioned:") for n in merged["notes"]), merged["notes"]
    with postgres.connect(many) as conn:
        rows = conn.execute(
            "SELECT id, document, cmetadata::text, embedding::text FROM langchain_pg_embedding ORDER BY id"
        ).fetchall()
    assert [r for r in rows if r[0] != "app-1"] == dumps[0] and len(rows) == 201
    with postgres.connect(many) as conn:
        conn.execute("DELETE FROM langchain_pg_embedding WHERE id = 'app-1'")  # (its vector is doc-008's)
    app = pg_store(postgres, many, "kb-lc", "EUCLIDEAN")
    try:
        assert {q: lc_view(app.similarity_search(q, k=4)) for q in QUERIES} == expected
    finally:
        app._engine.dispose()


def test_whole_floats_in_langchain_metadata_keep_the_layout(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    """A jsonb value such as 0.0 or 2.0 comes back from float64 exactly as written (Python writes whole floats
    with one ``.0``): it made the restore read cmetadata back as text (content and layout checks failed on a
    correct restore) and a backup of langchain-postgres's tables miss their layout (restored raw)."""
    source = lc_chroma(tmp_path / "chroma", "kb-float")
    docs = [Document(page_content=f"text {i}", metadata={"n": i, "score": i / 2, "zero": 0.0}) for i in range(20)]
    source.add_documents(docs, ids=[f"doc-{i:03d}" for i in range(20)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    db = database(postgres, tmp_path, "float")
    result = restored(cli, repo, postgres.uri(db), "--layout", "langchain")
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    app = pg_store(postgres, db, "kb-float", "EUCLIDEAN")
    try:
        assert lc_view(app.get_by_ids(["doc-004"])) == [("text 4", {"n": 4, "score": 2.0, "zero": 0.0})]
    finally:
        app._engine.dispose()
    ok(cli("backup", postgres.uri(db), "--repo", str(repo)))
    layout = manifest_json(repo)["datasets"][0]["config"].get("layout")
    assert layout is not None and (layout["framework"], layout["backend"]) == ("langchain", "pgvector")


def test_a_merge_whose_ids_another_langchain_collection_holds_is_refused(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    """langchain-postgres's ids are unique across every collection of its table: merging a copy beside the
    original (``--collection kb=kb-copy``) upserted the original's rows into the copy, and the application
    found the original empty; the restore said all checks passed. Refused now, nothing written."""
    source = lc_chroma(tmp_path / "chroma", "kb-own")
    source.add_documents(lc_docs(20), ids=[f"doc-{i:03d}" for i in range(20)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    db = database(postgres, tmp_path, "moved")
    restored(cli, repo, postgres.uri(db), "--layout", "langchain")
    source.add_documents(lc_docs(5), ids=[f"new-{i}" for i in range(5)])
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))  # a link: two parts to spread
    # Create mode: the table holds another collection; a new name lands in it too, so the advice is merge.
    created = cli(
        "restore", "latest", "--repo", str(repo), "--to", postgres.uri(db), "--layout", "langchain",
        "--collection", "kb-own=kb-copy",
    )  # fmt: skip
    assert created.code == 2 and "--mode merge to add the collection beside them" in created.err, created.err
    assert "=NEW" not in created.err
    args = ("--layout", "langchain", "--collection", "kb-own=kb-copy", "--mode", "merge")
    refused = cli("restore", "latest", "--repo", str(repo), "--to", postgres.uri(db), *args)
    assert refused.code == 2, (refused.code, refused.out, refused.err)
    assert "collection 'kb-own' holds records of the same ids" in refused.err and "nothing was written" in refused.err
    # The same from a partitioned restore, whose workers load the rows the driver then merges.
    spread = cli("restore", "latest", "--repo", str(repo), "--to", postgres.uri(db), *args, "--workers", "2", "--json")
    assert spread.code == 2 and "holds records of the same ids" in spread.err, (spread.code, spread.out, spread.err)
    app = pg_store(postgres, db, "kb-own", "EUCLIDEAN")
    try:
        assert len(app.get_by_ids([f"doc-{i:03d}" for i in range(20)])) == 20  # still the original's
    finally:
        app._engine.dispose()
    with postgres.connect(db) as conn:
        assert conn.execute("SELECT name FROM langchain_pg_collection").fetchall() == [("kb-own",)]
