"""The SQL of a restore into pgvector, and what a bundle's vectors may become there (the rules are in
:mod:`.connector`'s docstring).

:func:`plan_vectors` applies pgvector's limits and the lossy rules to a bundle's vectors. A bundle from
another backend gets the layout table (:func:`layout_sql`, :func:`planned_columns`) and an HNSW index per
dense vector after the data (:func:`after_data`); a pgvector bundle gets its own table again
(:mod:`.catalog`'s DDL). The rows go through a temporary staging table of the canonical columns
(:func:`staging`) when :func:`insert_sql` (or :func:`layout_insert_sql`, for a merge) must turn them into the
target's rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.base import DatasetDescription, ImportPlan, Transform
from aibackup.connectors.pgvector import catalog
from aibackup.connectors.pgvector.catalog import qualified, quote
from aibackup.connectors.pgvector.mapping import UNNAMED_COLUMN, Columns
from aibackup.connectors.sparse import sparse_without_zeros
from aibackup.errors import UnsupportedFeatureError
from aibackup.manifests.model import DenseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import DOCUMENT, ID, METADATA, URI, dense_column

#: pgvector's limits: dimensions of a column, and of an HNSW/IVFFlat index per type.
MAX_DIM = 16000
INDEX_MAX_DIM = {"vector": 2000, "halfvec": 4000}


def plan_vectors(
    source: DatasetDescription, config: VectorsConfig, native: Mapping[str, Any] | None, allow_lossy: bool
) -> tuple[tuple[DenseVectorSpec, ...], list[str], list[str], list[Transform]]:
    """The dense vectors a restore keeps, what it drops, its notes and the steps of its transform; or
    UnsupportedFeatureError for what pgvector cannot hold (a lossy change without `allow_lossy`, too many
    dimensions, a vector named like a column of the layout)."""
    dropped: list[str] = []
    notes: list[str] = []
    steps: list[Transform] = []
    multi = [d for d in config.dense if d.multivector]
    if multi:
        feature = f"multivectors ({', '.join(d.name or 'default' for d in multi)}): pgvector has no such type"
        if not allow_lossy:
            raise UnsupportedFeatureError(f"collection {source.name}: {feature} (--allow-lossy drops them)")
        dropped.append(feature)
        drop_names = [dense_column(d.name) for d in multi]
        steps.append(lambda batch: batch.drop_columns(drop_names))
    if config.sparse and allow_lossy:
        # sparsevec keeps no explicit zero: validate_records refuses them without --allow-lossy.
        notes.append("zero values in sparse vectors are not kept (sparsevec holds none)")
        steps.append(sparse_without_zeros)
    kept = tuple(d for d in config.dense if not d.multivector)
    for spec in kept:
        if spec.size > MAX_DIM:
            raise UnsupportedFeatureError(
                f"collection {source.name}: vector {spec.name or 'default'} has {spec.size} dimensions; "
                f"pgvector holds at most {MAX_DIM}"
            )
    if native is None:
        names = [UNNAMED_COLUMN if d.name == "" else d.name for d in kept] + [s.name for s in config.sparse]
        clash = sorted(set(names) & {ID, DOCUMENT, URI, METADATA}) or sorted(n for n in names if names.count(n) > 1)
        if clash or any(d.name == UNNAMED_COLUMN for d in kept):
            bad = clash[0] if clash else UNNAMED_COLUMN
            raise UnsupportedFeatureError(
                f"collection {source.name}: vector name {bad!r} is a column name the pgvector layout uses"
            )
        for spec in kept:
            limit = INDEX_MAX_DIM["halfvec" if spec.datatype == "float16" else "vector"]
            if spec.size > limit:
                notes.append(f"no HNSW index on {spec.name or UNNAMED_COLUMN}: {spec.size} dimensions (limit {limit})")
    return kept, dropped, notes, steps


def remapping(remaps: Mapping[str, Mapping[str, str]]) -> Transform:
    """The step that points the records' foreign keys at the target's own rows (see
    :func:`.catalog.colliding_references`): `remaps` {column: {carried key: target key}}, applied to the
    canonical JSON of each record's metadata, where the column is a key."""
    pairs = [
        (f'"{column}":{json.dumps(old)}', f'"{column}":{json.dumps(new)}')
        for column, remap in remaps.items()
        for old, new in remap.items()
    ]

    def step(batch: pa.RecordBatch) -> pa.RecordBatch:
        index = batch.schema.get_field_index(METADATA)
        column = batch.column(index)
        for old, new in pairs:
            column = pc.replace_substring(column, old, new)
        return batch.set_column(index, METADATA, column)

    return step


