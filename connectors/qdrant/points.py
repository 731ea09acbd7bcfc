"""Qdrant points <-> canonical Arrow batches, and the id mapping (see :mod:`.connector` for the rules).

Nothing here talks to a client: :func:`points_to_batch` turns one page of ``scroll`` results into a batch,
:func:`batch_to_points` turns a canonical batch into ``PointStruct``s ready for ``upsert``. qdrant-client is
imported only inside the functions that build its models, so :mod:`.connector` can import this module
(and its constants) without the optional client installed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.base import dense_array
from aibackup.connectors.jsonnumbers import json_number_problem, json_safe
from aibackup.errors import SourceDataError, UnsupportedFeatureError
from aibackup.manifests.model import VectorsConfig
from aibackup.manifests.vectors import (
    DOCUMENT,
    ID,
    METADATA,
    SPARSE_TYPE,
    URI,
    canonical_json,
    dense_column,
    metadata_json,
    parse_metadata,
    sorted_dense,
    sorted_sparse,
    sparse_column,
)

if TYPE_CHECKING:
    from qdrant_client.http import models as qm

#: Namespace of the UUIDv5 point ids made from string ids that Qdrant cannot hold as they are:
#: ``uuid5(NAMESPACE_URL, "urn:aibackup:qdrant-point-id")``. Fixed forever: restores and the id checks of
#: every bundle ever written depend on it.
AIBACKUP_NAMESPACE = uuid.UUID("516a9226-9fbe-5e46-bb30-59b79d8e957d")
#: Payload keys a restore writes next to the user's payload; export moves them back into their columns.
ID_KEY = "_aibackup_id"
DOCUMENT_KEY = "_aibackup_document"
URI_KEY = "_aibackup_uri"
RESERVED_KEYS = (ID_KEY, DOCUMENT_KEY, URI_KEY)
_UINT64_LIMIT = 1 << 64


def to_point_id(canonical: str) -> tuple[int | str, bool]:
    """The Qdrant point id for a canonical id, and whether the original must travel in ``_aibackup_id``.

    A decimal integer without leading zeros below 2**64 becomes that unsigned int; a string equal to its
    own canonical UUID form becomes that UUID; anything else becomes ``uuid5(AIBACKUP_NAMESPACE, id)``.
    Only the exact canonical spelling is taken as-is, so export gives back the very same string.
    """
    if canonical.isascii() and canonical.isdecimal() and (canonical == "0" or canonical[0] != "0"):
        number = int(canonical)
        if number < _UINT64_LIMIT:
            return number, False
    try:
        if str(uuid.UUID(canonical)) == canonical:
            return canonical, False
    except ValueError:
        pass
    return str(uuid.uuid5(AIBACKUP_NAMESPACE, canonical)), True


def canonical_point_id(point_id: int | str | uuid.UUID) -> str:
    """The canonical string of a Qdrant point id: decimal for ints, lowercase hyphenated for UUIDs."""
    if isinstance(point_id, int):
        return str(point_id)
    return str(uuid.UUID(str(point_id)))


def id_type(canonical: str) -> str:
    """The original id type behind a canonical id as this connector exports it: uint, uuid or string."""
    point_id, mapped = to_point_id(canonical)
    if mapped:
        return "string"
    return "uint" if isinstance(point_id, int) else "uuid"


# Canonical ids that are surely a native uint (at most 19 digits: below 2**64) or a native UUID (exactly the
# lowercase hyphenated form, which is what ``str(uuid.UUID(s)) == s`` accepts).
_SHORT_UINT = r"^(0|[1-9][0-9]{0,18})$"
_CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def id_types(ids: pa.Array) -> Counter[str]:
    """:func:`id_type` counted over a column of canonical ids, vectorised: it runs on every exported
    batch, beside Qdrant local mode's pure-Python scroll; only ids no pattern settles go through Python."""
    uint = pc.match_substring_regex(ids, _SHORT_UINT)
    uuid_like = pc.match_substring_regex(ids, _CANONICAL_UUID)
    counts = Counter({"uint": pc.sum(uint).as_py() or 0, "uuid": pc.sum(uuid_like).as_py() or 0})
    rest = ids.filter(pc.invert(pc.or_(uint, uuid_like)))
    counts.update(id_type(i) for i in rest.to_pylist())
    return +counts  # only the types present


