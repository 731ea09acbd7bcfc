"""The exact nearest-neighbour pass over a bundle's dataset, spread over a Dask cluster: a partitioned
backup's search baseline and a partitioned restore's search check.

Each task opens the repository itself (its URL and key file; never a key or a credential as an argument),
reads one group of the dataset's parts (the same contiguous groups a partitioned restore loads: about
equal bytes, a few per worker) as :meth:`BundleReader.batches` reads them (size, page checksums, schema
and rows checked as each part is opened), maps each batch (a restore's lossy mapping; identity for a
backup) and adds it to its copies of the searches (:class:`aibackup.nearest.ExactTopK`, nothing added
yet). The driver merges the copies as they arrive (:meth:`ExactTopK.merge`): the top-k and the watched
ids' distances of one pass over every record, whatever the number of tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aibackup.bundle_reader import BundleReader
from aibackup.chains import Removed
from aibackup.connectors.base import Transform, balanced_runs, identity
from aibackup.distributed import PER_WORKER, Cluster, completed
from aibackup.manifests.model import DatasetManifest, PartEntry
from aibackup.manifests.vectors import ID
from aibackup.nearest import ExactTopK
from aibackup.pipeline import prefetch, steady_memory, use_arrow_allocator
from aibackup.repository import Repository

#: Rows per batch: each search keeps a float64 copy of a batch's vectors (see aibackup.baseline).
BATCH_ROWS = 2048


def groups(parts: Sequence[PartEntry], count: int) -> list[tuple[PartEntry, ...]]:
    """`parts` in at most `count` contiguous groups of about equal bytes (none empty)."""
    return [tuple(parts[i] for i in run) for run in balanced_runs([p.bytes for p in parts], count)]


@dataclass(frozen=True)
class ExactTask:
    """One group of parts for the exact pass (no key, no credential)."""

    repository: str
    key_file: str | None
    dataset: DatasetManifest
    parts: tuple[PartEntry, ...]
    searches: tuple[ExactTopK, ...]
    #: the vector column each search takes
    columns: tuple[str, ...]
    transform: Transform
    #: the columns read from the parts (None: every column, for a mapping that needs them)
    read: tuple[str, ...] | None
    #: an incremental chain's: the records of these parts its later links' tombstones remove
    removed: Removed | None


def exact_pass(task: ExactTask) -> list[ExactTopK]:
    """The worker's side: every record of its parts, mapped, added to each of its copies of the searches."""
    use_arrow_allocator()
    repo = Repository.open(task.repository)
    repo.use_key(repo.key(task.key_file))
    searches = list(task.searches)
    with steady_memory(), BundleReader(repo, spool=True) as reader:
        reader.fetch_ahead(task.parts)
        for part in task.parts:
            records = reader.part_records(
                task.dataset, part, batch_rows=BATCH_ROWS, columns=task.read, removed=task.removed
            )
            for batch in prefetch(records, depth=1):
                mapped = task.transform(batch)
                for search, column in zip(searches, task.columns, strict=True):
                    search.add(mapped.column(ID), mapped.column(column))
    return searches


def exact_on(
    on: Cluster,
    repository: str,
    key_file: str | None,
    dataset: DatasetManifest,
    searches: Sequence[ExactTopK],
    columns: Sequence[str],
    transform: Transform = identity,
    removed: Removed | None = None,
) -> int:
    """Fill `searches` (nothing added yet; one per vector column of `columns`) with every live record of
    `dataset` (a chain's: less those `removed`), after `transform`, on `on`'s workers; returns the number of
    tasks. With the identity mapping the tasks read only the ids and those columns."""
    read = (ID, *dict.fromkeys(columns)) if transform is identity else None
    tasks = [
        ExactTask(
            repository,
            key_file,
            dataset,
            group,
            tuple(searches),
            tuple(columns),
            transform,
            read,
            removed.share(dataset, group) if removed is not None else None,
        )
        for group in groups(dataset.parts, on.workers * PER_WORKER)
    ]
    with completed(on.client, exact_pass, tasks) as results:
        for found in results:
            for search, part in zip(searches, found, strict=True):
                search.merge(part)
    return len(tasks)
