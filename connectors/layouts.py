"""Application layouts: where LangChain and LlamaIndex keep a record's text, metadata and ids on each
backend; detected at backup, written at restore (DESIGN.md "Application layouts").

A bundle keeps every record as its source backend holds it (the canonical schema, as that backend's
connector exports it), so what a framework wrote is kept byte for byte. A layout says how the framework
reads its document out of such a record, and how to write the document into another backend so that the
same framework, opened on the target, reads it back:

==========  ========  ================================================  =============================================
framework   backend   text                                              what the framework returns besides
==========  ========  ================================================  =============================================
langchain   chroma    the document                                      the metadata (flat), by record id
langchain   qdrant    payload ``page_content`` (the export's metadata)  payload ``metadata`` (an object), by point id
llamaindex  chroma    the document (``_node_content``'s text is "")     the node in metadata ``_node_content``
                                                                        (JSON), with flat copies of its metadata
                                                                        and ``_node_type``, ``doc_id``,
                                                                        ``document_id``, ``ref_doc_id``
llamaindex  qdrant    ``_node_content``'s text (no document)            the same keys in the payload
langchain   pgvector  ``document`` of ``langchain_pg_embedding``        ``cmetadata``; the collection: a row
                                                                        of ``langchain_pg_collection``
llamaindex  pgvector  ``text`` of ``data_<name>``                       the node in the ``metadata_`` column;
                                                                        the ids are ``node_id``
langchain   lancedb   column ``text``                                   column ``metadata`` (a struct)
llamaindex  lancedb   column ``text`` (and in ``_node_content``)        the node in the ``metadata`` struct
langchain   milvus    field ``text``                                    the other fields (flat), by ``pk``
==========  ========  ================================================  =============================================

PostgreSQL's tables are described in :mod:`.pgvector.langchain` and :mod:`.pgvector.llamaindex`, LanceDB's
in :mod:`.lancedb.frameworks`, Milvus's in :mod:`.milvus.frameworks` (LlamaIndex's Milvus store is not known).

LlamaIndex writes ``_node_content`` with ``json.dumps`` defaults; moving the text in or out re-serialises
it the same way, so the node it reads is the one it wrote. Ids: a LlamaIndex node id is a UUID, a point id
as it is; LangChain's ids on Chroma are any string, which Qdrant holds as ``uuid5`` point ids (the original
in ``_aibackup_id``): LangChain's ``get_by_ids`` on Qdrant takes those (``point_id_for`` in the runbook).

Detection reads every record while the backup streams (:class:`Detector`); a collection is in a layout
only when every record is, and the evidence (which keys, how many records) goes into the manifest.
Anything else is ``raw``: restored with each connector's own mapping, as before layouts existed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.base import DatasetDescription, ImportPlan
from aibackup.connectors.lancedb import frameworks as lance
from aibackup.connectors.milvus import frameworks as milvus
from aibackup.connectors.pgvector import langchain as pg_langchain
from aibackup.connectors.pgvector import llamaindex as pg_llamaindex
from aibackup.errors import UnsupportedFeatureError, UsageError
from aibackup.manifests.model import FRAMEWORKS
from aibackup.manifests.vectors import DOCUMENT, ID, METADATA, URI, metadata_json, parse_metadata

RAW = "raw"
LANGCHAIN, LLAMAINDEX = FRAMEWORKS
#: ``--layout`` values: auto = the layout recorded in the bundle.
CHOICES = ("auto", RAW, *FRAMEWORKS)
#: The backends whose layout of each framework is known, by connector kind.
KNOWN = {
    LANGCHAIN: ("chroma", "qdrant", "pgvector", "lancedb", "milvus"),
    LLAMAINDEX: ("chroma", "qdrant", "pgvector", "lancedb"),
}
#: Where LlamaIndex keeps the text inside ``_node_content`` too (elsewhere the node's "text" is "").
LI_TEXT_IN_NODE = ("qdrant", "lancedb")
#: Every backend some framework's layout is known on.
BACKENDS = tuple(dict.fromkeys(kind for kinds in KNOWN.values() for kind in kinds))

LC_CONTENT, LC_METADATA = "page_content", "metadata"
#: LangChain's payload keys on Qdrant (content, metadata): its defaults, or what ``QdrantVectorStore``'s
#: ``content_payload_key`` / ``metadata_payload_key`` named (recorded at backup as the evidence's keys).
LC_KEYS = (LC_CONTENT, LC_METADATA)
LI_NODE, LI_TYPE = "_node_content", "_node_type"
LI_KEYS = (LI_NODE, LI_TYPE, "doc_id", "document_id", "ref_doc_id")


@dataclass(frozen=True)
class View:
    """A record as the framework reads it: its id, text, and what it returns besides (LangChain: the
    metadata; LlamaIndex: the node without its text)."""

    id: str
    text: str | None
    rest: Mapping[str, Any]


# --- reading a record the way the framework does ---------------------------------------------------------


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
    if backend == "qdrant":
        text = node.pop("text", None)
        if document is not None or not isinstance(text, str):
            raise ValueError(f"{LI_NODE!r} holds no text")
    else:
        text = document if document is not None or backend != "pgvector" else meta.get(pg_llamaindex.TEXT_COLUMN)
        node.pop("text", None)
    return View(record_id, text, node)


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


# --- writing a record in the framework's layout of another backend ---------------------------------------


def convert(
    framework: str,
    source: str,
    target: str,
    document: str | None,
    metadata: dict[str, Any] | None,
    keys: tuple[str, str] = LC_KEYS,
    collection_id: str | None = None,
    record_id: str = "",
) -> tuple[str | None, dict[str, Any] | None]:
    """A record of `source` in `framework`'s layout (`keys`: LangChain's payload keys there) as `target`
    holds it in that layout: (document, metadata); a Qdrant target gets LangChain's default keys, a pgvector
    target the row of collection `collection_id`. Raises ValueError when the record is not in the layout
    on `source`."""
    seen = view(framework, source, "", document, metadata, keys)
    if source == target:
        return document, metadata
    meta = dict(metadata or {})
    if framework == LANGCHAIN:
        if target == "pgvector":
            return seen.text, {"collection_id": collection_id, "cmetadata": dict(seen.rest)}
        if target == "qdrant":
            return None, {LC_CONTENT: seen.text, LC_METADATA: dict(seen.rest)}
        if target == "lancedb":
            return seen.text, {lance.METADATA: dict(seen.rest)}
        return seen.text, dict(seen.rest) or None
    flat = _li_flat(source, meta)
    node = _node(flat)  # as LlamaIndex wrote it, "text" where it was
    node["text"] = seen.text if target in LI_TEXT_IN_NODE else ""
    flat[LI_NODE] = json.dumps(node)  # LlamaIndex writes it with json.dumps' defaults too
    if target == "pgvector":  # metadata_ is json: its text, as it is stored and read back
        return seen.text, {pg_llamaindex.METADATA_COLUMN: json.dumps(flat), "id": pg_llamaindex.serial_of(record_id)}
    if target == "lancedb":
        return seen.text, {lance.DOC_ID: flat.get("ref_doc_id"), lance.METADATA: flat}
    return (None, flat) if target == "qdrant" else (seen.text, flat)


def transform(
    framework: str,
    source: str,
    target: str,
    collection: str,
    *,
    verified: bool = False,
    keys: tuple[str, str] = LC_KEYS,
    collection_id: str | None = None,
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
                    framework, source, target, doc, parse_metadata(meta), keys, collection_id, record_id=rid
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


def _records(batch: pa.RecordBatch) -> Any:
    return zip(
        batch.column(ID).to_pylist(),
        batch.column(DOCUMENT).to_pylist(),
        batch.column(METADATA).to_pylist(),
        strict=True,
    )


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


# --- detection ---------------------------------------------------------------------------------------------


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
                return {"framework": framework, "backend": self.backend, "evidence": evidence}
        return None

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


# --- planning a restore ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """The layout a restore writes: `framework`'s, from a `source` backend's records into `target`'s.
    `recorded`: the backup found every record in it (an explicit ``--layout`` is checked record by record).
    `keys`: LangChain's payload keys on a Qdrant source (recorded at backup; the defaults otherwise).
    `collection`: the framework's name of the collection where it is not the dataset's (langchain-postgres
    keeps every collection in one table: the recorded name on a pgvector source, the one written on a
    pgvector target; see :func:`place`)."""

    framework: str
    source: str
    target: str
    recorded: bool = False
    keys: tuple[str, str] = LC_KEYS
    collection: str | None = None

    @property
    def target_keys(self) -> tuple[str, str]:
        """LangChain's payload keys on the target: the source's between two Qdrants (records stay as they
        are), else LangChain's defaults."""
        return self.keys if self.source == self.target else LC_KEYS

    def describe(self) -> str:
        custom = f", payload keys {self.keys[0]!r}/{self.keys[1]!r}" if self.keys != LC_KEYS else ""
        if self.source != self.target:
            return f"{self.framework} ({self.source} -> {self.target}{custom})"
        return f"{self.framework} ({self.source}{custom})" if custom else self.framework


