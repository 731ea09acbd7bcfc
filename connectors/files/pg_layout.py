"""The two PostgreSQL table layouts of conversation logs (see :mod:`.conversations_postgres`): a table's own
definition (:class:`PgTable`) and the SQL that recreates it under another name, aibackup's canonical layout,
each column's values as JSON and back, and the transforms that turn a table's records into another
table's or into the lines of a log file.

Values (a row's ``raw`` is the canonical JSON of ``{column: value}``): PostgreSQL's own text form of every
value (``column::text`` read in a session with ``TimeZone`` UTC, ``DateStyle`` ISO, ``IntervalStyle``
postgres and ``bytea_output`` hex), which its input functions read back as the same value, carried as
a JSON string, except where JSON has an exact form of its own:

- ``smallint``, ``integer``, ``bigint``: JSON integers; ``boolean``: true/false;
- ``real``, ``double precision``: JSON numbers (PostgreSQL writes the shortest text that reads back as
  the same float, and so does Python), ``NaN``/``Infinity``/``-Infinity`` as Python's JSON writes them;
- ``numeric``: a JSON number when that number's own shortest text is exactly PostgreSQL's (``3``,
  ``0.25``), else the text as a string (``12.3400`` keeps its scale, ``NaN``, ``0.0000001``);
- ``bytea``: ``{"base64": "<standard base64>"}`` as SQLite blobs are;
- everything else (text, timestamps, dates, intervals, uuid, arrays, enums, json and jsonb, ...): the text
  as a string. json keeps its exact text; jsonb is its normalised text. A timestamptz reads as
  ``2026-11-25 02:00:00+00``, which the typed ``timestamp`` column takes.

Domains are mapped by their base type.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from aibackup.connectors.files.conversation_records import BLOB_KEY, Rows, line_record
from aibackup.connectors.files.sqlite_layout import q
from aibackup.errors import UnsupportedFeatureError
from aibackup.manifests.records import CONVERSATIONS
from aibackup.manifests.vectors import canonical_json

#: aibackup's canonical layout: (column, PostgreSQL type, NOT NULL), in this order; ``id`` is the key.
CANONICAL_COLUMNS = (
    ("id", "text", True),
    ("source", "text", True),
    ("line", "bigint", True),
    ("offset", "bigint", False),
    ("timestamp", "timestamp with time zone", False),
    ("session_id", "text", False),
    ("user_id", "text", False),
    ("model", "text", False),
    ("cost", "double precision", False),
    ("input", "text", False),
    ("output", "text", False),
    ("messages", "text", False),
    ("extra", "text", False),
    ("raw", "bytea", True),
    ("valid", "boolean", True),
)
CANONICAL_TEXT = tuple(n for n, t, _ in CANONICAL_COLUMNS if t == "text")
#: base type name -> how its values are carried in JSON (anything else: "text")
KINDS = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "bool": "bool",
    "float4": "float",
    "float8": "float",
    "numeric": "numeric",
    "bytea": "bytea",
}
INTEGERS = ("smallint", "integer", "bigint")
SERIAL = {"smallint": "smallserial", "integer": "serial", "bigint": "bigserial"}
#: The session settings under which the text form of values is read and written.
SESSION = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
)
INTEGER_TEXT = re.compile(r"-?[0-9]+")
FLOAT_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


def qualified(schema: str, table: str) -> str:
    return f"{q(schema)}.{q(table)}"


@dataclass(frozen=True)
class PgColumn:
    """One column as the catalog describes it. ``generated`` is "" or "stored"/"virtual" (its expression
    in ``default``); ``identity`` is "" or "always"/"by default"; ``serial``: a default of nextval() on a
    sequence the column owns (recreated as smallserial/serial/bigserial)."""

    name: str
    type: str  # format_type(): "character varying(20)", "timestamp with time zone", "integer[]", ...
    kind: str  # how values are carried in JSON: int, bool, float, numeric, bytea, text
    nullable: bool = True
    default: str | None = None
    identity: str = ""
    generated: str = ""
    serial: bool = False
    collation: str | None = None  # SQL for the column's collation when not the type's default: "C", s."x"
    collatable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "kind": self.kind,
            "nullable": self.nullable,
            "default": self.default,
            "identity": self.identity,
            "generated": self.generated,
            "serial": self.serial,
            "collation": self.collation,
            "collatable": self.collatable,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PgColumn:
        return cls(
            name=str(obj["name"]),
            type=str(obj["type"]),
            kind=str(obj.get("kind") or "text"),
            nullable=bool(obj.get("nullable", True)),
            default=obj.get("default"),
            identity=str(obj.get("identity") or ""),
            generated=str(obj.get("generated") or ""),
            serial=bool(obj.get("serial")),
            collation=obj.get("collation"),
            collatable=bool(obj.get("collatable")),
        )

    def sql(self) -> str:
        """The column's definition in a CREATE TABLE statement."""
        if self.serial and self.type in SERIAL:
            return f"{q(self.name)} {SERIAL[self.type]}" + ("" if self.nullable else " NOT NULL")
        parts = [q(self.name), self.type]
        if self.collation:
            parts.append(f"COLLATE {self.collation}")
        if self.generated:
            parts.append(f"GENERATED ALWAYS AS ({self.default}) {self.generated.upper()}")
        elif self.identity:
            parts.append(f"GENERATED {self.identity.upper()} AS IDENTITY")
        elif self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if not self.nullable:
            parts.append("NOT NULL")
        return " ".join(parts)

    def ordered(self, table: str) -> str:
        """The column of `table` (its SQL name) in an ORDER BY or a comparison: text in byte order (the same
        on every server). Qualified: a bare name in ORDER BY would mean the output column of that name (the
        value cast to text)."""
        column = f"{table}.{q(self.name)}"
        return f'{column} COLLATE "C"' if self.collatable else column


