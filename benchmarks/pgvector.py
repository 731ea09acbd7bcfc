"""pgvector backup and restore against the bare psycopg loops (issue 18), side by side in one run, on a
PostgreSQL 18 + pgvector 0.8 server started for the run (tests/pgserver.py, ``maintenance_work_mem`` 1 GB
for every index build of either side).

Two tables of the same rows (the seeded embeddings of benchmarks.common): ``items (id bigint primary key,
content text, topic int, lang text, embedding vector(DIM))`` with an HNSW index (``vector_cosine_ops``, m 16,
ef_construction 64), backed up with ``?document=content``; and ``items_jsonb`` with the metadata in one
``jsonb`` column instead (each row's JSON then parsed and written canonical in Python).
Each measure alternates aibackup and its bare loop, ``repeats`` times, fastest of each:

- **backup**: ``run_backup`` of the table (``--queries 0``: the search baseline is measured apart by the
  backup section) against a bare ``COPY (SELECT embedding …) TO STDOUT (FORMAT BINARY)`` loop decoded into
  a float32 numpy matrix, and against a bare binary COPY of every column (bytes only, nothing decoded);
- **restore**: the restore's load of that bundle into a new database (table, binary COPY, HNSW index,
  ANALYZE; checks apart) against a bare binary ``COPY FROM`` of the same rows plus the same index build;
- **memory**: the backup's peak RSS at ``--memory-rows`` against at ``rows``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Stopwatch, embeddings, fastest, metadata, run_child, section_main, timed_restore

MODULE = "benchmarks.pgvector"
INDEX = (
    "CREATE INDEX items_embedding ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
)
TABLES = {
    "items": "CREATE TABLE items (id bigint PRIMARY KEY, content text, topic int, lang text, embedding vector({dim}))",
    "items_jsonb": (
        "CREATE TABLE items_jsonb (id bigint PRIMARY KEY, content text, metadata jsonb, embedding vector({dim}))"
    ),
}


def _connect(uri: str) -> Any:
    import psycopg

    from aibackup.connectors.registry import parse_location

    location = parse_location(uri)
    return psycopg.connect(
        host=location.host, port=location.port, user=location.user, dbname=location.database, autocommit=True
    )


def _rows(start: int, end: int, vectors: np.ndarray, table: str = "items") -> bytes:
    """Binary COPY tuples of the table's columns for rows start..end."""
    from aibackup.connectors.pgvector import codec

    cells: list[list[bytes | None]] = [
        [int(i).to_bytes(8, "big", signed=True) for i in range(start, end)],
        [f"document number {i} about topic {i % 97}".encode() for i in range(start, end)],
    ]
    if table == "items":
        cells.append([int(metadata(i)["topic"]).to_bytes(4, "big", signed=True) for i in range(start, end)])
        cells.append([str(metadata(i)["lang"]).encode() for i in range(start, end)])
    else:
        cells.append([b"\x01" + json.dumps(metadata(i)).encode() for i in range(start, end)])
    cells.append(list(codec.encode_dense_cells(vectors, "vector")))
    return codec.encode_rows(cells)


def seed(uri: str, rows: int, dim: int, *, index: bool = True) -> None:
    """The benchmark table in the database of `uri`, seeded by binary COPY, with its HNSW index."""
    from aibackup.connectors.pgvector import codec

    vectors = embeddings(rows, dim)
    with _connect(uri) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        for table, ddl in TABLES.items():
            conn.execute(ddl.format(dim=dim))
            with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(codec.HEADER)
                for start in range(0, rows, 20_000):
                    end = min(rows, start + 20_000)
                    copy.write(_rows(start, end, vectors[start:end], table))
                copy.write(codec.TRAILER)
            conn.execute(f"VACUUM ANALYZE {table}")
        if index:
            conn.execute(INDEX)


def child_backup(uri: str, repo: str, table: str) -> dict[str, Any]:
    import psycopg  # noqa: F401 - imported before the clock starts

    from aibackup.backup import SourceOptions, run_backup

    clock = Stopwatch()
    source = uri + ("?document=content" if table == "items" else "")
    run_backup(repo, source, [table], source_options=SourceOptions(queries=0))
    return clock.read()


def child_bare_read(uri: str, dim: str, columns: str, table: str) -> dict[str, Any]:
    """The bare loop: binary COPY of the embedding column decoded into float32 (or of every column, kept
    as bytes)."""
    import psycopg  # noqa: F401 - imported before the clock starts, as for the backup

    from aibackup.connectors.pgvector.codec import decode_vectors

    clock = Stopwatch()
    with _connect(uri) as conn, conn.cursor() as cur:
        buffer = bytearray()
        select = "embedding" if columns == "vector" else "*"
        with cur.copy(f"COPY (SELECT {select} FROM {table}) TO STDOUT (FORMAT BINARY)") as copy:
            for chunk in copy:
                buffer += chunk
        if columns == "vector":
            matrix = decode_vectors(buffer, int(dim))
            assert matrix.dtype == np.float32
    return clock.read()


def child_restore(repo: str, uri: str) -> dict[str, Any]:
    import psycopg  # noqa: F401

    return timed_restore(repo, uri)


