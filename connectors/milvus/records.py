"""Milvus rows <-> canonical Arrow batches, the checks a restore runs on every record, and the documented
lossy mappings (the rules: :mod:`.connector`; which field plays which role: :class:`.schema.Layout`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from aibackup.connectors.base import Transform
from aibackup.connectors.jsonnumbers import INT64_MAX, INT64_MIN, json_number_problem, json_safe
from aibackup.connectors.milvus.schema import DEFAULT_PARTITION, NAME, PARTITION_KEY, Field, Layout
from aibackup.errors import SourceDataError, UnsupportedFeatureError
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
    sparse_column,
)

INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (INT64_MIN, INT64_MAX),
}
#: Milvus's bound on sparse indices: [0, 2**32 - 1).
SPARSE_INDEX_LIMIT = 2**32 - 1
_INT64_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,18})")


def float32_value(value: float) -> float:
    """A FLOAT field's value as the shortest decimal of its float32 (``0.1``, not ``0.10000000149011612``):
    written back into a FLOAT field it gives the same float32."""
    return float(str(np.float32(value)))


# --- export: rows -> batch ---------------------------------------------------------------------------------


def rows_to_batch(
    rows: Sequence[Mapping[str, Any]], layout: Layout, schema: pa.Schema, collection: str, partition: str | None
) -> pa.RecordBatch:
    """One canonical batch of `schema` from a page of query results (`partition`: the partition the page
    was read from, recorded in metadata unless it is ``_default``). Raises SourceDataError for a record the
    bundle cannot hold as it is."""
    pk = layout.pk.name
    ids = [str(r[pk]) for r in rows]
    columns: dict[str, pa.Array] = {ID: pa.array(ids, pa.string())}
    for name, f in layout.dense:
        try:
            columns[dense_column(name)] = _dense_array([r.get(f.name) for r in rows], f)
        except ValueError as exc:
            raise SourceDataError(f"vector field {f.name!r} of Milvus collection {collection!r}: {exc}") from None
    for name, f in layout.sparse:
        columns[sparse_column(name)] = pa.array([_sparse_cell(r.get(f.name)) for r in rows], SPARSE_TYPE)
    columns[DOCUMENT] = pa.array(
        [r.get(layout.document.name) for r in rows] if layout.document else [None] * len(rows), pa.string()
    )
    columns[URI] = pa.array([r.get(layout.uri.name) for r in rows] if layout.uri else [None] * len(rows), pa.string())
    known = set(layout.output_fields)
    floats = {f.name for f in layout.scalars if f.type == "FLOAT" or f.element_type == "FLOAT"}
    metadata = []
    for rid, row in zip(ids, rows, strict=True):
        meta = _metadata(row, layout, known, floats, rid, collection)
        if partition is not None and partition != DEFAULT_PARTITION:
            meta[PARTITION_KEY] = partition
        try:
            metadata.append(metadata_json(meta))
        except (TypeError, ValueError) as exc:
            raise SourceDataError(
                f"record {rid!r} of Milvus collection {collection!r}: metadata is not JSON: {exc}"
            ) from None
    columns[METADATA] = pa.array(metadata, pa.string())
    return pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)


def _metadata(
    row: Mapping[str, Any], layout: Layout, known: set[str], floats: set[str], rid: str, collection: str
) -> dict[str, Any]:
    if layout.metadata_field is not None:
        value = row.get(layout.metadata_field.name)
        if value is None:
            meta: dict[str, Any] = {}
        elif isinstance(value, dict):
            meta = dict(value)
        else:
            raise SourceDataError(
                f"record {rid!r} of Milvus collection {collection!r}: its JSON field 'metadata' holds "
                f"{type(value).__name__}, not an object (aibackup reads a collection's only JSON field named "
                f"metadata as the record's metadata)"
            )
    else:
        meta = {}
        for f in layout.scalars:
            value = row.get(f.name)
            if value is None and f.nullable:
                continue  # a null field is an absent key (a restore writes null back)
            if f.name in floats and value is not None:
                value = (
                    float32_value(value)
                    if f.type == "FLOAT"
                    else [None if v is None else float32_value(v) for v in value]
                )
            meta[f.name] = value
        if layout.dynamic:
            for key, value in row.items():
                if key not in known:
                    meta[key] = value
    if PARTITION_KEY in meta:
        raise SourceDataError(
            f"record {rid!r} of Milvus collection {collection!r} has metadata key {PARTITION_KEY!r}, which "
            f"aibackup keeps for a record's partition; rename it and back up again"
        )
    return meta


def _dense_array(cells: list[Any], f: Field) -> pa.Array:
    size = int(f.dim or 0)
    valid = [c is not None for c in cells]
    rows = [_float32_vector(c, f.type) for c in cells if c is not None]
    for row in rows:
        if row.shape != (size,):
            raise ValueError(f"a vector has {row.shape[0] if row.ndim == 1 else row.shape} values, not {size}")
    matrix = np.zeros((len(cells), size), dtype=np.float32)
    if rows:
        if all(valid):
            matrix = np.stack(rows).astype(np.float32, copy=False)
        else:
            matrix[np.asarray(valid)] = np.stack(rows)
    values = pa.array(matrix.reshape(-1), pa.float32())
    mask = None if all(valid) else pa.array([not v for v in valid])
    return pa.FixedSizeListArray.from_arrays(values, size, mask=mask)


def _float32_vector(cell: Any, kind: str) -> np.ndarray:
    """A dense vector cell as pymilvus returns it, widened exactly to float32: FLOAT_VECTOR as a float32 array
    or a list of floats; FLOAT16/BFLOAT16 as raw little-endian bytes (or a one-item list of them, or an array)."""
    if kind == "FLOAT_VECTOR":
        return np.asarray(cell, dtype=np.float32)
    if isinstance(cell, list) and len(cell) == 1 and isinstance(cell[0], bytes | bytearray):
        cell = cell[0]
    if isinstance(cell, np.ndarray) and cell.dtype.name not in ("float16", "bfloat16"):
        return cell.astype(np.float32)  # already widened by the client
    raw = bytes(cell) if isinstance(cell, bytes | bytearray) else np.asarray(cell).tobytes()
    if kind == "FLOAT16_VECTOR":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16  # bfloat16: the top half of a float32
    return halves.view(np.float32)


def _sparse_cell(cell: Any) -> dict[str, list[Any]] | None:
    if cell is None:
        return None
    if isinstance(cell, Mapping):
        pairs = sorted((int(k), float(v)) for k, v in cell.items())
        return {"indices": [p[0] for p in pairs], "values": [p[1] for p in pairs]}
    raise SourceDataError(f"a sparse vector came back as {type(cell).__name__}, not a map of index to weight")


# --- import: batch -> rows ----------------------------------------------------------------------------------


def batch_to_rows(
    batch: pa.RecordBatch, layout: Layout, collection: str, *, lite: bool
) -> dict[str | None, list[dict[str, Any]]]:
    """The insert rows of a canonical batch (of the target's columns, after the plan's transform), grouped
    by partition (None: the default one). Raises UnsupportedFeatureError naming the record and what Milvus
    cannot hold (the checks of a restore, run before anything is written)."""
    names = set(batch.schema.names)
    ids = batch.column(ID).to_pylist()
    try:
        return _rows(batch, names, ids, layout, collection, lite)
    except _Refused as refused:
        raise UnsupportedFeatureError(f"record {ids[refused.row]!r} of collection {collection!r}: {refused}") from None


class _Refused(Exception):
    """What Milvus cannot hold in record number `row` of a batch (the message: what, without the record)."""

    def __init__(self, row: int, what: str) -> None:
        super().__init__(what)
        self.row = row


def _rows(
    batch: pa.RecordBatch, names: set[str], ids: list[str], layout: Layout, collection: str, lite: bool
) -> dict[str | None, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = [{} for _ in ids]
    for i, rid in enumerate(ids):
        rows[i][layout.pk.name] = _pk_value(rid, layout.pk, i)
    for name, f in layout.dense:
        column = dense_column(name)
        if column not in names:
            raise UnsupportedFeatureError(
                f"collection {collection!r}: the bundle has no vector {name!r} for field {f.name!r}"
            )
        if batch.schema.field(column).type.list_size != f.dim:
            size = batch.schema.field(column).type.list_size
            raise UnsupportedFeatureError(
                f"collection {collection!r}: the bundle's vector {name!r} has {size} dimensions, "
                f"field {f.name!r} {f.dim}"
            )
        for i, value in _dense_values(batch.column(column), f, lite):
            rows[i][f.name] = value
    for name, f in layout.sparse:
        column = sparse_column(name)
        if column not in names:
            raise UnsupportedFeatureError(f"collection {collection!r}: the bundle has no sparse vector {name!r}")
        for i, cell in enumerate(batch.column(column).to_pylist()):
            rows[i][f.name] = _sparse_value(cell, lite, i, f"sparse vector {name!r}")
    for column, target in ((DOCUMENT, layout.document), (URI, layout.uri)):
        for i, text in enumerate(batch.column(column).to_pylist()):
            if target is None:
                if text is not None:
                    raise _Refused(i, f"it has a {column}, and the Milvus collection has no field for one")
                continue
            _check_text(text, target, i, column)
            rows[i][target.name] = text
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for i, text in enumerate(batch.column(METADATA).to_pylist()):
        try:
            meta = parse_metadata(text) or {}
        except ValueError as exc:
            raise SourceDataError(f"record {ids[i]!r} of collection {collection!r}: bad metadata: {exc}") from None
        partition = _partition(meta.pop(PARTITION_KEY, None), layout, i)
        _route(meta, rows[i], layout, i)
        groups.setdefault(partition, []).append(rows[i])
    return groups


def _pk_value(rid: str, pk: Field, i: int) -> Any:
    if pk.type == "INT64":
        if not _INT64_TEXT.fullmatch(rid) or not INT64_MIN <= int(rid) <= INT64_MAX:
            raise _Refused(i, f"the id is not an int64 in canonical decimal form, as the primary key {pk.name!r} needs")
        return int(rid)
    limit = pk.max_length or 65535
    if len(rid) * 4 > limit and len(rid.encode("utf-8")) > limit:
        raise _Refused(i, f"the id is longer than {limit} bytes, the primary key {pk.name!r}'s max_length")
    return rid


def _dense_values(column: pa.Array, f: Field, lite: bool) -> Iterator[tuple[int, Any]]:
    size = int(f.dim or 0)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    flat = column.values.slice(column.offset * size, len(column) * size).to_numpy(zero_copy_only=False)
    matrix = flat.reshape(len(column), size)
    if not valid.all():
        first = int(np.flatnonzero(~valid)[0])
        if lite or not f.nullable:
            raise _Refused(first, f"it has no vector {f.name!r}, which Milvus needs in every record (no lossy mapping)")
    finite = np.isfinite(matrix).all(axis=1) | ~valid
    if not finite.all():
        raise _Refused(
            int(np.flatnonzero(~finite)[0]), f"vector {f.name!r} holds NaN or Infinity, which Milvus refuses"
        )
    if f.type == "FLOAT16_VECTOR":
        with np.errstate(over="ignore"):
            half = matrix.astype("<f2")
        exact = (half.astype(np.float32) == matrix).all(axis=1) | ~valid
        if not exact.all():
            raise _Refused(int(np.flatnonzero(~exact)[0]), f"vector {f.name!r} is not exactly a float16 vector")
        for i in np.flatnonzero(valid):
            yield int(i), half[i].tobytes()
    elif f.type == "BFLOAT16_VECTOR":
        bits = matrix.view("<u4")
        exact = ((bits & 0xFFFF) == 0).all(axis=1) | ~valid
        if not exact.all():
            raise _Refused(int(np.flatnonzero(~exact)[0]), f"vector {f.name!r} is not exactly a bfloat16 vector")
        halves = (bits >> 16).astype("<u2")
        for i in np.flatnonzero(valid):
            yield int(i), halves[i].tobytes()
    else:
        for i in np.flatnonzero(valid):
            yield int(i), matrix[i]
    for i in np.flatnonzero(~valid):
        yield int(i), None


def _sparse_value(cell: Mapping[str, Any] | None, lite: bool, i: int, what: str) -> dict[int, float]:
    def refuse(problem: str) -> _Refused:
        return _Refused(i, f"{what} {problem}")

    if cell is None:
        raise refuse("is absent, and Milvus needs one in every record (no lossy mapping)")
    indices, values = cell["indices"], cell["values"]
    if not indices:
        raise refuse("is empty, which Milvus refuses")
    out = dict(zip(indices, values, strict=True))
    if len(out) != len(indices):
        raise refuse("repeats an index")
    if max(indices) >= SPARSE_INDEX_LIMIT:
        raise refuse(f"has an index at or above {SPARSE_INDEX_LIMIT}")
    if not all(math.isfinite(v) for v in values):
        raise refuse("holds NaN or Infinity")
    if lite and min(values) < 0:
        raise refuse("has a negative weight, which Milvus Lite refuses")
    if lite and not all(values):
        raise refuse("has a zero weight, which Milvus Lite does not store (--allow-lossy drops zero weights)")
    return out


def _check_text(text: str | None, f: Field, i: int, what: str) -> None:
    if text is None:
        if not f.optional:
            raise _Refused(i, f"{what} is absent, and field {f.name!r} is not nullable")
        return
    limit = f.max_length or 65535
    if len(text) * 4 > limit and len(text.encode("utf-8")) > limit:
        raise _Refused(
            i, f"{what} is longer than {limit} bytes, the max_length of field {f.name!r} (--allow-lossy truncates it)"
        )


def _partition(value: Any, layout: Layout, i: int) -> str | None:
    if value is None or value == DEFAULT_PARTITION:
        return None
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise _Refused(i, f"metadata {PARTITION_KEY}={value!r} is not a Milvus partition name")
    if layout.partition_key:
        raise _Refused(
            i, f"it belongs to partition {value!r}, and the collection chooses partitions by its partition key"
        )
    return value


def _route(meta: dict[str, Any], row: dict[str, Any], layout: Layout, i: int) -> None:
    """Put a record's metadata into its fields (a JSON field, typed fields, dynamic keys)."""
    if layout.metadata_field is not None:
        problem = json_number_problem(meta)
        if problem:
            raise _Refused(i, f"metadata {problem}, which Milvus JSON cannot hold (--allow-lossy: float/null)")
        row[layout.metadata_field.name] = meta or None
        return
    for f in layout.scalars:
        value = meta.pop(f.name, None)
        if value is None:
            if not f.optional:
                raise _Refused(i, f"it has no value for field {f.name!r}, which is not nullable")
            row[f.name] = None
            continue
        problem = value_problem(value, f)
        if problem:
            raise _Refused(i, f"metadata {f.name!r} {problem}")
        row[f.name] = value
    if meta and not layout.dynamic:
        raise _Refused(
            i, f"metadata key(s) {sorted(meta)[:5]} have no field in the Milvus collection, which has no dynamic field"
        )
    for key, value in meta.items():
        if key == "$meta" or key in row:
            raise _Refused(i, f"metadata key {key!r} clashes with a Milvus field")
        problem = json_number_problem(value, key)
        if problem:
            raise _Refused(i, f"metadata {problem}, which Milvus JSON cannot hold (--allow-lossy: float/null)")
        row[key] = value