def check_choice(choice: str) -> None:
    """UsageError for a ``--layout`` value that is not one of :data:`CHOICES`."""
    if choice not in CHOICES:
        raise UsageError(f"bad --layout {choice!r}: expected one of {', '.join(CHOICES)}")


def resolve(
    choice: str, recorded: Mapping[str, Any] | None, source: str, target: str, collection: str
) -> Applied | None:
    """The layout to write for `collection`: ``--layout`` `choice` (auto: the one `recorded` at backup),
    between the bundle's `source` backend kind and the `target` connector's kind. None: raw.
    Raises UsageError for a framework whose layout is not known on one of the backends."""
    check_choice(choice)
    framework = (recorded or {}).get("framework", RAW) if choice == "auto" else choice
    if framework == RAW:
        return None
    found = recorded is not None and recorded.get("framework") == framework and recorded.get("backend") == source
    if choice == "auto" and unknown_backend(framework, source, target) is not None:
        return None  # raw, and the restore says why (fallback_note)
    for side, kind in (("source", source), ("target", target)):
        if kind not in KNOWN[framework]:
            raise UsageError(
                f"collection {collection!r}: {framework}'s layout on {kind} (the {side}) is not known to this "
                f"aibackup (known: {', '.join(KNOWN[framework])}); restore with --layout raw"
            )
    evidence = (recorded or {}).get("evidence") or {} if found else {}
    keys = LC_KEYS
    if found and framework == LANGCHAIN and source == "qdrant":
        keys = (str(evidence.get("content_key", LC_CONTENT)), str(evidence.get("metadata_key", LC_METADATA)))
    named = evidence.get("collection") if source == "pgvector" else None
    return Applied(framework, source, target, found, keys, str(named) if named else None)


