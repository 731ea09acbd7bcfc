"""A restore the application can use (issue 14): stores written by LangChain and LlamaIndex, backed up,
restored into the other backend, and opened there with the same framework's own class.

The frameworks are test dependencies only (the ``frameworks`` extra, part of ``dev``); embeddings are
deterministic fakes, no model is downloaded. Chroma's HNSW over 300 records answers exactly, as Qdrant
local mode does, so both sides must return the very same documents.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core import Document as LlamaDocument
from llama_index.core import Settings, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from qdrant_client import QdrantClient
from qdrant_client.http import models

from aibackup.connectors.qdrant.points import AIBACKUP_NAMESPACE
from tests.helpers import Cli, chroma_client, manifest_json, ok

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")  # LlamaIndex on local mode

DIM = 16
QUERIES = ["text 7", "notes on s1", "document 42", "n 123", "the last one"]
LANGCHAIN_ADDED = {"_id", "_collection_name"}  # what langchain-qdrant adds to a Document's metadata


class HashEmbedding(BaseEmbedding):
    """LlamaIndex's side of LangChain's DeterministicFakeEmbedding: a vector seeded by the text's hash."""

    def _get_text_embedding(self, text: str) -> list[float]:
        return DeterministicFakeEmbedding(size=DIM).embed_query(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


@pytest.fixture(autouse=True)
def llama_settings() -> None:
    Settings.embed_model = HashEmbedding()
    Settings.llm = None  # type: ignore[assignment]


EMBED = DeterministicFakeEmbedding(size=DIM)


def lc_docs(n: int = 300) -> list[Document]:
    return [Document(page_content=f"text {i} ✓", metadata={"source": f"s{i % 3}", "n": i}) for i in range(n)]


def lc_view(docs: list[Document]) -> list[tuple[str, dict[str, Any]]]:
    return [(d.page_content, {k: v for k, v in d.metadata.items() if k not in LANGCHAIN_ADDED}) for d in docs]


def lc_chroma(path: Path, name: str) -> Any:
    from langchain_chroma import Chroma

    return Chroma(collection_name=name, embedding_function=EMBED, client=chroma_client(path))


def lc_qdrant(client: QdrantClient, name: str, distance: models.Distance) -> Any:
    from langchain_qdrant import QdrantVectorStore

    return QdrantVectorStore(client=client, collection_name=name, embedding=EMBED, distance=distance)


def restored(cli: Cli, repo: Path, target: str, *args: str) -> dict[str, Any]:
    result = ok(cli("restore", "latest", "--repo", str(repo), "--to", target, "--json", *args)).json()
    (dataset,) = result["datasets"]
    assert dataset["ok"], dataset["checks"]
    return dataset


def layout_of(cli: Cli, repo: Path) -> dict[str, Any]:
    bundle = manifest_json(repo)
    (dataset,) = bundle["datasets"]
    layout: dict[str, Any] = dataset["config"]["layout"]
    return layout


# --- LangChain ---------------------------------------------------------------------------------------------


def test_langchain_chroma_to_qdrant_and_back(tmp_path: Path, cli: Cli) -> None:
    source = lc_chroma(tmp_path / "chroma", "kb-lc")
    ids = [f"doc-{i:03d}" for i in range(300)]
    source.add_documents(lc_docs(), ids=ids)
    expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    assert layout_of(cli, repo) == {
        "framework": "langchain",
        "backend": "chroma",
        "certain": False,  # a document and flat metadata: other applications write that too
        "evidence": {"records": 300, "text": "the document", "metadata": "flat", "uris": 0, "ids": "document ids"},
    }
    shown = ok(cli("show", "latest", "--repo", str(repo))).out
    assert (
        "layout: langchain on chroma (ids document ids, metadata flat, records 300, text the document, uris 0)" in shown
    )

    dataset = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert dataset["layout"] == "langchain (chroma -> qdrant)"
    (check,) = [c for c in dataset["checks"] if c["name"] == "layout"]
    assert check["detail"] == "langchain reads every record on qdrant as on chroma: the same text and metadata"
    assert any("distance=models.Distance.EUCLID" in n for n in dataset["notes"])  # Chroma's default is l2
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        target = lc_qdrant(client, "kb-lc", models.Distance.EUCLID)
        assert {q: lc_view(target.similarity_search(q, k=4)) for q in QUERIES} == expected
        # The application's ids are not Qdrant point ids: they address the records as uuid5 (the runbook).
        point = str(uuid.uuid5(AIBACKUP_NAMESPACE, "doc-007"))
        assert lc_view(target.get_by_ids([point])) == [("text 7 ✓", {"source": "s1", "n": 7})]
    finally:
        client.close()
    # The application fails over to a restored copy and goes on writing: a document it adds lands in the
    # same layout, and the application's own ids (uuid5 for Qdrant) delete the restored ones.
    restored(cli, repo, f"qdrant:{tmp_path / 'app'}")
    client = QdrantClient(path=str(tmp_path / "app"))
    try:
        app = lc_qdrant(client, "kb-lc", models.Distance.EUCLID)
        added = str(uuid.uuid4())
        app.add_documents([Document(page_content="added later", metadata={"n": 300})], ids=[added])
        app.delete(ids=[point])
        payloads = {str(p.id): p.payload for p in client.scroll("kb-lc", limit=400, with_payload=True)[0]}
        assert set(payloads[added]) == {"page_content", "metadata"} and point not in payloads
        assert set(payloads[str(uuid.uuid5(AIBACKUP_NAMESPACE, "doc-008"))]) == {
            "page_content",
            "metadata",
            "_aibackup_id",
        }
    finally:
        client.close()

    # And back: the Qdrant collection is recorded as LangChain's layout there, and restores into Chroma
    # under the application's own ids again.
    ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--repo", str(repo)))
    assert layout_of(cli, repo)["framework"] == "langchain" and layout_of(cli, repo)["backend"] == "qdrant"
    dataset = restored(cli, repo, f"chroma:{tmp_path / 'back'}")
    assert dataset["layout"] == "langchain (qdrant -> chroma)"
    back = lc_chroma(tmp_path / "back", "kb-lc")
    assert lc_view(back.get_by_ids(["doc-007"])) == [("text 7 ✓", {"source": "s1", "n": 7})]
    assert {q: lc_view(back.similarity_search(q, k=4)) for q in QUERIES} == expected


def test_langchain_qdrant_to_chroma(tmp_path: Path, cli: Cli) -> None:
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"doc-{i}")) for i in range(300)]
    try:
        from langchain_qdrant import QdrantVectorStore

        client.create_collection("kb-q", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        source = QdrantVectorStore(client=client, collection_name="kb-q", embedding=EMBED)
        source.add_documents(lc_docs(), ids=ids)
        expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}
    finally:
        client.close()
    repo = tmp_path / "repo"
    ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--repo", str(repo)))
    assert layout_of(cli, repo)["evidence"] == {
        "records": 300,
        "content_key": "page_content",
        "metadata_key": "metadata",
        "ids": "point ids",
    }
    dataset = restored(cli, repo, f"chroma:{tmp_path / 'chroma'}")
    assert [c["ok"] for c in dataset["checks"] if c["name"] == "layout"] == [True]
    target = lc_chroma(tmp_path / "chroma", "kb-q")
    assert {q: lc_view(target.similarity_search(q, k=4)) for q in QUERIES} == expected
    assert lc_view(target.get_by_ids([ids[5]])) == [("text 5 ✓", {"source": "s2", "n": 5})]
    target.add_documents([Document(page_content="added later", metadata={"n": 300})], ids=["new-1"])
    got = chroma_client(tmp_path / "chroma").get_collection("kb-q").get(ids=["new-1", ids[5]])
    stored = {i: (d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)}
    assert stored == {"new-1": ("added later", {"n": 300}), ids[5]: ("text 5 ✓", {"source": "s2", "n": 5})}