@dataclass(frozen=True)
class PgTable:
    """A table's definition: its columns and primary key."""

    columns: tuple[PgColumn, ...]
    primary_key: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> PgColumn | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def canonical(self) -> bool:
        return tuple((c.name, c.type) for c in self.columns) == tuple((n, t) for n, t, _ in CANONICAL_COLUMNS)

    @property
    def stored(self) -> list[PgColumn]:
        """The columns a restore writes (generated ones are computed again)."""
        return [c for c in self.columns if not c.generated]

    @property
    def numbering(self) -> str:
        """How records are numbered: "primary key" (``line`` is the value of a one-column integer primary
        key) or "position" (``line`` is the row's place in the export order)."""
        if len(self.primary_key) == 1:
            column = self.column(self.primary_key[0])
            if column is not None and column.type in INTEGERS:
                return "primary key"
        return "position"

    def default_key(self) -> str | None:
        """The high-water mark column when none is named: a one-column integer primary key whose values
        come from a sequence (identity or serial)."""
        if self.numbering != "primary key":
            return None
        column = self.column(self.primary_key[0])
        return column.name if column is not None and (column.identity or column.serial) else None

    def definition(self) -> dict[str, Any]:
        return {"columns": [c.to_json() for c in self.columns], "primary_key": list(self.primary_key)}

    def shape(self) -> tuple[Any, ...]:
        """What a restore must find in an existing table to write into it: names, types, primary key."""
        return (tuple((c.name, c.type, bool(c.generated)) for c in self.columns), self.primary_key)

    def create_sql(self, schema: str, table: str) -> str:
        body = [c.sql() for c in self.columns]
        if self.primary_key:
            body.append(f"PRIMARY KEY ({', '.join(q(n) for n in self.primary_key)})")
        return f"CREATE TABLE {qualified(schema, table)} ({', '.join(body)})"

    def config(self, schema: str, table: str, key: str | None) -> dict[str, Any]:
        return {
            "format": "postgresql",
            "layout": "canonical" if self.canonical else "table",
            "schema": schema,
            "table": table,
            **self.definition(),
            "key": key,
            "numbering": self.numbering,
            "create_sql": self.create_sql(schema, table),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PgTable:
        columns = tuple(PgColumn.from_json(c) for c in config.get("columns", ()))
        return cls(columns, tuple(config.get("primary_key", ())))


def canonical_table() -> PgTable:
    columns = tuple(PgColumn(n, t, "text", nullable=not notnull) for n, t, notnull in CANONICAL_COLUMNS)
    return PgTable(columns, ("id",))


def is_pg_table(config: Mapping[str, Any]) -> bool:
    """A bundle of a PostgreSQL table's own layout."""
    return config.get("format") == "postgresql" and config.get("layout") == "table"


# --- values ------------------------------------------------------------------------------------------------


def value_json(kind: str, text: str | None) -> Any:
    """A value's JSON form from its PostgreSQL text (module docstring)."""
    if text is None:
        return None
    if kind == "int":
        return int(text)
    if kind == "bool":
        return text == "true"
    if kind == "float":
        return float(text)
    if kind == "numeric":
        if INTEGER_TEXT.fullmatch(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) and repr(number) == text else text
    if kind == "bytea":
        return {BLOB_KEY: base64.b64encode(bytes.fromhex(text[2:])).decode("ascii")}
    return text


def value_text(kind: str, value: Any) -> str | bytes | None:
    """The COPY input for a value's JSON form (bytes for bytea); ValueError for JSON the column's kind
    never holds."""
    if value is None:
        return None
    if isinstance(value, bool):
        if kind == "bool":
            return "t" if value else "f"
        raise ValueError("a boolean")
    if isinstance(value, int) and kind in ("int", "float", "numeric"):
        return str(value)
    if isinstance(value, float) and kind in ("float", "numeric"):
        return "NaN" if math.isnan(value) else FLOAT_TEXT.get(value) or repr(value)
    if isinstance(value, str) and kind in ("text", "numeric", "float"):
        if "\x00" in value:
            raise ValueError("text holding the NUL character, which PostgreSQL text cannot hold")
        return value
    if kind == "bytea" and isinstance(value, dict) and list(value) == [BLOB_KEY] and isinstance(value[BLOB_KEY], str):
        return base64.b64decode(value[BLOB_KEY], validate=True)
    what = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    raise ValueError(f"{what.get(type(value), type(value).__name__)}, which a {kind} column does not take")


def native_rows(batch: pa.RecordBatch, columns: Sequence[PgColumn], where: str) -> list[tuple[str | bytes | None, ...]]:
    """COPY rows for the records of a bundle of a table's own layout; UnsupportedFeatureError naming the
    record whose raw row does not fit the table (another table's row, a value of another kind)."""
    import json

    out = []
    names = [c.name for c in columns]
    for rid, raw in zip(batch.column("id").to_pylist(), batch.column("raw").to_pylist(), strict=True):
        column = ""
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict) or not set(names) <= obj.keys():
                raise ValueError("its columns differ from the table's")
            row = []
            for c in columns:
                column = c.name
                row.append(value_text(c.kind, obj[c.name]))
            out.append(tuple(row))
        except (ValueError, TypeError) as exc:
            at = f" column {column!r}:" if column else ""
            raise UnsupportedFeatureError(f"cannot restore record {rid!r} into PostgreSQL {where}:{at} {exc}") from None
    return out