def unknown_backend(framework: str, source: str, target: str) -> str | None:
    """The first of the two backends where `framework`'s layout is not known (None: both are)."""
    return next((kind for kind in (source, target) if kind not in KNOWN.get(framework, ())), None)


def place(
    layout: Applied,
    description: DatasetDescription,
    dest: str,
    *,
    renamed: bool,
    records: Callable[[], Iterable[pa.RecordBatch]] | None = None,
) -> tuple[Applied, DatasetDescription, str]:
    """Where the framework keeps the collection on the target: (layout, the description to plan the restore
    with, the target's name for the dataset). The framework's tables in PostgreSQL and LanceDB are planned
    here as if a bundle of them were restored: LangChain on pgvector keeps every collection in
    langchain-postgres's two tables (the records go to ``langchain_pg_embedding`` under the collection name
    `dest`; out of it they go to a collection named as the LangChain collection was, unless `renamed` by
    the user), LlamaIndex in ``data_<name>``; a LanceDB table's metadata struct is typed from the bundle's
    `records` (read once more, here). Raises UnsupportedFeatureError for a collection the framework's
    table cannot hold."""
    if layout.source == layout.target:
        return layout, description, dest
    if layout.target in ("pgvector", "lancedb", "milvus"):
        dense = description.config.single_vectors()
        if len(description.config.dense) != 1 or len(dense) != 1 or description.config.sparse:
            raise UnsupportedFeatureError(
                f"collection {description.name!r}: {layout.framework}'s {layout.target} table keeps one dense "
                "vector per record; restore with --layout raw"
            )
    if layout.target == "milvus":  # LangChain's only (KNOWN)
        native = milvus.native_definition(dest, dense[0])
        return layout, replace(description, config=replace(description.config, native=native)), dest
    if layout.target == "lancedb":
        if dense[0].name != "":
            raise UnsupportedFeatureError(
                f"collection {description.name!r}: {layout.framework}'s LanceDB table keeps its vector in column "
                f"{lance.VECTOR!r}: restore vector {dense[0].name!r} with --layout raw"
            )
        struct = lance.metadata_type(dest, _target_metadatas(layout, dest, records() if records else ()))
        native = lance.native_definition(layout.framework, dense[0], struct)
        return layout, replace(description, config=replace(description.config, native=native)), dest
    if layout.target == "pgvector":
        if layout.framework == LANGCHAIN:
            native, table = pg_langchain.native_definition(dest, dense[0].size), pg_langchain.EMBEDDINGS
        else:
            native, table = pg_llamaindex.native_definition(dest, dense[0].size), pg_llamaindex.table_name(dest)
        spec = replace(dense[0], options={**dense[0].options, "column": pg_langchain.VECTOR_COLUMN})
        config = replace(description.config, dense=(spec,), native=native)
        return replace(layout, collection=dest), replace(description, config=config), table
    if layout.source == "pgvector" and layout.collection and not renamed:
        return layout, description, layout.collection
    return layout, description, dest


