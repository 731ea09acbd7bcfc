"""Chroma connector: embedded stores (``chroma:PATH``) and servers (``chroma+http(s)://HOST:PORT``).

chromadb is an optional extra (``pip install 'aibackup[chroma]'``). Embedded stores open with
``PersistentClient``, servers with ``HttpClient`` (token from ``CHROMA_API_KEY``, sent both as
``Authorization: Bearer`` and ``X-Chroma-Token``, the two transports of Chroma's token auth; ``?tenant=`` /
``?database=`` pick a tenant and database). Telemetry is off. No embedding function is ever built or called:
collections are opened with ``embedding_function=None`` and every write passes embeddings.

Canonical mapping (schema: :mod:`aibackup.manifests.vectors`)
---------------------------------------------------
- **id** <-> Chroma's string id, unchanged (an empty id cannot go into Chroma).
- **vector** <-> the embedding, one per record, named "" unless the collection metadata holds
  ``_aibackup_vector_name`` (written when restoring one named vector; hidden from the neutral metadata).
  Chroma stores float32 and returns float64 (the server: the float32's shortest decimal); the cast back to
  float32 is exact.
- **document**, **uri** <-> documents and uris (null where absent; "" stays "").
- **metadata** <-> canonical JSON of the record metadata (ints, floats, bools, strings, homogeneous lists;
  none -> null). A ``SparseVector`` value (Chroma Cloud only) becomes Chroma's own tagged wire form
  ``{"#type":"sparse_vector","indices":[..],"values":[..]}``, and a ``SparseVector`` again on import into a
  store that holds them (``sparse_metadata``; local Chroma does not: see the lossy rules).
- **config**: distance = the hnsw space (cosine/l2/ip); ``hnsw`` = {m: max_neighbors, ef_construction,
  ef_search}; ``metadata`` = collection metadata without legacy ``hnsw:*`` keys; size = the recorded
  dimension. ``native`` = {kind, configuration (configuration_json with the embedding function config),
  schema (serialized), metadata (all of it), dimension}. A Chroma -> Chroma restore recreates the collection
  from ``native`` so configuration_json, schema and metadata come back equal (tested): from the schema; from
  the configuration when the metadata holds legacy ``hnsw:*`` keys (Chroma refuses both at once); from the
  metadata alone (then hnsw changes via ``modify``) when no embedding function was recorded. Embedding
  functions are recreated as config-only stand-ins, so neither their packages nor API keys are needed.
  Any other source: the neutral fields (space, hnsw, metadata).
- A collection that never held a record has no dimension: it is described with **no dense vector**
  (``dense=()``) and exports nothing; space and hnsw still travel. (Restoring it, or restoring zero records,
  gives such a collection again.)

Lossy rules (UnsupportedFeatureError naming the collection and the feature unless ``allow_lossy``; then
listed in ``plan.dropped`` and applied by ``plan.transform``, which import_ applies itself):

- several dense vectors: the unnamed one is kept (else the first by name); one named vector is lossless.
- multivectors dropped (refused even lossy when no plain vector remains); sparse vectors dropped.
- distance manhattan -> l2.
- record metadata Chroma cannot hold (rules in :mod:`aibackup.connectors.chroma.metadata`; met while streaming, so
  the refusal names the record): nulls and refused keys dropped; nested objects, sparse-vector values,
  empty/mixed lists, NaN/Infinity as their canonical JSON text; ints beyond int64 as decimal strings; -0.0
  as 0.0. Collection metadata alike (lists too become JSON text: Chroma holds scalars only there).
- never mapped: a record without the dense vector, non-finite components, and in a cosine collection a
  vector whose squared norm leaves float32's normal range (Chroma returns inf or garbage for those).
  ``validate_records`` finds these (and, when not lossy, the metadata refusals) without writing anything.

Tolerances (measured, chromadb 1.5.9, embedded and server): l2/ip embeddings come back bit-exact. Cosine
collections keep the unit vector and the norm: ~26% of components come back 1 float32 ulp off (2 ulps only
at norms ~1e-19), so ``plan.tolerances`` = ``{vector column: "ulp"}`` for cosine targets.

Limits found: ``get()`` with embeddings fails above ~32k ids per call; pages of ``batch_rows`` (default
2500: a full backup of 100k×384 embedded records measured fastest at 2500 (vs 1000 and 5000), ~23k
records/s; ~10k/s from a server; a page's Python objects dominate the reader's memory, so bigger pages
cost memory for no speed; from LARGE_COLLECTION records on, an embedded store is read in pages of
LARGE_PAGE_ROWS, since its offset pages slow down the further in they start). Pages are read through
:func:`raw_get`, two ahead of their conversion. Writes run ~1800 records/s at dim 384 (~9000/s at dim 64)
whatever the batch size. Collection names: 3-512 of [a-zA-Z0-9._-]. ``upsert`` merges metadata into an
existing record, so merge mode deletes a batch's existing ids, then adds. Chroma 1.5.9 leaves a deleted
collection's list-valued metadata rows behind and a later record reusing the row id inherits them: a
collection is emptied record by record (~5k/s) before it is deleted (overwrite, or create over an empty one).

On Dask (``--workers``): a server's collection splits into groups of one ids listing for a backup
(:mod:`.partitions`), and a restore's workers upsert into the collection the restore made.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
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
    client_errors,
    id_checksum,
)
from aibackup.connectors.chroma import metadata as cm
from aibackup.connectors.chroma import partitions, reading
from aibackup.connectors.chroma.client import is_transport_error, raw_get
from aibackup.connectors.chroma.plan import check_merge, chroma_shape
from aibackup.connectors.registry import api_key
from aibackup.errors import (
    AibackupError,
    ConnectorError,
    ConnectorNotInstalledError,
    DatasetNotFoundError,
    SourceDataError,
    TargetNotEmptyError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
    first_line,
)
from aibackup.manifests.model import DenseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import dense_column

MAX_GET = 30_000  # get() with embeddings fails above ~32k ids per call
PAGE_ROWS = 2500  # the export's page (fastest at 100k x 384, embedded and server)
#: Embedded Chroma's offset pages cost more the further in they start (its SQLite skips the rows before
#: the offset), so a large embedded collection is read in bigger pages: 1M x 384 records measured 82.7 s in
#: 2,500-record pages, 64 s in 5,000 and 58-60 s in 10,000 (2026-12-05). A server keeps PAGE_ROWS (its
#: client's memory is what the benchmarks hold flat).
LARGE_PAGE_ROWS = 10_000
LARGE_COLLECTION = 500_000


class ChromaConnector(VectorConnector):
    """A Chroma store, embedded (a directory holding chroma.sqlite3) or a server."""

    kind = "chroma"
    #: Whether the store holds ``SparseVector`` metadata values. Chroma Cloud does; local Chroma 1.5.9
    #: (embedded and ``chroma run``) refuses them, and only local stores can be named by a URI.
    sparse_metadata = False

    def __init__(
        self,
        location: Location,
        *,
        create: bool = False,
        options: Mapping[str, Any] | None = None,
        batch_rows: int | None = None,
    ) -> None:
        """Open the store. Source (`create` False): a path without chroma.sqlite3 raises DatasetNotFoundError.
        A server that does not answer raises UnavailableError. `batch_rows` is the export page size (None:
        PAGE_ROWS, or LARGE_PAGE_ROWS for an embedded collection of LARGE_COLLECTION records or more)."""
        super().__init__(location, create=create, options=options)
        if batch_rows is not None and not 1 <= batch_rows <= MAX_GET:
            raise UsageError(f"batch_rows must be between 1 and {MAX_GET} (Chroma's get() limit)")
        self.batch_rows = batch_rows
        self._store = location.display()
        self._client: Any = None
        try:
            import chromadb
            import chromadb.errors
            from chromadb.config import Settings
        except ImportError:
            raise ConnectorNotInstalledError(
                "the Chroma connector needs chromadb: pip install 'aibackup[chroma]'"
            ) from None
        self._chromadb = chromadb
        settings = Settings(anonymized_telemetry=False)
        where = {k: location.params[k] for k in ("tenant", "database") if k in location.params}
        if location.is_server:
            token = api_key(location)
            headers = {"Authorization": f"Bearer {token}", "X-Chroma-Token": token} if token else None
            with self._errors("connect", unavailable=True):
                self._client = chromadb.HttpClient(
                    host=str(location.host),
                    port=int(location.port or 8000),
                    ssl=location.tls,
                    headers=headers,
                    settings=settings,
                    **where,
                )
                self._client.heartbeat()
            return
        path = Path(str(location.path))
        if path.exists() and not path.is_dir():
            raise UsageError(f"{self._store}: {path} is not a directory")
        if not create and not (path / "chroma.sqlite3").is_file():
            # PersistentClient would silently create an empty store here.
            raise DatasetNotFoundError(f"no Chroma store at {path} (no chroma.sqlite3 in it)")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the Chroma store directory {path}: {exc.strerror}") from None
        with self._errors("open the store"):
            self._client = chromadb.PersistentClient(path=str(path), settings=settings, **where)

    def close(self) -> None:
        """Release the client; for an embedded store the last close stops Chroma's shared per-path system
        (its SQLite connection), so the path can be opened again in this process."""
        client, self._client = self._client, None
        if client is not None:
            with suppress(Exception):  # closing is best effort
                client.close()

    # --- describe / export ------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """All collections sorted by name, or exactly `names` (DatasetNotFoundError for a missing one)."""
        if names is None:
            with self._errors("list collections"):
                names = sorted(c.name for c in self._live().list_collections())
        return [self._describe(self._collection(name)) for name in names]

    def _describe(self, col: Any) -> DatasetDescription:
        with self._errors("read the collection", col.name):
            model = col.get_model()
            rows = int(col.count())
            dimension = model.dimension
            if dimension is None and rows:  # not recorded: take it from a record
                dimension = len(col.get(limit=1, include=["embeddings"])["embeddings"][0])
        configuration = dict(model.configuration_json or {})
        metadata = dict(model.metadata or {})
        space = cm.space_of(configuration, metadata)
        if space not in cm.SPACES:
            raise SourceDataError(f"collection {col.name!r} in {self._store}: unknown space {space!r}")
        name = str(metadata.get(cm.VECTOR_NAME_KEY, ""))
        dense = (DenseVectorSpec(name, int(dimension), cm.SPACES[space]),) if dimension else ()
        native = {
            "kind": "chroma",
            "chromadb": self._chromadb.__version__,
            "configuration": configuration,
            "schema": model.serialized_schema,
            "metadata": metadata or None,
            "dimension": dimension,
        }
        config = VectorsConfig(
            dense=dense,
            metadata=cm.neutral_metadata(metadata),
            hnsw=cm.neutral_hnsw(configuration),
            native=native,
        )
        return DatasetDescription(name=col.name, config=config, rows=rows)

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every record as canonical batches of at most `batch_rows` rows (offset pages).

        Each record exactly once is proven, not assumed: a final ids-only pass must find as many records as
        were exported, with the same sum of id hashes; otherwise SourceDataError (the collection changed
        during the backup). That pass is the count too: ``count()`` scans the collection in embedded
        Chroma (0.2 s per 100k records), so it is not called again."""
        col = self._collection(dataset.name)
        specs = dataset.config.dense
        if len(specs) > 1 or any(s.multivector for s in specs):
            raise SourceDataError(f"collection {dataset.name!r}: a Chroma collection has one plain vector")
        schema = dataset.schema
        size = specs[0].size if specs else None
        if size is None:  # described while empty: records that arrived since would be read without vectors
            with self._errors("count records", dataset.name):
                if int(col.count()):
                    raise SourceDataError(
                        f"collection {dataset.name!r} received records after it was described; run the backup again"
                    )
        include = ["documents", "metadatas", "uris"] + (["embeddings"] if size else [])
        rows = id_sum = 0

        def convert(page: Any) -> pa.RecordBatch:
            nonlocal rows, id_sum
            ids = list(page["ids"])
            id_sum += id_checksum(ids)
            rows += len(ids)
            return cm.page_to_batch(dataset.name, schema, size, page)

        step = self.page_rows(dataset.rows)
        final_rows, final_sum = yield from reading.pages(col, include, dataset.name, convert, step, self._errors)
        if (final_rows, final_sum) != (rows, id_sum):
            raise SourceDataError(
                f"collection {dataset.name!r} in {self._store} changed during the backup (exported {rows} "
                f"records, it holds {final_rows} now, or not each record once); run it again while nothing "
                "writes to the collection"
            )

    def partition(self, dataset: DatasetDescription, wanted: int) -> Partitioning | None:
        """A server's collection: groups of one ids-only listing (:mod:`.partitions`); an embedded store,
        and a collection without records or vector, do not split."""
        if not self.location.is_server or not dataset.config.dense or dataset.rows < 2:
            return None
        col = self._collection(dataset.name)
        groups = partitions.id_groups(col, dataset.name, dataset.rows, wanted, self._errors)
        if len(groups) < 2:
            return None
        how = f"{len(groups)} groups of one listing of its {dataset.rows} ids"
        return Partitioning(partitions=tuple({"ids": g} for g in groups), options={}, how=how)

    def export_partition(self, dataset: DatasetDescription, partition: Mapping[str, Any]) -> Iterator[pa.RecordBatch]:
        col = self._collection(dataset.name)
        size = dataset.config.dense[0].size
        include = ["documents", "metadatas", "uris", "embeddings"]
        step = self.page_rows(dataset.rows)
        for page in partitions.pages(col, dataset.name, list(partition["ids"]), include, step, self._errors):
            yield cm.page_to_batch(dataset.name, dataset.schema, size, page)

    def page_rows(self, rows: int) -> int:
        """The page size of an export of a collection described with `rows` records."""
        if self.batch_rows is not None:
            return self.batch_rows
        large = not self.location.is_server and rows >= LARGE_COLLECTION
        return LARGE_PAGE_ROWS if large else PAGE_ROWS

    # --- import ------------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Decide how `source` becomes collection `dest` (see the module docstring), writing nothing."""
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        if not cm.NAME_RE.match(dest):
            raise UnsupportedFeatureError(
                f"Chroma cannot name a collection {dest!r}: it needs 3-512 characters of [a-zA-Z0-9._-], "
                "starting and ending with a letter or digit; restore it under another name"
            )
        cfg = source.config
        shape = chroma_shape(source, dest, allow_lossy)
        keep, distance, metadata = shape.keep, shape.distance, shape.metadata
        configuration, schema, route = shape.configuration, shape.schema, shape.route

        existing = self._collection(dest, missing_ok=True)
        count = 0
        if existing is not None:
            with self._errors("count records", dest):
                count = int(existing.count())
            if mode == "create" and count:
                raise TargetNotEmptyError(
                    f"collection {dest!r} in {self._store} already holds {count} records; restore with "
                    "--mode overwrite to replace it or --mode merge to add to it"
                )
            if mode == "merge":
                self._check_merge(existing, keep, distance)
        # Chroma learns a collection's dimension from its first record: restoring no records gives a
        # collection that is described without a vector, and the plan says so (space and hnsw still travel).
        holds_records = source.rows > 0 or (mode == "merge" and count > 0)
        if not holds_records:
            keep = None
        dense = (DenseVectorSpec(keep.name, keep.size, distance),) if keep else ()
        target_cfg = VectorsConfig(
            dense=dense,
            metadata=cm.neutral_metadata(metadata),
            hnsw=cm.neutral_hnsw(configuration) or cfg.hnsw,
            native={"kind": "chroma", "configuration": configuration, "schema": schema, "metadata": metadata},
        )
        target = DatasetDescription(name=dest, config=target_cfg, rows=source.rows)
        return ImportPlan(
            source=source,
            target=target,
            mode=mode,
            transform=cm.batch_transform(
                source.schema, target.schema, lossy_metadata=allow_lossy, sparse_ok=self.sparse_metadata
            ),
            dropped=shape.dropped,
            tolerances={dense_column(keep.name): "ulp"} if keep and distance == "cosine" else {},
            extra={
                "route": route,
                "configuration": configuration,
                "schema": schema,
                "metadata": metadata or None,
                "sparse_metadata": self.sparse_metadata,
            },
        )

    def _check_merge(self, col: Any, keep: DenseVectorSpec | None, distance: str) -> None:
        with self._errors("read the collection", col.name):
            model = col.get_model()
        check_merge(model, self._store, keep, distance)

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Create (or reuse, in merge mode) the collection, then write every batch after ``plan.transform``.
        Returns the rows written. Raises UnsupportedFeatureError naming the record Chroma cannot hold."""
        name = plan.target.name
        col = self._prepare(plan)
        written = 0
        for records in self._add_arguments(plan, batches):
            with self._errors("write records", name):
                if plan.mode == "merge":  # upsert would merge metadata: replace instead
                    present = col.get(ids=records["ids"], include=[])["ids"]
                    if present:
                        col.delete(ids=list(present))
                col.add(**records)
            written += len(records["ids"])
        return written

    # A partitioned restore into a server (aibackup.partitioned_restore): the collection is made first, the
    # workers add to it at once, the count is checked at the end. Chroma has no transaction: as with
    # import_, a failure leaves what was written, and abandon_load drops the collection this restore made.
    partitioned_modes = ("create", "overwrite")

    @classmethod
    def load_modes(cls, location: Location) -> tuple[str, ...]:
        return cls.partitioned_modes if location.is_server else ()  # an embedded store: one process's

    def begin_load(self, plan: ImportPlan) -> Mapping[str, Any]:
        self._prepare(plan)
        return {"name": plan.target.name}

    def load_partition(
        self, plan: ImportPlan, load: Mapping[str, Any], number: int, batches: Iterable[pa.RecordBatch]
    ) -> tuple[int, None]:
        name = str(load["name"])
        col = self._collection(name)
        written = 0
        for records in self._add_arguments(plan, batches):
            # upsert: a task run again after its worker died writes the records its first run wrote again,
            # the same records into a collection that holds only this bundle's.
            with self._errors("write records", name):
                col.upsert(**records)
            written += len(records["ids"])
        return written, None

    def finish_load(self, plan: ImportPlan, load: Mapping[str, Any], rows: int, receipts: Sequence[Any]) -> int:
        name = str(load["name"])
        with self._errors("count records", name):
            count = int(self._collection(name).count())
        if count != rows:
            raise ConnectorError(
                f"collection {name!r} in {self._store} holds {count} records after {rows} were written by the workers"
            )
        return rows

    def abandon_load(self, load: Mapping[str, Any]) -> None:
        self.drop(str(load["name"]))

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Everything import_ checks record by record, writing nothing: a restore that streams the bundle
        through here first never leaves a half-written (or, in overwrite mode, deleted) collection behind
        when a record turns out to be one Chroma cannot hold. Returns the rows checked."""
        return sum(len(records["ids"]) for records in self._add_arguments(plan, batches))

    def _add_arguments(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> Iterator[dict[str, Any]]:
        from chromadb.base_types import SparseVector

        spec = plan.target.config.dense[0] if plan.target.config.dense else None
        sparse_vector = SparseVector if plan.extra.get("sparse_metadata") else None
        with self._errors("read the batch size limit"):
            max_batch = max(1, int(self._live().get_max_batch_size()))
        for batch in batches:
            batch = plan.transform(batch)
            for start in range(0, batch.num_rows, max_batch):
                yield cm.add_arguments(plan.target.name, batch.slice(start, max_batch), spec, sparse_vector)

    def _prepare(self, plan: ImportPlan) -> Any:
        name, extra = plan.target.name, plan.extra
        existing = self._collection(name, missing_ok=True)
        if existing is not None:
            if plan.mode == "merge":
                return existing
            with self._errors("count records", name):
                count = int(existing.count())
            if plan.mode == "create" and count:
                raise TargetNotEmptyError(
                    f"collection {name!r} in {self._store} already holds {count} "
                    "records; restore with --mode overwrite or --mode merge"
                )
            self._drop(existing)
        from chromadb.api.collection_configuration import load_create_collection_configuration_from_json
        from chromadb.api.types import Schema

        names = cm.embedding_function_names(extra.get("configuration"), extra.get("schema"))
        with self._errors("create the collection", name), cm.standin_embedding_functions(names):
            kwargs: dict[str, Any] = {}
            if extra["route"] == "schema":
                kwargs["schema"] = Schema.deserialize_from_json(extra["schema"])
            elif extra["route"] == "configuration":
                conf = extra["configuration"]
                kwargs["configuration"] = load_create_collection_configuration_from_json(conf)
            col = self._live().create_collection(
                name, metadata=extra.get("metadata") or None, embedding_function=None, **kwargs
            )
            updates = cm.hnsw_updates(extra.get("configuration"), col.configuration_json)
            if extra["route"] == "metadata" and updates:  # hnsw settings changed after creation
                col.modify(configuration={"hnsw": updates})
            return col

    def drop(self, name: str) -> bool:
        """Delete collection `name` (emptied first, see `_drop`); a missing one is already gone."""
        col = self._collection(name, missing_ok=True)
        if col is not None:
            self._drop(col)
        return True

    def _drop(self, col: Any) -> None:
        # Empty it record by record first: deleting a collection leaves its list-valued metadata rows
        # behind in Chroma 1.5.9, and a record written later that reuses their row id inherits them.
        with self._errors("delete the collection", col.name):
            previous: list[str] = []
            while ids := list(col.get(include=[], limit=reading.ID_PAGE)["ids"]):
                if ids == previous:
                    raise ConnectorError(f"Chroma does not delete the records of {col.name!r} in {self._store}")
                col.delete(ids=ids)
                previous = ids
            self._live().delete_collection(col.name)

    # --- search ------------------------------------------------------------------------------------------

    def search(self, name: str, vector: str, queries: np.ndarray, k: int) -> list[list[str]]:
        """The ids of the `k` nearest records per query row, nearest first, from Chroma's own index."""
        col = self._collection(name)
        dense = self._describe(col).config.dense
        if dense and dense[0].name != vector:
            raise UsageError(f"collection {name!r} in {self._store} has no vector {vector!r}")
        matrix = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        out: list[list[str]] = []
        for start in range(0, len(matrix), 1000):
            with self._errors("search", name):
                result = col.query(query_embeddings=matrix[start : start + 1000], n_results=k, include=[])
            out.extend([list(ids) for ids in result["ids"]])
        return out

    # --- helpers -----------------------------------------------------------------------------------------

    def _live(self) -> Any:
        if self._client is None:
            raise UsageError(f"the connection to {self._store} is closed")
        return self._client

    def _collection(self, name: str, *, missing_ok: bool = False) -> Any:
        """The collection (opened without an embedding function), DatasetNotFoundError when missing
        (None when `missing_ok`). A name Chroma cannot hold cannot exist: it is missing too."""
        try:
            if not cm.NAME_RE.match(name):
                raise DatasetNotFoundError(f"collection {name!r} not found in {self._store}")
            with self._errors("open the collection", name):
                return self._live().get_collection(name, embedding_function=None)
        except DatasetNotFoundError:
            if missing_ok:
                return None
            raise

    @contextmanager
    def _errors(self, what: str, collection: str | None = None, *, unavailable: bool = False) -> Iterator[None]:
        """Every call into chromadb runs in here: its exceptions become one aibackup error with one clear
        line (UnavailableError for anything when `unavailable`: a server that does not answer like Chroma),
        and its warnings are silenced: they concern embedding functions, which aibackup never builds or
        calls (``collection.add`` rebuilds every one in the schema, warning for each it cannot build)."""

        def translate(exc: BaseException) -> AibackupError | None:
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                return None  # KeyboardInterrupt, GeneratorExit, ... (a Rust panic is a BaseException too)
            error = self._translate(exc, what, collection)
            if unavailable and not isinstance(error, UnavailableError):
                error = UnavailableError(f"{self._store} does not answer like a Chroma server ({first_line(exc)})")
            return error

        with client_errors(translate), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield

    def _translate(self, exc: BaseException, what: str, collection: str | None) -> AibackupError:
        errors = self._chromadb.errors
        text = first_line(exc)
        subject = f"collection {collection!r} in {self._store}" if collection else self._store
        if isinstance(exc, errors.NotFoundError) and collection:
            return DatasetNotFoundError(f"collection {collection!r} not found in {self._store}")
        if isinstance(exc, errors.ChromaAuthError | errors.AuthorizationError):
            var = self.location.params.get("api_key_env", "CHROMA_API_KEY")
            return UnavailableError(f"{self._store} refused access ({text}); check the token in {var}")
        if is_transport_error(exc):
            return UnavailableError(f"Chroma server {self._store} is not answering ({what}): {text}")
        if isinstance(exc, OSError) or any(sign in text.lower() for sign in _STORAGE_FAILURES):
            return UnavailableError(f"Chroma could not {what} ({subject}): {text} (is its disk full?)")
        return ConnectorError(f"Chroma could not {what} ({subject}): {text}")


#: How an embedded Chroma words a write its disk refused (full, a file size or quota limit): SQLite's own
#: messages, and its Rust compactor's, which says no more than that it failed. The storage's failure (exit 3),
#: not a bad request (exit 2).
_STORAGE_FAILURES = (
    "database or disk is full",
    "disk i/o error",
    "no space left",
    "file too large",
    "disk quota",
    "error in compaction",
)


__all__ = ["ChromaConnector", "raw_get"]
