"""Application layouts (aibackup.connectors.layouts): reading, converting and detecting, on canonical records.

The frameworks themselves write and read these layouts in tests/aibackup/test_frameworks.py; here the
records are the ones they write (copied from langchain-chroma 1.1, langchain-qdrant 1.1 and LlamaIndex's
Chroma 0.6 and Qdrant 0.10 stores), so every rule is checked without a store.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from aibackup.connectors import layouts
from aibackup.errors import UnsupportedFeatureError, UsageError
from aibackup.manifests.vectors import metadata_json, parse_metadata

NODE = {
    "id_": "87e2383f-9b98-4032-8cfd-0d01a9a9869d",
    "embedding": None,
    "metadata": {"source": "s2", "n": 2},
    "excluded_embed_metadata_keys": [],
    "excluded_llm_metadata_keys": [],
    "relationships": {"1": {"node_id": "doc-2", "node_type": "4", "metadata": {}, "hash": "6e", "class_name": "R"}},
    "metadata_template": "{key}: {value}",
    "metadata_separator": "\n",
    "text": "text 2 ✓",
    "mimetype": "text/plain",
    "start_char_idx": 0,
    "end_char_idx": 6,
    "text_template": "{metadata_str}\n\n{content}",
    "class_name": "TextNode",
}


def llama_metadata(text: str) -> dict[str, Any]:
    node = {**NODE, "text": text}
    return {
        "source": "s2",
        "n": 2,
        "_node_content": json.dumps(node),  # as LlamaIndex writes it
        "_node_type": "TextNode",
        "document_id": "doc-2",
        "doc_id": "doc-2",
        "ref_doc_id": "doc-2",
    }


def test_langchain_between_chroma_and_qdrant() -> None:
    meta = {"source": "s1", "n": 1}
    doc, payload = layouts.convert("langchain", "chroma", "qdrant", "text 1", meta)
    assert (doc, payload) == (None, {"page_content": "text 1", "metadata": meta})
    assert layouts.convert("langchain", "qdrant", "chroma", doc, payload) == ("text 1", meta)
    assert layouts.convert("langchain", "qdrant", "chroma", None, {"page_content": "t", "metadata": None}) == (
        "t",
        None,
    )
    a = layouts.view("langchain", "chroma", "doc-1", "text 1", meta)
    b = layouts.view("langchain", "qdrant", "doc-1", doc, payload)
    assert a == b == layouts.View("doc-1", "text 1", meta)


def test_llamaindex_moves_the_text_in_and_out_of_the_node_as_llamaindex_writes_it() -> None:
    on_qdrant = llama_metadata("text 2 ✓")
    doc, on_chroma = layouts.convert("llamaindex", "qdrant", "chroma", None, on_qdrant)
    assert doc == "text 2 ✓"
    assert on_chroma == llama_metadata("")  # byte for byte what LlamaIndex's Chroma store writes
    back = layouts.convert("llamaindex", "chroma", "qdrant", doc, on_chroma)
    assert back == (None, on_qdrant)
    assert back[1]["_node_content"] == json.dumps({**NODE, "text": "text 2 ✓"})  # the same string
    seen = layouts.view("llamaindex", "qdrant", "n1", None, on_qdrant)
    assert seen.text == "text 2 ✓" and "text" not in seen.rest and seen.rest["metadata"] == {"source": "s2", "n": 2}
    assert layouts.view("llamaindex", "chroma", "n1", doc, on_chroma) == seen


@pytest.mark.parametrize(
    ("framework", "backend", "document", "metadata", "why"),
    [
        ("langchain", "chroma", None, {"a": 1}, "no document"),
        ("langchain", "qdrant", None, {"page_content": "t", "metadata": {}, "extra": 1}, "payload keys"),
        ("langchain", "qdrant", None, {"page_content": 3, "metadata": {}}, "must be text"),
        ("langchain", "qdrant", "doc", {"page_content": "t", "metadata": {}}, "payload keys"),
        ("llamaindex", "chroma", "t", {"a": 1}, "_node_content"),
        ("llamaindex", "qdrant", None, {"_node_content": "[]", "_node_type": "TextNode"}, "not a JSON object"),
    ],
)
def test_a_record_outside_the_layout_is_named(
    framework: str, backend: str, document: str | None, metadata: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        layouts.view(framework, backend, "r1", document, metadata)
    batch = batch_of([("r1", document, metadata)])
    other = "qdrant" if backend == "chroma" else "chroma"
    with pytest.raises(UnsupportedFeatureError, match=r"collection 'kb': record 'r1' is not in .* --layout raw"):
        layouts.transform(framework, backend, other, "kb")(batch)
    with pytest.raises(UnsupportedFeatureError, match="record 'r1'"):
        layouts.transform(framework, backend, backend, "kb")(batch)  # same backend: checked, not changed


def batch_of(records: list[tuple[str, str | None, dict[str, Any] | None]], uris: bool = False) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r[0] for r in records]),
            pa.array([r[1] for r in records], pa.string()),
            pa.array(["s3://x" if uris else None for _ in records], pa.string()),
            pa.array([metadata_json(r[2]) for r in records], pa.string()),
        ],
        names=["id", "document", "uri", "metadata"],
    )


def test_transform_keeps_the_schema_and_the_ids() -> None:
    batch = batch_of([("doc-1", "one", {"n": 1}), ("doc-2", "two", None)])
    out = layouts.transform("langchain", "chroma", "qdrant", "kb")(batch)
    assert out.schema == batch.schema and out.column("id").to_pylist() == ["doc-1", "doc-2"]
    assert out.column("document").to_pylist() == [None, None]
    assert [json.loads(m) for m in out.column("metadata").to_pylist()] == [
        {"metadata": {"n": 1}, "page_content": "one"},
        {"metadata": {}, "page_content": "two"},
    ]


def detect(backend: str, *batches: pa.RecordBatch) -> dict[str, Any] | None:
    detector = layouts.Detector(backend)
    for batch in batches:
        detector.add(batch)
    return detector.result()


def test_detection_needs_every_record_in_the_layout() -> None:
    lc = [("a", "one", {"n": 1}), ("b", "two", None)]
    assert detect("chroma", batch_of(lc)) == {
        "framework": "langchain",
        "backend": "chroma",
        "certain": False,
        "evidence": {"records": 2, "text": "the document", "metadata": "flat", "uris": 0, "ids": "document ids"},
    }
    assert detect("chroma", batch_of(lc), batch_of([("c", None, {"n": 3})])) is None  # one record without text
    assert detect("chroma", batch_of(lc, uris=True)) is None  # LangChain writes no uris
    qdrant = [("u1", None, {"page_content": "one", "metadata": {"n": 1}})]
    found = detect("qdrant", batch_of(qdrant))
    assert (
        found is not None and found["framework"] == "langchain" and found["evidence"]["content_key"] == "page_content"
    )
    assert detect("qdrant", batch_of([("u2", None, {"page_content": "x", "metadata": {}, "more": 1})])) is None
    llama = [("n1", "text", llama_metadata(""))]
    found = detect("chroma", batch_of(llama))
    assert found is not None and found["framework"] == "llamaindex" and found["evidence"]["records"] == 1
    assert detect("qdrant", batch_of([("n1", None, llama_metadata("text"))]))["framework"] == "llamaindex"  # type: ignore[index]
    assert detect("chroma") is None  # no records, no evidence
    assert detect("pgvector", batch_of(lc)) is None  # a backend whose layouts are not known: raw


def test_langchain_payload_keys_of_its_own_on_qdrant() -> None:
    """langchain-qdrant's content_payload_key / metadata_payload_key: two keys, text and an object (or null),
    the same in every record; anything looser stays raw."""
    custom = [("u1", None, {"body": "one", "attrs": {"n": 1}}), ("u2", None, {"body": "two", "attrs": None})]
    found = detect("qdrant", batch_of(custom))
    assert found is not None and found["framework"] == "langchain"
    assert (found["evidence"]["content_key"], found["evidence"]["metadata_key"]) == ("body", "attrs")
    other_keys = batch_of([("u3", None, {"text": "three", "meta": {}})])
    assert detect("qdrant", batch_of(custom), other_keys) is None  # every record under the same two keys
    assert detect("qdrant", batch_of([("u4", None, {"a": "x", "b": "y"})])) is None  # which one is the text?
    assert detect("qdrant", batch_of([("u5", None, {"a": "x", "b": 3})])) is None
    assert layouts.langchain_keys({"page_content": "x", "metadata": None}) == ("page_content", "metadata")

    recorded = found
    applied = layouts.resolve("auto", recorded, "qdrant", "chroma", "kb")
    assert applied is not None and applied.keys == ("body", "attrs") and applied.target_keys == layouts.LC_KEYS
    document, metadata = layouts.convert("langchain", "qdrant", "chroma", None, custom[0][2], applied.keys)
    assert (document, metadata) == ("one", {"n": 1})
    same = layouts.resolve("auto", recorded, "qdrant", "qdrant", "kb")
    assert same is not None and same.target_keys == ("body", "attrs")
    assert layouts.resolve("langchain", None, "qdrant", "chroma", "kb").keys == layouts.LC_KEYS  # type: ignore[union-attr]


def test_resolving_the_layout_of_a_restore() -> None:
    recorded = {"framework": "llamaindex", "backend": "chroma"}
    found = layouts.Applied("llamaindex", "chroma", "qdrant", recorded=True)
    assert layouts.resolve("auto", recorded, "chroma", "qdrant", "kb") == found
    assert layouts.resolve("llamaindex", recorded, "chroma", "qdrant", "kb") == found  # the recorded one, named
    assert layouts.resolve("auto", None, "chroma", "qdrant", "kb") is None
    assert layouts.resolve("raw", recorded, "chroma", "qdrant", "kb") is None
    assert layouts.resolve("langchain", None, "qdrant", "qdrant", "kb") == layouts.Applied(
        "langchain", "qdrant", "qdrant"
    )
    with pytest.raises(UsageError, match="llamaindex's layout on milvus"):
        layouts.resolve("llamaindex", None, "chroma", "milvus", "kb")
    assert layouts.resolve("langchain", None, "chroma", "milvus", "kb") == layouts.Applied(
        "langchain", "chroma", "milvus"
    )
    with pytest.raises(UsageError, match="bad --layout 'haystack'"):
        layouts.resolve("haystack", None, "chroma", "qdrant", "kb")


def test_langchain_postgres_rows_and_collections() -> None:
    """A langchain_pg_embedding row read as LangChain does (document column or key), the collection's
    name found in the carried langchain_pg_collection rows, whose text PostgreSQL quotes as it likes."""
    from aibackup.connectors.pgvector import langchain as pg

    meta = {"collection_id": "c1", "cmetadata": {"n": 1}, "document": "hello"}
    assert layouts.view("langchain", "pgvector", "a", None, meta).text == "hello"
    assert layouts.view("langchain", "pgvector", "a", "doc", {"collection_id": "c1", "cmetadata": None}).rest == {}
    with pytest.raises(ValueError, match="langchain-postgres"):
        layouts.view("langchain", "pgvector", "a", "doc", {"collection_id": "c1", "other": 1})
    assert pg.parse_row('(1,"a, \\"b\\"",)') == ["1", 'a, "b"', None]
    assert pg.parse_row('(x,"say ""hi""",{})') == ["x", 'say "hi"', "{}"]
    native = pg.native_definition('my "kb", v2', 8)
    (row,) = native["references"][0]["rows"]
    assert pg.collection_name(native, pg.collection_uuid('my "kb", v2')) == 'my "kb", v2'
    assert pg.parse_row(row)[1] == 'my "kb", v2' and pg.collection_name(native, "other") is None
    two = [("a", "x", {"collection_id": "c1", "cmetadata": {}}), ("b", "y", {"collection_id": "c2", "cmetadata": {}})]
    assert detect("pgvector", batch_of(two)) is None  # two LangChain collections in one table
    found = detect("pgvector", batch_of(two[:1]))
    assert found is not None and found["evidence"]["collection_id"] == "c1"


