"""Conversation logs in PostgreSQL through the CLI, against the real PostgreSQL 18 of the `postgres` fixture:
exact round trips of a table's definition and values, incremental chains by a high-water mark and the
full backups that replace them when the rows under the mark changed, restores into folders and from
them, the restore modes, and the errors a user meets (each one line)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliResult, Postgres
from tests.helpers import Cli, ok, one_line_error
from tests.logdata import TEXTS, exchange, lines_of, write

pytestmark = pytest.mark.usefixtures("postgres")

#: Every kind of value a conversation table holds, with NULLs, unicode and the float/numeric edge cases.
TABLE = """
CREATE TABLE logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    session_id varchar(40) COLLATE "C",
    user_id text,
    input text,
    output text,
    messages jsonb,
    meta json,
    cost numeric(12, 6),
    total numeric,
    score real,
    latency double precision,
    tokens integer,
    big bigint,
    flagged boolean DEFAULT false,
    tags text[],
    payload bytea,
    took interval,
    trace uuid,
    seq bigserial,
    n_tags integer GENERATED ALWAYS AS (cardinality(tags)) STORED
)
"""
COLUMNS = (
    '"timestamp", session_id, user_id, input, output, messages, meta, cost, total, score, latency, tokens, big, '
    "flagged, tags, payload, took, trace"
)
FLOATS = [0.1, float("nan"), float("inf"), -0.0, 1e-30, None]
TOTALS = ["3", "0.25", "12.3400", "NaN", "1e-30", "123456789012345678901234567890.5", None]


def row(i: int) -> tuple[Any, ...]:
    """One logged exchange; every column is NULL in some rows (never the timestamp, which is NOT NULL)."""
    text = [t for t in TEXTS if "\u0000" not in t]  # PostgreSQL text holds no NUL
    return (
        f"2026-11-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:0{i % 10}.{i:06d}+0{i % 3}",
        None if i % 7 == 3 else f"s-{i // 3}",
        f"user-{i % 5}",
        text[i % len(text)],
        None if i % 5 == 0 else "réponse ✓ 🎉",
        None if i % 4 else json.dumps([{"role": "user", "content": text[(i + 1) % len(text)]}]),
        None if i % 3 else '{"b": 2,  "a": [1, 2.50]}',
        None if i % 6 == 5 else f"{i * 0.0013:.6f}",
        TOTALS[i % len(TOTALS)],
        FLOATS[i % len(FLOATS)],
        None if i % 9 == 8 else i / 7,
        i * 10,
        2**62 + i,
        [True, False, None][i % 3],
        None if i % 4 == 1 else ["support", f"t{i}", None, 'quote "x"'][: 1 + i % 4],
        None if i % 2 else bytes(range(i % 256)) + b"\x00\xff",
        None if i % 5 == 4 else f"{i} days {i % 24}:00:00",
        None if i % 8 == 7 else f"a0eebc99-9c0b-4ef8-bb6d-{i:012d}",
    )


def seed(postgres: Postgres, db: str, start: int, n: int, table: str = "logs") -> None:
    marks = ", ".join(["%s"] * len(row(0)))
    with postgres.connect(db) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} ({COLUMNS}) VALUES ({marks})", [row(i) for i in range(start, start + n)])


def rows_text(postgres: Postgres, db: str, table: str, order: str = "id") -> list[str]:
    with postgres.connect(db) as conn:
        return [r[0] for r in conn.execute(f"SELECT t::text FROM {table} t ORDER BY {order}").fetchall()]


def definition(postgres: Postgres, db: str, table: str) -> list[tuple[Any, ...]]:
    """Columns as the catalog describes them (defaults naming the table's own sequence with its name cut)."""
    with postgres.connect(db) as conn:
        found = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated, "
            "pg_get_expr(d.adbin, d.adrelid), a.attcollation, "
            "a.attnum = ANY((SELECT indkey FROM pg_index WHERE indrelid = a.attrelid AND indisprimary)::int2[]) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (table,),
        ).fetchall()
    return [tuple(str(v).replace(f"{table}_", "T_") for v in r) for r in found]


def checks_ok(result: CliResult) -> dict[str, Any]:
    report: dict[str, Any] = ok(result).json()  # type: ignore[assignment]
    assert report["ok"], report
    return report


def pg_uri(postgres: Postgres, db: str, table: str, **params: str) -> str:
    return postgres.uri(db, scheme="conversations+postgresql", table=table, **params)


# --- round trips -----------------------------------------------------------------------------------------------


