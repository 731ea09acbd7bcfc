"""LanceDB connector: embedded databases (``lancedb:PATH``, a folder of ``<table>.lance``), kind "lancedb".

lancedb is an optional extra (``pip install 'aibackup[lancedb]'``); its Rust log is set to errors only
(``LANCEDB_LOG``, unless set) so that its warnings do not fill the one line a user reads.

Canonical mapping (schema: :mod:`aibackup.manifests.vectors`; columns: :mod:`.tables`; values: :mod:`.values`)
-------------------------------------------------------------------------------------------------------
- Every table is a collection (``--collection`` picks). A backup reads ONE version of each table: the one
  ``describe`` saw (``checkout``), recorded as ``native.version``; writers may go on meanwhile.
- **id** <- the column ``id`` (``?id=COLUMN`` names another): text as it is, integers in decimal. A null id
  or an id held twice is refused (SourceDataError: restores rely on ids being unique). A table without the
  column is refused (UnsupportedFeatureError naming table and column) unless the backup is allowed to be
  lossy (``options["allow_lossy"]``): then ids are the row positions ("0", "1", ...) in the version read,
  and the export notes say so. A LanceDB restore of such a bundle writes no id column (so it cannot merge).
- **vectors** <- every fixed-size list of float16/32/64 (a list of them: a multivector), named after its
  column; the column ``vector`` (LanceDB's default) is the unnamed vector "". float16 is widened exactly and
  recorded as datatype float16; float64 values must be float32 values (SourceDataError otherwise; rounded
  when lossy). Null vectors stay null.
- **document** <- the first text column named ``document`` or ``text`` (where LangChain and LlamaIndex keep
  it); **uri** <- a text column ``uri``.
- **metadata** <- every other column, one key each (its name), its value as JSON (:mod:`.values`: float32 as
  its shortest decimal, ISO text for timestamps and dates, base64 for binary, text for decimals, counts for
  times and durations, arrays and objects for lists, structs and maps); a null value leaves its key out. A
  text column ``metadata`` marked as canonical JSON (field metadata ``aibackup:format``, written by restores
  from other backends) is the metadata itself, merged with any other columns.
- **distance**: the metric of the column's vector index (l2, cosine, dot -> ip); without an index, LanceDB
  keeps no metric (a query names one): the ``aibackup:distance`` field metadata a restore wrote, else l2,
  LanceDB's default (``native.distances`` says which).
- **config**: ``hnsw`` = the HNSW index's m / ef_construction (IVF_HNSW_* indexes); ``metadata`` = the
  collection metadata a restore recorded (schema metadata ``aibackup:metadata``); ``native`` = the Arrow
  schema (IPC, base64, with every field's type, nullability and metadata), the role of each column, the
  version read and every index with what ``list_indices`` reports of it: type, columns, metric, and the
  build details (PQ sub-vectors and bits, SQ/RQ bits, HNSW m and ef_construction, IVF k-means iterations
  and sample rate, every FTS tokenizer setting). LanceDB does not report the number of IVF partitions or
  the target partition size, nor an index's accelerator: a restore lets LanceDB pick them for the table.

Restore
-------
- From a LanceDB bundle: the table as it was: the same Arrow schema (types, nullability, field and schema
  metadata) and values, then every recorded vector, scalar (BTree, Bitmap, LabelList) and full-text index
  rebuilt with its name, metric and build details (indexes after the data, as pg_restore does). LanceDB ->
  bundle -> LanceDB gives back the same table definition and values.
- From any other backend: ``id`` (string, not null; ``?id=`` names it), one column per dense vector (named as
  the vector, ``vector`` for ""; ``fixed_size_list<float32>``, or lists of them for multivectors, with the
  distance in field metadata), ``document``, ``uri`` and ``metadata`` (canonical JSON text). No vector index
  is built: LanceDB then searches exactly (the notes say which HNSW settings were not applied).
- Modes: create (refuses a table holding rows; an empty one is replaced), overwrite (``create_table`` in
  overwrite mode: LanceDB keeps the older versions until they are cleaned up), merge (``merge_insert`` on the
  id column: matched rows updated, others inserted; the table must have the same columns).
- The records stream into ``create_table`` / ``merge_insert`` as a RecordBatchReader; then ``count_rows()``
  must equal the rows written (LanceDB 0.40 silently writes 0 rows from a sliced batch with a struct inside
  a struct): otherwise ConnectorError. A create whose stream fails drops the table it made.

Lossy rules (UnsupportedFeatureError naming the collection and the feature unless --allow-lossy; then in
``plan.dropped`` and applied by ``plan.transform``): sparse vectors (LanceDB has none) are dropped; distance
manhattan becomes l2. Never mapped: a vector holding NaN (LanceDB's writer refuses it, or nulls it), a vector
name with a "." or equal to another column's name (a vector named ``vector`` too: that column is the unnamed
vector's), an id an integer id column cannot hold exactly, metadata that does not fit a LanceDB bundle's
columns. ``validate_records`` finds all of these before anything is written. Not kept: table versions other
than the one read, tags, branches, embedding-function registries beyond the schema metadata that holds them,
and the data storage format version.

Memory: export streams the version's scanner batches (about BATCH_BYTES each); the unique-id proof keeps 8
bytes per record (a hash). Restore streams the bundle's batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.base import (
    MODES,
    DatasetDescription,
    ExportState,
    ImportPlan,
    Location,
    Partitioning,
    VectorConnector,
    identity,
)
from aibackup.connectors.lancedb import fragments, ids
from aibackup.connectors.lancedb.client import Database
from aibackup.connectors.lancedb.records import Converted, TableBatches, canonical
from aibackup.connectors.lancedb.search import TableSearch
from aibackup.connectors.lancedb.tables import (
    ID_COLUMN,
    METRICS,
    Columns,
    TablePlan,
    check_merge,
    columns_of,
    describe_config,
    index_config,
    index_entries,
    index_settings,
    native_schema,
    plan_table,
    vector_index,
)
from aibackup.errors import (
    AibackupError,
    ConnectorError,
    DatasetNotFoundError,
    TargetNotEmptyError,
    UnsupportedFeatureError,
    UsageError,
    first_line,
)

__all__ = ["LanceDBConnector"]

#: Bytes of vectors per exported batch: rows = BATCH_BYTES / the bytes of one row's vectors, within
#: [MIN_BATCH_ROWS, MAX_BATCH_ROWS]: 8192 rows at dim 384, where the export of 100k x 384 measured fastest
#: (0.11 s; 0.18 s in LanceDB's default 1024-row batches, 0.19 s in 32768-row ones).
BATCH_BYTES = 12 << 20
MIN_BATCH_ROWS = 1024
MAX_BATCH_ROWS = 65_536


class LanceDBConnector(VectorConnector):
    """A LanceDB database folder. See the module docstring for the mapping."""

    kind = "lancedb"

    def __init__(
        self,
        location: Location,
        *,
        create: bool = False,
        options: Mapping[str, Any] | None = None,
        batch_rows: int | None = None,
    ) -> None:
        """Open the database. A source path that does not exist raises DatasetNotFoundError, a path that is
        a file UsageError. `batch_rows` fixes the export's batch size (None: from BATCH_BYTES)."""
        super().__init__(location, create=create, options=options)
        self._create = create
        self._id_column = location.params.get("id") or ID_COLUMN
        self._lossy = bool(self.options.get("allow_lossy"))
        self.batch_rows = batch_rows
        #: table -> the version the last describe read (export and search read that one)
        self._pinned: dict[str, int] = {}
        #: table -> its id column as a restore in this session wrote it (None: row positions)
        self._id_columns: dict[str, str | None] = {}
        self._states: dict[str, ExportState] = {}
        self._id_kind: tuple[str, bool] = ("string", False)  # (type, integer ids) of the export under way
        self._indexes_built: dict[str, list[tuple[Mapping[str, Any], str | None]]] = {}
        self._database = Database(location, create=create)
        self._where = self._database.where
        self._search = TableSearch(self._database)

    def close(self) -> None:
        self._database.close()

    # --- reading -----------------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """All tables sorted by name, or exactly `names` (DatasetNotFoundError for a missing one). Each is
        described at its latest version, which export and search then read."""
        existing = set(self._database.table_names())
        wanted = sorted(existing) if names is None else list(names)
        for name in wanted:
            if name not in existing:
                raise DatasetNotFoundError(f"table {name!r} not found in {self._where}")
        return [self._describe(name) for name in wanted]

    def _describe(self, name: str) -> DatasetDescription:
        with self._database.errors("read the table", name):
            table = self._database.live().open_table(name)
            version = int(table.version)
            table.checkout(version)  # count, schema and indexes of exactly this version
            rows = int(table.count_rows())
            schema = table.schema
            indexes = index_entries(table.list_indices())
        id_column = self._id_columns.get(name, self._id_column)
        columns = columns_of(schema, id_column or "", name)
        if columns.id is None and not self._create and not self._lossy and name not in self._id_columns:
            raise UnsupportedFeatureError(
                f"LanceDB table {name!r} in {self._where} has no id column {self._id_column!r}: name its record "
                f"id column with ?id=COLUMN, or back up with --allow-lossy to use the row positions of the "
                f"version read as ids"
            )
        config = describe_config(schema, columns, indexes, version, self._database.version)
        self._pinned[name] = version
        return DatasetDescription(name=name, config=config, rows=rows)

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every row of the version `dataset` was described at, as canonical batches (scanner batches of
        about BATCH_BYTES of vectors). Raises SourceDataError for a null or repeated id and for values
        the bundle cannot hold (see the module docstring)."""
        table, columns, version = self._reading(dataset)
        with self._database.errors("read the table", dataset.name):
            reader = table.search().to_batches(self._batch_rows(dataset))
        yield from canonical(
            self._database, dataset, table, columns, reader, dataset.rows, unique=True, lossy=self._lossy
        )
        notes: tuple[str, ...] = ()
        if columns.id is None:
            notes = (
                f"no id column {self._id_column!r}: the record ids are the row positions of table version "
                f"{version} (0 to {dataset.rows - 1}), not ids of the application",
            )
        self._states[dataset.name] = ExportState(state={"version": version}, notes=notes)

    def partition(self, dataset: DatasetDescription, wanted: int) -> Partitioning | None:
        """Groups of the fragments of the version `dataset` was described at (:mod:`.fragments`), once an
        id-only pass over that whole version has proven its ids unique (each worker sees only its own
        rows; a restore's proof, option ``proof``, counts repeated ids itself and skips it). A table without
        an id column (its ids are row positions in the whole version), of one fragment, or read without
        pylance does not split."""
        native = dataset.config.native or {}
        columns = Columns.from_json(native.get("columns") or {})
        if columns.id is None or native.get("kind") != "lancedb" or fragments.lance_module() is None:
            return None
        version = int(native["version"])
        table = self._database.open(dataset.name, version)
        with self._database.errors("list the fragments of", dataset.name):
            groups = fragments.split(table.to_lance(), wanted)
        if len(groups) < 2:
            return None
        if not self.options.get("proof"):  # a restore's proof counts repeated ids in its comparison
            with self._database.errors("read the ids", dataset.name):
                hashes = ids.hashes(ids.scan(table, columns.id))
            ids.check_unique(self._database, table, columns.id, dataset.name, hashes)
        return Partitioning(
            partitions=tuple(groups), options={}, how=f"{len(groups)} groups of the fragments of version {version}"
        )

    def export_partition(self, dataset: DatasetDescription, partition: Mapping[str, Any]) -> Iterator[pa.RecordBatch]:
        # Through pylance alone (the version's fragments): a worker does not import lancedb.
        columns, version = self._columns(dataset)
        lance = fragments.lance_module()
        assert lance is not None, "a table splits only with pylance"
        with self._database.errors("read the fragments of", dataset.name):
            version_read = lance.dataset(self._database.table_uri(dataset.name), version=version)
            reader = fragments.scan(version_read, partition["fragments"], self._batch_rows(dataset))
        expected = int(partition["rows"])
        yield from canonical(self._database, dataset, None, columns, reader, expected, unique=False, lossy=self._lossy)

    def _reading(self, dataset: DatasetDescription) -> tuple[Any, Columns, int]:
        """The table at the version `dataset` was described at, its columns and that version; the id kind
        :meth:`id_types` reports for the export that follows."""
        columns, version = self._columns(dataset)
        return self._database.open(dataset.name, version), columns, version

    def _columns(self, dataset: DatasetDescription) -> tuple[Columns, int]:
        """The columns and version `dataset` was described with; sets the id kind :meth:`id_types` reports
        for the export that follows."""
        native = dataset.config.native or {}
        if native.get("kind") != "lancedb":
            raise UsageError(f"table {dataset.name!r} was not described by the LanceDB connector")
        columns = Columns.from_json(native.get("columns") or {})
        id_type = native_schema(native).field(columns.id).type if columns.id else None
        integers = id_type is not None and pa.types.is_integer(id_type)
        self._id_kind = ("uint" if id_type is None or integers else "string", integers)
        return columns, int(native["version"])

    def export_state(self, name: str) -> ExportState | None:
        """The version read; the note that ids are row positions, for a table without an id column."""
        return self._states.get(name)

    def id_types(self, ids: pa.Array) -> Counter[str]:
        """Integer ids that are not negative and row positions: "uint"; any other: "string"."""
        kind, integers = self._id_kind
        if not integers:
            return Counter({kind: len(ids)})
        negative = int(pc.sum(pc.starts_with(ids, "-")).as_py() or 0)
        return +Counter({"uint": len(ids) - negative, "string": negative})

    def _batch_rows(self, dataset: DatasetDescription) -> int:
        if self.batch_rows is not None:
            return max(1, self.batch_rows)
        floats = sum(d.size * (8 if d.multivector else 1) for d in dataset.config.dense)
        return max(MIN_BATCH_ROWS, min(MAX_BATCH_ROWS, BATCH_BYTES // max(4 * floats, 1)))

    # --- search ------------------------------------------------------------------------------------------

    def search(self, name: str, vector: str, queries: np.ndarray, k: int) -> list[list[str]]:
        """Top-`k` ids per query row by LanceDB's own search (its vector index when the column has one, an
        exact scan otherwise) with the recorded distance, in the version last described."""
        version = self._pinned.get(name)
        if version is None:
            (dataset,) = self.describe([name])
        else:
            dataset = self._describe_pinned(name, version)
        native = dataset.config.native or {}
        columns = Columns.from_json(native.get("columns") or {})
        column = columns.column_of(vector)
        if column is None:
            raise DatasetNotFoundError(f"table {name!r} in {self._where} has no vector {vector!r}")
        spec = dataset.config.dense_by_name(vector)
        metric = METRICS.get(spec.distance, "l2")
        table = self._database.open(name, int(native["version"]))
        return self._search.run(table, name, columns, column, metric, queries, k, multivector=spec.multivector)

    def _describe_pinned(self, name: str, version: int) -> DatasetDescription:
        with self._database.errors("read the table", name):
            table = self._database.open(name, version)
            schema = table.schema
            indexes = index_entries(table.list_indices())
            rows = int(table.count_rows())
        id_column = self._id_columns.get(name, self._id_column)
        columns = columns_of(schema, id_column or "", name)
        config = describe_config(schema, columns, indexes, version, self._database.version)
        return DatasetDescription(name=name, config=config, rows=rows)

    def search_index(self, dataset: DatasetDescription, vector: str) -> dict[str, Any]:
        """Exact (LanceDB compares the query with every row) unless the vector's column has a vector
        index; then approximate, with the index type and its HNSW settings."""
        native = dataset.config.native or {}
        column = Columns.from_json(native.get("columns") or {}).column_of(vector)
        entry = vector_index(native.get("indexes") or [], column) if column else None
        return {"store": self.kind, "exact": entry is None, **index_settings(entry)}

    # --- restore -----------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Decide the table `dest` becomes (see the module docstring), writing nothing."""
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        try:
            from lancedb.db import validate_table_name

            validate_table_name(dest)
        except ValueError as exc:
            raise UnsupportedFeatureError(
                f"LanceDB cannot name a table {dest!r} ({first_line(exc)}); restore it under another name "
                f"(--collection {source.name}=NEW_NAME)"
            ) from None
        plan = plan_table(source, dest, self._id_column, allow_lossy=allow_lossy)
        notes = list(plan.notes)
        existing = self._database.open(dest, None, missing_ok=True)
        if existing is not None:
            with self._database.errors("count rows", dest):
                count = int(existing.count_rows())
                schema = existing.schema
                indexed = bool(existing.list_indices())
            if mode == "create" and count:
                raise TargetNotEmptyError(
                    f"table {dest!r} in {self._where} already holds {count} rows; restore with --mode overwrite "
                    "to replace it or --mode merge to add to it"
                )
            if mode == "merge":
                check_merge(plan, schema, dest, self._where)
                if indexed:
                    notes.append(
                        "merged rows are searched without the table's indexes until they are optimized "
                        "(table.optimize())"
                    )
        self._id_columns[dest] = plan.columns.id
        target = DatasetDescription(name=dest, config=plan.config, rows=source.rows)
        transform = identity
        if plan.drop:
            names = target.schema.names

            def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
                return batch.select(names)

        return ImportPlan(
            source=source,
            target=target,
            mode=mode,
            transform=transform,
            dropped=plan.dropped,
            notes=tuple(notes),
            extra={"table": plan},
        )

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Every batch through the conversion import_ runs, writing nothing: NaN vectors, ids the id column
        cannot hold and metadata that does not fit the table are refused before a table is touched."""
        writer = TableBatches(plan.extra["table"], plan.target.name)
        return sum(writer.convert(plan.transform(batch)).num_rows for batch in batches)

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Stream the batches into ``create_table`` (create, overwrite) or ``merge_insert`` (merge), check
        ``count_rows()``, then build the recorded indexes. Returns the rows written."""
        table_plan: TablePlan = plan.extra["table"]
        name = plan.target.name
        existing = self._database.open(name, None, missing_ok=True)
        converted = Converted(plan, batches)
        reader = converted.reader()
        try:
            if plan.mode == "merge" and existing is not None:
                self._merge(existing, table_plan, reader, name, lambda: converted.written)
                self._indexes_built[name] = []
                self._pinned.pop(name, None)
                return converted.written
            mode = "overwrite" if existing is not None else "create"
            with self._database.errors("write the table", name):
                table = self._database.live().create_table(
                    name, reader, schema=table_plan.schema, mode=mode, on_bad_vectors="null"
                )
                count = int(table.count_rows())
            if count != converted.written:
                raise ConnectorError(
                    f"LanceDB wrote {count} rows into table {name!r} in {self._where} where {converted.written} "
                    "were given, without an error; the table is not a faithful restore"
                )
        except AibackupError:
            if existing is None:
                with suppress(Exception):  # nothing of it was there before: no half-written table stays
                    self._database.live().drop_table(name, ignore_missing=True)
            if converted.failed is not None:
                raise converted.failed from None
            raise
        self._pinned.pop(name, None)
        self._build_indexes(table, table_plan, name)
        return converted.written

    # A partitioned restore (aibackup.partitioned_restore): workers write fragment files, the driver commits
    # them as one version (.fragments). merge needs merge_insert: one process.
    partitioned_modes = ("create", "overwrite")

    def begin_load(self, plan: ImportPlan) -> Mapping[str, Any]:
        if fragments.lance_module() is None:
            raise UsageError("a partitioned restore into LanceDB needs pylance: pip install 'aibackup[lancedb]'")
        name = plan.target.name
        existed = self._database.open(name, None, missing_ok=True) is not None
        return {"uri": self._database.table_uri(name), "existed": existed}

    def load_partition(
        self, plan: ImportPlan, load: Mapping[str, Any], number: int, batches: Iterable[pa.RecordBatch]
    ) -> tuple[int, list[dict[str, Any]]]:
        converted = Converted(plan, batches)
        try:
            with self._database.errors("write the fragments of", plan.target.name):
                receipt = fragments.write(str(load["uri"]), converted.reader())
        except AibackupError:
            if converted.failed is not None:
                raise converted.failed from None
            raise
        return converted.written, receipt

    def finish_load(self, plan: ImportPlan, load: Mapping[str, Any], rows: int, receipts: Sequence[Any]) -> int:
        """Commit every worker's fragments as one version replacing the table, check ``count_rows()``,
        then build the recorded indexes (as :meth:`import_` does after ``create_table``)."""
        table_plan: TablePlan = plan.extra["table"]
        name = plan.target.name
        try:
            with self._database.errors("commit the table", name):
                fragments.commit(str(load["uri"]), table_plan.schema, receipts)
                table = self._database.open(name, None)
                count = int(table.count_rows())
            if count != rows:
                raise ConnectorError(
                    f"LanceDB holds {count} rows in table {name!r} in {self._where} where {rows} were written, "
                    "without an error; the table is not a faithful restore"
                )
        except AibackupError:
            if not load.get("existed"):
                with suppress(Exception):  # nothing of it was there before: no half-written table stays
                    self._database.live().drop_table(name, ignore_missing=True)
            raise
        self._pinned.pop(name, None)
        self._build_indexes(table, table_plan, name)
        return rows

    def abandon_load(self, load: Mapping[str, Any]) -> None:
        fragments.abandon(str(load["uri"]), bool(load.get("existed")))

    def _merge(
        self, table: Any, plan: TablePlan, reader: pa.RecordBatchReader, name: str, written: Callable[[], int]
    ) -> None:
        with self._database.errors("merge into the table", name):
            before = int(table.count_rows())
            merge = table.merge_insert(plan.columns.id).when_matched_update_all().when_not_matched_insert_all()
            result = merge.execute(reader, on_bad_vectors="null")
            after = int(table.count_rows())
        inserted, updated = int(result.num_inserted_rows), int(result.num_updated_rows)
        if inserted + updated != written() or after != before + inserted:
            raise ConnectorError(
                f"LanceDB merged {inserted + updated} of {written()} rows into table {name!r} in {self._where} "
                f"(it held {before} rows, now {after}, {inserted} inserted), without an error; the merge is "
                "not a faithful restore"
            )

    def _build_indexes(self, table: Any, plan: TablePlan, name: str) -> None:
        """The recorded indexes, after the data; each failure is kept for the ``indexes`` check."""
        built: list[tuple[Mapping[str, Any], str | None]] = []
        for entry in plan.indexes:
            try:
                with self._database.errors(f"build index {entry['name']!r}", name):
                    table.create_index(entry["columns"][0], config=index_config(entry), name=entry["name"])
                built.append((entry, None))
            except AibackupError as exc:
                built.append((entry, str(exc)))
        self._indexes_built[name] = built

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """``indexes``: every index of a LanceDB bundle rebuilt, with its type and metric (none when the
        bundle recorded no index)."""
        built = self._indexes_built.get(plan.target.name)
        if not built:
            return []
        table = self._database.open(plan.target.name, None)
        with self._database.errors("list indexes", plan.target.name):
            found = {e["name"]: e for e in index_entries(table.list_indices())}
        problems, done = [], []
        for entry, error in built:
            have = found.get(entry["name"])
            what = f"{entry['name']} ({entry['type']}{', ' + entry['distance'] if entry.get('distance') else ''})"
            if error is not None:
                problems.append(f"{what} not rebuilt: {error}")
            elif have is None or (have["type"], have["distance"]) != (entry["type"], entry.get("distance")):
                problems.append(f"{what} not found after the build")
            else:
                done.append(what)
        if problems:
            return [("indexes", False, "; ".join(problems))]
        return [("indexes", True, f"{len(done)} rebuilt: {', '.join(done)}")]

    def drop(self, name: str) -> bool:
        """Drop table `name` (a missing one is already gone)."""
        with self._database.errors("drop the table", name):
            self._database.live().drop_table(name, ignore_missing=True)
        self._pinned.pop(name, None)
        return True