def test_langchain_qdrant_with_its_own_payload_keys(tmp_path: Path, cli: Cli) -> None:
    """langchain-qdrant configured with other payload keys (content_payload_key, metadata_payload_key): the
    backup records those keys, a restore into Chroma reads the text and metadata from them, and a restore
    into Qdrant keeps them (the runbook names them)."""
    from langchain_qdrant import QdrantVectorStore

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"doc-{i}")) for i in range(120)]
    keys = {"content_payload_key": "body", "metadata_payload_key": "attrs"}
    try:
        client.create_collection("kb-k", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        source = QdrantVectorStore(client=client, collection_name="kb-k", embedding=EMBED, **keys)
        source.add_documents(lc_docs(120), ids=ids)
        expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}
    finally:
        client.close()
    repo = tmp_path / "repo"
    ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--repo", str(repo)))
    assert layout_of(cli, repo)["evidence"] == {
        "records": 120,
        "content_key": "body",
        "metadata_key": "attrs",
        "ids": "point ids",
    }
    dataset = restored(cli, repo, f"chroma:{tmp_path / 'chroma'}")
    assert dataset["layout"] == "langchain (qdrant -> chroma, payload keys 'body'/'attrs')"
    assert [c["ok"] for c in dataset["checks"] if c["name"] == "layout"] == [True]
    target = lc_chroma(tmp_path / "chroma", "kb-k")
    assert {q: lc_view(target.similarity_search(q, k=4)) for q in QUERIES} == expected
    assert lc_view(target.get_by_ids([ids[5]])) == [("text 5 ✓", {"source": "s2", "n": 5})]

    dataset = restored(cli, repo, f"qdrant:{tmp_path / 'copy'}")
    assert any("content_payload_key='body', metadata_payload_key='attrs'" in n for n in dataset["notes"])
    client = QdrantClient(path=str(tmp_path / "copy"))
    try:
        copy = QdrantVectorStore(client=client, collection_name="kb-k", embedding=EMBED, **keys)
        assert {q: lc_view(copy.similarity_search(q, k=4)) for q in QUERIES} == expected
    finally:
        client.close()