def page_rows(config: VectorsConfig, limit: int, float_budget: int) -> int:
    """Rows per page so that one page holds at most about `float_budget` dense floats (as Python floats a
    page costs ~32 bytes per component: memory stays bounded whatever the dimension)."""
    floats = sum(d.size * (8 if d.multivector else 1) for d in config.dense)
    return max(1, min(limit, float_budget // max(floats, 1)))


# --- export: points -> batch -------------------------------------------------------------------------------


def points_to_batch(
    points: Sequence[qm.Record], config: VectorsConfig, schema: pa.Schema, collection: str
) -> pa.RecordBatch:
    """One canonical batch of `schema` from a page of points. Raises SourceDataError for a point that does
    not fit the description (unknown vector, wrong dimension, a reserved payload key that lies)."""
    dense = sorted_dense(config)
    sparse = sorted_sparse(config)
    known = {d.name for d in dense} | {s.name for s in sparse}
    ids: list[str] = []
    documents: list[str | None] = []
    uris: list[str | None] = []
    metadata: list[str | None] = []
    vectors: list[Mapping[str, Any]] = []
    for point in points:
        pid = canonical_point_id(point.id)
        raw = point.vector
        vec: Mapping[str, Any] = raw if isinstance(raw, dict) else ({} if raw is None else {"": raw})
        unknown = set(vec) - known
        if unknown:
            raise SourceDataError(
                f"point {pid} of Qdrant collection {collection!r} has vector(s) {sorted(unknown)} that the "
                f"collection description lacks (was the collection changed during the backup?)"
            )
        vectors.append(vec)
        payload = dict(point.payload or {})
        ids.append(_original_id(pid, payload.pop(ID_KEY, None), collection))
        documents.append(_reserved_text(payload.pop(DOCUMENT_KEY, None), DOCUMENT_KEY, pid, collection))
        uris.append(_reserved_text(payload.pop(URI_KEY, None), URI_KEY, pid, collection))
        try:
            metadata.append(metadata_json(payload))
        except (TypeError, ValueError) as exc:
            raise SourceDataError(
                f"payload of point {pid} in Qdrant collection {collection!r} cannot be backed up as JSON: {exc}"
            ) from None
    columns: dict[str, pa.Array] = {ID: pa.array(ids, pa.string())}
    for spec in dense:
        cells = [v.get(spec.name) for v in vectors]
        try:
            if spec.multivector:
                columns[dense_column(spec.name)] = _multi_array(cells, spec.size)
            else:
                columns[dense_column(spec.name)] = dense_array(cells, spec.size)
        except ValueError as exc:
            raise SourceDataError(
                f"vector {spec.name or '(default)'!r} of Qdrant collection {collection!r} does not have "
                f"the described size {spec.size}: {exc}"
            ) from None
    for sspec in sparse:
        cells = [v.get(sspec.name) for v in vectors]
        columns[sparse_column(sspec.name)] = pa.array(
            [None if c is None else {"indices": c.indices, "values": c.values} for c in cells], SPARSE_TYPE
        )
    columns[DOCUMENT] = pa.array(documents, pa.string())
    columns[URI] = pa.array(uris, pa.string())
    columns[METADATA] = pa.array(metadata, pa.string())
    return pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)


def _original_id(pid: str, original: Any, collection: str) -> str:
    if original is None:
        return pid
    # Only a restore writes _aibackup_id, always next to the point id derived from it; anything else
    # would give the record a wrong id in the bundle, so it is refused rather than trusted.
    if not isinstance(original, str) or to_point_id(original) != (pid, True):
        raise SourceDataError(
            f"point {pid} of Qdrant collection {collection!r} has payload {ID_KEY}={original!r}, which does "
            f"not map to that point id; {ID_KEY} is reserved by aibackup (remove or fix it)"
        )
    return original


def _reserved_text(value: Any, key: str, pid: str, collection: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise SourceDataError(
        f"point {pid} of Qdrant collection {collection!r} has payload {key}={value!r}; {key} is reserved "
        f"by aibackup for a text (remove or fix it)"
    )


def _multi_array(cells: list[Any], size: int) -> pa.Array:
    counts = [0 if c is None else len(c) for c in cells]
    offsets = np.zeros(len(cells) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    rows = [row for c in cells if c is not None for row in c]
    matrix = np.asarray(rows, dtype=np.float32).reshape(-1, size) if rows else np.zeros((0, size), np.float32)
    if matrix.shape[0] != len(rows):
        raise ValueError("ragged multivector")
    inner = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), size)
    mask = pa.array([c is None for c in cells])
    return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=mask if mask.true_count else None)


# --- import: batch -> points -------------------------------------------------------------------------------


