"""Reading a record the way the framework does (:mod:`aibackup.connectors.layouts`'s table): :func:`view`
for one canonical record of a backend, :func:`views` for a batch (the restore's ``layout`` check). A record
not in the framework's layout there raises ValueError (:func:`views`: reads as null)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from aibackup.connectors.lancedb import frameworks as lance
from aibackup.connectors.layouts import LANGCHAIN, LC_KEYS, LI_NODE, LI_TYPE
from aibackup.connectors.pgvector import langchain as pg_langchain
from aibackup.connectors.pgvector import llamaindex as pg_llamaindex
from aibackup.manifests.vectors import DOCUMENT, ID, METADATA, metadata_json, parse_metadata


@dataclass(frozen=True)
class View:
    """A record as the framework reads it: its id, text, and what it returns besides (LangChain: the
    metadata; LlamaIndex: the node without its text)."""

    id: str
    text: str | None
    rest: Mapping[str, Any]


def view(
    framework: str,
    backend: str,
    record_id: str,
    document: str | None,
    metadata: dict[str, Any] | None,
    keys: tuple[str, str] = LC_KEYS,
) -> View:
    """The framework's reading of one canonical record of `backend` (`keys`: LangChain's content and
    metadata payload keys on Qdrant). Raises ValueError when the record is not in the framework's layout
    there."""
    meta = dict(metadata or {})
    if framework == LANGCHAIN:
        if backend == "qdrant":
            content, nested = keys
            if document is not None or set(meta) - {content, nested}:
                raise ValueError(f"payload keys {sorted(meta)} are not LangChain's {content!r} and {nested!r}")
            text, rest = meta.get(content), meta.get(nested) or {}
            if not isinstance(text, str) or not isinstance(rest, dict):
                raise ValueError(f"{content!r} must be text and {nested!r} an object")
            return View(record_id, text, rest)
        if backend == "pgvector":
            return _pg_view(record_id, document, meta)
        if backend == "lancedb":
            if set(meta) - {lance.METADATA}:
                raise ValueError(f"columns {sorted(meta)} are not LangChain's {lance.TEXT!r} and {lance.METADATA!r}")
            meta = meta.get(lance.METADATA) or {}
            if not isinstance(meta, dict):
                raise ValueError(f"{lance.METADATA!r} is not an object")
        if document is None:
            raise ValueError("no document: LangChain reads the text of every record from it")
        return View(record_id, document, meta)
    node = _node(_li_flat(backend, meta))
    in_node = _node_text(node)
    if backend != "qdrant":
        outside = document if document is not None or backend != "pgvector" else meta.get(pg_llamaindex.TEXT_COLUMN)
        return View(record_id, outside, node)
    if document is not None or not isinstance(in_node, str):
        raise ValueError(f"{LI_NODE!r} holds no text")
    return View(record_id, in_node, node)


def is_media_node(node: Mapping[str, Any]) -> bool:
    """Whether `node` is of LlamaIndex's ``Node`` class, which keeps its text in ``text_resource.text``
    (``TextNode`` and its kin keep it in ``text``)."""
    return node.get("class_name") == "Node" or "text_resource" in node


def _node_text(node: dict[str, Any]) -> Any:
    """Takes the text out of `node` (a parsed ``_node_content``) where its class keeps it, and returns it
    (None where the node holds none: the stores that keep the text outside remove it). Raises ValueError
    for a ``text_resource`` that holds more than text (a path, a url: the stores without it lose them)."""
    if not is_media_node(node):
        return node.pop("text", None)
    resource = node.pop("text_resource", None)
    if resource is None:
        return None
    if not isinstance(resource, dict) or any(v is not None for k, v in resource.items() if k != "text"):
        raise ValueError("its 'text_resource' holds more than text")
    return resource.get("text")


def _li_flat(backend: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata LlamaIndex wrote for a node (``node_to_metadata_dict``): the record's own on Chroma and
    Qdrant, the ``metadata_`` column (json: its text) of PGVectorStore's table."""
    if backend == "lancedb":
        flat = meta.get(lance.METADATA)
        if set(meta) - {lance.DOC_ID, lance.METADATA} or not isinstance(flat, dict):
            raise ValueError(f"columns {sorted(meta)} are not LanceDBVectorStore's")
        return dict(flat)
    if backend != "pgvector":
        return dict(meta)
    extra = set(meta) - {"id", pg_llamaindex.TEXT_COLUMN, pg_llamaindex.METADATA_COLUMN}
    raw = meta.get(pg_llamaindex.METADATA_COLUMN)
    if extra or raw is None:
        raise ValueError(f"columns {sorted(meta)} are not PGVectorStore's")
    flat = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(flat, dict):
        raise ValueError(f"{pg_llamaindex.METADATA_COLUMN!r} is not a JSON object")
    return flat


def _pg_view(record_id: str, document: str | None, meta: Mapping[str, Any]) -> View:
    """LangChain's reading of a row of langchain-postgres's embedding table (its document column is the
    record's document, or a metadata key when the backup was not told it is the document)."""
    allowed = {*pg_langchain.COLUMNS, pg_langchain.DOCUMENT_COLUMN}
    if set(meta) - allowed or "collection_id" not in meta:
        raise ValueError(f"columns {sorted(meta)} are not langchain-postgres's {pg_langchain.EMBEDDINGS}")
    text = document if document is not None else meta.get(pg_langchain.DOCUMENT_COLUMN)
    rest = meta.get("cmetadata") or {}
    if not isinstance(text, str) or not isinstance(rest, dict):
        raise ValueError("the document must be text and cmetadata an object")
    return View(record_id, text, rest)


def _node(meta: Mapping[str, Any]) -> dict[str, Any]:
    raw = meta.get(LI_NODE)
    if not isinstance(raw, str) or LI_TYPE not in meta:
        raise ValueError(f"no {LI_NODE!r} and {LI_TYPE!r} in the metadata")
    node = json.loads(raw)
    if not isinstance(node, dict):
        raise ValueError(f"{LI_NODE!r} is not a JSON object")
    return node


def _records(batch: pa.RecordBatch) -> Any:
    return zip(
        batch.column(ID).to_pylist(),
        batch.column(DOCUMENT).to_pylist(),
        batch.column(METADATA).to_pylist(),
        strict=True,
    )


def views(framework: str, backend: str, batch: pa.RecordBatch, keys: tuple[str, str] = LC_KEYS) -> pa.RecordBatch:
    """The framework's reading of a batch, as (id, document: the text, metadata: canonical JSON of the
    rest) for the restore's ``layout`` check. A record not in the layout reads as null text and rest."""
    ids, texts, rests = [], [], []
    for rid, doc, meta in _records(batch):
        try:
            seen = view(framework, backend, rid, doc, parse_metadata(meta), keys)
            text, rest = seen.text, metadata_json(dict(seen.rest)) or "{}"
        except ValueError:
            text, rest = None, None
        ids.append(rid)
        texts.append(text)
        rests.append(rest)
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.string()), pa.array(texts, pa.string()), pa.array(rests, pa.string())],
        names=[ID, DOCUMENT, METADATA],
    )
