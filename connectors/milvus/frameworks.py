"""LangChain's collection in Milvus (langchain-milvus's ``Milvus``): what it is, so that a LangChain
collection of another backend restores into the collection LangChain reads.

langchain-milvus keeps a document in the fields ``pk`` (VARCHAR primary key: the document's id), ``text``
and ``vector``; its metadata in scalar fields of their own (typed from the first document it adds) or, in a
collection with dynamic fields, as dynamic keys. Read by this connector either way, a record's text is its
document and its metadata the flat object of those fields: LangChain's layout on Chroma. A restore writes
the dynamic form (:func:`native_definition`), which holds any metadata the records have; the application
opens it with ``Milvus(..., enable_dynamic_field=True)`` (without it, langchain-milvus reads no metadata
from dynamic keys).

LlamaIndex's Milvus store (llama-index-vector-stores-milvus) needs pymilvus 2, beside this connector's
pymilvus 3: its layout is not written here.
"""

from __future__ import annotations

from typing import Any

from aibackup.connectors.milvus.plan import MAX_VARCHAR
from aibackup.connectors.milvus.schema import DEFAULT_PARTITION, METRICS
from aibackup.errors import UnsupportedFeatureError
from aibackup.manifests.model import DenseVectorSpec

PRIMARY, TEXT, VECTOR = "pk", "text", "vector"


def native_definition(collection: str, spec: DenseVectorSpec) -> dict[str, Any]:
    """A Milvus bundle's definition of langchain-milvus's collection for `spec`'s vectors (the connector's
    Milvus -> Milvus path makes it), with dynamic fields for the metadata."""
    if spec.distance not in METRICS:
        raise UnsupportedFeatureError(
            f"collection {collection!r}: Milvus has no {spec.distance} metric; restore with --layout raw "
            "(and --allow-lossy to search it with l2)"
        )
    text = {"type": "VARCHAR", "params": {"max_length": MAX_VARCHAR}}
    return {
        "kind": "milvus",
        "mode": "server",
        "description": "",
        "auto_id": False,
        "enable_dynamic_field": True,
        "consistency_level": None,
        "properties": {},
        "fields": [
            {"name": PRIMARY, "is_primary": True, **text},
            {"name": TEXT, **text},
            {"name": VECTOR, "type": "FLOAT_VECTOR", "params": {"dim": spec.size}},
        ],
        "functions": [],
        "indexes": [
            {
                "field": VECTOR,
                "name": VECTOR,
                "index_type": "AUTOINDEX",
                "metric_type": METRICS[spec.distance],
                "params": {},
            }
        ],
        "partitions": [DEFAULT_PARTITION],
    }
