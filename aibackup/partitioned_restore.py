"""Partitioned restores on Dask: the parts of a collection validated and loaded by workers at once, the
collection published once by the driver, then proven as any restore is.

``restore --workers N`` / ``--dask ADDRESS`` (the clusters of :func:`aibackup.distributed.cluster`). For
every selected collection that can be split (a vector collection of two parts or more, into a target
whose ``Connector.load_modes`` hold the restore's mode), the driver makes the target's load area
(``Connector.begin_load``) and hands out the collection's parts in contiguous groups, a few per worker
(an incremental chain's record parts, every link's, each group with the records of its parts that later
links' tombstones remove: ``chains.Removed.share``).
Each task opens the repository and the target itself, from their URLs and its own environment (keys and
credentials are never task arguments), and for each of its parts: re-hashes it (a damaged part fails the
task, naming it), streams its records through the dataset digest and the plan's lossy tally into
``Connector.load_partition`` (the target's per-record checks run there, as in ``import_``). A retried task
replaces what its earlier attempt loaded. The driver adds the tasks' digests and rows up and compares
them with the manifest's before anything reaches the target: a mismatch, a failed task or Ctrl-C removes
the load areas (``Connector.abandon_load``) and the target stays as it was. Then each collection is
published (``Connector.finish_load``: pgvector's one transaction, indexes built once) and proven by the
same checks as a one-process restore, run once over the whole target. The record comparison of that proof
is spread as well (:class:`Proof`): each load task also returns its records reduced to what the comparison
needs (:func:`aibackup.checks.slim`, after the plan's mapping), which the driver spills to a file as it
arrives, and the published collection is read back by tasks of the target's own partitions
(``Connector.partition`` of the target opened as a source); the driver buckets and compares the two sides.
The search check takes the baseline's query records from the load tasks and runs its exact pass over the
bundle as tasks too (a bundle without a baseline samples its queries by position: read by the driver).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibackup import reports
from aibackup.bundle_reader import BundleReader
from aibackup.chains import Removed
from aibackup.checks import Comparison, slim, slim_schema, tolerated
from aibackup.connectors.base import Connector, DatasetDescription, ImportPlan, Location
from aibackup.connectors.registry import open_connector
from aibackup.distributed import PER_WORKER, Cluster, completed
from aibackup.errors import AibackupError, IntegrityError
from aibackup.exact_tasks import exact_on, groups
from aibackup.lossy import LossTally
from aibackup.manifests.digest import DIGEST_ALGORITHM, MOD, DatasetDigest
from aibackup.manifests.model import DatasetManifest, PartEntry
from aibackup.nearest import ExactTopK
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
    if len(dataset.parts) < 2:
        return "one part"
    return None


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
    #: an incremental chain's: the records of these parts its later links' tombstones remove
    removed: Removed | None = None
    #: the bundle being restored: a damaged part is recorded against it (reports.record_damage)
    bundle_id: str = ""


def query_ids(dataset: DatasetManifest) -> pa.Array:
    """The ids of the search baseline's query records, every vector's."""
    baseline = dataset.baseline
    ids = {q for vector in baseline.vectors for q in vector.queries} if baseline is not None else set()
    return pa.array(sorted(ids), pa.string())


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
    #: the proof's side of these records (:func:`aibackup.checks.slim` after the plan's mapping)
    expected: pa.Table
    #: those of them (mapped) that are the search baseline's queries
    queries: list[pa.RecordBatch]


def load_partition(task: LoadTask) -> Loaded:
    """The worker's side (see the module docstring)."""
    use_arrow_allocator()
    repo = Repository.open(task.repository)
    key = repo.key(task.key_file)
    repo.use_key(key)
    digest = DatasetDigest(algorithm=task.dataset.digest_algorithm)
    loss = LossTally(task.plan)
    plan = task.plan
    exclude = sorted(plan.tolerances)
    side = slim_schema(tolerated(plan.target.schema, plan.tolerances))
    # The bundle's digest and the proof's are one hash of one record where nothing is mapped or tolerated.
    same = not exclude and task.dataset.digest_algorithm == DIGEST_ALGORITHM
    expected: list[pa.RecordBatch] = []
    wanted = query_ids(task.dataset)
    queries: list[pa.RecordBatch] = []
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
                    where = repo.storage.display(part.path)
                    entry = {"bundle_id": task.bundle_id, "path": where, "problem": problem}
                    reports.record_damage(repo, task.bundle_id, [entry], found_by="restore")
                    raise IntegrityError(
                        f"refusing to restore: {where}: {problem}; nothing was "
                        "written (run `aibackup verify --read-data`)"
                    )
                for batch in reader.part_records(task.dataset, part, removed=task.removed):
                    digests = digest.add_batch(batch)
                    mapped = plan.transform(batch)  # per record: load_partition maps this partition alone too
                    expected.append(slim(mapped, exclude, side, digests if same and mapped is batch else None))
                    if len(wanted):
                        queries.append(mapped.filter(pc.is_in(mapped.column("id"), value_set=wanted)))
                    yield batch

        rows, receipt = connector.load_partition(plan, task.load, task.number, loss.watch(prefetch(records())))
    total = int(digest.hexdigest, 16)
    table = pa.Table.from_batches(expected, schema=side)
    found = [batch for batch in queries if batch.num_rows]
    return Loaded(task.dataset.name, task.number, digest.rows, total, rows, receipt, loss, table, found)


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
    #: the bundle's records the tasks read, and the proof's side of them (Arrow files, one per task)
    records: int = 0
    expected: list[Path] = field(default_factory=list)
    #: the baseline's query records the tasks found (mapped)
    queries: list[pa.RecordBatch] = field(default_factory=list)
    #: the repository and key file the tasks opened (the search check's exact pass reads the parts again)
    repository: str = ""
    key_file: str | None = None
    #: an incremental chain's: the records its tombstones remove
    removed: Removed | None = None

    def publish(self, connector: Connector) -> int:
        """``Connector.finish_load`` of this collection; the rows written."""
        rows = connector.finish_load(self.plan, self.area, self.rows, self.receipts)
        self.published = True
        return rows

    def note(self, on: Cluster) -> str:
        return f"partitioned: {len(self.dataset.parts)} parts loaded by {self.tasks} tasks on {on.describe()}"

    def proof(self, on: Cluster, target: str) -> Proof:
        """The record comparison of this collection, once published, spread over `on` (``checks.prove``)."""
        return Proof(self, on, target)


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
    removed: Mapping[str, Removed | None],
    bundle_id: str,
    opened: Repository,
) -> Iterator[dict[str, Load]]:
    """Load every (dataset, plan) of `jobs` on the cluster and prove their digests; yields them by dataset
    name for the caller to publish (:meth:`Load.publish`), and abandons on the way out every load area not
    published (all of them when this raises: a failed task, a digest that does not match, Ctrl-C).
    `removed`: by dataset name, the records an incremental chain's tombstones remove (``BundleReader.removed``,
    read once here; each task gets its parts' share). `opened`: the repository as the driver opened it, where
    records that do not add up to a manifest's digest are remembered as damage (``reports.record_damage``,
    as the workers remember a damaged part)."""
    made: dict[str, Load] = {}
    spill = tempfile.TemporaryDirectory(prefix="aibackup-proof-")
    try:
        for dataset, plan in jobs:
            area = connector.begin_load(plan)
            gone = removed.get(dataset.name)
            made[dataset.name] = Load(dataset, plan, area, 0, repository=repository, key_file=key_file, removed=gone)
        tasks = [
            LoadTask(
                repository,
                key_file,
                target,
                load_check,
                load.dataset,
                group,
                load.plan,
                load.area,
                number,
                load.removed.share(load.dataset, group) if load.removed is not None else None,
                bundle_id,
            )
            for load in made.values()
            for number, group in enumerate(groups(load.dataset.parts, on.workers * PER_WORKER))
        ]
        for task in tasks:
            made[task.dataset.name].tasks += 1
        done: list[Loaded] = []
        # The tasks are settled on an error before the load areas are abandoned (below).
        with completed(on.client, load_partition, tasks, writes=True) as results:
            # Each task's side of the proof goes to a file as it arrives: the driver's memory holds one at once.
            for loaded in results:
                path = Path(spill.name) / f"{len(done):05d}.arrow"
                _write(path, loaded.expected)
                made[loaded.name].expected.append(path)
                made[loaded.name].queries.extend(loaded.queries)
                loaded.expected = loaded.expected.schema.empty_table()
                done.append(loaded)
        _prove(made, done, opened, bundle_id)
        yield made
    finally:
        for load in made.values():
            if not load.published:
                with contextlib.suppress(Exception):  # a load area left behind says what it is (its connector's docs)
                    connector.abandon_load(load.area)
        spill.cleanup()


