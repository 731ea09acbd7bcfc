"""The contract every vector connector fulfils.

A connector is bound to one store (an embedded path or a server) and speaks only Arrow: it yields record
batches in the canonical vectors schema (:mod:`manifests.vectors`) and takes them back. It never touches
the repository, files of the bundle or Parquet; the core does that.

Lifecycle: ``open_connector(uri)`` (connectors.registry) -> ``describe`` / ``export`` for a backup;
``plan_import`` -> ``import_`` -> ``describe`` / ``export`` / ``search`` (the proof) for a restore ->
``close``. Every method raises only :class:`aibackup.errors.AibackupError` subclasses for conditions a
user can meet (missing collection, unreachable server, unsupported feature), never a client's own
exception.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from manifests.model import VectorsConfig
from manifests.vectors import arrow_schema

#: How a restore treats an existing collection: create (refuse a non-empty one), overwrite (drop and
#: recreate it), merge (upsert into it; records not in the bundle stay).
MODES = ("create", "overwrite", "merge")


@dataclass(frozen=True)
class Location:
    """A parsed connector URI. ``path`` for embedded stores; ``host``/``port``/``tls`` for servers."""

    scheme: str  # as written: "chroma", "chroma+http", "qdrant+https", ...
    kind: str  # registry kind: "chroma" or "qdrant"
    path: str | None = None
    host: str | None = None
    port: int | None = None
    tls: bool = False
    params: Mapping[str, str] = field(default_factory=dict)  # query parameters (?api_key_env=NAME)

    @property
    def is_server(self) -> bool:
        return self.host is not None

    def display(self) -> str:
        """The URI with no credentials (none are ever part of it: keys come from the environment)."""
        if self.is_server:
            return f"{self.scheme}://{self.host}:{self.port}"
        return f"{self.scheme}:{self.path}"


@dataclass(frozen=True)
class DatasetDescription:
    """A collection as a connector sees it: name, neutral config, and a row count (exact if cheap)."""

    name: str
    config: VectorsConfig
    rows: int
    kind: str = "vectors"

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.config)


Transform = Callable[[pa.RecordBatch], pa.RecordBatch]


def identity(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch


@dataclass(frozen=True)
class ImportPlan:
    """What `import_` will do, decided before anything is written.

    ``transform`` maps a bundle batch (canonical schema of ``source``) to the canonical batch that the
    target will hold after the documented lossy mapping (identity when nothing is lost); the restore checks
    apply it to the bundle before comparing, so a dropped feature is reported in ``dropped`` but is not a
    check failure. ``target`` is the description of the collection as it will exist (its config after
    mapping, its name). ``tolerances`` names vector columns the target changes by design, with the rule
    the checks apply (``"normalize"``: the target stores the unit vector; ``"ulp"``: a few float32 ulps).
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


class VectorConnector(ABC):
    """A vector store: Chroma, Qdrant, ... One instance is bound to one store (embedded or server)."""

    #: Registry kind, also the scheme prefix: "chroma", "qdrant".
    kind: ClassVar[str]

    def __init__(self, location: Location, *, create: bool = False) -> None:
        """Open the store. `create` is True for restore targets (an embedded path may be created);
        for a source a missing path raises DatasetNotFoundError/UsageError naming it. A server that
        does not answer raises UnavailableError. Optional client libraries are imported here and a
        missing one raises ConnectorNotInstalledError naming the extra."""
        self.location = location

    @abstractmethod
    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """The collections of the store (all, sorted by name, or exactly `names` in that order).
        Raises DatasetNotFoundError naming the first missing collection."""

    @abstractmethod
    def export(self, dataset: DatasetDescription) -> Iterator[pa.RecordBatch]:
        """Every record of the collection, as canonical batches of ``dataset.schema`` of bounded size.
        Memory must not grow with the collection. Raises SourceDataError for data it cannot represent
        faithfully (never drops or alters a record silently)."""

    @abstractmethod
    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Decide how `source` (a bundle dataset) becomes collection `dest`, writing nothing.
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

    @abstractmethod
    def search(self, name: str, vector: str, queries: np.ndarray, k: int) -> list[list[str]]:
        """The ids (canonical strings) of the `k` nearest records for each query row, nearest first,
        using the collection's own index and distance for dense vector `vector` ("" = default)."""

    def id_types(self, ids: pa.Array) -> Counter[str]:
        """How many of `ids` (canonical strings, as exported) had each original id type in this backend:
        "string", "uint" or "uuid". The manifest records the counts. Default: all strings."""
        return Counter({"string": len(ids)})

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and file locks. Safe to call twice."""

    def __enter__(self) -> VectorConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def id_checksum(ids: Iterable[object]) -> int:
    """An order-independent checksum of record ids, for a connector's exactly-once export check: the ids
    seen while exporting against those of a final ids-only pass (a count alone misses a delete plus an
    insert during the backup). Both sums are computed in one process, so Python's own hash (SipHash, keyed
    per process) is enough, and it is far cheaper than a cryptographic hash."""
    return sum(map(hash, ids))
