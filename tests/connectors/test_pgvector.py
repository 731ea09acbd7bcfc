"""The pgvector connector against a real PostgreSQL 18 with pgvector 0.8 (the `postgres` session fixture):
a table's definition and values round trip exactly, one snapshot per backup, tables without a primary key,
and every bad input named in one line with its exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aibackup.connectors.registry import open_connector
from tests.conftest import Postgres
from tests.helpers import Cli, chroma_client, ok, one_line_error

pytestmark = pytest.mark.postgres

RICH_TABLE = """
CREATE TABLE items (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  embedding vector(3) NOT NULL,
  small halfvec(2),
  sp sparsevec(10),
  content text,
  price numeric(10,2) CHECK (price >= 0),
  at timestamptz DEFAULT now(),
  tags text[],
  nums int[],
  blob bytea,
  doc jsonb,
  raw json,
  ratio real,
  big double precision,
  flag boolean,
  u uuid UNIQUE,
  twice bigint GENERATED ALWAYS AS (id * 2) STORED,
  seq serial
);
COMMENT ON TABLE items IS 'the items ✓';
COMMENT ON COLUMN items.content IS 'what it says';
CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 32);
CREATE INDEX items_small ON items USING hnsw (small halfvec_l2_ops);
CREATE INDEX items_price ON items (price);
INSERT INTO items (embedding, small, sp, content, price, at, tags, nums, blob, doc, raw, ratio, big, flag, u) VALUES
 ('[1,2,3]', '[0.5,1.5]', '{1:0.5,3:2}/10', E'héllo ✓ "quoted"\\nline 🚀', 12.30, '2026-01-02 03:04:05.123456+02',
  '{a,"b c",NULL}', '{1,2,NULL}', '\\x00ff', '{"z":1,"a":[1.5,null,"x"],"n":{"d":1.10}}', '{"b":1,  "a":2}', 0.1,
  1e300, true, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'),
 ('[-1,0,1.5]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'NaN', '-Infinity', false, NULL),
 ('[0.25,0.5,0.75]', '[1,2]', '{10:1}/10', '', 0, 'infinity', '{}', '{}', '', '[]', 'null', -0.0, 5e-324, NULL,
  '00000000-0000-0000-0000-000000000000');
"""


def run_sql(server: Postgres, db: str, sql: str) -> None:
    with server.connect(db) as conn:
        conn.execute(sql)


def rows_as_text(server: Postgres, db: str, table: str = "items") -> list[tuple[Any, ...]]:
    with server.connect(db) as conn:
        # Each row as PostgreSQL's own text of it: every type compared as the server writes it.
        return conn.execute(f"SELECT r::text FROM {table} r ORDER BY r::text").fetchall()  # type: ignore[no-any-return]


def database(server: Postgres, tmp_path: Path, what: str) -> str:
    return server.database(f"pg_{what}_{abs(hash(str(tmp_path))) % 10**8}")


def test_a_table_round_trips_with_its_definition_and_values(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    src, dst = database(postgres, tmp_path, "src"), database(postgres, tmp_path, "dst")
    run_sql(postgres, src, RICH_TABLE)
    repo = str(tmp_path / "repo")
    ok(cli("backup", postgres.uri(src), "--repo", repo))
    manifest = json.loads(cli("list", "--repo", repo, "--json").out)[0]
    assert [d["name"] for d in manifest["datasets"]] == ["items"]
    restored = ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json")).json()
    checks = {c["name"]: c for c in restored["datasets"][0]["checks"]}
    assert restored["ok"] and checks["definition"]["ok"] and checks["content"]["ok"], checks
    assert rows_as_text(postgres, dst) == rows_as_text(postgres, src)
    # Merged into the table as it now stands, with an index of its own: no definition check to cry wolf.
    run_sql(postgres, dst, "CREATE INDEX items_extra ON items (flag)")
    merged = ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--mode", "merge", "--json"))
    assert merged.json()["ok"] and "definition" not in {c["name"] for c in merged.json()["datasets"][0]["checks"]}
    with postgres.connect(dst) as conn:
        indexes = {
            r[0]: r[1] for r in conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'items'")
        }
        assert "vector_cosine_ops" in indexes["items_hnsw"] and "m='8'" in indexes["items_hnsw"]
        assert "halfvec_l2_ops" in indexes["items_small"] and set(indexes) >= {"items_price", "items_u_key"}
        assert conn.execute("SELECT obj_description('items'::regclass)").fetchone()[0] == "the items ✓"
        # The identity and the serial sequence continue after the restored rows.
        conn.execute("INSERT INTO items (embedding) VALUES ('[9,9,9]')")
        assert conn.execute("SELECT max(id), max(seq), max(twice) FROM items").fetchone() == (4, 4, 8)


def test_halfvec_sparsevec_and_named_vectors_cross_to_qdrant_and_back(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    src, back = database(postgres, tmp_path, "src"), database(postgres, tmp_path, "back")
    run_sql(postgres, src, RICH_TABLE)
    repo, repo2 = str(tmp_path / "repo"), str(tmp_path / "repo2")
    ok(cli("backup", postgres.uri(src), "--repo", repo))
    qdrant = f"qdrant:{tmp_path / 'qdrant'}"
    result = ok(cli("restore", "latest", "--repo", repo, "--to", qdrant, "--json")).json()
    assert result["ok"]
    ok(cli("backup", qdrant, "--repo", repo2, "--queries", "0"))
    again = ok(cli("restore", "latest", "--repo", repo2, "--to", postgres.uri(back), "--json")).json()
    assert again["ok"], again
    with postgres.connect(back) as conn:
        got = conn.execute("SELECT id, embedding::text, small::text, sp::text FROM items ORDER BY id").fetchall()
        types = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'items'::regclass AND attnum > 0"
            ).fetchall()
        )
    assert got[0] == ("1", "[1,2,3]", "[0.5,1.5]", "{1:0.5,3:2}/1000000000")
    assert types["small"] == "halfvec(2)"  # float16 recorded, made again


def test_sparse_zeros_are_refused_or_left_out(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    from tests.contracts.bundles import qdrant_bundle_with_sparse

    repo = qdrant_bundle_with_sparse(tmp_path, cli)  # point 0 holds a sparse value 1.0 at index 0: no zero
    dst = database(postgres, tmp_path, "dst")
    assert ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json")).json()["ok"]


def test_a_table_without_a_primary_key_uses_row_positions(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    src, dst = database(postgres, tmp_path, "src"), database(postgres, tmp_path, "dst")
    run_sql(
        postgres,
        src,
        "CREATE TABLE loose (embedding vector(2), note text);"
        "INSERT INTO loose VALUES ('[1,0]', 'a'), ('[0,1]', NULL), (NULL, 'c')",
    )
    repo = str(tmp_path / "repo")
    backup = ok(cli("backup", postgres.uri(src), "--repo", repo))
    assert "no primary key" in backup.out + backup.err
    ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst)))
    assert rows_as_text(postgres, dst, "loose") == rows_as_text(postgres, src, "loose")


def test_the_whole_backup_reads_one_snapshot(postgres: Postgres, tmp_path: Path) -> None:
    src = database(postgres, tmp_path, "snap")
    run_sql(
        postgres,
        src,
        "CREATE TABLE t (id int PRIMARY KEY, embedding vector(2));"
        "INSERT INTO t SELECT i, '[1,2]' FROM generate_series(1, 10) i",
    )
    with open_connector(postgres.uri(src)) as conn:
        (described,) = conn.describe()
        run_sql(postgres, src, "INSERT INTO t VALUES (11, '[3,4]'); DELETE FROM t WHERE id = 1")
        ids = [i for b in conn.export(described) for i in b.column("id").to_pylist()]
    assert described.rows == 10 and sorted(ids, key=int) == [str(i) for i in range(1, 11)]


def test_collections_by_table_or_schema_and_a_document_column(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    src = database(postgres, tmp_path, "pick")
    run_sql(
        postgres,
        src,
        "CREATE SCHEMA kb; CREATE TABLE kb.docs (id text PRIMARY KEY, body text, embedding vector(2));"
        "INSERT INTO kb.docs VALUES ('a', 'first', '[1,0]'); CREATE TABLE other (id int PRIMARY KEY, v vector(2))",
    )
    with open_connector(postgres.uri(src, document="body")) as conn:
        assert [d.name for d in conn.describe()] == ["kb.docs", "other"]
        (docs,) = conn.describe(["kb.docs"])
        batch = next(iter(conn.export(docs)))
        assert batch.column("document").to_pylist() == ["first"] and batch.column("metadata").to_pylist() == [None]
    with open_connector(postgres.uri(src, schema="kb")) as conn:
        assert [d.name for d in conn.describe(["docs"])] == ["docs"]
    one_line_error(cli("backup", postgres.uri(src), "--collection", "ghost", "--repo", str(tmp_path / "r")), 2, "ghost")
    # The document column travels with the bundle: restored into another database, the proof knows it.
    repo, dst = str(tmp_path / "repo"), database(postgres, tmp_path, "pickdst")
    ok(cli("backup", postgres.uri(src, document="body"), "--collection", "kb.docs", "--repo", repo))
    restored = ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json")).json()
    assert restored["ok"]
    with postgres.connect(dst) as conn:
        assert conn.execute("SELECT id, body FROM kb.docs").fetchall() == [("a", "first")]


def test_chroma_into_pgvector_makes_the_layout_with_a_matching_hnsw_index(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    path = tmp_path / "chroma"
    col = chroma_client(path).create_collection("notes", metadata={"hnsw:space": "cosine"}, embedding_function=None)
    rng = np.random.default_rng(3)
    col.add(
        ids=[f"n{i}" for i in range(50)],
        embeddings=rng.standard_normal((50, 8)).astype(np.float32),
        documents=[f"note {i} ✓" for i in range(50)],
        metadatas=[{"i": i, "even": i % 2 == 0} for i in range(50)],
    )
    repo, dst = str(tmp_path / "repo"), database(postgres, tmp_path, "dst")
    ok(cli("backup", f"chroma:{path}", "--repo", repo))
    # Documents on every record read as LangChain's layout, which --layout auto writes into langchain-postgres's
    # tables (tests/aibackup/test_frameworks_pgvector.py); raw gives the table of the collection's own name.
    raw = ("--layout", "raw")
    result = ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json", *raw)).json()
    assert result["ok"], result
    with postgres.connect(dst) as conn:
        (indexdef,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'notes' AND indexdef LIKE '%hnsw%'"
        ).fetchone()
        row = conn.execute("SELECT document, metadata FROM notes WHERE id = 'n3'").fetchone()
    assert "vector_cosine_ops" in indexdef and row == ("note 3 ✓", {"i": 3, "even": False})
    # Restoring again in the default mode refuses the non-empty table; nothing is dropped.
    one_line_error(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), *raw), 2, "notes")


def test_wrong_credentials_are_exit_3_and_never_print_the_password(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "wrong horse battery")
    uri = f"pgvector://{Postgres.LOCKED}@{postgres.host}:{postgres.port}/postgres"
    line = one_line_error(cli("backup", uri, "--repo", str(tmp_path / "r")), 3, "password authentication failed")
    assert "wrong horse" not in line
    line = one_line_error(cli("backup", "pgvector://u:secret@h/db", "--repo", str(tmp_path / "r")), 2, "PGPASSWORD")
    assert "secret" not in line


def test_a_target_without_pgvector_that_cannot_create_it_is_exit_2(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = database(postgres, tmp_path, "src")
    run_sql(
        postgres, src, "CREATE TABLE t (id int PRIMARY KEY, embedding vector(2)); INSERT INTO t VALUES (1, '[1,2]')"
    )
    repo = str(tmp_path / "repo")
    ok(cli("backup", postgres.uri(src), "--repo", repo))
    bare = f"pg_bare_{abs(hash(str(tmp_path))) % 10**8}"
    with postgres.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{bare}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{bare}" OWNER {Postgres.LOCKED}')
    monkeypatch.setenv("PGPASSWORD", Postgres.LOCKED_PASSWORD)
    target = f"pgvector://{Postgres.LOCKED}@{postgres.host}:{postgres.port}/{bare}"
    one_line_error(cli("restore", "latest", "--repo", repo, "--to", target), 2, "pgvector extension (vector)")
    with postgres.connect(bare) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)  # nothing half-made


def test_a_column_without_a_dimension_backs_up_the_one_its_vectors_hold(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    """LangChain's langchain_pg_embedding declares ``embedding vector`` without a dimension: the backup takes
    the one its vectors hold and the table comes back as it was; vectors of two dimensions are refused."""
    src, dst = database(postgres, tmp_path, "dims"), database(postgres, tmp_path, "dimsdst")
    run_sql(
        postgres,
        src,
        "CREATE TABLE langchain_pg_embedding (id varchar PRIMARY KEY, collection_id uuid, embedding vector, "
        "document varchar, cmetadata jsonb);"
        "INSERT INTO langchain_pg_embedding VALUES ('a', gen_random_uuid(), '[1,2,3]', 'first', '{\"k\": 1}'),"
        "('b', NULL, '[4,5,6]', 'second', NULL)",
    )
    repo = str(tmp_path / "repo")
    ok(cli("backup", postgres.uri(src, document="document"), "--repo", repo))
    assert ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json")).json()["ok"]
    assert rows_as_text(postgres, dst, "langchain_pg_embedding") == rows_as_text(
        postgres, src, "langchain_pg_embedding"
    )
    run_sql(postgres, src, "INSERT INTO langchain_pg_embedding VALUES ('c', NULL, '[1,2]', 'short', NULL)")
    one_line_error(cli("backup", postgres.uri(src), "--repo", str(tmp_path / "r2")), 2, "2 to 3 dimensions")


def test_metadata_the_server_writes_canonical_is_what_python_would_write(postgres: Postgres, tmp_path: Path) -> None:
    """Integer, boolean and text columns: the server builds the canonical JSON (no row parsed in Python);
    every control character, quote, backslash, non-BMP character and NULL must give Python's text."""
    from aibackup.manifests.vectors import metadata_json

    src = database(postgres, tmp_path, "canon")
    texts = ["".join(chr(c) for c in range(1, 0x80)), 'q"b\\s/', "ünï ✓ 🚀 \u2028\u2029 \ufeff", "", None]
    run_sql(
        postgres, src, 'CREATE TABLE t (id int PRIMARY KEY, embedding vector(1), "a key" text, n bigint, ok boolean)'
    )
    with postgres.connect(src) as conn:
        for i, text in enumerate(texts):
            conn.execute("INSERT INTO t VALUES (%s, '[1]', %s, %s, %s)", [i, text, -(2**63) + i, i % 2 == 0])
        conn.execute("INSERT INTO t VALUES (99, '[1]', NULL, NULL, NULL)")
    with open_connector(postgres.uri(src)) as conn:
        (described,) = conn.describe()
        got = {
            r: m
            for b in conn.export(described)
            for r, m in zip(b.column("id").to_pylist(), b.column("metadata").to_pylist(), strict=True)
        }
    for i, text in enumerate(texts):
        expected = {"n": -(2**63) + i, "ok": i % 2 == 0} | ({"a key": text} if text is not None else {})
        assert got[str(i)] == metadata_json(expected)
    assert got["99"] is None


def test_a_table_read_in_many_pages_keeps_every_row_once_and_its_positions(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aibackup.connectors.pgvector import reading

    monkeypatch.setattr(reading, "PAGE_BYTES", 3 * 8192)  # a page of a few blocks: dozens of COPYs
    src, dst = database(postgres, tmp_path, "pages"), database(postgres, tmp_path, "pagesdst")
    run_sql(
        postgres,
        src,
        "CREATE TABLE loose (embedding vector(64), n int);"
        "INSERT INTO loose SELECT array_fill(i::real, ARRAY[64])::vector, i FROM generate_series(0, 999) i;"
        "DELETE FROM loose WHERE n % 7 = 0",
    )
    with open_connector(postgres.uri(src)) as conn:
        (described,) = conn.describe()
        batches = list(conn.export(described))
        ids = [i for b in batches for i in b.column("id").to_pylist()]
        found = conn.search("loose", "", np.full((1, 64), 500.0, dtype=np.float32), 1)
    assert len(batches) > 10 and ids == [str(i) for i in range(857)]
    assert found == [[str(500 - 500 // 7 - 1)]]  # the row holding 500 is at position 500 - (rows 0..497 deleted)
    repo = str(tmp_path / "repo")
    ok(cli("backup", postgres.uri(src), "--repo", repo))
    assert ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json")).json()["ok"]


def test_a_partitioned_table_is_one_collection(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    src, dst = database(postgres, tmp_path, "parts"), database(postgres, tmp_path, "partsdst")
    run_sql(
        postgres,
        src,
        "CREATE TABLE ev (id int, day int, embedding vector(2), PRIMARY KEY (id, day)) PARTITION BY RANGE (day);"
        "CREATE TABLE ev1 PARTITION OF ev FOR VALUES FROM (0) TO (10);"
        "CREATE TABLE ev2 PARTITION OF ev FOR VALUES FROM (10) TO (20);"
        "INSERT INTO ev SELECT i, i % 20, '[1,2]' FROM generate_series(1, 40) i",
    )
    repo = str(tmp_path / "repo")
    ok(cli("backup", postgres.uri(src), "--repo", repo))
    (dataset,) = json.loads(cli("list", "--repo", repo, "--json").out)[0]["datasets"]
    assert (dataset["name"], dataset["rows"]) == ("ev", 40)
    assert ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json")).json()["ok"]
    with postgres.connect(dst) as conn:
        assert conn.execute("SELECT count(*), min(id::text) FROM ev").fetchone() == (40, "1")


def test_a_socket_and_the_port_from_the_uri_or_pgport(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pgvector://USER@/DB?host=SOCKET_DIR``: no TCP; without a port in the URI, libpq's PGPORT."""
    src = database(postgres, tmp_path, "sock")
    run_sql(
        postgres, src, "CREATE TABLE t (id int PRIMARY KEY, embedding vector(2)); INSERT INTO t VALUES (1, '[1,2]')"
    )
    monkeypatch.setenv("PGPORT", str(postgres.port))
    uri = f"pgvector://{postgres.user}@/{src}?host={postgres.socket_dir}"
    backed_up = ok(cli("backup", uri, "--repo", str(tmp_path / "repo"), "--json")).json()
    assert backed_up["datasets"][0]["rows"] == 1


def test_langchain_postgres_tables_come_back_with_the_collection_they_reference(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    """langchain-postgres keeps its collections in langchain_pg_collection (no vector column) and points at
    them by a foreign key: the referenced table travels with the embeddings, so the restored application
    finds its collection, and the key is made again."""
    src, dst = database(postgres, tmp_path, "lc"), database(postgres, tmp_path, "lcdst")
    run_sql(
        postgres,
        src,
        "CREATE TABLE langchain_pg_collection (uuid uuid PRIMARY KEY, name varchar UNIQUE NOT NULL, cmetadata json);"
        "CREATE TABLE langchain_pg_embedding (id varchar PRIMARY KEY, collection_id uuid REFERENCES "
        "langchain_pg_collection (uuid) ON DELETE CASCADE, embedding vector, document varchar, cmetadata jsonb);"
        "INSERT INTO langchain_pg_collection VALUES ('6f1c2b7a-0d3e-4c5b-9a8f-1e2d3c4b5a69', 'docs', '{\"a\": 1}');"
        "INSERT INTO langchain_pg_embedding VALUES ('x', '6f1c2b7a-0d3e-4c5b-9a8f-1e2d3c4b5a69', '[1,2]', 'hi', '{}')",
    )
    repo = str(tmp_path / "repo")
    ok(cli("backup", postgres.uri(src, document="document"), "--repo", repo))
    assert ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json")).json()["ok"]
    for table in ("langchain_pg_collection", "langchain_pg_embedding"):
        assert rows_as_text(postgres, dst, table) == rows_as_text(postgres, src, table)
    with postgres.connect(dst) as conn:
        (fk,) = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f'").fetchone()
    assert "REFERENCES langchain_pg_collection(uuid) ON DELETE CASCADE" in fk
    # Restored again beside it under another name: the collection rows already there are kept as they are.
    ok(
        cli(
            "restore",
            "latest",
            "--repo",
            repo,
            "--to",
            postgres.uri(dst),
            "--collection",
            "langchain_pg_embedding=again",
        )
    )


def test_a_restore_that_fails_inside_the_target_leaves_nothing_and_says_so(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    """A type the target database lacks (an enum) fails the CREATE TABLE inside the restore's transaction:
    one line saying nothing was written, and no table."""
    src, dst = database(postgres, tmp_path, "enum"), database(postgres, tmp_path, "enumdst")
    run_sql(
        postgres,
        src,
        "CREATE TYPE mood AS ENUM ('ok', 'sad'); CREATE TABLE t (id int PRIMARY KEY, "
        "embedding vector(2), m mood); INSERT INTO t VALUES (1, '[1,2]', 'ok')",
    )
    repo = str(tmp_path / "repo")
    ok(cli("backup", postgres.uri(src), "--repo", repo))
    line = one_line_error(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst)), 2, "mood")
    assert "nothing of it was written" in line
    with postgres.connect(dst) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)


def test_metadata_floats_jsonb_would_change_are_kept_or_refused(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    """jsonb numbers are PostgreSQL numerics, kept as written: a whole float from 1e16 up, which Python writes
    as ``1e+20``, came back an integer (and failed the record comparison after the table was written); it
    is written with a fraction now. -0.0, which numeric cannot hold, is refused before anything is written."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    # 1.0 beside an exponent: the fraction was added twice ("1.0.0", which jsonb refused)
    whole = {"big": 1e20, "deep": [1.5e300, {"w": 1e308, "s": "3e5", "n": -0.25}], "one": 1.0, "lr": 1e-05}
    for name, point, payload in (("whole", 1, whole), ("signed", 7, {"z": [0.5, -0.0]})):
        client.create_collection(name, vectors_config=models.VectorParams(size=2, distance=models.Distance.EUCLID))
        client.upsert(name, [models.PointStruct(id=point, vector=[1.0, 0.0], payload=payload)])
    client.close()
    repo, dst = str(tmp_path / "repo"), database(postgres, tmp_path, "dst")
    ok(cli("backup", f"qdrant:{tmp_path / 'q'}", "--repo", repo))
    restored = ok(
        cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--collection", "whole", "--json")
    )
    assert restored.json()["ok"]
    with postgres.connect(dst) as conn:
        (metadata,) = conn.execute("SELECT metadata FROM whole").fetchone()
    assert metadata == whole
    floats = (metadata["big"], metadata["deep"][0], metadata["deep"][1]["w"], metadata["one"])
    assert all(isinstance(v, float) for v in floats)
    line = one_line_error(
        cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--collection", "signed"), 2, "-0.0"
    )
    assert "record '7'" in line
    with postgres.connect(dst) as conn:
        assert conn.execute("SELECT to_regclass('signed')").fetchone() == (None,)


def test_a_merge_into_a_table_indexed_for_another_distance_is_refused(
    postgres: Postgres, tmp_path: Path, cli: Cli
) -> None:
    """The table's HNSW index is the distance its rows are searched by: an l2 bundle merged into a table
    indexed for cosine was accepted silently (the search check does not run on a merge). Refused, as
    Chroma and Qdrant refuse it, before any row is written."""
    path = tmp_path / "chroma"
    col = chroma_client(path).create_collection("items", metadata={"hnsw:space": "l2"}, embedding_function=None)
    col.add(ids=[f"i{n}" for n in range(5)], embeddings=[[float(n), 1.0] for n in range(5)])
    repo, dst = str(tmp_path / "repo"), database(postgres, tmp_path, "dst")
    ok(cli("backup", f"chroma:{path}", "--repo", repo))
    with postgres.connect(dst) as conn:
        conn.execute(
            "CREATE TABLE items (id text primary key, embedding vector(2), document text, uri text, metadata jsonb)"
        )
        conn.execute("CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops)")
        conn.execute("INSERT INTO items VALUES ('other', '[9,9]', 'OTHER', NULL, NULL)")
    merge = ("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--mode", "merge", "--layout", "raw")
    one_line_error(cli(*merge), 2, "'cosine'", "'l2'", "cannot merge")
    with postgres.connect(dst) as conn:
        assert conn.execute("SELECT id FROM items").fetchall() == [("other",)]
        conn.execute("DROP INDEX items_embedding_idx")
        conn.execute("CREATE INDEX ON items USING hnsw (embedding vector_l2_ops)")
    assert ok(cli(*merge, "--json")).json()["ok"]  # the same distance merges
    with postgres.connect(dst) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (6,)


def test_a_dotted_collection_name_goes_to_its_schema_and_says_so(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    """Another store's collection "odd.col-1" becomes table col-1 in a schema odd (PostgreSQL's schema.table,
    as pgvector's own collections are named): made silently before, said now."""
    path = tmp_path / "chroma"
    col = chroma_client(path).create_collection("odd.col-1", embedding_function=None)
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    repo, dst = str(tmp_path / "repo"), database(postgres, tmp_path, "dst")
    ok(cli("backup", f"chroma:{path}", "--repo", repo))
    result = ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--layout", "raw", "--json")).json()
    (dataset,) = result["datasets"]
    assert any("schema 'odd'" in n and "table 'col-1'" in n for n in dataset["notes"]), dataset["notes"]
    with postgres.connect(dst) as conn:
        assert conn.execute('SELECT count(*) FROM odd."col-1"').fetchone() == (2,)


def test_an_empty_collection_without_a_dimension_restores(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    """An empty Chroma collection has no dimension, so its table gets no vector column: the restore's own
    read-back looked for a table with one and failed the rows check of a correct restore (a monthly drill
    with a pgvector scratch target failed every time)."""
    import chromadb

    chromadb.PersistentClient(path=str(tmp_path / "chroma")).create_collection("emptyc")
    repo, dst = str(tmp_path / "repo"), database(postgres, tmp_path, "dst")
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", repo))
    restored = ok(cli("restore", "latest", "--repo", repo, "--to", postgres.uri(dst), "--json")).json()
    (dataset,) = restored["datasets"]
    assert dataset["rows"] == 0 and all(c["ok"] for c in dataset["checks"]), dataset["checks"]
    with postgres.connect(dst) as conn:
        assert conn.execute("SELECT count(*) FROM emptyc").fetchone() == (0,)
