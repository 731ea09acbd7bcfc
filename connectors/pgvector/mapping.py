"""How a pgvector table maps to canonical records (the rules are in :mod:`.connector`'s docstring).

:class:`Columns` is the role of each column of a table (id, dense, sparse, document, uri, metadata), which
:func:`table_columns` decides from the table's definition (``config.native``, :mod:`.catalog`);
:func:`vectors_config` turns a definition into the neutral :class:`VectorsConfig`. Two reads of a table's
rows complete its definition before that: :func:`held_dimension` (the one dimension a column declared
without one holds) and :func:`float_text_matters` (whether a jsonb column travels as its text).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aibackup.connectors.pgvector import catalog
from aibackup.connectors.pgvector.catalog import DENSE_TYPES, SPARSE_TYPE, quote
from aibackup.errors import SourceDataError, UsageError
from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import DOCUMENT, ID, METADATA, URI

#: The column that holds the unnamed vector (pgvector's and LangChain's usual name).
UNNAMED_COLUMN = "embedding"


@dataclass(frozen=True)
class Columns:
    """How a table's columns map to the canonical record (decided from its definition)."""

    id: tuple[str, ...]  # primary key columns; () = row positions
    dense: tuple[tuple[str, str, int], ...]  # (column, type, dim) in column order
    sparse: tuple[tuple[str, int | None], ...]  # (column, dim)
    document: str | None
    uri: str | None
    metadata: tuple[dict[str, Any], ...]  # the other columns' definitions
    layout: bool  # the layout restores write: metadata is the `metadata` jsonb column itself


def table_columns(
    native: Mapping[str, Any], name: str, document_param: str | None, restored: Mapping[tuple[str, str], str]
) -> Columns:
    """The role of each column (see the module docstring), or SourceDataError for a table aibackup
    cannot represent (a vector column without a fixed dimension, a document column that is no text).
    `document_param` is the ``?document=`` column, `restored` the document column of each (schema, table)
    the connector restored."""
    cols = native["columns"]
    primary = tuple(native["primary_key"]["columns"]) if native.get("primary_key") else ()
    if native.get("id_column"):  # a framework's own id column (LlamaIndex's node_id): the key is a column
        primary = (native["id_column"],)
    dense, sparse, rest = [], [], []
    for c in cols:
        if c["base"] in DENSE_TYPES:
            dim = c.get("dim") or c.get("dim_held")
            if not dim:
                raise SourceDataError(
                    f"table {name}: column {c['name']} is {c['type']} without a dimension and holds no "
                    f"vector to learn one from; give it one (ALTER TABLE … ALTER COLUMN {c['name']} TYPE "
                    f"{c['base']}(N)) to back it up"
                )
            dense.append((c["name"], c["base"], int(dim)))
        elif c["base"] == SPARSE_TYPE:
            sparse.append((c["name"], c.get("dim")))
        elif c["name"] not in primary:
            rest.append(c)
    names = {c["name"]: c for c in rest}
    layout = (
        primary == (ID,)
        and METADATA in names
        and names[METADATA]["base"] == "jsonb"
        and set(names) <= {DOCUMENT, URI, METADATA}
        and all(names[k]["base"] == "text" for k in (DOCUMENT, URI) if k in names)
    )
    # ?document= names the column in the tables that have it (a database may hold several kinds); a
    # table this connector restored keeps the document column its bundle recorded.
    document = document_param if document_param in names else None
    document = document or native.get("document") or restored.get((native["schema"], native["table"]))
    if document is None and layout and DOCUMENT in names:
        document = DOCUMENT
    if document is not None and names[document]["base"] not in ("text", "varchar", "bpchar"):
        raise UsageError(f"table {name}: ?document={document} is {names[document]['type']}, not text")
    uri = URI if layout and URI in names else None
    metadata = tuple(c for c in rest if c["name"] not in (document, uri))
    return Columns(primary, tuple(dense), tuple(sparse), document, uri, metadata, bool(layout))


def vectors_config(native: dict[str, Any], columns: Columns) -> VectorsConfig:
    """The neutral config of a table: a dense spec per vector/halfvec column (its distance from its index's
    operator class, l2 when it has none), a sparse spec per sparsevec column, the HNSW parameters of the
    first HNSW index, and the whole definition as ``native``."""
    dense, hnsw = [], None
    for column, sql_type, dim in columns.dense:
        index = catalog.vector_index(native, column)
        distance = catalog.opclass_distance(index.get("opclass") if index else None)
        options: dict[str, Any] = {"column": column, "distance_from": "index" if distance else "default"}
        if index is not None:
            options["index"] = {k: index[k] for k in ("method", "opclass", "options") if k in index}
            if index["method"] == "hnsw" and hnsw is None:
                params = index.get("options", {})
                hnsw = {"m": int(params.get("m", 16)), "ef_construction": int(params.get("ef_construction", 64))}
        spec_name = "" if column == UNNAMED_COLUMN else column
        datatype = "float16" if sql_type == "halfvec" else "float32"
        dense.append(DenseVectorSpec(spec_name, dim, distance or "l2", datatype=datatype, options=options))
    sparse = [SparseVectorSpec(c, options={"column": c, "dim": d}) for c, d in columns.sparse]
    return VectorsConfig(dense=tuple(dense), sparse=tuple(sparse), hnsw=hnsw, native=native)


def is_pgvector(config: VectorsConfig) -> bool:
    """Whether a bundle's config holds a pgvector table's definition (a pgvector -> pgvector restore)."""
    native = config.native or {}
    return isinstance(native.get("columns"), list) and "table" in native and "primary_key" in native


def held_dimension(conn: Any, table: str, column: str, name: str) -> int | None:
    """The one dimension the vectors of a column declared without one hold (LangChain's
    ``langchain_pg_embedding.embedding`` is such a column); None when it holds none. SourceDataError
    for vectors of several dimensions (a bundle column has one)."""
    low, high = catalog.scalar_row(
        conn, f"SELECT min(vector_dims({quote(column)})), max(vector_dims({quote(column)})) FROM {table}"
    )
    if low != high:
        raise SourceDataError(
            f"table {name}: column {column} holds vectors of {low} to {high} dimensions; a backup keeps one "
            "dimension per vector column (split the table, or give the column one dimension)"
        )
    return int(low) if low is not None else None


#: Does a jsonb column hold a number that float64 would not give back as PostgreSQL wrote it (``1.10``, more
#: digits than a double holds, beyond its range)? Integers are exact either way (Python's ints), and so is a
#: whole float written with one ``.0`` (``0.0``, ``3.0``: how Python, and a restore into jsonb, write it;
#: float8's own text has no fraction, so without the ``.0`` every LangChain table with a whole float in its
#: metadata travelled as text and lost its layout).
FLOAT_TEXT_SQL = """
SELECT EXISTS (
  SELECT 1 FROM {table} t, jsonb_path_query(t.{column}, 'strict $.**') v
  WHERE jsonb_typeof(v) = 'number' AND v::text ~ '[.eE]'
    AND (abs(v::text::numeric) >= 1e308
      OR v::text::numeric::float8::text::numeric::text
         || CASE WHEN trunc(v::text::numeric::float8) = v::text::numeric::float8 THEN '.0' ELSE '' END
         <> v::text))
"""


def float_text_matters(conn: Any, table: str, column: str) -> bool:
    """True when a jsonb column must be kept as its text to come back exactly (its metadata value is then
    the jsonb's text, a string: see :mod:`.connector`'s docstring)."""
    return bool(catalog.scalar(conn, FLOAT_TEXT_SQL.format(table=table, column=quote(column))))