def _prove(made: dict[str, Load], done: list[Loaded], opened: Repository, bundle_id: str) -> None:
    """Add the tasks up per collection; IntegrityError when the records are not the manifest's (remembered
    in `opened`, as a restore on one machine remembers it)."""
    sums: dict[str, int] = {}
    for loaded in sorted(done, key=lambda d: d.number):
        load = made[loaded.name]
        load.rows += loaded.rows
        load.records += loaded.records
        load.receipts.append(loaded.receipt)
        sums[loaded.name] = (sums.get(loaded.name, 0) + loaded.digest) % MOD
        if load.loss is None:
            load.loss = loaded.loss
        else:
            load.loss.merge(loaded.loss)
    for name, load in made.items():
        if (f"{sums.get(name, 0):032x}", load.records) != (load.dataset.digest, load.dataset.rows):
            where = opened.storage.display(opened.manifest_path(bundle_id))
            problem = f"collection {name!r}: the records do not give the manifest's digest"
            entry = {"bundle_id": bundle_id, "path": where, "problem": problem}
            reports.record_damage(opened, bundle_id, [entry], found_by="restore")
            raise IntegrityError(
                f"refusing to restore: the records of collection {name!r} do not match its manifest's digest; "
                "nothing was written"
            )


def _write(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


@dataclass(frozen=True)
class ReadTask:
    """One partition of a published collection, read back for the proof (no key, no credential)."""

    target: str
    options: Mapping[str, Any]
    description: DatasetDescription
    partition: Mapping[str, Any]
    tolerances: Mapping[str, str]


def read_partition(task: ReadTask) -> pa.Table:
    """The worker's side of the proof: one partition of the restored collection, as the comparison's
    records (:func:`aibackup.checks.slim`). The target is opened as a backup opens a source, with the
    partitioning's options (pgvector: the driver's exported snapshot)."""
    use_arrow_allocator()
    exclude = sorted(task.tolerances)
    side = slim_schema(tolerated(task.description.schema, task.tolerances))
    with steady_memory(), open_connector(task.target, options=dict(task.options)) as connector:
        batches = [
            slim(batch, exclude, side)
            for batch in prefetch(connector.export_partition(task.description, task.partition))
        ]
    return pa.Table.from_batches(batches, schema=side)


@dataclass
class Proof:
    """``checks.Spread`` of a published collection: the bundle's side of the record comparison and the
    baseline's query records are what its load tasks brought; the target's side is read by the cluster's
    workers, partition by partition (``Connector.partition`` of the target opened as a source), where the
    collection splits; the search check's exact pass reads the bundle's parts again on the workers (a
    remote repository's parts are downloaded by them, not by the driver)."""

    load: Load
    on: Cluster
    target: str
    #: how the target's side was read, for the report (set by :meth:`actual`)
    note: str = "proof: the target read back in this process"

    @property
    def records(self) -> int:
        return self.load.records

    @property
    def wanted(self) -> int:
        return self.load.rows

    def expected(self, comparison: Comparison) -> None:
        for path in self.load.expected:
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for n in range(reader.num_record_batches):
                    comparison.expected.put(reader.get_batch(n))

    def query_records(self) -> Iterator[pa.RecordBatch]:
        yield from self.load.queries

    def exact(self, searches: Sequence[ExactTopK], columns: Sequence[str]) -> list[ExactTopK]:
        load = self.load
        merged = list(searches)
        tasks = exact_on(
            self.on, load.repository, load.key_file, load.dataset, merged, columns, load.plan.transform, load.removed
        )
        words = f"; the search check's exact pass over the bundle by {tasks} tasks"
        if words not in self.note:  # a second pass (a failure confirmed over every query) says nothing new
            self.note += words
        return merged

    def actual(self, target: DatasetDescription, comparison: Comparison) -> bool:
        try:
            reading = open_connector(self.target, options={"proof": True})
        except AibackupError as exc:  # say an embedded store one process holds: the driver reads it
            self.note += f" ({exc})"
            return False
        with reading:
            try:
                split = reading.partition(target, self.on.workers * PER_WORKER)
            except AibackupError as exc:  # say ids LanceDB holds twice: the driver's comparison counts them
                self.note += f" (it does not split: {exc})"
                return False
            if split is None:
                self.note += " (the restored collection does not split)"
                return False
            tasks = [
                ReadTask(self.target, {**split.options, "proof": True}, target, partition, self.load.plan.tolerances)
                for partition in split.partitions
            ]
            with completed(self.on.client, read_partition, tasks) as tables:
                for table in tables:
                    for batch in table.to_batches():
                        comparison.actual.put(batch)
        self.note = f"proof: the target read back by {len(tasks)} tasks ({split.how})"
        return True
