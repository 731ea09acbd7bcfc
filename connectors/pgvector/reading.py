"""A backup's reading of a pgvector table: its rows as canonical Arrow batches (the rules are in
:mod:`.connector`'s docstring).

:func:`pages` cuts the table into block ranges of about PAGE_BYTES, each read by one binary COPY of the
SELECT list :func:`select_list` writes; :func:`copy_batches` cuts the COPY stream at the row messages
PostgreSQL sends into batches of about CHUNK_BYTES, which :func:`decode_batch` turns into canonical columns
with :mod:`.codec` (ids, documents and uris as the text the server sends, vectors with numpy, metadata as
canonical JSON: written by the server itself where :func:`simple_metadata_sql` can).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from aibackup.connectors import postgres
from aibackup.connectors.base import Location, Partitioning
from aibackup.connectors.pgvector import catalog, codec
from aibackup.connectors.pgvector.catalog import qualified, quote
from aibackup.connectors.pgvector.mapping import UNNAMED_COLUMN, Columns
from aibackup.errors import ConnectorError, SourceDataError
from aibackup.manifests.vectors import (
    ID,
    METADATA,
    canonical_json,
    dense_column,
    metadata_json,
    sparse_column,
)
from aibackup.manifests.vectors import SPARSE_TYPE as SPARSE_ARROW

#: Bytes of the COPY stream decoded at a time (a batch): bounded memory whatever the table.
CHUNK_BYTES = 8 << 20
#: Bytes of the table read by one COPY (see pages).
PAGE_BYTES = 64 << 20
#: jsonb_build_object takes at most 100 arguments: metadata objects are built 40 columns at a time.
OBJECT_COLUMNS = 40


def pages(conn: Any, location: Location, target: str, name: str) -> list[tuple[int, int | None]]:
    """Block ranges of the table (of every partition at once, for a partitioned one) holding about
    PAGE_BYTES of it each (TOAST included), the last one open-ended: a row written into a new block
    after the snapshot began is invisible to it anyway."""
    with postgres.errors(location, "sizing", name):
        blocks, total = catalog.scalar_row(
            conn,
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


def split(conn: Any, location: Location, native: Mapping[str, Any], name: str, wanted: int) -> Partitioning:
    """The table's block ranges (:func:`pages`) in about `wanted` contiguous groups, with the snapshot of
    `conn`'s transaction exported (``pg_export_snapshot()``): a worker that sets it (``SET TRANSACTION
    SNAPSHOT``, the connector's ``snapshot`` option) reads the very state this backup reads, and together
    the groups hold every row once."""
    target = qualified(native["schema"], native["table"])
    ranges = pages(conn, location, target, name)
    with postgres.errors(location, "exporting the backup's snapshot"):
        snapshot = str(catalog.scalar(conn, "SELECT pg_export_snapshot()"))
    count = max(1, min(wanted, len(ranges)))
    groups = [ranges[len(ranges) * k // count : len(ranges) * (k + 1) // count] for k in range(count)]
    return Partitioning(
        partitions=tuple({"pages": [list(r) for r in group]} for group in groups if group),
        options={"snapshot": snapshot},
        how=f"{count} block range(s) of table {name} in one exported snapshot",
    )


def copy_batches(
    conn: Any,
    location: Location,
    sql: str,
    decoders: list[str],
    columns: Columns,
    schema: pa.Schema,
    position: int,
    name: str,
) -> Iterator[pa.RecordBatch]:
    """The canonical batches of one binary COPY, numbered from `position` (for row-position ids)."""
    where = location.display()
    with postgres.errors(location, "reading", name), conn.cursor() as cur, cur.copy(sql) as copy:
        # PostgreSQL sends one COPY message per row (the header rides with the first, the trailer comes
        # alone): the message ends are the row ends, so a row never straddles two batches.
        buffer, ends, start, finished = bytearray(), [], -1, False
        for chunk in copy:
            if finished:
                raise ConnectorError(f"the COPY of table {name} from {where} went on after its end")
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
                batch = decode_batch(buffer, start, ends, decoders, columns, schema, position, name, where)
                position += batch.num_rows
                yield batch
                buffer, ends, start = bytearray(), [], 0
        if not finished:
            raise ConnectorError(f"the COPY of table {name} from {where} ended early")
        if ends and ends[-1] > start:
            yield decode_batch(buffer, start, ends, decoders, columns, schema, position, name, where)


def select_list(columns: Columns) -> tuple[list[str], list[str]]:
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


def decode_batch(
    buffer: bytearray,
    start: int,
    ends: list[int],
    decoders: list[str],
    columns: Columns,
    schema: pa.Schema,
    position: int,
    name: str,
    where: str,
) -> pa.RecordBatch:
    """The canonical batch of the rows in ``buffer[start:]`` (`ends`: where each row ends)."""
    try:
        fields = codec.split_rows(buffer, start, ends, len(decoders))
    except ValueError as exc:
        raise ConnectorError(f"the COPY of table {name} from {where} cannot be read: {exc}") from None
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
