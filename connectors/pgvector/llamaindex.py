"""LlamaIndex's layout on PostgreSQL (llama-index-vector-stores-postgres's ``PGVectorStore``): its table, so
that a LlamaIndex collection of another backend restores into it, and its rows are known by their node ids.

``PGVectorStore(table_name=NAME)`` keeps a collection in the table ``data_NAME``: ``id`` bigserial primary
key, ``text`` varchar (the node's text), ``metadata_`` json (the node without its text in ``_node_content``,
``_node_type``, ``doc_id``, ``document_id``, ``ref_doc_id`` and flat copies of the node's metadata),
``node_id`` varchar and ``embedding vector(DIM)``, with a btree index on ``metadata_->>'ref_doc_id'``.
The application addresses records by node id, not by the serial key: such a table's record id is its
``node_id`` (:func:`is_table`, recorded as the definition's ``id_column``), so the node ids are the ids on
every backend; the serial key travels as a column, and a row from another backend gets one derived from
its node id (:func:`serial_of`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

PREFIX = "data_"
ID_COLUMN, TEXT_COLUMN, METADATA_COLUMN, VECTOR_COLUMN = "node_id", "text", "metadata_", "embedding"
#: The columns of the table (``text_search_tsv`` too, with hybrid search).
COLUMNS = ("id", TEXT_COLUMN, METADATA_COLUMN, ID_COLUMN, VECTOR_COLUMN)


def is_table(native: Mapping[str, Any]) -> bool:
    """Whether a table's definition is PGVectorStore's (its name, columns and serial key)."""
    names = [c["name"] for c in native.get("columns", ())]
    return (
        str(native.get("table", "")).startswith(PREFIX)
        and set(names) - {"text_search_tsv"} == set(COLUMNS)
        and (native.get("primary_key") or {}).get("columns") == ["id"]
    )


def table_name(collection: str) -> str:
    """The table PGVectorStore(table_name=`collection`) keeps its rows in."""
    return f"{PREFIX}{collection}"


def collection_of(table: str) -> str:
    """The ``table_name`` an application passes for `table` (``data_kb`` -> ``kb``)."""
    return table[len(PREFIX) :] if table.startswith(PREFIX) else table


def serial_of(node_id: str) -> int:
    """The serial key a row of another backend gets: 62 bits of the sha256 of its node id (the same every
    restore, so the restore's content check reads back what it wrote; far above the numbers the sequence
    gives, which continues after the largest)."""
    return int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big") >> 2


def native_definition(collection: str, dimension: int, schema: str = "public") -> dict[str, Any]:
    """A pgvector bundle's definition of PGVectorStore's table for `collection` (its default, without hybrid
    search): rows of another backend are written as if the table had been backed up."""
    table = table_name(collection)
    return {
        "schema": schema,
        "table": table,
        "columns": [
            {
                "name": "id",
                "type": "bigint",
                "base": "int8",
                "not_null": True,
                "default": f"nextval('{table}_id_seq'::regclass)",
            },
            {"name": TEXT_COLUMN, "type": "character varying", "base": "varchar", "not_null": True},
            {"name": METADATA_COLUMN, "type": "json", "base": "json", "not_null": False},
            {"name": ID_COLUMN, "type": "character varying", "base": "varchar", "not_null": False},
            {
                "name": VECTOR_COLUMN,
                "type": f"vector({dimension})",
                "base": "vector",
                "not_null": False,
                "dim": dimension,
            },
        ],
        "comment": None,
        "constraints": [],
        "document": TEXT_COLUMN,
        "id_column": ID_COLUMN,
        "indexes": [
            {
                "name": f"{collection}_idx_1"[:63],
                "column": "(metadata_ ->> 'ref_doc_id'::text)",
                "method": "btree",
                "opclass": "text_ops",
                "definition": (
                    f"CREATE INDEX {collection}_idx_1 ON {schema}.{table} USING btree "
                    "(((metadata_ ->> 'ref_doc_id'::text)))"
                ),
            }
        ],
        "partitioned": False,
        "primary_key": {"columns": ["id"], "name": f"{table}_pkey"},
        "references": [],
    }