def canonical_rows(batch: pa.RecordBatch, where: str) -> list[tuple[Any, ...]]:
    """COPY rows of the canonical layout; UnsupportedFeatureError for text PostgreSQL cannot hold (NUL)."""
    columns = [batch.column(n).to_pylist() for n, _, _ in CANONICAL_COLUMNS]
    rows = list(zip(*columns, strict=True))
    text_at = [i for i, (n, _, _) in enumerate(CANONICAL_COLUMNS) if n in CANONICAL_TEXT]
    for row in rows:
        for i in text_at:
            if row[i] is not None and "\x00" in row[i]:
                raise UnsupportedFeatureError(
                    f"cannot restore record {row[0]!r} into PostgreSQL {where}: its {CANONICAL_COLUMNS[i][0]!r} holds "
                    "the NUL character, which PostgreSQL text cannot hold; restore it into a folder or SQLite"
                )
    return rows


# --- transforms ----------------------------------------------------------------------------------------------


def table_renamer(old: str, new: str) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """Transform: the records of table `old` as table `new` gives them back (ids ``<new>#…``)."""
    prefix = f"{old}#"

    def rename(batch: pa.RecordBatch) -> pa.RecordBatch:
        ids = [f"{new}#{i.removeprefix(prefix)}" for i in batch.column("id").to_pylist()]
        arrays = [
            pa.array(ids, pa.string())
            if f.name == "id"
            else pa.array([f"table:{new}"] * batch.num_rows, pa.string())
            if f.name == "source"
            else batch.column(f.name)
            for f in CONVERSATIONS
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=CONVERSATIONS)

    return rename


class RowsAsLinesInOrder:
    """``plan.transform`` of a PostgreSQL table bundle restored into a folder: each row becomes the line
    ``raw + "\\n"`` of ``<table>.jsonl``, numbered in bundle order, with the typed fields the folder gives
    back when it is read (its JSON object parsed as any log line).

    A transform is called batch by batch, on every pass over the bundle from its first record, with the
    same batches each time: it remembers where each batch (by its first id, unique in a dataset) starts,
    so a second pass numbers the lines as the first did."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name
        self._starts: dict[str, tuple[int, int]] = {}
        self._next = (0, 0)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        rows = Rows()
        ids = batch.column("id").to_pylist()
        if not ids:
            return rows.flush()
        lines, size = self._starts.setdefault(ids[0], self._next)
        for raw in batch.column("raw").to_pylist():
            lines += 1
            line_record(rows, self.file_name, lines, size, raw + b"\n")
            size += len(raw) + 1
        self._next = (lines, size)
        return rows.flush()


def record_id(table: str, pk_values: Iterable[Any]) -> str:
    """``<table>#<key>``: a one-column key as its text (its JSON string or number), several as a JSON array."""
    values = list(pk_values)
    if len(values) == 1:
        value = values[0]
        return f"{table}#{value if isinstance(value, str) else canonical_json(value)}"
    return f"{table}#{canonical_json(values)}"
