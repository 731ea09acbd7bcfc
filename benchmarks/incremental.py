"""Incremental vector backups at 1M x 384 (issue 16), side by side in one run.

The store is Chroma embedded: the 1M x 384 collection is already seeded for the memory benchmark, and
Chroma reads it at ~25k records/s, where Qdrant local mode (pure Python, ~1k points/s to seed) would take
more than a quarter of an hour to seed and several minutes per read. A copy of the cached store is changed
by 1% (0.5% of the records updated, 0.25% deleted, 0.25% added), then:

- **bytes**: the incremental bundle's ``new_bytes`` (records, record index, tombstones) against the full
  bundle's bytes;
- **time**: the incremental backup against the bare read loop of the source (the ``get`` loop of the
  backup benchmark, at its best page size), alternating, fastest of each; each incremental run is removed
  again, so every run follows the same full backup. The scan (looking every record's digest up: records/s
  compared), the index load and the link (tombstones, after the stream) are timed apart;
- **memory**: peak RSS of the incremental backup against the full backup's (embedded Chroma holds its own
  data in both processes, so the difference is what the comparison costs);
- **restore read side**: a chain of a full backup and 30 links of 1% each against the equivalent full
  bundle of the same live records: re-hash every part, stream every record while recomputing the digest
  (the validation), stream them again (the import, into a target that discards). The chain is written by
  the same code a backup runs (BundleWriter with the incremental ``select``, Delta.link) from a generated
  source: thirty reads of the 1M Chroma store would take half an hour, and the read side does not depend
  on where the records came from.

10M records: the per-record bytes measured above (index on disk, index in memory), and a record index of
10M records (random digests, random 36-character UUIDs) written as a full backup writes it, then loaded
as an incremental backup loads it before its read: seconds, peak RSS over the process before, RSS held.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aibackup.incremental import MAX_DEAD
from benchmarks.common import (
    COLLECTION,
    Stopwatch,
    child_main,
    document,
    embeddings,
    fastest,
    metadata,
    record_id,
    restore_read_side,
    run_child,
    seeded_chroma,
)

MODULE = "benchmarks.incremental"
PAGES = (2500, 5000, 10000)
#: The night's change, as shares of the records: updated, deleted, added.
UPDATED, DELETED, ADDED = 0.005, 0.0025, 0.0025
LINKS = 30
#: The restore reads take seconds each, and the fastest of a few runs still held one-off delays of up to
#: 10% (two runs of 3 gave 1.23x and 1.32x): they alternate this many times at least.
READ_REPEATS = 7
INDEX_ROWS = 10_000_000  # the record index whose load is measured (random digests, random UUIDs)
READ_PHASES = ("seconds", "hash_seconds", "validate_seconds", "stream_seconds")


def _timed(owner: Any, name: str, spent: dict[str, float]) -> None:
    """Wrap ``owner.name`` so that the seconds spent in it add up in ``spent[name]``."""
    method = getattr(owner, name)

    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

    setattr(owner, name, run)


def child_backup(source: str, repo: str, full: str) -> dict[str, Any]:
    """``run_backup`` (``full`` "1": ``--full``); the bytes it wrote, and the seconds of the index load, the
    scan (the writer's ``select``) and the link after the stream."""
    import chromadb  # noqa: F401 - imported before the clock starts, as in the bare loop

    from aibackup import incremental
    from aibackup.backup import SourceOptions, run_backup

    spent: dict[str, float] = {}
    held = [0]
    load = incremental.ParentIndex.load.__func__  # type: ignore[attr-defined]

    def load_and_measure(cls: Any, *args: Any) -> Any:
        index = load(cls, *args)
        held[0] = index.hi.nbytes + index.lo.nbytes + index.ordinals.nbytes + index.seen.nbytes
        return index

    incremental.ParentIndex.load = classmethod(load_and_measure)  # type: ignore[method-assign, assignment]
    _timed(incremental.ParentIndex, "load", spent)
    _timed(incremental.Delta, "__call__", spent)
    _timed(incremental.Delta, "link", spent)
    clock = Stopwatch()
    result = run_backup(repo, source, source_options=SourceOptions(full=full == "1"))
    out = clock.read()
    dataset = result.manifest.datasets[0]
    outcome = result.outcome(dataset)
    own = f"data/{result.bundle_id}/"
    index = [p for link in dataset.chain for p in link.index if p.path.startswith(own)]
    return {
        **out,
        "bundle_id": result.bundle_id,
        "rows": dataset.rows,
        "new_rows": sum(p.rows for p in dataset.parts if p.path.startswith(own)),
        "new_bytes": outcome.new_bytes,
        "index_bytes": sum(p.bytes for p in index),
        "tombstone_bytes": sum(p.bytes for p in dataset.chain[-1].tombstones) if dataset.chained else 0,
        "deleted": outcome.deleted,
        "full_reason": outcome.full_reason,
        "index_memory_bytes": held[0],
        "load_seconds": spent.get("load", 0.0),
        "scan_seconds": spent.get("__call__", 0.0),
        "link_seconds": spent.get("link", 0.0),
    }


def child_change(path: str, rows: str, dim: str) -> dict[str, Any]:
    """The night's change of the copied store: every 200th record updated (a new vector and document),
    every 400th (offset by 3) deleted, 0.25% new records added."""
    import chromadb
    from chromadb.config import Settings

    n = int(rows)
    col = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False)).get_collection(
        COLLECTION, embedding_function=None
    )
    updated = list(range(0, n, int(1 / UPDATED)))
    deleted = list(range(3, n, int(1 / DELETED)))
    added = list(range(n, n + int(n * ADDED)))
    fresh = embeddings(len(updated) + len(added), int(dim), seed=99)
    clock = Stopwatch()
    step = 5000
    ids = [*updated, *added]
    for start in range(0, len(ids), step):
        chunk = ids[start : start + step]
        col.upsert(
            ids=[record_id(i) for i in chunk],
            embeddings=fresh[start : start + len(chunk)],
            documents=[document(i) + " (changed)" for i in chunk],
            metadatas=[metadata(i) for i in chunk],
        )
    for start in range(0, len(deleted), step):
        col.delete(ids=[record_id(i) for i in deleted[start : start + step]])
    return {**clock.read(), "updated": len(updated), "deleted": len(deleted), "added": len(added)}


