"""Backup vs the bare source read, per backend, and peak RSS of the backup process at two sizes.

- Chroma embedded: the bare loop is ``collection.get(include=[embeddings, documents, metadatas, uris],
  limit=P, offset=...)`` at a few page sizes P (the best one is the baseline) vs ``run_backup`` of the same
  store into a fresh local repository.
- Qdrant local mode: ``client.scroll(limit=P, with_payload=True, with_vectors=True)`` at a few P vs
  ``run_backup``. Both clocks include opening the store (local mode loads every point at open).
- Interference: the best bare Chroma loop again while a CPU-bound process keeps the other core busy, which
  shows what the work a backup adds on the second core costs the read itself.
- The proof pass: the ids-only scan a Chroma backup runs after its last page, timed alone (the bare loop
  has no such pass; like the backup's `describe`, it does count the records first).
- The read floor: each bare loop the way a backup reads (Chroma through the client call under
  ``Collection.get``; both with Python's automatic garbage collections off), which is faster than the
  public loop; the backup against it shows what everything else a backup does costs.
- Memory: backups from Chroma's own server (`chroma run`) of `rows` and of `memory_rows` records. Embedded
  Chroma loads the whole collection's vectors into the process that reads it (the bare loop too), so
  "memory stays flat as rows grow" is measured where the backing-up process holds only aibackup's memory.

Both children import the client library before their clock starts, so the two measure the same job: open,
read every record, and (for aibackup) encode, hash, write and commit the bundle. Every child reports wall and
CPU seconds (all its threads).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aibackup.recall_rule import DEFAULT_QUERIES
from benchmarks.common import (
    BUSY_LOOP,
    COLLECTION,
    ChromaServer,
    Stopwatch,
    backup_summary,
    child_main,
    disk_bytes,
    fastest,
    run_child,
    seeded_chroma,
    seeded_qdrant,
)

MODULE = "benchmarks.backup"
CHROMA_PAGES = (1000, 2500, 5000, 10000)
QDRANT_PAGES = (256, 1000, 4000)


INCLUDE = ["embeddings", "documents", "metadatas", "uris"]


def _chroma_loop(path: str, page: str, read: Callable[[Any, int, int], Any]) -> dict[str, Any]:
    """Open the store, count, then ``read(collection, limit, offset)`` every page; only this is timed."""
    import chromadb
    from chromadb.config import Settings

    clock = Stopwatch()
    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    col = client.get_collection(COLLECTION, embedding_function=None)
    total, rows = col.count(), 0
    for offset in range(0, total, int(page)):
        rows += len(read(col, int(page), offset)["ids"])
    return {**clock.read(), "rows": rows}


def child_chroma_bare(path: str, page: str) -> dict[str, Any]:
    return _chroma_loop(path, page, lambda col, limit, offset: col.get(include=INCLUDE, limit=limit, offset=offset))


def child_chroma_floor(path: str, page: str) -> dict[str, Any]:
    """The backup's own way of reading, and nothing else: the bare loop through ``raw_get`` (the Chroma connector's)
    (the client call under ``Collection.get``, without its float64 matrix) with Python's automatic
    collections off throughout, as a backup opens the store and streams its pages. Against it, the backup's
    extra time is everything it does besides reading: conversion, digests, encoding and writing, the proof
    pass."""
    import gc

    from aibackup.connectors.chroma.connector import raw_get

    gc.disable()
    return _chroma_loop(path, page, lambda col, limit, offset: raw_get(col, INCLUDE, limit=limit, offset=offset))


def child_qdrant_floor(path: str, page: str) -> dict[str, Any]:
    """The bare scroll loop with Python's automatic collections off throughout, as a backup opens the store
    and streams its pages (nothing else of a backup)."""
    import gc

    gc.disable()
    return child_qdrant_bare(path, page)


def child_chroma_ids(path: str) -> dict[str, Any]:
    """The ids-only pass a Chroma backup runs after its last page (the exactly-once proof), alone: open the
    store, then ``get(include=[])`` in the connector's id pages; only the pass is timed."""
    import chromadb
    from chromadb.config import Settings

    from aibackup.connectors.chroma.reading import ID_PAGE

    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    col = client.get_collection(COLLECTION, embedding_function=None)
    col.count()  # warm, as after a backup's full read (a cold first scan costs twice as much)
    clock = Stopwatch()
    rows = 0
    while ids := col.get(include=[], limit=ID_PAGE, offset=rows)["ids"]:
        rows += len(ids)
    return {**clock.read(), "rows": rows}


