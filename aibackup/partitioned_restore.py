"""Partitioned restores on Dask: the parts of a collection validated and loaded by workers at once, the
collection published once by the driver, then proven as any restore is.

``restore --workers N`` / ``--dask ADDRESS`` (the clusters of :func:`aibackup.distributed.cluster`). For
every selected collection that can be split (a vector collection that is not an incremental chain, into a
target whose connector has ``partitioned_load``: pgvector), the driver makes the target's load area
(``Connector.begin_load``) and hands out the collection's parts in contiguous groups, a few per worker.
Each task opens the repository and the target itself, from their URLs and its own environment (keys and
credentials are never task arguments), and for each of its parts: re-hashes it (a damaged part fails the
task, naming it), streams its records through the dataset digest and the plan's lossy tally into
``Connector.load_partition`` (the target's per-record checks run there, as in ``import_``). A retried task
replaces what its earlier attempt loaded. The driver adds the tasks' digests and rows up and compares
them with the manifest's before anything reaches the target: a mismatch, a failed task or Ctrl-C removes
the load areas (``Connector.abandon_load``) and the target stays as it was. Then each collection is
published (``Connector.finish_load``: pgvector's one transaction, indexes built once) and proven by the
same checks as a one-process restore, run once over the whole target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from aibackup.bundle_reader import BundleReader
from aibackup.connectors.base import Connector, ImportPlan, Location, balanced_runs
from aibackup.connectors.registry import open_connector
from aibackup.distributed import PER_WORKER, RETRIES, Cluster
from aibackup.errors import IntegrityError
from aibackup.lossy import LossTally
from aibackup.manifests.digest import MOD, DatasetDigest
from aibackup.manifests.model import DatasetManifest, PartEntry
from aibackup.pipeline import prefetch, steady_memory, use_arrow_allocator
from aibackup.repository import Repository


def why_not(dataset: DatasetManifest, target: type[Connector], location: Location, mode: str) -> str | None:
    """Why `dataset` is restored in one process even with a cluster (None: it is partitioned)."""
    modes = target.load_modes(location)
    if not modes:
        return f"{location.display()} takes no partitioned restore"
    if mode not in modes:
        return f"a {target.kind} target takes a partitioned restore in mode {' or '.join(modes)}"
    if dataset.kind != "vectors":
        return f"a {dataset.kind} dataset restores in one process"
    if dataset.chained:
        return "an incremental chain: a later link's tombstones remove records of earlier parts"
    if len(dataset.parts) < 2:
        return "one part"
    return None


def groups(parts: Sequence[PartEntry], count: int) -> list[tuple[PartEntry, ...]]:
    """`parts` in at most `count` contiguous groups of about equal bytes (none empty)."""
    return [tuple(parts[i] for i in run) for run in balanced_runs([p.bytes for p in parts], count)]


@dataclass(frozen=True)
class LoadTask:
    """One group of parts of one collection, as a worker needs it (no key, no credential)."""

    repository: str
    key_file: str | None
    target: str
    load_check: bool
    dataset: DatasetManifest
    parts: tuple[PartEntry, ...]
    plan: ImportPlan
    load: Mapping[str, Any]
    number: int


@dataclass
class Loaded:
    """What one task loaded: the bundle's records it read and the sum of their digests, the rows it wrote
    (fewer where the lossy mapping leaves records out), what that mapping changed."""

    name: str
    number: int
    records: int
    digest: int
    rows: int
    receipt: Any
    loss: LossTally


def load_partition(task: LoadTask) -> Loaded:
    """The worker's side (see the module docstring)."""
    use_arrow_allocator()
    repo = Repository.open(task.repository)
    key = repo.key(task.key_file)
    repo.use_key(key)
    digest = DatasetDigest(algorithm=task.dataset.digest_algorithm)
    loss = LossTally(task.plan)
    options = {"secrets": key, "load_check": task.load_check}
    with (
        steady_memory(),
        BundleReader(repo, spool=True) as reader,
        open_connector(task.target, target=True, options=options) as connector,
    ):
        reader.fetch_ahead(task.parts)

        def records() -> Iterator[pa.RecordBatch]:
            for part in task.parts:
                problem = reader.check_part(part, read_data=True)
                if problem:
                    raise IntegrityError(
                        f"refusing to restore: {repo.storage.display(part.path)}: {problem}; nothing was "
                        "written (run `aibackup verify --read-data`)"
                    )
                for batch in reader.part_records(task.dataset, part):
                    digest.add_batch(batch)
                    yield batch

        rows, receipt = connector.load_partition(task.plan, task.load, task.number, loss.watch(prefetch(records())))
    return Loaded(task.dataset.name, task.number, digest.rows, int(digest.hexdigest, 16), rows, receipt, loss)


