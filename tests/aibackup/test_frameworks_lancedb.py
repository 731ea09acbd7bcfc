"""LangChain and LlamaIndex on LanceDB (issue 14): their LanceDB tables restored into Chroma and Qdrant, and
their collections of Chroma restored into the LanceDB table each framework reads, opened by the framework's
own class on the target. LanceDB without a vector index searches exactly, as Chroma's HNSW over a few
hundred records and Qdrant local mode do, so both sides return the very same documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
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
    llama_settings,  # noqa: F401  (the autouse fixture: LlamaIndex's fake embeddings)
    restored,
)
from tests.helpers import Cli, chroma_client, manifest_json, ok

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Payload indexes have no effect")


def lc_lance(path: Path, name: str) -> Any:
    import lancedb
    from langchain_community.vectorstores import LanceDB

    # mode="append": LangChain's LanceDB replaces the whole table on every add by default
    return LanceDB(connection=lancedb.connect(str(path)), table_name=name, embedding=EMBED, mode="append")


def li_lance(path: Path, name: str) -> Any:
    from llama_index.vector_stores.lancedb import LanceDBVectorStore

    return LanceDBVectorStore(uri=str(path), table_name=name)


def test_langchain_chroma_to_lancedb_and_on_to_qdrant(tmp_path: Path, cli: Cli) -> None:
    source = lc_chroma(tmp_path / "chroma", "kb-lc")
    source.add_documents(lc_docs(200), ids=[f"doc-{i:03d}" for i in range(200)])
    expected = {q: lc_view(source.similarity_search(q, k=4)) for q in QUERIES}
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))

    # Documents and flat metadata on Chroma are LangChain's shape but not only LangChain's: the default
    # keeps LanceDB's own table for them and says how to ask for LangChain's.
    raw = restored(cli, repo, f"lancedb:{tmp_path / 'raw'}")
    assert raw["layout"] == "raw" and any("--layout langchain writes" in n for n in raw["notes"])
    result = restored(cli, repo, f"lancedb:{tmp_path / 'lance'}", "--layout", "langchain")
    assert result["layout"] == "langchain (chroma -> lancedb)"
    assert [c["ok"] for c in result["checks"] if c["name"] == "layout"] == [True]
    target = lc_lance(tmp_path / "lance", "kb-lc")
    assert {q: lc_view(target.similarity_search(q, k=4)) for q in QUERIES} == expected
    # The application goes on: what it adds lands in the same table, its ids delete.
    target.add_texts(["added later"], metadatas=[{"source": "s9", "n": 200}], ids=["doc-200"])
    target.delete(ids=["doc-007"])
    table = target.get_table()
    assert table.count_rows() == 200 and table.count_rows("id = 'doc-200'") == 1

    ok(cli("backup", f"lancedb:{tmp_path / 'lance'}", "--repo", str(repo)))
    layout = manifest_json(repo)["datasets"][0]["config"]["layout"]
    assert (layout["framework"], layout["backend"]) == ("langchain", "lancedb")
    result = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert result["layout"] == "langchain (lancedb -> qdrant)"
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        back = lc_qdrant(client, "kb-lc", models.Distance.EUCLID)
        assert lc_view(back.similarity_search("added later", k=1)) == [("added later", {"source": "s9", "n": 200})]
        assert {q: lc_view(back.similarity_search(q, k=4)) for q in QUERIES} == {
            q: lc_view(target.similarity_search(q, k=4)) for q in QUERIES
        }
    finally:
        client.close()


def test_llamaindex_chroma_to_lancedb_and_back(tmp_path: Path, cli: Cli) -> None:
    store = li_chroma(tmp_path / "chroma", "kb-li")
    index = VectorStoreIndex.from_documents(li_docs(), storage_context=StorageContext.from_defaults(vector_store=store))
    expected = {q: li_view(index, q) for q in QUERIES}
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))

    result = restored(cli, repo, f"lancedb:{tmp_path / 'lance'}")
    assert result["layout"] == "llamaindex (chroma -> lancedb)"
    assert not any("create_index" in n for n in result["notes"])  # l2: LanceDB's own ranking
    app = li_lance(tmp_path / "lance", "kb-li")
    restored_index = VectorStoreIndex.from_vector_store(app)
    assert {q: li_view(restored_index, q) for q in QUERIES} == expected
    # (LanceDBVectorStore's delete(ref_doc_id=) and get_nodes(node_ids=) quote ids as identifiers, which
    # LanceDB 0.40 refuses on any table, restored or not: the node ids are compared through retrieval.)
    restored_index.insert(li_docs(61)[-1])
    assert app.table.count_rows() == 61 and app.table.count_rows("doc_id = 'doc-60'") == 1

    ok(cli("backup", f"lancedb:{tmp_path / 'lance'}", "--repo", str(repo)))
    assert manifest_json(repo)["datasets"][0]["config"]["layout"]["framework"] == "llamaindex"
    result = restored(cli, repo, f"qdrant:{tmp_path / 'qdrant'}")
    assert result["layout"] == "llamaindex (lancedb -> qdrant)"
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        back = VectorStoreIndex.from_vector_store(li_qdrant(client, "kb-li"))
        assert {q: li_view(back, q) for q in QUERIES} == {q: li_view(restored_index, q) for q in QUERIES}
    finally:
        client.close()


def test_metadata_a_struct_cannot_hold_restores_raw_or_is_refused(tmp_path: Path, cli: Cli) -> None:
    """LanceDB's metadata struct has one set of keys: records with other keys restore raw under --layout
    auto (the report says why), and an explicit --layout langchain is refused before the table is made."""
    from langchain_core.documents import Document

    source = lc_chroma(tmp_path / "chroma", "mixed")
    source.add_documents(
        [Document(page_content="a", metadata={"x": 1}), Document(page_content="b", metadata={"y": "2"})],
        ids=["a", "b"],
    )
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    refused = cli(
        "restore", "latest", "--repo", str(repo), "--to", f"lancedb:{tmp_path / 'lance'}", "--layout", "langchain"
    )
    assert refused.code == 2 and "metadata struct holds one set of keys" in refused.err
    assert not (tmp_path / "lance" / "mixed.lance").exists()
    result = restored(cli, repo, f"lancedb:{tmp_path / 'lance'}")
    assert result["layout"] == "raw" and result["rows"] == 2


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (2**70, "cannot type"),  # past 64 bits: it was an internal error (exit 70)
        ([1, "a"], "cannot type"),
        ({}, "would not give back"),  # an empty struct: LanceDB read the record's other keys back as None
        ([{"a": 0}, {"b": "x"}], "would not give back"),  # read back as [{a: 0, b: None}, {a: None, b: x}]
    ],
)
def test_metadata_a_struct_would_not_give_back_is_refused_before_writing(value: Any, why: str) -> None:
    """The layout's struct type is refused (so --layout auto restores raw, saying why), not found wrong by
    the checks after the table was written."""
    from aibackup.connectors.lancedb.frameworks import metadata_type
    from aibackup.errors import UnsupportedFeatureError

    with pytest.raises(UnsupportedFeatureError, match=why):
        metadata_type("docs", [{"n": 1, "v": value}, {"n": 2, "v": value}])
    assert (
        str(metadata_type("docs", [{"n": 1, "v": {"a": [1, 2]}}]))
        == "struct<n: int64, v: struct<a: list<item: int64>>>"
    )


def test_a_langchain_chroma_backup_merges_into_the_apps_own_lancedb_table(tmp_path: Path, cli: Cli) -> None:
    """A table langchain-community's LanceDB made has no distance marker on its vector column: the merge
    goes in (it was refused for 'other columns'), and the app reads both its rows and the bundle's."""
    import lancedb
    from langchain_community.vectorstores import LanceDB
    from langchain_core.documents import Document

    source = lc_chroma(tmp_path / "chroma", "mrg")
    docs = [Document(page_content=f"src doc {i}", metadata={"n": i, "s": "x"}) for i in range(6)]
    source.add_documents(docs, ids=[f"s-{i}" for i in range(6)])
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", repo, "--queries", "0"))
    path = tmp_path / "lance"

    def app() -> Any:
        return LanceDB(connection=lancedb.connect(str(path)), table_name="mrg", embedding=EMBED, distance="l2")

    mine = [Document(page_content=f"app doc {i}", metadata={"n": i, "s": "app"}) for i in range(3)]
    app().add_documents(mine, ids=[f"a-{i}" for i in range(3)])
    args = ("restore", "latest", "--repo", repo, "--to", f"lancedb:{path}", "--mode", "merge", "--layout", "langchain")
    ok(cli(*args))
    assert lc_view(app().similarity_search("src doc 2", k=1)) == [("src doc 2", {"n": 2, "s": "x"})]
    assert lc_view(app().similarity_search("app doc 1", k=1)) == [("app doc 1", {"n": 1, "s": "app"})]


def test_a_cosine_llamaindex_collection_restored_into_lancedb_says_how_to_rank_by_cosine(
    tmp_path: Path, cli: Cli
) -> None:
    """LanceDBVectorStore's queries name no metric, so LanceDB ranks the restored table by l2 unless it has
    a vector index: the application's answers differed from the source's while the restore's note said
    nothing of it (its search check searches with the bundle's distance itself)."""
    chroma_client(tmp_path / "chroma").create_collection("kb-cos", metadata={"hnsw:space": "cosine"})
    store = li_chroma(tmp_path / "chroma", "kb-cos")
    VectorStoreIndex.from_documents(li_docs(), storage_context=StorageContext.from_defaults(vector_store=store))
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    result = restored(cli, repo, f"lancedb:{tmp_path / 'lance'}")
    assert result["layout"] == "llamaindex (chroma -> lancedb)"
    assert any("create_index(metric='cosine'" in n for n in result["notes"]), result["notes"]
