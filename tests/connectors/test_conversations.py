"""Conversation logs against real files and real SQLite databases: export, incremental chains, restores into
folders and tables (and across them), each proven record by record and file by file."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from aibackup.connectors.base import DatasetDescription
from aibackup.connectors.files import conversations_sqlite, lines
from aibackup.connectors.files.conversation_records import parse_timestamp, typed_fields
from aibackup.connectors.files.conversations import ConversationsConnector
from aibackup.connectors.files.sqlite_layout import renamed_sql
from aibackup.connectors.registry import open_connector
from aibackup.errors import (
    DatasetNotFoundError,
    SourceDataError,
    TargetNotEmptyError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
)
from aibackup.manifests.records import CONVERSATIONS
from tests.logdata import (
    TEXTS,
    exchange,
    export_all,
    line,
    lines_of,
    prove,
    restore,
    rows_of,
    sha,
    tool_call_messages,
    write,
)

UTC = dt.UTC


def source(path: Path | str, **options: Any) -> ConversationsConnector:
    conn = open_connector(f"conversations:{path}", options=options)
    assert isinstance(conn, ConversationsConnector)
    return conn


def sqlite_source(path: Path, table: str = "logs") -> ConversationsConnector:
    conn = open_connector(f"conversations+sqlite:{path}?table={table}")
    assert isinstance(conn, ConversationsConnector)
    return conn


def seed_folder(root: Path, n: int = 60) -> dict[str, bytes]:
    """A log folder as production holds it: plain, gzip and zstd files, CRLF, a missing final newline, an
    empty file, a 1 MB line, nested tool calls, OpenAI-style message lists. Returns name -> content."""
    rng = random.Random(7)
    records = [exchange(i, rng) for i in range(n)]
    files = {
        "2026-11-24.jsonl": lines_of(records[:20]),
        "2026-11-25.jsonl.gz": lines_of(records[20:35], newline=b"\r\n"),
        "eu/2026-11-25.jsonl.zst": lines_of(records[35:50], final=False),
        "eu/empty.jsonl": b"",
        "long.jsonl": line({"user_id": "u", "input": "é" * 500_000, "output": "🎉" * 1000}) + b"\n",
        "chat.jsonl": lines_of([{"messages": tool_call_messages(i), "model": "gpt-4o"} for i in range(10)]),
    }
    for name, data in files.items():
        write(root / name, data)
    return files


# --- records ----------------------------------------------------------------------------------------------


def test_typed_fields_follow_the_documented_rules() -> None:
    def micros(*parts: int) -> int:
        return int(dt.datetime(*parts).replace(tzinfo=UTC).timestamp()) * 1_000_000  # type: ignore[arg-type]

    assert parse_timestamp("2026-11-25T02:00:00Z") == micros(2026, 11, 25, 2)
    assert parse_timestamp("2026-11-25T04:00:00+02:00") == micros(2026, 11, 25, 2)
    assert parse_timestamp("2026-11-25 02:00:00") == micros(2026, 11, 25, 2)  # naive: UTC
    assert parse_timestamp("2026-11-25T02:00:00.5Z") == micros(2026, 11, 25, 2) + 500_000
    assert parse_timestamp(1_790_000_000) == 1_790_000_000_000_000  # seconds
    assert parse_timestamp(1_790_000_000_123) == 1_790_000_000_123_000  # milliseconds above 1e11
    assert parse_timestamp(1_790_000_000.25) == 1_790_000_000_250_000
    for bad in ["yesterday", "1790000000", True, None, float("nan"), 10**30, [1], "99999-01-01"]:
        assert parse_timestamp(bad) is None, bad
    typed, extra = typed_fields(
        {
            "timestamp": "not a time",
            "cost": 3,
            "user_id": 42,
            "model": "m",
            "messages": [{"role": "user", "content": "ü"}],
            "conversation_id": "c1",
            "input": None,
        }
    )
    assert typed == {"cost": 3.0, "model": "m", "messages": '[{"content":"ü","role":"user"}]'}
    assert isinstance(typed["cost"], float)
    # Everything else, typed fields that did not parse included, is in extra; aliases are not typed.
    assert json.loads(extra or "") == {"timestamp": "not a time", "user_id": 42, "conversation_id": "c1", "input": None}
    assert typed_fields({"cost": float("inf")})[0] == {}
    assert typed_fields({"cost": -0.0})[0] == {"cost": 0.0}
    assert typed_fields({"user_id": "u"}) == ({"user_id": "u"}, None)


def test_folder_export_keeps_every_byte_and_types_what_it_can(tmp_path: Path) -> None:
    files = seed_folder(tmp_path / "logs")
    conn = source(tmp_path / "logs")
    desc, batches, state = export_all(conn)
    assert desc.name == "logs" and desc.kind == "conversations"
    assert all(b.schema.equals(CONVERSATIONS) for b in batches)
    rows = rows_of(batches)
    assert conn.describe()[0].rows == len(rows) == 20 + 15 + 15 + 1 + 10
    by_file: dict[str, bytes] = {}
    for row in rows:
        assert row["id"] == f"{row['source']}#{row['line']}"
        assert row["offset"] == len(by_file.get(row["source"], b""))
        by_file[row["source"]] = by_file.get(row["source"], b"") + row["raw"]
    assert by_file == {k: v for k, v in files.items() if v}
    summary = {f["name"]: f for f in state.config["files"]}  # type: ignore[index]
    assert summary["eu/empty.jsonl"] == {
        "name": "eu/empty.jsonl",
        "bytes": 0,
        "lines": 0,
        "sha256": sha(b""),
        "compression": None,
    }
    assert summary["2026-11-25.jsonl.gz"]["sha256"] == sha(files["2026-11-25.jsonl.gz"])
    assert summary["2026-11-25.jsonl.gz"]["compression"] == "gzip"
    first = rows[0]
    assert first["valid"] and first["user_id"].startswith("user-") and first["model"] == "gpt-4o"
    assert first["timestamp"] == dt.datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    assert first["messages"] == json.dumps(
        tool_call_messages(0), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    extra = json.loads(first["extra"])
    assert extra["big_int"] == 2**70 and extra["tokens"]["in"] >= 0 and "user_id" not in extra
    assert [r["raw"].endswith(b"\r\n") for r in rows if r["source"] == "2026-11-25.jsonl.gz"] == [True] * 15
    assert not rows[-1]["raw"].endswith(b"\n") or rows[-1]["source"] != "eu/2026-11-25.jsonl.zst"
    long_row = next(r for r in rows if r["source"] == "long.jsonl")
    assert long_row["input"] == "é" * 500_000
    assert {r["timestamp"] is not None for r in rows if r["source"].startswith("2026")} == {True}


def test_round_trip_into_a_folder_is_byte_identical(tmp_path: Path) -> None:
    files = seed_folder(tmp_path / "logs")
    desc, batches, _ = export_all(source(tmp_path / "logs"))
    conn, plan = restore(f"conversations:{tmp_path / 'out'}", desc, batches)
    prove(conn, plan, batches)
    for name, data in files.items():
        written = tmp_path / "out" / name.removesuffix(".gz").removesuffix(".zst")
        assert written.read_bytes() == data, name
    assert conn.extra_checks(plan) == [("files", True, "6 files, sha256 match")]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".aibackup-tmp")]
    # A damaged file after the restore fails the files check, naming it.
    (tmp_path / "out" / "long.jsonl").write_bytes(b"{}\n")
    assert conn.extra_checks(plan) == [("files", False, "long.jsonl: sha256 differs")]


def test_bad_lines_fail_by_default_naming_file_and_line_only(tmp_path: Path) -> None:
    secret = "sk-live-do-not-print-me"
    write(
        tmp_path / "logs" / "a.jsonl",
        lines_of([{"input": "ok"}, {"input": "ok 2"}])
        + b'{"input": "'
        + secret.encode()
        + b'"\n'
        + b"\n"
        + b"[1, 2]\n"
        + b"\xff\xfe not utf8\n"
        + b'{"tail": true}',
    )
    with pytest.raises(SourceDataError) as err:
        list(source(tmp_path / "logs").export(source(tmp_path / "logs").describe()[0]))
    message = str(err.value)
    assert "a.jsonl:3: not valid JSON" in message and "--on-bad-line skip" in message
    assert secret not in message and "\n" not in message
    # skip: every line kept raw, malformed ones invalid, and a note naming them.
    desc, batches, state = export_all(source(tmp_path / "logs", on_bad_line="skip"))
    rows = rows_of(batches)
    assert [r["valid"] for r in rows] == [True, True, False, False, False, False, True]
    assert [r["extra"] for r in rows[2:6]] == [None] * 4
    assert b"".join(r["raw"] for r in rows) == (tmp_path / "logs" / "a.jsonl").read_bytes()
    shown = lines.shown(str(tmp_path / "logs" / "a.jsonl"))
    assert state.notes == (
        f"3 malformed lines kept raw, e.g. {shown}:3, {shown}:5, {shown}:6",
        "1 blank line kept raw",
    )
    conn, plan = restore(f"conversations:{tmp_path / 'out'}", desc, batches)
    prove(conn, plan, batches)  # read back without failing on the malformed lines
    assert (tmp_path / "out" / "a.jsonl").read_bytes() == (tmp_path / "logs" / "a.jsonl").read_bytes()
    with pytest.raises(UsageError, match="on-bad-line"):
        source(tmp_path / "logs", on_bad_line="ignore")


def test_an_unfinished_last_line_says_so(tmp_path: Path) -> None:
    write(tmp_path / "live.jsonl", b'{"a": 1}\n{"b": ')
    conn = source(tmp_path / "live.jsonl")
    with pytest.raises(SourceDataError, match=r"live.jsonl:2: .*write in progress"):
        list(conn.export(conn.describe()[0]))


# --- incremental ------------------------------------------------------------------------------------------


def test_three_nights_incremental_with_a_restore_in_the_middle(tmp_path: Path) -> None:
    rng = random.Random(3)
    root = tmp_path / "logs"
    nights = [[exchange(i, rng) for i in range(k * 30, k * 30 + 30)] for k in range(3)]
    names = ["app.jsonl", "archive.jsonl.gz", "stream.jsonl.zst"]
    for n, name in enumerate(names):
        write(root / name, lines_of(nights[0][n * 10 : n * 10 + 10]))
    desc, chain, state = export_all(source(root))
    assert not state.incremental
    snapshots = []
    for night in (1, 2):
        snapshots.append({n: (root / n).read_bytes() for n in names})
        for n, name in enumerate(names):
            write(root / name, lines_of(nights[night][n * 10 : n * 10 + 10]), append=True)
        if night == 2:
            write(root / "new.jsonl", lines_of(nights[2][:5]))  # a file not seen before: read whole
        desc, new, state2 = export_all(source(root), since=state.state)
        assert state2.incremental and state2.notes == ()
        assert json.loads(json.dumps(state2.state)) == state2.state  # the manifest keeps it as JSON
        new_rows = rows_of(new)
        assert len(new_rows) == 30 + (5 if night == 2 else 0)
        assert {r["line"] for r in new_rows if r["source"] == "app.jsonl"} == set(
            range(night * 10 + 1, night * 10 + 11)
        )
        chain = chain + new  # the core lists the previous bundle's parts, then the new ones
        state = state2
        # The chain alone restores the whole log as it is now (a restore between nights included).
        out = tmp_path / f"restored-{night}"
        conn, plan = restore(f"conversations:{out}", desc, chain)
        prove(conn, plan, chain)
        for name in names:
            assert (out / name.removesuffix(".gz").removesuffix(".zst")).read_bytes() == _plain(root / name)
        _, full, _ = export_all(source(root))
        assert sorted(r["id"] for r in rows_of(full)) == sorted(r["id"] for r in rows_of(chain))
    # Nothing new: an incremental export of nothing.
    _, nothing, state3 = export_all(source(root), since=state.state)
    assert nothing == [] and state3.incremental


def _plain(path: Path) -> bytes:
    [f] = lines.expand(str(path))
    return b"".join(raw for _, _, raw in lines.iter_lines(f))


@pytest.mark.parametrize(
    "change, why",
    [
        ("truncate", "shorter than at the last backup"),
        ("rewrite", "was rewritten"),
        ("delete", "is gone"),
        ("rotate", "shorter than at the last backup"),
        ("grow-unfinished", "had no newline and has grown"),
    ],
)
def test_a_changed_file_gives_a_full_export_with_a_note(tmp_path: Path, change: str, why: str) -> None:
    root = tmp_path / "logs"
    write(root / "a.jsonl", lines_of([{"n": i} for i in range(10)], final=change != "grow-unfinished"))
    write(root / "b.jsonl.gz", lines_of([{"m": i} for i in range(5)]))
    _, _, state = export_all(source(root))
    path = root / "a.jsonl"
    if change == "truncate":
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:3]))
    elif change == "rewrite":
        path.write_bytes(path.read_bytes().replace(b'{"n": 3}', b'{"n": 9}') + b'{"n": 10}\n')
    elif change == "delete":
        path.unlink()
    elif change == "rotate":
        path.rename(root / "a.jsonl.1")
        write(path, b'{"n": 100}\n')
    else:
        write(path, b'\n{"more": 1}\n', append=True)  # the unfinished line gets its newline
    _, batches, after = export_all(source(root), since=state.state)
    assert not after.incremental
    assert why in after.notes[0]
    # A rotated file's new name is not a log's: left out, and the backup says so.
    rotated = ["1 file(s) of the folder left out, not JSONL (*.jsonl, *.jsonl.gz, *.jsonl.zst): 'a.jsonl.1'"]
    assert list(after.notes[1:]) == (rotated if change == "rotate" else [])
    assert sum(b.num_rows for b in batches) == source(root).describe()[0].rows  # everything again


def test_many_files_interleaved_by_a_chain(tmp_path: Path) -> None:
    # More files than the writer keeps open, their records interleaved by a two-night chain.
    root = tmp_path / "logs"
    for n in range(40):
        write(root / f"f{n:02d}.jsonl", lines_of([{"file": n, "night": 1}]))
    desc, chain, state = export_all(source(root))
    for n in range(40):
        write(root / f"f{n:02d}.jsonl", lines_of([{"file": n, "night": 2}]), append=True)
    desc, new, _ = export_all(source(root), since=state.state)
    chain += new
    conn, plan = restore(f"conversations:{tmp_path / 'out'}", desc, chain)
    prove(conn, plan, chain)
    assert (tmp_path / "out" / "f39.jsonl").read_bytes() == (root / "f39.jsonl").read_bytes()


def test_compressed_file_rewritten_is_detected(tmp_path: Path) -> None:
    write(tmp_path / "z.jsonl.zst", lines_of([{"n": i} for i in range(5)]))
    _, _, state = export_all(source(tmp_path / "z.jsonl.zst"))
    write(tmp_path / "z.jsonl.zst", lines_of([{"n": i + 1} for i in range(6)]))  # recompressed, different
    _, _, after = export_all(source(tmp_path / "z.jsonl.zst"), since=state.state)
    assert not after.incremental and "rewritten" in after.notes[0]


# --- SQLite -----------------------------------------------------------------------------------------------


def seed_sqlite(path: Path, rows: int = 40, table: str = "logs", start: int = 0) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            f'CREATE TABLE IF NOT EXISTS "{table}" (user_id TEXT, timestamp TEXT, cost REAL, input TEXT, '
            "output TEXT, messages TEXT, tokens INTEGER, payload BLOB, score NUMERIC)"
        )
        for i in range(start, start + rows):
            db.execute(
                f'INSERT INTO "{table}" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (
                    f"u{i % 7}",
                    f"2026-11-25 02:{i % 60:02d}:00" if i % 3 else 1_790_000_000 + i,
                    [0.25, None, 3, float("inf")][i % 4],
                    TEXTS[i % len(TEXTS)],
                    None if i % 5 == 0 else "réponse ✓",
                    json.dumps(tool_call_messages(i)) if i % 4 == 0 else None,
                    2**62 + i,
                    bytes(range(i % 256)) if i % 2 else None,
                    "n/a" if i % 6 == 0 else i / 3,
                ),
            )


def test_sqlite_rows_are_records(tmp_path: Path) -> None:
    seed_sqlite(tmp_path / "db.sqlite")
    desc, batches, state = export_all(sqlite_source(tmp_path / "db.sqlite"))
    assert desc.name == "logs" and desc.rows == 40 and not state.incremental
    assert desc.config["layout"] == "table" and "CREATE TABLE" in desc.config["create_sql"]
    rows = rows_of(batches)
    assert [r["id"] for r in rows[:2]] == ["logs#1", "logs#2"]
    assert {r["source"] for r in rows} == {"table:logs"} and {r["offset"] for r in rows} == {None}
    row1 = rows[1]  # i = 1
    assert json.loads(row1["raw"]) == {
        "user_id": "u1",
        "timestamp": "2026-11-25 02:01:00",
        "cost": None,
        "input": TEXTS[1],
        "output": "réponse ✓",
        "messages": None,
        "tokens": 2**62 + 1,
        "payload": {"base64": "AA=="},
        "score": 1 / 3,
    }
    assert row1["timestamp"] == dt.datetime(2026, 11, 25, 2, 1, tzinfo=UTC) and row1["cost"] is None
    assert json.loads(rows[0]["messages"]) == tool_call_messages(0)  # JSON text in a messages column
    assert rows[3]["cost"] is None and '"cost":Infinity' in rows[3]["extra"]
    # TEXT affinity stored the epoch as the string "1790000000": not ISO 8601, so it stays in extra.
    assert rows[0]["timestamp"] is None and '"timestamp":"1790000000"' in rows[0]["extra"]


def test_sqlite_export_runs_in_another_thread(tmp_path: Path) -> None:
    # The core reads exports in a background thread (one thread at a time).
    seed_sqlite(tmp_path / "db.sqlite", 5)
    conn = sqlite_source(tmp_path / "db.sqlite")
    [desc] = conn.describe()
    with ThreadPoolExecutor(1) as pool:
        batches = pool.submit(lambda: list(conn.export(desc))).result()
    assert sum(b.num_rows for b in batches) == 5
    state = conn.export_state("logs")
    assert state is not None and json.loads(json.dumps(state.state)) == state.state


def test_sqlite_incremental_by_rowid(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    seed_sqlite(db, 10)
    desc, chain, state = export_all(sqlite_source(db))
    for night in range(2):
        seed_sqlite(db, 5, start=10 + night * 5)
        desc, new, state = export_all(sqlite_source(db), since=state.state)
        assert state.incremental and [r["line"] for r in rows_of(new)] == list(range(11 + 5 * night, 16 + 5 * night))
        chain += new
    conn, plan = restore(f"conversations+sqlite:{tmp_path / 'copy.sqlite'}?table=restored", desc, chain)
    prove(conn, plan, chain)
    # Deletes of old rows, a replaced last row and a changed definition each give a full export.
    with sqlite3.connect(db) as native:
        native.execute("DELETE FROM logs WHERE rowid = 3")
    _, batches, after = export_all(sqlite_source(db), since=state.state)
    assert not after.incremental and "deleted or replaced" in after.notes[0] and len(rows_of(batches)) == 19
    with sqlite3.connect(db) as native:
        native.execute("DELETE FROM logs WHERE rowid = 20")
        native.execute("INSERT INTO logs (rowid, user_id) VALUES (20, 'someone else')")
    _, _, again = export_all(sqlite_source(db), since=after.state)
    assert not again.incremental and "deleted or replaced" in again.notes[0]
    with sqlite3.connect(db) as native:
        native.execute("ALTER TABLE logs ADD COLUMN extra_col TEXT")
    _, _, changed = export_all(sqlite_source(db), since=again.state)
    assert not changed.incremental and "definition" in changed.notes[0]


def test_sqlite_to_sqlite_keeps_rowids_types_and_definition(tmp_path: Path) -> None:
    seed_sqlite(tmp_path / "db.sqlite")
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("DELETE FROM logs WHERE rowid % 4 = 0")  # gaps in the rowids
    desc, batches, _ = export_all(sqlite_source(tmp_path / "db.sqlite"))
    conn, plan = restore(f"conversations+sqlite:{tmp_path / 'out.sqlite'}?table=other", desc, batches)
    prove(conn, plan, batches)
    with sqlite3.connect(tmp_path / "db.sqlite") as a, sqlite3.connect(tmp_path / "out.sqlite") as b:
        query = "SELECT rowid, *, typeof(cost), typeof(score), typeof(payload) FROM {} ORDER BY rowid"
        assert a.execute(query.format("logs")).fetchall() == b.execute(query.format("other")).fetchall()
        assert 'CREATE TABLE "other" (user_id TEXT' in b.execute("SELECT sql FROM sqlite_master").fetchone()[0]


def test_cross_format_restores_pass_the_checks(tmp_path: Path) -> None:
    # JSONL folder -> SQLite (canonical layout) -> backed up again -> folder: the same bytes.
    files = seed_folder(tmp_path / "logs", n=30)
    desc, batches, _ = export_all(source(tmp_path / "logs"))
    conn, plan = restore(f"conversations+sqlite:{tmp_path / 'db.sqlite'}?table=t", desc, batches)
    prove(conn, plan, batches)
    desc2, batches2, state2 = export_all(sqlite_source(tmp_path / "db.sqlite", "t"))
    assert desc2.config["layout"] == "canonical"
    assert {f["name"]: f["sha256"] for f in state2.config["files"]} == {  # type: ignore[index]
        f["name"]: f["sha256"] for f in desc.config["files"] if f["bytes"]
    }
    conn2, plan2 = restore(f"conversations:{tmp_path / 'back'}", desc2, batches2)
    prove(conn2, plan2, batches2)
    for name, data in files.items():
        if data:
            assert (tmp_path / "back" / name.removesuffix(".gz").removesuffix(".zst")).read_bytes() == data
    # A table of its own layout -> a folder: one JSON line per row, read back as such.
    seed_sqlite(tmp_path / "native.sqlite")
    desc3, whole, _ = export_all(sqlite_source(tmp_path / "native.sqlite"))
    batches3 = [b.slice(i, 7) for b in whole for i in range(0, b.num_rows, 7)]  # numbering runs across batches
    conn3, plan3 = restore(f"conversations:{tmp_path / 'rows'}", desc3, batches3)
    assert plan3.notes and "logs.jsonl" in plan3.notes[0]
    actual = prove(conn3, plan3, batches3)
    lines_back = (tmp_path / "rows" / "logs.jsonl").read_bytes().splitlines()
    assert [json.loads(x) for x in lines_back] == [json.loads(r["raw"]) for r in rows_of(batches3)]
    assert rows_of(actual)[1]["id"] == "logs.jsonl#2"


def test_renamed_create_table_statements() -> None:
    assert renamed_sql('CREATE TABLE "a ""(b)" (x INT)', "n") == 'CREATE TABLE "n" (x INT)'
    assert renamed_sql("create temp table if not exists main.[t (1)](x)", "n") == 'CREATE TABLE "n" (x)'
    assert renamed_sql("CREATE TABLE `t`\n(x, y)", 'q"') == 'CREATE TABLE "q""" (x, y)'