def _as_exported(framework: str, backend: str, text: str, rest: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """A record as `backend`'s connector exports what `framework` wrote there (text, metadata or node)."""
    source = "chroma"
    if framework == "langchain":
        document, metadata = text, dict(rest)
    else:
        node = {"id_": "n1", "metadata": rest, "text": "", "class_name": "TextNode"}
        document = text
        metadata = {**rest, "_node_content": json.dumps(node), "_node_type": "TextNode", "doc_id": "d1",
                    "document_id": "d1", "ref_doc_id": "d1"}  # fmt: skip
    if backend == source:
        return document, metadata
    return layouts.convert(framework, source, backend, document, metadata, collection_id="c1", record_id="n1")


@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_every_pair_of_known_backends_reads_the_same_document(framework: str) -> None:
    """For every two backends whose layout of the framework is known, a record written there by the framework
    and converted into the other reads, as the framework reads it, the same text and metadata (or node)."""
    rest = {"source": "s1", "n": 7, "ok": True}
    for source in layouts.KNOWN[framework]:
        document, metadata = _as_exported(framework, source, "text ✓", rest)
        expected = layouts.view(framework, source, "n1", document, metadata)
        assert expected.text == "text ✓"
        for target in layouts.KNOWN[framework]:
            doc, meta = layouts.convert(
                framework, source, target, document, metadata, collection_id="c2", record_id="n1"
            )
            got = layouts.view(framework, target, "n1", doc, parse_metadata(metadata_json(meta)))
            assert (got.text, dict(got.rest)) == (expected.text, dict(expected.rest)), (source, target)


def test_milvus_records_are_langchains_only_in_its_fields() -> None:
    """Documents and flat metadata in Milvus are LangChain's layout only in langchain-milvus's fields
    (``pk`` primary, ``text``): a collection of other field names stays raw."""
    lc = [("a", "one", {"n": 1}), ("b", "two", None)]
    detector = layouts.Detector("milvus")
    detector.add(batch_of(lc))
    theirs = {"fields": [{"name": "pk", "is_primary": True}, {"name": "text"}, {"name": "vector"}]}
    found = detector.result(theirs)
    assert found is not None and found["framework"] == "langchain" and found["certain"] is True
    ours = {"fields": [{"name": "id", "is_primary": True}, {"name": "document"}, {"name": "vector"}]}
    assert detector.result(ours) is None
