"""Writing a record in the framework's layout of another backend: :func:`convert` for one record,
:func:`transform` for the batches a restore writes (refusing, with UnsupportedFeatureError, the first
record that is not in the layout)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from aibackup.connectors.lancedb import frameworks as lance
from aibackup.connectors.layouts import LANGCHAIN, LC_KEYS, LI_NODE, LI_TEXT_IN_NODE
from aibackup.connectors.layouts.reading import _li_flat, _node, _records, is_media_node, view
from aibackup.connectors.pgvector import llamaindex as pg_llamaindex
from aibackup.errors import UnsupportedFeatureError
from aibackup.manifests.vectors import DOCUMENT, METADATA, metadata_json, parse_metadata


def convert(
    framework: str,
    source: str,
    target: str,
    document: str | None,
    metadata: dict[str, Any] | None,
    keys: tuple[str, str] = LC_KEYS,
    collection_id: str | None = None,
    record_id: str = "",
    target_keys: tuple[str, str] = LC_KEYS,
) -> tuple[str | None, dict[str, Any] | None]:
    """A record of `source` in `framework`'s layout (`keys`: LangChain's payload keys there) as `target`
    holds it in that layout: (document, metadata); a Qdrant target gets LangChain's payload keys
    `target_keys`, a pgvector target the row of collection `collection_id`. Raises ValueError when the
    record is not in the layout on `source`."""
    seen = view(framework, source, "", document, metadata, keys)
    if source == target:
        return document, metadata
    meta = dict(metadata or {})
    if framework == LANGCHAIN:
        if target == "pgvector":
            return seen.text, {"collection_id": collection_id, "cmetadata": dict(seen.rest)}
        if target == "qdrant":
            return None, {target_keys[0]: seen.text, target_keys[1]: dict(seen.rest)}
        if target == "lancedb":
            return seen.text, {lance.METADATA: dict(seen.rest)}
        return seen.text, dict(seen.rest) or None
    flat = _li_flat(source, meta)
    node = _node(flat)  # as LlamaIndex wrote it, the text where it was
    node = _with_text(node, seen.text if target in LI_TEXT_IN_NODE else None)
    flat[LI_NODE] = json.dumps(node)  # LlamaIndex writes it with json.dumps' defaults too
    if target == "pgvector":  # metadata_ is json: its text, as it is stored and read back
        return seen.text, {pg_llamaindex.METADATA_COLUMN: json.dumps(flat), "id": pg_llamaindex.serial_of(record_id)}
    if target == "lancedb":
        return seen.text, {lance.DOC_ID: flat.get("ref_doc_id"), lance.METADATA: flat}
    return (None, flat) if target == "qdrant" else (seen.text, flat)


def _with_text(node: dict[str, Any], text: str | None) -> dict[str, Any]:
    """`node` (a parsed ``_node_content``) holding `text` where LlamaIndex keeps it for the node's class
    (None: where a store keeps the text outside, as LlamaIndex writes it there: ``text`` "", no
    ``text_resource``). A ``Node`` keeps it in ``text_resource``, placed where LlamaIndex serialises it."""
    if not is_media_node(node):
        return {**node, "text": "" if text is None else text}
    rest = {k: v for k, v in node.items() if k != "text_resource"}
    if text is None:
        return rest
    resource = {"embeddings": None, "text": text, "path": None, "url": None, "mimetype": None}
    out: dict[str, Any] = {}
    for key, value in rest.items():
        if key == "image_resource":
            out["text_resource"] = resource
        out[key] = value
    out.setdefault("text_resource", resource)
    return out


def transform(
    framework: str,
    source: str,
    target: str,
    collection: str,
    *,
    verified: bool = False,
    keys: tuple[str, str] = LC_KEYS,
    collection_id: str | None = None,
    target_keys: tuple[str, str] = LC_KEYS,
) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """The batch mapping a restore applies first: every record of `source`'s layout into `target`'s.
    Raises UnsupportedFeatureError naming the first record that is not in the layout. Between two stores
    of one kind the records stay as they are: only checked, unless the backup already `verified` them."""

    def apply(batch: pa.RecordBatch) -> pa.RecordBatch:
        if source == target:
            if not verified:
                for rid, doc, meta in _records(batch):
                    _fits(framework, source, collection, rid, doc, meta, keys)
            return batch
        documents, metadatas = [], []
        for rid, doc, meta in _records(batch):
            try:
                new_doc, new_meta = convert(
                    framework,
                    source,
                    target,
                    doc,
                    parse_metadata(meta),
                    keys,
                    collection_id,
                    record_id=rid,
                    target_keys=target_keys,
                )
            except ValueError as exc:
                raise _refusal(framework, source, collection, rid, exc) from None
            documents.append(new_doc)
            metadatas.append(metadata_json(new_meta))
        names = batch.schema.names
        columns = list(batch.columns)
        columns[names.index(DOCUMENT)] = pa.array(documents, pa.string())
        columns[names.index(METADATA)] = pa.array(metadatas, pa.string())
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema)

    return apply


def _fits(
    framework: str,
    backend: str,
    collection: str,
    rid: str,
    doc: str | None,
    meta: str | None,
    keys: tuple[str, str] = LC_KEYS,
) -> None:
    try:
        view(framework, backend, rid, doc, parse_metadata(meta), keys)
    except ValueError as exc:
        raise _refusal(framework, backend, collection, rid, exc) from None


def _refusal(framework: str, backend: str, collection: str, rid: str, exc: ValueError) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(
        f"collection {collection!r}: record {rid!r} is not in {framework}'s layout on {backend} ({exc}); "
        "restore with --layout raw"
    )
