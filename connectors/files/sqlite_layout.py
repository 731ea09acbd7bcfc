"""The two SQLite table layouts of conversation logs (see :mod:`.conversations_sqlite`): the canonical
columns, SQL text for them and for a renamed copy of a table's own ``CREATE TABLE``, what a table holds
(:class:`TableInfo`), and batches as rows of either layout, checked."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from aibackup.connectors.files.conversation_records import (
    from_sqlite_json,
)
from aibackup.errors import (
    SourceDataError,
    UnsupportedFeatureError,
)
from aibackup.manifests.records import CONVERSATIONS

CANONICAL_COLUMNS = (
    ("id", "TEXT"),
    ("source", "TEXT"),
    ("line", "INTEGER"),
    ("offset", "INTEGER"),
    ("timestamp", "INTEGER"),
    ("session_id", "TEXT"),
    ("user_id", "TEXT"),
    ("model", "TEXT"),
    ("cost", "REAL"),
    ("input", "TEXT"),
    ("output", "TEXT"),
    ("messages", "TEXT"),
    ("extra", "TEXT"),
    ("raw", "BLOB"),
    ("valid", "INTEGER"),
)
ROWID_NAMES = ("rowid", "_rowid_", "oid")
CREATE = re.compile(r"\s*CREATE\s+(?:TEMP\s+|TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?", re.IGNORECASE)


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def canonical_sql(table: str) -> str:
    return f"CREATE TABLE {q(table)} (" + ", ".join(f"{q(n)} {t}" for n, t in CANONICAL_COLUMNS) + ")"


def renamed_sql(sql: str, table: str) -> str:
    """A ``CREATE TABLE`` statement with its table name replaced (quoted names with any characters, and
    schema-qualified names, are skipped whole)."""
    match = CREATE.match(sql)
    if not match:
        raise UnsupportedFeatureError(f"cannot recreate table {table!r}: its definition is not a CREATE TABLE")
    pos = skip_name(sql, match.end())
    rest = sql[pos:].lstrip()
    if rest.startswith("."):
        pos = skip_name(sql, len(sql) - len(rest) + 1)
    return f"CREATE TABLE {q(table)} " + sql[pos:].lstrip()


def skip_name(sql: str, pos: int) -> int:
    while pos < len(sql) and sql[pos].isspace():
        pos += 1
    closing = {'"': '"', "`": "`", "[": "]"}.get(sql[pos : pos + 1])
    if closing is None:
        match = re.compile(r"[^\s(.]+").match(sql, pos)
        return match.end() if match else pos
    pos += 1
    while pos < len(sql):
        if sql[pos] == closing:
            if closing != "]" and sql[pos + 1 : pos + 2] == closing:  # a doubled quote inside the name
                pos += 2
                continue
            return pos + 1
        pos += 1
    return pos


@dataclass(frozen=True)
class TableInfo:
    sql: str
    columns: tuple[tuple[str, str, bool], ...]  # (name, declared type, generated)

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.columns]

    @property
    def canonical(self) -> bool:
        return tuple((n, t.upper()) for n, t, _ in self.columns) == CANONICAL_COLUMNS

    @property
    def rowid(self) -> str:
        """A name that reaches the rowid (a column may hide ``rowid`` itself)."""
        lowered = {n.lower() for n in self.names}
        return next(r for r in ROWID_NAMES if r not in lowered)

    def config(self, table: str) -> dict[str, Any]:
        return {
            "format": "sqlite",
            "layout": "canonical" if self.canonical else "table",
            "table": table,
            "create_sql": self.sql,
            "columns": [{"name": n, "type": t, "generated": g} for n, t, g in self.columns],
        }


def is_native(config: Mapping[str, Any]) -> bool:
    return config.get("format") == "sqlite" and config.get("layout") == "table"


def native_rows(batch: pa.RecordBatch, columns: list[str], where: str) -> list[tuple[Any, ...]]:
    """(rowid, values...) for each record of a bundle of the table's own layout; UnsupportedFeatureError
    for a record whose raw row does not fit the table (another table's row, a value SQLite cannot hold)."""
    out = []
    wanted = set(columns)
    for rid, rowid, raw in zip(
        batch.column("id").to_pylist(), batch.column("line").to_pylist(), batch.column("raw").to_pylist(), strict=True
    ):
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict) or not wanted <= obj.keys():
                raise ValueError("its columns differ from the table's")
            out.append((rowid, *(from_sqlite_json(obj[c]) for c in columns)))
        except (ValueError, TypeError) as exc:
            raise UnsupportedFeatureError(f"cannot restore record {rid!r} into SQLite {where}: {exc}") from None
    return out


def canonical_rows(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    columns = []
    for name, _ in CANONICAL_COLUMNS:
        column = batch.column(name)
        if name == "timestamp":
            column = column.cast(pa.int64())
        values = column.to_pylist()
        columns.append([None if v is None else int(v) for v in values] if name == "valid" else values)
    return list(zip(*columns, strict=True))


def check_canonical(values: dict[str, Any], where: str, rowid: int) -> None:
    """A canonical-layout row must hold the canonical types (someone may have edited the table)."""
    types = {f.name: f.type for f in CONVERSATIONS}
    for name, value in values.items():
        if value is None:
            if not CONVERSATIONS.field(name).nullable:
                raise SourceDataError(f"SQLite {where} row {rowid}: column {name!r} is null")
            continue
        kind = types[name]
        if pa.types.is_string(kind):
            ok = isinstance(value, str)
        elif pa.types.is_binary(kind):
            ok = isinstance(value, bytes)
        elif pa.types.is_floating(kind):
            ok = isinstance(value, float | int)
            values[name] = float(value) if ok else value
        elif pa.types.is_boolean(kind):
            ok = value in (0, 1)
            values[name] = bool(value)
        else:  # int64 and the timestamp's microseconds
            ok = isinstance(value, int)
        if not ok:
            raise SourceDataError(f"SQLite {where} row {rowid}: column {name!r} holds a {type(value).__name__}")


def sha_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