# --- modes, refusals, errors ------------------------------------------------------------------------------


def test_folder_modes(tmp_path: Path) -> None:
    write(tmp_path / "logs" / "a.jsonl", lines_of([{"n": 1}, {"n": 2}]))
    desc, batches, _ = export_all(source(tmp_path / "logs"))
    out = tmp_path / "out"
    write(out / "a.jsonl", b"old\n")
    write(out / "unrelated.txt", b"keep me\n")
    write(out / "other.jsonl", b'{"not": "from the bundle"}\n')  # outside the restore's scope
    with pytest.raises(TargetNotEmptyError, match=r"a\.jsonl already exist"):
        restore(f"conversations:{out}", desc, batches)
    with pytest.raises(UnsupportedFeatureError, match="merge is not supported"):
        restore(f"conversations:{out}", desc, batches, mode="merge")
    conn, plan = restore(f"conversations:{out}", desc, batches, mode="overwrite")
    prove(conn, plan, batches)
    assert (out / "a.jsonl").read_bytes() == (tmp_path / "logs" / "a.jsonl").read_bytes()
    assert (out / "unrelated.txt").read_bytes() == b"keep me\n"
    assert (out / "other.jsonl").read_bytes() == b'{"not": "from the bundle"}\n'
    # A target folder whose name ends in .jsonl keeps that name before and after it exists.
    conn, plan = restore(f"conversations:{tmp_path / 'restored.jsonl'}", desc, batches)
    assert plan.target.name == "restored.jsonl"
    prove(conn, plan, batches)
    write(tmp_path / "afile", b"")
    with pytest.raises(UsageError, match="is a file"):
        open_connector(f"conversations:{tmp_path / 'afile'}", target=True)