def test_postgres_to_postgres_keeps_definition_and_values_exactly(postgres: Postgres, cli: Cli) -> None:
    src, dst = postgres.database("convpg_exact_src"), postgres.database("convpg_exact_dst")
    with postgres.connect(src) as conn:
        conn.execute(TABLE)
    seed(postgres, src, 0, 60)
    with postgres.connect(src) as conn:
        conn.execute("DELETE FROM logs WHERE id % 11 = 0")  # gaps in the key
    backup = ok(cli("backup", pg_uri(postgres, src, "logs"), "--json")).json()
    assert backup["datasets"][0]["rows"] == 55  # type: ignore[index]
    report = checks_ok(cli("restore", "--to", pg_uri(postgres, dst, "copy"), "--json"))
    names = {c["name"] for c in report["datasets"][0]["checks"]}
    assert {"bundle", "rows", "ids", "content"} <= names
    assert rows_text(postgres, src, "logs") == rows_text(postgres, dst, "copy")
    assert definition(postgres, src, "logs") == definition(postgres, dst, "copy")
    with postgres.connect(dst) as conn:
        # The sequences continue after the restored rows, as in the source.
        new = conn.execute("INSERT INTO copy (input) VALUES ('after') RETURNING id, seq").fetchone()
        assert new == (61, 61)
    # A PostgreSQL bundle into a folder: one JSON object per row, proven by the checks.
    checks_ok(cli("restore", "--to", f"conversations:{Path.cwd() / 'folder'}", "--json"))
    lines = (Path.cwd() / "folder" / "logs.jsonl").read_bytes().splitlines()
    assert len(lines) == 55
    first = json.loads(lines[0])
    assert first["id"] == 1 and first["timestamp"] == "2026-11-01 00:00:00+00" and first["tokens"] == 0
    assert first["payload"] == {"base64": "AP8="} and first["total"] == 3 and first["score"] == 0.1
    assert [json.loads(x)["total"] for x in lines[:5]] == [3, 0.25, "12.3400", "NaN", "0." + "0" * 29 + "1"]


def test_incremental_by_the_primary_key_and_the_full_backups_that_replace_it(postgres: Postgres, cli: Cli) -> None:
    db = postgres.database("convpg_incremental")
    with postgres.connect(db) as conn:
        conn.execute(TABLE)
    seed(postgres, db, 0, 20)
    source = pg_uri(postgres, db, "logs")
    first = ok(cli("backup", source, "--json")).json()["datasets"][0]  # type: ignore[index]
    assert first["rows"] == 20 and not first["incremental"]
    for night in range(2):
        seed(postgres, db, 20 + 3 * night, 3)
        again = ok(cli("backup", source, "--json")).json()["datasets"][0]  # type: ignore[index]
        assert again["incremental"] and again["new_rows"] == 3 and again["rows"] == 23 + 3 * night
    checks_ok(cli("restore", "--to", pg_uri(postgres, db, "copy"), "--json"))
    assert rows_text(postgres, db, "logs") == rows_text(postgres, db, "copy")

    def full_because(change: str) -> str:
        with postgres.connect(db) as conn:
            conn.execute(change)
        result = ok(cli("backup", source, "--json")).json()
        assert not result["datasets"][0]["incremental"], result  # type: ignore[index]
        return " ".join(result["notes"])  # type: ignore[index]

    assert "deleted, replaced or added" in full_because("DELETE FROM logs WHERE id = 3")
    assert "deleted, replaced or added" in full_because("UPDATE logs SET input = 'edited' WHERE id = 26")
    # A sequence value committed late: a row below the mark that the last backup did not see.
    assert "deleted, replaced or added" in full_because(
        "INSERT INTO logs (id, input) OVERRIDING SYSTEM VALUE VALUES (3, 'late')"
    )
    assert "definition" in full_because("ALTER TABLE logs ADD COLUMN rating smallint")
    checks_ok(cli("restore", "--to", pg_uri(postgres, db, "copy"), "--mode", "overwrite", "--json"))
    assert rows_text(postgres, db, "logs") == rows_text(postgres, db, "copy")


