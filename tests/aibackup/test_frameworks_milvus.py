"""LangChain on Milvus (issue 14): a LangChain store of Chroma restored into Milvus Lite and read there by
langchain-milvus's own class, and a collection langchain-milvus made (typed metadata fields) restored into
Qdrant in LangChain's layout. Milvus Lite's AUTOINDEX searches exactly, as Chroma's HNSW over a few hundred
records and Qdrant local mode do, so both sides return the very same documents.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models

from tests.aibackup.test_frameworks import EMBED, QUERIES, lc_chroma, lc_docs, lc_qdrant, lc_view, restored
from tests.helpers import Cli, manifest_json, ok

logging.getLogger("grpc._server").setLevel(logging.CRITICAL + 1)  # Milvus Lite's unimplemented calls
MILVUS_ADDED = "pk"  # what langchain-milvus adds to a Document's metadata: its primary key


@contextmanager
def lc_milvus(path: Path, name: str, **options: Any) -> Iterator[Any]:
    """langchain-milvus on a Milvus Lite store; the server it started is stopped afterwards (Milvus Lite
    serves a folder to one user at a time: the next aibackup command needs it)."""
    from langchain_milvus import Milvus
    from milvus_lite.server_manager import server_manager_instance

    store = Milvus(embedding_function=EMBED, collection_name=name, connection_args={"uri": str(path)}, **options)
    try:
        yield store
    finally:
        store.client.close()
        server_manager_instance.release_server(str(path))


def view(docs: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(text, {k: v for k, v in meta.items() if k != MILVUS_ADDED}) for text, meta in lc_view(docs)]


def test_langchain_chroma_to_milvus(tmp_path: Path, cli: Cli) -> None:
    source = lc_chroma(tmp_path / "chroma", "kb_lc")
    source.add_documents(lc_docs(200), ids=[f"doc-{i:03d}" for i in range(200)])
    expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))

    target = tmp_path / "milvus" / "milvus.db"
    result = restored(cli, repo, f"milvus:{target}", "--layout", "langchain")  # Chroma's shape is not certain
    assert result["layout"] == "langchain (chroma -> milvus)"
    assert [c["ok"] for c in result["checks"] if c["name"] == "layout"] == [True]
    assert any("enable_dynamic_field=True" in n for n in result["notes"])
    with lc_milvus(target, "kb_lc", enable_dynamic_field=True) as app:
        assert {q: view(app.similarity_search(q, k=4)) for q in QUERIES} == expected
        assert app.similarity_search("text 7 ✓", k=1)[0].metadata["pk"] == "doc-007"  # the application's id
        # What the application adds afterwards lands in the same collection, new metadata keys and all.
        app.add_texts(["added later"], metadatas=[{"source": "s9", "n": 200, "new": True}], ids=["doc-200"])
        app.delete(ids=["doc-008"])  # the application's ids address the restored records
        assert "doc-008" not in {d.metadata["pk"] for d in app.similarity_search("text 8 ✓", k=3)}
        assert view(app.similarity_search("added later", k=1)) == [
            ("added later", {"source": "s9", "n": 200, "new": True})
        ]


def test_langchain_milvus_to_qdrant(tmp_path: Path, cli: Cli) -> None:
    source = tmp_path / "milvus" / "milvus.db"
    source.parent.mkdir()
    with lc_milvus(source, "kb_m", auto_id=False) as store:  # langchain-milvus's own collection: typed fields
        store.add_documents(lc_docs(200), ids=[f"doc-{i:03d}" for i in range(200)])
        expected = {q: view(store.similarity_search(q, k=4)) for q in QUERIES}
    repo = tmp_path / "repo"
    ok(cli("backup", f"milvus:{source}", "--repo", str(repo)))
    layout = manifest_json(repo)["datasets"][0]["config"]["layout"]
    assert (layout["framework"], layout["backend"]) == ("langchain", "milvus")
    result = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert result["layout"] == "langchain (milvus -> qdrant)"
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        target = lc_qdrant(client, "kb_m", models.Distance.EUCLID)
        assert {q: lc_view(target.similarity_search(q, k=4)) for q in QUERIES} == expected
    finally:
        client.close()


@pytest.mark.parametrize("layout", ["auto", "llamaindex"])
def test_llamaindex_on_milvus_is_not_written(tmp_path: Path, cli: Cli, layout: str) -> None:
    """llama-index-vector-stores-milvus needs pymilvus 2: its layout is not known here. auto restores raw
    and says so; an explicit --layout llamaindex is refused before anything is written."""
    from llama_index.core import StorageContext, VectorStoreIndex

    from tests.aibackup.test_frameworks import HashEmbedding, li_chroma, li_docs

    store = li_chroma(tmp_path / "chroma", "kb_li")
    VectorStoreIndex.from_documents(
        li_docs(10), storage_context=StorageContext.from_defaults(vector_store=store), embed_model=HashEmbedding()
    )
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    target = f"milvus:{tmp_path / 'milvus' / 'milvus.db'}"
    if layout == "auto":
        result = restored(cli, repo, target)
        assert result["layout"] == "raw" and any(
            "llamaindex's layout on milvus is not known" in n for n in result["notes"]
        )
    else:
        refused = cli("restore", "latest", "--repo", str(repo), "--to", target, "--layout", "llamaindex")
        assert refused.code == 2 and "llamaindex's layout on milvus" in refused.err