def test_sqlite_modes(tmp_path: Path) -> None:
    seed_sqlite(tmp_path / "db.sqlite", 6)
    desc, batches, _ = export_all(sqlite_source(tmp_path / "db.sqlite"))
    target = f"conversations+sqlite:{tmp_path / 'out.sqlite'}?table=t"
    restore(target, desc, batches)
    with pytest.raises(TargetNotEmptyError, match="already holds 6 rows"):
        restore(target, desc, batches)
    conn, plan = restore(target, desc, batches, mode="overwrite")
    prove(conn, plan, batches)
    with sqlite3.connect(tmp_path / "out.sqlite") as db:
        db.execute("UPDATE t SET user_id = 'changed' WHERE rowid = 2")
        db.execute("INSERT INTO t (rowid, user_id) VALUES (100, 'extra')")
    conn, plan = restore(target, desc, batches, mode="merge")
    with sqlite3.connect(tmp_path / "out.sqlite") as db:
        assert db.execute("SELECT user_id FROM t WHERE rowid IN (2, 100) ORDER BY rowid").fetchall() == [
            ("u1",),  # rowid 2 is seed row i = 1
            ("extra",),
        ]
    # A JSONL bundle cannot merge into a table of another layout.
    write(tmp_path / "logs" / "a.jsonl", lines_of([{"n": 1}]))
    jdesc, jbatches, _ = export_all(source(tmp_path / "logs"))
    with pytest.raises(UnsupportedFeatureError, match="columns differ"):
        restore(target, jdesc, jbatches, mode="merge")
    # Into the canonical layout, merge replaces records by id (no duplicates).
    canonical = f"conversations+sqlite:{tmp_path / 'out.sqlite'}?table=c"
    restore(canonical, jdesc, jbatches)
    conn, plan = restore(canonical, jdesc, jbatches, mode="merge")
    prove(conn, plan, jbatches)


