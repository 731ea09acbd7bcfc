"""Partitioned backups on Dask (issue 21), side by side in one run, on a PostgreSQL 18 + pgvector 0.8 server
started for the run (tests/pgserver.py).

The pgvector benchmark's ``items`` table (benchmarks.pgvector, without its HNSW index: a backup does not
read it) at ``--distributed-rows``, backed up with ``--queries 0`` (the search baseline runs in the driver
either way, and is measured by the backup section) in alternating children, fastest of ``repeats``:

- **no Dask**: ``run_backup`` in one process;
- **1 worker** / **2 workers**: the same with ``workers=1`` / ``workers=2`` (a LocalCluster started and
  stopped inside the timed run, as ``--workers N`` does); and on a one-worker cluster already running (as
  ``--dask`` finds one): Dask's own overhead without the cluster's start;
- **the source alone**: bare binary COPY loops of the whole table split in two block-range halves, read by
  one session after the other and by two sessions at once (threads): how fast PostgreSQL hands out the rows
  with one and two readers on this machine, which bounds any speed-up.

Restores of that backup (a bundle of many parts) into a fresh database each, with ``--queries 0``, the same
four ways (no Dask, 1 worker, a running 1-worker cluster, 2 workers): the total, and its validate + load
time (what the workers share; the content check then reads the whole table back in the driver, the same for
every variant). The **target alone**: the table's rows in binary COPY form (read into memory first) written
into an unlogged table by one session, and in two halves by two sessions at once: how fast PostgreSQL takes
rows with one and two writers here.

Incremental: 1% of the rows changed after that backup, then the nightly link after it (a copy of its
repository each time), with no Dask, 1 and 2 workers: the workers look their records up in the parent's
digests (broadcast to them) and write what changed.

LanceDB: a table of the same rows in LANCE_FRAGMENTS appends (as many fragments), backed up with
``--queries 0`` and its bundle restored into a new folder (``--queries 0``), with no Dask, 1 and 2 workers;
its backup also on a running one-worker cluster.

Ratios: Dask's overhead (1 worker / no Dask, target <= 1.1) and the speed-up (no Dask / 2 workers, target >=
1.6 where the source is not the limit). The scaling model of the report (100M x 768 to S3 within one hour)
is computed from these per-worker rates and marked as a model.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from benchmarks.common import Stopwatch, fastest, run_child, section_main
from benchmarks.pgvector import _connect, seed

MODULE = "benchmarks.distributed"


def child_seed(uri: str, rows: str, dim: str) -> dict[str, Any]:
    seed(uri, int(rows), int(dim), index=False)
    return {}


def child_backup(uri: str, repo: str, workers: str) -> dict[str, Any]:
    """One backup: in this process ("0"), on a LocalCluster of N workers that the run starts and stops
    ("N"), or on a running one-worker cluster started before the clock ("running": Dask's overhead without
    the cluster's start, as with --dask)."""
    import psycopg  # noqa: F401 - imported before the clock starts

    from aibackup.backup import SourceOptions, run_backup

    with contextlib.ExitStack() as stack:
        address = _running(stack) if workers == "running" else None
        clock = Stopwatch()
        local = None if workers == "running" else int(workers) or None
        options = SourceOptions(queries=0, workers=local, dask=address)
        result = run_backup(repo, uri + "?document=content", ["items"], source_options=options)
        assert result.datasets[0].rows > 0
        return {**clock.read(), "incremental": result.datasets[0].extends is not None}


def child_restore(target: str, repo: str, workers: str) -> dict[str, Any]:
    """One restore into `target` (a fresh database), workers as :func:`child_backup` takes them."""
    import psycopg  # noqa: F401 - imported before the clock starts

    from aibackup.recall_rule import CheckOptions
    from aibackup.restore import run_restore

    with contextlib.ExitStack() as stack:
        address = _running(stack) if workers == "running" else None
        clock = Stopwatch()
        local = None if workers == "running" else int(workers) or None
        result = run_restore(repo, "latest", target, check_options=CheckOptions(queries=0), workers=local, dask=address)
        (dataset,) = result.datasets
        assert result.ok and dataset.rows > 0
        load = result.verify_seconds + result.validate_seconds + dataset.load_seconds
        return {**clock.read(), "load": load, "check": dataset.check_seconds}


def child_bare_ingest(uri: str, sessions: str) -> dict[str, Any]:
    """The table's rows in binary COPY form, read into memory first, written into an unlogged table of its
    columns: by one session, or in two halves by two sessions at once."""
    with _connect(uri) as conn:
        sql = "SELECT pg_relation_size('items') / current_setting('block_size')::int"
        half = int(conn.execute(sql).fetchone()[0]) // 2
        halves = []
        for where in (f"ctid < '({half},0)'::tid", f"ctid >= '({half},0)'::tid"):
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY (SELECT * FROM items WHERE {where}) TO STDOUT (FORMAT BINARY)") as copy,
            ):
                halves.append(b"".join(bytes(chunk) for chunk in copy))
        conn.execute("DROP TABLE IF EXISTS ingest")
        conn.execute("CREATE UNLOGGED TABLE ingest (LIKE items)")

    def write(data: bytes) -> None:
        with _connect(uri) as conn, conn.cursor() as cur, cur.copy("COPY ingest FROM STDIN (FORMAT BINARY)") as copy:
            for start in range(0, len(data), 8 << 20):
                copy.write(data[start : start + (8 << 20)])

    clock = Stopwatch()
    if sessions == "2":
        threads = [threading.Thread(target=write, args=(data,)) for data in halves]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for data in halves:
            write(data)
    out = clock.read()
    with _connect(uri) as conn:
        conn.execute("DROP TABLE ingest")
    return out


