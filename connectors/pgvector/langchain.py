"""LangChain's layout on PostgreSQL (langchain-postgres's ``PGVector``): what its tables are, so that a
LangChain collection of another backend restores into them and a restore of them finds the collection's name.

langchain-postgres keeps every collection in two tables: ``langchain_pg_collection`` (``uuid`` primary key,
``name`` unique, ``cmetadata`` json) and ``langchain_pg_embedding`` (``id`` varchar primary key,
``collection_id`` uuid referencing the collection ``ON DELETE CASCADE``, ``embedding vector`` without a
dimension, ``document`` varchar, ``cmetadata`` jsonb, and a GIN index on ``cmetadata``). A restore into
pgvector in LangChain's layout writes a pgvector bundle's definition of exactly those tables
(:func:`native_definition`), so the connector's own path for a pgvector -> pgvector restore makes them (the
collection table first, where it is missing, with the collection's row).

A collection made by a restore gets the uuid :func:`collection_uuid` of its name: the same name gives the same
uuid, in every restore.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

EMBEDDINGS = "langchain_pg_embedding"
COLLECTIONS = "langchain_pg_collection"
#: the embedding table's columns beside the id, the vector and the document, as a record's metadata holds them
COLUMNS = ("collection_id", "cmetadata")
VECTOR_COLUMN, DOCUMENT_COLUMN = "embedding", "document"
#: uuid5 namespace of the collections a restore makes (a fixed, random uuid: not any other tool's)
NAMESPACE = uuid.UUID("3c1f7e0a-52d4-4b8e-9a61-0f6b2d9c8e47")


def collection_uuid(name: str) -> str:
    """The ``langchain_pg_collection.uuid`` a restore gives collection `name`."""
    return str(uuid.uuid5(NAMESPACE, name))


def native_definition(collection: str, dimension: int, schema: str = "public") -> dict[str, Any]:
    """A pgvector bundle's definition of langchain-postgres's embedding table, carrying its collection table
    with the one row of `collection`; `dimension`: what the undeclared ``embedding`` column holds."""
    return {
        "schema": schema,
        "table": EMBEDDINGS,
        "columns": [
            {"name": "id", "type": "character varying", "base": "varchar", "not_null": True},
            {"name": "collection_id", "type": "uuid", "base": "uuid", "not_null": False},
            {
                "name": VECTOR_COLUMN,
                "type": "vector",
                "base": "vector",
                "not_null": False,
                "dim": None,
                "dim_held": dimension,
            },
            {"name": DOCUMENT_COLUMN, "type": "character varying", "base": "varchar", "not_null": False},
            {"name": "cmetadata", "type": "jsonb", "base": "jsonb", "not_null": False},
        ],
        "comment": None,
        "constraints": [
            {
                "name": f"{EMBEDDINGS}_collection_id_fkey",
                "type": "f",
                "definition": f"FOREIGN KEY (collection_id) REFERENCES {COLLECTIONS}(uuid) ON DELETE CASCADE",
                "references": [schema, COLLECTIONS],
            }
        ],
        "document": DOCUMENT_COLUMN,
        "indexes": [
            {
                "name": "ix_cmetadata_gin",
                "column": "cmetadata",
                "method": "gin",
                "opclass": "jsonb_path_ops",
                "definition": (
                    f"CREATE INDEX ix_cmetadata_gin ON {schema}.{EMBEDDINGS} USING gin (cmetadata jsonb_path_ops)"
                ),
            }
        ],
        "partitioned": False,
        "primary_key": {"columns": ["id"], "name": f"{EMBEDDINGS}_pkey"},
        "references": [
            {
                "definition": {
                    "schema": schema,
                    "table": COLLECTIONS,
                    "columns": [
                        {"name": "uuid", "type": "uuid", "base": "uuid", "not_null": True},
                        {"name": "name", "type": "character varying", "base": "varchar", "not_null": True},
                        {"name": "cmetadata", "type": "json", "base": "json", "not_null": False},
                    ],
                    "comment": None,
                    "constraints": [{"name": f"{COLLECTIONS}_name_key", "type": "u", "definition": "UNIQUE (name)"}],
                    "indexes": [],
                    "partitioned": False,
                    "primary_key": {"columns": ["uuid"], "name": f"{COLLECTIONS}_pkey"},
                },
                "rows": [f"({collection_uuid(collection)},{_quoted(collection)},)"],
            }
        ],
    }


def held_elsewhere_sql(embeddings: str, collections: str, staging: str, id_column: str, collection: str) -> str:
    """The name of another collection (or its uuid, or '' for none) holding in table `embeddings` a row of
    an id that `staging` brings (`id_column` and `collection`: the staged rows' id and collection uuid, as
    SQL; `collections`: the collection table, qualified). The embedding table's ids are its primary key
    across every collection: a merge upserting such an id would move the row out of the collection that
    holds it, which the application then finds emptied."""
    return (
        f"SELECT coalesce(c.name, t.collection_id::text, '') FROM {embeddings} t "
        f"JOIN {staging} s ON t.id = s.{id_column} LEFT JOIN {collections} c ON c.uuid = t.collection_id "
        f"WHERE t.collection_id IS DISTINCT FROM ({collection})::uuid LIMIT 1"
    )


def collection_name(native: Mapping[str, Any] | None, collection_id: str) -> str | None:
    """The name of collection `collection_id`, from the ``langchain_pg_collection`` rows a pgvector bundle
    carries with its embedding table (None: not carried, or no such row)."""
    for reference in (native or {}).get("references", ()):
        if reference.get("definition", {}).get("table") != COLLECTIONS:
            continue
        names = [c["name"] for c in reference["definition"].get("columns", ())]
        if "uuid" not in names or "name" not in names:
            return None
        for text in reference.get("rows", ()):
            fields = parse_row(text)
            if len(fields) == len(names) and fields[names.index("uuid")] == collection_id:
                return fields[names.index("name")]
    return None


def parse_row(text: str) -> list[str | None]:
    """The fields of PostgreSQL's text form of a row, ``(a,"b c",)``: an empty unquoted field is NULL; a
    quoted one takes ``""`` and backslash escapes for its quote and backslash."""
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError(f"not a row: {text[:40]!r}")
    fields: list[str | None] = []
    body, i = text[1:-1], 0
    while True:
        if i < len(body) and body[i] == '"':
            value, i = [], i + 1
            while i < len(body):
                ch = body[i]
                if ch == "\\" and i + 1 < len(body):
                    value.append(body[i + 1])
                    i += 2
                elif ch == '"' and body[i + 1 : i + 2] == '"':
                    value.append('"')
                    i += 2
                elif ch == '"':
                    i += 1
                    break
                else:
                    value.append(ch)
                    i += 1
            end = body.find(",", i)
            fields.append("".join(value))
        else:
            end = body.find(",", i)
            raw = body[i:] if end < 0 else body[i:end]
            fields.append(raw or None)
        if end < 0:
            return fields
        i = end + 1


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