def child_chroma_bare_busy(path: str, page: str) -> dict[str, Any]:
    """The bare Chroma loop while a CPU-bound process keeps the other core busy (as a backup's encoding,
    hashing and digests do): what sharing the machine costs the read itself."""
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(0.3)  # running before the clock starts
        return child_chroma_bare(path, page)
    finally:
        neighbour.kill()
        neighbour.wait()


def child_qdrant_bare(path: str, page: str) -> dict[str, Any]:
    from qdrant_client import QdrantClient

    clock = Stopwatch()
    client = QdrantClient(path=path)
    rows, offset = 0, None
    while True:
        points, offset = client.scroll(COLLECTION, limit=int(page), offset=offset, with_payload=True, with_vectors=True)
        rows += len(points)
        if offset is None:
            break
    out = {**clock.read(), "rows": rows}
    client.close()
    return out


def child_backup(source: str, repo: str, queries: str = str(DEFAULT_QUERIES)) -> dict[str, Any]:
    """``run_backup`` with `queries` baseline queries (0: no search baseline). Also reports the seconds of
    the baseline's work after the stream (the source's searches and the exact pass over the written
    vectors), timed around ``BaselineRecorder.ask`` and ``settle``; its sampling in the stream is ~0.02 s."""
    import chromadb  # noqa: F401 - the client libraries are imported before the clock starts
    import qdrant_client  # noqa: F401

    from aibackup import baseline
    from aibackup.backup import SourceOptions, run_backup

    spent = [0.0]
    recorder = baseline.BaselineRecorder

    def timed(method: Any) -> Any:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        return run

    recorder.ask = timed(recorder.ask)  # type: ignore[method-assign]
    recorder.settle = timed(recorder.settle)  # type: ignore[method-assign]
    clock = Stopwatch()
    result = run_backup(repo, source, source_options=SourceOptions(queries=int(queries)))
    return {**clock.read(), **backup_summary(result), "baseline_seconds": spent[0]}


CHILDREN = {
    "chroma-bare": child_chroma_bare,
    "chroma-bare-busy": child_chroma_bare_busy,
    "chroma-ids": child_chroma_ids,
    "chroma-floor": child_chroma_floor,
    "qdrant-floor": child_qdrant_floor,
    "qdrant-bare": child_qdrant_bare,
    "backup": child_backup,
}


def _versus(
    bare: str, store: Path, uri: str, pages: tuple[int, ...], repeats: int, tmp: str, label: str
) -> dict[str, Any]:
    """Sweep the bare loop's page sizes, then alternate the best bare loop and the backup `repeats` times."""
    sweep = {p: run_child(MODULE, bare, str(store), str(p)) for p in pages}
    best = min(sweep, key=lambda p: sweep[p]["seconds"])
    bare_runs, backup_runs, plain_runs = [sweep[best]], [], []
    for i in range(repeats):
        backup_runs.append(run_child(MODULE, "backup", uri, f"{tmp}/{label}-{i}"))
        plain_runs.append(run_child(MODULE, "backup", uri, f"{tmp}/{label}-plain-{i}", "0"))
        if i:
            bare_runs.append(run_child(MODULE, bare, str(store), str(best)))
    base, ours, plain = fastest(bare_runs), fastest(backup_runs), fastest(plain_runs)
    if ours["rows"] != base["rows"]:
        raise RuntimeError(f"{label}: the backup holds {ours['rows']} rows, the bare loop read {base['rows']}")
    return {
        "rows": base["rows"],
        "bare_seconds_by_page": {str(p): round(r["seconds"], 3) for p, r in sweep.items()},
        "bare_best_page": best,
        "bare_seconds": round(base["seconds"], 3),
        "bare_runs": [round(r["seconds"], 3) for r in bare_runs],
        "bare_max_rss_mb": max(r["max_rss_mb"] for r in bare_runs),
        "bare_cpu_seconds": round(base["cpu_seconds"], 3),
        "backup_cpu_seconds": round(ours["cpu_seconds"], 3),
        "backup_seconds": round(ours["seconds"], 3),
        "backup_runs": [round(r["seconds"], 3) for r in backup_runs],
        "backup_max_rss_mb": max(r["max_rss_mb"] for r in backup_runs),
        "backup_vs_bare": round(ours["seconds"] / base["seconds"], 3),
        "baseline_queries": DEFAULT_QUERIES,
        "baseline_seconds": round(min(r["baseline_seconds"] for r in backup_runs), 3),
        "source_recall": ours["source_recall"],
        "no_baseline_seconds": round(plain["seconds"], 3),
        "no_baseline_vs_bare": round(plain["seconds"] / base["seconds"], 3),
        "bundle_bytes": ours["bundle_bytes"],
        "store_bytes": disk_bytes(store),
    }


