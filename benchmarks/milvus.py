"""Milvus Lite: aibackup's backup against a bare query-iterator loop over the same collection (issue 18:
backup <= 1.2x the bare loop), side by side in one run.

- The store: a Milvus Lite folder (milvus-lite 3.x) with one collection of `rows` records: a VARCHAR key,
  a `dim` float vector (HNSW, cosine), a document and three typed metadata fields, as an application
  would make it. Seeded once in a child process and cached under ``benchmarks/.cache``.
- **bare**: open the store (Milvus Lite starts its server in the process), load the collection, then
  ``query_iterator(batch_size=P, output_fields=["*"], strict_float32=True)`` until it is exhausted, at a few
  page sizes P (the best one is the baseline). ``strict_float32`` gives each vector as a float32 view of
  the page instead of a list of Python floats: the fastest way pymilvus reads, and the one the connector
  uses. The public default (lists of floats) is timed at the best P too, for scale.
- **backup**: ``run_backup`` of the store into a new local repository: with the default search baseline
  (the source asked the sampled queries, an exact pass over the vectors written), and with ``--queries 0``.

Both children import pymilvus and milvus_lite before their clock starts, and both clocks include opening the
store and loading the collection (Milvus Lite reads it from disk then). Each step runs in a fresh child
process (:func:`benchmarks.common.run_child`); the fastest of `repeats` is kept (noise only adds time).

``python -m benchmarks.milvus --rows 20000 --dim 384 --repeats 3`` prints the JSON.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from aibackup.recall_rule import DEFAULT_QUERIES
from benchmarks.common import (
    CACHE,
    COLLECTION,
    Stopwatch,
    _built_once,
    backup_summary,
    disk_bytes,
    document,
    embeddings,
    fastest,
    machine,
    metadata,
    record_id,
    run_child,
    section_main,
)

MODULE = "benchmarks.milvus"
PAGES = (1000, 4000, 16000)
SEED_BATCH = 2000


def seeded_milvus(rows: int, dim: int) -> Path:
    """A Milvus Lite store holding `rows` records (seeded once, in a child process, then reused)."""
    folder = _built_once(
        CACHE / f"milvus-{rows}x{dim}", lambda path: run_child(MODULE, "seed", str(path), str(rows), str(dim))
    )
    return folder / "store.db"


def child_seed(folder: str, rows: str, dim: str) -> dict[str, Any]:
    from pymilvus import DataType, MilvusClient

    n, size = int(rows), int(dim)
    Path(folder).mkdir(parents=True, exist_ok=True)
    client = MilvusClient(str(Path(folder) / "store.db"))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=size)
    schema.add_field("document", DataType.VARCHAR, max_length=1024)
    schema.add_field("topic", DataType.INT64)
    schema.add_field("score", DataType.DOUBLE)
    schema.add_field("lang", DataType.VARCHAR, max_length=8)
    client.create_collection(COLLECTION, schema=schema)
    vectors = embeddings(n, size)
    clock = Stopwatch()
    for start in range(0, n, SEED_BATCH):
        end = min(n, start + SEED_BATCH)
        client.insert(
            COLLECTION,
            [
                {"id": record_id(i), "vector": vectors[i], "document": document(i), **metadata(i)}
                for i in range(start, end)
            ],
        )
        print(f"  seeding milvus: {end}/{n}", file=sys.stderr, flush=True)
    client.flush(COLLECTION)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200})
    client.create_index(COLLECTION, index)
    client.close()
    return clock.read()


def child_bare(path: str, page: str, strict: str = "1") -> dict[str, Any]:
    """Open the store, load the collection, read every record through the query iterator."""
    import milvus_lite.server_manager  # noqa: F401 - imported before the clock starts
    from pymilvus import MilvusClient

    clock = Stopwatch()
    client = MilvusClient(path)
    client.load_collection(COLLECTION)
    iterator = client.query_iterator(
        COLLECTION, batch_size=int(page), output_fields=["*"], **({"strict_float32": True} if strict == "1" else {})
    )
    rows = 0
    while page_rows := iterator.next():
        rows += len(page_rows)
    iterator.close()
    out = {**clock.read(), "rows": rows}
    client.close()
    return out


def child_backup(path: str, repo: str, queries: str) -> dict[str, Any]:
    import milvus_lite.server_manager  # noqa: F401 - the client libraries are imported before the clock starts
    import pymilvus  # noqa: F401

    import aibackup.connectors.milvus.connector  # noqa: F401
    from aibackup.backup import SourceOptions, run_backup

    clock = Stopwatch()
    result = run_backup(repo, f"milvus:{path}", source_options=SourceOptions(queries=int(queries)))
    return {**clock.read(), **backup_summary(result)}


CHILDREN = {"seed": child_seed, "bare": child_bare, "backup": child_backup}


def measure(rows: int, dim: int, repeats: int) -> dict[str, Any]:
    """The bare loop's page sweep, then `repeats` rounds alternating the best bare loop, the backup and the
    backup without a baseline; the fastest of each and their ratios."""
    store = seeded_milvus(rows, dim)
    work = Path(tempfile.mkdtemp(prefix="aibackup-bench-milvus-"))
    try:
        sweep = {p: run_child(MODULE, "bare", str(store), str(p)) for p in PAGES}
        best = min(sweep, key=lambda p: sweep[p]["seconds"])
        public = run_child(MODULE, "bare", str(store), str(best), "0")
        bare, backup, plain = [sweep[best]], [], []
        for i in range(repeats):
            if i:
                bare.append(run_child(MODULE, "bare", str(store), str(best)))
            backup.append(run_child(MODULE, "backup", str(store), str(work / f"repo-{i}"), str(DEFAULT_QUERIES)))
            plain.append(run_child(MODULE, "backup", str(store), str(work / f"plain-{i}"), "0"))
            shutil.rmtree(work / f"repo-{i}", ignore_errors=True)
            shutil.rmtree(work / f"plain-{i}", ignore_errors=True)
            print(f"benchmarks: milvus round {i + 1} of {repeats}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base, ours, quiet = fastest(bare), fastest(backup), fastest(plain)
    if ours["rows"] != base["rows"] or base["rows"] != rows:
        raise RuntimeError(f"milvus: the backup holds {ours['rows']} rows, the bare loop read {base['rows']}")
    return {
        "machine": machine(),
        "rows": rows,
        "dim": dim,
        "repeats": repeats,
        "bare_seconds_by_page": {str(p): round(r["seconds"], 3) for p, r in sweep.items()},
        "bare_best_page": best,
        "bare_seconds": round(base["seconds"], 3),
        "bare_runs": [round(r["seconds"], 3) for r in bare],
        "bare_cpu_seconds": round(base["cpu_seconds"], 3),
        "bare_max_rss_mb": max(r["max_rss_mb"] for r in bare),
        "bare_lists_of_floats_seconds": round(public["seconds"], 3),
        "backup_seconds": round(ours["seconds"], 3),
        "backup_runs": [round(r["seconds"], 3) for r in backup],
        "backup_cpu_seconds": round(ours["cpu_seconds"], 3),
        "backup_max_rss_mb": max(r["max_rss_mb"] for r in backup),
        "backup_vs_bare": round(ours["seconds"] / base["seconds"], 3),
        "baseline_queries": DEFAULT_QUERIES,
        "source_recall": ours["source_recall"],
        "no_baseline_seconds": round(quiet["seconds"], 3),
        "no_baseline_runs": [round(r["seconds"], 3) for r in plain],
        "no_baseline_vs_bare": round(quiet["seconds"] / base["seconds"], 3),
        "bundle_bytes": ours["bundle_bytes"],
        "store_bytes": disk_bytes(store),
    }


if __name__ == "__main__":
    sys.exit(section_main(sys.argv[1:], CHILDREN, measure, rows=20_000))