def value_problem(value: Any, f: Field, element: str | None = None) -> str | None:
    """Why `value` cannot go into field `f` (into an element of its array when `element` is its type)."""
    kind = element or f.type
    if kind == "BOOL":
        return None if isinstance(value, bool) else f"is {value!r}, not a bool"
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return f"is {value!r}, not an {kind.lower()}"
    if kind in ("FLOAT", "DOUBLE"):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else f"is {value!r}, not a number"
    if kind in ("VARCHAR", "GEOMETRY", "TIMESTAMPTZ", "TEXT"):
        if not isinstance(value, str):
            return f"is {value!r}, not a string"
        limit = f.max_length
        if element is None and limit and len(value) * 4 > limit and len(value.encode("utf-8")) > limit:
            return f"is longer than {limit} bytes"
        return None
    if kind == "JSON":
        problem = json_number_problem(value)
        return None if problem is None else f"holds {problem}, which Milvus JSON cannot hold"
    if kind == "ARRAY":
        if not isinstance(value, list):
            return f"is {value!r}, not a list"
        if f.max_capacity is not None and len(value) > f.max_capacity:
            return f"has {len(value)} elements, more than its max_capacity {f.max_capacity}"
        for item in value:
            problem = value_problem(item, f, f.element_type or "")
            if problem:
                return f"element {problem}"
        return None
    return None  # a type this version does not check: Milvus itself decides