def dense_name(spec: DenseVectorSpec) -> str:
    """The column of a dense vector: the one it was read from, else the unnamed vector's or its name."""
    return str(spec.options.get("column") or (UNNAMED_COLUMN if spec.name == "" else spec.name))


def dense_sql(spec: DenseVectorSpec) -> str:
    return f"{'halfvec' if spec.datatype == 'float16' else 'vector'}({spec.size})"


def planned_columns(plan: ImportPlan) -> dict[str, str]:
    """The columns a restore writes, with their types."""
    native = plan.target.config.native
    if native is not None:
        return {c["name"]: c["type"] for c in catalog.writable(native)}
    cfg = plan.target.config
    out = {ID: "text"}
    for d in cfg.dense:
        out[UNNAMED_COLUMN if d.name == "" else d.name] = dense_sql(d)
    for s in cfg.sparse:
        out[s.name] = "sparsevec"
    out.update({DOCUMENT: "text", URI: "text", METADATA: "jsonb"})
    return out


def layout_sql(cfg: VectorsConfig, target: str) -> str:
    """The CREATE TABLE of the layout a bundle from another backend gets."""
    lines = [f"{quote(ID)} text PRIMARY KEY"]
    for d in cfg.dense:
        lines.append(f"{quote(UNNAMED_COLUMN if d.name == '' else d.name)} {dense_sql(d)}")
    for s in cfg.sparse:
        lines.append(f"{quote(s.name)} sparsevec")
    lines += [f"{quote(DOCUMENT)} text", f"{quote(URI)} text", f"{quote(METADATA)} jsonb"]
    return f"CREATE TABLE {target} ({', '.join(lines)})"


def staging_columns(plan: ImportPlan) -> tuple[list[str], list[str]]:
    """The canonical columns a COPY writes (names) and their SQL definitions, for a staging table."""
    cfg = plan.target.config
    columns = [ID] + [dense_name(d) for d in cfg.dense] + [s.name for s in cfg.sparse]
    columns += [DOCUMENT, URI, METADATA]
    lines = [f"{quote(ID)} text"] + [f"{quote(dense_name(d))} {dense_sql(d)}" for d in cfg.dense]
    lines += [f"{quote(s.name)} sparsevec" for s in cfg.sparse]
    lines += [f"{quote(DOCUMENT)} text", f"{quote(URI)} text", f"{quote(METADATA)} jsonb"]
    return columns, lines


def staging(conn: Any, plan: ImportPlan, needed: bool, into: str | None = None) -> tuple[str, list[str]]:
    """Where the COPY writes: the target itself (a new table of the layout; `into`: the table standing
    for it), or a temporary table of the canonical columns that an INSERT … SELECT turns into the
    target's rows."""
    target = into or qualified(plan.extra["schema"], plan.extra["table"])
    columns, lines = staging_columns(plan)
    if not needed:
        return target, columns
    conn.execute(f"CREATE TEMP TABLE aibackup_staging ({', '.join(lines)}) ON COMMIT DROP")
    return "aibackup_staging", columns


def layout_insert_sql(plan: ImportPlan, staging: str, target: str) -> str:
    """The INSERT … SELECT of the staged rows into a table of the layout (an upsert for a merge)."""
    names = list(planned_columns(plan))
    select = ", ".join(f"s.{quote(n)}" for n in names)
    conflict = f"ON CONFLICT ({quote(ID)}) DO UPDATE SET " + ", ".join(
        f"{quote(n)} = EXCLUDED.{quote(n)}" for n in names if n != ID
    )
    return f"INSERT INTO {target} ({', '.join(map(quote, names))}) SELECT {select} FROM {staging} s " + (
        conflict if plan.mode == "merge" else ""
    )