def test_sqlite_generated_columns_and_bad_text(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("CREATE TABLE logs (a INTEGER, b TEXT, doubled AS (a * 2) STORED, tag AS ('#' || b))")
        db.executemany("INSERT INTO logs (a, b) VALUES (?, ?)", [(1, "x"), (2, "ÿ")])
    desc, batches, _ = export_all(sqlite_source(tmp_path / "db.sqlite"))
    assert json.loads(rows_of(batches)[1]["raw"]) == {"a": 2, "b": "ÿ", "doubled": 4, "tag": "#ÿ"}
    conn, plan = restore(f"conversations+sqlite:{tmp_path / 'out.sqlite'}?table=copy", desc, batches)
    prove(conn, plan, batches)  # generated columns computed again, equal
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("INSERT INTO logs (a, b) VALUES (3, CAST(X'FF41' AS TEXT))")
    with pytest.raises(SourceDataError, match="row 3 holds text that is not valid UTF-8"):
        export_all(sqlite_source(tmp_path / "db.sqlite"))


def hand_built(tmp_path: Path, name: str) -> tuple[DatasetDescription, list[pa.RecordBatch]]:
    raw = b'{"input": "x"}\n'
    batch = pa.RecordBatch.from_pylist(
        [
            {
                "id": f"{name}#1",
                "source": name,
                "line": 1,
                "offset": 0,
                "extra": None,
                "raw": raw,
                "valid": True,
                "input": "x",
            }
        ],
        schema=CONVERSATIONS,
    )
    config = {"format": "jsonl", "files": [{"name": name, "bytes": len(raw), "lines": 1, "sha256": sha(raw)}]}
    return DatasetDescription("logs", config, 1, kind="conversations"), [batch]


@pytest.mark.parametrize("name", ["../evil.jsonl", "/etc/evil.jsonl", "a/../../evil.jsonl", "", "a//b.jsonl"])
def test_names_leaving_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    desc, batches = hand_built(tmp_path, name)
    with pytest.raises(UnsupportedFeatureError, match="leave the target folder"):
        restore(f"conversations:{tmp_path / 'out'}", desc, batches)
    # Listed nowhere but in the records: refused while validating, before anything is written.
    desc_ok, _ = hand_built(tmp_path, "fine.jsonl")
    conn = open_connector(f"conversations:{tmp_path / 'out'}", target=True)
    plan = conn.plan_import(desc_ok, "logs", mode="create", allow_lossy=False)
    with pytest.raises(UnsupportedFeatureError):
        conn.validate_records(plan, batches)
    assert not (tmp_path / "evil.jsonl").exists() and not (tmp_path / "out" / "fine.jsonl").exists()


def test_a_symlinked_folder_leading_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "sub")
    desc, batches = hand_built(tmp_path, "sub/x.jsonl")
    with pytest.raises(UnsupportedFeatureError, match="link leading out"):
        restore(f"conversations:{tmp_path / 'out'}", desc, batches)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_records_that_do_not_form_the_file_are_refused(tmp_path: Path) -> None:
    desc, [batch] = hand_built(tmp_path, "a.jsonl")
    shifted = batch.set_column(3, "offset", pa.array([5], pa.int64()))
    conn = open_connector(f"conversations:{tmp_path / 'out'}", target=True)
    plan = conn.plan_import(desc, "logs", mode="create", allow_lossy=False)
    with pytest.raises(UnsupportedFeatureError, match="line after line"):
        conn.validate_records(plan, [shifted])


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        source(tmp_path / "missing")
    with pytest.raises(DatasetNotFoundError, match="no file matches"):
        source(tmp_path / "*.jsonl")
    with pytest.raises(DatasetNotFoundError, match=r"SQLite database .* does not exist"):
        sqlite_source(tmp_path / "missing.sqlite")
    seed_sqlite(tmp_path / "db.sqlite", 1)
    with pytest.raises(DatasetNotFoundError, match="table 'nope' not found"):
        sqlite_source(tmp_path / "db.sqlite", "nope")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database, not at all, really" * 100)
    with pytest.raises(SourceDataError, match="not a usable SQLite database"):
        sqlite_source(tmp_path / "junk.sqlite")
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID")
        db.execute("CREATE VIEW v AS SELECT 1")
    for table, what in [("kv", "WITHOUT ROWID"), ("v", "a view")]:
        with pytest.raises(UnsupportedFeatureError, match=what):
            sqlite_source(tmp_path / "db.sqlite", table)
    write(tmp_path / "logs" / "a.jsonl", b"{}\n")
    with pytest.raises(DatasetNotFoundError, match="holds one dataset, 'logs', not 'other'"):
        source(tmp_path / "logs").describe(["other"])
    (tmp_path / "logs" / "b.jsonl.gz").write_bytes(b"garbage")
    conn = source(tmp_path / "logs")
    with pytest.raises(SourceDataError, match=r"b\.jsonl\.gz: damaged gzip file"):
        export_all(conn)