# --- transforms: canonical -> canonical -----------------------------------------------------------------


def reshape(schema: pa.Schema, columns: Mapping[str, str]) -> Transform:
    """Batches of `schema`, each vector column read from the bundle's column `columns` names (renamed
    vectors; bundle vectors not named are dropped); id, document, uri and metadata as they are."""

    def apply(batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = [batch.column(columns.get(f.name, f.name)) for f in schema]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    return apply


def truncated_documents(limit: int) -> Transform:
    """The lossy mapping of documents longer than `limit` UTF-8 bytes: cut at a character boundary."""

    def apply(batch: pa.RecordBatch) -> pa.RecordBatch:
        index = batch.schema.get_field_index(DOCUMENT)
        cells = batch.column(index).to_pylist()
        changed = False
        for i, text in enumerate(cells):
            if text is not None and len(text) * 4 > limit and len(text.encode("utf-8")) > limit:
                cells[i] = text.encode("utf-8")[:limit].decode("utf-8", "ignore")
                changed = True
        if not changed:
            return batch
        return batch.set_column(index, batch.schema.field(index), pa.array(cells, pa.string()))

    return apply


def lossy_json_numbers(layout: Layout) -> Transform:
    """The lossy mapping of metadata numbers Milvus JSON cannot hold: ints outside int64 become floats (null
    beyond float range), NaN/Infinity become null; values of typed number fields are left as they are."""
    typed = {f.name for f in layout.scalars if f.type != "JSON"} if layout.metadata_field is None else set()

    def apply(batch: pa.RecordBatch) -> pa.RecordBatch:
        index = batch.schema.get_field_index(METADATA)
        cells = batch.column(index).to_pylist()
        changed = False
        for i, text in enumerate(cells):
            meta = parse_metadata(text)
            if not meta:
                continue
            if any(json_number_problem(v) for k, v in meta.items() if k not in typed):
                cells[i] = canonical_json({k: v if k in typed else json_safe(v) for k, v in meta.items()})
                changed = True
        if not changed:
            return batch
        return batch.set_column(index, batch.schema.field(index), pa.array(cells, pa.string()))

    return apply