def insert_sql(plan: ImportPlan, columns: Columns, staging: str, target: str) -> str:
    """The INSERT … SELECT of the staged rows into the table a pgvector bundle recorded (of `columns`),
    every column of its own type again (an upsert on its primary key for a merge)."""
    native = plan.target.config.native
    assert native is not None
    cfg = plan.target.config
    vector_columns = {dense_name(d): d for d in cfg.dense} | {s.name: s for s in cfg.sparse}
    # The metadata object gives every other column its value back (jsonb_populate_record parses
    # each with its column type's input function); the id and document are merged into it.
    pieces = [] if columns.layout else [f"coalesce(s.{quote(METADATA)}, '{{}}'::jsonb)"]
    if len(columns.id) == 1:
        pieces.append(f"jsonb_build_object({catalog.literal(columns.id[0])}, s.{quote(ID)})")
    elif columns.id:
        keys = ", ".join(f"{catalog.literal(c)}, (s.{quote(ID)}::jsonb)->{i}" for i, c in enumerate(columns.id))
        pieces.append(f"jsonb_build_object({keys})")
    if columns.document:
        pieces.append(f"jsonb_build_object({catalog.literal(columns.document)}, s.{quote(DOCUMENT)})")
    record = " || ".join(pieces) or "'{}'::jsonb"
    direct = set(vector_columns)
    if columns.layout:  # the layout's metadata and uri columns are the record's own
        direct |= {METADATA, URI}
    names, values = [], []
    json_columns = {c["name"]: c["base"] for c in native["columns"] if c["base"] == "json" or c.get("exported_as")}
    for column in catalog.writable(native):
        name = column["name"]
        names.append(quote(name))
        if name in direct:
            values.append(f"s.{quote(name)}")
        elif name in json_columns:
            values.append(f"(({record})->>{catalog.literal(name)})::{json_columns[name]}")
        else:
            values.append(f"r.{quote(name)}")
    overriding = catalog.overriding(native)
    sql = (
        f"INSERT INTO {target} ({', '.join(names)}){overriding} SELECT {', '.join(values)} FROM {staging} s "
        f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{target}, {record}) r"
    )
    if plan.mode == "merge" and native.get("id_column"):
        # No unique constraint holds the framework's ids: the rows the bundle replaces go first.
        id_column = quote(native["id_column"])
        return f"DELETE FROM {target} t USING {staging} s WHERE t.{id_column} = s.{quote(ID)}; {sql}"
    if plan.mode == "merge" and columns.id:
        updates = [n for n in names if n.strip('"') not in columns.id]
        sql += f" ON CONFLICT ({', '.join(map(quote, columns.id))}) DO UPDATE SET " + ", ".join(
            f"{n} = EXCLUDED.{n}" for n in updates
        )
    return sql


def merge_sql(plan: ImportPlan, keys: list[str], loaded: str, target: str) -> str:
    """A partitioned merge: the rows of `loaded` (a table of the planned columns, as the target's) upserted
    into `target` on its primary key `keys` (a table of the layout: the id), as :func:`insert_sql` merges;
    a framework's table without a unique id has the rows of the same ids deleted first."""
    native = plan.target.config.native
    names = list(planned_columns(plan))
    columns = ", ".join(map(quote, names))
    overriding = catalog.overriding(native) if native is not None else ""
    sql = f"INSERT INTO {target} ({columns}){overriding} SELECT {columns} FROM {loaded}"
    if native is not None and native.get("id_column"):
        id_column = quote(native["id_column"])
        return f"DELETE FROM {target} t USING {loaded} s WHERE t.{id_column} = s.{id_column}; {sql}"
    keys = keys if native is not None else [ID]
    if not keys:  # no primary key: nothing says which rows are the same, so they are added (as import_ does)
        return sql
    updates = ", ".join(f"{quote(n)} = EXCLUDED.{quote(n)}" for n in names if n not in keys)
    return f"{sql} ON CONFLICT ({', '.join(map(quote, keys))}) DO UPDATE SET {updates}"


def after_data(plan: ImportPlan, schema: str, table: str, created: bool) -> list[str]:
    """What runs after the rows are in a table this restore created: the recorded constraints, indexes and
    comments of a pgvector bundle, else an HNSW index per dense vector pgvector can index."""
    if not created:
        return []
    native = plan.target.config.native
    if native is not None:
        return catalog.after_data_statements(dict(native), schema, table)[0]
    statements = []
    target = qualified(schema, table)
    for d in plan.target.config.dense:
        kind = "halfvec" if d.datatype == "float16" else "vector"
        if d.size > INDEX_MAX_DIM[kind] or d.distance not in catalog.DISTANCE_OPCLASS:
            continue
        column = dense_name(d)
        opclass = f"{kind}_{catalog.DISTANCE_OPCLASS[d.distance]}"
        hnsw = dict(plan.target.config.hnsw or {})
        params = {k: hnsw[k] for k in ("m", "ef_construction") if hnsw.get(k)}
        with_sql = f" WITH ({', '.join(f'{k} = {int(v)}' for k, v in params.items())})" if params else ""
        name = f"{table}_{column}_idx"[:63]
        statements.append(f"CREATE INDEX {quote(name)} ON {target} USING hnsw ({quote(column)} {opclass}){with_sql}")
    return statements