def _target_metadatas(layout: Applied, collection: str, batches: Iterable[pa.RecordBatch]) -> Iterator[Any]:
    """The framework's ``metadata`` of every record as the target will hold it (LanceDB's struct column)."""
    for batch in batches:
        for rid, doc, meta in _records(batch):
            try:
                _, converted = convert(
                    layout.framework, layout.source, layout.target, doc, parse_metadata(meta), layout.keys
                )
            except ValueError as exc:
                raise _refusal(layout.framework, layout.source, collection, rid, exc) from None
            yield (converted or {}).get(lance.METADATA) or {}


def fallback_note(choice: str, recorded: Mapping[str, Any] | None, source: str, target: str) -> str | None:
    """Why a restore with ``--layout auto`` writes raw records although the backup recorded a layout: the
    framework's layout on one of the backends is not known (an explicit ``--layout`` is refused instead)."""
    framework = (recorded or {}).get("framework", RAW)
    if choice != "auto" or framework == RAW:
        return None
    kind = unknown_backend(framework, source, target)
    if kind is None:
        return None
    return (
        f"recorded in {framework}'s layout, restored raw: {framework}'s layout on {kind} is not known to this "
        f"aibackup (known: {', '.join(KNOWN[framework])}); the records are whole, an application reading them "
        f"through {framework} may need its own mapping"
    )


def apply(plan: ImportPlan, layout: Applied) -> ImportPlan:
    """`plan` with the layout's mapping applied first (then the target's own), and the runbook's notes."""
    pg_rows = layout.collection and layout.target == "pgvector" and layout.framework == LANGCHAIN
    collection_id = pg_langchain.collection_uuid(layout.collection) if pg_rows and layout.collection else None
    first = transform(
        layout.framework,
        layout.source,
        layout.target,
        plan.target.name,
        verified=layout.recorded,
        keys=layout.keys,
        collection_id=collection_id,
    )
    then = plan.transform

    def both(batch: pa.RecordBatch) -> pa.RecordBatch:
        return then(first(batch))

    return replace(plan, transform=both, notes=(*plan.notes, *runbook(layout, plan)))


