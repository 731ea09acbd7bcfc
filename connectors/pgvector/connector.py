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
memory. Nothing is ever dropped that the restore did not create, but with ``--mode overwrite``. A
partitioned restore (``--workers``) has its workers load the table in a schema of its own, and publishes
it in the same one transaction (:mod:`.writing`).

Lossy rules (refused with UnsupportedFeatureError unless --allow-lossy): multivectors (no pgvector type)
are dropped. Never mapped: NaN/Infinity in a vector (pgvector refuses them) or in metadata (jsonb holds
neither), -0.0 in metadata (jsonb's numeric has no negative zero; for the same reason a ``real`` or ``double
precision`` column's -0 is backed up as 0), text holding NUL (PostgreSQL text cannot), a vector above 16000
dimensions. A table a foreign key references travels with the table (definition and rows, up to 10,000:
:func:`.catalog.referenced_tables`) and is made first where missing, so the key is made again; a larger one
is left out and its key with it (said).

Checks: beyond the records, a pgvector -> pgvector restore compares the restored table's definition with
the recorded one (columns, types, nullability, primary key, constraints, index methods and parameters).

This module holds the connector class; the mapping of a table is in :mod:`.mapping`, the reading in
:mod:`.reading`, the restore's SQL in :mod:`.restore`, its COPY in :mod:`.writing` and its cells in :mod:`.cells`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
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
    Partitioning,
    VectorConnector,
    chain,
    identity,
)
from aibackup.connectors.pgvector import catalog, cells, llamaindex, mapping, reading, restore, writing
from aibackup.connectors.pgvector import langchain as pg_langchain
from aibackup.connectors.pgvector.catalog import DENSE_TYPES, qualified, quote
from aibackup.connectors.pgvector.mapping import UNNAMED_COLUMN, Columns
from aibackup.errors import (
    ConnectorError,
    DatasetNotFoundError,
    TargetNotEmptyError,
    UnsupportedFeatureError,
    UsageError,
)
from aibackup.manifests.model import VectorsConfig
from aibackup.manifests.vectors import ID, METADATA, canonical_json

