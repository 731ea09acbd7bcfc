"""Conversation logs: JSONL files (``conversations:PATH``), SQLite tables (``conversations+sqlite:PATH?table=T``)
and PostgreSQL tables (``conversations+postgresql://[USER@]HOST[:PORT]/DB?table=T``), kind "conversations",
one dataset per source.

Sources
-------
``PATH`` is a file, a folder (every ``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst`` below it, recursively) or a
glob, expanded and named as :mod:`aibackup.connectors.files.lines` documents; ``.gz``/``.zst`` files are read
decompressed. The dataset's name is the file's base name without ``.jsonl``/``.gz``/``.zst``, the folder's
name, the glob's fixed folder's name, or the table's name. ``rows`` in ``describe`` is exact (a newline
count; a decompression pass for compressed files; ``count(*)`` for a table). SQLite: see
:mod:`aibackup.connectors.files.conversations_sqlite`; PostgreSQL (the same semantics: one snapshot, a
high-water mark on ``?key=COLUMN``): :mod:`aibackup.connectors.files.conversations_postgres`.

Records (:data:`aibackup.manifests.records.CONVERSATIONS`): one per line, ``id`` = ``"<relative file>#<line>"``,
``offset`` the line's byte offset in the decompressed file, ``raw`` its exact bytes with the terminator.
Typed columns by exact field name, no aliases (``conversation_id``/``session`` stay in ``extra``):
``timestamp`` from ISO 8601 (a naive time is UTC) or epoch seconds (milliseconds above 1e11), ``cost`` a
finite number, ``session_id``/``user_id``/``model``/``input``/``output`` strings, ``messages`` a list;
everything else, and a typed field that does not parse, in ``extra`` (details:
:mod:`aibackup.connectors.files.conversation_records`).

Bad lines: a **blank** line (only spaces, tabs, CR) is kept raw with ``valid`` false and never fails; a
**malformed** one (not UTF-8, not JSON, not an object) fails the backup with SourceDataError
``"<file>:<line>: <why>"`` (the content is never shown: it may hold secrets) unless the option
``on_bad_line`` is ``"skip"`` (``--on-bad-line skip``): then it is kept raw with ``valid`` false and the
export notes ``"N malformed lines kept raw, e.g. a.jsonl:17, ..."``. Either way every byte comes back.

Incremental backups (high-water mark per file)
----------------------------------------------
The state records, per relative name: bytes and lines consumed, whether the last line ended with a
newline, and the sha256 of the *whole* consumed prefix (decompressed). The next export hashes each
recorded file's prefix again (so it reads, but neither parses nor stores, the old bytes) before yielding
anything:

- every recorded file still starts with its recorded prefix: only the bytes after it are exported (line
  numbers and offsets continue), files not seen before are read whole, ``incremental`` is true;
- a recorded file is shorter (truncated, rotated), differs inside its prefix (rewritten), is gone
  (rotated away, compressed to ``.gz`` under a new name, deleted), or grew after a last line that had no
  newline (that line changed): **everything is exported again** (``incremental`` false) with a note
  saying why, because an incremental bundle can only add records and the newest bundle must restore
  exactly what the source holds at backup time.

A compressed file is decompressed and its prefix discarded (no seeking). The dataset config lists every
file (name, bytes, lines, sha256 of the whole decompressed content, compression), also in an incremental
bundle, so the latest bundle describes the whole log.

Restore targets
---------------
``conversations:DIR``: every file is written back under DIR at its relative name, byte-identical
(decompressed, without ``.gz``/``.zst``), through temporary files renamed into place; names that would
leave DIR are refused; modes ``create`` (refuses existing files), ``overwrite`` (replaces the bundle's
files only), ``merge`` refused: rules in :mod:`aibackup.connectors.files.filetarget`. A SQLite bundle of a table's own
layout becomes ``DIR/<table>.jsonl``: one line per row in rowid order, the row's JSON object (``raw``)
and a newline, so the folder's records are those lines (ids ``<table>.jsonl#<n>``, typed fields as any log
line gives them: ``plan.transform`` builds exactly that; the table's definition is not kept). A PostgreSQL
table bundle is written the same way, its rows in bundle (export) order. A SQLite or PostgreSQL bundle of
the canonical layout is written back as the files it came from.

``conversations+sqlite:PATH?table=T``: a table bundle recreates its table as T, any other bundle goes into
the canonical layout (see :mod:`.conversations_sqlite`). ``conversations+postgresql://…?table=T`` likewise
with a PostgreSQL table bundle (see :mod:`.conversations_postgres`). After a restore the target is read back
with malformed lines kept raw, and a folder target reads back only the files the restore wrote; the
``files`` check compares each file's sha256 with the bundle's config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import MODES, DatasetDescription, ExportState, ImportPlan, Location, identity
from aibackup.connectors.files import conversations_postgres_restore as pg_target
from aibackup.connectors.files import lines, pg_layout
from aibackup.connectors.files.conversation_records import Rows, RowsAsLines, parse_line
from aibackup.connectors.files.conversations_postgres import PostgresTable
from aibackup.connectors.files.conversations_sqlite import SqliteTable
from aibackup.connectors.files.filetarget import (
    check_mode,
    compressed_in_place,
    file_renamer,
    output_names,
    refuse_existing,
    target_path,
)
from aibackup.connectors.files.linefiles import LineFiles
from aibackup.connectors.files.sqlite_layout import canonical_sql, native_rows, renamed_sql
from aibackup.errors import SourceDataError, UsageError
from aibackup.manifests.records import CONVERSATIONS

ON_BAD_LINE = ("fail", "skip")
EXAMPLES = 5


class ConversationsConnector(LineFiles):
    """Conversation logs in JSONL files, a SQLite table or a PostgreSQL table (see the module docstring)."""

    kind = "conversations"
    dataset_kind = "conversations"

    def __init__(self, location: Location, *, create: bool = False, options: Mapping[str, Any] | None = None) -> None:
        """Open the source or target. A missing source path, glob without match, database or table raises
        DatasetNotFoundError; ``options["on_bad_line"]`` other than fail/skip raises UsageError."""
        super().__init__(location, create=create, options=options)
        on_bad_line = self.options.get("on_bad_line") or "fail"
        if on_bad_line not in ON_BAD_LINE:
            raise UsageError(f"bad --on-bad-line {on_bad_line!r}: expected fail or skip")
        # A restore target is read back as the bundle held it, malformed lines included.
        self.on_bad_line = "skip" if create else on_bad_line
        self._table: SqliteTable | None = None
        self._pg: PostgresTable | None = None
        if location.scheme == "conversations+sqlite":
            self._table = SqliteTable(self.root, location.params["table"], create=create)
            if not create:
                self._table.require()
        elif location.scheme == "conversations+postgresql":
            self._pg = PostgresTable(location, create=create)
            if not create:
                self._pg.require()
        else:
            self._open_folder()

    @property
    def _name(self) -> str:
        if self._pg is not None:
            return self._pg.table
        return self._table.table if self._table is not None else super()._name

    @property
    def _where(self) -> str:
        if self._pg is not None:
            return self._pg.where
        return self._table.where if self._table is not None else super()._where

    # --- reading -----------------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """The one dataset of the source (`names` must be None or name exactly it, else
        DatasetNotFoundError). Rows are exact; config lists the files (or the table definition)."""
        name = self._the_dataset(names)
        if self._pg is not None:
            return [self._pg.describe()]
        if self._table is not None:
            info = self._table.require()
            config = info.config(self._table.table)
            return [DatasetDescription(name=name, config=config, rows=self._table.count(), kind=self.dataset_kind)]
        files, rows = self._file_list()
        return [DatasetDescription(name, {"format": "jsonl", "files": files}, rows, kind=self.dataset_kind)]

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Canonical batches (at most 2000 rows or ~32 MB of raw lines each): every record, or only those
        past the high-water mark `since` when it still holds (module docstring). Raises SourceDataError
        for a malformed line (``on_bad_line`` fail) or a damaged file, UnavailableError for an unreadable
        one. ``export_state`` gives the new mark, config and notes afterwards."""
        if self._table is not None:
            yield from self._table.export(since)
            self._states[dataset.name] = self._table.states[self._table.table]
            return
        if self._pg is not None:
            yield from self._pg.export(since)
            self._states[dataset.name] = self._pg.states[self._pg.table]
            return
        yield from self._export_files(dataset.name, since)

    def _export_files(self, name: str, since: Mapping[str, Any] | None) -> Iterator[pa.RecordBatch]:
        files = self._files()
        starts, notes = self._resume(files, since)
        rows = Rows()
        summaries: list[dict[str, Any]] = []
        marks: dict[str, dict[str, Any]] = {}
        bad: list[str] = []
        blank = 0
        for f in files:
            start, count, digest, ended = (starts or {}).get(f.name) or (0, 0, hashlib.sha256(), True)
            size = start
            for offset, number, raw in lines.iter_lines(f, start, count + 1):
                obj, problem = parse_line(raw, number == 1)
                if problem is not None:
                    if self.on_bad_line == "fail":
                        raise SourceDataError(_bad_line(f, number, problem, raw))
                    bad.append(f"{f.shown}:{number}")
                elif obj is None:
                    blank += 1
                rows.add_line(f.name, number, offset, raw, obj)
                digest.update(raw)
                size, count, ended = offset + len(raw), number, raw.endswith(b"\n")
                if rows.full:
                    yield rows.flush()
            sha = digest.hexdigest()
            summaries.append(
                {"name": f.name, "bytes": size, "lines": count, "sha256": sha, "compression": f.compression}
            )
            marks[f.name] = {"bytes": size, "lines": count, "sha256": sha, "newline": ended}
        if len(rows):
            yield rows.flush()
        if bad:
            notes.append(f"{len(bad)} malformed line{'s' * (len(bad) > 1)} kept raw, e.g. {', '.join(bad[:EXAMPLES])}")
        if blank:
            notes.append(f"{blank} blank line{'s' * (blank > 1)} kept raw")
        notes += lines.left_out(self.root, self.options.get("exclude", ()))
        self._states[name] = ExportState(
            state={"format": "jsonl", "files": marks},
            incremental=starts is not None,
            config={"format": "jsonl", "files": summaries},
            notes=tuple(notes),
        )

    def _resume(
        self, files: list[lines.SourceFile], since: Mapping[str, Any] | None
    ) -> tuple[dict[str, tuple[int, int, Any, bool]] | None, list[str]]:
        """Where each file continues ((bytes, lines, running sha256, newline) by name), or None and why for a
        full export. Every recorded prefix is checked before anything is exported."""
        if not since or since.get("format") != "jsonl" or not isinstance(since.get("files"), dict):
            return None, []
        recorded: dict[str, Any] = since["files"]
        current = {f.name: f for f in files}
        gone = sorted(set(recorded) - set(current))
        if gone:
            more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
            return None, [f"{gone[0]}{more} is gone since the last backup: full backup"]
        starts: dict[str, tuple[int, int, Any, bool]] = {}
        for rel, mark in sorted(recorded.items()):
            nbytes = int(mark.get("bytes", 0))
            digest, more_bytes = lines.hash_prefix(current[rel], nbytes)
            if digest is None:
                return None, [f"{rel} is shorter than at the last backup (truncated or rotated): full backup"]
            if digest.hexdigest() != mark.get("sha256"):
                return None, [f"{rel} was rewritten since the last backup: full backup"]
            newline = bool(mark.get("newline", True))
            if nbytes and not newline and more_bytes:
                return None, [f"the last line of {rel} had no newline and has grown since: full backup"]
            starts[rel] = (nbytes, int(mark.get("lines", 0)), digest, newline)
        return starts, []

    # --- writing -----------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """How the bundle dataset `source` goes into this folder or table (module docstring), writing
        nothing. Raises TargetNotEmptyError (create mode: a file to write exists / the table holds rows),
        UnsupportedFeatureError (merge into a folder, a file name leaving the folder, two names colliding,
        a merge into a table of another layout), UsageError for an unknown mode. `dest` is not used: the
        target URI names the folder or table, and the plan's target carries that name."""
        config = dict(source.config)
        if self._pg is not None:
            return pg_target.plan(self._pg, source, mode)
        if self._table is not None:
            return self._plan_table(source, config, mode)
        where = self._where
        check_mode(mode, where)
        notes: list[str] = []
        renamed: dict[str, str] = {}  # a compressed file's name -> the name it is restored under
        if _table_layout(config) or pg_layout.is_pg_table(config):
            file_name = f"{config.get('table')}.jsonl"
            expected: dict[str, str | None] = {file_name: None}
            sqlite = _table_layout(config)
            transform: Any = RowsAsLines(file_name) if sqlite else pg_layout.RowsAsLinesInOrder(file_name)
            notes.append(
                f"the rows of table {config.get('table')!r} become the lines of {file_name}: each row's JSON "
                'object (column: value, blobs as {"base64": ...}) in '
                f"{'rowid' if sqlite else 'export'} order; the table definition is not kept in a folder"
            )
        else:
            files = [f["name"] for f in config.get("files", ())]
            names = output_names(files, where)
            expected = {names[f["name"]]: f.get("sha256") for f in config.get("files", ())}
            renamed = {old: new for old, new in names.items() if old != new}
            transform = file_renamer(renamed, "source") if renamed else identity
            if renamed:
                notes.append(f"{len(renamed)} compressed file(s) restored decompressed (e.g. {next(iter(renamed))})")
        replaced = compressed_in_place(self.root, renamed, mode)
        notes += replaced.notes
        for file_name in expected:
            target_path(self.root, file_name)
        if mode == "create":
            refuse_existing(self.root, [*expected, *renamed])
        self._scope = sorted(expected)
        target = DatasetDescription(
            name=self._name,
            config={"format": "jsonl", "files": [{"name": n} for n in sorted(expected)]},
            rows=source.rows,
            kind=self.dataset_kind,
        )
        # Every file goes to a temporary file renamed into place at the end (filetarget.FileWriter): a
        # failure before the renames leaves nothing.
        return ImportPlan(
            source,
            target,
            mode,
            transform=transform,
            notes=tuple(notes),
            extra={"files": expected, "replaced": replaced.names},
            undone_on_failure=True,
        )

    def _plan_table(self, source: DatasetDescription, config: dict[str, Any], mode: str) -> ImportPlan:
        table = self._table
        assert table is not None
        if mode not in MODES:
            raise UsageError(f"bad mode {mode!r}: expected one of {', '.join(MODES)}")
        existing = table.refuse_not_empty(mode)
        if existing is not None and mode == "merge":
            table.check_merge(existing, config)
        transform: Any = identity
        notes: list[str] = []
        if _table_layout(config):
            old = str(config.get("table"))
            sql = renamed_sql(str(config.get("create_sql", "")), table.table)
            if old != table.table:
                transform = _table_renamer(old, table.table)
            notes.append(
                f"table {old!r} is recreated from its CREATE TABLE statement; its indexes and triggers are not"
            )
        else:
            sql = canonical_sql(table.table)
            if config.get("format") == "jsonl":
                notes.append("the log lines go into aibackup's canonical table layout (one row per line)")
        target_config = {"format": "sqlite", "table": table.table, "create_sql": sql}
        target = DatasetDescription(table.table, target_config, source.rows, kind=self.dataset_kind)
        return ImportPlan(source, target, mode, transform=transform, notes=tuple(notes))

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Every check `import_` runs, writing nothing: file names inside the folder and listed in the
        bundle, records forming each file line after line; for a table, every row fitting it."""
        checked = 0
        if self._pg is not None:
            return pg_target.validate(self._pg, plan, batches)
        if self._table is not None:
            columns = [c["name"] for c in plan.source.config.get("columns", ()) if not c.get("generated")]
            for batch in batches:
                batch = plan.transform(batch)
                if _table_layout(plan.source.config):
                    native_rows(batch, columns, self._where)
                checked += batch.num_rows
            return checked
        return self._check_folder_records(plan, batches, "source")

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Write the bundle's records (module docstring); returns the records written."""
        if self._pg is not None:
            return pg_target.write(self._pg, plan, batches)
        if self._table is not None:
            return self._table.write(plan.source.config, plan.mode, batches, plan.transform)
        return self._write_folder(plan, batches, "source")

    @property
    def atomic_import(self) -> bool:
        return self._pg is not None  # a PostgreSQL table is written in one transaction

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """For a folder: every written file's sha256 against the bundle's (or, for a table bundle, against
        what was written). Nothing more for a table (rows are compared record by record)."""
        return [] if self._table is not None or self._pg is not None else self._file_checks(plan)

    def close(self) -> None:
        """Close the database, if any. Safe to call twice."""
        table, self._table = self._table, None
        if table is not None:
            table.close()
        pg, self._pg = self._pg, None
        if pg is not None:
            pg.close()


def _table_layout(config: Mapping[str, Any]) -> bool:
    return config.get("format") == "sqlite" and config.get("layout") == "table"


def _bad_line(file: lines.SourceFile, number: int, problem: str, raw: bytes) -> str:
    hint = "" if raw.endswith(b"\n") else " (the last line has no newline yet: a write in progress? back up again)"
    return (
        f"{file.shown}:{number}: {problem}{hint}; fix or remove that line, or "
        "back up with --on-bad-line skip to keep malformed lines raw in the bundle"
    )


def _with_columns(batch: pa.RecordBatch, **columns: list[Any]) -> pa.RecordBatch:
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else batch.column(f.name) for f in CONVERSATIONS]
    return pa.RecordBatch.from_arrays(arrays, schema=CONVERSATIONS)


def _table_renamer(old: str, new: str) -> Any:
    """Transform: the records of table `old` as table `new` gives them back."""

    def rename(batch: pa.RecordBatch) -> pa.RecordBatch:
        rowids = batch.column("line").to_pylist()
        return _with_columns(batch, id=[f"{new}#{r}" for r in rowids], source=[f"table:{new}"] * len(rowids))

    return rename