def measure(rows: int, dim: int, qdrant_rows: int, memory_rows: int, repeats: int) -> dict[str, Any]:
    """Chroma (`rows`) and Qdrant local (`qdrant_rows`) backups vs bare reads; server-side RSS at `rows`
    and `memory_rows`. Returns a JSON-able dict."""
    chroma_store = seeded_chroma(rows, dim)
    qdrant_store = seeded_qdrant(qdrant_rows, dim)
    big_store = seeded_chroma(memory_rows, dim) if memory_rows else None
    with tempfile.TemporaryDirectory(prefix="aibackup-bench-backup-") as tmp:
        chroma = _versus("chroma-bare", chroma_store, f"chroma:{chroma_store}", CHROMA_PAGES, repeats, tmp, "chroma")
        page = str(chroma["bare_best_page"])
        busy = fastest([run_child(MODULE, "chroma-bare-busy", str(chroma_store), page) for _ in range(repeats)])
        chroma["bare_busy_seconds"] = round(busy["seconds"], 3)
        chroma["bare_busy_vs_bare"] = round(busy["seconds"] / chroma["bare_seconds"], 3)
        proof = fastest([run_child(MODULE, "chroma-ids", str(chroma_store)) for _ in range(repeats)])
        chroma["proof_pass_seconds"] = round(proof["seconds"], 3)
        floor = fastest([run_child(MODULE, "chroma-floor", str(chroma_store), page) for _ in range(repeats)])
        chroma["read_floor_seconds"] = round(floor["seconds"], 3)
        chroma["backup_vs_read_floor"] = round(chroma["backup_seconds"] / floor["seconds"], 3)
        qdrant = _versus("qdrant-bare", qdrant_store, f"qdrant:{qdrant_store}", QDRANT_PAGES, repeats, tmp, "qdrant")
        page = str(qdrant["bare_best_page"])
        floor = fastest([run_child(MODULE, "qdrant-floor", str(qdrant_store), page) for _ in range(repeats)])
        qdrant["read_floor_seconds"] = round(floor["seconds"], 3)
        qdrant["backup_vs_read_floor"] = round(qdrant["backup_seconds"] / floor["seconds"], 3)
        memory: dict[str, Any] = {}
        for label, store in (("rows", chroma_store), ("memory_rows", big_store)):
            if store is None:
                continue
            with ChromaServer(store) as server:
                run = run_child(MODULE, "backup", server.uri, f"{tmp}/server-{label}")
            memory[label] = {"rows": run["rows"], "max_rss_mb": run["max_rss_mb"], "seconds": round(run["seconds"], 3)}
    if "memory_rows" in memory:
        memory["rss_ratio"] = round(memory["memory_rows"]["max_rss_mb"] / memory["rows"]["max_rss_mb"], 3)
    return {"dim": dim, "repeats": repeats, "chroma": chroma, "qdrant": qdrant, "server_memory": memory}


if __name__ == "__main__":
    sys.exit(child_main(CHILDREN, sys.argv[1:]))
