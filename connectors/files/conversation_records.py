"""The canonical conversations record (:data:`aibackup.manifests.records.CONVERSATIONS`), parsed from a log line or a
SQLite row. The rules are the ones :mod:`aibackup.connectors.files.conversations` documents:

- A line is UTF-8 text (a UTF-8 byte-order mark at the start of a file is ignored) holding one JSON
  object. A line of only spaces/tabs/CR is **blank**: kept raw, ``valid`` false, never an error. Anything
  else (not UTF-8, not JSON, JSON that is not an object, a ``\\uD800``-``\\uDFFF`` escape that is not part of
  a surrogate pair and so is not text, a number Python cannot read) is **malformed**.
- Typed columns, by exact field name (no aliases): ``timestamp`` from an ISO 8601 string (what Python's
  ``datetime.fromisoformat`` reads: ``Z`` or an offset; a naive time is taken as UTC) or an epoch number
  (seconds; milliseconds when its absolute value is above 1e11), stored as UTC microseconds within years
  1-9999; ``cost`` from a finite JSON number, as float (-0.0 as 0.0); ``session_id``, ``user_id``,
  ``model``, ``input``, ``output`` when they are strings; ``messages`` (canonical JSON) when it is a list,
  and from SQLite also when it is text holding a JSON list. A field that is present but does not fit
  stays in ``extra``: the canonical JSON of every field not moved into a typed column (null when none).
  ``raw`` always keeps the exact bytes, so nothing is ever lost.
- A SQLite row is the JSON object ``{column: value}``: integers, floats and text as JSON, NULL as null, a
  blob as ``{"base64": "<standard base64>"}``; ``raw`` is its canonical JSON (sorted keys, no spaces).
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from aibackup.connectors.files.lines import compression_of
from aibackup.manifests.records import CONVERSATIONS
from aibackup.manifests.vectors import canonical_json

#: Rows per exported batch, and the raw bytes after which a batch is cut early (1 MB lines).
BATCH_ROWS = 2000
BATCH_BYTES = 32 * 1024 * 1024

STRING_FIELDS = ("session_id", "user_id", "model", "input", "output")
BOM = "\ufeff"
BLOB_KEY = "base64"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MIN_MICROS = (dt.datetime(1, 1, 1, tzinfo=dt.UTC) - EPOCH) // dt.timedelta(microseconds=1)
MAX_MICROS = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC) - EPOCH) // dt.timedelta(microseconds=1)
MILLIS_ABOVE = 1e11
#: A JSON escape of a UTF-16 surrogate: only then can json.loads produce a string that is not text.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def parse_timestamp(value: Any) -> int | None:
    """UTC microseconds since the epoch, or None when `value` is not a timestamp (see the module docstring)."""
    micros: int
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        micros = value * 1000 if abs(value) > MILLIS_ABOVE else value * 1_000_000
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        micros = round(value * 1000) if abs(value) > MILLIS_ABOVE else round(value * 1_000_000)
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        try:
            micros = (when - EPOCH) // dt.timedelta(microseconds=1)
        except OverflowError:
            return None
    else:
        return None
    return micros if MIN_MICROS <= micros <= MAX_MICROS else None


def parse_cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        cost = float(value)
    except OverflowError:
        return None
    # + 0.0 turns -0.0 into 0.0: SQLite stores an integral REAL as an integer and would lose the sign.
    return cost + 0.0 if math.isfinite(cost) else None


def _messages(value: Any, from_text: bool) -> str | None:
    if isinstance(value, list):
        return canonical_json(value)
    if from_text and isinstance(value, str):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return None
        return canonical_json(parsed) if isinstance(parsed, list) else None
    return None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _messages_text(value: Any) -> str | None:
    return _messages(value, True)


def _messages_list(value: Any) -> str | None:
    return _messages(value, False)


#: Typed column -> its parser (None: the value does not fit and stays in extra); one dict lookup per field.
PARSERS: dict[str, Any] = {"timestamp": parse_timestamp, "cost": parse_cost, "messages": _messages_list}
PARSERS.update(dict.fromkeys(STRING_FIELDS, _string))
PARSERS_SQL = dict(PARSERS, messages=_messages_text)


def typed_fields(obj: Mapping[str, Any], *, messages_text: bool = False) -> tuple[dict[str, Any], str | None]:
    """(typed column -> value, extra JSON) of one record object."""
    parsers = PARSERS_SQL if messages_text else PARSERS
    typed: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in obj.items():
        parse = parsers.get(key)
        got = None if parse is None else parse(value)
        if got is None:
            rest[key] = value
        else:
            typed[key] = got
    return typed, canonical_json(rest) if rest else None


def parse_line(raw: bytes, first: bool) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) for a good line, (None, None) for a blank one, (None, why) for a malformed one.
    `first`: the file's first line (may start with a byte-order mark). `why` never quotes the content."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start + 1})"
    if first and text.startswith(BOM):
        text = text[1:]
    if not text.strip(" \t\r\n"):
        return None, None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"
    except RecursionError:
        return None, "JSON nested too deeply to read"
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        return None, f"JSON that cannot be read ({str(exc).split(':')[0]})"
    if not isinstance(obj, dict):
        return None, f"a JSON {JSON_TYPES.get(type(obj), 'value')}, not an object"
    if SURROGATE_ESCAPE.search(text):
        try:
            canonical_json(obj).encode("utf-8")
        except UnicodeEncodeError:
            return None, "a \\u escape of a lone UTF-16 surrogate, which is not text"
    return obj, None


def sqlite_value(value: Any) -> Any:
    """A SQLite value as JSON (a blob as {"base64": ...})."""
    if isinstance(value, bytes):
        return {BLOB_KEY: base64.b64encode(value).decode("ascii")}
    return value


def from_sqlite_json(value: Any) -> Any:
    """Inverse of :func:`sqlite_value`; ValueError for JSON that is no SQLite value."""
    if value is None or isinstance(value, str | float) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, dict) and list(value) == [BLOB_KEY] and isinstance(value[BLOB_KEY], str):
        return base64.b64decode(value[BLOB_KEY], validate=True)
    raise ValueError("a value that is not a SQLite integer, real, text, blob or null")


COLUMN = {name: n for n, name in enumerate(CONVERSATIONS.names)}
EXTRA, RAW, VALID = COLUMN["extra"], COLUMN["raw"], COLUMN["valid"]


class Rows:
    """Builds canonical conversations batches row by row (rows as lists, transposed once per batch)."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.size = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def full(self) -> bool:
        return len(self.rows) >= BATCH_ROWS or self.size >= BATCH_BYTES

    def add(self, values: Mapping[str, Any]) -> None:
        self.rows.append([values.get(name) for name in COLUMN])
        self.size += len(values["raw"])

    def add_line(self, source: str, line: int, offset: int, raw: bytes, obj: dict[str, Any] | None) -> None:
        """One line of a file (`obj` None: blank or malformed, kept raw)."""
        row: list[Any] = [
            f"{source}#{line}",
            source,
            line,
            offset,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            raw,
            obj is not None,
        ]
        if obj is not None:
            typed, row[EXTRA] = typed_fields(obj)
            for name, value in typed.items():
                row[COLUMN[name]] = value
        self.rows.append(row)
        self.size += len(raw)

    def flush(self) -> pa.RecordBatch:
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(COLUMN)
        arrays = [pa.array(list(values), f.type) for values, f in zip(columns, CONVERSATIONS, strict=True)]
        self.rows = []
        self.size = 0
        return pa.RecordBatch.from_arrays(arrays, schema=CONVERSATIONS)


