"""Qdrant connector: local mode (``qdrant:PATH``) and servers (``qdrant+http(s)://HOST:PORT``), kind "qdrant".

The same code drives both through qdrant-client (an optional extra: ``pip install 'aibackup[qdrant]'``);
servers are spoken to over REST (``prefer_grpc`` off), with the API key from ``QDRANT_API_KEY``.

Canonical mapping (schema: :mod:`aibackup.manifests.vectors`)
----------------------------------------------------
- **ids**: an unsigned int point id is exported in decimal, a UUID in lowercase hyphenated form. On import a
  canonical id that is a decimal integer without leading zeros below 2**64 becomes that int; a string equal
  to ``str(uuid.UUID(s))`` becomes that UUID; any other string (Chroma's ids, ``"00123"``, an upper-case
  UUID) becomes ``uuid5(AIBACKUP_NAMESPACE, s)`` with ``s`` kept in the payload key ``_aibackup_id``.
  ``AIBACKUP_NAMESPACE`` = ``516a9226-9fbe-5e46-bb30-59b79d8e957d``
  (``uuid5(NAMESPACE_URL, "urn:aibackup:qdrant-point-id")``), fixed forever.
- **reserved payload keys**: ``_aibackup_id``, ``_aibackup_document``, ``_aibackup_uri`` carry what Qdrant has
  no place for (string ids, documents, uris). Export moves them back into ``id``, ``document`` and ``uri`` and
  removes them from ``metadata``, so Chroma -> Qdrant -> export gives back the very same records. Export
  refuses (SourceDataError) an ``_aibackup_id`` that does not map to its point's id; import refuses source
  metadata that uses a reserved key (UnsupportedFeatureError, no lossy mapping).
- **vectors**: the unnamed default vector is the name ""; named vectors by name, null where a point lacks
  one (import omits it). Multivectors (max_sim) are lists of vectors; sparse vectors are index/value pairs.
- **payload** <-> ``metadata`` canonical JSON: ints (any size in local mode), floats, bools, nesting, unicode.
- **distances**: Cosine/Euclid/Dot/Manhattan <-> cosine/l2/ip/manhattan.
- **config**: the neutral fields plus ``native`` (the whole CollectionConfig and payload indexes as JSON); a
  Qdrant -> Qdrant restore recreates the collection from ``native`` (indexes included), any other restore from
  the neutral fields (size, distance, multivector, datatype, sparse modifier idf, hnsw m/ef_construction,
  payload indexes, collection ``metadata``).

Lossy rules (refused with UnsupportedFeatureError unless --allow-lossy; then listed in ``plan.dropped`` and
applied by ``plan.transform``, which the restore checks apply to the bundle too):

- a **server** stores payloads as JSON: metadata ints outside int64 become floats (null beyond float range),
  NaN/Infinity become null. Local mode keeps Python values exactly. Checked record by record during import,
  so the refusal comes before the offending batch is written (the plan cannot see the data).
- custom sharding (shard keys are not in a bundle) -> automatic sharding; a sparse modifier other than idf.
- never mapped: NaN/Infinity in a vector (Qdrant rejects them), an empty sparse vector name, reserved keys.

Settings without data that a target ignores (HNSW ef_search, which Qdrant sets per query; server-only settings
and payload indexes restored into local mode) are not refused: ``plan.notes`` lists them.

Tolerances: Qdrant normalises the vectors of Cosine collections when it stores them: ``v / ||v||`` in
float32; a vector with norm <= 1.19e-7 (float32 epsilon) is kept as it is; multivectors row by row. A server
returns the normalised vector for ever. Local mode (measured, qdrant-client 1.20) returns it only in the
session that wrote the point: it persists the vector *as given* and, once reopened, returns the original
(so a local store written by a restore backs up the bundle's exact vectors). ``plan.tolerances`` maps every
cosine dense column (multivectors too) to ``"normalize"``; even Qdrant -> Qdrant may move a normalised
vector by an ulp. Sparse vectors are stored sorted by index: ``plan.transform`` sorts the bundle's the same
way (no loss). Export itself never changes a vector.

Limits: local mode keeps the whole store in memory and persists ~900-1300 points/s (one SQLite commit per
point, whatever the batch size); it holds one process at a time (a lock file) and keeps neither payload
indexes nor HNSW/optimizer settings. Aliases and snapshots are not backed up.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from aibackup.connectors.base import (
    MODES,
    DatasetDescription,
    ImportPlan,
    Location,
    VectorConnector,
    chain,
    client_errors,
    id_checksum,
    identity,
)
from aibackup.connectors.qdrant.points import (
    AIBACKUP_NAMESPACE,
    ID_KEY,
    RESERVED_KEYS,
    batch_to_points,
    canonical_point_id,
    id_types,
    lossy_numbers,
    page_rows,
    points_to_batch,
)
from aibackup.connectors.sparse import sorted_sparse_vectors
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
from aibackup.manifests.vectors import dense_column

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

    from aibackup.connectors.qdrant.config import CollectionPlan
    from aibackup.manifests.model import VectorsConfig

__all__ = ["AIBACKUP_NAMESPACE", "RESERVED_KEYS", "QdrantConnector"]

#: Rows per scroll page: 1000 is within ~10% of the fastest page size measured (4096) in local mode and
#: keeps pages small; `page_rows` lowers it for wide vectors so a page stays near 1M floats.
#: Scroll page size: local mode scans the collection for every page, so fewer, larger pages read faster
#: (measured 20k x 384: 0.88 s at 1000, 0.71 s at 4000); the float budget keeps a page of Python floats
#: under ~64 MB whatever the dimension.
DEFAULT_BATCH_ROWS = 4000
READ_FLOAT_BUDGET = 2_000_000
#: Points per upsert: local mode persists at the same rate whatever the batch; for a server ~500k floats
#: (~10 MB of JSON) stays well below its 32 MB request limit.
DEFAULT_WRITE_ROWS = 256
WRITE_FLOAT_BUDGET = 500_000
SERVER_TIMEOUT_S = 60
SEARCH_CHUNK = 64


#: Qdrant's collection-name rule: the name is a folder name on the server.
#: Points per page of the ids-only pass that proves an export saw every point once.
ID_PAGE = 10_000
MAX_NAME = 255
BAD_NAME_CHARS = ("/", "\\", "\0")


class QdrantConnector(VectorConnector):
    """A Qdrant store: local mode at a path or a server. See the module docstring for the mapping."""

    kind = "qdrant"

    def __init__(
        self,
        location: Location,
        *,
        create: bool = False,
        options: Mapping[str, Any] | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        write_rows: int = DEFAULT_WRITE_ROWS,
    ) -> None:
        """Open the store. A source (`create` False) local path that is missing or holds no Qdrant store
        raises DatasetNotFoundError (QdrantClient would create one); a server that does not answer or a
        local store locked by another process raises UnavailableError."""
        super().__init__(location, create=create, options=options)
        try:
            from qdrant_client import QdrantClient
        except ImportError:
            raise ConnectorNotInstalledError(
                "the Qdrant connector needs qdrant-client: pip install 'aibackup[qdrant]'"
            ) from None
        self.batch_rows = max(1, batch_rows)
        self.write_rows = max(1, write_rows)
        self._client: QdrantClient | None = None
        self._where = location.display()
        if location.is_server:
            from aibackup.connectors.registry import api_key

            scheme = "https" if location.tls else "http"
            self._client = QdrantClient(
                url=f"{scheme}://{location.host}:{location.port}",
                api_key=api_key(location),
                prefer_grpc=False,
                check_compatibility=False,
                timeout=SERVER_TIMEOUT_S,
            )
            with self._errors("listing collections"):
                self._client.get_collections()
            return
        path = str(location.path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"{self._where} is a file, not a Qdrant local store folder")
        if not create and not os.path.isfile(os.path.join(path, "meta.json")):
            if not os.path.exists(path):
                raise DatasetNotFoundError(f"Qdrant local store {path} does not exist")
            raise DatasetNotFoundError(f"{path} holds no Qdrant local store (no meta.json)")
        try:
            # The core may read in one thread and write in another, one at a time: SQLite's same-thread
            # guard would refuse that although nothing runs concurrently.
            self._client = QdrantClient(path=path, force_disable_check_same_thread=True)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise UnavailableError(
                    f"Qdrant local store {path} is in use by another Qdrant client (local mode allows "
                    f"one at a time): stop that process first, or serve the store with a Qdrant server"
                ) from None
            raise ConnectorError(f"cannot open Qdrant local store {path}: {exc}") from None
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise ConnectorError(f"cannot open Qdrant local store {path}: {exc}") from None

    # --- reading -----------------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """All collections sorted by name, or exactly `names`; DatasetNotFoundError for a missing one.
        ``rows`` is an exact count."""
        client = self._require()
        with self._errors("listing collections"):
            existing = {c.name for c in client.get_collections().collections}
        wanted = sorted(existing) if names is None else list(names)
        for name in wanted:
            if name not in existing:
                raise DatasetNotFoundError(f"collection {name!r} not found in {self._where}")
        return [self._describe(name) for name in wanted]

    def _describe(self, name: str) -> DatasetDescription:
        from aibackup.connectors.qdrant import config as qdrant_config

        client = self._require()
        with self._errors(f"reading collection {name!r}", name):
            info = client.get_collection(name)
            rows = client.count(name, exact=True).count
        config = qdrant_config.describe_config(info, local=not self.location.is_server)
        return DatasetDescription(name=name, config=config, rows=rows)

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every point as canonical batches (scroll pages of at most `batch_rows` points, fewer for wide
        vectors). Raises SourceDataError if the collection ends up holding another number of points than
        were exported (written to during the backup) or holds a point that does not fit `dataset`."""
        client = self._require()
        name, schema = dataset.name, dataset.schema
        limit = page_rows(dataset.config, self.batch_rows, READ_FLOAT_BUDGET)
        exported = checksum = 0
        for points in self._scroll(name, limit, full=True):
            batch = points_to_batch(points, dataset.config, schema, name)
            exported += batch.num_rows
            checksum += id_checksum(p.id for p in points)
            yield batch
        with self._errors(f"counting collection {name!r}", name):
            final = client.count(name, exact=True).count
        # Local mode holds the store's lock file for as long as this client is open, so no other process
        # can write meanwhile: the ids-only pass (a second scan of the collection) proves nothing there.
        ids_now = (
            sum(id_checksum(p.id for p in page) for page in self._scroll(name, ID_PAGE, full=False))
            if self.location.is_server
            else checksum
        )
        if final != exported or ids_now != checksum:
            raise SourceDataError(
                f"Qdrant collection {name!r} in {self._where} changed during the backup (holds {final} points, "
                f"{exported} were exported, or not each point once); back up again while it is not written to"
            )

    def _scroll(self, name: str, limit: int, *, full: bool) -> Iterator[list[Any]]:
        """Non-empty scroll pages of a collection in id order: whole points, or (`full` False) ids only."""
        client = self._require()
        offset: Any = None
        while True:
            with self._errors(f"reading collection {name!r}", name):
                points, offset = client.scroll(name, limit=limit, offset=offset, with_payload=full, with_vectors=full)
            if points:
                yield points
            if offset is None or not points:
                return

    def id_types(self, ids: pa.Array) -> Counter[str]:
        """uint / uuid for native point ids, string for ids that came back from ``_aibackup_id``."""
        return id_types(ids)

    def search(self, name: str, vector: str, queries: np.ndarray, k: int) -> list[list[str]]:
        """Top-`k` canonical ids (mapped back through ``_aibackup_id``) per query row, by Qdrant's own
        index and distance. For a multivector each row is searched as a one-vector multivector."""
        client = self._require()
        from qdrant_client.http import models

        spec = next((d for d in self._describe(name).config.dense if d.name == vector), None)
        if spec is None:
            raise DatasetNotFoundError(f"collection {name!r} in {self._where} has no dense vector {vector!r}")
        rows = np.asarray(queries, dtype=np.float32)
        requests = [
            models.QueryRequest(
                query=[row.tolist()] if spec.multivector and row.ndim == 1 else row.tolist(),
                using=vector or None,
                limit=k,
                with_payload=[ID_KEY],
            )
            for row in rows
        ]
        results: list[list[str]] = []
        for start in range(0, len(requests), SEARCH_CHUNK):
            with self._errors(f"searching collection {name!r}", name):
                responses = client.query_batch_points(name, requests=requests[start : start + SEARCH_CHUNK])
            for response in responses:
                results.append([_search_id(p) for p in response.points])
        return results

    def search_index(self, dataset: DatasetDescription, vector: str) -> dict[str, Any]:
        """Local mode scans every point (it keeps no index): exact. A server searches its HNSW segments,
        and scans the segments it has not indexed yet: exact while it has indexed no vector at all (a
        small collection below the full-scan threshold stays that way)."""
        if not self.location.is_server:
            return {"store": "qdrant local mode", "exact": True}
        index = super().search_index(dataset, vector)
        with self._errors(f"reading collection {dataset.name!r}", dataset.name):
            indexed = self._require().get_collection(dataset.name).indexed_vectors_count
        if indexed == 0:
            index["exact"] = True
        return index

    # --- writing -----------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Decide how `source` becomes collection `dest` (see the module docstring for the rules). Raises
        TargetNotEmptyError (mode "create" and `dest` holds points), UnsupportedFeatureError (what Qdrant
        cannot hold without `allow_lossy`; a merge into a collection whose vectors differ)."""
        from aibackup.connectors.qdrant import config as qdrant_config

        if mode not in MODES:
            raise UsageError(f"bad mode {mode!r}: expected one of {', '.join(MODES)}")
        if not dest or len(dest) > MAX_NAME or any(c in dest for c in BAD_NAME_CHARS):
            raise UnsupportedFeatureError(
                f"Qdrant cannot name a collection {dest!r}: it needs 1-{MAX_NAME} characters without "
                "'/', '\\' or NUL; restore it under another name with --collection SRC=DEST"
            )
        server = self.location.is_server
        existing = self._existing(dest)
        if existing is not None and mode == "create" and existing.rows:
            raise self._not_empty(dest, existing.rows)
        made = qdrant_config.plan_collection(source.config, dest, local_target=not server, allow_lossy=allow_lossy)
        target = made.target
        notes = made.notes
        if mode == "merge" and existing is not None:
            self._check_merge(dest, existing, made.target)
            target, notes = existing.config, ()
        steps = [sorted_sparse_vectors] if source.config.sparse else []
        dropped = list(made.dropped)
        if server and allow_lossy:
            steps.append(lossy_numbers)
            dropped.append(
                "metadata numbers a Qdrant server cannot store, if any: ints outside int64 "
                "become floats, NaN/Infinity become null"
            )
        return ImportPlan(
            source=source,
            target=DatasetDescription(name=dest, config=target, rows=source.rows),
            mode=mode,
            transform=chain(steps) if steps else identity,
            dropped=tuple(dropped),
            tolerances={dense_column(d.name): "normalize" for d in target.dense if d.distance == "cosine"},
            notes=tuple(notes),
            extra={"allow_lossy": allow_lossy},
        )

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Create the collection per ``plan.mode`` (create: only if absent or empty; overwrite: drop and
        recreate; merge: reuse if its vectors match) and upsert every record (after ``plan.transform``),
        waiting for each write. Returns the points written."""
        from aibackup.connectors.qdrant import config as qdrant_config

        client = self._require()
        name, server = plan.target.name, self.location.is_server
        existing = self._existing(name)
        if existing is not None and plan.mode == "merge":
            self._check_merge(name, existing, plan.target.config)
        elif existing is not None:
            if plan.mode == "create" and existing.rows:
                raise self._not_empty(name, existing.rows)
            with self._errors(f"deleting collection {name!r}", name):
                client.delete_collection(name)
        if existing is None or plan.mode != "merge":
            lossy = bool(plan.extra.get("allow_lossy"))
            made = qdrant_config.plan_collection(plan.source.config, name, local_target=not server, allow_lossy=lossy)
            self._create(name, made)
        config = plan.target.config
        rows = page_rows(config, self.write_rows, WRITE_FLOAT_BUDGET)
        needed = set(plan.target.schema.names)
        written = 0
        for batch in batches:
            batch = plan.transform(batch)
            missing = needed - set(batch.schema.names)
            if missing:
                raise SourceDataError(f"collection {name!r}: the bundle's records lack column(s) {sorted(missing)}")
            for start in range(0, batch.num_rows, rows):
                points = batch_to_points(batch.slice(start, rows), config, name, server=server)
                with self._errors(f"writing to collection {name!r}", name):
                    client.upsert(name, points=points, wait=True)
                written += len(points)
        return written

    def drop(self, name: str) -> bool:
        """Delete collection `name` (a missing one is already gone)."""
        client = self._require()
        if self._existing(name) is not None:
            with self._errors(f"deleting collection {name!r}", name):
                client.delete_collection(name)
        return True

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Every per-record check of `import_` (reserved keys, non-finite vectors, numbers a server cannot
        store), writing nothing: the points are built and thrown away. Returns the rows checked."""
        server = self.location.is_server
        checked = 0
        for batch in batches:
            batch = plan.transform(batch)
            batch_to_points(batch, plan.target.config, plan.target.name, server=server)
            checked += batch.num_rows
        return checked

    def _create(self, name: str, made: CollectionPlan) -> None:
        from qdrant_client.http import models

        client = self._require()
        with self._errors(f"creating collection {name!r}", name):
            client.create_collection(name, **made.create_kwargs)
            if made.params_update:
                diff = models.CollectionParamsDiff(**made.params_update)
                client.update_collection(name, collection_params=diff)
            with warnings.catch_warnings():
                # Local mode warns that payload indexes have no effect there; the plan's notes say so.
                warnings.simplefilter("ignore", UserWarning)
                for field, schema in made.payload_indexes:
                    client.create_payload_index(name, field, field_schema=schema, wait=True)

    def _existing(self, name: str) -> DatasetDescription | None:
        client = self._require()
        with self._errors(f"looking up collection {name!r}", name):
            exists = client.collection_exists(name)
        return self._describe(name) if exists else None

    def _check_merge(self, name: str, existing: DatasetDescription, planned: VectorsConfig) -> None:
        from aibackup.connectors.qdrant.config import vector_shape

        if vector_shape(existing.config) != vector_shape(planned):

            def show(c: VectorsConfig) -> str:
                dense = ", ".join(
                    f"{d.name or '(default)'}:{d.size}/{d.distance}{'/multi' if d.multivector else ''}"
                    for d in sorted(c.dense, key=lambda d: d.name)
                )
                return dense + "".join(f", sparse {s.name}" for s in c.sparse)

            raise UnsupportedFeatureError(
                f"cannot merge into Qdrant collection {name!r} in {self._where}: its vectors "
                f"({show(existing.config)}) differ from the bundle's ({show(planned)}); use --mode overwrite "
                f"or restore under another name"
            )

    def _not_empty(self, name: str, rows: int) -> TargetNotEmptyError:
        return TargetNotEmptyError(
            f"Qdrant collection {name!r} in {self._where} already holds {rows} points; restore with "
            f"--mode overwrite (replace it) or --mode merge (upsert into it), or under another name"
        )

    # --- plumbing ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client and release local mode's lock file. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _require(self) -> QdrantClient:
        if self._client is None:
            raise ConnectorError(f"the connection to {self._where} is closed")
        return self._client

    @contextmanager
    def _errors(self, action: str, collection: str | None = None) -> Iterator[None]:
        """Turn what qdrant-client raises into one-line aibackup errors (never a client's traceback)."""
        with client_errors(lambda exc: self._translate(exc, action, collection)):
            yield

    def _translate(self, exc: BaseException, action: str, collection: str | None) -> AibackupError | None:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(exc, UnexpectedResponse):
            return self._http_error(exc, action, collection)
        if isinstance(exc, ResponseHandlingException):
            return UnavailableError(f"Qdrant at {self._where} does not answer ({action}): {exc.source or exc}")
        if isinstance(exc, OSError | sqlite3.Error):
            return UnavailableError(f"Qdrant store {self._where}: {action} failed: {exc}")
        if isinstance(exc, ValueError | RuntimeError):  # local mode's errors and model validation
            text = first_line(exc)
            if collection is not None and text == f"Collection {collection} not found":
                return DatasetNotFoundError(f"collection {collection!r} not found in {self._where}")
            if isinstance(exc, ValueError):  # local mode's "bad request", as a server's HTTP 400
                return UnsupportedFeatureError(f"Qdrant {self._where} refused {action}: {text}")
            return ConnectorError(f"Qdrant {action} failed in {self._where}: {text}")
        return None

    def _http_error(self, exc: Any, action: str, collection: str | None) -> AibackupError:
        status = exc.status_code
        try:
            detail = str(exc.structured().get("status", {}).get("error") or exc.reason_phrase)
        except Exception:  # a body that is not JSON: the status line says enough
            detail = str(exc.reason_phrase)
        detail = detail.strip().splitlines()[0][:300] if detail.strip() else f"HTTP {status}"
        if status == 404 and collection is not None:
            return DatasetNotFoundError(f"collection {collection!r} not found in {self._where}")
        if status in (401, 403):
            return UnavailableError(
                f"Qdrant at {self._where} denied {action} (HTTP {status}): check the API key "
                f"(QDRANT_API_KEY, or the variable named by ?api_key_env=)"
            )
        if status in (400, 422):
            return UnsupportedFeatureError(f"Qdrant at {self._where} refused {action}: {detail}")
        if status == 409:
            return ConnectorError(f"Qdrant at {self._where}: {action} conflicts: {detail}")
        return UnavailableError(f"Qdrant at {self._where} failed {action} (HTTP {status}): {detail}")


def _search_id(point: Any) -> str:
    """The canonical id of a search hit: the original string id if a restore stored one."""
    original = (point.payload or {}).get(ID_KEY)
    return original if isinstance(original, str) else canonical_point_id(point.id)