class _Nights:
    """The generated source of the chain: slots with a version and a liveness; each night updates,
    deletes and adds shares of the live records (seeded), and :meth:`batches` yields the live records as
    canonical batches (a record's document carries its version, so an update changes its digest)."""

    def __init__(self, rows: int, dim: int, links: int) -> None:
        from aibackup.connectors.base import DatasetDescription
        from aibackup.manifests.model import DenseVectorSpec, VectorsConfig

        slots = rows + links * int(rows * ADDED)
        self.vectors = embeddings(slots, dim, seed=11)
        self.version = np.zeros(slots, dtype=np.int32)
        self.alive = np.zeros(slots, dtype=bool)
        self.alive[:rows] = True
        self.used = rows
        self.rows = rows
        config = VectorsConfig(dense=(DenseVectorSpec("", dim, "cosine"),))
        self.description = DatasetDescription(COLLECTION, config, rows)

    def night(self, n: int) -> None:
        rng = np.random.default_rng(n)
        live = np.flatnonzero(self.alive)
        touched = rng.choice(live, int(self.rows * (UPDATED + DELETED)), replace=False)
        updated, deleted = touched[: int(self.rows * UPDATED)], touched[int(self.rows * UPDATED) :]
        self.version[updated] = n
        self.alive[deleted] = False
        added = int(self.rows * ADDED)
        self.alive[self.used : self.used + added] = True
        self.used += added

    def batches(self) -> Iterator[Any]:
        import pyarrow as pa

        from aibackup.manifests.vectors import canonical_json

        schema = self.description.schema
        dim = self.vectors.shape[1]
        for start in range(0, self.used, 5000):
            idx = np.flatnonzero(self.alive[start : start + 5000]) + start
            if not len(idx):
                continue
            vectors = pa.FixedSizeListArray.from_arrays(pa.array(self.vectors[idx].reshape(-1)), dim)
            columns = {
                "id": pa.array([record_id(int(i)) for i in idx]),
                "vector": vectors,
                "document": pa.array([f"{document(int(i))} v{self.version[i]}" for i in idx]),
                "uri": pa.nulls(len(idx), pa.string()),
                "metadata": pa.array([canonical_json(metadata(int(i))) for i in idx]),
            }
            yield pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)


