"""LanceDB record batches <-> canonical batches (the mapping is in :mod:`.connector`).

:func:`to_canonical` turns a batch read from a table into a canonical batch; :class:`TableBatches` turns
canonical batches into batches of the table a restore writes, refusing (UnsupportedFeatureError, naming the
record) what the table cannot hold. Both are vectorised except the metadata: each record's metadata is a JSON
object built from (or parsed into) one Python value per metadata column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from aibackup.connectors.base import DatasetDescription, ImportPlan
from aibackup.connectors.lancedb import ids
from aibackup.connectors.lancedb.client import Database
from aibackup.connectors.lancedb.jsontext import metadata_texts
from aibackup.connectors.lancedb.tables import Columns, TablePlan
from aibackup.connectors.lancedb.values import from_json_ready, json_type, to_json_ready
from aibackup.errors import SourceDataError, UnsupportedFeatureError, first_line
from aibackup.manifests.vectors import DOCUMENT, ID, METADATA, URI, dense_column, metadata_json

__all__ = ["TableBatches", "float_values", "metadata_rows", "nan_rows", "to_canonical"]


def float_values(array: pa.Array) -> np.ndarray:
    """The floats of a vector column (fixed-size lists, or lists of them) as one flat numpy array, for
    exactly this slice of it (null vectors' slots included: they hold zeros or anything, compared alike)."""
    while not pa.types.is_floating(array.type):
        if pa.types.is_fixed_size_list(array.type):
            size = array.type.list_size
            array = array.values.slice(array.offset * size, len(array) * size)
        else:
            offsets = array.offsets
            start, end = offsets[0].as_py(), offsets[-1].as_py()
            array = array.values.slice(start, end - start)
    return array.to_numpy(zero_copy_only=False)


def _narrow(array: pa.Array, target: pa.DataType, what: str) -> pa.Array:
    """`array` cast to the canonical float32 type; SourceDataError when a float64 value is not a float32."""
    out = array.cast(target, safe=False)
    wide = float_values(array)
    if wide.dtype == np.float64 and not np.array_equal(float_values(out).astype(np.float64), wide, equal_nan=True):
        raise SourceDataError(
            f"{what} holds float64 values that float32 (the bundle's vector type) cannot hold exactly; "
            "store the column as float32, or back up with --allow-lossy to round them"
        )
    return out


def to_canonical(
    batch: pa.RecordBatch,
    columns: Columns,
    schema: pa.Schema,
    table: str,
    start: int,
    *,
    round_float64: bool = False,
) -> pa.RecordBatch:
    """The canonical batch (of `schema`) of `batch`, read from `table` at row position `start` (the ids of
    a table without an id column). Raises SourceDataError for a null id, a float64 vector value float32
    cannot hold (unless `round_float64`) or a metadata value with no JSON form."""
    n = batch.num_rows
    out: dict[str, pa.Array] = {}
    if columns.id is None:
        out[ID] = pa.array(np.arange(start, start + n, dtype=np.int64)).cast(pa.string())
    else:
        ids = batch.column(columns.id)
        if ids.null_count:
            raise SourceDataError(f"LanceDB table {table!r}: {ids.null_count} rows have a null id ({columns.id!r})")
        out[ID] = ids if ids.type == pa.string() else pc.cast(ids, pa.string())
    for name, column in columns.vectors:
        target = schema.field(dense_column(name)).type
        array = batch.column(column)
        if array.type != target:
            what = f"LanceDB table {table!r}: vector column {column!r}"
            array = array.cast(target, safe=False) if round_float64 else _narrow(array, target, what)
        out[dense_column(name)] = array
    for role, text_column in ((DOCUMENT, columns.document), (URI, columns.uri)):
        if text_column is None:
            out[role] = pa.nulls(n, pa.string())
        else:
            text = batch.column(text_column)
            out[role] = text if text.type == pa.string() else text.cast(pa.string())
    out[METADATA] = _metadata(batch, columns, table, out[ID])
    return pa.RecordBatch.from_arrays([out[f.name] for f in schema], schema=schema)


def _metadata(batch: pa.RecordBatch, columns: Columns, table: str, ids: pa.Array) -> pa.Array:
    keys = columns.metadata
    base = batch.column(columns.json) if columns.json else None
    if not keys:
        if base is None:
            return pa.nulls(batch.num_rows, pa.string())
        return base if base.type == pa.string() else base.cast(pa.string())
    ready = []
    for key in keys:
        try:
            ready.append(to_json_ready(batch.column(key)))
        except ValueError as exc:
            raise SourceDataError(f"LanceDB table {table!r}: column {key!r}: {exc}") from None
    if base is None or not base.null_count < len(base):
        return metadata_texts(keys, ready)
    return metadata_rows(keys, ready, base, table, columns.json or "", ids)


def metadata_rows(
    keys: Sequence[str], ready: Sequence[pa.Array], base: pa.Array | None, table: str, column: str, ids: pa.Array
) -> pa.Array:
    """:func:`.jsontext.metadata_texts` record by record (a dict and ``metadata_json`` each), merged into the
    canonical JSON of `base` (a restore's ``metadata`` column, beside columns added since)."""
    values = [array.to_pylist() for array in ready]
    texts = base.to_pylist() if base is not None else [None] * len(ids)
    cells: list[str | None] = []
    try:
        for i, row in enumerate(zip(*values, strict=True)):
            record = {k: v for k, v in zip(keys, row, strict=True) if v is not None}
            text = texts[i]
            if text is not None:
                merged = json.loads(text)
                clash = sorted(set(merged) & set(record))
                if clash:
                    raise SourceDataError(
                        f"LanceDB table {table!r}: record {ids[i].as_py()!r} has metadata key(s) {clash} both in "
                        f"column {column!r} and as columns"
                    )
                merged.update(record)
                record = merged
            cells.append(metadata_json(record))
    except (TypeError, ValueError) as exc:  # a lone surrogate, say
        raise SourceDataError(f"LanceDB table {table!r}: metadata cannot be backed up as JSON: {exc}") from None
    return pa.array(cells, pa.string())


class TableBatches:
    """Canonical batches (after the plan's transform) -> batches of the planned table's schema."""

    def __init__(self, plan: TablePlan, collection: str) -> None:
        self.plan = plan
        self.collection = collection
        self.vectors = {column: name for name, column in plan.columns.vectors}

    def convert(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The table's batch for canonical `batch`. Raises UnsupportedFeatureError naming the record for
        a vector holding NaN (LanceDB's writer refuses it, or turns it into null), an id the id column's
        type cannot hold exactly, or metadata that does not fit the table's columns."""
        plan, columns = self.plan, self.plan.columns
        ids = batch.column(ID)
        arrays: dict[str, pa.Array] = {}
        if columns.metadata:
            arrays.update(self._metadata_columns(batch, ids))
        for f in plan.schema:
            if f.name == columns.id:
                arrays[f.name] = self._ids(ids, f.type)
            elif f.name in self.vectors:
                arrays[f.name] = self._vector(batch, ids, self.vectors[f.name], f.type)
            elif f.name in (columns.document, columns.uri):
                text = batch.column(DOCUMENT if f.name == columns.document else URI)
                arrays[f.name] = text if text.type == f.type else text.cast(f.type)
            elif f.name == columns.json and f.name not in arrays:  # the canonical JSON as it is
                text = batch.column(METADATA)
                arrays[f.name] = text if text.type == f.type else text.cast(f.type)
        return pa.RecordBatch.from_arrays([arrays[f.name] for f in plan.schema], schema=plan.schema)

    def _metadata_columns(self, batch: pa.RecordBatch, ids: pa.Array) -> dict[str, pa.Array]:
        """The metadata columns (and the JSON column, with what they did not take) of a batch: parsed by
        Arrow's JSON reader, one line per record, when every key is a column; record by record otherwise
        (a JSON column beside them, or text Arrow refuses: then the refusal names the record)."""
        plan, columns = self.plan, self.plan.columns
        fields = [plan.schema.field(name) for name in columns.metadata]
        texts = batch.column(METADATA)
        if columns.json is None:
            lines = "\n".join(texts.fill_null("{}").to_pylist()).encode()
            wanted = pa.schema([pa.field(f.name, json_type(f.type)) for f in fields])
            try:
                parsed = pa_json.read_json(
                    pa.BufferReader(lines),
                    read_options=pa_json.ReadOptions(use_threads=False, block_size=max(len(lines), 1) + 1),
                    parse_options=pa_json.ParseOptions(explicit_schema=wanted, unexpected_field_behavior="error"),
                )
            except (pa.ArrowException, ValueError):
                pass  # the records say what: below
            else:
                if parsed.num_rows == batch.num_rows:
                    return {f.name: self._column(f, parsed.column(f.name).combine_chunks()) for f in fields}
        records = [None if t is None else json.loads(t) for t in texts.to_pylist()]
        out: dict[str, pa.Array] = {}
        for f in fields:
            cells = [None if d is None else d.pop(f.name, None) for d in records]
            out[f.name] = self._column(f, self._built(f, cells))
        if columns.json is not None:  # what the metadata columns did not take stays JSON (null when none is left)
            out[columns.json] = pa.array([None if d is None else metadata_json(d) for d in records], pa.string())
            return out
        for i, rest in enumerate(records):
            if rest:
                raise UnsupportedFeatureError(
                    f"record {ids[i].as_py()!r} of collection {self.collection!r}: metadata key(s) "
                    f"{sorted(rest)} are not columns of the LanceDB table"
                )
        return out

    def _ids(self, ids: pa.Array, typ: pa.DataType) -> pa.Array:
        if ids.type == typ:
            return ids
        try:
            out = pc.cast(ids, typ)
            exact = pc.cast(out, pa.string()).equals(ids)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out, exact = None, False
        if exact and out is not None:
            return out
        bad = next((i for i in ids.to_pylist() if not (i.lstrip("-").isdigit() and str(int(i)) == i)), ids[0].as_py())
        raise UnsupportedFeatureError(
            f"record {bad!r} of collection {self.collection!r}: the LanceDB table's id column "
            f"{self.plan.columns.id!r} holds {typ}, which cannot hold that id exactly"
        )

    def _vector(self, batch: pa.RecordBatch, ids: pa.Array, name: str, typ: pa.DataType) -> pa.Array:
        array = batch.column(dense_column(name))
        nan = nan_rows(array)
        if nan.any():
            row = int(np.flatnonzero(nan)[0])
            raise UnsupportedFeatureError(
                f"record {ids[row].as_py()!r} of collection {self.collection!r}: vector {name!r} holds NaN, "
                "which LanceDB's writer refuses (or turns into a null vector)"
            )
        return array if array.type == typ else array.cast(typ)

    def _built(self, f: pa.Field, cells: list[Any]) -> pa.Array:
        try:
            return pa.array(cells, json_type(f.type))
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            raise self._unfit(f, exc) from None

    def _column(self, f: pa.Field, ready: pa.Array) -> pa.Array:
        try:
            return from_json_ready(ready, f.type)
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            raise self._unfit(f, exc) from None

    def _unfit(self, f: pa.Field, exc: BaseException) -> UnsupportedFeatureError:
        return UnsupportedFeatureError(
            f"collection {self.collection!r}: LanceDB column {f.name!r} ({f.type}) cannot hold a value of the "
            f"bundle's metadata: {first_line(exc)}"
        )


def nan_rows(array: pa.Array) -> np.ndarray:
    """Which records of a vector column (fixed-size lists, or lists of them) hold a NaN."""
    if pa.types.is_fixed_size_list(array.type):
        floats = float_values(array)
        if not np.isnan(floats).any():  # the common case, without a copy
            return np.zeros(len(array), dtype=bool)
        nan = np.isnan(floats.reshape(len(array), array.type.list_size)).any(axis=1)
        return nan & array.is_valid().to_numpy(zero_copy_only=False)
    offsets = array.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    inner = nan_rows(array.values.slice(start, end - start))
    rows = np.zeros(len(array), dtype=bool)
    parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
    rows[parents[inner]] = True
    return rows


class Converted:
    """The table's batches for a restore's canonical `batches` (the plan's transform, then
    :class:`TableBatches`), read through :meth:`reader` by LanceDB or Lance: counts the rows given
    (``written``) and keeps the exception a batch raised (``failed``), which they turn into a RuntimeError:
    the caller raises it as it was."""

    def __init__(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> None:
        self.plan = plan
        self.table: TablePlan = plan.extra["table"]
        self._batches = batches
        self.written = 0
        self.failed: BaseException | None = None

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.table.schema, self._stream())

    def _stream(self) -> Iterator[pa.RecordBatch]:
        writer = TableBatches(self.table, self.plan.target.name)
        try:
            for batch in self._batches:
                out = writer.convert(self.plan.transform(batch))
                self.written += out.num_rows
                yield out
        except BaseException as exc:
            self.failed = exc
            raise


def canonical(
    database: Database,
    dataset: DatasetDescription,
    table: Any,
    columns: Columns,
    reader: Iterable[pa.RecordBatch],
    expected: int,
    *,
    unique: bool,
    lossy: bool,
) -> Iterator[pa.RecordBatch]:
    """The canonical batches of `reader` (LanceDB's batches of `table`), which must hold `expected` rows
    (SourceDataError otherwise); with `unique`, the ids are then proven unique (a whole version's export:
    :mod:`.ids`). `lossy`: float64 vectors are rounded to float32 instead of refused."""
    name = dataset.name
    hashes: list[np.ndarray] = []  # of the ids, for the unique-id proof
    start = 0
    batches = iter(reader)
    while True:
        with database.errors("read the table", name):
            batch = next(batches, None)
        if batch is None:
            break
        if not batch.num_rows:
            continue
        out = to_canonical(batch, columns, dataset.schema, name, start, round_float64=lossy)
        if unique and columns.id is not None:
            hashes.append(ids.hashes(out.column(ID).to_pylist()))
        start += out.num_rows
        yield out
    if start != expected:
        version = (dataset.config.native or {}).get("version")
        raise SourceDataError(
            f"LanceDB table {name!r} in {database.where}: version {version} gave {start} rows, {expected} were counted"
        )
    if hashes and columns.id is not None:
        ids.check_unique(database, table, columns.id, name, np.concatenate(hashes))