def _running(stack: contextlib.ExitStack, *modules: str) -> str:
    """A one-worker LocalCluster started before the clock (as ``--dask`` finds one), `modules` imported in
    its worker; its address."""
    import dask
    from dask.distributed import Client, LocalCluster

    # as --workers starts its own (aibackup.distributed.cluster): glibc's malloc defaults in the worker
    stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ": {}}))
    cluster = stack.enter_context(
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    )
    client = stack.enter_context(Client(cluster))
    for module in ("aibackup.distributed", *modules):  # a worker that has run a task before
        client.run(__import__, module)
    return str(cluster.scheduler_address)


def child_lance_seed(path: str, rows: str, dim: str) -> dict[str, Any]:
    """A LanceDB table of `rows` records in LANCE_FRAGMENTS appends: as many fragments."""
    from benchmarks.common import embeddings
    from benchmarks.lancedb import COLLECTION, _batch, _quiet

    lancedb = _quiet()
    n, step = int(rows), -(-int(rows) // LANCE_FRAGMENTS)
    vectors = embeddings(n, int(dim))
    db = lancedb.connect(path)
    table = None
    for start in range(0, n, step):
        batch = _batch(start, min(n, start + step), vectors[start : start + step])
        if table is None:
            table = db.create_table(COLLECTION, batch)
        else:
            table.add(batch)
    return {}


def child_lance_backup(path: str, repo: str, workers: str) -> dict[str, Any]:
    import aibackup.connectors.lancedb.connector  # noqa: F401 - imported before the clock starts
    from aibackup.backup import SourceOptions, run_backup

    with contextlib.ExitStack() as stack:
        address = _running(stack, "lancedb", "lance") if workers == "running" else None
        clock = Stopwatch()
        local = None if workers == "running" else int(workers) or None
        options = SourceOptions(queries=0, workers=local, dask=address)
        result = run_backup(repo, f"lancedb:{path}", source_options=options)
        assert result.datasets[0].rows > 0
        return clock.read()


def child_lance_restore(target: str, repo: str, workers: str) -> dict[str, Any]:
    import aibackup.connectors.lancedb.connector  # noqa: F401 - imported before the clock starts
    from aibackup.recall_rule import CheckOptions
    from aibackup.restore import run_restore

    clock = Stopwatch()
    result = run_restore(
        repo, "latest", f"lancedb:{target}", check_options=CheckOptions(queries=0), workers=int(workers) or None
    )
    (dataset,) = result.datasets
    assert result.ok and dataset.rows > 0
    load = result.verify_seconds + result.validate_seconds + dataset.load_seconds
    return {**clock.read(), "load": load, "check": dataset.check_seconds}


def child_bare_copy(uri: str, sessions: str) -> dict[str, Any]:
    """The table in two block-range halves by binary COPY (bytes only), one session after the other or two
    at once."""
    with _connect(uri) as conn:
        sql = "SELECT pg_relation_size('items') / current_setting('block_size')::int"
        blocks = int(conn.execute(sql).fetchone()[0])
    half = blocks // 2
    ranges = [f"ctid < '({half},0)'::tid", f"ctid >= '({half},0)'::tid"]
    total = [0, 0]

    def read(n: int) -> None:
        sql = f"COPY (SELECT * FROM items WHERE {ranges[n]}) TO STDOUT (FORMAT BINARY)"
        with _connect(uri) as conn, conn.cursor() as cur, cur.copy(sql) as copy:
            for chunk in copy:
                total[n] += len(chunk)

    clock = Stopwatch()
    if sessions == "2":
        threads = [threading.Thread(target=read, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        read(0)
        read(1)
    return {**clock.read(), "bytes": sum(total)}


CHILDREN = {
    "seed": child_seed,
    "backup": child_backup,
    "restore": child_restore,
    "bare_copy": child_bare_copy,
    "bare_ingest": child_bare_ingest,
    "lance_seed": child_lance_seed,
    "lance_backup": child_lance_backup,
    "lance_restore": child_lance_restore,
}
#: Fragments of the LanceDB table (one per append): what a partitioned backup splits.
LANCE_FRAGMENTS = 8
LANCE_RUNS = {"l_none": "0", "l_one": "1", "l_two": "2"}
RESTORES = {"r_none": "0", "r_one": "1", "r_running": "running", "r_two": "2"}
INCREMENTALS = {"i_none": "0", "i_one": "1", "i_two": "2"}
#: The share of the rows changed before the incremental backups.
CHANGED = 100  # one row in CHANGED


def measure(rows: int, dim: int, repeats: int) -> dict[str, Any]:
    from tests.conftest import free_port
    from tests.pgserver import running_postgres

    work = Path(tempfile.mkdtemp(prefix="aibackup-bench-distributed-"))
    kinds = ("none", "one", "running", "two", "copy1", "copy2", *RESTORES, "ingest1", "ingest2")
    kinds += tuple(f"{k}_backup" for k in LANCE_RUNS) + tuple(f"{k}_restore" for k in LANCE_RUNS)
    kinds += (*INCREMENTALS, "l_running_backup")
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        with running_postgres(free_port()) as server:
            server.database("bench")
            source = server.uri("bench")
            run_child(MODULE, "seed", source, str(rows), str(dim))
            print("benchmarks: distributed seeded", file=sys.stderr, flush=True)
            for n in range(repeats):
                for kind, workers in (("none", "0"), ("one", "1"), ("running", "running"), ("two", "2")):
                    repo = work / f"{kind}-{n}"
                    runs[kind].append(run_child(MODULE, "backup", source, str(repo), workers))
                    shutil.rmtree(repo)
                runs["copy1"].append(run_child(MODULE, "bare_copy", source, "1"))
                runs["copy2"].append(run_child(MODULE, "bare_copy", source, "2"))
            # Restores of one bundle, each into a database of its own, dropped after it.
            bundle = work / "bundle"
            run_child(MODULE, "backup", source, str(bundle), "0")
            for n in range(repeats):
                for kind, workers in RESTORES.items():
                    target = server.database(f"{kind}_{n}")
                    runs[kind].append(run_child(MODULE, "restore", server.uri(target), str(bundle), workers))
                    with server.connect() as conn:
                        conn.execute(f'DROP DATABASE "{target}" WITH (FORCE)')
                runs["ingest1"].append(run_child(MODULE, "bare_ingest", source, "1"))
                runs["ingest2"].append(run_child(MODULE, "bare_ingest", source, "2"))
            # The nightly link after that bundle, once 1% of the rows changed.
            with _connect(source) as conn:
                conn.execute(f"UPDATE items SET topic = topic + 1000 WHERE id % {CHANGED} = 0")
                conn.execute("VACUUM ANALYZE items")
            for n in range(repeats):
                for kind, workers in INCREMENTALS.items():
                    repo = work / f"{kind}-{n}"
                    shutil.copytree(bundle, repo)
                    runs[kind].append(run_child(MODULE, "backup", source, str(repo), workers))
                    assert runs[kind][-1]["incremental"], f"{kind}: the backup was not incremental"
                    shutil.rmtree(repo)
        # LanceDB: a table of LANCE_FRAGMENTS fragments, backed up and restored the three ways.
        lance = work / "lance"
        run_child(MODULE, "lance_seed", str(lance), str(rows), str(dim))
        lance_bundle = work / "lance-bundle"
        run_child(MODULE, "lance_backup", str(lance), str(lance_bundle), "0")
        for n in range(repeats):
            for kind, workers in LANCE_RUNS.items():
                repo = work / f"{kind}-{n}"
                runs[f"{kind}_backup"].append(run_child(MODULE, "lance_backup", str(lance), str(repo), workers))
                shutil.rmtree(repo)
                target = work / f"{kind}-target-{n}"
                runs[f"{kind}_restore"].append(
                    run_child(MODULE, "lance_restore", str(target), str(lance_bundle), workers)
                )
                shutil.rmtree(target)
            repo = work / f"l_running-{n}"
            runs["l_running_backup"].append(run_child(MODULE, "lance_backup", str(lance), str(repo), "running"))
            shutil.rmtree(repo)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: fastest(v) for k, v in runs.items()}
    seconds = {k: round(v["seconds"], 3) for k, v in best.items()}
    return {
        "rows": rows,
        "dim": dim,
        "backup_seconds": seconds["none"],
        "backup_1_worker_seconds": seconds["one"],
        "backup_1_running_worker_seconds": seconds["running"],
        "dask_overhead_running": round(seconds["running"] / seconds["none"], 3),
        "backup_2_workers_seconds": seconds["two"],
        "dask_overhead": round(seconds["one"] / seconds["none"], 3),
        "speedup_2_workers": round(seconds["none"] / seconds["two"], 3),
        "bare_copy_1_session_seconds": seconds["copy1"],
        "bare_copy_2_sessions_seconds": seconds["copy2"],
        "source_speedup_2_sessions": round(seconds["copy1"] / seconds["copy2"], 3),
        "rows_per_second_1_worker": round(rows / seconds["one"]),
        "restore_seconds": seconds["r_none"],
        "restore_1_worker_seconds": seconds["r_one"],
        "restore_1_running_worker_seconds": seconds["r_running"],
        "restore_2_workers_seconds": seconds["r_two"],
        "restore_load_seconds": {k: round(best[k]["load"], 3) for k in RESTORES},
        "restore_check_seconds": {k: round(best[k]["check"], 3) for k in RESTORES},
        "restore_dask_overhead": round(seconds["r_one"] / seconds["r_none"], 3),
        "restore_dask_overhead_running": round(seconds["r_running"] / seconds["r_none"], 3),
        "restore_speedup_2_workers": round(seconds["r_none"] / seconds["r_two"], 3),
        "restore_load_speedup_2_workers": round(best["r_none"]["load"] / best["r_two"]["load"], 3),
        "bare_ingest_1_session_seconds": seconds["ingest1"],
        "bare_ingest_2_sessions_seconds": seconds["ingest2"],
        "target_speedup_2_sessions": round(seconds["ingest1"] / seconds["ingest2"], 3),
        "lancedb_fragments": LANCE_FRAGMENTS,
        "lancedb_backup_seconds": {k: seconds[f"{k}_backup"] for k in LANCE_RUNS},
        "lancedb_restore_seconds": {k: seconds[f"{k}_restore"] for k in LANCE_RUNS},
        "lancedb_restore_load_seconds": {k: round(best[f"{k}_restore"]["load"], 3) for k in LANCE_RUNS},
        "lancedb_restore_check_seconds": {k: round(best[f"{k}_restore"]["check"], 3) for k in LANCE_RUNS},
        "lancedb_backup_dask_overhead": round(seconds["l_one_backup"] / seconds["l_none_backup"], 3),
        "lancedb_backup_running_seconds": seconds["l_running_backup"],
        "lancedb_backup_dask_overhead_running": round(seconds["l_running_backup"] / seconds["l_none_backup"], 3),
        "incremental_changed_share": 1 / CHANGED,
        "incremental_seconds": {k: seconds[k] for k in INCREMENTALS},
        "incremental_dask_overhead": round(seconds["i_one"] / seconds["i_none"], 3),
        "incremental_speedup_2_workers": round(seconds["i_none"] / seconds["i_two"], 3),
        "lancedb_backup_speedup_2_workers": round(seconds["l_none_backup"] / seconds["l_two_backup"], 3),
        "lancedb_restore_dask_overhead": round(seconds["l_one_restore"] / seconds["l_none_restore"], 3),
        "lancedb_restore_speedup_2_workers": round(seconds["l_none_restore"] / seconds["l_two_restore"], 3),
        "bytes": best["copy1"]["bytes"],
    }


if __name__ == "__main__":
    sys.exit(section_main(sys.argv[1:], CHILDREN, measure, rows=1_000_000))