def test_incremental_by_a_timestamp_key_on_a_table_without_a_primary_key(postgres: Postgres, cli: Cli) -> None:
    db = postgres.database("convpg_bykey")
    with postgres.connect(db) as conn:
        conn.execute("CREATE TABLE chat (at timestamptz, who text, said text, meta jsonb)")
        conn.execute(
            "INSERT INTO chat SELECT '2026-11-25 02:00+00'::timestamptz + make_interval(mins => i / 2), "
            "'u' || (i % 3), 'line ' || i, jsonb_build_object('i', i) FROM generate_series(1, 30) i"
        )
        conn.execute("INSERT INTO chat (who, said) VALUES ('nobody', 'no time')")  # a null key
    source = pg_uri(postgres, db, "chat", key="at")
    ok(cli("backup", source))
    # Full backups always without a mark column.
    no_key = ok(cli("backup", pg_uri(postgres, db, "chat"), "--json")).json()["datasets"][0]  # type: ignore[index]
    assert no_key["rows"] == 31
    with postgres.connect(db) as conn:
        conn.execute("INSERT INTO chat VALUES ('2026-11-26 00:00+00', 'u9', 'next day', NULL)")
    again = ok(cli("backup", source, "--json")).json()["datasets"][0]  # type: ignore[index]
    assert again["incremental"] and again["new_rows"] == 1
    checks_ok(cli("restore", "--to", pg_uri(postgres, db, "copy"), "--json"))
    order = "at NULLS FIRST, t::text"
    assert rows_text(postgres, db, "chat", order) == rows_text(postgres, db, "copy", order)
    checks_ok(cli("restore", "--to", f"conversations:{Path.cwd() / 'chain'}", "--json"))
    chain = [json.loads(x) for x in (Path.cwd() / "chain" / "chat.jsonl").read_bytes().splitlines()]
    assert chain[0]["at"] is None and chain[-1]["said"] == "next day" and len(chain) == 32
    # A row at the mark's own time, added after the backup: a full backup takes it.
    with postgres.connect(db) as conn:
        conn.execute("INSERT INTO chat VALUES ('2026-11-26 00:00+00', 'u8', 'same instant', NULL)")
    late = ok(cli("backup", source, "--json")).json()
    assert not late["datasets"][0]["incremental"] and "deleted, replaced or added" in late["notes"][0]  # type: ignore[index]
    checks_ok(cli("restore", "--to", f"conversations:{Path.cwd() / 'folder'}", "--json"))
    assert len((Path.cwd() / "folder" / "chat.jsonl").read_bytes().splitlines()) == 33
    # Records numbered by position cannot be merged (a merge would shift them).
    one_line_error(cli("restore", "--to", pg_uri(postgres, db, "copy"), "--mode", "merge"), 2, "by position")


def test_a_composite_text_primary_key_names_the_records(postgres: Postgres, cli: Cli) -> None:
    db = postgres.database("convpg_composite")
    with postgres.connect(db) as conn:
        conn.execute("CREATE TABLE turns (session text, turn int, body text, PRIMARY KEY (session, turn))")
        conn.execute("INSERT INTO turns VALUES ('b', 1, 'x'), ('a', 2, 'y'), ('a', 1, 'ü'), ('A', 1, NULL)")
    first = ok(cli("backup", pg_uri(postgres, db, "turns"), "--json")).json()["datasets"][0]  # type: ignore[index]
    assert first["rows"] == 4
    again = ok(cli("backup", pg_uri(postgres, db, "turns"), "--json")).json()
    assert not again["datasets"][0]["incremental"] and "no high-water mark column" in again["notes"][0]  # type: ignore[index]
    checks_ok(cli("restore", "--to", pg_uri(postgres, db, "copy"), "--json"))
    assert rows_text(postgres, db, "turns", "1") == rows_text(postgres, db, "copy", "1")
    checks_ok(cli("restore", "--to", f"conversations:{Path.cwd() / 'folder'}", "--json"))
    ids = [json.loads(x) for x in (Path.cwd() / "folder" / "turns.jsonl").read_bytes().splitlines()]
    assert [(r["session"], r["turn"]) for r in ids] == [("A", 1), ("a", 1), ("a", 2), ("b", 1)]  # byte order


def test_log_folder_into_postgresql_and_back(postgres: Postgres, cli: Cli, tmp_path: Path) -> None:
    db = postgres.database("convpg_folder")
    rng = random.Random(3)
    records = [r for r in (exchange(i, rng) for i in range(40)) if "\\u0000" not in json.dumps(r)]  # no NUL
    files = {"2026-11-24.jsonl": lines_of(records[:20]), "eu/2026-11-25.jsonl": lines_of(records[20:], final=False)}
    for name, data in files.items():
        write(tmp_path / "logs" / name, data)
    ok(cli("backup", f"conversations:{tmp_path / 'logs'}"))
    table = pg_uri(postgres, db, "chat", schema="app")
    checks_ok(cli("restore", "--to", table, "--json"))
    with postgres.connect(db) as conn:
        typed = conn.execute("SELECT count(*), count(timestamp), count(cost) FROM app.chat").fetchone()
    assert typed[0] == len(records) and typed[1] > 0 and typed[2] > 0
    # The canonical table backed up again and restored into a folder gives the same bytes.
    ok(cli("backup", table))
    checks_ok(cli("restore", "--to", f"conversations:{tmp_path / 'back'}", "--json"))
    for name, data in files.items():
        assert (tmp_path / "back" / name).read_bytes() == data
    # Merge into the canonical table replaces records by id.
    checks_ok(cli("restore", "--to", table, "--mode", "merge", "--json"))
    # Text PostgreSQL cannot hold is refused before anything is written.
    write(tmp_path / "nul" / "a.jsonl", lines_of([{"input": "a\u0000b"}]))
    ok(cli("backup", f"conversations:{tmp_path / 'nul'}"))
    one_line_error(cli("restore", "--to", pg_uri(postgres, db, "nul")), 2, "NUL")
    with postgres.connect(db) as conn:
        assert conn.execute("SELECT to_regclass('public.nul')").fetchone() == (None,)