class FileSummaries:
    """The per-file summary a canonical-layout table export records (``config["files"]``): bytes, lines and
    sha256 of each source file's rows, so a restore into a folder proves every file it writes."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, values: Mapping[str, Any]) -> None:
        summary = self.files.setdefault(values["source"], {"bytes": 0, "lines": 0, "sha": hashlib.sha256()})
        summary["bytes"] += len(values["raw"])
        summary["lines"] += 1
        summary["sha"].update(values["raw"])

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "bytes": s["bytes"],
                "lines": s["lines"],
                "sha256": s["sha"].hexdigest(),
                "compression": compression_of(n),
            }
            for n, s in sorted(self.files.items())
        ]


def line_record(rows: Rows, source: str, line: int, offset: int, raw: bytes) -> str | None:
    """Parse one line into `rows` (malformed or blank kept raw); returns the problem of a malformed line."""
    obj, problem = parse_line(raw, line == 1)
    rows.add_line(source, line, offset, raw, obj)
    return problem


class RowsAsLines:
    """``plan.transform`` of a SQLite (own layout) bundle restored into a folder: each row becomes the line
    ``raw + "\\n"`` of ``<table>.jsonl``, numbered in bundle (rowid) order, with the typed fields the folder
    will give back when it is read (its JSON object parsed as any log line).

    Line numbers and offsets run across batches, but a transform is called batch by batch and possibly on
    several passes over the bundle: it remembers, per batch, the (lines, bytes) reached after the batch's
    last rowid, and starts a batch from the entry of the largest rowid below its first one. Rowids rise
    strictly through a bundle (validate_records refuses one where they do not)."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name
        self._ends: list[tuple[int, int, int]] = []  # (last rowid of a batch, lines, bytes) after it, sorted

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        rowids = batch.column("line").to_pylist()
        rows = Rows()
        if not rowids:
            return rows.flush()
        at = bisect.bisect_left(self._ends, (rowids[0],))
        lines, size = self._ends[at - 1][1:] if at else (0, 0)
        previous = self._ends[at - 1][0] if at else None
        for rowid, raw in zip(rowids, batch.column("raw").to_pylist(), strict=True):
            if previous is not None and rowid <= previous:
                raise ValueError(f"rowids do not rise through the bundle (rowid {rowid} after {previous})")
            previous = rowid
            lines += 1
            line_record(rows, self.file_name, lines, size, raw + b"\n")
            size += len(raw) + 1
        entry = (rowids[-1], lines, size)
        if entry not in self._ends:
            bisect.insort(self._ends, entry)
        return rows.flush()
