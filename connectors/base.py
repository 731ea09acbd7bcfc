"""The contract every connector fulfils.

A connector is bound to one store (an embedded vector store or server, a folder of JSONL logs, a SQLite
table, a folder of configuration files) and speaks only Arrow: it yields record batches in the canonical
schema of its dataset kind (:mod:`aibackup.manifests.kinds`) and takes them back. It never touches the repository,
the bundle's files or Parquet; the core does that.

Lifecycle: ``open_connector(uri)`` (aibackup.connectors.registry) -> ``describe`` / ``export`` (/ ``export_state``)
for a backup; ``plan_import`` -> ``validate_records`` -> ``import_`` -> ``describe`` / ``export`` /
``extra_checks`` / ``search`` (the proof) for a restore -> ``close``. Every method raises only
:class:`aibackup.errors.AibackupError` subclasses for conditions a user can meet (missing collection or
file, unreachable server, unsupported feature, bad source data), never a library's own exception.

Incremental backups: ``export(dataset, since=state)`` receives the high-water mark the previous bundle of
the same source recorded for the dataset (whatever JSON the connector put in ``ExportState.state``); a
connector that can continue from it yields only the records past it and reports ``incremental=True``, and
the core then chains the previous bundle's parts into the new manifest, so the newest bundle always
restores the whole dataset.
"""

from __future__ import annotations

import itertools
import struct
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from urllib.parse import urlencode

import numpy as np
import pyarrow as pa

from aibackup.errors import AibackupError
from aibackup.manifests.kinds import arrow_schema
from aibackup.manifests.model import VectorsConfig

#: How a restore treats an existing collection: create (refuse a non-empty one), overwrite (drop and
#: recreate it), merge (upsert into it; records not in the bundle stay).
MODES = ("create", "overwrite", "merge")


@dataclass(frozen=True)
class Location:
    """A parsed connector URI. ``path`` for embedded stores; ``host``/``port``/``tls`` for servers."""

    scheme: str  # as written: "chroma", "chroma+http", "qdrant+https", "conversations+sqlite", "pgvector", ...
    kind: str  # registry kind: "chroma", "qdrant", "pgvector", "lancedb", "milvus", "conversations", ...
    path: str | None = None
    host: str | None = None
    port: int | None = None
    tls: bool = False
    params: Mapping[str, str] = field(default_factory=dict)  # query parameters (?api_key_env=NAME)
    #: PostgreSQL forms (``pgvector://USER@HOST:PORT/DB``): the database and the user name (never a
    #: password). A socket connection has no ``host``; its folder is ``params["host"]``.
    database: str | None = None
    user: str | None = None

    @property
    def is_server(self) -> bool:
        return self.host is not None or self.database is not None

    def display(self) -> str:
        """The URI with no credentials (none are ever part of it: keys come from the environment).

        It names the source in manifests, so two backups of the same store give the same text."""
        if self.database is not None:
            user = f"{self.user}@" if self.user else ""
            where = (self.host or "") + (f":{self.port}" if self.port is not None else "")
            base = f"{self.scheme}://{user}{where}/{self.database}"
        elif self.host is not None:
            base = f"{self.scheme}://{self.host}:{self.port}"
        else:
            base = f"{self.scheme}:{self.path}"
        # Parameters that pick the data (tenant, database, table, document column) name the store; how to
        # reach it (api_key_env, sslmode) does not: changing it must not start a new chain of bundles.
        naming = sorted((k, v) for k, v in self.params.items() if k not in ("api_key_env", "sslmode"))
        return f"{base}?{urlencode(naming)}" if naming else base


@dataclass(frozen=True)
class DatasetDescription:
    """A dataset as a connector sees it: name, configuration, and a row count (exact if cheap).

    ``config`` is a :class:`VectorsConfig` for kind "vectors"; for the record kinds it is the JSON object
    the manifest keeps (per-file summaries, the source's table definition, a job config, ...).
    """

    name: str
    config: Any  # VectorsConfig for "vectors", a JSON-able Mapping[str, Any] otherwise
    rows: int
    kind: str = "vectors"

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.kind, self.config)

    def config_json(self) -> dict[str, Any]:
        return self.config.to_json() if isinstance(self.config, VectorsConfig) else dict(self.config)


