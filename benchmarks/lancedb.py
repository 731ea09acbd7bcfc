"""LanceDB (issue 18): backup vs a bare scanner read, restore vs a bare ``create_table``, side by side.

    python -m benchmarks.lancedb --rows 100000 --dim 384 --repeats 3

The table (cached under ``benchmarks/.cache``) is what a RAG stack keeps in LanceDB: ``id`` (text),
``vector`` (float32, no index), ``text`` and three metadata columns (``topic`` int, ``score`` float, ``lang``
text), the records of :mod:`benchmarks.common`. Each step runs in a fresh child process; the children
alternate ``repeats`` times and the fastest of each counts (noise only adds time):

- **bare read**: open the database and the table, pin its version (``checkout``), read every batch of
  ``table.search().to_batches(B)`` (B: LanceDB's default and a few sizes; the best is the baseline);
- **backup**: ``run_backup`` of the table into a new local repository (search baseline included, and once
  more without it: ``queries`` 0);
- **bare create**: ``create_table`` of the same Arrow data, streamed from an Arrow IPC file of the table's
  rows (memory-mapped: the page cache holds it, as it holds the bundle a restore reads);
- **restore**: ``run_restore`` of the backup into a new database, checks included; its load pass
  (``load_seconds``: reading and decoding the bundle, the conversion, ``create_table`` and ``count_rows``)
  is what the ratio compares with the bare create; the validation pass and the checks are reported apart.

Both sides of each ratio import lancedb before their clock starts.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE,
    COLLECTION,
    Stopwatch,
    _built_once,
    document,
    embeddings,
    fastest,
    machine,
    record_id,
    run_child,
    section_main,
    timed_restore,
)

MODULE = "benchmarks.lancedb"
#: Batch sizes of the bare read ("0": LanceDB's default).
READ_BATCHES = ("0", "8192", "32768")
SEED_STEP = 20_000

os.environ.setdefault("LANCEDB_LOG", "error")


def _quiet() -> Any:
    import warnings

    warnings.simplefilter("ignore")
    import lancedb

    return lancedb


def seeded_lancedb(rows: int, dim: int) -> Path:
    """A LanceDB database holding table ``bench`` with `rows` records (built once, then reused)."""
    return _built_once(CACHE / f"lancedb-{rows}x{dim}", lambda path: _seed(path, rows, dim))


def _batch(start: int, end: int, vectors: Any) -> Any:
    import pyarrow as pa

    return pa.record_batch(
        {
            "id": [record_id(i) for i in range(start, end)],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
            "text": [document(i) for i in range(start, end)],
            "topic": pa.array([i % 97 for i in range(start, end)], pa.int64()),
            "score": pa.array([i / 7 for i in range(start, end)], pa.float64()),
            "lang": ["en" if i % 3 else "de" for i in range(start, end)],
        }
    )


def _seed(path: Path, rows: int, dim: int) -> None:
    import pyarrow as pa

    lancedb = _quiet()
    vectors = embeddings(rows, dim)
    batches = (
        _batch(start, min(rows, start + SEED_STEP), vectors[start : start + SEED_STEP])
        for start in range(0, rows, SEED_STEP)
    )
    first = _batch(0, 1, vectors[:1])  # for its schema
    lancedb.connect(str(path)).create_table(COLLECTION, pa.RecordBatchReader.from_batches(first.schema, batches))
    # The same rows as an Arrow IPC file, for the bare create_table.
    table = lancedb.connect(str(path)).open_table(COLLECTION)
    with pa.OSFile(str(path / "rows.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.search().to_batches(SEED_STEP):
            writer.write_batch(batch)


# --- child processes: each prints {"seconds", "cpu_seconds", "max_rss_mb", ...} as JSON ---------------------


def child_bare_read(path: str, batch: str) -> dict[str, Any]:
    lancedb = _quiet()
    clock = Stopwatch()
    table = lancedb.connect(path).open_table(COLLECTION)
    table.checkout(table.version)
    rows = 0
    for b in table.search().to_batches(int(batch) or None):
        rows += b.num_rows
    return {**clock.read(), "rows": rows, "batch": batch}


def child_backup(path: str, repo: str, queries: str = "100") -> dict[str, Any]:
    _quiet()
    import aibackup.connectors.lancedb.connector  # noqa: F401 - imported before the clock starts
    from aibackup.backup import SourceOptions, run_backup

    clock = Stopwatch()
    result = run_backup(repo, f"lancedb:{path}", source_options=SourceOptions(queries=int(queries)))
    out = clock.read()
    dataset = result.manifest.datasets[0]
    return {**out, "rows": dataset.rows, "bundle_bytes": sum(p.bytes for p in dataset.parts)}


def child_bare_create(path: str, target: str) -> dict[str, Any]:
    import pyarrow as pa

    lancedb = _quiet()
    clock = Stopwatch()
    source = pa.ipc.open_file(pa.memory_map(str(Path(path) / "rows.arrow")))
    batches = (source.get_batch(i) for i in range(source.num_record_batches))
    table = lancedb.connect(target).create_table(COLLECTION, pa.RecordBatchReader.from_batches(source.schema, batches))
    return {**clock.read(), "rows": table.count_rows()}


def child_restore(repo: str, target: str) -> dict[str, Any]:
    _quiet()
    import aibackup.connectors.lancedb.connector  # noqa: F401

    return timed_restore(repo, f"lancedb:{target}")


CHILDREN = {
    "bare-read": child_bare_read,
    "backup": child_backup,
    "bare-create": child_bare_create,
    "restore": child_restore,
}


def measure(rows: int, dim: int, repeats: int) -> dict[str, Any]:
    """The numbers and the ratios, JSON-able (see the module docstring)."""
    store = seeded_lancedb(rows, dim)
    work = Path(tempfile.mkdtemp(prefix="aibackup-bench-lancedb-"))
    try:
        sweep = {b: run_child(MODULE, "bare-read", str(store), b) for b in READ_BATCHES}
        best = min(sweep, key=lambda b: sweep[b]["seconds"])
        reads, backups, plain, creates, restores = [sweep[best]], [], [], [], []
        for n in range(repeats):
            backups.append(run_child(MODULE, "backup", str(store), str(work / f"repo-{n}")))
            plain.append(run_child(MODULE, "backup", str(store), str(work / f"plain-{n}"), "0"))
            reads.append(run_child(MODULE, "bare-read", str(store), best))
            if n:
                shutil.rmtree(work / f"repo-{n}")
            shutil.rmtree(work / f"plain-{n}")
            creates.append(run_child(MODULE, "bare-create", str(store), str(work / "bare")))
            shutil.rmtree(work / "bare")
            restores.append(run_child(MODULE, "restore", str(work / "repo-0"), str(work / "restored")))
            shutil.rmtree(work / "restored")
            print(f"benchmarks: lancedb round {n + 1} of {repeats}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    read, backup, no_baseline = fastest(reads), fastest(backups), fastest(plain)
    create, restore = fastest(creates), fastest(restores, "load_seconds")
    restore_total = fastest(restores)
    for label, run in (("backup", backup), ("bare create", create), ("restore", restore)):
        if run["rows"] != read["rows"]:
            raise RuntimeError(f"{label} holds {run['rows']} rows, the bare read {read['rows']}")

    def seconds(runs: list[dict[str, Any]], key: str = "seconds") -> list[float]:
        return [round(r[key], 3) for r in runs]

    return {
        "rows": rows,
        "dim": dim,
        "repeats": repeats,
        "machine": machine(),
        "bare_read_seconds_by_batch": {b: round(r["seconds"], 3) for b, r in sweep.items()},
        "bare_read_best_batch": best,
        "bare_read_seconds": round(read["seconds"], 3),
        "bare_read_runs": seconds(reads),
        "backup_seconds": round(backup["seconds"], 3),
        "backup_runs": seconds(backups),
        "backup_cpu_seconds": round(backup["cpu_seconds"], 3),
        "backup_max_rss_mb": max(r["max_rss_mb"] for r in backups),
        "bare_read_max_rss_mb": max(r["max_rss_mb"] for r in reads),
        "backup_no_baseline_seconds": round(no_baseline["seconds"], 3),
        "bundle_bytes": backup["bundle_bytes"],
        "backup_vs_bare_read": round(backup["seconds"] / read["seconds"], 3),
        "backup_no_baseline_vs_bare_read": round(no_baseline["seconds"] / read["seconds"], 3),
        "bare_create_seconds": round(create["seconds"], 3),
        "bare_create_runs": seconds(creates),
        "restore_load_seconds": round(restore["load_seconds"], 3),
        "restore_load_runs": seconds(restores, "load_seconds"),
        "restore_validate_seconds": round(restore_total["validate_seconds"], 3),
        "restore_check_seconds": round(restore_total["check_seconds"], 3),
        "restore_seconds": round(restore_total["seconds"], 3),
        "restore_max_rss_mb": max(r["max_rss_mb"] for r in restores),
        "restore_load_vs_bare_create": round(restore["load_seconds"] / create["seconds"], 3),
        "restore_vs_bare_create": round(restore_total["seconds"] / create["seconds"], 3),
        "targets": {"backup_vs_bare_read": 1.1, "restore_load_vs_bare_create": 1.2},
    }


if __name__ == "__main__":
    sys.exit(section_main(sys.argv[1:], CHILDREN, measure, rows=100_000))