def test_a_locked_database_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversations_sqlite, "BUSY_TIMEOUT_S", 0.2)
    seed_sqlite(tmp_path / "db.sqlite", 3)
    blocker = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UnavailableError, match="database is locked"):
            sqlite_source(tmp_path / "db.sqlite")
        with pytest.raises(UnavailableError, match="database is locked"):
            open_connector(f"conversations+sqlite:{tmp_path / 'db.sqlite'}?table=t", target=True)
    finally:
        blocker.rollback()
        blocker.close()


def test_sqlite_rows_with_zero_and_negative_rowids_are_backed_up(tmp_path: Path) -> None:
    """An INTEGER PRIMARY KEY may be any 64-bit integer: a full export takes every row, whatever its rowid."""
    import sqlite3

    from aibackup.connectors.registry import open_connector

    db = tmp_path / "neg.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, msg TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(-5, "a"), (0, "b"), (1, "c"), (2, "d")])
    with open_connector(f"conversations+sqlite:{db}?table=t") as source:
        [dataset] = source.describe()
        rows = [r for b in source.export(dataset) for r in b.to_pylist()]
        state = source.export_state("t")
    assert [r["line"] for r in rows] == [-5, 0, 1, 2]
    assert state is not None and not state.incremental
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t VALUES (3, 'e')")
    with open_connector(f"conversations+sqlite:{db}?table=t") as source:
        [dataset] = source.describe()
        new = [r["line"] for b in source.export(dataset, state.state) for r in b.to_pylist()]
        assert new == [3] and source.export_state("t").incremental  # type: ignore[union-attr]
