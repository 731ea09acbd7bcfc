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

The package: the framework's reading of records in :mod:`.reading`, writing them into another backend's
layout in :mod:`.writing`, detection at backup in :mod:`.detection`, and the restore's choice, placement
and runbook in :mod:`.planning`; the names below are the ones the rest of aibackup uses as ``layouts.X``.
"""

from __future__ import annotations

from aibackup.manifests.model import FRAMEWORKS

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
LC_KEYS: tuple[str, str] = (LC_CONTENT, LC_METADATA)
LI_NODE, LI_TYPE = "_node_content", "_node_type"
LI_KEYS = (LI_NODE, LI_TYPE, "doc_id", "document_id", "ref_doc_id")

# The modules read the constants above from this package, so they are imported after them.
from aibackup.connectors.layouts.detection import Detector, langchain_keys  # noqa: E402
from aibackup.connectors.layouts.planning import (  # noqa: E402
    Applied,
    apply,
    check_choice,
    fallback_note,
    merge_keys,
    place,
    resolve,
    runbook,
    unknown_backend,
)
from aibackup.connectors.layouts.reading import View, view, views  # noqa: E402
from aibackup.connectors.layouts.writing import convert, transform  # noqa: E402

__all__ = [
    "BACKENDS",
    "CHOICES",
    "KNOWN",
    "LANGCHAIN",
    "LC_CONTENT",
    "LC_KEYS",
    "LC_METADATA",
    "LI_KEYS",
    "LI_NODE",
    "LI_TEXT_IN_NODE",
    "LI_TYPE",
    "LLAMAINDEX",
    "RAW",
    "Applied",
    "Detector",
    "View",
    "apply",
    "check_choice",
    "convert",
    "fallback_note",
    "langchain_keys",
    "merge_keys",
    "place",
    "resolve",
    "runbook",
    "transform",
    "unknown_backend",
    "view",
    "views",
]