@dataclass(frozen=True)
class ExportState:
    """What an export leaves for the next backup and the report, read with ``export_state`` after the
    export's batches are exhausted.

    ``state`` is the high-water mark (JSON) the manifest records for the dataset; ``incremental`` says the
    batches held only records past the ``since`` state given to ``export`` (the core then chains the
    previous bundle's parts); ``config`` replaces the description's config in the manifest when the
    export learned more while streaming (per-file summaries); ``notes`` are reported to the user
    ("2 malformed lines kept raw: logs/a.jsonl:17, ...").
    """

    state: Mapping[str, Any]
    incremental: bool = False
    config: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()


class SecretBox(Protocol):
    """Encryption under the repository key, handed to connectors that store secrets (the core derives the
    key; a connector never sees it). ``seal``/``open`` are AES-256-GCM with `aad` bound in; ``open``
    raises IntegrityError for a wrong key or damaged data. ``keyed_hash`` is HMAC-SHA256 (hex) under a key
    derived from the same repository key: a digest of secret-bearing bytes that cannot be brute-forced
    without the key."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, sealed: bytes, aad: bytes) -> bytes: ...

    def keyed_hash(self, data: bytes) -> str: ...


class ChunkSink(Protocol):
    """The repository's chunk store as a model connector sees it (the core provides it; a connector never
    sees packs, keys or storage). ``seed`` seeds the chunker's gear table (0, or keyed in an encrypted
    repository); ``chunk_id`` names a chunk (32 bytes: sha256, or keyed HMAC); ``put`` keeps a chunk the
    repository lacks and says whether it was new (a restore's proof, reading a target back, stores
    nothing); ``get`` gives a chunk's bytes back, checked against its id unless `check` is False (the
    caller then proves the bytes otherwise: a file's sha256); IntegrityError naming it when it is missing
    or damaged; ``size`` is a stored chunk's byte count, None for a chunk the store does not hold."""

    @property
    def seed(self) -> int: ...

    def chunk_id(self, data: bytes | memoryview) -> bytes: ...

    def put(self, chunk: bytes, data: bytes | memoryview) -> bool: ...

    def get(self, chunk: bytes, *, check: bool = True) -> bytes | memoryview: ...

    def size(self, chunk: bytes) -> int | None: ...


Transform = Callable[[pa.RecordBatch], pa.RecordBatch]