# --- modes and errors --------------------------------------------------------------------------------------------


def test_restore_modes_never_drop_a_table_without_overwrite(postgres: Postgres, cli: Cli) -> None:
    db = postgres.database("convpg_modes")
    with postgres.connect(db) as conn:
        conn.execute(TABLE)
        conn.execute("CREATE TABLE other (x int)")
    seed(postgres, db, 0, 6)
    ok(cli("backup", pg_uri(postgres, db, "logs")))
    target = pg_uri(postgres, db, "copy")
    checks_ok(cli("restore", "--to", target, "--json"))
    one_line_error(cli("restore", "--to", target), 2, "already holds 6 rows", "--mode overwrite")
    # An empty table of other columns is not dropped either.
    one_line_error(cli("restore", "--to", pg_uri(postgres, db, "other")), 2, "columns differ")
    with postgres.connect(db) as conn:
        assert conn.execute("SELECT to_regclass('other')").fetchone() == ("other",)
        conn.execute("UPDATE copy SET input = 'changed' WHERE id = 2")
        conn.execute("INSERT INTO copy (input) VALUES ('only in the copy')")
    checks_ok(cli("restore", "--to", target, "--mode", "merge", "--json"))
    with postgres.connect(db) as conn:
        assert conn.execute("SELECT input FROM copy WHERE id IN (2, 7) ORDER BY id").fetchall() == [
            (row(1)[3],),
            ("only in the copy",),
        ]
    checks_ok(cli("restore", "--to", target, "--mode", "overwrite", "--json"))
    assert rows_text(postgres, db, "logs") == rows_text(postgres, db, "copy")


def test_errors_are_one_line(postgres: Postgres, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    db = postgres.database("convpg_errors")
    with postgres.connect(db) as conn:
        conn.execute("CREATE TABLE logs (id serial PRIMARY KEY, body json)")
        conn.execute(f"GRANT SELECT ON logs TO {Postgres.LOCKED}")
    one_line_error(cli("backup", pg_uri(postgres, db, "nope")), 2, "'nope' not found")
    one_line_error(cli("backup", pg_uri(postgres, "convpg_no_such_db", "logs")), 2, "does not exist")
    one_line_error(cli("backup", pg_uri(postgres, db, "logs", key="missing")), 2, "no column 'missing'")
    one_line_error(cli("backup", pg_uri(postgres, db, "logs", key="body")), 2, "cannot be a high-water mark")
    json_error = one_line_error(cli("backup", pg_uri(postgres, db, "nope"), "--json"), 2)
    assert "not found" in json.loads(json_error)["error"]["message"]
    # A type the target database lacks: one line, and no table left behind.
    with postgres.connect(db) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")
        conn.execute("CREATE TABLE moods (id bigserial PRIMARY KEY, mood mood)")
        conn.execute("INSERT INTO moods (mood) VALUES ('happy'), (NULL)")
    ok(cli("backup", pg_uri(postgres, db, "moods")))
    bare = postgres.database("convpg_errors_bare")
    one_line_error(cli("restore", "--to", pg_uri(postgres, bare, "moods")), 2, 'type "mood" does not exist')
    with postgres.connect(bare) as conn:
        assert conn.execute("SELECT to_regclass('moods')").fetchone() == (None,)
    # Nothing listens on this port: the server, not the data (3).
    closed = f"conversations+postgresql://postgres@127.0.0.1:{postgres.port + 1}/x?table=logs"
    one_line_error(cli("backup", closed), 3, "unreachable")
    # The locked role with a wrong password: refused (3), and the password appears nowhere.
    wrong = "not-the-password-42"
    monkeypatch.setenv("PGPASSWORD", wrong)
    locked = f"conversations+postgresql://{Postgres.LOCKED}@{postgres.host}:{postgres.port}/{db}?table=logs"
    result = cli("backup", locked, "--json")
    one_line_error(result, 3, "password authentication failed")
    assert wrong not in result.out + result.err
    monkeypatch.setenv("PGPASSWORD", Postgres.LOCKED_PASSWORD)
    assert ok(cli("backup", locked, "--json")).json()["datasets"][0]["rows"] == 0  # type: ignore[index]
