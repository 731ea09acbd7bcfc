"""PostgreSQL with pgvector: ``pgvector://[USER@]HOST[:PORT]/DB`` (``?schema=``, ``?sslmode=``,
``?document=COLUMN``; ``pgvector:///DB?host=/run/postgresql`` for a socket), kind "pgvector", through
psycopg 3 (``pip install 'aibackup[pgvector]'``). The password comes from ``PGPASSWORD`` or ``~/.pgpass``
as libpq reads them, never from the URI (:mod:`aibackup.connectors.postgres`).

Collections
-----------
Every ordinary or partitioned table with a ``vector``, ``halfvec`` or ``sparsevec`` column (``?schema=``
limits them to one schema). A table in ``public`` (or in the ``?schema=`` given) is named by its table
name, any other ``SCHEMA.TABLE``; ``--collection`` takes either spelling.

Reading: one snapshot
---------------------
A source connection runs one ``REPEATABLE READ, READ ONLY`` transaction from the first call to
``close``: counts, exports and the search baseline of every table of the backup see one consistent state
of the database. Each table is read by ``COPY (SELECT …) TO STDOUT (FORMAT BINARY)`` of pages of about
64 MB of heap blocks (TID range scans: sequential, physical order; libpq would otherwise buffer as much of
one COPY as the socket holds), streamed: ~8 MB of rows at a time are cut at the message boundaries
PostgreSQL sends and decoded into Arrow with numpy (pgvector's binary ``vector`` is uint16 dim, uint16
unused, big-endian float32s: no Python object per value).

Canonical mapping
-----------------
- **id**: the primary key; one column as its text form (integers in decimal, uuids lowercase), several
  as canonical JSON of their values in key order (``[7,"a"]``). A table without a primary key gets the
  row positions of the snapshot in physical order (``0``, ``1``, …) and the backup says so: a restore into
  pgvector writes them in that order, so the positions prove the restore, but they are not stable names.
- **dense vectors**: each ``vector``/``halfvec`` column; a column named ``embedding`` is the unnamed vector
  (``vector`` in the bundle), any other is a named vector of its column's name. ``halfvec`` is widened to
  float32 exactly and recorded (``datatype`` float16): a pgvector restore makes halfvec again. NULL is a
  null cell. A column declared without a dimension (langchain-postgres's ``embedding vector``) takes the
  one its vectors hold; vectors of several dimensions in one column are refused (SourceDataError).
- **distance**: the operator class of the column's HNSW or IVFFlat index (``vector_cosine_ops`` cosine,
  ``_l2_ops`` l2, ``_ip_ops`` ip, ``_l1_ops`` manhattan); a column without one is l2 (pgvector's ``<->``),
  and the manifest says the distance was not known (``options.distance_from``).
- **sparse**: each ``sparsevec`` column, indices 0-based as pgvector keeps them (its text form counts
  from 1).
- **document**: the text column ``?document=COLUMN`` names (or ``document`` in the layout below).
- **metadata**: every other column, by name; NULL is an absent key. Values as PostgreSQL's ``to_jsonb``
  writes them (numbers, booleans, text, jsonb as JSON, arrays as lists, timestamps in ISO 8601 UTC,
  ``bytea`` as ``\\x`` hex), but ``numeric`` as text and ``json`` as its text, so that they come back
  exactly. A jsonb column is JSON, unless it holds a number float64 would not give back as written
  (``1.10``, 20 significant digits): then that column's values are its text (the backup reads each jsonb
  column once more to know).
- **the layout restores from other backends write** ``(id text primary key, <vector columns>, [sparse
  columns], document text, uri text, metadata jsonb)``: read back, its ``metadata`` column is the record's
  metadata (not a key of it), so Chroma -> pgvector -> export gives the same records.
- **config**: the neutral fields plus ``native``: the table's whole definition (columns, types,
  nullability, defaults, identity and generated columns, primary key, constraints, indexes with
  parameters, comments: :mod:`.catalog`). pgvector -> pgvector recreates that table.

Restore
-------
The table is created (``--mode`` create refuses a non-empty table and writes into an empty one of the same
columns; overwrite drops it and creates it again; merge upserts on the primary key), the rows go in with
binary ``COPY … FROM STDIN``, then, as pg_restore does, constraints, indexes and comments are made and
``ANALYZE`` runs: in one transaction, so a failure leaves nothing. A pgvector bundle goes through a
temporary table (``jsonb_populate_record`` turns the metadata back into each column's type). Any other
bundle makes the layout above, with an HNSW index per dense vector whose operator class matches its
distance (none above 2000 dimensions for vector, 4000 for halfvec: pgvector's limits; the restore says
so). PGOPTIONS reaches the server: ``PGOPTIONS='-c maintenance_work_mem=2GB'`` builds a big HNSW index in
memory. Nothing is ever dropped that the restore did not create, but with ``--mode overwrite``.

Lossy rules (refused with UnsupportedFeatureError unless --allow-lossy): multivectors (no pgvector type)
are dropped. Never mapped: NaN/Infinity in a vector (pgvector refuses them) or in metadata (jsonb holds
neither), text holding NUL (PostgreSQL text cannot), a vector above 16000 dimensions. A table a foreign key
references travels with the table (definition and rows, up to 10,000: :func:`.catalog.referenced_tables`)
and is made first where missing, so the key is made again; a larger one is left out and its key with it
(said).

Checks: beyond the records, a pgvector -> pgvector restore compares the restored table's definition with
the recorded one (columns, types, nullability, primary key, constraints, index methods and parameters).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from aibackup.connectors import postgres
from aibackup.connectors.base import (
    MODES,
    DatasetDescription,
    ExportState,
    ImportPlan,
    Location,
    Transform,
    VectorConnector,
    chain,
    identity,
)
from aibackup.connectors.pgvector import catalog, codec
from aibackup.connectors.pgvector.catalog import DENSE_TYPES, SPARSE_TYPE, qualified, quote
from aibackup.connectors.sparse import sparse_without_zeros
from aibackup.errors import (
    ConnectorError,
    DatasetNotFoundError,
    SourceDataError,
    TargetNotEmptyError,
    UnsupportedFeatureError,
    UsageError,
)
from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import (
    DOCUMENT,
    ID,
    METADATA,
    URI,
    canonical_json,
    dense_column,
    metadata_json,
    sparse_column,
)
from aibackup.manifests.vectors import (
    SPARSE_TYPE as SPARSE_ARROW,
)

if TYPE_CHECKING:
    import psycopg

#: The column that holds the unnamed vector (pgvector's and LangChain's usual name).
UNNAMED_COLUMN = "embedding"
#: Bytes of the COPY stream decoded at a time (a batch): bounded memory whatever the table.
CHUNK_BYTES = 8 << 20
#: Bytes of the table read by one COPY (see _pages).
PAGE_BYTES = 64 << 20
#: pgvector's limits: dimensions of a column, and of an HNSW/IVFFlat index per type.
MAX_DIM = 16000
INDEX_MAX_DIM = {"vector": 2000, "halfvec": 4000}
SPARSE_MAX_DIM = 1_000_000_000
#: Rows per binary COPY FROM message of a restore.
WRITE_ROWS = 5000
#: jsonb_build_object takes at most 100 arguments: metadata objects are built 40 columns at a time.
OBJECT_COLUMNS = 40


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


class PgvectorConnector(VectorConnector):
    """Tables with pgvector columns in one PostgreSQL database. See the module docstring."""

    kind = "pgvector"

    def __init__(self, location: Location, *, create: bool = False, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(location, create=create, options=options)
        self._where = location.display()
        self._schema = location.params.get("schema")
        self._document = location.params.get("document")
        self._target = create
        self._conn: psycopg.Connection[Any] | None = postgres.connect(location, autocommit=create)
        if not create:
            # One snapshot for the whole backup: every statement until close() runs in this transaction.
            import psycopg

            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
        with self._errors("reading the server's settings"):
            # Timestamps are written in UTC whatever the server's zone: two backups give the same text.
            self._conn.execute("SET TIME ZONE 'UTC'")
        self._notes: dict[str, list[str]] = {}
        #: (schema, table) -> the document column of a table restored here (for the restore's checks)
        self._documents: dict[tuple[str, str], str] = {}
        #: name -> the last description of that table (a source's snapshot does not change; a target's
        #: is described again after each import)
        self._described: dict[str, DatasetDescription] = {}
        #: name -> whether the last import made the table (the definition check applies only then)
        self._created: dict[str, bool] = {}

    # --- reading -----------------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        conn = self._require()
        with self._errors("listing tables"):
            found = catalog.tables(conn, self._schema)
        by_name = {self._name(s, t): (s, t) for s, t in found}
        wanted = sorted(by_name) if names is None else list(names)
        out = []
        for name in wanted:
            key = self._resolve(name, by_name)
            if key is None:
                raise DatasetNotFoundError(f"table {name!r} with a vector column not found in {self._where}")
            out.append(self._describe(self._name(*key), *key))
        if self._document and out and not any(self._has_document(d) for d in out):
            raise UsageError(f"no table of {self._where} has the column {self._document!r} that ?document= names")
        return out

    def _has_document(self, dataset: DatasetDescription) -> bool:
        return self._columns(dataset.config.native, dataset.name).document == self._document

    def _name(self, schema: str, table: str) -> str:
        return table if schema == (self._schema or "public") else f"{schema}.{table}"

    def _resolve(self, name: str, by_name: Mapping[str, tuple[str, str]]) -> tuple[str, str] | None:
        if name in by_name:
            return by_name[name]
        schema, dot, table = name.partition(".")
        return (schema, table) if dot and (schema, table) in by_name.values() else None

    def _describe(self, name: str, schema: str, table: str) -> DatasetDescription:
        conn = self._require()
        with self._errors("reading the definition of", name):
            native = catalog.definition(conn, schema, table)
            for column in native["columns"]:
                if column["base"] == "jsonb" and _float_text_matters(conn, qualified(schema, table), column["name"]):
                    column["exported_as"] = "text"
                if column["base"] in DENSE_TYPES and not column.get("dim"):
                    column["dim_held"] = self._held_dimension(qualified(schema, table), column["name"], name)
            rows = _scalar(conn, f"SELECT count(*) FROM {qualified(schema, table)}")
            native["references"], left_out = catalog.referenced_tables(conn, native)
        self._notes[name] = left_out
        columns = self._columns(native, name)
        native["document"] = columns.document  # a restore of this bundle knows it again
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
        config = VectorsConfig(dense=tuple(dense), sparse=tuple(sparse), hnsw=hnsw, native=native)
        self._described[name] = DatasetDescription(name=name, config=config, rows=rows)
        return self._described[name]

    def _held_dimension(self, table: str, column: str, name: str) -> int | None:
        """The one dimension the vectors of a column declared without one hold (LangChain's
        ``langchain_pg_embedding.embedding`` is such a column); None when it holds none. SourceDataError
        for vectors of several dimensions (a bundle column has one)."""
        low, high = _scalar_row(
            self._require(), f"SELECT min(vector_dims({quote(column)})), max(vector_dims({quote(column)})) FROM {table}"
        )
        if low != high:
            raise SourceDataError(
                f"table {name}: column {column} holds vectors of {low} to {high} dimensions; a backup keeps one "
                "dimension per vector column (split the table, or give the column one dimension)"
            )
        return int(low) if low is not None else None

    def _columns(self, native: Mapping[str, Any], name: str) -> Columns:
        """The role of each column (see the module docstring), or SourceDataError for a table aibackup
        cannot represent (a vector column without a fixed dimension, a document column that is no text)."""
        cols = native["columns"]
        primary = tuple(native["primary_key"]["columns"]) if native.get("primary_key") else ()
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
        document = self._document if self._document in names else None
        document = document or native.get("document") or self._documents.get((native["schema"], native["table"]))
        if document is None and layout and DOCUMENT in names:
            document = DOCUMENT
        if document is not None and names[document]["base"] not in ("text", "varchar", "bpchar"):
            raise UsageError(f"table {name}: ?document={document} is {names[document]['type']}, not text")
        uri = URI if layout and URI in names else None
        metadata = tuple(c for c in rest if c["name"] not in (document, uri))
        return Columns(primary, tuple(dense), tuple(sparse), document, uri, metadata, bool(layout))

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every row as canonical batches, binary COPYs of pages of the table in the backup's snapshot (see
        the module docstring); SourceDataError for a value the bundle cannot hold (a vector of another
        dimension)."""
        native = dataset.config.native
        columns = self._columns(native, dataset.name)
        target = qualified(native["schema"], native["table"])
        select, decoders = self._select(columns)
        schema = dataset.schema
        position = 0
        notes = list(self._notes.get(dataset.name, ()))  # what describe found (referenced tables left out)
        if not columns.id:
            notes.append(
                f"table {dataset.name} has no primary key: its ids are the row positions (0, 1, …) of this "
                "snapshot in physical order, not stable names"
            )
        for low, high in self._pages(target, dataset.name):
            # A page of heap blocks (a TID range scan: sequential, in physical order, which numbers the rows
            # of a table without a primary key). One COPY of a whole table could leave a buffer the size of
            # the table in memory: libpq reads as much of a COPY as the socket holds, whenever it reads.
            sql = (
                f"COPY (SELECT {', '.join(select)} FROM {target} WHERE ctid >= '({low},0)'::tid"
                + (f" AND ctid < '({high},0)'::tid" if high is not None else "")
                + ") TO STDOUT (FORMAT BINARY)"
            )
            for batch in self._copy(sql, decoders, columns, schema, position, dataset.name):
                position += batch.num_rows
                yield batch
        self._notes[dataset.name] = notes

    def _pages(self, target: str, name: str) -> list[tuple[int, int | None]]:
        """Block ranges of the table (of every partition at once, for a partitioned one) holding about
        PAGE_BYTES of it each (TOAST included), the last one open-ended: a row written into a new block
        after the snapshot began is invisible to it anyway."""
        with self._errors("sizing", name):
            blocks, total = _scalar_row(
                self._require(),
                # A plain table has no partition tree: itself; a partitioned one's own size is 0.
                "SELECT coalesce(max(pg_relation_size(relid)), 0) / current_setting('block_size')::bigint, "
                "coalesce(sum(pg_total_relation_size(relid)), 0) FROM (SELECT relid FROM "
                "pg_partition_tree(%s::regclass) WHERE isleaf UNION SELECT %s::regclass) leaves",
                [target, target],
            )
        blocks, total = int(blocks), int(total)
        step = max(1, int(blocks * PAGE_BYTES / max(total, 1)))
        starts = list(range(0, blocks, step)) or [0]
        return [(low, starts[k + 1] if k + 1 < len(starts) else None) for k, low in enumerate(starts)]

    def _copy(
        self, sql: str, decoders: list[str], columns: Columns, schema: pa.Schema, position: int, name: str
    ) -> Iterator[pa.RecordBatch]:
        """The canonical batches of one binary COPY, numbered from `position` (for row-position ids)."""
        conn = self._require()
        with self._errors("reading", name), conn.cursor() as cur, cur.copy(sql) as copy:
            # PostgreSQL sends one COPY message per row (the header rides with the first, the trailer comes
            # alone): the message ends are the row ends, so a row never straddles two batches.
            buffer, ends, start, finished = bytearray(), [], -1, False
            for chunk in copy:
                if finished:
                    raise ConnectorError(f"the COPY of table {name} from {self._where} went on after its end")
                if start < 0:
                    buffer += chunk
                    start = _skip_header(buffer)
                    if bytes(buffer[start:]) == codec.TRAILER:  # no rows: header and trailer in one message
                        finished = True
                        continue
                elif len(chunk) == 2 and bytes(chunk) == codec.TRAILER:
                    finished = True
                    continue
                else:
                    buffer += chunk
                ends.append(len(buffer))
                if len(buffer) >= CHUNK_BYTES:
                    batch = self._decode(buffer, start, ends, decoders, columns, schema, position, name)
                    position += batch.num_rows
                    yield batch
                    buffer, ends, start = bytearray(), [], 0
            if not finished:
                raise ConnectorError(f"the COPY of table {name} from {self._where} ended early")
            if ends and ends[-1] > start:
                yield self._decode(buffer, start, ends, decoders, columns, schema, position, name)

    def export_state(self, name: str) -> ExportState | None:
        notes = self._notes.get(name)
        return ExportState(state={}, notes=tuple(notes)) if notes else None

    def _select(self, columns: Columns) -> tuple[list[str], list[str]]:
        """The SELECT list of an export, and what each field decodes into."""
        select, decoders = [], []
        if len(columns.id) == 1:
            select.append(f"{quote(columns.id[0])}::text")
            decoders.append("id")
        elif columns.id:
            select.append(f"jsonb_build_array({', '.join(map(quote, columns.id))})::text")
            decoders.append("id-json")
        for column, _, _ in columns.dense:
            select.append(quote(column))
            decoders.append("dense")
        for column, _ in columns.sparse:
            select.append(quote(column))
            decoders.append("sparse")
        if columns.document:
            select.append(f"{quote(columns.document)}::text")
            decoders.append("document")
        if columns.uri:
            select.append(quote(columns.uri))
            decoders.append("uri")
        if columns.layout:
            select.append(f"{quote(METADATA)}::text")
            decoders.append("metadata")
        elif columns.metadata and (canonical := simple_metadata_sql(columns.metadata)) is not None:
            select.append(canonical)
            decoders.append("metadata-canonical")
        elif columns.metadata:
            parts = [
                _json_object(columns.metadata[i : i + OBJECT_COLUMNS])
                for i in range(0, len(columns.metadata), OBJECT_COLUMNS)
            ]
            select.append("(" + " || ".join(parts) + ")::text")
            decoders.append("metadata")
        return select, decoders

    def _decode(
        self,
        buffer: bytearray,
        start: int,
        ends: list[int],
        decoders: list[str],
        columns: Columns,
        schema: pa.Schema,
        position: int,
        name: str,
    ) -> pa.RecordBatch:
        """The canonical batch of the rows in ``buffer[start:]`` (`ends`: where each row ends)."""
        try:
            fields = codec.split_rows(buffer, start, ends, len(decoders))
        except ValueError as exc:
            raise ConnectorError(f"the COPY of table {name} from {self._where} cannot be read: {exc}") from None
        rows = len(ends)
        arrays: dict[str, pa.Array] = {}
        dense = iter(columns.dense)
        sparse = iter(columns.sparse)
        for decoder, (offsets, lengths) in zip(decoders, fields, strict=True):
            if decoder in ("id", "document", "uri"):
                arrays[{"id": ID}.get(decoder, decoder)] = _strings(buffer, offsets, lengths)
            elif decoder == "id-json":
                texts = _strings(buffer, offsets, lengths).to_pylist()
                arrays[ID] = pa.array([canonical_json(json.loads(t)) for t in texts], pa.string())
            elif decoder == "dense":
                column, sql_type, dim = next(dense)
                try:
                    values = codec.decode_dense(buffer, offsets, lengths, dim, sql_type)
                except ValueError as exc:
                    raise SourceDataError(f"table {name}, column {column}: {exc}") from None
                spec_name = "" if column == UNNAMED_COLUMN else column
                mask = pa.array(lengths < 0) if (lengths < 0).any() else None
                arrays[dense_column(spec_name)] = pa.FixedSizeListArray.from_arrays(
                    pa.array(values.ravel(), pa.float32()), dim, mask=mask
                )
            elif decoder == "sparse":
                column, _ = next(sparse)
                arrays[sparse_column(column)] = _sparse(buffer, offsets, lengths)
            elif decoder == "metadata-canonical":  # written canonical by the server (simple_metadata_sql)
                arrays[METADATA] = _strings(buffer, offsets, lengths)
            else:
                texts = _strings(buffer, offsets, lengths).to_pylist()
                arrays[METADATA] = pa.array([_metadata(t, columns.layout) for t in texts], pa.string())
        if not columns.id:
            arrays[ID] = pa.array([str(i) for i in range(position, position + rows)], pa.string())
        return pa.RecordBatch.from_arrays([arrays.get(f.name, pa.nulls(rows, f.type)) for f in schema], schema=schema)

    # --- search ------------------------------------------------------------------------------------------

    def search(self, name: str, vector: str, queries: np.ndarray, k: int) -> list[list[str]]:
        conn = self._require()
        # A restore's checks search the table it just described: its description serves again (describing
        # reads the catalog, counts the rows and scans jsonb columns).
        dataset = self._described.get(name) or self.describe([name])[0]
        spec = dataset.config.dense_by_name(vector)
        native = dataset.config.native
        column = spec.options.get("column", UNNAMED_COLUMN if vector == "" else vector)
        columns = self._columns(native, name)
        if len(columns.id) == 1:
            id_sql = f"{quote(columns.id[0])}::text"
        elif columns.id:
            id_sql = f"jsonb_build_array({', '.join(map(quote, columns.id))})::text"
        operator = catalog.DISTANCE_OPERATOR[spec.distance]
        sql_type = "halfvec" if spec.datatype == "float16" else "vector"
        source = qualified(native["schema"], native["table"])
        if not columns.id:
            # Ids are row positions in physical order (as the export numbers them): an exact search over a
            # numbered scan, no index.
            id_sql = "(n - 1)::text"
            source = f"(SELECT row_number() OVER (ORDER BY ctid) AS n, {quote(column)} FROM {source}) numbered"
        sql = (
            f"SELECT {id_sql} FROM {source} "
            f"WHERE {quote(column)} IS NOT NULL ORDER BY {quote(column)} {operator} %s::{sql_type} LIMIT {int(k)}"
        )
        out: list[list[str]] = []
        with self._errors("searching", name):
            for query in queries:
                literal = "[" + ",".join(repr(float(x)) for x in query) + "]"
                found = [r[0] for r in conn.execute(sql, [literal]).fetchall()]
                out.append([canonical_json(json.loads(f)) for f in found] if len(columns.id) > 1 else found)
        return out

    def search_index(self, dataset: DatasetDescription, vector: str) -> dict[str, Any]:
        spec = dataset.config.dense_by_name(vector)
        index = spec.options.get("index")
        if not index or not self._columns(dataset.config.native, dataset.name).id:
            return {"store": self.kind, "exact": True}
        out: dict[str, Any] = {"store": self.kind, "exact": False, "method": index["method"]}
        params = index.get("options", {})
        if index["method"] == "hnsw":
            out.update(m=int(params.get("m", 16)), ef_construction=int(params.get("ef_construction", 64)))
            with self._errors("reading hnsw.ef_search"):
                out["ef_search"] = int(_scalar(self._require(), "SHOW hnsw.ef_search"))
        else:
            out["lists"] = int(params.get("lists", 100))
        return out

    # --- writing -----------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r}")
        schema, table = self._target_name(dest)
        config: VectorsConfig = source.config
        native = config.native if _is_pgvector(config) else None
        dropped: list[str] = []
        notes: list[str] = []
        steps: list[Transform] = []
        multi = [d for d in config.dense if d.multivector]
        if multi:
            feature = f"multivectors ({', '.join(d.name or 'default' for d in multi)}): pgvector has no such type"
            if not allow_lossy:
                raise UnsupportedFeatureError(f"collection {source.name}: {feature} (--allow-lossy drops them)")
            dropped.append(feature)
            drop_names = [dense_column(d.name) for d in multi]
            steps.append(lambda batch: batch.drop_columns(drop_names))
        if config.sparse and allow_lossy:
            # sparsevec keeps no explicit zero: validate_records refuses them without --allow-lossy.
            notes.append("zero values in sparse vectors are not kept (sparsevec holds none)")
            steps.append(sparse_without_zeros)
        kept = tuple(d for d in config.dense if not d.multivector)
        for spec in kept:
            if spec.size > MAX_DIM:
                raise UnsupportedFeatureError(
                    f"collection {source.name}: vector {spec.name or 'default'} has {spec.size} dimensions; "
                    f"pgvector holds at most {MAX_DIM}"
                )
        if native is None:
            names = [UNNAMED_COLUMN if d.name == "" else d.name for d in kept] + [s.name for s in config.sparse]
            clash = sorted(set(names) & {ID, DOCUMENT, URI, METADATA}) or sorted(n for n in names if names.count(n) > 1)
            if clash or any(d.name == UNNAMED_COLUMN for d in kept):
                bad = clash[0] if clash else UNNAMED_COLUMN
                raise UnsupportedFeatureError(
                    f"collection {source.name}: vector name {bad!r} is a column name the pgvector layout uses"
                )
            for spec in kept:
                limit = INDEX_MAX_DIM["halfvec" if spec.datatype == "float16" else "vector"]
                if spec.size > limit:
                    notes.append(
                        f"no HNSW index on {spec.name or UNNAMED_COLUMN}: {spec.size} dimensions (limit {limit})"
                    )
        target_config = VectorsConfig(
            dense=kept,
            sparse=config.sparse,
            hnsw=config.hnsw,
            native=native,
        )
        if native is not None and any(c.get("generated") for c in native["columns"]):
            notes.append("generated columns are computed again by PostgreSQL")
        self._check_extension()
        if native is not None and native.get("document"):
            self._documents[(schema, table)] = native["document"]
        if native is not None:
            notes += catalog.after_data_statements(dict(native), schema, table)[1]
        existing = self._existing(schema, table)
        if existing is not None and mode != "overwrite":
            rows = existing
            if mode == "create" and rows:
                raise TargetNotEmptyError(
                    f"table {dest} in {self._where} holds {rows} rows: restore with --mode overwrite to replace "
                    "it, --mode merge to upsert into it, or --as NEW to restore beside it"
                )
        target = DatasetDescription(name=dest, config=target_config, rows=source.rows)
        return ImportPlan(
            source=source,
            target=target,
            mode=mode,
            transform=chain(steps) if steps else identity,
            dropped=tuple(dropped),
            notes=tuple(notes),
            extra={"schema": schema, "table": table, "existing": existing is not None, "allow_lossy": allow_lossy},
        )

    def _check_extension(self) -> None:
        """A target database needs pgvector: installed, or available to install (import_ creates it)."""
        conn = self._require()
        with self._errors("looking for the pgvector extension"):
            installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
            available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        if installed is None and available is None:
            raise UsageError(
                f"database {self.location.database!r} on {self._where} lacks the pgvector extension (vector), "
                "and the server has none to install: install pgvector on the server"
            )

    def _target_name(self, dest: str) -> tuple[str, str]:
        schema, dot, table = dest.partition(".")
        if not dot:
            schema, table = self._schema or "public", dest
        if not table or len(table.encode()) > 63:
            raise UsageError(f"bad table name {dest!r}: PostgreSQL names hold 1 to 63 bytes")
        return schema, table

    def _existing(self, schema: str, table: str) -> int | None:
        """Rows of the table if it exists."""
        conn = self._require()
        with self._errors("looking for table", f"{schema}.{table}"):
            found = _scalar(conn, "SELECT to_regclass(%s)", [qualified(schema, table)])
            if found is None:
                return None
            return int(_scalar(conn, f"SELECT count(*) FROM {qualified(schema, table)}"))

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        rows = 0
        for batch in batches:
            mapped = plan.transform(batch)
            self._cells(plan, mapped, check_only=True)
            rows += mapped.num_rows
        return rows

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        conn = self._require()
        schema, table = plan.extra["schema"], plan.extra["table"]
        target = qualified(schema, table)
        native = plan.target.config.native
        written = 0
        self._described.pop(plan.target.name, None)
        with self._errors("restoring", plan.target.name), conn.transaction():
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                self._create_extension()
            if native is not None:  # the tables its foreign keys reference, before it (the keys come after the data)
                for reference in native.get("references", ()):
                    for statement, params in catalog.reference_statements(conn, reference):
                        conn.execute(statement, params or None)
            created = self._prepare(plan, schema, table)
            self._created[plan.target.name] = created
            staging, columns = self._staging(plan, native is not None or plan.mode == "merge" or not created)
            with conn.cursor() as cur:
                with cur.copy(f"COPY {staging} ({', '.join(map(quote, columns))}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(codec.HEADER)
                    for batch in batches:
                        mapped = plan.transform(batch)
                        for start in range(0, mapped.num_rows, WRITE_ROWS):
                            part = mapped.slice(start, WRITE_ROWS)
                            copy.write(codec.encode_rows(self._cells(plan, part, check_only=False)))
                            written += part.num_rows
                    copy.write(codec.TRAILER)
                if staging != target:
                    cur.execute(self._insert_sql(plan, staging, target))
                for statement in self._after_data(plan, schema, table, created):
                    cur.execute(statement)
                cur.execute(f"ANALYZE {target}")
                final = _scalar(cur, f"SELECT count(*) FROM {target}")
                if plan.mode != "merge" and final != written:
                    # Rolled back with the transaction: nothing half-written stays.
                    raise ConnectorError(f"table {plan.target.name} holds {final} rows after writing {written}")
        return written

    def _create_extension(self) -> None:
        conn = self._require()
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except Exception as exc:
            raise UsageError(
                f"database {self.location.database!r} on {self._where} lacks the pgvector extension (vector) "
                f"and this user cannot create it ({postgres.message(exc)}): CREATE EXTENSION vector as its owner"
            ) from None

    def _prepare(self, plan: ImportPlan, schema: str, table: str) -> bool:
        """Create the table (dropping it first for overwrite); True when this restore created it."""
        conn = self._require()
        target = qualified(schema, table)
        exists = _scalar(conn, "SELECT to_regclass(%s)", [target]) is not None
        if exists and plan.mode == "overwrite":
            conn.execute(f"DROP TABLE {target}")
            exists = False
        if exists:
            self._check_columns(plan, schema, table)
            return False
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        native = plan.target.config.native
        if native is not None:
            conn.execute(catalog.create_statement(native, schema, table))
        else:
            conn.execute(self._layout_sql(plan.target.config, target))
        return True

    def _check_columns(self, plan: ImportPlan, schema: str, table: str) -> None:
        """An existing table a restore writes into must have the columns it writes, of the same types."""
        native = catalog.definition(self._require(), schema, table)
        have = {c["name"]: c["type"] for c in native["columns"]}
        want = self._planned_columns(plan)
        for name, sql_type in want.items():
            if have.get(name) != sql_type:
                raise UnsupportedFeatureError(
                    f"table {plan.target.name} in {self._where} exists with other columns ({name}: "
                    f"{have.get(name, 'missing')}, the bundle needs {sql_type}): --mode overwrite replaces it"
                )

    def _planned_columns(self, plan: ImportPlan) -> dict[str, str]:
        native = plan.target.config.native
        if native is not None:
            return {c["name"]: c["type"] for c in catalog.writable(native)}
        cfg = plan.target.config
        out = {ID: "text"}
        for d in cfg.dense:
            out[UNNAMED_COLUMN if d.name == "" else d.name] = _dense_sql(d)
        for s in cfg.sparse:
            out[s.name] = "sparsevec"
        out.update({DOCUMENT: "text", URI: "text", METADATA: "jsonb"})
        return out

    def _layout_sql(self, cfg: VectorsConfig, target: str) -> str:
        lines = [f"{quote(ID)} text PRIMARY KEY"]
        for d in cfg.dense:
            lines.append(f"{quote(UNNAMED_COLUMN if d.name == '' else d.name)} {_dense_sql(d)}")
        for s in cfg.sparse:
            lines.append(f"{quote(s.name)} sparsevec")
        lines += [f"{quote(DOCUMENT)} text", f"{quote(URI)} text", f"{quote(METADATA)} jsonb"]
        return f"CREATE TABLE {target} ({', '.join(lines)})"

    def _staging(self, plan: ImportPlan, needed: bool) -> tuple[str, list[str]]:
        """Where the COPY writes: the target itself (a new table of the layout), or a temporary table of
        the canonical columns that an INSERT … SELECT turns into the target's rows."""
        cfg = plan.target.config
        target = qualified(plan.extra["schema"], plan.extra["table"])
        columns = [ID] + [_dense_name(d) for d in cfg.dense] + [s.name for s in cfg.sparse]
        columns += [DOCUMENT, URI, METADATA]
        if not needed:
            return target, columns
        lines = [f"{quote(ID)} text"] + [f"{quote(_dense_name(d))} {_dense_sql(d)}" for d in cfg.dense]
        lines += [f"{quote(s.name)} sparsevec" for s in cfg.sparse]
        lines += [f"{quote(DOCUMENT)} text", f"{quote(URI)} text", f"{quote(METADATA)} jsonb"]
        self._require().execute(f"CREATE TEMP TABLE aibackup_staging ({', '.join(lines)}) ON COMMIT DROP")
        return "aibackup_staging", columns

    def _insert_sql(self, plan: ImportPlan, staging: str, target: str) -> str:
        native = plan.target.config.native
        if native is None:
            names = list(self._planned_columns(plan))
            select = ", ".join(f"s.{quote(n)}" for n in names)
            conflict = f"ON CONFLICT ({quote(ID)}) DO UPDATE SET " + ", ".join(
                f"{quote(n)} = EXCLUDED.{quote(n)}" for n in names if n != ID
            )
            return f"INSERT INTO {target} ({', '.join(map(quote, names))}) SELECT {select} FROM {staging} s " + (
                conflict if plan.mode == "merge" else ""
            )
        cfg = plan.target.config
        columns = self._columns(native, plan.target.name)
        vector_columns = {_dense_name(d): d for d in cfg.dense} | {s.name: s for s in cfg.sparse}
        # The metadata object gives every other column its value back (jsonb_populate_record parses
        # each with its column type's input function); the id and document are merged into it.
        pieces = [] if columns.layout else [f"coalesce(s.{quote(METADATA)}, '{{}}'::jsonb)"]
        if len(columns.id) == 1:
            pieces.append(f"jsonb_build_object({catalog.literal(columns.id[0])}, s.{quote(ID)})")
        elif columns.id:
            keys = ", ".join(f"{catalog.literal(c)}, (s.{quote(ID)}::jsonb)->{i}" for i, c in enumerate(columns.id))
            pieces.append(f"jsonb_build_object({keys})")
        if columns.document:
            pieces.append(f"jsonb_build_object({catalog.literal(columns.document)}, s.{quote(DOCUMENT)})")
        record = " || ".join(pieces) or "'{}'::jsonb"
        direct = set(vector_columns)
        if columns.layout:  # the layout's metadata and uri columns are the record's own
            direct |= {METADATA, URI}
        names, values = [], []
        json_columns = {c["name"]: c["base"] for c in native["columns"] if c["base"] == "json" or c.get("exported_as")}
        for column in catalog.writable(native):
            name = column["name"]
            names.append(quote(name))
            if name in direct:
                values.append(f"s.{quote(name)}")
            elif name in json_columns:
                values.append(f"(({record})->>{catalog.literal(name)})::{json_columns[name]}")
            else:
                values.append(f"r.{quote(name)}")
        overriding = " OVERRIDING SYSTEM VALUE" if any(c.get("identity") == "always" for c in native["columns"]) else ""
        sql = (
            f"INSERT INTO {target} ({', '.join(names)}){overriding} SELECT {', '.join(values)} FROM {staging} s "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{target}, {record}) r"
        )
        if plan.mode == "merge" and columns.id:
            updates = [n for n in names if n.strip('"') not in columns.id]
            sql += f" ON CONFLICT ({', '.join(map(quote, columns.id))}) DO UPDATE SET " + ", ".join(
                f"{n} = EXCLUDED.{n}" for n in updates
            )
        return sql

    def _after_data(self, plan: ImportPlan, schema: str, table: str, created: bool) -> list[str]:
        if not created:
            return []
        native = plan.target.config.native
        if native is not None:
            return catalog.after_data_statements(dict(native), schema, table)[0]
        statements = []
        target = qualified(schema, table)
        for d in plan.target.config.dense:
            kind = "halfvec" if d.datatype == "float16" else "vector"
            if d.size > INDEX_MAX_DIM[kind] or d.distance not in catalog.DISTANCE_OPCLASS:
                continue
            column = _dense_name(d)
            opclass = f"{kind}_{catalog.DISTANCE_OPCLASS[d.distance]}"
            hnsw = dict(plan.target.config.hnsw or {})
            params = {k: hnsw[k] for k in ("m", "ef_construction") if hnsw.get(k)}
            with_sql = f" WITH ({', '.join(f'{k} = {int(v)}' for k, v in params.items())})" if params else ""
            name = f"{table}_{column}_idx"[:63]
            statements.append(
                f"CREATE INDEX {quote(name)} ON {target} USING hnsw ({quote(column)} {opclass}){with_sql}"
            )
        return statements

    def _cells(self, plan: ImportPlan, batch: pa.RecordBatch, *, check_only: bool) -> list[list[bytes | None]]:
        """The binary COPY cells of the staging columns for `batch`, or UnsupportedFeatureError naming the
        collection and the record when a value cannot go into PostgreSQL."""
        name = plan.target.name
        ids = batch.column(ID).to_pylist()
        cfg = plan.target.config
        out: list[list[bytes | None]] = [[_text(i, name, i, "id") for i in ids]]
        for d in cfg.dense:
            column = batch.column(dense_column(d.name))
            values = _dense_matrix(column, d.size)
            if not np.isfinite(values).all():
                bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
                raise UnsupportedFeatureError(
                    f"collection {name}: record {ids[bad]!r} has NaN or Infinity in vector {d.name or 'default'} "
                    "(pgvector refuses them)"
                )
            if check_only:
                continue
            kind = "halfvec" if d.datatype == "float16" else "vector"
            try:
                encoded: list[bytes | None] = list(codec.encode_dense_cells(values, kind))
            except ValueError as exc:
                raise UnsupportedFeatureError(f"collection {name}: vector {d.name or 'default'}: {exc}") from None
            if column.null_count:
                valid = column.is_valid().to_numpy(zero_copy_only=False)
                encoded = [e if v else None for e, v in zip(encoded, valid, strict=True)]
            out.append(encoded)
        for s in cfg.sparse:
            dim = int(s.options.get("dim") or SPARSE_MAX_DIM)
            cells_: list[bytes | None] = []
            for rid, cell in zip(ids, batch.column(sparse_column(s.name)).to_pylist(), strict=True):
                if cell is None:
                    cells_.append(None)
                    continue
                order = np.argsort(np.asarray(cell["indices"], dtype=np.int64), kind="stable")
                indices = np.asarray(cell["indices"], dtype=np.int64)[order]
                if len(indices) and (indices[-1] >= dim or (np.diff(indices) == 0).any()):
                    raise UnsupportedFeatureError(
                        f"collection {name}: record {rid!r}: sparse {s.name} does not fit sparsevec({dim})"
                    )
                if 0.0 in cell["values"]:
                    raise UnsupportedFeatureError(
                        f"collection {name}: record {rid!r}: sparse {s.name} holds an explicit zero, which "
                        "sparsevec cannot (--allow-lossy leaves zeros out)"
                    )
                cells_.append(
                    None
                    if check_only
                    else codec.encode_sparse(dim, indices, np.asarray(cell["values"], np.float32)[order])
                )
            out.append(cells_)
        out.append(
            [_text(d, name, i, "document") for i, d in zip(ids, batch.column(DOCUMENT).to_pylist(), strict=True)]
        )
        out.append([_text(u, name, i, "uri") for i, u in zip(ids, batch.column(URI).to_pylist(), strict=True)])
        out.append([_jsonb(m, name, i) for i, m in zip(ids, batch.column(METADATA).to_pylist(), strict=True)])
        return out

    @property
    def atomic_import(self) -> bool:
        return True  # import_ runs in one transaction

    def drop(self, name: str) -> bool:
        schema, table = self._target_name(name)
        with self._errors("dropping", name):
            self._require().execute(f"DROP TABLE IF EXISTS {qualified(schema, table)}")
        return True

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """pgvector -> pgvector into a table this restore created: its definition against the recorded one
        (a table that existed keeps its own indexes and constraints: not compared, no false alarm)."""
        native = plan.target.config.native
        if native is None or not self._created.get(plan.target.name):
            return []
        schema, table = plan.extra["schema"], plan.extra["table"]
        with self._errors("reading the definition of", plan.target.name):
            restored = catalog.definition(self._require(), schema, table)
        differences = catalog.differences(native, restored)
        detail = "; ".join(differences) if differences else "columns, types, keys, constraints and indexes as recorded"
        return [("definition", not differences, detail)]

    # --- plumbing ----------------------------------------------------------------------------------------

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if not self._target:
                    conn.rollback()
                conn.close()
            except Exception:
                pass

    def _require(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise ConnectorError(f"connection to {self._where} is closed")
        return self._conn

    def _errors(self, action: str, table: str | None = None) -> Any:
        return postgres.errors(self.location, action, table)


def _scalar_row(conn: Any, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...]:
    """The first row a statement returns (it always returns one)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return tuple(row)


def _scalar(conn: Any, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The first column of the first row a statement returns (it always returns one)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def _dense_matrix(column: pa.Array, size: int) -> np.ndarray:
    """The (rows, size) float32 values of a fixed-size list column; zeros where a cell is null."""
    out = np.zeros((len(column), size), dtype=np.float32)
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        present = column.filter(column.is_valid())
        out[valid] = present.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
    elif len(column):
        out[:] = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
    return out


def _is_pgvector(config: VectorsConfig) -> bool:
    native = config.native or {}
    return isinstance(native.get("columns"), list) and "table" in native and "primary_key" in native


def _dense_name(spec: DenseVectorSpec) -> str:
    return str(spec.options.get("column") or (UNNAMED_COLUMN if spec.name == "" else spec.name))


def _dense_sql(spec: DenseVectorSpec) -> str:
    return f"{'halfvec' if spec.datatype == 'float16' else 'vector'}({spec.size})"


def _skip_header(buffer: bytearray) -> int:
    if bytes(buffer[: len(codec.SIGNATURE)]) != codec.SIGNATURE:
        raise ConnectorError("PostgreSQL sent no binary COPY stream")
    return 19 + int.from_bytes(buffer[15:19], "big")


def _strings(buffer: bytearray, offsets: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """A string array of text cells (PostgreSQL sends UTF-8: the bytes are the Arrow values)."""
    data, bounds = codec.gather(buffer, offsets, lengths)
    nulls = lengths < 0
    validity = pa.array(~nulls).buffers()[1] if nulls.any() else None
    return pa.Array.from_buffers(
        pa.large_string(), len(lengths), [validity, pa.py_buffer(bounds), pa.py_buffer(data)], int(nulls.sum())
    ).cast(pa.string())


def _sparse(buffer: bytearray, offsets: np.ndarray, lengths: np.ndarray) -> pa.Array:
    view = memoryview(buffer)
    cells: list[dict[str, Any] | None] = []
    for offset, length in zip(offsets.tolist(), lengths.tolist(), strict=True):
        if length < 0:
            cells.append(None)
            continue
        _, indices, values = codec.decode_sparse(view[offset : offset + length])
        cells.append({"indices": indices.tolist(), "values": values.tolist()})
    return pa.array(cells, SPARSE_ARROW)


#: Does a jsonb column hold a number that float64 would not give back as PostgreSQL wrote it (``1.10``, more
#: digits than a double holds, beyond its range)? Integers are exact either way (Python's ints).
FLOAT_TEXT_SQL = """
SELECT EXISTS (
  SELECT 1 FROM {table} t, jsonb_path_query(t.{column}, 'strict $.**') v
  WHERE jsonb_typeof(v) = 'number' AND v::text ~ '[.eE]'
    AND (abs(v::text::numeric) >= 1e308 OR v::text::numeric::float8::text::numeric::text <> v::text))
"""


def _float_text_matters(conn: Any, table: str, column: str) -> bool:
    """True when a jsonb column must be kept as its text to come back exactly (its metadata value is then
    the jsonb's text, a string: see the module docstring)."""
    return bool(_scalar(conn, FLOAT_TEXT_SQL.format(table=table, column=quote(column))))


#: Column types whose canonical JSON the server writes exactly as :func:`canonical_json` would: integers
#: (decimal), booleans, and text (``to_json``'s escapes are Python's with ``ensure_ascii`` off: ``\\"``,
#: ``\\\\``, ``\\b\\f\\n\\r\\t``, other controls ``\\u00xx``; tests/connectors/test_pgvector.py compares them).
SIMPLE_JSON = {
    "int2": "{}::text",
    "int4": "{}::text",
    "int8": "{}::text",
    "bool": "{}::text",
    "text": "to_json({})::text",
}
SIMPLE_JSON |= {"varchar": SIMPLE_JSON["text"]}


def simple_metadata_sql(columns: Sequence[dict[str, Any]]) -> str | None:
    """The metadata cell built canonical by the server when every metadata column is an integer, boolean
    or text (sorted keys, NULL columns absent, none at all: NULL), so no row is parsed in Python; None
    when a column is of another type (or there are too many for one call)."""
    if len(columns) > 90 or any(c["base"] not in SIMPLE_JSON or c.get("array") for c in columns):
        return None
    parts = []
    for c in sorted(columns, key=lambda c: c["name"]):
        key = catalog.literal(canonical_json(c["name"]) + ":")
        value = SIMPLE_JSON[c["base"]].format(quote(c["name"]))
        if c["base"] == "bool":  # PostgreSQL writes booleans as t/f
            value = f"CASE WHEN {quote(c['name'])} THEN 'true' ELSE 'false' END"
        parts.append(f"CASE WHEN {quote(c['name'])} IS NULL THEN NULL ELSE {key} || {value} END")
    return f"NULLIF('{{' || concat_ws(',', {', '.join(parts)}) || '}}', '{{}}')"


def _json_object(columns: Sequence[dict[str, Any]]) -> str:
    """jsonb_build_object of metadata columns: numeric and json as their text (exact), the rest as to_jsonb
    writes them."""
    pairs = []
    for c in columns:
        name = quote(c["name"])
        base = c["base"]
        if base == "numeric":
            value = f"{name}::text"
        elif base == "_numeric":
            value = f"{name}::text[]"
        elif base == "json" or c.get("exported_as") == "text":
            value = f"{name}::text"
        else:
            value = name
        pairs.append(f"{catalog.literal(c['name'])}, {value}")
    return f"jsonb_build_object({', '.join(pairs)})"


def _metadata(text: str | None, layout: bool) -> str | None:
    """The canonical metadata cell of a row's JSON: the layout's metadata column as it is, else the columns'
    object without its NULL (absent) keys."""
    if text is None:
        return None
    value = json.loads(text)
    if layout:
        return metadata_json(value) if isinstance(value, dict) else canonical_json({"value": value})
    return metadata_json({k: v for k, v in value.items() if v is not None})


def _text(value: str | None, collection: str, record: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if "\x00" in value:
        raise UnsupportedFeatureError(
            f"collection {collection}: record {record!r}: its {what} holds a NUL character (PostgreSQL text cannot)"
        )
    return value.encode("utf-8")


def _jsonb(text: str | None, collection: str, record: Any) -> bytes | None:
    """jsonb's binary form (version 1, then the JSON text) of a metadata cell."""
    if text is None:
        return None
    if "\\u0000" in text or "\x00" in text:
        raise UnsupportedFeatureError(
            f"collection {collection}: record {record!r}: metadata holds a NUL character (jsonb cannot)"
        )
    if ("NaN" in text or "Infinity" in text) and _has_non_finite(json.loads(text)):
        raise UnsupportedFeatureError(
            f"collection {collection}: record {record!r}: metadata holds NaN or Infinity, which jsonb cannot"
        )
    return b"\x01" + text.encode("utf-8")


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False
