"""The writing of a restore into pgvector: the table made (:func:`prepare`), the binary COPY of canonical
batches (:func:`copy_rows`), and the load schema a partitioned restore's workers write into at once.

A partitioned restore (``restore --workers``, :mod:`aibackup.partitioned_restore`) cannot write into the
target from several sessions and still publish it in one transaction, so it loads a copy of the table out
of sight: :func:`begin_load` makes a **load schema** ``aibackup_load_<12 hex>`` holding the table as a
one-process restore makes it (its columns and primary key, same name); each worker converts its records
as a one-process restore does (binary COPY into a temporary staging table, the INSERT … SELECT) into that
table, in a transaction of its own (:func:`load_partition`). The driver then publishes it in one
transaction (:func:`publish`): the table moved into the target's schema (an overwritten table dropped
first), or its rows copied into an empty table that create mode keeps; then constraints, indexes,
comments and sequence positions, ``ANALYZE``, the row count, and the load schema dropped. Until then the
target is as it was.

Each worker's session carries the load schema's name as its ``application_name``, so that a restore that
gives up ends the sessions still writing (a cancelled task on a remote cluster) before it drops the schema
(a DROP would wait for their transactions). A restore killed outright leaves the load schema behind: it
holds nothing of the target's, and its comment says it can be dropped.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from aibackup.connectors import postgres
from aibackup.connectors.base import ImportPlan
from aibackup.connectors.pgvector import catalog, cells, codec, restore
from aibackup.connectors.pgvector import langchain as pg_langchain
from aibackup.connectors.pgvector.catalog import qualified, quote
from aibackup.errors import UnsupportedFeatureError, UsageError

#: Rows per binary COPY FROM message of a restore.
WRITE_ROWS = 5000
#: The prefix of a load schema's name (and of its writers' application_name).
LOAD_PREFIX = "aibackup_load_"


def copy_rows(cur: Any, plan: ImportPlan, into: str, columns: list[str], batches: Iterable[pa.RecordBatch]) -> int:
    """Write `batches` (canonical; the plan's transform applied here) into table `into` (its `columns`)
    with one binary COPY; returns the rows written. A record the target cannot hold raises what
    :func:`.cells.cells` raises."""
    written = 0
    with cur.copy(f"COPY {into} ({', '.join(map(quote, columns))}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(codec.HEADER)
        for batch in batches:
            mapped = plan.transform(batch)
            for start in range(0, mapped.num_rows, WRITE_ROWS):
                part = mapped.slice(start, WRITE_ROWS)
                copy.write(codec.encode_rows(cells.cells(plan, part, check_only=False)))
                written += part.num_rows
        copy.write(codec.TRAILER)
    return written


def create_extension(conn: Any, database: str, where: str) -> None:
    """CREATE EXTENSION vector; UsageError when this user cannot."""
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except Exception as exc:
        raise UsageError(
            f"database {database!r} on {where} lacks the pgvector extension (vector) "
            f"and this user cannot create it ({postgres.message(exc)}): CREATE EXTENSION vector as its owner"
        ) from None


def prepare(conn: Any, plan: ImportPlan, schema: str, table: str, where: str) -> bool:
    """Create the table (dropping it first for overwrite); True when this restore created it."""
    if kept(conn, plan, schema, table, where):
        return False
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    create_table(conn, plan, schema, table)
    return True


def kept(conn: Any, plan: ImportPlan, schema: str, table: str, where: str) -> bool:
    """Whether the restore writes into the table that exists (create into an empty one, merge; proven to
    have the columns it writes), or makes its own: none is there, or overwrite just dropped it."""
    target = qualified(schema, table)
    if catalog.scalar(conn, "SELECT to_regclass(%s)", [target]) is None:
        return False
    if plan.mode == "overwrite":
        conn.execute(f"DROP TABLE {target}")
        return False
    check_columns(conn, plan, schema, table, where)
    return True


def create_table(conn: Any, plan: ImportPlan, schema: str, table: str) -> None:
    """The table a one-process restore makes: the recorded definition of a pgvector bundle, else the layout."""
    native = plan.target.config.native
    if native is not None:
        conn.execute(catalog.create_statement(native, schema, table))
    else:
        conn.execute(restore.layout_sql(plan.target.config, qualified(schema, table)))


def check_columns(conn: Any, plan: ImportPlan, schema: str, table: str, where: str) -> None:
    """An existing table a restore writes into must have the columns it writes, of the same types."""
    native = catalog.definition(conn, schema, table)
    have = {c["name"]: c["type"] for c in native["columns"]}
    want = restore.planned_columns(plan)
    for name, sql_type in want.items():
        if have.get(name) != sql_type:
            raise UnsupportedFeatureError(
                f"table {plan.target.name} in {where} exists with other columns ({name}: "
                f"{have.get(name, 'missing')}, the bundle needs {sql_type}): --mode overwrite replaces it"
            )


def begin_load(conn: Any, plan: ImportPlan) -> dict[str, Any]:
    """Make the load schema of `plan` and, in it, the table as a one-process restore makes it (committed,
    so the workers' sessions see it); its description for the workers and :func:`publish`."""
    name = LOAD_PREFIX + secrets.token_hex(6)
    table = str(plan.extra["table"])
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA {quote(name)}")
        note = f"aibackup: the rows of a restore of {plan.target.name} in progress; drop it if no restore runs"
        conn.execute(f"COMMENT ON SCHEMA {quote(name)} IS {catalog.literal(note)}")
        create_table(conn, plan, name, table)
    return {"name": name, "table": table}


def load_table(load: Mapping[str, Any]) -> str:
    return qualified(str(load["name"]), str(load["table"]))


def load_partition(
    conn: Any,
    plan: ImportPlan,
    load: Mapping[str, Any],
    number: int,
    batches: Iterable[pa.RecordBatch],
    insert: Callable[[str, str], str],
) -> int:
    """A worker's rows of partition `number` into the load table, converted as a one-process restore
    converts them (COPY into a temporary staging table, then `insert` (staging, table): the INSERT …
    SELECT), in one transaction that also leaves a marker table ``done_<number>`` holding the row count. A
    partition run again after its worker died (its first run committed) finds the marker and writes
    nothing: `batches` are still read to the end (the caller digests them). Returns the rows written."""
    conn.execute(f"SET application_name = {catalog.literal(str(load['name']))}")
    into = load_table(load)
    done = qualified(str(load["name"]), f"done_{number:04d}")
    with conn.transaction(), conn.cursor() as cur:
        if catalog.scalar(cur, "SELECT to_regclass(%s)", [done]) is not None:
            for _ in batches:
                pass
            return int(catalog.scalar(cur, f"SELECT rows FROM {done}"))
        staging, columns = restore.staging(conn, plan, plan.target.config.native is not None, into=into)
        written = copy_rows(cur, plan, staging, columns, batches)
        if staging != into:
            cur.execute(insert(staging, into))
        cur.execute(f"CREATE TABLE {done} AS SELECT {written}::bigint AS rows")
    return written


def publish(conn: Any, plan: ImportPlan, load: Mapping[str, Any], where: str, keys: list[str]) -> bool:
    """In the driver's transaction: the loaded table becomes the target: moved into the target's schema
    (``SET SCHEMA``, with its primary key and owned sequences; an overwritten table dropped first), or,
    into an empty table of the same columns that create mode keeps, its rows copied; into the table a
    merge finds, its rows upserted on the primary key `keys` (:func:`.restore.merge_sql`). True when the
    table is the loaded one (its constraints and indexes are then made after)."""
    schema, table = plan.extra["schema"], plan.extra["table"]
    if kept(conn, plan, schema, table, where):
        if plan.mode == "merge":
            refuse_moving_rows(conn, plan, schema, load_table(load), "id", "s.collection_id")
            conn.execute(restore.merge_sql(plan, keys, load_table(load), qualified(schema, table)))
            return False
        native = plan.target.config.native
        names = ", ".join(map(quote, restore.planned_columns(plan)))
        overriding = catalog.overriding(native) if native is not None else ""
        target = qualified(schema, table)
        conn.execute(f"INSERT INTO {target} ({names}){overriding} SELECT {names} FROM {load_table(load)}")
        return False
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    conn.execute(f"ALTER TABLE {load_table(load)} SET SCHEMA {quote(schema)}")
    return True


def refuse_moving_rows(conn: Any, plan: ImportPlan, schema: str, rows: str, id_sql: str, collection_sql: str) -> None:
    """A merge into langchain-postgres's embedding table of ids another collection holds is refused (in the
    restore's transaction: nothing is written), for the upsert would move those rows out of it. `rows`: the
    table of the rows to merge, `id_sql` and `collection_sql` their id and collection uuid (as SQL on ``s``).
    Nothing to check for any other table."""
    if plan.extra["table"] != pg_langchain.EMBEDDINGS or plan.target.config.native is None:
        return
    target = qualified(schema, pg_langchain.EMBEDDINGS)
    collections = qualified(schema, pg_langchain.COLLECTIONS)
    row = conn.execute(pg_langchain.held_elsewhere_sql(target, collections, rows, id_sql, collection_sql)).fetchone()
    if row is not None:
        holder = f"collection {row[0]!r}" if row[0] else "rows of no collection"
        raise UnsupportedFeatureError(
            f"cannot merge collection {plan.target.name!r} into {target}: {holder} holds records of the same ids "
            "(the table's ids are unique across its collections, so the merge would move them out of it); "
            "nothing was written"
        )


def abandon_load(conn: Any, load: Mapping[str, Any]) -> None:
    """End the sessions still writing into the load schema, then drop it with everything in it."""
    with contextlib.suppress(Exception):  # another role's session: the DROP then waits for it
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
            "AND pid <> pg_backend_pid()",
            [str(load["name"])],
        )
    conn.execute(f"DROP SCHEMA IF EXISTS {quote(str(load['name']))} CASCADE")
