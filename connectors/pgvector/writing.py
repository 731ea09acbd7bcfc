"""The rows of a restore into pgvector: the binary COPY of canonical batches, and the load table a
partitioned restore's workers COPY into at once.

A partitioned restore (``restore --workers``, :mod:`aibackup.partitioned_restore`) cannot write into the
target from several sessions and still publish it in one transaction, so its workers write into an
**unlogged load table** of the staging columns (:func:`.restore.load_table_sql`), each into a child table
of its own in a transaction of its own (:func:`load_partition`); the driver then runs what a one-process
restore runs after its COPY (the target created or replaced, the INSERT … SELECT from the staging table,
constraints and indexes once, ``ANALYZE``, the row count) in one transaction that also drops the load
table. Until then the target is as it was.

The load table is named ``aibackup_load_<12 hex>`` in the target's schema and commented as a restore's;
each worker's session carries the same name as its ``application_name``, so that a restore that gives up
ends the sessions still writing (a cancelled task on a remote cluster) before it drops the table (a DROP
would wait for their transactions). A restore killed outright leaves the table behind: it holds nothing of
the target's, and its comment says it can be dropped.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import ImportPlan
from aibackup.connectors.pgvector import catalog, cells, codec, restore
from aibackup.connectors.pgvector.catalog import qualified, quote

#: Rows per binary COPY FROM message of a restore.
WRITE_ROWS = 5000
#: The prefix of a load table's name (and of its writers' application_name).
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


def begin_load(conn: Any, plan: ImportPlan) -> dict[str, Any]:
    """Make the load table of `plan` (committed, so the workers' sessions see it); its description."""
    schema = plan.extra["schema"]
    name = LOAD_PREFIX + secrets.token_hex(6)
    with conn.transaction():
        schema_made = catalog.scalar(conn, "SELECT to_regnamespace(%s)", [quote(schema)]) is None
        if schema_made:
            conn.execute(f"CREATE SCHEMA {quote(schema)}")
        table = qualified(schema, name)
        conn.execute(restore.load_table_sql(plan, table))
        note = f"aibackup: the rows of a restore of {plan.target.name} in progress; drop it if no restore runs"
        conn.execute(f"COMMENT ON TABLE {table} IS {catalog.literal(note)}")
    return {"schema": schema, "name": name, "schema_made": schema_made}


def load_table(load: Mapping[str, Any]) -> str:
    return qualified(str(load["schema"]), str(load["name"]))


def load_partition(
    conn: Any, plan: ImportPlan, load: Mapping[str, Any], number: int, batches: Iterable[pa.RecordBatch]
) -> int:
    """A worker's COPY of partition `number`'s `batches` into a child of the load table (``…_p<number>``,
    inheriting it: the driver's INSERT … SELECT from the load table reads every child), in one
    transaction that first empties the child: a partition run again (its worker died after it committed)
    replaces its rows instead of adding them twice."""
    conn.execute(f"SET application_name = {catalog.literal(str(load['name']))}")
    parent = load_table(load)
    child = qualified(str(load["schema"]), f"{load['name']}_p{number:04d}")
    # Made in a transaction of its own: CREATE … INHERITS locks the parent against the other workers' creates.
    conn.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {child} () INHERITS ({parent})")
    columns, _ = restore.staging_columns(plan)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"TRUNCATE {child}")
        return copy_rows(cur, plan, child, columns, batches)


def abandon_load(conn: Any, load: Mapping[str, Any]) -> None:
    """End the sessions still writing into the load table, then drop it (and the schema begin_load made,
    when nothing else is in it)."""
    with contextlib.suppress(Exception):  # another role's session: the DROP then waits for it
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
            "AND pid <> pg_backend_pid()",
            [str(load["name"])],
        )
    conn.execute(f"DROP TABLE IF EXISTS {load_table(load)} CASCADE")  # its children: nothing else inherits it
    if load.get("schema_made"):
        with contextlib.suppress(Exception):  # the restore's own table, or anything else, keeps it
            conn.execute(f"DROP SCHEMA IF EXISTS {quote(str(load['schema']))} RESTRICT")