def identity(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch


def chain(steps: Sequence[Transform]) -> Transform:
    """One transform applying `steps` in order (identity when empty): a plan's mappings composed."""

    def apply(batch: pa.RecordBatch) -> pa.RecordBatch:
        for step in steps:
            batch = step(batch)
        return batch

    return apply


@dataclass(frozen=True)
class ImportPlan:
    """What `import_` will do, decided before anything is written.

    ``transform`` maps a bundle batch (canonical schema of ``source``) to the canonical batch that the
    target will hold after the documented lossy mapping (identity when nothing is lost). Every pass over
    the bundle (validation, import, checks) calls it on the bundle's batches in bundle order, from the
    first record, so a transform may number records across batches; the restore checks
    apply it to the bundle before comparing, so a dropped feature is reported in ``dropped`` but is not a
    check failure. ``target`` is the description of the collection as it will exist (its config after
    mapping, its name). ``tolerances`` names columns the target changes by design, with the rule the
    checks apply: ``"normalize"`` (vectors; the target may store the unit vector, so both sides are
    compared normalised), ``"ulp"`` (vectors; a few float32 ulps), ``"covered"`` (any column whose value
    legitimately differs on each write, say secrets sealed with a fresh nonce, when another column of
    the record, a keyed hash of the plaintext, proves it).
    """

    source: DatasetDescription
    target: DatasetDescription
    mode: str
    transform: Transform = identity
    dropped: tuple[str, ...] = ()
    tolerances: Mapping[str, str] = field(default_factory=dict)
    #: Settings that hold no data and that the target ignores or cannot take (say HNSW ``ef_search``
    #: into Qdrant local mode): reported to the user, but not "dropped" data.
    notes: tuple[str, ...] = ()
    #: Anything else the connector wants to carry from planning to import (client objects excluded).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: True when an ``import_`` that fails removes what it wrote (a create into a new place), so the
    #: restore can say that nothing of the collection was left.
    undone_on_failure: bool = False
    #: The part of ``transform`` it applies first that rewrites records into an application layout
    #: (aibackup.connectors.layouts.apply): where the framework reads them on the target, not a loss.
    layout_transform: Transform = identity


class Connector(ABC):
    """A store of one dataset kind. One instance is bound to one store (a path, a server, a table)."""

    #: Registry kind, also the scheme prefix: "chroma", "qdrant", "conversations", ...
    kind: ClassVar[str]
    #: The kind of dataset it holds: "vectors", "conversations", "finetune" or "config".
    dataset_kind: ClassVar[str]

    def __init__(self, location: Location, *, create: bool = False, options: Mapping[str, Any] | None = None) -> None:
        """Open the store. `create` is True for restore targets (an embedded path may be created);
        for a source a missing path raises DatasetNotFoundError/UsageError naming it. A server that
        does not answer raises UnavailableError. Optional client libraries are imported here and a
        missing one raises ConnectorNotInstalledError naming the extra. `options` carries what the
        command line gives this kind of store (``on_bad_line``, ``job_config``, ``secrets`` (a
        SecretBox), ``redact_secrets``), and ``proof`` (True: a partitioned restore's proof opens its
        target as a source to read it back, and compares every id itself: a source's own id checks may be
        left out); a connector ignores options that are not its own."""
        self.location = location
        self.options: Mapping[str, Any] = options or {}

    @abstractmethod
    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """The collections of the store (all, sorted by name, or exactly `names` in that order).
        Raises DatasetNotFoundError naming the first missing collection."""

    @abstractmethod
    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every record of the dataset, as canonical batches of ``dataset.schema`` of bounded size (only
        the records past `since` when the connector supports incremental exports and `since` still
        holds). Memory must not grow with the dataset. Raises SourceDataError for data it cannot represent
        faithfully (never drops or alters a record silently)."""

    def export_state(self, name: str) -> ExportState | None:
        """After an export of dataset `name` is exhausted: its high-water mark and notes. Default: none
        (every backup is a full one)."""
        return None

    @abstractmethod
    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Decide how `source` (a bundle dataset of this connector's ``dataset_kind``: the core refuses any
        other kind before asking) becomes collection `dest`, writing nothing.
        Raises UnsupportedFeatureError naming the collection and the feature when the target cannot hold
        something and not `allow_lossy`; TargetNotEmptyError when `dest` holds records and mode is
        "create"."""

    @abstractmethod
    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Create (or reuse, per ``plan.mode``) the collection and write the batches (canonical schema of
        ``plan.source``; the connector applies ``plan.transform``). Returns the rows written."""

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Run every per-record check `import_` would run, writing nothing; returns the rows checked.

        The restore streams the bundle through here before `import_`, so a record the target cannot hold
        is refused before a collection is created, replaced or half-written. Raises what `import_` would
        (UnsupportedFeatureError naming the collection and the record). Default: apply the transform.
        """
        return sum(plan.transform(batch).num_rows for batch in batches)

    @property
    def atomic_import(self) -> bool:
        """True when ``import_`` writes in one transaction of the store (PostgreSQL): a failure leaves the
        collection as it was, so the restore can say that nothing of it was written. Default: False."""
        return False

    def drop(self, name: str) -> bool:
        """Remove dataset `name`, which a restore test wrote into a configured scratch target, so the
        drill leaves no copy of production behind. Returns False when this kind of store cannot (the
        drill then reports that the data stays). Default: False."""
        return False

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """Checks of a finished import beyond the record comparison, as (name, ok, detail): say the
        sha256 of every file written against the manifest. Default: none."""
        return []

    def partition(self, dataset: DatasetDescription, wanted: int) -> Partitioning | None:
        """How `dataset` splits into about `wanted` partitions that together read exactly what ``export``
        reads (one consistent state of the source, every record once), for workers that each open the
        source with ``Partitioning.options`` and call :meth:`export_partition`; None when this source
        cannot split (the backup then reads it in one process, and says so). Default: None."""
        return None

    def export_partition(self, dataset: DatasetDescription, partition: Mapping[str, Any]) -> Iterator[pa.RecordBatch]:
        """The records of one partition of :meth:`partition` (in a connector opened with its options)."""
        raise NotImplementedError(f"{self.kind} cannot split a dataset")

    #: The restore modes in which :meth:`begin_load` and the methods after it work: a partitioned restore's
    #: workers can write one collection at once (``restore --workers``); other modes, and targets without
    #: them, restore in one process.
    partitioned_modes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def load_modes(cls, location: Location) -> tuple[str, ...]:
        """:attr:`partitioned_modes` for a target at `location` (a store one process owns: none)."""
        return cls.partitioned_modes

    def begin_load(self, plan: ImportPlan) -> Mapping[str, Any]:
        """A partitioned restore's driver, after planning: make the place workers write `plan`'s records
        into at once, out of the target's readers' sight (pgvector: an unlogged load table), and return
        its JSON-able description, which each worker gives :meth:`load_partition`. Nothing of the target
        itself changes until :meth:`finish_load`; :meth:`abandon_load` removes what was made."""
        raise NotImplementedError(f"{self.kind} cannot take a partitioned restore")

    def load_partition(
        self, plan: ImportPlan, load: Mapping[str, Any], number: int, batches: Iterable[pa.RecordBatch]
    ) -> tuple[int, Any]:
        """A worker (this connector opened on the target as a restore opens it): write partition `number`'s
        batches (canonical; the plan's transform and per-record checks applied as ``import_`` does) into
        the load area of :meth:`begin_load`, committed when they are all in; run again for the same
        `number` (a retried task), it replaces what the earlier run wrote. Returns the rows written and a
        picklable receipt for :meth:`finish_load` (LanceDB: the fragments written; None where the load
        area itself holds everything)."""
        raise NotImplementedError(f"{self.kind} cannot take a partitioned restore")

    def finish_load(self, plan: ImportPlan, load: Mapping[str, Any], rows: int, receipts: Sequence[Any]) -> int:
        """The driver, once every worker's partition is in and the digests are proven: do what ``import_``
        does after its writes (create or replace the collection per ``plan.mode``, indexes once, the row
        count against `rows`) from the load area and the partitions' `receipts` (in partition order), as
        atomically as ``import_``, and remove the load area. Returns the rows written."""
        raise NotImplementedError(f"{self.kind} cannot take a partitioned restore")

    def abandon_load(self, load: Mapping[str, Any]) -> None:  # noqa: B027 - nothing to remove by default
        """Remove a load area and what workers wrote into it (a failed or cancelled partitioned restore),
        even while a worker still writes; nothing that existed before :meth:`begin_load` is touched. Never
        called once :meth:`finish_load` succeeded."""

    def id_types(self, ids: pa.Array) -> Counter[str]:
        """How many of `ids` (canonical strings, as exported) had each original id type in this backend:
        "string", "uint" or "uuid". The manifest records the counts. Default: all strings."""
        return Counter({"string": len(ids)})

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and file locks. Safe to call twice."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Partitioning:
    """A dataset split for workers (``Connector.partition``): `partitions` are JSON-able descriptions each
    worker's :meth:`Connector.export_partition` reads; `options` are connector options every worker opens
    the source with (PostgreSQL: the exported snapshot all of them read); `how` says it in words. Never a
    credential: workers take those from their own environment."""

    partitions: tuple[Mapping[str, Any], ...]
    options: Mapping[str, Any]
    how: str


def balanced_runs(weights: Sequence[int], count: int) -> list[range]:
    """The positions of `weights` in at most `count` contiguous runs of about equal weight, none empty: a
    partition's parts, fragments, ... (a run ends once it holds its share, while items remain for the
    runs left)."""
    count = max(1, min(count, len(weights)))
    total = sum(weights) or 1
    starts = [0]
    done = 0
    for i, weight in enumerate(weights):
        if i > starts[-1] and done >= total * len(starts) / count and len(starts) < count:
            starts.append(i)
        done += weight
    bounds = [*starts, len(weights)]
    return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]


