"""Conversation logs in a SQLite table (``conversations+sqlite:PATH?table=T``), through stdlib sqlite3.

Two layouts, told apart by the table's columns:

- **the table's own layout** (any table with a rowid): each row is a record. ``id`` = ``"<table>#<rowid>"``,
  ``source`` = ``"table:<table>"``, ``line`` = the rowid, ``offset`` null, ``raw`` = canonical JSON of
  ``{column: value}`` (blobs as ``{"base64": ...}``; see :mod:`aibackup.connectors.files.conversation_records`), typed
  columns from the columns of those names, ``valid`` true. The config keeps the ``CREATE TABLE`` SQL and
  the columns (name, declared type, generated).
- **aibackup's canonical layout**, the table a log folder restores into: exactly the columns
  ``id TEXT, source TEXT, line INTEGER, offset INTEGER, timestamp INTEGER (UTC microseconds), session_id
  TEXT, user_id TEXT, model TEXT, cost REAL, input TEXT, output TEXT, messages TEXT, extra TEXT, raw BLOB,
  valid INTEGER (0/1)``, in that order, one row per record in bundle order. Its rows are exported back as
  they are (so a folder restored into SQLite and backed up again gives the same records), always in full,
  with the per-file summary (bytes, lines, sha256) of the files they came from.

High-water mark (own layout): the largest rowid, the number of rows up to it and a sha256 of that last
row. Rows with a larger rowid are new. An incremental run sees only inserts: **updates and deletes of
rows at or below the mark are not seen** (except what the checks below catch); the next full backup does.
A full export happens instead (with a note) when the ``CREATE TABLE`` SQL changed, when fewer rows remain
up to the mark (deletes), or when the last row changed (deleted and its rowid reused). The export runs in
one read transaction, so it is a consistent snapshot (a WAL database keeps taking writes meanwhile; in
rollback-journal mode writers wait until the read ends). WITHOUT ROWID tables, views and virtual tables
are refused.

Restore into a table T: a bundle of this layout recreates the table from its ``CREATE TABLE`` SQL (renamed
to T: only its own name is replaced; indexes and triggers are not in the bundle) and inserts every row
with its rowid and typed values (generated columns are computed again); ids and sources then name T. Any
other bundle (a log folder, or a canonical-layout table) goes into the canonical layout, with an index on
``id`` (empty files of a folder have no rows, so a table does not keep them). Modes: ``create`` refuses a
table holding rows (an empty one is replaced), ``overwrite`` drops and recreates the table, ``merge`` keeps
the table (its layout must match) and replaces rows with the same rowid (own layout) or id (canonical).
The whole import is one transaction: a failure leaves the table as it was.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from aibackup.connectors.base import ExportState, client_errors
from aibackup.connectors.files.conversation_records import (
    BATCH_ROWS,
    FileSummaries,
    Rows,
    sqlite_value,
    typed_fields,
)
from aibackup.connectors.files.lines import shown
from aibackup.connectors.files.sqlite_layout import (
    CANONICAL_COLUMNS,
    TableInfo,
    canonical_rows,
    canonical_sql,
    check_canonical,
    is_native,
    literal,
    native_rows,
    q,
    renamed_sql,
    sha_of,
)
from aibackup.errors import (
    AibackupError,
    ConnectorError,
    DatasetNotFoundError,
    SourceDataError,
    TargetNotEmptyError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
    first_line,
)
from aibackup.manifests.vectors import canonical_json

BUSY_TIMEOUT_S = 10.0


class SqliteTable:
    """One table of a SQLite database, as a source (read-only) or a restore target."""

    def __init__(self, path: str, table: str, *, create: bool) -> None:
        self.path, self.table = path, table
        self.where = f"{shown(path)}?table={table}"
        if os.path.isdir(path):
            raise UsageError(f"{shown(path)} is a folder, not a SQLite database file")
        if create:
            folder = os.path.dirname(path) or "."
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:  # a file where a folder of the path belongs: bad input, as in lancedb's target
                raise UsageError(f"cannot create the folder {shown(folder)} of {shown(path)}: {exc.strerror}") from None
            target = path
        elif not os.path.exists(path):
            raise DatasetNotFoundError(f"SQLite database {shown(path)} does not exist")
        else:
            target = f"file:{quote(path)}?mode=ro"
        with self.errors("opening the database"):
            # The core reads an export in a background thread, one thread at a time: sqlite3's same-thread
            # guard would refuse that although nothing runs concurrently.
            self.conn = sqlite3.connect(
                target, uri=not create, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            # Text that is not UTF-8 comes through with surrogate escapes and is refused per row (by name)
            # instead of failing the whole read inside sqlite3.
            self.conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        self.states: dict[str, ExportState] = {}

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """sqlite3's exceptions as one-line aibackup errors naming the database and table."""
        with client_errors(lambda exc: self._translate(exc, action)):
            yield

    def _translate(self, exc: BaseException, action: str) -> AibackupError | None:
        if isinstance(exc, sqlite3.OperationalError):
            text = first_line(exc)
            if "locked" in text or "busy" in text or "unable to open" in text or "readonly" in text:
                return UnavailableError(f"SQLite {self.where}: {action} failed: {text}")
            return ConnectorError(f"SQLite {self.where}: {action} failed: {text}")
        if isinstance(exc, sqlite3.ProgrammingError):
            return ConnectorError(f"SQLite {self.where}: {action} failed: {first_line(exc)}")
        if isinstance(exc, sqlite3.IntegrityError):
            return UnsupportedFeatureError(f"SQLite {self.where} refused {action}: {first_line(exc)}")
        if isinstance(exc, sqlite3.DatabaseError):
            return SourceDataError(f"{shown(self.path)} is not a usable SQLite database ({first_line(exc)})")
        if isinstance(exc, OSError):
            return UnavailableError(f"SQLite {self.where}: {action} failed: {exc.strerror or exc}")
        return None

    # --- reading -----------------------------------------------------------------------------------------

    def info(self) -> TableInfo | None:
        """The table's definition, None when it does not exist; refuses what has no rowid."""
        with self.errors("reading the table definition"):
            listed = self.conn.execute(
                "SELECT type, wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", (self.table,)
            ).fetchone()
            if listed is None:
                return None
            kind, without_rowid = listed
            if kind != "table" or without_rowid:
                what = "a WITHOUT ROWID table" if without_rowid else f"a {kind}"
                raise UnsupportedFeatureError(f"SQLite {self.where} is {what}: only rowid tables are backed up")
            (sql,) = self.conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
            ).fetchone()
            rows = self.conn.execute(f"SELECT name, type, hidden FROM pragma_table_xinfo({literal(self.table)})")
            columns = tuple((n, t or "", h in (2, 3)) for n, t, h in rows.fetchall() if h != 1)
        return TableInfo(sql, columns)

    def require(self) -> TableInfo:
        info = self.info()
        if info is None:
            raise DatasetNotFoundError(f"table {self.table!r} not found in SQLite database {shown(self.path)}")
        return info

    def count(self) -> int:
        with self.errors("counting rows"):
            return int(self.conn.execute(f"SELECT count(*) FROM {q(self.table)}").fetchone()[0])

    def export(self, since: Mapping[str, Any] | None) -> Iterator[pa.RecordBatch]:
        """The table's records (own layout: past the high-water mark `since` when it still holds), in rowid
        order, in one read transaction; leaves the ExportState in ``states[table]``."""
        with self.errors("starting a read"):
            self.conn.execute("BEGIN")
        try:
            info = self.require()
            if info.canonical:
                yield from self._export_canonical(info, since)
            else:
                yield from self._export_rows(info, since)
        finally:
            with self.errors("ending the read"):
                self.conn.execute("ROLLBACK")

    def _mark(self, info: TableInfo) -> tuple[int, int, str | None]:
        """(max rowid, rows, sha256 of the last row's raw) now."""
        r = info.rowid
        row = self.conn.execute(f"SELECT max({r}), count(*) FROM {q(self.table)}").fetchone()
        top, rows = int(row[0] or 0), int(row[1])
        return top, rows, self._row_sha(info, top) if rows else None

    def _row_sha(self, info: TableInfo, rowid: int) -> str | None:
        row = self.conn.execute(f"SELECT * FROM {q(self.table)} WHERE {info.rowid} = ?", (rowid,)).fetchone()
        return None if row is None else hashlib.sha256(self._raw(info, rowid, row)[1]).hexdigest()

    def _resume(self, info: TableInfo, since: Mapping[str, Any] | None) -> tuple[int | None, str | None]:
        """(rowid to continue after, or None for a full export; a note saying why it is full)."""
        if not since or since.get("format") != "sqlite" or since.get("table") != self.table:
            return None, None
        top = int(since.get("max_rowid", 0))
        if since.get("sql_sha256") != sha_of(info.sql):
            return None, f"the definition of table {self.table!r} changed since the last backup: full backup"
        with self.errors("checking the high-water mark"):
            row = self.conn.execute(f"SELECT count(*) FROM {q(self.table)} WHERE {info.rowid} <= ?", (top,)).fetchone()
            same_last = since.get("rows") == 0 or self._row_sha(info, top) == since.get("last_sha256")
        if int(row[0]) != since.get("rows") or not same_last:
            return None, f"rows of table {self.table!r} were deleted or replaced since the last backup: full backup"
        return top, None

    def _export_rows(self, info: TableInfo, since: Mapping[str, Any] | None) -> Iterator[pa.RecordBatch]:
        start, note = self._resume(info, since)
        with self.errors("reading rows"):
            top, rows, last = self._mark(info)
            # A full export takes every row: rowids may be zero or negative (an INTEGER PRIMARY KEY is any
            # 64-bit integer), so there is no "below the first rowid" to start from.
            where, args = (f"WHERE {info.rowid} > ?", (start,)) if start is not None else ("", ())
            cursor = self.conn.execute(
                f"SELECT {info.rowid}, * FROM {q(self.table)} {where} ORDER BY {info.rowid}", args
            )
        source = f"table:{self.table}"
        out = Rows()
        exported = 0
        while True:
            with self.errors("reading rows"):
                page = cursor.fetchmany(BATCH_ROWS)
            if not page:
                break
            for row in page:
                rowid = int(row[0])
                obj, raw = self._raw(info, rowid, row[1:])
                typed, extra = typed_fields(obj, messages_text=True)
                out.add(
                    {
                        "id": f"{self.table}#{rowid}",
                        "source": source,
                        "line": rowid,
                        "offset": None,
                        **typed,
                        "extra": extra,
                        "raw": raw,
                        "valid": True,
                    }
                )
            exported += len(page)
            yield out.flush()
        # The export runs in one read transaction, so a full one must have seen exactly the rows counted.
        if start is None and exported != rows:
            raise SourceDataError(
                f"table {self.table!r}: {exported} rows exported but {rows} counted; nothing was committed"
            )
        state = {
            "format": "sqlite",
            "table": self.table,
            "sql_sha256": sha_of(info.sql),
            "max_rowid": top,
            "rows": rows,
            "last_sha256": last,
        }
        self.states[self.table] = ExportState(
            state=state, incremental=start is not None, config=info.config(self.table), notes=(note,) if note else ()
        )

    def _raw(self, info: TableInfo, rowid: int, values: Iterable[Any]) -> tuple[dict[str, Any], bytes]:
        """A row as its JSON object and the canonical JSON bytes of that (``raw``)."""
        obj = {name: sqlite_value(v) for name, v in zip(info.names, values, strict=True)}
        try:
            return obj, canonical_json(obj).encode("utf-8")
        except UnicodeEncodeError:
            raise SourceDataError(
                f"SQLite {self.where} row {rowid} holds text that is not valid UTF-8; fix it or store it as a blob"
            ) from None

    def _export_canonical(self, info: TableInfo, since: Mapping[str, Any] | None) -> Iterator[pa.RecordBatch]:
        """Rows of the canonical layout as they are, in rowid order, with the per-file summary."""
        files = FileSummaries()
        with self.errors("reading rows"):
            cursor = self.conn.execute(
                f"SELECT {info.rowid}, {', '.join(q(n) for n, _ in CANONICAL_COLUMNS)} FROM {q(self.table)} "
                f"ORDER BY {info.rowid}"
            )
        out = Rows()
        names = [n for n, _ in CANONICAL_COLUMNS]
        while True:
            with self.errors("reading rows"):
                page = cursor.fetchmany(BATCH_ROWS)
            if not page:
                break
            for row in page:
                values = dict(zip(names, row[1:], strict=True))
                check_canonical(values, self.where, row[0])
                out.add(values)
                files.add(values)
            yield out.flush()
        config = info.config(self.table)
        config["files"] = files.to_json()
        notes = (f"table {self.table!r} is in aibackup's canonical layout: backed up in full",) if since else ()
        self.states[self.table] = ExportState(state={"format": "sqlite-canonical"}, config=config, notes=notes)

    # --- writing -----------------------------------------------------------------------------------------

    def write(self, config: Mapping[str, Any], mode: str, batches: Iterable[pa.RecordBatch], transform: Any) -> int:
        """Create or reuse the table per `mode` and insert every record, in one transaction."""
        native = is_native(config)
        written = 0
        with self.errors("starting a write"):
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            existing = self.info()
            if existing is not None and mode == "create" and self.count():
                raise TargetNotEmptyError(self._not_empty())
            if existing is not None and mode == "merge":
                self.check_merge(existing, config)
            else:
                with self.errors("creating the table"):
                    if existing is not None:
                        self.conn.execute(f"DROP TABLE {q(self.table)}")
                    sql = renamed_sql(str(config["create_sql"]), self.table) if native else canonical_sql(self.table)
                    self.conn.execute(sql)
            if not native:
                # merge replaces rows by id: an index keeps that from scanning the table per row.
                with self.errors("indexing the table"):
                    index = q(f"{self.table}_aibackup_id")
                    self.conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {q(self.table)} (id)")
            info = self.require()
            for batch in batches:
                batch = transform(batch)
                written += self._insert(info, batch, native, mode == "merge")
            with self.errors("committing"):
                self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return written

    def check_merge(self, existing: TableInfo, config: Mapping[str, Any]) -> None:
        if is_native(config):
            wanted = sorted(c["name"] for c in config.get("columns", ()))
            ok = not existing.canonical and sorted(existing.names) == wanted
        else:
            ok = existing.canonical
        if not ok:
            raise UnsupportedFeatureError(
                f"cannot merge into SQLite {self.where}: its columns differ from the bundle's; use --mode "
                "overwrite or restore into another table"
            )

    def _not_empty(self) -> str:
        return (
            f"SQLite {self.where} already holds {self.count()} rows; restore with --mode overwrite (replace it) "
            "or --mode merge (insert or replace rows), or into another table"
        )

    def refuse_not_empty(self, mode: str) -> TableInfo | None:
        existing = self.info()
        if existing is not None and mode == "create" and self.count():
            raise TargetNotEmptyError(self._not_empty())
        return existing

    def _insert(self, info: TableInfo, batch: pa.RecordBatch, native: bool, merge: bool) -> int:
        if native:
            columns = [n for n, _, generated in info.columns if not generated]
            rows = native_rows(batch, columns, self.where)
            names = ", ".join([info.rowid, *map(q, columns)])
            verb = "INSERT OR REPLACE" if merge else "INSERT"
        else:
            names = ", ".join(q(n) for n, _ in CANONICAL_COLUMNS)
            rows = canonical_rows(batch)
            verb = "INSERT"
            if merge:
                with self.errors("replacing rows"):
                    self.conn.executemany(f"DELETE FROM {q(self.table)} WHERE id = ?", ((r[0],) for r in rows))
        marks = ", ".join("?" * (len(rows[0]) if rows else 1))
        with self.errors("inserting rows"):
            self.conn.executemany(f"{verb} INTO {q(self.table)} ({names}) VALUES ({marks})", rows)
        return len(rows)
