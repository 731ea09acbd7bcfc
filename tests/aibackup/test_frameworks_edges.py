"""Edges of the application layouts (DESIGN.md "Application layouts"): LlamaIndex's ``Node`` class, which
keeps its text in ``text_resource``; a merge into a langchain-qdrant collection with payload keys of its
own; and what ``--allow-lossy`` reports as lost after a layout's mapping.

Embeddings are LangChain's deterministic fake, no model is downloaded; the stores hold a handful of records.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from qdrant_client import QdrantClient
from qdrant_client.http import models

from aibackup.connectors import layouts
from tests.helpers import Cli, chroma_client, ok

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")  # LlamaIndex on local mode

DIM = 8
EMBED = DeterministicFakeEmbedding(size=DIM)


def restored(cli: Cli, repo: Path, target: str, *args: str) -> dict[str, Any]:
    result = ok(cli("restore", "latest", "--repo", str(repo), "--to", target, "--json", *args)).json()
    (dataset,) = result["datasets"]
    assert dataset["ok"], dataset["checks"]
    return dataset


# --- LlamaIndex's Node: the text in text_resource ------------------------------------------------------------


def media_nodes(n: int = 5) -> list[Any]:
    from llama_index.core.schema import MediaResource, Node

    nodes = [
        Node(
            id_=str(uuid.uuid5(uuid.NAMESPACE_URL, f"N{i}")),
            text_resource=MediaResource(text=f"media text {i}"),
            metadata={"n": i},
        )
        for i in range(n)
    ]
    for node in nodes:
        node.embedding = EMBED.embed_query(node.get_content())
    return nodes


def li_texts(store: Any) -> dict[str, str]:
    from llama_index.core.vector_stores.types import VectorStoreQuery

    found = store.query(VectorStoreQuery(query_embedding=EMBED.embed_query("media text 1"), similarity_top_k=10))
    return {node.node_id: node.get_content() for node in found.nodes}


def test_llamaindex_node_class_keeps_its_text_from_chroma_to_qdrant_and_back(tmp_path: Path, cli: Cli) -> None:
    from llama_index.vector_stores.chroma import ChromaVectorStore
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    source = ChromaVectorStore(chroma_collection=chroma_client(tmp_path / "chroma").create_collection("nod"))
    source.add(media_nodes())
    expected = li_texts(source)
    assert sorted(expected.values()) == [f"media text {i}" for i in range(5)]
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))

    dataset = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert dataset["layout"] == "llamaindex (chroma -> qdrant)"
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        assert li_texts(QdrantVectorStore(client=client, collection_name="nod")) == expected
        (point,) = client.retrieve("nod", [next(iter(expected))], with_payload=True)
        node = json.loads(point.payload["_node_content"])  # type: ignore[index]
        assert "text" not in node and node["text_resource"]["text"] == expected[str(point.id)]
    finally:
        client.close()

    repo2 = tmp_path / "repo2"
    ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--repo", str(repo2)))
    restored(cli, repo2, f"chroma:{tmp_path / 'back'}")
    back = ChromaVectorStore(chroma_collection=chroma_client(tmp_path / "back").get_collection("nod"))
    assert li_texts(back) == expected


def test_the_llamaindex_view_reads_a_node_where_its_class_keeps_the_text() -> None:
    """The layout check reads what LlamaIndex reads: a ``Node`` given a ``text`` key (which its class
    ignores) holds no text on Qdrant, so a mapping that wrote it there fails the check."""
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    (node,) = media_nodes(1)
    on_chroma = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
    _, on_qdrant = layouts.convert("llamaindex", "chroma", "qdrant", "media text 0", on_chroma)
    assert on_qdrant == node_to_metadata_dict(node, remove_text=False, flat_metadata=False)
    assert layouts.view("llamaindex", "qdrant", "x", None, on_qdrant).text == "media text 0"

    wrong = json.loads(on_chroma["_node_content"])
    wrong["text"] = "media text 0"
    blind = {**on_chroma, "_node_content": json.dumps(wrong)}
    with pytest.raises(ValueError, match="holds no text"):
        layouts.view("llamaindex", "qdrant", "x", None, blind)


# --- a merge into a langchain-qdrant collection --------------------------------------------------------------


def lc_backup(tmp_path: Path, cli: Cli) -> Path:
    from langchain_chroma import Chroma

    source = Chroma(collection_name="kbk", embedding_function=EMBED, client=chroma_client(tmp_path / "chroma"))
    source.add_documents(
        [Document(page_content=f"src doc {i}", metadata={"n": i}) for i in range(6)], ids=[f"s-{i}" for i in range(6)]
    )
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    return repo


def test_merge_into_langchain_qdrant_writes_the_collections_own_payload_keys(tmp_path: Path, cli: Cli) -> None:
    from langchain_qdrant import QdrantVectorStore

    repo = lc_backup(tmp_path, cli)
    keys = {"content_payload_key": "body", "metadata_payload_key": "attrs"}
    distance = models.Distance.EUCLID
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        client.create_collection("kbk", vectors_config=models.VectorParams(size=DIM, distance=distance))
        app = QdrantVectorStore(client=client, collection_name="kbk", embedding=EMBED, distance=distance, **keys)
        app.add_documents(
            [Document(page_content=f"app doc {i}", metadata={"app": i}) for i in range(3)],
            ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, f"app-{i}")) for i in range(3)],
        )
    finally:
        client.close()

    dataset = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}", "--mode", "merge")
    assert any("content_payload_key='body', metadata_payload_key='attrs'" in n for n in dataset["notes"])
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        app = QdrantVectorStore(client=client, collection_name="kbk", embedding=EMBED, distance=distance, **keys)
        found = app.similarity_search("src doc 3", k=9)
        read = {d.page_content: {k: v for k, v in d.metadata.items() if not k.startswith("_")} for d in found}
        assert read == {
            **{f"src doc {i}": {"n": i} for i in range(6)},
            **{f"app doc {i}": {"app": i} for i in range(3)},
        }
    finally:
        client.close()


def test_merge_into_a_qdrant_collection_outside_langchains_layout_is_refused(tmp_path: Path, cli: Cli) -> None:
    repo = lc_backup(tmp_path, cli)
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        client.create_collection("kbk", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID))
        client.upsert("kbk", [models.PointStruct(id=1, vector=[0.1] * DIM, payload={"a": 1, "b": "x", "c": None})])
    finally:
        client.close()

    result = cli("restore", "latest", "--repo", str(repo), "--to", f"qdrant:{tmp_path / 'qdrant'}", "--mode", "merge")
    assert result.code == 2, (result.out, result.err)
    assert "not LangChain's layout" in result.err and len(result.err.strip().splitlines()) == 1
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        assert client.count("kbk").count == 1  # nothing written
    finally:
        client.close()


# --- --allow-lossy after a layout's mapping ------------------------------------------------------------------


def test_allow_lossy_tallies_only_what_the_target_loses_not_the_layouts_mapping(tmp_path: Path, cli: Cli) -> None:
    from langchain_qdrant import QdrantVectorStore

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"d{i}")) for i in range(6)]
    try:
        client.create_collection(
            "kb-lossy", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        store = QdrantVectorStore(client=client, collection_name="kb-lossy", embedding=EMBED)
        docs = [Document(page_content=f"doc {i}", metadata={"n": i}) for i in range(6)]
        docs[2] = Document(page_content="doc 2", metadata={"n": 2, "nested": {"a": 1}})  # Chroma cannot hold it
        store.add_documents(docs, ids=ids)
    finally:
        client.close()
    repo = tmp_path / "repo"
    ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--repo", str(repo)))

    dataset = restored(cli, repo, f"chroma:{tmp_path / 'chroma'}", "--allow-lossy")
    assert dataset["layout"] == "langchain (qdrant -> chroma)"
    assert dataset["lost"] == [f"metadata of 1 records rewritten (e.g. {ids[2]!r})"]