class ChunkedConnector(Connector):
    """A store of files whose bytes travel as content-defined chunks (model artifacts): its records name
    chunks, and the core hands it the repository's chunk store with :meth:`use_chunks` before ``export``
    (a backup, or a restore's proof) or ``import_``."""

    chunks: ChunkSink | None = None

    def use_chunks(self, chunks: ChunkSink) -> None:
        self.chunks = chunks


class VectorConnector(Connector):
    """A vector store: Chroma, Qdrant, ... (embedded or server)."""

    dataset_kind = "vectors"

    @abstractmethod
    def search(self, name: str, vector: str, queries: np.ndarray, k: int) -> list[list[str]]:
        """The ids (canonical strings) of the `k` nearest records for each query row, nearest first,
        using the collection's own index and distance for dense vector `vector` ("" = default)."""

    def search_index(self, dataset: DatasetDescription, vector: str) -> dict[str, Any]:
        """How :meth:`search` finds the nearest records of dense vector `vector` of `dataset` (as this
        connector described it), for the search baseline and the restore's report: ``store`` (the kind),
        ``exact`` (True when the store compares a query with every record, so its answers are an exact
        search's: the backup then computes them itself instead of asking), and the index parameters in
        the neutral names of ``VectorsConfig.hnsw``. Default: an approximate index with those settings."""
        config = dataset.config
        hnsw = dict(config.hnsw or {}) if isinstance(config, VectorsConfig) else {}
        return {"store": self.kind, "exact": False, **{k: v for k, v in sorted(hnsw.items()) if v is not None}}