#: Qdrant's names of the neutral distances, as an application passes them (``models.Distance.EUCLID``).
_QDRANT_DISTANCES = {"cosine": "COSINE", "l2": "EUCLID", "ip": "DOT", "manhattan": "MANHATTAN"}
#: langchain-postgres's (``DistanceStrategy.EUCLIDEAN``).
_PG_DISTANCES = {"cosine": "COSINE", "l2": "EUCLIDEAN", "ip": "MAX_INNER_PRODUCT"}


def runbook(layout: Applied, plan: ImportPlan) -> list[str]:
    """What the application sets when it switches to the restored collection (the report's notes)."""
    name = plan.target.name
    dense = plan.target.config.single_vectors()
    distance = dense[0].distance if dense else None
    lines = [f"layout {layout.describe()}: written where {layout.framework} reads it on {layout.target}"]
    if layout.target == "qdrant" and layout.framework == LANGCHAIN and distance:
        content, nested = layout.target_keys
        named = f", content_payload_key={content!r}, metadata_payload_key={nested!r}" if content != LC_CONTENT else ""
        lines.append(
            f"open it with langchain_qdrant.QdrantVectorStore(client, collection_name={name!r}, embedding=..., "
            f"distance=models.Distance.{_QDRANT_DISTANCES[distance]}{named})"
        )
        lines.append(
            "ids that are not UUIDs or unsigned integers became point ids uuid5(516a9226-9fbe-5e46-bb30-59b79d8e957d, "
            "id) (the original kept in payload _aibackup_id): LangChain's get_by_ids and delete take those"
        )
    elif layout.target == "milvus":
        lines.append(
            f"open it with langchain_milvus.Milvus(embedding_function=..., collection_name={name!r}, "
            "connection_args={'uri': ...}, enable_dynamic_field=True) (the metadata is in dynamic fields: "
            "without it langchain-milvus reads none); ids are the pk field: delete(ids=...) takes them "
            "(langchain-milvus has no get_by_ids)"
        )
    elif layout.target == "lancedb" and layout.framework == LANGCHAIN:
        lance_distance = {"cosine": "cosine", "ip": "dot"}.get(str(distance), "l2")
        lines.append(
            f"open it with langchain_community.vectorstores.LanceDB(connection=lancedb.connect(...), "
            f"table_name={name!r}, embedding=..., distance={lance_distance!r}, mode='append') (its default "
            "mode, overwrite, replaces the whole table on the next add)"
        )
    elif layout.target == "lancedb":
        lines.append(
            f"open it with llama_index.vector_stores.lancedb.LanceDBVectorStore(uri=..., table_name={name!r}); node "
            "ids are the id column (LanceDBVectorStore 0.6's delete(ref_doc_id=) and get_nodes(node_ids=) quote "
            "ids in a way LanceDB refuses, on any table: retrieval and inserts work)"
        )
    elif layout.target == "pgvector" and layout.framework == LLAMAINDEX:
        size = dense[0].size if dense else "..."
        lines.append(
            "open it with llama_index.vector_stores.postgres.PGVectorStore.from_params(..., "
            f"table_name={layout.collection or name!r}, embed_dim={size}); it ranks by cosine distance"
            + (f" (the source's was {distance})" if distance and distance != "cosine" else "")
        )
    elif layout.target == "pgvector":
        strategy = (
            f", distance_strategy=DistanceStrategy.{_PG_DISTANCES[distance]}" if distance in _PG_DISTANCES else ""
        )
        lines.append(
            f"open it with langchain_postgres.PGVector(embeddings=..., collection_name={layout.collection or name!r}, "
            f"connection=..., use_jsonb=True{strategy}); the ids are the source's, as text"
        )
    elif layout.target == "qdrant":
        lines.append(
            f"open it with llama_index.vector_stores.qdrant.QdrantVectorStore(client=..., collection_name={name!r})"
        )
    elif layout.framework == LANGCHAIN:
        lines.append(
            f"open it with langchain_chroma.Chroma(collection_name={name!r}, client=..., embedding_function=...)"
        )
    else:
        lines.append(
            "open it with llama_index.vector_stores.chroma.ChromaVectorStore("
            f"chroma_collection=client.get_collection({name!r}))"
        )
    return lines