def test_layout_raw_keeps_the_mapping_of_before(tmp_path: Path, cli: Cli) -> None:
    source = lc_chroma(tmp_path / "chroma", "kb-lc")
    source.add_documents(lc_docs(20), ids=[f"doc-{i}" for i in range(20)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    dataset = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}", "--layout", "raw")
    assert dataset["layout"] == "raw" and not [c for c in dataset["checks"] if c["name"] == "layout"]
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        (point,) = client.retrieve("kb-lc", [str(uuid.uuid5(AIBACKUP_NAMESPACE, "doc-3"))], with_payload=True)
        assert point.payload == {"_aibackup_id": "doc-3", "_aibackup_document": "text 3 ✓", "source": "s0", "n": 3}
    finally:
        client.close()


def test_an_explicit_layout_refuses_records_outside_it_before_writing(tmp_path: Path, cli: Cli) -> None:
    collection = chroma_client(tmp_path / "chroma").create_collection("plain", embedding_function=None)
    collection.add(ids=["a", "b"], embeddings=[[0.1] * DIM, [0.2] * DIM], documents=["has text", None])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    assert "layout" not in manifest_json(repo)["datasets"][0]["config"]
    refused = cli(
        "restore", "latest", "--repo", str(repo), "--to", f"qdrant:{tmp_path / 'qdrant'}", "--layout", "langchain"
    )
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1
    assert "record 'b' is not in langchain's layout on chroma (no document" in refused.err
    assert not (tmp_path / "qdrant" / "collection" / "plain").exists()


def test_the_layout_check_catches_a_mapping_that_loses_the_text(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aibackup.connectors import layouts
    from aibackup.connectors.layouts import writing

    source = lc_chroma(tmp_path / "chroma", "kb-lc")
    source.add_documents(lc_docs(10), ids=[f"doc-{i}" for i in range(10)])
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    convert = layouts.convert

    def lossy(*args: Any, **kwargs: Any) -> Any:  # a bug that writes the text under another key
        document, metadata = convert(*args, **kwargs)
        if metadata and "page_content" in metadata:
            metadata = {"text": metadata.pop("page_content"), **metadata}
        return document, metadata

    monkeypatch.setattr(writing, "convert", lossy)  # where transform looks it up
    result = cli("restore", "latest", "--repo", str(repo), "--to", f"qdrant:{tmp_path / 'qdrant'}", "--json")
    assert result.code == 1
    checks = {c["name"]: c for c in result.json()["datasets"][0]["checks"]}
    assert checks["content"]["ok"] and not checks["layout"]["ok"]
    assert checks["layout"]["detail"].startswith("as langchain reads them: 10 of 10 records differ")


# --- LlamaIndex --------------------------------------------------------------------------------------------


def li_docs(n: int = 60) -> list[LlamaDocument]:
    return [
        LlamaDocument(text=f"text {i} ✓", metadata={"source": f"s{i % 3}", "n": i}, doc_id=f"doc-{i}") for i in range(n)
    ]


def li_view(index: Any, query: str) -> list[tuple[str, str, dict[str, Any], str | None]]:
    found = index.as_retriever(similarity_top_k=4).retrieve(query)
    return [(n.node.node_id, n.node.get_content(), n.node.metadata, n.node.ref_doc_id) for n in found]


def li_chroma(path: Path, name: str) -> Any:
    from llama_index.vector_stores.chroma import ChromaVectorStore

    return ChromaVectorStore(chroma_collection=chroma_client(path).get_or_create_collection(name))


def li_qdrant(client: QdrantClient, name: str) -> Any:
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    return QdrantVectorStore(client=client, collection_name=name)


def test_llamaindex_chroma_to_qdrant_and_back(tmp_path: Path, cli: Cli) -> None:
    store = li_chroma(tmp_path / "chroma", "kb-li")
    index = VectorStoreIndex.from_documents(li_docs(), storage_context=StorageContext.from_defaults(vector_store=store))
    expected = {q: li_view(index, q) for q in QUERIES}
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    assert layout_of(cli, repo)["framework"] == "llamaindex"
    assert layout_of(cli, repo)["evidence"]["keys"] == [
        "_node_content",
        "_node_type",
        "doc_id",
        "document_id",
        "ref_doc_id",
    ]

    dataset = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert dataset["layout"] == "llamaindex (chroma -> qdrant)"
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        restored_index = VectorStoreIndex.from_vector_store(li_qdrant(client, "kb-li"))
        assert {q: li_view(restored_index, q) for q in QUERIES} == expected
    finally:
        client.close()
    # On a copy the application goes on with: its ref_doc_ids still delete, what it adds has the same layout.
    restored(cli, repo, f"qdrant:{tmp_path / 'app'}")
    client = QdrantClient(path=str(tmp_path / "app"))
    try:
        app = li_qdrant(client, "kb-li")
        before = client.count("kb-li").count
        app.delete(ref_doc_id="doc-7")
        assert client.count("kb-li").count == before - 1
        VectorStoreIndex.from_vector_store(app).insert(LlamaDocument(text="added later", doc_id="doc-60"))
        points = client.scroll("kb-li", limit=100, with_payload=True)[0]
        added = [p.payload for p in points if p.payload and p.payload.get("doc_id") == "doc-60"]
        old = [p.payload for p in points if p.payload and p.payload.get("doc_id") == "doc-8"]
        assert set(added[0]) | {"source", "n"} == set(old[0])  # _node_content with its text, the flat keys
        assert json.loads(added[0]["_node_content"])["text"] == "added later"
    finally:
        client.close()

    ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--repo", str(repo)))
    assert layout_of(cli, repo)["backend"] == "qdrant"
    dataset = restored(cli, repo, f"chroma:{tmp_path / 'back'}")
    assert dataset["layout"] == "llamaindex (qdrant -> chroma)"
    back = VectorStoreIndex.from_vector_store(li_chroma(tmp_path / "back", "kb-li"))
    assert {q: li_view(back, q) for q in QUERIES} == expected
    stored = chroma_client(tmp_path / "back").get_collection("kb-li").get(where={"doc_id": "doc-8"})
    assert stored["documents"] == ["text 8 ✓"]
    assert json.loads(stored["metadatas"][0]["_node_content"])["text"] == ""  # as LlamaIndex keeps it on Chroma


def test_llamaindex_qdrant_to_chroma(tmp_path: Path, cli: Cli) -> None:
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        index = VectorStoreIndex.from_documents(
            li_docs(), storage_context=StorageContext.from_defaults(vector_store=li_qdrant(client, "kb-li"))
        )
        expected = {q: li_view(index, q) for q in QUERIES}
    finally:
        client.close()
    repo = tmp_path / "repo"
    ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--repo", str(repo)))
    assert layout_of(cli, repo)["framework"] == "llamaindex"
    dataset = restored(cli, repo, f"chroma:{tmp_path / 'chroma'}")
    assert [c["detail"] for c in dataset["checks"] if c["name"] == "layout"] == [
        "llamaindex reads every record on chroma as on qdrant: the same text and node"
    ]
    store = li_chroma(tmp_path / "chroma", "kb-li")
    target = VectorStoreIndex.from_vector_store(store)
    assert {q: li_view(target, q) for q in QUERIES} == expected
    # The application's node ids address the same nodes, its ref_doc_ids delete them, and what it adds
    # on the restored store is kept in the layout of the restored records.
    (node_id, text, metadata, ref_doc_id) = expected[QUERIES[0]][0]
    (node,) = store.get_nodes(node_ids=[node_id])
    assert (node.node_id, node.get_content(), node.metadata, node.ref_doc_id) == (node_id, text, metadata, ref_doc_id)
    collection = chroma_client(tmp_path / "chroma").get_collection("kb-li")
    before = collection.count()
    store.delete(ref_doc_id="doc-8")
    assert collection.count() == before - 1 and not collection.get(where={"doc_id": "doc-8"})["ids"]
    target.insert(LlamaDocument(text="added later", doc_id="doc-60"))
    added = collection.get(where={"doc_id": "doc-60"})
    old = collection.get(where={"doc_id": "doc-9"})
    assert added["documents"] == ["added later"] and old["documents"] == ["text 9 ✓"]
    assert set(added["metadatas"][0]) | {"source", "n"} == set(old["metadatas"][0])
    assert (
        json.loads(added["metadatas"][0]["_node_content"])["text"]
        == json.loads(old["metadatas"][0]["_node_content"])["text"]
        == ""
    )


def test_a_named_langchain_qdrant_vector_is_named_in_the_note(tmp_path: Path, cli: Cli) -> None:
    """langchain-qdrant reads the unnamed vector unless given `vector_name`: the restore's note left it out,
    and the store opened as the note said refused the collection."""
    from langchain_qdrant import QdrantVectorStore

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        config = {"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)}
        client.create_collection("kb-named", vectors_config=config)
        source = QdrantVectorStore(client=client, collection_name="kb-named", embedding=EMBED, vector_name="dense")
        source.add_documents(lc_docs(50), ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, f"d{i}")) for i in range(50)])
        expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}
    finally:
        client.close()
    repo = tmp_path / "repo"
    ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--repo", str(repo)))
    dataset = restored(cli, repo, f"qdrant:{tmp_path / 'back'}")
    (note,) = [n for n in dataset["notes"] if "open it with langchain_qdrant.QdrantVectorStore" in n]
    assert "vector_name='dense'" in note, note
    client = QdrantClient(path=str(tmp_path / "back"))
    try:
        app = QdrantVectorStore(
            client=client,
            collection_name="kb-named",
            embedding=EMBED,
            distance=models.Distance.COSINE,
            vector_name="dense",
        )
        assert {q: lc_view(app.similarity_search(q, k=4)) for q in QUERIES} == expected
    finally:
        client.close()
