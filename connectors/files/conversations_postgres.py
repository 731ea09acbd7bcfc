"""Conversation logs in a PostgreSQL table (``conversations+postgresql://[USER@]HOST[:PORT]/DB?table=T``,
``&schema=S`` (default ``public``), ``&key=COLUMN``, ``&sslmode=M``; ``conversations+postgresql:///DB?
table=T&host=/socket/dir`` for a socket), through psycopg 3. The password comes from ``PGPASSWORD`` or
``~/.pgpass`` as libpq reads them, never from the URI (:mod:`aibackup.connectors.postgres`).

The SQLite source's semantics (:mod:`.conversations_sqlite`), for PostgreSQL:

Two layouts, told apart by the table's columns:

- **the table's own layout** (any table): each row is a record. ``raw`` = canonical JSON of ``{column:
  value}`` (values as :mod:`.pg_layout` documents: PostgreSQL's exact text of each value, JSON numbers and
  booleans where those are exact, bytea as ``{"base64": ...}``), ``source`` = ``"table:<table>"``,
  ``offset`` null, typed columns from the columns of those names, ``valid`` true. With a one-column
  integer primary key, ``line`` is its value and ``id`` = ``"<table>#<key>"`` (as SQLite's rowid);
  otherwise ``line`` is the row's place in the export order (1, 2, ...) and ``id`` = ``"<table>#<primary
  key>"`` (its text; several columns as a JSON array), or ``"<table>#<line>"`` for a table without one.
  The config keeps the table's definition: every column's name, type (``format_type``), nullability,
  default, identity, generated expression, collation, and the primary key; a restore recreates it.
- **aibackup's canonical layout**, the table a log folder (or a SQLite bundle) restores into: exactly the
  columns ``id text PRIMARY KEY, source text, line bigint, offset bigint, timestamp timestamptz, session_id,
  user_id, model text, cost double precision, input, output, messages, extra text, raw bytea, valid
  boolean``. Its rows are exported back as they are (by source and line), always in full, with the
  per-file summary (bytes, lines, sha256) of the files they came from. PostgreSQL text cannot hold the
  NUL character: a record holding one in a text column is refused before anything is written.

Every export runs in one ``REPEATABLE READ, READ ONLY`` transaction (one snapshot: the count, the mark and
the rows agree) and streams the rows through a server-side cursor, 2000 rows a fetch. Export order: by
the high-water mark column (nulls first), then the primary key (or, without one, the row's text).

High-water mark (own layout): the column ``?key=COLUMN`` (any type PostgreSQL can order), by default the
primary key when it is one integer column filled from a sequence (identity or serial). The state records
its largest value (as text), the rows (all, and those whose key is null) and a sha256 of the rows holding
the largest value. Rows with a larger value are new. An incremental run sees only inserts: **updates and
deletes at or below the mark are not seen** (except what the checks below catch); the next full backup
does. A full export happens instead (with a note) when the table's definition changed, when the rows at
or below the mark are not as many as recorded (deletes, or inserts below the mark: a sequence value
committed late), when rows with a null key came or went, or when the rows at the mark changed. A table
with no mark column (no integer identity/serial key, no ``?key=``) is backed up in full every time.

Restore into a table T (schema ``?schema=``, created if missing): a bundle of this layout recreates the
table from its recorded definition (its other constraints, indexes and triggers are not in the bundle;
user-defined types must exist in the target database) and copies every row with ``COPY … FROM STDIN``
(generated columns are computed again; identity and serial sequences are set past the largest value,
their other options are not kept);
ids and sources then name T. Any other bundle goes into the canonical layout. Modes: ``create`` refuses
a table holding rows and writes into an existing empty one only when its columns are the bundle's (it
never drops a table), ``overwrite`` drops and recreates the table, ``merge`` keeps the table (its columns
must match) and replaces rows with the same primary key (own layout: needs a one-column integer key,
since records numbered by position would shift) or id (canonical). The whole import is one
transaction: a failure leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import DatasetDescription, ExportState, Location
from aibackup.connectors.files.conversation_records import BATCH_ROWS, FileSummaries, Rows, typed_fields
from aibackup.connectors.files.pg_layout import (
    CANONICAL_COLUMNS,
    KINDS,
    SESSION,
    PgColumn,
    PgTable,
    qualified,
    record_id,
    value_json,
)
from aibackup.connectors.files.sqlite_layout import q, sha_of
from aibackup.connectors.postgres import connect, errors
from aibackup.errors import (
    AibackupError,
    DatasetNotFoundError,
    SourceDataError,
    UnsupportedFeatureError,
    UsageError,
)
from aibackup.manifests.vectors import canonical_json

TABLE_KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), COALESCE(b.typname, t.typname), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN a.attcollation <> t.typcollation THEN
         CASE WHEN cn.nspname = 'pg_catalog' THEN '' ELSE quote_ident(cn.nspname) || '.' END || quote_ident(co.collname)
       END,
       a.attcollation <> 0,
       pg_get_serial_sequence(%(table)s, a.attname) IS NOT NULL
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
PRIMARY_KEY_SQL = """
SELECT a.attname FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord
"""


class PostgresTable:
    """One table of a PostgreSQL database, as a source or a restore target (see the module docstring)."""

    def __init__(self, location: Location, *, create: bool) -> None:
        self.location = location
        self.table = location.params["table"]
        self.schema = location.params.get("schema") or "public"
        self.name = qualified(self.schema, self.table)
        self.where = location.display()
        self.create = create
        self.conn = connect(location)
        self.states: dict[str, ExportState] = {}
        #: After a restore is planned: the mark column the bundle was exported by, so that the target is
        #: read back in the same order (and numbered the same way) as the source was.
        self._bundle_key: tuple[str | None] | None = None

    def read_back_by(self, key: str | None) -> None:
        """Read this table (a restore target) by the bundle's mark column `key`, as its source was read."""
        self._bundle_key = (key,)

    def errors(self, action: str) -> AbstractContextManager[None]:
        """psycopg's exceptions as one-line errors: "<action> table T in <store>: <why>"."""
        return errors(self.location, action, self.table)

    def close(self) -> None:
        self.conn.close()

    def rollback(self) -> None:
        """End the transaction. A failed rollback (the connection is gone) leaves nothing behind and must
        not hide the error that led here, so it is not raised."""
        with contextlib.suppress(Exception):
            self.conn.execute("ROLLBACK")

    # --- the table -----------------------------------------------------------------------------------------

    def info(self) -> PgTable | None:
        """The table's definition, None when it does not exist; refuses what is not a table."""
        with self.errors("reading the definition of"):
            found = self.conn.execute(
                "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (self.schema, self.table),
            ).fetchone()
            if found is None:
                return None
            oid, relkind = found
            if relkind not in ("r", "p"):
                what = TABLE_KINDS.get(relkind, f"a relation of kind {relkind!r}")
                raise UnsupportedFeatureError(f"PostgreSQL {self.where} is a {what}: only tables are backed up")
            rows = self.conn.execute(COLUMNS_SQL, {"table": self.name, "oid": oid}).fetchall()
            key = tuple(r[0] for r in self.conn.execute(PRIMARY_KEY_SQL, (oid,)).fetchall())
        columns = []
        for name, type_, base, notnull, default, ident, generated, collation, collatable, owned in rows:
            serial = bool(owned) and not ident and str(default or "").startswith("nextval(")
            columns.append(
                PgColumn(
                    name=name,
                    type=type_,
                    kind=KINDS.get(base, "text"),
                    nullable=not notnull,
                    default=None if serial else default,
                    identity={"a": "always", "d": "by default"}.get(ident, ""),
                    generated={"s": "stored", "v": "virtual"}.get(generated, ""),
                    serial=serial,
                    collation=collation,
                    collatable=bool(collatable),
                )
            )
        return PgTable(tuple(columns), key)

    def require(self) -> PgTable:
        info = self.info()
        if info is None:
            raise DatasetNotFoundError(
                f"table {self.table!r} not found in schema {self.schema!r} of PostgreSQL {self.where}"
            )
        return info

    def count(self) -> int:
        with self.errors("counting the rows of"):
            row = self.conn.execute(f"SELECT count(*) FROM {self.name}").fetchone()
        return int(row[0]) if row else 0

    def key_of(self, info: PgTable) -> PgColumn | None:
        """The high-water mark column: the bundle's (a restore reads back as it exported), ``?key=``, or
        the default (module docstring); UsageError when ``?key=`` names no column."""
        if self._bundle_key is not None:
            name = self._bundle_key[0]
        else:
            name = self.location.params.get("key") or info.default_key()
        if name is None:
            return None
        column = info.column(name)
        if column is None:
            raise UsageError(f"table {self.table!r} of PostgreSQL {self.where} has no column {name!r} (?key=)")
        return column

    def config(self, info: PgTable) -> dict[str, Any]:
        key = None if info.canonical else self.key_of(info)
        return info.config(self.schema, self.table, key.name if key else None)

    def describe(self) -> DatasetDescription:
        info = self.require()
        return DatasetDescription(self.table, self.config(info), self.count(), kind="conversations")

    # --- reading ---------------------------------------------------------------------------------------------

    def export(self, since: Mapping[str, Any] | None) -> Iterator[pa.RecordBatch]:
        """The table's records (own layout: past the high-water mark `since` when it still holds) in one
        read-only snapshot; leaves the ExportState in ``states[table]``."""
        with self.errors("starting a read of"):
            self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            with self.errors("starting a read of"):
                for setting in SESSION:
                    self.conn.execute(setting)
            info = self.require()
            if info.canonical:
                yield from self._export_canonical(info, since)
            else:
                yield from self._export_rows(info, since)
        finally:
            self.rollback()

    def _order(self, info: PgTable, key: PgColumn | None) -> str:
        """ORDER BY: the mark column (nulls first), then the primary key, or the row's text without one."""
        terms = []
        if key is not None:
            terms.append(key.ordered(self.name) + (" NULLS FIRST" if key.nullable else ""))
        if info.primary_key:
            if [key.name if key else None] != list(info.primary_key):
                terms += [c.ordered(self.name) for n in info.primary_key if (c := info.column(n)) is not None]
        else:
            terms.append(f'ROW({", ".join(q(n) for n in info.names)})::text COLLATE "C"')
        return ", ".join(terms)

    def _select(self, info: PgTable) -> str:
        return f"SELECT {', '.join(q(n) + '::text' for n in info.names)} FROM {self.name}"

    def _check_orderable(self, key: PgColumn) -> None:
        try:
            with self.errors("ordering the high-water mark column of"):
                self.conn.execute(f"SELECT 1 FROM {self.name} ORDER BY {key.ordered(self.name)} LIMIT 0")
        except AibackupError as exc:
            if "ordering operator" in str(exc):
                raise UsageError(
                    f"column {key.name!r} ({key.type}) of table {self.table!r} cannot be a high-water mark: "
                    "PostgreSQL cannot order its values; name another with ?key=COLUMN"
                ) from None
            raise

    def _mark(self, info: PgTable, key: PgColumn) -> dict[str, Any]:
        """The high-water mark now: {mark, rows, nulls, last_sha256}."""
        with self.errors("reading the high-water mark of"):
            total, nulls = self.conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE {q(key.name)} IS NULL) FROM {self.name}"
            ).fetchone() or (0, 0)
            top = self.conn.execute(
                f"SELECT {q(key.name)}::text FROM {self.name} WHERE {q(key.name)} IS NOT NULL "
                f"ORDER BY {key.ordered(self.name)} DESC LIMIT 1"
            ).fetchone()
        mark = None if top is None else top[0]
        return {"mark": mark, "rows": int(total), "nulls": int(nulls), "last_sha256": self._last_sha(info, key, mark)}

    def _last_sha(self, info: PgTable, key: PgColumn, mark: str | None) -> str | None:
        """sha256 of the rows holding the mark value (raw JSON, in export order)."""
        if mark is None:
            return None
        digest = hashlib.sha256()
        at_mark = f"{key.ordered(self.name)} = CAST(%s AS {key.type})"
        # A server-side cursor: a mark column with many equal values (a date) may hold many rows.
        with self.errors("reading the high-water mark of"), self.conn.cursor(name="aibackup_mark") as cursor:
            cursor.execute(f"{self._select(info)} WHERE {at_mark} ORDER BY {self._order(info, key)}", (mark,))
            for texts in cursor:
                digest.update(self._raw(info, texts)[1] + b"\n")
        return digest.hexdigest()

    def _resume(
        self, info: PgTable, key: PgColumn | None, since: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(the recorded state to continue after, or None for a full export; a note saying why it is full)."""
        if not since or since.get("format") != "postgresql" or since.get("table") != self.table:
            return None, None
        if since.get("schema") != self.schema:
            return None, None
        if key is None:
            return None, (
                f"table {self.table!r} has no high-water mark column (an integer identity or serial primary key, "
                "or ?key=COLUMN): full backup"
            )
        if since.get("key") != key.name:
            return None, f"the high-water mark column of table {self.table!r} is now {key.name!r}: full backup"
        if since.get("definition_sha256") != sha_of(canonical_json(info.definition())):
            return None, f"the definition of table {self.table!r} changed since the last backup: full backup"
        mark = since.get("mark")
        with self.errors("checking the high-water mark of"):
            nulls = self.conn.execute(f"SELECT count(*) FROM {self.name} WHERE {q(key.name)} IS NULL").fetchone()
            below = (
                self.conn.execute(
                    f"SELECT count(*) FROM {self.name} WHERE {key.ordered(self.name)} <= CAST(%s AS {key.type})",
                    (mark,),
                ).fetchone()
                if mark is not None
                else (0,)
            )
        recorded_rows, recorded_nulls = int(since.get("rows", -1)), int(since.get("nulls", -1))
        same = (
            nulls is not None
            and below is not None
            and int(nulls[0]) == recorded_nulls
            and int(below[0]) == recorded_rows - recorded_nulls
            and self._last_sha(info, key, mark) == since.get("last_sha256")
        )
        if not same:
            return None, (
                f"rows of table {self.table!r} at or below the high-water mark were deleted, replaced or added "
                "since the last backup: full backup"
            )
        return dict(since), None

    def _raw(self, info: PgTable, texts: Iterable[str | None]) -> tuple[dict[str, Any], bytes]:
        obj = {c.name: value_json(c.kind, t) for c, t in zip(info.columns, texts, strict=True)}
        return obj, canonical_json(obj).encode("utf-8")

    def _export_rows(self, info: PgTable, since: Mapping[str, Any] | None) -> Iterator[pa.RecordBatch]:
        key = self.key_of(info)
        if key is not None:
            self._check_orderable(key)
        resume, note = self._resume(info, key, since)
        if key is not None:
            state: dict[str, Any] = self._mark(info, key)
        else:
            state = {"mark": None, "rows": self.count(), "nulls": 0, "last_sha256": None}
        where, args = "", []
        if resume is not None and key is not None:
            if resume.get("mark") is None:
                where = f"WHERE {q(key.name)} IS NOT NULL"
            else:
                where, args = f"WHERE {key.ordered(self.name)} > CAST(%s AS {key.type})", [resume["mark"]]
        by_key = info.numbering == "primary key"
        position = int(resume["rows"]) if resume is not None else 0
        source = f"table:{self.table}"
        out = Rows()
        exported = 0
        for page in self._pages(f"{self._select(info)} {where} ORDER BY {self._order(info, key)}", args):
            for texts in page:
                position += 1
                obj, raw = self._raw(info, texts)
                pk = [obj[n] for n in info.primary_key]
                line = int(pk[0]) if by_key else position
                typed, extra = typed_fields(obj, messages_text=True)
                out.add(
                    {
                        "id": record_id(self.table, pk) if pk else f"{self.table}#{line}",
                        "source": source,
                        "line": line,
                        "offset": None,
                        **typed,
                        "extra": extra,
                        "raw": raw,
                        "valid": True,
                    }
                )
                if out.full:
                    yield out.flush()
            exported += len(page)
            if len(out):
                yield out.flush()
        # One snapshot: the rows read are exactly the rows counted (all, or those past the mark).
        expected = state["rows"] - (int(resume["rows"]) if resume is not None else 0)
        if exported != expected:
            raise SourceDataError(
                f"table {self.table!r}: {exported} rows exported but {expected} counted; nothing was committed"
            )
        definition_sha = sha_of(canonical_json(info.definition()))
        mark: dict[str, Any] = {"format": "postgresql", "schema": self.schema, "table": self.table}
        mark |= {"definition_sha256": definition_sha, "key": key.name if key else None, **state}
        self.states[self.table] = ExportState(
            state=mark, incremental=resume is not None, config=self.config(info), notes=(note,) if note else ()
        )

    def _pages(self, sql: str, args: Sequence[Any] = ()) -> Iterator[list[Any]]:
        """The rows of a query, BATCH_ROWS at a time, through a server-side cursor (bounded memory)."""
        with self.errors("reading the rows of"):
            cursor = self.conn.cursor(name="aibackup_export")
            cursor.execute(sql, args)
        try:
            while True:
                with self.errors("reading the rows of"):
                    page = cursor.fetchmany(BATCH_ROWS)
                if not page:
                    return
                yield page
        finally:
            with contextlib.suppress(Exception):  # the transaction may be failed already: its error stands
                cursor.close()

    def _export_canonical(self, info: PgTable, since: Mapping[str, Any] | None) -> Iterator[pa.RecordBatch]:
        """Rows of the canonical layout as they are, by source and line, with the per-file summary."""
        files = FileSummaries()
        names = [n for n, _, _ in CANONICAL_COLUMNS]
        required = [n for n, _, notnull in CANONICAL_COLUMNS if notnull]
        out = Rows()
        for page in self._pages(
            f'SELECT {", ".join(map(q, names))} FROM {self.name} ORDER BY source COLLATE "C", line, id'
        ):
            for row in page:
                values = dict(zip(names, row, strict=True))
                missing = next((n for n in required if values[n] is None), None)
                if missing is not None:
                    raise SourceDataError(f"PostgreSQL {self.where} row {values['id']!r}: column {missing!r} is null")
                out.add(values)
                files.add(values)
                if out.full:
                    yield out.flush()
            if len(out):
                yield out.flush()
        config = self.config(info)
        config["files"] = files.to_json()
        notes = (f"table {self.table!r} is in aibackup's canonical layout: backed up in full",) if since else ()
        self.states[self.table] = ExportState(state={"format": "postgresql-canonical"}, config=config, notes=notes)
