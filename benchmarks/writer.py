"""Our Parquet writing vs raw pyarrow ``write_table`` of the same Arrow table, in one run.

The table is the whole dataset of a bundle of the seeded Chroma collection, read into memory before either
clock starts. Raw pyarrow writes it with our Parquet options (zstd level, BYTE_STREAM_SPLIT on the float
vectors, page checksums) in one ``write_table`` call; ``BundleWriter.write_dataset`` takes it as the batches
a connector yields (2500 rows) and does all a backup does: record digests, row groups, sha256 of every byte
while writing, fsync and the exclusive commit of the part. Raw pyarrow followed by ``fsync`` is reported
beside it (durability is not optional for a backup, so that is the like-for-like cost of the file itself),
and the record digests alone over the same batches. With the CPU seconds of each, the report states the
two-core floor: no overlap can finish our writer's CPU seconds in less than half of them. Every child first
chooses Arrow's memory pool as ``aibackup backup`` does (:func:`aibackup.pipeline.use_arrow_allocator`), so
both sides run with the allocator the product runs with.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from benchmarks.common import Stopwatch, bundled, child_main, fastest, run_child

MODULE = "benchmarks.writer"
BATCH_ROWS = 2500


def _table(repo: str) -> tuple[Any, Any]:
    """The bundle's whole dataset in memory, and its description (after choosing the Arrow allocator)."""
    import pyarrow as pa

    from aibackup.bundle_reader import BundleReader
    from aibackup.connectors.base import DatasetDescription
    from aibackup.pipeline import use_arrow_allocator
    from aibackup.repository import Repository

    use_arrow_allocator()

    repository = Repository.open(repo)
    dataset = repository.scan()[0][-1].datasets[0]
    table = pa.Table.from_batches(list(BundleReader(repository).batches(dataset)))
    return table, DatasetDescription(dataset.name, dataset.vectors_config(), dataset.rows)


def child_raw(repo: str, out: str, sync: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from aibackup.parquet_parts import WriteOptions, parquet_options

    table, _ = _table(repo)
    clock = Stopwatch()
    pq.write_table(table, out, **parquet_options(table.schema, WriteOptions()))
    if sync == "fsync":
        fd = os.open(out, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return {**clock.read(), "bytes": os.path.getsize(out), "rows": table.num_rows}


def child_ours(repo: str, out: str) -> dict[str, Any]:
    from aibackup.bundle import BundleWriter
    from aibackup.repository import Repository

    table, description = _table(repo)
    batches = table.to_batches(max_chunksize=BATCH_ROWS)
    target = Repository.init(out)
    clock = Stopwatch()
    dataset = BundleWriter(target, "20261125T000000.000000Z-00000000").write_dataset(0, description, iter(batches))
    out = clock.read()
    return {**out, "bytes": sum(p.bytes for p in dataset.parts), "rows": dataset.rows, "parts": len(dataset.parts)}


def child_digests(repo: str) -> dict[str, Any]:
    """The record digests alone over the same batches (one thread): the share of our writer's CPU that is
    the dataset digest rather than Parquet writing."""
    from aibackup.manifests.digest import DatasetDigest

    table, _ = _table(repo)
    batches = table.to_batches(max_chunksize=BATCH_ROWS)
    clock = Stopwatch()
    digest = DatasetDigest()
    for batch in batches:
        digest.add_batch(batch)
    return {**clock.read(), "rows": digest.rows}


CHILDREN = {"raw": child_raw, "ours": child_ours, "digests": child_digests}


def measure(rows: int, dim: int, repeats: int) -> dict[str, Any]:
    """Raw ``write_table`` (with and without fsync) and our writer alternate `repeats` times; fastest each."""
    repo = str(bundled(rows, dim))
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "raw_fsync": [], "ours": [], "digests": []}
    with tempfile.TemporaryDirectory(prefix="aibackup-bench-writer-") as tmp:
        for i in range(repeats):
            runs["raw"].append(run_child(MODULE, "raw", repo, f"{tmp}/raw-{i}.parquet", "no-fsync"))
            runs["ours"].append(run_child(MODULE, "ours", repo, f"{tmp}/ours-{i}"))
            runs["raw_fsync"].append(run_child(MODULE, "raw", repo, f"{tmp}/rawsync-{i}.parquet", "fsync"))
            runs["digests"].append(run_child(MODULE, "digests", repo))
    best = {k: fastest(v) for k, v in runs.items()}
    raw_seconds = best["raw"]["seconds"]
    return {
        "rows": best["ours"]["rows"],
        "dim": dim,
        "repeats": repeats,
        "arrow_batch_rows": BATCH_ROWS,
        **{f"{k}_seconds": round(v["seconds"], 3) for k, v in best.items()},
        **{f"{k}_cpu_seconds": round(v["cpu_seconds"], 3) for k, v in best.items()},
        **{f"{k}_runs": [round(r["seconds"], 3) for r in v] for k, v in runs.items()},
        "raw_bytes": best["raw"]["bytes"],
        "ours_bytes": best["ours"]["bytes"],
        "ours_vs_raw": round(best["ours"]["seconds"] / best["raw"]["seconds"], 3),
        "ours_vs_raw_fsync": round(best["ours"]["seconds"] / best["raw_fsync"]["seconds"], 3),
        "ours_parts": best["ours"]["parts"],
        # Two cores cannot finish `ours_cpu_seconds` of work faster than in half that time.
        "two_core_floor_vs_raw": round(max(raw_seconds, best["ours"]["cpu_seconds"] / 2) / raw_seconds, 3),
    }


if __name__ == "__main__":
    sys.exit(child_main(CHILDREN, sys.argv[1:]))
