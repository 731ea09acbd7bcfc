"""Milvus connector: Milvus Lite (``milvus:PATH``) and servers (``milvus+http(s)://HOST:PORT``), kind "milvus".

One code path drives both through pymilvus's ``MilvusClient`` (an optional extra: ``pip install
'aibackup[milvus]'``). Milvus Lite (milvus-lite 3.x) keeps a store in a folder at PATH (conventionally named
``*.db``) and serves it from a thread of this process; a server's token comes from ``MILVUS_TOKEN`` (or the
variable named by ``?api_key_env=``). pymilvus's and Milvus Lite's own log lines are silenced: errors
reach the user as aibackup's one line.

Canonical mapping (schema: :mod:`aibackup.manifests.vectors`)
----------------------------------------------------
- **ids**: the primary key. INT64 in canonical decimal (``-5``, ``42``); VARCHAR as it is.
- **dense vectors**: every FLOAT_VECTOR, FLOAT16_VECTOR and BFLOAT16_VECTOR field. The field ``vector`` is
  the unnamed vector (``""``, column ``vector``), so the single vector of a Chroma or Qdrant collection
  lands in a field named ``vector`` and comes back unnamed; every other field keeps its name. FLOAT16 and
  BFLOAT16 are widened exactly to float32; the datatype (``float16``, or ``bfloat16`` in ``options``) and
  ``native`` make a Milvus -> Milvus restore create them again. Null cells only where a field is nullable.
- **sparse vectors**: every SPARSE_FLOAT_VECTOR field, by name; indices sorted (Milvus returns them so).
- **document**: the VARCHAR field ``document``, else the one named ``text`` (LangChain's); **uri**: the
  VARCHAR field ``uri``.
- **metadata** (canonical JSON): every other field by name (ints, floats, bools, strings, JSON values,
  arrays; FLOAT values as the shortest decimal of their float32; a null in a nullable field is left out)
  and every dynamic (``$meta``) key. A collection whose only other field is a JSON field ``metadata``
  (dynamic fields off: LangChain's JSON layout, and what a restore from another backend makes) has that
  object as the record's metadata. A record of a partition other than ``_default`` carries its partition
  name in the metadata key ``_aibackup_partition``; a Milvus restore puts it back into that partition
  (other backends keep the key as ordinary metadata, so Milvus -> Chroma -> Milvus keeps partitions).
- **distances**: COSINE/L2/IP <-> cosine/l2/ip (a vector field without an index: COSINE, Milvus's default).
- **config**: ``native`` = fields (type, primary key, auto_id, nullable, default, max_length, dim, element
  type, partition/clustering key, params), functions, every index (type, metric, params), partitions,
  properties, dynamic field, description, consistency level; neutral: dense/sparse specs, ``hnsw`` (m,
  ef_construction of the first vector's HNSW index where the store reports them: Milvus Lite does not),
  ``metadata`` (the collection property ``aibackup.metadata``, written by a restore from another backend).
- Function outputs (BM25 sparse vectors) are not read: Milvus derives them again from their input fields
  on a Milvus restore; other backends do not get them.

Restore: Milvus -> Milvus recreates the collection from ``native`` (schema, properties, partitions, then the
rows, a flush, every index, load). Auto_id collections keep their records' ids: a server gets the property
``allow_insert_auto_id`` (new inserts still get auto ids, which a server draws from its clock, so they
never meet the old ones); Milvus Lite numbers auto ids from a counter explicit ids do not move, so there the
collection is refused unless --allow-lossy, which creates it without auto_id. From another backend:
``id`` VARCHAR(65535) primary key (the whole Milvus limit: a bound, not storage, and later merges with
longer ids still fit), a FLOAT_VECTOR per dense vector (``vector`` for the unnamed one; float16 vectors
FLOAT16_VECTOR on a server), a SPARSE_FLOAT_VECTOR per sparse one, ``document`` and ``uri`` VARCHAR(65535)
nullable, ``metadata`` JSON nullable, dynamic fields off; indexes: HNSW with the bundle's m/ef_construction,
else AUTOINDEX, with the distance's metric; sparse: SPARSE_INVERTED_INDEX/IP. Modes: create (refuse a
non-empty collection), overwrite (drop and recreate), merge (upsert into a collection with the same
primary key type and vectors, each indexed for the bundle's metric).

Lossy rules (UnsupportedFeatureError naming the collection, and the record where data decides, unless
--allow-lossy; then in ``plan.dropped`` and applied by ``plan.transform``):

- a vector name that is no Milvus field name (``[A-Za-z_][A-Za-z0-9_]*``, or one of id/document/uri/
  metadata/vector): renamed (``text-dense`` -> ``text_dense``); multivectors dropped; manhattan -> l2;
  a sparse modifier (idf) dropped; auto_id in Milvus Lite (above).
- documents longer than the field's max_length (65535 bytes): cut at a character boundary. Milvus holds
  no longer text (the contract's 10 MB document is refused).
- metadata numbers Milvus JSON cannot hold: ints outside int64 -> float (null beyond float range),
  NaN/Infinity -> null (typed DOUBLE/FLOAT fields keep NaN).
- never mapped: a record without one of the vectors (Milvus needs every vector field unless it is
  nullable, and Milvus Lite cannot store a null vector), NaN/Infinity in a vector, an empty sparse vector
  or one with an index >= 2**32-1 (Milvus Lite also refuses negative weights), metadata that does not fit
  a typed field, a metadata key without a field in a collection without dynamic fields.

Settings without data: index types Milvus Lite lacks become AUTOINDEX (vectors) or are left out (scalar
indexes other than INVERTED); FLOAT16/BFLOAT16 fields become FLOAT_VECTOR in Milvus Lite (the same values);
Qdrant payload indexes and HNSW ef_search are not recreated (``plan.notes``).

Export reads every partition through ``query_iterator`` (pages of ``batch_rows``, all fields), checks
that primary keys come strictly increasing (pymilvus pages by ``pk > last``; it does not escape quotes in
a VARCHAR cursor, so the connector does), then counts the collection again; a server is also read once
more, ids only, and the id checksums compared: a collection written during the backup is refused. Milvus
Lite's folder is locked by the process serving it, so nobody else writes meanwhile. A server collection
that is not loaded is loaded for the backup and released at close; Milvus Lite loads on open.

On Dask (``--workers``), a server's collection splits into ranges of primary keys of one keys-only listing
(:mod:`.partitions`); a partitioned restore's workers upsert into a load collection that the restore then
renames into place, indexes once and loads (modes create and overwrite). Milvus Lite is one process's.

Search: Milvus's own search with the collection's metric (HNSW: ef = max(k, 64)); FLAT and
BRUTE_FORCE indexes are exact (``search_index``), as is AUTOINDEX in a Milvus Lite without faiss.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from aibackup.connectors.base import (
    MODES,
    DatasetDescription,
    ImportPlan,
    Location,
    Partitioning,
    VectorConnector,
    chain,
    id_checksum,
    identity,
)
from aibackup.connectors.milvus import partitions
from aibackup.connectors.milvus.client import Store, faiss_available
from aibackup.connectors.milvus.plan import MAX_VARCHAR, merge_problem, plan_collection
from aibackup.connectors.milvus.records import (
    Transform,
    batch_to_rows,
    lossy_json_numbers,
    reshape,
    rows_to_batch,
    truncated_documents,
)
from aibackup.connectors.milvus.schema import (
    DEFAULT_PARTITION,
    EXACT_INDEXES,
    Layout,
    build_indexes,
    config_of,
    index_of,
    layout_of,
)
from aibackup.connectors.sparse import sorted_sparse_vectors, sparse_without_zeros
from aibackup.errors import (
    ConnectorError,
    DatasetNotFoundError,
    SourceDataError,
    TargetNotEmptyError,
    UnsupportedFeatureError,
    UsageError,
)

__all__ = ["MilvusConnector"]

#: Rows per query-iterator page: Milvus Lite reads 20k x 384 in about the same time at any page from 1000
#: to 16000 (measured 1.3-1.7 s, milvus-lite 3.2.2); the float budget keeps a page's vectors ~8 MB.
DEFAULT_BATCH_ROWS = 4000
READ_FLOAT_BUDGET = 2_000_000
#: Rows per insert/upsert: a server's gRPC requests are capped at 64 MB; 500k floats is ~2 MB of protobuf.
DEFAULT_WRITE_ROWS = 1000
WRITE_FLOAT_BUDGET = 500_000
#: Ids per page of the ids-only pass that proves a server export saw every record once (pymilvus caps
#: iterator pages at 16384).
ID_PAGE = 16_000
SEARCH_CHUNK = 1000  # queries per search call (Milvus takes up to 16384; fewer calls are faster)
#: The name of a partitioned restore's load collection, before its random part.
LOAD_PREFIX = "aibackup_load_"


def _read_partitions(layout: Layout) -> list[str | None]:
    """What an export reads one after the other: each Milvus partition, or the whole collection (None)."""
    return [DEFAULT_PARTITION, *layout.partitions] if layout.partitions else [None]


class MilvusConnector(VectorConnector):
    """A Milvus store: Milvus Lite at a path, or a server. See the module docstring for the mapping."""

    kind = "milvus"

    def __init__(
        self,
        location: Location,
        *,
        create: bool = False,
        options: Mapping[str, Any] | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        write_rows: int = DEFAULT_WRITE_ROWS,
    ) -> None:
        """Open the store. A source (`create` False) path that is missing or holds no Milvus Lite store
        raises DatasetNotFoundError; a folder served by another process, or a server that does not answer
        (within :data:`.client.CONNECT_TIMEOUT_S`) or refuses the token, raises UnavailableError."""
        super().__init__(location, create=create, options=options)
        self.batch_rows = max(1, min(batch_rows, 16_384))
        self.write_rows = max(1, write_rows)
        self._int_ids = False  # the primary key type of the collection being exported (id_types)
        self._described: dict[str, dict[str, Any]] = {}  # the last native description read of each collection
        self._store = Store(location, create=create)
        self.lite = self._store.lite
        self._where = self._store.where

    # --- reading -----------------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """All collections sorted by name, or exactly `names`; DatasetNotFoundError for a missing one.
        ``rows`` is an exact count (a server collection that is not loaded: its statistics' row count)."""
        client = self._require()
        with self._store.errors("listing collections"):
            existing = set(client.list_collections())
        wanted = sorted(existing) if names is None else list(names)
        for name in wanted:
            if name not in existing:
                raise DatasetNotFoundError(f"collection {name!r} not found in {self._where}")
        return [self._describe(name) for name in wanted]

    def _describe(self, name: str) -> DatasetDescription:
        native = self._native(name)
        layout = layout_of(native)
        if layout.unsupported:
            kinds = ", ".join(f"{f.name!r} ({f.type})" for f in layout.unsupported)
            raise SourceDataError(
                f"Milvus collection {name!r} in {self._where} has vector fields the bundle format cannot hold: "
                f"{kinds}; back up the other collections with --collection"
            )
        try:
            config = config_of(native)
        except ValueError as exc:
            raise SourceDataError(f"Milvus collection {name!r} in {self._where}: {exc}") from None
        return DatasetDescription(name=name, config=config, rows=self._store.count(name))

    def _native(self, name: str) -> dict[str, Any]:
        """The ``native`` description of collection `name`, read now (and kept for :meth:`search`)."""
        native = self._store.native(name)
        self._described[name] = native
        return native

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every record as canonical batches (query-iterator pages, partition by partition). Raises
        SourceDataError if the collection was written to during the backup (another count, other ids, or
        keys out of order) or holds a record the bundle cannot hold as it is."""
        name, schema = dataset.name, dataset.schema
        native = dataset.config.native or self._native(name)
        layout = layout_of(native)
        self._int_ids = layout.int_pk
        self._store.ensure_loaded(name)
        rows = self._page_rows(layout)
        milvus_partitions = _read_partitions(layout)
        exported = checksum = 0
        pk = layout.pk.name
        for partition in milvus_partitions:
            for page in self._store.pages(name, layout, rows, partition, full=True):
                batch = rows_to_batch(page, layout, schema, name, partition)
                exported += batch.num_rows
                checksum += id_checksum(r[pk] for r in page)
                yield batch
        final = self._store.count(name)
        ids_now = checksum
        if not self.lite:  # Milvus Lite's folder lock keeps every other process out
            id_pages = self._store.pages(name, layout, ID_PAGE, None, full=False)
            ids_now = sum(id_checksum(r[pk] for r in p) for p in id_pages)
        if final != exported or ids_now != checksum:
            raise SourceDataError(
                f"Milvus collection {name!r} in {self._where} changed during the backup (holds {final} records, "
                f"{exported} were exported, or not each record once); back up again while it is not written to"
            )

    def partition(self, dataset: DatasetDescription, wanted: int) -> Partitioning | None:
        """A server's collection: ranges of primary keys from one keys-only listing (:mod:`.partitions`);
        Milvus Lite (one process's), and a collection of fewer than two records, do not split."""
        if self.lite or dataset.rows < 2:
            return None
        layout = layout_of(dataset.config.native or self._native(dataset.name))
        self._store.ensure_loaded(dataset.name)  # loaded by the backup's process until it ends
        ranges = partitions.key_ranges(self._store, dataset.name, layout, dataset.rows, wanted)
        if len(ranges) < 2:
            return None
        how = f"{len(ranges)} ranges of primary keys of one listing of its {dataset.rows} keys"
        return Partitioning(partitions=tuple(ranges), options={}, how=how)

    def export_partition(self, dataset: DatasetDescription, partition: Mapping[str, Any]) -> Iterator[pa.RecordBatch]:
        name, schema = dataset.name, dataset.schema
        layout = layout_of(dataset.config.native or self._native(name))
        self._int_ids = layout.int_pk
        self._store.ensure_loaded(name)
        rows = self._page_rows(layout)
        milvus_partitions = _read_partitions(layout)
        for where, page in partitions.range_pages(self._store, name, layout, rows, milvus_partitions, partition):
            yield rows_to_batch(page, layout, schema, name, where)

    def _page_rows(self, layout: Layout) -> int:
        """Rows per query-iterator page: :attr:`batch_rows`, fewer for wide vectors."""
        vector_floats = sum(int(f.dim or 0) for _, f in layout.dense)
        return max(1, min(self.batch_rows, READ_FLOAT_BUDGET // max(vector_floats, 1)))

    def id_types(self, ids: pa.Array) -> Counter[str]:
        """VARCHAR keys: "string"; INT64 keys: "uint" (a negative one "string": the manifest's id types
        have no signed integer)."""
        if not self._int_ids:
            return Counter({"string": len(ids)})
        negative = sum(1 for i in ids.to_pylist() if i.startswith("-"))
        return +Counter({"uint": len(ids) - negative, "string": negative})

    def search(self, name: str, vector: str, queries: np.ndarray, k: int) -> list[list[str]]:
        """Top-`k` ids per query row by Milvus's own index and metric on dense vector `vector`."""
        client = self._require()
        native = self._described.get(name) or self._native(name)
        layout = layout_of(native)
        field = dict(layout.dense).get(vector)
        if field is None:
            raise DatasetNotFoundError(f"collection {name!r} in {self._where} has no dense vector {vector!r}")
        self._store.ensure_loaded(name)
        index = index_of(native, field.name) or {}
        params: dict[str, Any] = {"metric_type": index.get("metric_type") or "COSINE"}
        if index.get("index_type") in ("HNSW", "HNSW_SQ"):  # ef >= k (Milvus refuses less); AUTOINDEX tunes itself
            params["params"] = {"ef": max(k, 64)}
        rows = np.asarray(queries, dtype=np.float32)
        data: list[Any]
        if field.type == "FLOAT16_VECTOR":
            data = list(rows.astype(np.float16))
        elif field.type == "BFLOAT16_VECTOR":
            data = [(row.view("<u4") >> 16).astype("<u2").tobytes() for row in rows]
        else:
            data = [row for row in rows]
        results: list[list[str]] = []
        for start in range(0, len(data), SEARCH_CHUNK):
            with self._store.errors(f"searching collection {name!r}", name):
                found = client.search(
                    name,
                    data=data[start : start + SEARCH_CHUNK],
                    anns_field=field.name,
                    limit=k,
                    output_fields=[layout.pk.name],  # [] would return every field (vectors too) in Milvus Lite
                    search_params=params,
                    consistency_level="Strong",
                )
            for hits in found:
                results.append([str(hit[layout.pk.name] if layout.pk.name in hit else hit["id"]) for hit in hits])
        return results

    def search_index(self, dataset: DatasetDescription, vector: str) -> dict[str, Any]:
        """FLAT and BRUTE_FORCE scan every record (exact), as does AUTOINDEX in a Milvus Lite without faiss
        and a Milvus Lite field without an index; anything else is approximate."""
        native = dataset.config.native or {}
        field = dict(layout_of(native).dense).get(vector) if native else None
        index = (index_of(native, field.name) if field else None) or {}
        kind = index.get("index_type")
        exact = kind in EXACT_INDEXES or (
            self.lite and (kind is None or (kind == "AUTOINDEX" and not faiss_available()))
        )
        out = super().search_index(dataset, vector)
        out.update(store="milvus lite" if self.lite else "milvus", exact=exact)
        if kind:
            out["index_type"] = kind
        return out

    # --- writing -----------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Decide how `source` becomes collection `dest` (the rules: module docstring). Raises
        TargetNotEmptyError (mode "create" and `dest` holds records) and UnsupportedFeatureError (what
        Milvus cannot hold without `allow_lossy`; a merge into a collection whose fields differ)."""
        if mode not in MODES:
            raise UsageError(f"bad mode {mode!r}: expected one of {', '.join(MODES)}")
        made = plan_collection(source.config, dest, lite=self.lite, allow_lossy=allow_lossy)
        existing = self._existing(dest)
        if existing is not None and mode == "create" and existing.rows:
            raise self._not_empty(dest, existing.rows)
        written = made.native
        if existing is not None and mode == "merge":
            self._check_merge(dest, existing, made.native)
            written = dict(existing.config.native or {})
        try:
            target = DatasetDescription(name=dest, config=config_of(written), rows=source.rows)
        except ValueError as exc:
            raise UnsupportedFeatureError(f"collection {dest!r}: {exc}") from None
        layout = layout_of(written)
        steps: list[Transform] = []
        if made.renamed or set(source.schema.names) != set(target.schema.names):
            steps.append(reshape(target.schema, made.columns))
        if target.config.sparse:
            steps.append(sorted_sparse_vectors)
        dropped = list(made.dropped)
        if allow_lossy:
            if self.lite and target.config.sparse:
                steps.append(sparse_without_zeros)
                dropped.append("zero weights of sparse vectors, if any (Milvus Lite does not store them)")
            steps.append(lossy_json_numbers(layout))
            dropped.append(
                "metadata numbers Milvus JSON cannot hold, if any: ints outside int64 become floats, NaN/Infinity null"
            )
            if layout.document is not None:
                limit = layout.document.max_length or MAX_VARCHAR
                steps.append(truncated_documents(limit))
                dropped.append(f"documents longer than {limit} bytes, if any: cut to {limit} bytes")
        return ImportPlan(
            source=source,
            target=target,
            mode=mode,
            transform=chain(steps) if steps else identity,
            dropped=tuple(dropped),
            notes=made.notes,
            extra={"create": made.native},
        )

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Every per-record check of `import_` (ids, vectors, text lengths, metadata types, partitions),
        writing nothing: the rows are built and thrown away. Returns the rows checked."""
        layout = layout_of(plan.target.config.native or {})
        checked = 0
        for batch in batches:
            batch = plan.transform(batch)
            batch_to_rows(batch, layout, plan.target.name, lite=self.lite)
            checked += batch.num_rows
        return checked

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Create the collection per ``plan.mode`` (create: only if absent or empty; overwrite: drop and
        recreate; merge: upsert into it if its fields match), write every record (after
        ``plan.transform``) into its partition, then flush, build the indexes and load. Returns the rows
        written."""
        client = self._require()
        name = plan.target.name
        existing = self._existing(name)
        self._described.pop(name, None)
        merge = existing is not None and plan.mode == "merge"
        if merge:
            assert existing is not None
            self._check_merge(name, existing, plan.extra["create"])
            self._store.ensure_loaded(name)
        elif existing is not None:
            if plan.mode == "create" and existing.rows:
                raise self._not_empty(name, existing.rows)
            with self._store.errors(f"dropping collection {name!r}", name):
                client.drop_collection(name)
        native = dict(plan.target.config.native or {}) if merge else dict(plan.extra["create"])
        if not merge:
            self._store.create(name, native)
        written = self._write(plan, name, native, batches, client.upsert if merge else client.insert)
        with self._store.errors(f"indexing collection {name!r}", name):
            client.flush(name)
            if not merge:
                self._index_and_load(name, native)
        return written

    def _write(
        self, plan: ImportPlan, name: str, native: Mapping[str, Any], batches: Iterable[pa.RecordBatch], write: Any
    ) -> int:
        """Write every batch (after ``plan.transform``) into collection `name` (as `native` describes it)
        with `write` (the client's insert or upsert), each record into its partition, made where missing.
        Returns the rows written."""
        client = self._require()
        layout = layout_of(native)
        with self._store.errors(f"reading collection {name!r}", name):
            present = set(client.list_partitions(name))
        floats = sum(int(f.dim or 0) for _, f in layout.dense)
        step = max(1, min(self.write_rows, WRITE_FLOAT_BUDGET // max(floats, 1)))
        written = 0
        for batch in batches:
            batch = plan.transform(batch)
            for start in range(0, batch.num_rows, step):
                groups = batch_to_rows(batch.slice(start, step), layout, plan.target.name, lite=self.lite)
                for partition, rows in groups.items():
                    if partition is not None and partition not in present:
                        with self._store.errors(f"creating partition {partition!r} of collection {name!r}", name):
                            if not client.has_partition(name, partition):  # another worker may have made it
                                client.create_partition(name, partition)
                        present.add(partition)
                    with self._store.errors(f"writing to collection {name!r}", name):
                        write(name, rows, partition_name=partition or "")
                    written += len(rows)
        return written

    def _index_and_load(self, name: str, native: Mapping[str, Any]) -> None:
        """Build the indexes `native` describes on collection `name` (written and flushed), then load it."""
        client = self._require()
        indexes = build_indexes(client, native)
        if indexes is not None:
            client.create_index(name, indexes)
        client.load_collection(name)

    # A partitioned restore into a server (aibackup.partitioned_restore): the workers upsert into a load
    # collection of the target's fields made by this restore (a task run again writes the same records
    # again); the driver flushes it, replaces the target with it by a rename, builds the indexes once and
    # loads it. Milvus Lite is one process's.
    partitioned_modes = ("create", "overwrite")

    @classmethod
    def load_modes(cls, location: Location) -> tuple[str, ...]:
        return cls.partitioned_modes if location.is_server else ()

    def begin_load(self, plan: ImportPlan) -> Mapping[str, Any]:
        load = f"{LOAD_PREFIX}{secrets.token_hex(6)}"
        self._store.create(load, plan.extra["create"])
        return {"name": load}

    def load_partition(
        self, plan: ImportPlan, load: Mapping[str, Any], number: int, batches: Iterable[pa.RecordBatch]
    ) -> tuple[int, None]:
        name = str(load["name"])
        return self._write(plan, name, plan.extra["create"], batches, self._require().upsert), None

    def finish_load(self, plan: ImportPlan, load: Mapping[str, Any], rows: int, receipts: Sequence[Any]) -> int:
        client = self._require()
        name, loaded = plan.target.name, str(load["name"])
        with self._store.errors(f"writing to collection {name!r}", name):
            client.flush(loaded)
        existing = self._existing(name)
        self._described.pop(name, None)
        if existing is not None:
            if plan.mode == "create" and existing.rows:
                raise self._not_empty(name, existing.rows)
            with self._store.errors(f"dropping collection {name!r}", name):
                client.drop_collection(name)
        with self._store.errors(f"indexing collection {name!r}", name):
            client.rename_collection(loaded, name)
            self._index_and_load(name, plan.extra["create"])
        count = self._store.count(name)
        if count != rows:
            raise ConnectorError(
                f"Milvus collection {name!r} in {self._where} holds {count} records after {rows} were written "
                "by the workers"
            )
        return rows

    def abandon_load(self, load: Mapping[str, Any]) -> None:
        self.drop(str(load["name"]))

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """``indexes``: every index the restore built is there with its type and metric (a merge keeps the
        collection's own)."""
        if plan.mode == "merge" and plan.target.config.native != plan.extra["create"]:
            return []

        def shown(indexes: Iterable[Mapping[str, Any]]) -> set[str]:
            return {f"{i['field']} {i.get('index_type')}/{i.get('metric_type') or '-'}" for i in indexes}

        wanted = shown(plan.extra["create"].get("indexes") or ())
        found = shown(self._native(plan.target.name).get("indexes") or ())
        missing = sorted(wanted - found)
        if missing:
            return [("indexes", False, f"missing: {', '.join(missing)}")]
        return [("indexes", True, f"{len(wanted)} rebuilt: {', '.join(sorted(wanted))}")]

    def drop(self, name: str) -> bool:
        """Delete collection `name` (a missing one is already gone)."""
        client = self._require()
        with self._store.errors(f"dropping collection {name!r}", name):
            if client.has_collection(name):
                client.drop_collection(name)
        self._store.loaded.discard(name)
        self._described.pop(name, None)
        return True

    def _existing(self, name: str) -> DatasetDescription | None:
        client = self._require()
        with self._store.errors(f"looking up collection {name!r}", name):
            exists = client.has_collection(name)
        return self._describe(name) if exists else None

    def _check_merge(self, name: str, existing: DatasetDescription, planned: Mapping[str, Any]) -> None:
        problem = merge_problem(existing.config.native or {}, planned)
        if problem:
            raise UnsupportedFeatureError(
                f"cannot merge into Milvus collection {name!r} in {self._where}: {problem}; use --mode overwrite "
                f"or restore under another name"
            )

    def _not_empty(self, name: str, rows: int) -> TargetNotEmptyError:
        return TargetNotEmptyError(
            f"Milvus collection {name!r} in {self._where} already holds {rows} records; restore with --mode "
            f"overwrite (replace it) or --mode merge (upsert into it), or under another name"
        )

    # --- plumbing ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the server collections this connector loaded, close the client, and stop the Milvus Lite
        server it started once no other connector uses it. Safe to call twice."""
        self._store.close()

    def _require(self) -> Any:
        return self._store.require()
