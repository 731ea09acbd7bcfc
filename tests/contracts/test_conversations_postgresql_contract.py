"""Conversation logs in a PostgreSQL table (``conversations+postgresql://…?table=T``) pass the file contract
(tests/contracts/files.py) against the real PostgreSQL 18 of the `postgres` session fixture: one database
per test, holding the source table `logs` and the restore target `restored`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.conftest import Postgres
from tests.contracts.files import FileContract

pytestmark = pytest.mark.postgres

TABLE = """
CREATE TABLE logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "timestamp" timestamptz,
    user_id text,
    input text,
    messages jsonb,
    cost numeric(12, 6),
    payload bytea
)
"""
ROWS = [
    ("2026-11-25T02:00:00Z", "u1", "héllo ✓", '[{"role": "user", "content": "дельта"}]', "0.25", b"\x00\xff"),
    (None, "u2", None, None, None, None),  # every nullable column NULL
]


class TestConversationsPostgresql(FileContract):
    kind = "conversations"
    # The table has a one-column integer primary key, which `--mode merge` into an own-layout table needs.
    merge = True
    server: ClassVar[Postgres]
    db: str

    @pytest.fixture(autouse=True)
    def _database(self, postgres: Postgres, tmp_path: Path) -> None:
        """A fresh database of the test's own (source and target tables share it)."""
        type(self).server = postgres
        self.db = postgres.database("c" + re.sub(r"[^a-z0-9]", "", str(tmp_path).lower())[-40:])

    def uri(self, table: str) -> str:
        return self.server.uri(self.db, scheme="conversations+postgresql", table=table)

    def seed(self, tmp_path: Path) -> str:
        with self.server.connect(self.db) as conn:
            if conn.execute("SELECT to_regclass('public.logs')").fetchone()[0] is None:
                conn.execute(TABLE)
                with conn.cursor() as cur:
                    cur.executemany(
                        'INSERT INTO logs ("timestamp", user_id, input, messages, cost, payload) '
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        ROWS,
                    )
        return self.uri("logs")

    def missing(self, tmp_path: Path) -> str:
        """A table that does not exist (in a database that does: a missing database is another error)."""
        return self.uri("nothing-here")

    def target(self, tmp_path: Path) -> str:
        return self.uri("restored")

    def same(self, tmp_path: Path) -> bool:
        def table(name: str) -> tuple[list[Any], list[Any]]:
            with self.server.connect(self.db) as conn:
                columns = conn.execute(
                    "SELECT attname, format_type(atttypid, atttypmod), attnotnull, attidentity FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    (name,),
                ).fetchall()
                rows = conn.execute(f"SELECT t::text FROM {name} t ORDER BY id").fetchall()
            return columns, rows

        return table("logs") == table("restored")