def batch_to_points(
    batch: pa.RecordBatch, config: VectorsConfig, collection: str, *, server: bool
) -> list[qm.PointStruct]:
    """PointStructs for a canonical batch (after the plan's transform). A null vector cell omits that
    vector. Raises UnsupportedFeatureError for what Qdrant cannot hold: non-finite vector values, metadata
    using a reserved key, and (`server`) payload numbers JSON/Qdrant would change."""
    from qdrant_client.http import models

    n = batch.num_rows
    ids = batch.column(ID).to_pylist()
    vectors: list[dict[str, Any]] = [{} for _ in range(n)]
    for spec in sorted_dense(config):
        column = batch.column(dense_column(spec.name))
        for i, cell in _dense_cells(column, spec.size, spec.multivector):
            if not np.isfinite(cell).all():
                raise UnsupportedFeatureError(
                    f"record {ids[i]!r} of collection {collection!r}: vector {spec.name or '(default)'!r} "
                    f"holds NaN or Infinity, which Qdrant cannot store"
                )
            vectors[i][spec.name] = cell.tolist()
    for sspec in sorted_sparse(config):
        for i, cell in enumerate(batch.column(sparse_column(sspec.name)).to_pylist()):
            if cell is not None:
                vectors[i][sspec.name] = models.SparseVector(indices=cell["indices"], values=cell["values"])
    documents = batch.column(DOCUMENT).to_pylist()
    uris = batch.column(URI).to_pylist()
    metadata = batch.column(METADATA).to_pylist()
    unnamed = [d.name for d in config.dense] == [""] and not config.sparse
    points = []
    for i in range(n):
        point_id, mapped = to_point_id(ids[i])
        payload = _payload(metadata[i], ids[i], collection, server)
        if mapped:
            payload[ID_KEY] = ids[i]
        if documents[i] is not None:
            payload[DOCUMENT_KEY] = documents[i]
        if uris[i] is not None:
            payload[URI_KEY] = uris[i]
        vector: Any = vectors[i].get("", {}) if unnamed else vectors[i]
        points.append(models.PointStruct(id=point_id, vector=vector, payload=payload or None))
    return points


def _dense_cells(column: pa.Array, size: int, multivector: bool) -> Iterable[tuple[int, np.ndarray]]:
    """(row, float32 matrix or vector) for every non-null cell, through numpy (no per-float Python work)."""
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if multivector:
        offsets = column.offsets.to_numpy()
        inner = column.values
        flat = inner.values.slice(inner.offset * size, len(inner) * size).to_numpy(zero_copy_only=False)
        matrix = flat.reshape(len(inner), size)
        for i in np.flatnonzero(valid):
            yield int(i), matrix[offsets[i] : offsets[i + 1]]
        return
    flat = column.values.slice(column.offset * size, len(column) * size).to_numpy(zero_copy_only=False)
    matrix = flat.reshape(len(column), size)
    for i in np.flatnonzero(valid):
        yield int(i), matrix[i]


def _payload(text: str | None, record_id: str, collection: str, server: bool) -> dict[str, Any]:
    try:
        payload = parse_metadata(text) or {}
    except ValueError as exc:
        raise SourceDataError(f"record {record_id!r} of collection {collection!r}: bad metadata: {exc}") from None
    clash = sorted(k for k in RESERVED_KEYS if k in payload)
    if clash:
        raise UnsupportedFeatureError(
            f"record {record_id!r} of collection {collection!r} has metadata key(s) {clash}, which aibackup "
            f"reserves in Qdrant payloads; rename them in the source and back up again"
        )
    if server:
        problem = json_number_problem(payload)
        if problem:
            raise UnsupportedFeatureError(
                f"record {record_id!r} of collection {collection!r}: metadata {problem}, which a Qdrant "
                f"server cannot store exactly; use --allow-lossy to store such numbers as float/null"
            )
    return payload


# --- what a Qdrant server cannot hold exactly, and the lossy mapping --------------------------------------


def lossy_numbers(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The documented lossy mapping for a server: ints outside int64 -> float (null beyond float range),
    NaN/Infinity -> null, inside the metadata JSON."""
    cells = batch.column(METADATA).to_pylist()
    changed = False
    for i, text in enumerate(cells):
        if text is None:
            continue
        value = parse_metadata(text)
        if json_number_problem(value):
            cells[i] = canonical_json(json_safe(value))
            changed = True
    if not changed:
        return batch
    index = batch.schema.get_field_index(METADATA)
    return batch.set_column(index, batch.schema.field(index), pa.array(cells, pa.string()))