@dataclass
class Load:
    """A collection loaded by the workers, waiting for ``Connector.finish_load``."""

    dataset: DatasetManifest
    plan: ImportPlan
    area: Mapping[str, Any]
    tasks: int
    rows: int = 0
    loss: LossTally | None = None
    #: the tasks' receipts (``Connector.load_partition``), in partition order
    receipts: list[Any] = field(default_factory=list)
    #: set once ``Connector.finish_load`` succeeded: the load area is the target's now, never abandoned
    published: bool = False

    def publish(self, connector: Connector) -> int:
        """``Connector.finish_load`` of this collection; the rows written."""
        rows = connector.finish_load(self.plan, self.area, self.rows, self.receipts)
        self.published = True
        return rows

    def note(self, on: Cluster) -> str:
        return f"partitioned: {len(self.dataset.parts)} parts loaded by {self.tasks} tasks on {on.describe()}"


@contextlib.contextmanager
def loads(
    on: Cluster,
    connector: Connector,
    jobs: Sequence[tuple[DatasetManifest, ImportPlan]],
    *,
    repository: str,
    key_file: str | None,
    target: str,
    load_check: bool,
) -> Iterator[dict[str, Load]]:
    """Load every (dataset, plan) of `jobs` on the cluster and prove their digests; yields them by dataset
    name for the caller to publish (:meth:`Load.publish`), and abandons on the way out every load area not
    published (all of them when this raises: a failed task, a digest that does not match, Ctrl-C)."""
    made: dict[str, Load] = {}
    try:
        for dataset, plan in jobs:
            made[dataset.name] = Load(dataset, plan, connector.begin_load(plan), 0)
        tasks = [
            LoadTask(repository, key_file, target, load_check, load.dataset, group, load.plan, load.area, number)
            for load in made.values()
            for number, group in enumerate(groups(load.dataset.parts, on.workers * PER_WORKER))
        ]
        for task in tasks:
            made[task.dataset.name].tasks += 1
        futures = on.client.map(load_partition, tasks, retries=RETRIES, pure=False)
        try:
            done: list[Loaded] = on.client.gather(futures)
        except BaseException:
            on.client.cancel(futures)
            raise
        _prove(made, done)
        yield made
    finally:
        for load in made.values():
            if not load.published:
                with contextlib.suppress(Exception):  # a load area left behind says what it is (its connector's docs)
                    connector.abandon_load(load.area)


def _prove(made: dict[str, Load], done: list[Loaded]) -> None:
    """Add the tasks up per collection; IntegrityError when the records are not the manifest's."""
    sums: dict[str, int] = {}
    records: dict[str, int] = {}
    for loaded in sorted(done, key=lambda d: d.number):
        load = made[loaded.name]
        load.rows += loaded.rows
        load.receipts.append(loaded.receipt)
        sums[loaded.name] = (sums.get(loaded.name, 0) + loaded.digest) % MOD
        records[loaded.name] = records.get(loaded.name, 0) + loaded.records
        if load.loss is None:
            load.loss = loaded.loss
        else:
            load.loss.merge(loaded.loss)
    for name, load in made.items():
        if (f"{sums.get(name, 0):032x}", records.get(name, 0)) != (load.dataset.digest, load.dataset.rows):
            raise IntegrityError(
                f"refusing to restore: the records of collection {name!r} do not match its manifest's digest; "
                "nothing was written"
            )