@contextmanager
def client_errors(translate: Callable[[BaseException], AibackupError | None]) -> Iterator[None]:
    """Run calls into a client library: an AibackupError passes as it is; any other exception becomes the
    one-line error `translate` makes of it, or passes unchanged where it gives None (KeyboardInterrupt, a
    bug of ours). The connectors' wrappers around their clients are this and their own translation."""
    try:
        yield
    except AibackupError:
        raise
    except BaseException as exc:
        error = translate(exc)
        if error is None:
            raise
        raise error from exc


def id_checksum(ids: Iterable[object]) -> int:
    """An order-independent checksum of record ids, for a connector's exactly-once export check: the ids
    seen while exporting against those of a final ids-only pass (a count alone misses a delete plus an
    insert during the backup). Both sums are computed in one process, so Python's own hash (SipHash, keyed
    per process) is enough, and it is far cheaper than a cryptographic hash."""
    return sum(map(hash, ids))


def dense_array(cells: list[Any], size: int) -> pa.Array:
    """A fixed-size float32 list column from the clients' vectors (lists of Python floats; None: null).
    Raises ValueError for a vector of another size."""
    mask = np.fromiter((c is None for c in cells), dtype=bool, count=len(cells))
    zero = [0.0] * size
    try:
        # struct packs a list of Python floats into float32 bytes in 4.7 us per 384-float vector against
        # numpy's 7.4 us (numpy inspects every element for its type and shape first): this conversion
        # is most of the Python work of a Qdrant export, and of a Chroma one read through `raw_get`.
        pack = struct.Struct(f"<{size}f").pack
        matrix = np.frombuffer(b"".join([pack(*(zero if c is None else c)) for c in cells]), dtype="<f4")
    except (struct.error, TypeError, OverflowError):
        # A vector of another size, or a value struct refuses: numpy's conversion, errors and all.
        matrix = np.asarray([zero if c is None else c for c in cells], dtype=np.float32)
        if matrix.shape != (len(cells), size):
            raise ValueError(f"got shape {matrix.shape[1:]}") from None
    values = pa.array(matrix.reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(values, size, mask=pa.array(mask) if mask.any() else None)