def child_bare_load(uri: str, rows: str, dim: str) -> dict[str, Any]:
    """The bare restore: the same rows (pre-encoded before the clock) by binary COPY FROM, then the index."""
    import psycopg  # noqa: F401

    from aibackup.connectors.pgvector import codec

    n, d = int(rows), int(dim)
    vectors = embeddings(n, d)
    payload = [_rows(s, min(n, s + 20_000), vectors[s : s + 20_000]) for s in range(0, n, 20_000)]
    clock = Stopwatch()
    with _connect(uri) as conn:
        conn.execute(TABLES["items"].format(dim=d))
        with conn.cursor() as cur, cur.copy("COPY items FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(codec.HEADER)
            for chunk in payload:
                copy.write(chunk)
            copy.write(codec.TRAILER)
        conn.execute(INDEX)
        conn.execute("ANALYZE items")
    return {**clock.read(), "load_seconds": clock.read()["seconds"]}


def child_seed(uri: str, rows: str, dim: str, index: str) -> dict[str, Any]:
    """Seeding in a child of its own: the parent stays small. A child's peak RSS counts from the memory of
    the process it was forked from (Linux keeps the high-water mark across exec), so a parent holding 1M
    seeded vectors would make every later child look 2 GB large."""
    seed(uri, int(rows), int(dim), index=index == "1")
    return {}


CHILDREN = {
    "seed": child_seed,
    "backup": child_backup,
    "bare_read": child_bare_read,
    "restore": child_restore,
    "bare_load": child_bare_load,
}


def measure(rows: int, dim: int, repeats: int, memory_rows: int = 0) -> dict[str, Any]:
    from tests.conftest import free_port
    from tests.pgserver import running_postgres

    work = Path(tempfile.mkdtemp(prefix="aibackup-bench-pgvector-"))
    kinds = ("backup", "vector", "all", "backup_jsonb", "vector_jsonb", "restore", "load")
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        with running_postgres(free_port(), "-c maintenance_work_mem=1GB") as server:
            server.database("bench")
            run_child(MODULE, "seed", server.uri("bench"), str(rows), str(dim), "1")
            print("benchmarks: pgvector seeded", file=sys.stderr, flush=True)
            source = server.uri("bench")
            for n in range(repeats):
                repo = work / f"repo-{n}"
                runs["backup"].append(run_child(MODULE, "backup", source, str(repo), "items"))
                runs["vector"].append(run_child(MODULE, "bare_read", source, str(dim), "vector", "items"))
                runs["all"].append(run_child(MODULE, "bare_read", source, str(dim), "all", "items"))
                jsonb = work / f"jsonb-{n}"
                runs["backup_jsonb"].append(run_child(MODULE, "backup", source, str(jsonb), "items_jsonb"))
                runs["vector_jsonb"].append(run_child(MODULE, "bare_read", source, str(dim), "vector", "items_jsonb"))
                shutil.rmtree(jsonb)
                if n:
                    shutil.rmtree(repo)
            print("benchmarks: pgvector backups done", file=sys.stderr, flush=True)
            for n in range(max(1, repeats - 2)):  # each side builds a 100k HNSW index: about a minute
                ours, bare = server.database(f"restored{n}"), server.database(f"bare{n}")
                runs["restore"].append(run_child(MODULE, "restore", str(work / "repo-0"), server.uri(ours)))
                runs["load"].append(run_child(MODULE, "bare_load", server.uri(bare), str(rows), str(dim)))
            memory = None
            if memory_rows:
                server.database("big")
                run_child(MODULE, "seed", server.uri("big"), str(memory_rows), str(dim), "0")
                big = run_child(MODULE, "backup", server.uri("big"), str(work / "repo-big"), "items")
                small = fastest(runs["backup"])
                memory = {
                    "rows": memory_rows,
                    "max_rss_mb": big["max_rss_mb"],
                    "max_rss_mb_at_rows": small["max_rss_mb"],
                    "ratio": round(big["max_rss_mb"] / small["max_rss_mb"], 3),
                    "seconds": round(big["seconds"], 3),
                }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: fastest(v) for k, v in runs.items() if v}
    load = {k: fastest(runs[k], "load_seconds") for k in ("restore", "load")}
    return {
        "rows": rows,
        "dim": dim,
        "backup_seconds": round(best["backup"]["seconds"], 3),
        "bare_copy_vector_seconds": round(best["vector"]["seconds"], 3),
        "bare_copy_all_seconds": round(best["all"]["seconds"], 3),
        "backup_vs_bare_vector": round(best["backup"]["seconds"] / best["vector"]["seconds"], 3),
        "backup_vs_bare_all": round(best["backup"]["seconds"] / best["all"]["seconds"], 3),
        "jsonb_backup_seconds": round(best["backup_jsonb"]["seconds"], 3),
        "jsonb_bare_copy_vector_seconds": round(best["vector_jsonb"]["seconds"], 3),
        "jsonb_backup_vs_bare_vector": round(best["backup_jsonb"]["seconds"] / best["vector_jsonb"]["seconds"], 3),
        "restore_load_seconds": round(load["restore"]["load_seconds"], 3),
        "bare_load_seconds": round(load["load"]["load_seconds"], 3),
        "restore_vs_bare_load": round(load["restore"]["load_seconds"] / load["load"]["load_seconds"], 3),
        "backup_max_rss_mb": best["backup"]["max_rss_mb"],
        "memory": memory,
    }


if __name__ == "__main__":
    sys.exit(section_main(sys.argv[1:], CHILDREN, measure, rows=100_000, memory_rows=0))
