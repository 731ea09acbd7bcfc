"""Restore load vs the bare bulk load of the same records, into embedded Chroma and Qdrant local mode.

Measures, each step in a fresh child process (so timings and peak RSS are that step's own):

- bare bulk load into embedded Chroma: a fresh ``PersistentClient``, ``create_collection`` (no embedding
  function, the source's cosine space), then ``collection.add`` of numpy float32 embeddings, documents and
  metadatas in batches of B, at a few B (1000, 5000, ``get_max_batch_size()``); the best B is the baseline;
- bare bulk load into Qdrant local mode: ``create_collection`` (Cosine), then ``upsert`` of ``models.Batch``
  at a few batch sizes, ``upsert`` of ``PointStruct`` lists, ``upload_points`` and ``upload_collection``
  (numpy vectors); the best is the baseline. The points carry exactly what a restore writes: the same
  point ids (uuid5 of Chroma's string ids) and payloads (metadata plus ``_aibackup_id``/``_aibackup_document``);
- ``aibackup restore`` (``run_restore``) of a bundle of the same collection (``run_backup`` of the seeded
  Chroma store) into a fresh target of each kind, with the validate pass, the load pass and the checks
  reported apart. The ratio compared to the target (≤ 1.15×) is load / bare bulk load.

Both clocks start after the client is open and stop when the last write returned; the load pass includes
creating the collection and reading/decoding the bundle (overlapped with the writes), as the bare loop
includes creating the collection and turning numpy rows into what the client takes.

Qdrant local mode persists every point with its own SQLite commit (qdrant-client's ``CollectionPersistence``),
which bounds both loops at ~1000 points/s; the same bare loop into ``QdrantClient(":memory:")`` (no
persistence) is reported beside it to show that share. Sizes stay small on a shared 2-core machine: Chroma
writes ~2000 records/s at dim 384 and Qdrant local mode ~1000 points/s.

Run by ``python -m benchmarks`` (``--restore-rows``, ``--qdrant-restore-rows``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    COLLECTION,
    bundled,
    child_main,
    document,
    embeddings,
    fastest,
    metadata,
    record_id,
    run_child,
)

MODULE = "benchmarks.restore"
CHROMA_BATCHES = ("1000", "5000", "max")
#: (method, batch size) of the bare Qdrant loops tried: upsert(models.Batch), upsert(PointStruct list),
#: upload_points, upload_collection.
QDRANT_VARIANTS = (
    ("batch", 256),
    ("batch", 1024),
    ("batch", 4096),
    ("points", 256),
    ("upload_points", 256),
    ("upload_collection", 256),
)


def records(rows: int, dim: int) -> tuple[list[str], Any, list[str], list[dict[str, Any]]]:
    """The records of :func:`benchmarks.common.seeded_chroma`, as the bare loops write them."""
    return (
        [record_id(i) for i in range(rows)],
        embeddings(rows, dim),
        [document(i) for i in range(rows)],
        [metadata(i) for i in range(rows)],
    )


# --- child processes: each prints {"seconds", "max_rss_mb", ...} as JSON on stdout ------------------------


def child_chroma_bare(rows: int, dim: int, batch: str, target: str) -> dict[str, Any]:
    import chromadb
    from chromadb.config import Settings

    ids, vectors, documents, metadatas = records(rows, dim)
    client = chromadb.PersistentClient(path=target, settings=Settings(anonymized_telemetry=False))
    step = client.get_max_batch_size() if batch == "max" else int(batch)
    started = time.perf_counter()
    col = client.create_collection(COLLECTION, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    for start in range(0, rows, step):
        end = start + step
        col.add(
            ids=ids[start:end],
            embeddings=vectors[start:end],
            documents=documents[start:end],
            metadatas=metadatas[start:end],
        )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": col.count(), "batch": step}


def _qdrant_points(rows: int, dim: int) -> tuple[list[int | str], Any, list[dict[str, Any]]]:
    """The point ids and payloads a restore of the seeded collection writes (see the Qdrant connector)."""
    from aibackup.connectors.qdrant.points import DOCUMENT_KEY, ID_KEY, to_point_id

    ids, vectors, documents, metadatas = records(rows, dim)
    point_ids = [to_point_id(i)[0] for i in ids]
    payloads = [{**m, ID_KEY: i, DOCUMENT_KEY: d} for i, d, m in zip(ids, documents, metadatas, strict=True)]
    return point_ids, vectors, payloads


def child_qdrant_bare(rows: int, dim: int, method: str, batch: int, target: str) -> dict[str, Any]:
    from qdrant_client import QdrantClient, models

    point_ids, vectors, payloads = _qdrant_points(rows, dim)
    client = QdrantClient(location=":memory:") if target == ":memory:" else QdrantClient(path=target)
    started = time.perf_counter()
    client.create_collection(COLLECTION, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
    if method == "upload_collection":
        client.upload_collection(COLLECTION, vectors=vectors, payload=payloads, ids=point_ids, batch_size=batch)
    elif method == "upload_points":
        points = (
            models.PointStruct(id=point_ids[i], vector=vectors[i].tolist(), payload=payloads[i]) for i in range(rows)
        )
        client.upload_points(COLLECTION, points=points, batch_size=batch)
    else:
        for start in range(0, rows, batch):
            end = start + batch
            chunk = vectors[start:end].tolist()
            if method == "batch":
                request: Any = models.Batch(ids=point_ids[start:end], vectors=chunk, payloads=payloads[start:end])
            else:
                request = [
                    models.PointStruct(id=pid, vector=vec, payload=payload)
                    for pid, vec, payload in zip(point_ids[start:end], chunk, payloads[start:end], strict=True)
                ]
            client.upsert(COLLECTION, points=request, wait=True)
    seconds = time.perf_counter() - started
    count = client.count(COLLECTION, exact=True).count
    client.close()
    return {"seconds": seconds, "rows": count, "points_per_second": round(rows / seconds, 1)}


def child_restore(repo: str, target: str, profile: str = "") -> dict[str, Any]:
    import chromadb  # noqa: F401 - the client libraries are imported before the clock starts
    import qdrant_client  # noqa: F401

    import aibackup.connectors.chroma.connector
    import aibackup.connectors.qdrant.connector
    import aibackup.restore

    started = time.perf_counter()
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    result = aibackup.restore.run_restore(repo, None, target)
    seconds = time.perf_counter() - started
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    dataset = result.datasets[0]
    failed = [c.name for c in dataset.checks if not c.ok]
    if failed:
        raise RuntimeError(f"restore checks failed: {failed}")
    return {
        "seconds": seconds,
        "rows": dataset.rows,
        "validate_seconds": result.validate_seconds,
        "load_seconds": dataset.load_seconds,
        "check_seconds": dataset.check_seconds,
    }


CHILDREN = {
    "chroma-bare": lambda rows, dim, batch, target: child_chroma_bare(int(rows), int(dim), batch, target),
    "qdrant-bare": lambda rows, dim, method, batch, target: child_qdrant_bare(
        int(rows), int(dim), method, int(batch), target
    ),
    "restore": child_restore,
}


# --- the measurement ------------------------------------------------------------------------------------


def _fresh(tmp: str, label: str) -> str:
    path = Path(tmp) / label
    shutil.rmtree(path, ignore_errors=True)
    return str(path)


def _backend(
    tmp: str,
    kind: str,
    rows: int,
    dim: int,
    repeats: int,
    variants: list[tuple[str, ...]],
) -> dict[str, Any]:
    """Sweep the bare loop's variants once, then alternate best bare loop and restore `repeats` times."""
    repo = bundled(rows, dim)

    def bare(variant: tuple[str, ...]) -> dict[str, Any]:
        target = _fresh(tmp, f"{kind}-bare")
        if kind == "chroma":
            return run_child(MODULE, "chroma-bare", str(rows), str(dim), variant[0], target)
        return run_child(MODULE, "qdrant-bare", str(rows), str(dim), variant[0], variant[1], target)

    def restore() -> dict[str, Any]:
        return run_child(MODULE, "restore", str(repo), f"{kind}:{_fresh(tmp, f'{kind}-restore')}")

    sweep = {"/".join(v): bare(v) for v in variants}
    best = min(sweep, key=lambda v: sweep[v]["seconds"])
    bare_runs, restore_runs = [sweep[best]], []
    # The machine is shared and noisy: the two alternate and the fastest run of each is compared (noise
    # only ever adds time).
    for i in range(repeats):
        restore_runs.append(restore())
        if i:
            bare_runs.append(bare(tuple(best.split("/"))))
    fastest_bare = fastest(bare_runs)["seconds"]
    best_restore = fastest(restore_runs, "load_seconds")
    out: dict[str, Any] = {
        "rows": rows,
        "bare_seconds_by_variant": {v: round(r["seconds"], 3) for v, r in sweep.items()},
        "bare_best_variant": best,
        "bare_seconds": round(fastest_bare, 3),
        "bare_runs": [round(r["seconds"], 3) for r in bare_runs],
        "bare_records_per_second": round(rows / fastest_bare, 1),
        "bare_max_rss_mb": max(r["max_rss_mb"] for r in bare_runs),
        "load_seconds": round(best_restore["load_seconds"], 3),
        "load_runs": [round(r["load_seconds"], 3) for r in restore_runs],
        "load_records_per_second": round(rows / best_restore["load_seconds"], 1),
        "validate_seconds": round(min(r["validate_seconds"] for r in restore_runs), 3),
        "check_seconds": round(min(r["check_seconds"] for r in restore_runs), 3),
        "restore_seconds": round(min(r["seconds"] for r in restore_runs), 3),
        "restore_max_rss_mb": max(r["max_rss_mb"] for r in restore_runs),
        "load_vs_bare": round(best_restore["load_seconds"] / fastest_bare, 3),
    }
    return out


