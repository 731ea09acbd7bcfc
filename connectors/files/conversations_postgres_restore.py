"""Restoring conversation records into a PostgreSQL table (``conversations+postgresql://…?table=T``): the
plan, the per-record checks and the write, in one transaction. The rules a user meets are in
:mod:`.conversations_postgres`'s docstring ("Restore into a table T")."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from aibackup.connectors.base import MODES, DatasetDescription, ImportPlan, identity
from aibackup.connectors.files.pg_layout import (
    SESSION,
    PgTable,
    canonical_rows,
    canonical_table,
    is_pg_table,
    native_rows,
    table_renamer,
)
from aibackup.connectors.files.sqlite_layout import q
from aibackup.errors import TargetNotEmptyError, UnsupportedFeatureError, UsageError

if TYPE_CHECKING:
    from aibackup.connectors.files.conversations_postgres import PostgresTable

#: The temporary table a merge copies into before it upserts (dropped at commit).
MERGE_TABLE = "aibackup_merge"


def plan(table: PostgresTable, source: DatasetDescription, mode: str) -> ImportPlan:
    """How bundle dataset `source` goes into `table`, writing nothing (rules: :mod:`.conversations_postgres`).
    Raises TargetNotEmptyError, UnsupportedFeatureError (columns that differ, a merge by position)."""
    if mode not in MODES:
        raise UsageError(f"bad mode {mode!r}: expected one of {', '.join(MODES)}")
    config = dict(source.config)
    native = is_pg_table(config)
    wanted = PgTable.from_config(config) if native else canonical_table()
    _decide(table, mode, wanted, native)
    transform: Any = identity
    notes: list[str] = []
    if native:
        old = str(config.get("table"))
        if old != table.table:
            transform = table_renamer(old, table.table)
        table.read_back_by(config.get("key"))
        notes.append(
            f"table {old!r} is recreated from its columns, types, defaults and primary key; its other "
            "constraints, indexes and triggers are not"
        )
    elif config.get("format") == "jsonl":
        notes.append("the log lines go into aibackup's canonical table layout (one row per line)")
    elif config.get("layout") == "table":
        notes.append(f"the rows of table {config.get('table')!r} go into aibackup's canonical table layout")
    target_config = wanted.config(table.schema, table.table, config.get("key") if native else None)
    target = DatasetDescription(table.table, target_config, source.rows, kind="conversations")
    return ImportPlan(source, target, mode, transform=transform, notes=tuple(notes))


def _decide(table: PostgresTable, mode: str, wanted: PgTable, native: bool) -> str:
    """What a restore does to the table: "create" it, "replace" it (overwrite) or "reuse" it (an empty
    table of the bundle's columns, or merge). Raises TargetNotEmptyError / UnsupportedFeatureError."""
    existing = table.info()
    if existing is None:
        return "create"
    if mode == "overwrite":
        return "replace"
    rows = table.count()
    if mode == "create" and rows:
        raise TargetNotEmptyError(
            f"PostgreSQL {table.where} already holds {rows} rows; restore with --mode overwrite (replace it) "
            "or --mode merge (insert or replace rows), or into another table"
        )
    if existing.shape() != wanted.shape():
        raise UnsupportedFeatureError(
            f"cannot {'merge' if mode == 'merge' else 'restore'} into PostgreSQL {table.where}: its columns differ "
            "from the bundle's; use --mode overwrite or restore into another table"
        )
    if mode == "merge" and native and wanted.numbering != "primary key":
        raise UnsupportedFeatureError(
            f"cannot merge into PostgreSQL {table.where}: without a one-column integer primary key its records "
            "are numbered by position, which a merge would change; use --mode overwrite or another table"
        )
    return "reuse"


def validate(table: PostgresTable, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
    """Every row converted as `write` converts it, writing nothing; returns the rows checked."""
    native = is_pg_table(plan.source.config)
    columns = PgTable.from_config(plan.source.config).stored if native else []
    checked = 0
    for batch in batches:
        batch = plan.transform(batch)
        if native:
            native_rows(batch, columns, table.where)
        else:
            canonical_rows(batch, table.where)
        checked += batch.num_rows
    return checked


def write(table: PostgresTable, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
    """Create, replace or reuse the table per the plan's mode and copy every record, in one transaction."""
    native = is_pg_table(plan.source.config)
    wanted = PgTable.from_config(plan.source.config) if native else canonical_table()
    columns = wanted.stored
    written = 0
    with table.errors("starting a write to"):
        table.conn.execute("BEGIN")
    try:
        with table.errors("starting a write to"):
            for setting in SESSION:
                table.conn.execute(setting)
        action = _decide(table, plan.mode, wanted, native)
        with table.errors("creating"):
            if action == "replace":
                table.conn.execute(f"DROP TABLE {table.name}")
            if action != "reuse":
                # Only a missing schema is created: CREATE SCHEMA IF NOT EXISTS needs the right to create
                # schemas even where the schema is there.
                if not table.conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (table.schema,)).fetchone():
                    table.conn.execute(f"CREATE SCHEMA {q(table.schema)}")
                table.conn.execute(wanted.create_sql(table.schema, table.table))
        merge = plan.mode == "merge" and action == "reuse"
        into = q(MERGE_TABLE) if merge else table.name
        names = ", ".join(q(c.name) for c in columns)
        if merge:
            with table.errors("preparing the merge into"):
                table.conn.execute(
                    f"CREATE TEMP TABLE {into} ON COMMIT DROP AS SELECT {names} FROM {table.name} WITH NO DATA"
                )
        with (
            table.errors("copying rows into"),
            table.conn.cursor() as cursor,
            cursor.copy(f"COPY {into} ({names}) FROM STDIN") as copy,
        ):
            for batch in batches:
                batch = plan.transform(batch)
                rows = native_rows(batch, columns, table.where) if native else canonical_rows(batch, table.where)
                for row in rows:
                    copy.write_row(row)
                written += len(rows)
        if merge:
            _merge(table, wanted, names, native)
        _set_sequences(table, wanted)
        with table.errors("committing the restore of"):
            table.conn.execute("COMMIT")
    except BaseException:
        table.rollback()
        raise
    return written


def _merge(table: PostgresTable, wanted: PgTable, names: str, native: bool) -> None:
    source = f"SELECT {names} FROM {q(MERGE_TABLE)}"
    with table.errors("merging rows into"):
        if not native:
            table.conn.execute(f"DELETE FROM {table.name} t USING {q(MERGE_TABLE)} m WHERE t.id = m.id")
            table.conn.execute(f"INSERT INTO {table.name} ({names}) {source}")
            return
        override = " OVERRIDING SYSTEM VALUE" if any(c.identity == "always" for c in wanted.stored) else ""
        updates = [f"{q(c.name)} = EXCLUDED.{q(c.name)}" for c in wanted.stored if c.name not in wanted.primary_key]
        conflict = f"ON CONFLICT ({', '.join(map(q, wanted.primary_key))}) "
        conflict += f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        table.conn.execute(f"INSERT INTO {table.name} ({names}){override} {source} {conflict}")


def _set_sequences(table: PostgresTable, wanted: PgTable) -> None:
    """Identity and serial sequences continue past the largest value restored (as pg_dump's setval)."""
    for column in wanted.columns:
        if column.identity or column.serial:
            with table.errors("setting the sequences of"):
                table.conn.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), m) "
                    f"FROM (SELECT max({q(column.name)}) AS m FROM {table.name}) s WHERE m IS NOT NULL",
                    (table.name, column.name),
                )