if TYPE_CHECKING:
    import psycopg


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
        snapshot = (options or {}).get("snapshot")
        if snapshot is not None and not create:  # a worker of a partitioned backup: the driver's snapshot
            with self._errors("importing the backup's snapshot"):
                self._conn.execute(f"SET TRANSACTION SNAPSHOT {catalog.literal(str(snapshot))}")
        self._notes: dict[str, list[str]] = {}
        #: (schema, table) -> the document column of a table restored here (for the restore's checks)
        self._documents: dict[tuple[str, str], str] = {}
        #: (schema, table) -> {vector column: the distance a restore here was planned with}: a column without
        #: an index does not say its distance (LangChain's is chosen by the application at query time), so
        #: the restore's checks search it as the bundle's records were searched, not with pgvector's l2
        self._distances: dict[tuple[str, str], dict[str, str]] = {}
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
            if key is None and name in self._created:
                key = self._made_here(conn, name)
            if key is None:
                raise DatasetNotFoundError(f"table {name!r} with a vector column not found in {self._where}")
            out.append(self._describe(self._name(*key), *key))
        if self._document and out and not any(self._has_document(d) for d in out):
            raise UsageError(f"no table of {self._where} has the column {self._document!r} that ?document= names")
        return out

    def _made_here(self, conn: Any, name: str) -> tuple[str, str] | None:
        """A table a restore here wrote that has no vector column (a collection without any vector, such as
        an empty Chroma collection, which has no dimension yet): the restore's checks read it back."""
        schema, dot, table = name.partition(".")
        key = (schema, table) if dot else (self._schema or "public", name)
        with self._errors("reading the definition of", name):
            found = catalog.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", [qualified(*key)])
        return key if found else None

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
                if column["base"] == "jsonb" and mapping.float_text_matters(
                    conn, qualified(schema, table), column["name"]
                ):
                    column["exported_as"] = "text"
                if column["base"] in DENSE_TYPES and not column.get("dim"):
                    column["dim_held"] = mapping.held_dimension(conn, qualified(schema, table), column["name"], name)
            rows = catalog.scalar(conn, f"SELECT count(*) FROM {qualified(schema, table)}")
            native["references"], left_out = catalog.referenced_tables(conn, native)
            node_ids = llamaindex.is_table(native)
            if node_ids and catalog.unique_values(conn, qualified(schema, table), llamaindex.ID_COLUMN):
                native["id_column"] = llamaindex.ID_COLUMN  # the application's ids are its node ids
        self._notes[name] = left_out
        columns = self._columns(native, name)
        native["document"] = columns.document  # a restore of this bundle knows it again
        config = mapping.vectors_config(native, columns)
        planned = self._distances.get((schema, table), {})
        if planned:
            dense = tuple(
                replace(d, distance=planned[column], options={**d.options, "distance_from": "restore"})
                if d.options.get("distance_from") == "default" and (column := str(d.options.get("column"))) in planned
                else d
                for d in config.dense
            )
            config = replace(config, dense=dense)
        self._described[name] = DatasetDescription(name=name, config=config, rows=rows)
        return self._described[name]

    def _columns(self, native: Mapping[str, Any], name: str) -> Columns:
        """The role of each column (:func:`.mapping.table_columns`)."""
        return mapping.table_columns(native, name, self._document, self._documents)

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every row as canonical batches, binary COPYs of pages of the table in the backup's snapshot (see
        the module docstring); SourceDataError for a value the bundle cannot hold (a vector of another
        dimension)."""
        native = dataset.config.native
        notes = list(self._notes.get(dataset.name, ()))  # what describe found (referenced tables left out)
        if not self._columns(native, dataset.name).id:
            notes.append(
                f"table {dataset.name} has no primary key: its ids are the row positions (0, 1, …) of this "
                "snapshot in physical order, not stable names"
            )
        target = qualified(native["schema"], native["table"])
        yield from self._export_pages(dataset, reading.pages(self._require(), self.location, target, dataset.name))
        self._notes[dataset.name] = notes

    def partition(self, dataset: DatasetDescription, wanted: int) -> Partitioning | None:
        """Block ranges of the table in this connector's snapshot, exported for the workers' transactions
        (:func:`.reading.split`); a table without a primary key does not split (its ids are row positions
        counted across the whole table)."""
        native = dataset.config.native
        if not self._columns(native, dataset.name).id:
            return None
        return reading.split(self._require(), self.location, native, dataset.name, wanted)

    def export_partition(self, dataset: DatasetDescription, partition: Mapping[str, Any]) -> Iterator[pa.RecordBatch]:
        return self._export_pages(
            dataset, [(int(low), None if high is None else int(high)) for low, high in partition["pages"]]
        )

    def _export_pages(
        self, dataset: DatasetDescription, ranges: Iterable[tuple[int, int | None]]
    ) -> Iterator[pa.RecordBatch]:
        native = dataset.config.native
        columns = self._columns(native, dataset.name)
        target = qualified(native["schema"], native["table"])
        select, decoders = reading.select_list(columns)
        schema = dataset.schema
        position = 0
        for low, high in ranges:
            # A page of heap blocks (a TID range scan: sequential, in physical order, which numbers the rows
            # of a table without a primary key). One COPY of a whole table could leave a buffer the size of
            # the table in memory: libpq reads as much of a COPY as the socket holds, whenever it reads.
            sql = (
                f"COPY (SELECT {', '.join(select)} FROM {target} WHERE ctid >= '({low},0)'::tid"
                + (f" AND ctid < '({high},0)'::tid" if high is not None else "")
                + ") TO STDOUT (FORMAT BINARY)"
            )
            conn = self._require()
            for batch in reading.copy_batches(
                conn, self.location, sql, decoders, columns, schema, position, dataset.name
            ):
                position += batch.num_rows
                yield batch

    def export_state(self, name: str) -> ExportState | None:
        notes = self._notes.get(name)
        return ExportState(state={}, notes=tuple(notes)) if notes else None

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
                out["ef_search"] = int(catalog.scalar(self._require(), "SHOW hnsw.ef_search"))
        else:
            out["lists"] = int(params.get("lists", 100))
        return out

    # --- writing -----------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r}")
        schema, table = self._target_name(dest)
        config: VectorsConfig = source.config
        native = config.native if mapping.is_pgvector(config) else None
        kept, dropped, notes, steps = restore.plan_vectors(source, config, native, allow_lossy)
        target_config = VectorsConfig(
            dense=kept,
            sparse=config.sparse,
            hnsw=config.hnsw,
            native=native,
        )
        if native is not None and native.get("references"):
            with self._errors("reading the tables its foreign keys reference for", dest):
                remaps = catalog.colliding_references(self._require(), native)
            if remaps:  # the target's own rows of the same unique values (an application's collection)
                steps.append(restore.remapping(remaps))
                moved = sum(len(r) for r in remaps.values())
                notes.append(
                    f"{moved} referenced row(s) already in the target under another key: the rows point at those"
                )
        if native is None and "." in dest:  # another store's collection name: say where it goes
            notes.append(
                f"{dest!r} is read as PostgreSQL's schema.table: table {table!r} in schema {schema!r} (made "
                f"if missing); --collection {source.name}=NAME names it otherwise"
            )
        if native is not None and any(c.get("generated") for c in native["columns"]):
            notes.append("generated columns are computed again by PostgreSQL")
        self._check_extension()
        if native is not None and native.get("document"):
            self._documents[(schema, table)] = native["document"]
        self._distances[(schema, table)] = {restore.dense_name(d): d.distance for d in kept}
        if native is not None:
            notes += catalog.after_data_statements(dict(native), schema, table)[1]
        existing = self._existing(schema, table)
        if existing is not None and mode == "merge" and native is None:  # the layout, not a table definition
            self._check_merge_distances(schema, table, dest)
        if existing is not None and mode != "overwrite":
            rows = existing
            if mode == "create" and rows and table == pg_langchain.EMBEDDINGS:
                # Every LangChain collection shares this table: a new name lands in it too, and overwrite
                # replaces every collection it holds.
                raise TargetNotEmptyError(
                    f"table {dest} in {self._where} holds {rows} rows (langchain-postgres keeps every collection "
                    "in it): restore with --mode merge to add the collection beside them (or to upsert into it), "
                    "or --mode overwrite to replace the whole table, every collection in it"
                )
            if mode == "create" and rows:
                raise TargetNotEmptyError(
                    f"table {dest} in {self._where} holds {rows} rows: restore with --mode overwrite to replace "
                    f"it, --mode merge to upsert into it, or --collection {source.name}=NEW to restore beside it"
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

    def _check_merge_distances(self, schema: str, table: str, dest: str) -> None:
        """UnsupportedFeatureError when the table a layout restore merges into indexes a vector column for
        another distance than the bundle's (the rows would be searched by a distance they were not made for),
        as Chroma and Qdrant refuse such a merge. Not for a table definition a restore recreates (a pgvector
        bundle's, LangChain's or LlamaIndex's: their applications choose the distance of their queries)."""
        with self._errors("reading the definition of", dest):
            existing = catalog.definition(self._require(), schema, table)
        for column, distance in self._distances[(schema, table)].items():
            index = catalog.vector_index(existing, column)
            theirs = catalog.opclass_distance(index.get("opclass")) if index else None
            if theirs is not None and theirs != distance:
                raise UnsupportedFeatureError(
                    f"table {dest} in {self._where} indexes column {column!r} for distance {theirs!r} "
                    f"({index and index.get('opclass')}), the bundle's is {distance!r}: cannot merge; restore with "
                    "--mode overwrite or into another table"
                )

    def _existing(self, schema: str, table: str) -> int | None:
        """Rows of the table if it exists."""
        conn = self._require()
        with self._errors("looking for table", f"{schema}.{table}"):
            found = catalog.scalar(conn, "SELECT to_regclass(%s)", [qualified(schema, table)])
            if found is None:
                return None
            return int(catalog.scalar(conn, f"SELECT count(*) FROM {qualified(schema, table)}"))

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        rows = 0
        for batch in batches:
            mapped = plan.transform(batch)
            cells.cells(plan, mapped, check_only=True)
            rows += mapped.num_rows
        return rows

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        def fill(cur: Any, into: str, columns: list[str]) -> int:
            return writing.copy_rows(cur, plan, into, columns, batches)

        return self._write(plan, fill)

    # A partitioned restore (aibackup.partitioned_restore): workers load a copy of the table in a load
    # schema, the driver publishes it in one transaction as import_ publishes its COPY (.writing's docstring).
    partitioned_modes = ("create", "overwrite", "merge")

    def begin_load(self, plan: ImportPlan) -> Mapping[str, Any]:
        conn = self._require()
        with self._errors("making the load schema of", plan.target.name):
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                self._create_extension()  # the loaded table has vector columns
            return writing.begin_load(conn, plan)

    def load_partition(
        self, plan: ImportPlan, load: Mapping[str, Any], number: int, batches: Iterable[pa.RecordBatch]
    ) -> tuple[int, None]:
        def insert(staging: str, into: str) -> str:
            return self._insert_sql(plan, staging, into)

        with self._errors("loading", plan.target.name):
            return writing.load_partition(self._require(), plan, load, number, batches, insert), None

    def finish_load(self, plan: ImportPlan, load: Mapping[str, Any], rows: int, receipts: Sequence[Any]) -> int:
        return self._write(plan, lambda *_: rows, loaded=load)

    def abandon_load(self, load: Mapping[str, Any]) -> None:
        with self._errors("removing the load schema", str(load.get("name"))):
            writing.abandon_load(self._require(), load)

    def _write(
        self, plan: ImportPlan, fill: Callable[[Any, str, list[str]], int], loaded: Mapping[str, Any] | None = None
    ) -> int:
        """Publish a restore in one transaction: the referenced tables, the target made (or replaced),
        `fill` writing the rows (into the target, or a staging table an INSERT … SELECT moves them from),
        constraints, indexes, ANALYZE, the row count. `loaded`: a partitioned restore's load schema,
        whose table already holds the rows (:func:`.writing.publish`; dropped with the transaction)."""
        conn = self._require()
        schema, table = plan.extra["schema"], plan.extra["table"]
        target = qualified(schema, table)
        native = plan.target.config.native
        self._described.pop(plan.target.name, None)
        with self._errors("restoring", plan.target.name), conn.transaction():
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                self._create_extension()
            if native is not None:  # the tables its foreign keys reference, before it (the keys come after the data)
                for reference in native.get("references", ()):
                    for statement, params in catalog.reference_statements(conn, reference):
                        conn.execute(statement, params or None)
            with conn.cursor() as cur:
                if loaded is not None:
                    keys = self._columns(native, plan.target.name).id if native is not None else []
                    created = writing.publish(conn, plan, loaded, self._where, list(keys))
                    written = fill(cur, target, [])
                    cur.execute(f"DROP SCHEMA {quote(str(loaded['name']))} CASCADE")
                else:
                    created = writing.prepare(conn, plan, schema, table, self._where)
                    needed = native is not None or plan.mode == "merge" or not created
                    staging, columns = restore.staging(conn, plan, needed)
                    written = fill(cur, staging, columns)
                    if staging != target:
                        if plan.mode == "merge":
                            collection = f"s.{quote(METADATA)}->>'collection_id'"
                            writing.refuse_moving_rows(cur, plan, schema, staging, quote(ID), collection)
                        cur.execute(self._insert_sql(plan, staging, target))
                self._created[plan.target.name] = created
                for statement in restore.after_data(plan, schema, table, created):
                    cur.execute(statement)
                cur.execute(f"ANALYZE {target}")
                final = catalog.scalar(cur, f"SELECT count(*) FROM {target}")
                if plan.mode != "merge" and final != written:
                    # Rolled back with the transaction: nothing half-written stays.
                    raise ConnectorError(f"table {plan.target.name} holds {final} rows after writing {written}")
        return written

    def _create_extension(self) -> None:
        writing.create_extension(self._require(), str(self.location.database), self._where)

    def _insert_sql(self, plan: ImportPlan, staging: str, target: str) -> str:
        native = plan.target.config.native
        if native is None:
            return restore.layout_insert_sql(plan, staging, target)
        return restore.insert_sql(plan, self._columns(native, plan.target.name), staging, target)

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