def measure(rows: int, dim: int, repeats: int, qdrant_rows: int) -> dict[str, Any]:
    """Bare bulk loads vs ``aibackup restore`` into embedded Chroma (`rows` records) and Qdrant local mode
    (``min(rows, qdrant_rows)`` points, local mode persisting ~1000 points/s), `dim`-dimensional, fastest of
    `repeats` alternating runs. Returns a JSON-able dict."""
    qrows = min(rows, qdrant_rows)
    with tempfile.TemporaryDirectory(prefix="aibackup-bench-restore-") as tmp:
        chroma = _backend(tmp, "chroma", rows, dim, repeats, [(b,) for b in CHROMA_BATCHES])
        qdrant = _backend(tmp, "qdrant", qrows, dim, repeats, [(m, str(b)) for m, b in QDRANT_VARIANTS])
        method, batch = qdrant["bare_best_variant"].split("/")
        memory = [
            run_child(MODULE, "qdrant-bare", str(qrows), str(dim), method, batch, ":memory:") for _ in range(repeats)
        ]
    fastest_memory = fastest(memory)["seconds"]
    qdrant["memory_bare_seconds"] = round(fastest_memory, 3)
    qdrant["memory_bare_points_per_second"] = round(qrows / fastest_memory, 1)
    qdrant["persist_share_of_bare"] = round(1 - fastest_memory / qdrant["bare_seconds"], 3)
    return {"dim": dim, "repeats": repeats, "chroma": chroma, "qdrant": qdrant}


if __name__ == "__main__":
    sys.exit(child_main(CHILDREN, sys.argv[1:]))
