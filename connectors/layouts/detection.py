"""Detecting a collection's layout while a backup streams its records: :class:`Detector` (a collection is
in a layout only when every record is), and :func:`langchain_keys` (LangChain's payload keys on Qdrant)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.layouts import (
    KNOWN,
    LANGCHAIN,
    LC_KEYS,
    LC_METADATA,
    LI_KEYS,
    LI_NODE,
    LI_TYPE,
    LLAMAINDEX,
)
from aibackup.connectors.layouts.reading import _li_flat, _records, view
from aibackup.connectors.pgvector import langchain as pg_langchain
from aibackup.connectors.pgvector import llamaindex as pg_llamaindex
from aibackup.manifests.model import FRAMEWORKS
from aibackup.manifests.vectors import DOCUMENT, METADATA, URI, parse_metadata


class Detector:
    """Watches every record of a backup (:meth:`add`) and says which layout they all share (:meth:`result`):
    ``{"framework": ..., "backend": ..., "evidence": {...}}``, or None for raw."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.rows = 0
        # Each candidate stays possible while every record seen fits it.
        self.possible = {framework: backend in KNOWN[framework] for framework in FRAMEWORKS}
        #: LangChain's payload keys on Qdrant, as the first record shows them (None: not seen yet)
        self.keys: tuple[str, str] | None = None
        #: how many records hold each of LlamaIndex's keys (the evidence names those every record holds)
        self.node_keys = dict.fromkeys(LI_KEYS, 0)
        #: langchain-postgres's collection ids the records belong to (more than one: not one collection)
        self.collections: set[str] = set()

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        if not any(self.possible.values()) or not batch.num_rows:
            return
        metadata, documents = batch.column(METADATA), batch.column(DOCUMENT)
        has_doc = documents.is_valid()
        if self.possible[LLAMAINDEX] and self.backend in ("pgvector", "lancedb"):  # the node nests deeper
            self.possible[LLAMAINDEX] = self._every(LLAMAINDEX, batch)
        elif self.possible[LLAMAINDEX]:
            # Vectorised first: both keys in the canonical JSON text of every record; then each node parses.
            keys = pc.and_(
                pc.match_substring(metadata.fill_null(""), f'"{LI_NODE}":'),
                pc.match_substring(metadata.fill_null(""), f'"{LI_TYPE}":'),
            )
            wanted_doc = has_doc if self.backend == "chroma" else pc.invert(has_doc)
            self.possible[LLAMAINDEX] = bool(pc.all(pc.and_(keys, wanted_doc)).as_py()) and self._every(
                LLAMAINDEX, batch
            )
            for key in LI_KEYS:
                self.node_keys[key] += int(pc.sum(pc.match_substring(metadata.fill_null(""), f'"{key}":')).as_py() or 0)
        if self.possible[LANGCHAIN]:
            if self.backend in ("chroma", "milvus"):  # the text is the document, the metadata flat
                ok = pc.all(has_doc).as_py() and batch.column(URI).null_count == batch.num_rows
                no_llama = not pc.any(pc.match_substring(metadata.fill_null(""), f'"{LI_NODE}":')).as_py()
                self.possible[LANGCHAIN] = bool(ok and no_llama)
            elif self.backend in ("pgvector", "lancedb"):
                self.possible[LANGCHAIN] = self._every(LANGCHAIN, batch)
            else:
                if self.keys is None:
                    self.keys = langchain_keys(parse_metadata(metadata[0].as_py()))
                ok = self.keys is not None and documents.null_count == batch.num_rows
                if ok and self.keys == LC_KEYS:  # a vectorised first look (canonical JSON sorts its keys)
                    ok = pc.all(pc.starts_with(metadata.fill_null(""), f'{{"{LC_METADATA}":')).as_py()
                self.possible[LANGCHAIN] = bool(ok) and self._every(LANGCHAIN, batch)

    def _every(self, framework: str, batch: pa.RecordBatch) -> bool:
        keys = self.keys or LC_KEYS
        for rid, doc, meta in _records(batch):
            try:
                parsed = parse_metadata(meta)
                view(framework, self.backend, rid, doc, parsed, keys)
            except ValueError:
                return False
            if self.backend == "pgvector" and framework == LANGCHAIN:  # one collection per restored one
                self.collections.add(str((parsed or {}).get("collection_id")))
                if len(self.collections) > 1:
                    return False
            elif self.backend in ("pgvector", "lancedb") and framework == LLAMAINDEX:
                flat = _li_flat(self.backend, parsed or {})
                for key in LI_KEYS:
                    self.node_keys[key] += key in flat
        return True

    def merge(self, others: Sequence[Detector]) -> None:
        """Take in what detectors of other parts of the same dataset saw (a partitioned backup's workers):
        a layout stays possible only where every part's records were in it, with the same payload keys."""
        for other in others:
            if not other.rows:
                continue
            if self.rows and self.keys is not None and other.keys is not None and self.keys != other.keys:
                self.possible[LANGCHAIN] = False
            self.keys = self.keys or other.keys
            self.rows += other.rows
            for framework in self.possible:
                self.possible[framework] = self.possible[framework] and other.possible[framework]
            for key, count in other.node_keys.items():
                self.node_keys[key] += count
            self.collections |= other.collections
            if len(self.collections) > 1:
                self.possible[LANGCHAIN] = False

    def result(self, native: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The layout every record was in (None: raw). `native`: the dataset's recorded native config (a
        pgvector table's definition names the LangChain collection its rows belong to)."""
        if not self.rows:
            return None
        for framework in (LLAMAINDEX, LANGCHAIN):  # LlamaIndex's keys are the stronger evidence
            if self.possible[framework]:
                evidence = self._evidence(framework)
                table = str((native or {}).get("table"))
                if self.backend == "pgvector" and framework == LANGCHAIN:
                    (collection_id,) = self.collections
                    evidence["table"] = table
                    evidence["collection_id"] = collection_id
                    evidence["collection"] = pg_langchain.collection_name(native, collection_id)
                elif self.backend == "pgvector":
                    evidence["table"] = table
                    evidence["collection"] = pg_llamaindex.collection_of(table)
                if self.backend == "milvus" and not _langchain_fields(native):
                    return None  # documents and flat metadata in fields of other names: no framework's
                return {
                    "framework": framework,
                    "backend": self.backend,
                    "certain": self._certain(framework),
                    "evidence": evidence,
                }
        return None

    def _certain(self, framework: str) -> bool:
        """Whether the records show the framework's own marks (LlamaIndex's keys, LangChain's payload keys,
        table, column or field names), not only a shape other applications write too: a document and flat
        metadata on Chroma, two payload keys of other names on Qdrant. A restore writes an uncertain layout
        only where it changes the records, not the target's tables (planning.resolve)."""
        if framework == LLAMAINDEX or self.backend in ("pgvector", "lancedb", "milvus"):
            return True
        return self.backend == "qdrant" and self.keys == LC_KEYS

    def _evidence(self, framework: str) -> dict[str, Any]:
        if framework == LLAMAINDEX:
            where = {"chroma": "metadata", "qdrant": "payload", "lancedb": "metadata"}.get(self.backend, "metadata_")
            text = {"chroma": "the document", "qdrant": f"{LI_NODE}.text"}.get(self.backend, "text")
            keys = [key for key in LI_KEYS if self.node_keys[key] == self.rows]
            return {"records": self.rows, "keys": keys, "in": where, "text": text, "ids": "node ids"}
        if self.backend == "qdrant":
            content, nested = self.keys or LC_KEYS
            return {"records": self.rows, "content_key": content, "metadata_key": nested, "ids": "point ids"}
        if self.backend == "pgvector":
            return {"records": self.rows, "text": "document", "metadata": "cmetadata", "ids": "document ids"}
        if self.backend == "lancedb":
            return {"records": self.rows, "text": "text", "metadata": "metadata", "ids": "document ids"}
        return {"records": self.rows, "text": "the document", "metadata": "flat", "uris": 0, "ids": "document ids"}


def _langchain_fields(native: Mapping[str, Any] | None) -> bool:
    """Whether a Milvus collection has langchain-milvus's fields: ``pk`` (the primary key) and ``text``."""
    fields = {f.get("name"): f for f in (native or {}).get("fields") or ()}
    return "text" in fields and bool(fields.get("pk", {}).get("is_primary"))


def langchain_keys(payload: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """LangChain's (content, metadata) payload keys, if `payload` can be a record langchain-qdrant wrote:
    exactly two keys, one holding text and the other an object (or null). Its defaults win where present."""
    payload = payload or {}
    if set(payload) == set(LC_KEYS):
        return LC_KEYS
    if len(payload) != 2:
        return None
    texts = [k for k, v in payload.items() if isinstance(v, str)]
    nested = [k for k, v in payload.items() if v is None or isinstance(v, dict)]
    if len(texts) != 1 or len(nested) != 1:
        return None
    return texts[0], nested[0]