def child_chain(repo_path: str, rows: str, dim: str, links: str, also: str = "0") -> dict[str, Any]:
    """Write a full backup and `links` links of the generated source into a new repository, then the
    equivalent full bundle of the last night's live records; their ids and bytes, and the id of the
    bundle after link `also` (a shorter chain of as many live records)."""
    from aibackup import __version__
    from aibackup.bundle import BundleWriter
    from aibackup.bundle_reader import BundleReader
    from aibackup.incremental import Delta, ParentIndex
    from aibackup.manifests.model import BundleManifest
    from aibackup.repository import Repository, iso

    repo = Repository.init(repo_path)
    reader = BundleReader(repo)
    source = {"kind": "bench", "uri": "bench:generated"}
    nights = _Nights(int(rows), int(dim), int(links))
    start = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)
    parent = None
    previous = None
    shorter = ""
    for n in range(int(links) + 1):
        if n:
            nights.night(n)
        bundle_id = repo.next_bundle_id(start + dt.timedelta(days=n))
        writer = BundleWriter(repo, bundle_id)
        if previous is None or parent is None:
            dataset = writer.write_dataset(0, nights.description, nights.batches(), with_index=True)
        else:
            delta = Delta(previous, ParentIndex.load(reader, previous), None)
            dataset = writer.write_dataset(0, nights.description, nights.batches(), select=delta, with_index=True)
            dataset = delta.link(reader, writer, writer.dataset_folder(0, COLLECTION), dataset, parent)
        created = iso(start + dt.timedelta(days=n))
        repo.commit(BundleManifest(bundle_id, created, __version__, source, (dataset,), parent=parent))
        parent, previous = bundle_id, dataset
        if n == int(also):
            shorter = bundle_id
        print(f"  chain: link {n}: {dataset.rows} live rows", file=sys.stderr, flush=True)
    assert previous is not None
    equivalent = repo.next_bundle_id(start + dt.timedelta(days=int(links) + 1))
    full = BundleWriter(repo, equivalent).write_dataset(0, nights.description, nights.batches(), with_index=True)
    repo.commit(BundleManifest(equivalent, iso(start), __version__, {**source, "uri": "bench:full"}, (full,)))
    if (full.rows, full.digest) != (previous.rows, previous.digest):
        raise RuntimeError("the equivalent full bundle does not hold the chain's live records")
    return {
        "chain": parent,
        "shorter": shorter if int(also) else None,
        "full": equivalent,
        "rows": full.rows,
        "chain_stored_rows": sum(p.rows for p in previous.parts),
        "chain_bytes": sum(p.bytes for p in previous.all_parts()),
        "full_bytes": sum(p.bytes for p in full.all_parts()),
    }


def child_read(repo_path: str, bundle_id: str) -> dict[str, Any]:
    """The read side of a restore, into a target that discards (:func:`benchmarks.common.restore_read_side`)."""
    return restore_read_side(repo_path, bundle_id)


def child_index_write(repo_path: str, rows: str) -> dict[str, Any]:
    """A record index of `rows` records (random digests, random 36-character UUIDs), as a full backup of
    one link writes it, in a new repository; the dataset's manifest is kept beside it for the load."""
    import pickle

    import pyarrow as pa

    from aibackup.bundle import BundleWriter
    from aibackup.manifests.chain import INDEX_SCHEMA, ChainLink
    from aibackup.manifests.digest import MOD, digest_sum
    from aibackup.manifests.model import DatasetManifest
    from aibackup.repository import Repository

    repo, n = Repository.init(repo_path), int(rows)
    bundle_id = "20261101T020000.000000Z-00000000"
    writer = BundleWriter(repo, bundle_id)
    rng = np.random.default_rng(10)
    parts, total, step = [], 0, 1_000_000
    for start in range(0, n, step):
        count = min(step, n - start)
        words = rng.integers(0, 2**63, size=(count, 2), dtype=np.uint64)
        raw = rng.bytes(16 * count).hex()  # random (version 4 style) UUIDs: what compresses least
        hexes = (raw[k : k + 32] for k in range(0, len(raw), 32))
        ids = pa.array([f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes])
        digests = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), count, [None, pa.py_buffer(words.tobytes())])
        path = f"{writer.dataset_folder(0, COLLECTION)}/index-{start // step:05d}.parquet"
        parts.append(writer.write_table(path, pa.Table.from_arrays([ids, digests], schema=INDEX_SCHEMA)))
        total += digest_sum(words)
    link = ChainLink(bundle_id, parts=0, rows=n, index=tuple(parts), tombstones=(), added=0, changed=0, deleted=0)
    dataset = DatasetManifest(COLLECTION, "vectors", n, (), {}, f"{total % MOD:032x}", (), chain=(link,))
    with open(Path(repo_path) / "dataset.pickle", "wb") as f:
        pickle.dump(dataset, f)
    return {"index_bytes": sum(p.bytes for p in parts)}


def child_index_load(repo_path: str) -> dict[str, Any]:
    """Load the index :func:`child_index_write` wrote as an incremental backup does before its read: the
    seconds, and the process's RSS before, at its peak and after (MB)."""
    import pickle
    import resource

    from aibackup.bundle_reader import BundleReader
    from aibackup.incremental import ParentIndex
    from aibackup.repository import Repository

    def rss() -> float:
        with open("/proc/self/status") as f:
            return int(f.read().split("VmRSS:")[1].split()[0]) / 1024

    with open(Path(repo_path) / "dataset.pickle", "rb") as f:
        dataset = pickle.load(f)
    reader = BundleReader(Repository.open(repo_path))
    before = max(rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    started = time.perf_counter()
    index = ParentIndex.load(reader, dataset)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": len(index), "seconds": seconds, "peak_over_mb": peak - before, "held_mb": rss() - before}


CHILDREN = {
    "backup": child_backup,
    "change": child_change,
    "chain": child_chain,
    "read": child_read,
    "index-write": child_index_write,
    "index-load": child_index_load,
}


def _forget(repo: Path, bundle_id: str) -> None:
    """Remove a committed bundle (its manifest, then its folder): the next run follows the same parent."""
    (repo / "bundles" / f"{bundle_id}.json").unlink()
    shutil.rmtree(repo / "data" / bundle_id, ignore_errors=True)


def measure(rows: int, dim: int, repeats: int, links: int = LINKS) -> dict[str, Any]:
    """Every figure of the module docstring; a JSON-able dict."""
    cached = seeded_chroma(rows, dim)
    with tempfile.TemporaryDirectory(prefix="aibackup-bench-incremental-") as tmp:
        store, repo = Path(tmp) / "store", Path(tmp) / "repo"
        shutil.copytree(cached, store)
        source = f"chroma:{store}"
        full = run_child(MODULE, "backup", source, str(repo), "1")
        change = run_child(MODULE, "change", str(store), str(rows), str(dim))
        sweep = {p: run_child("benchmarks.backup", "chroma-bare", str(store), str(p)) for p in PAGES}
        best = min(sweep, key=lambda p: sweep[p]["seconds"])
        bare_runs, runs = [sweep[best]], []
        for i in range(repeats):
            run = run_child(MODULE, "backup", source, str(repo), "0")
            if run["full_reason"] is not None:
                raise RuntimeError(f"the backup after the change was full: {run['full_reason']}")
            runs.append(run)
            _forget(repo, run["bundle_id"])
            if i:
                bare_runs.append(run_child("benchmarks.backup", "chroma-bare", str(store), str(best)))
        bare, inc = fastest(bare_runs), fastest(runs)
        if inc["rows"] != bare["rows"]:
            raise RuntimeError(f"the backup holds {inc['rows']} records, the bare loop read {bare['rows']}")
        # The longest chain backups build at this churn (incremental.MAX_DEAD), read beside the forced one.
        longest = math.ceil(MAX_DEAD / (UPDATED + DELETED))
        chain = run_child(MODULE, "chain", str(Path(tmp) / "chain"), str(rows), str(dim), str(links), str(longest))
        shorter_reads = []
        chain_reads, full_reads = [], []
        for _ in range(max(repeats, READ_REPEATS)):
            chain_reads.append(run_child(MODULE, "read", str(Path(tmp) / "chain"), chain["chain"]))
            full_reads.append(run_child(MODULE, "read", str(Path(tmp) / "chain"), chain["full"]))
            if longest < links:
                shorter_reads.append(run_child(MODULE, "read", str(Path(tmp) / "chain"), chain["shorter"]))
        # 10M records, measured: the index a full backup of them writes, and its load before the read.
        written = run_child(MODULE, "index-write", str(Path(tmp) / "index10m"), str(INDEX_ROWS))
        loaded = run_child(MODULE, "index-load", str(Path(tmp) / "index10m"))
    chain_read, full_read = fastest(chain_reads), fastest(full_reads)
    scan = fastest(runs, "scan_seconds")
    index_per_record = full["index_bytes"] / full["rows"]
    memory_per_record = inc["index_memory_bytes"] / full["rows"]  # the parent's digests held during the read
    return {
        "store": "chroma embedded",
        "rows": full["rows"],
        "dim": dim,
        "change": change,
        "full": {k: full[k] for k in ("seconds", "cpu_seconds", "new_bytes", "index_bytes", "max_rss_mb")},
        "incremental": {
            "seconds": round(inc["seconds"], 3),
            "runs": [round(r["seconds"], 3) for r in runs],
            "cpu_seconds": round(inc["cpu_seconds"], 3),
            "new_rows": inc["new_rows"],
            "deleted": inc["deleted"],
            "new_bytes": inc["new_bytes"],
            "index_bytes": inc["index_bytes"],
            "tombstone_bytes": inc["tombstone_bytes"],
            "max_rss_mb": max(r["max_rss_mb"] for r in runs),
            "load_seconds": round(inc["load_seconds"], 3),
            "scan_seconds": round(scan["scan_seconds"], 3),
            "scan_records_per_second": round(inc["rows"] / scan["scan_seconds"]) if scan["scan_seconds"] else None,
            "link_seconds": round(inc["link_seconds"], 3),
        },
        "bare": {
            "seconds_by_page": {str(p): round(r["seconds"], 3) for p, r in sweep.items()},
            "best_page": best,
            "seconds": round(bare["seconds"], 3),
            "runs": [round(r["seconds"], 3) for r in bare_runs],
        },
        "new_bytes_vs_full": round(inc["new_bytes"] / full["new_bytes"], 4),
        "incremental_vs_bare": round(inc["seconds"] / bare["seconds"], 3),
        "rss_over_full_mb": round(max(r["max_rss_mb"] for r in runs) - full["max_rss_mb"], 1),
        "chain": {
            **chain,
            "links": links,
            "chain_read": {
                k: round(chain_read[k], 3) for k in ("seconds", "hash_seconds", "validate_seconds", "stream_seconds")
            },
            "full_read": {
                k: round(full_read[k], 3) for k in ("seconds", "hash_seconds", "validate_seconds", "stream_seconds")
            },
            "chain_runs": [round(r["seconds"], 3) for r in chain_reads],
            "longest": longest,
            "shorter_read": (
                {
                    k: round(fastest(shorter_reads)[k], 3)
                    for k in ("seconds", "hash_seconds", "validate_seconds", "stream_seconds")
                }
                if shorter_reads
                else None
            ),
            "shorter_runs": [round(r["seconds"], 3) for r in shorter_reads],
            "full_runs": [round(r["seconds"], 3) for r in full_reads],
        },
        "chain_read_vs_full": round(chain_read["seconds"] / full_read["seconds"], 3),
        "shorter_read_vs_full": (
            round(fastest(shorter_reads)["seconds"] / full_read["seconds"], 3) if shorter_reads else None
        ),
        "per_record": {
            "index_bytes": round(index_per_record, 1),
            "memory_bytes": round(memory_per_record, 1),
            "rss_bytes": round((max(r["max_rss_mb"] for r in runs) - full["max_rss_mb"]) * 2**20 / full["rows"], 1),
        },
        "at_10m": {
            "index_mb": round(index_per_record * 10_000_000 / 2**20),
            "memory_mb": round(memory_per_record * 10_000_000 / 2**20),
            "measured": {
                "rows": loaded["rows"],
                "index_mb": round(written["index_bytes"] / 2**20, 1),
                "load_seconds": round(loaded["seconds"], 2),
                "load_peak_over_mb": round(loaded["peak_over_mb"]),
                "held_mb": round(loaded["held_mb"]),
            },
        },
    }


if __name__ == "__main__":
    sys.exit(child_main(CHILDREN, sys.argv[1:]))
