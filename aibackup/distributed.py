"""Partitioned backups on Dask: a dataset split by its connector (``Connector.partition``) and written by
workers, straight to the repository, then committed by the driver as one dataset.

``backup --workers N`` starts a ``distributed.LocalCluster`` of N processes on this machine; ``--dask
ADDRESS`` (or ``AIBACKUP_DASK``) uses a running scheduler. Each task opens the repository and the source
itself, from their URLs and its own environment (credentials and keys are never task arguments: a
``--key-file`` travels as its path), reads one partition (``Connector.export_partition``, the connector
opened with ``Partitioning.options``: PostgreSQL's exported snapshot), and writes its parts under the
dataset's folder with a prefix of its own (``part-p0003-00000.parquet``), sampling the search baseline's
queries and watching for an application layout on the way. It returns the manifest of what it wrote, its
sample and its detector; the driver adds them up (rows, the dataset digest is the sum of the partitions'
sums, id types; samples and detectors merge, so the parts are not read again), checks that together they
hold exactly the records the source counted in its snapshot, removes any part a failed or repeated attempt
left in the folder, and commits nothing unless every partition succeeded. Dask retries a task whose worker
died, and a failing task :data:`RETRIES` times.

An incremental backup is partitioned the same way: the parent's sorted record digests are broadcast to the
workers once, each task writes only its partition's new and changed records (aibackup.incremental), and
the driver adds up what the tasks saw before it writes the link's tombstones.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from aibackup.baseline import searchable
from aibackup.bundle import BundleWriter
from aibackup.connectors import layouts
from aibackup.connectors.base import DatasetDescription, Partitioning
from aibackup.connectors.registry import open_connector
from aibackup.errors import IntegrityError, UnavailableError, UsageError
from aibackup.incremental import Delta, DeltaPart, ParentDigests, ParentIndex, TooManyChanges
from aibackup.manifests.chain import ChainLink
from aibackup.manifests.digest import DIGEST_ALGORITHM
from aibackup.manifests.model import DatasetManifest, PartEntry
from aibackup.manifests.vectors import dense_column
from aibackup.nearest import QuerySampler
from aibackup.nonfinite import NonFinite
from aibackup.parquet_parts import WriteOptions
from aibackup.pipeline import collecting, prefetch, steady_memory, use_arrow_allocator
from aibackup.repository import Repository

#: The environment variable naming a running Dask scheduler (``tcp://HOST:8786``), as ``--dask`` does.
DASK_ENV = "AIBACKUP_DASK"
#: Times a task that raised is run again (a task whose worker died is rescheduled by Dask itself).
RETRIES = 2
#: Partitions per worker: a few, so a slow one does not hold the others back.
PER_WORKER = 2
#: `--dask "$SCHEDULER"` with the variable unset: refused, not taken as no --dask (as ``--repo ""`` is).
EMPTY_DASK = "--dask is empty (an unset variable?): name the Dask scheduler, or leave --dask out"


@dataclass(frozen=True)
class Cluster:
    """Where partition tasks run: a Dask client (or the start of a local cluster, which :attr:`client`
    waits for), and how many workers it had when the backup began."""

    started: Any  # a Client, or a Future of a local cluster's (LocalCluster, Client)
    workers: int

    @property
    def client(self) -> Any:
        """The Dask client; a local cluster that failed to start raises its error here."""
        if isinstance(self.started, Future):
            return self.started.result()[1]
        return self.started

    def describe(self) -> str:
        return f"{self.workers} Dask worker(s) at {self.client.scheduler.address}"


@contextlib.contextmanager
def cluster(workers: int | None = None, address: str | None = None) -> Iterator[Cluster | None]:
    """A Dask client for a partitioned backup: a LocalCluster of `workers` processes, the scheduler at
    `address` (else ``AIBACKUP_DASK``), or None (no Dask: the backup runs in this process).

    A local cluster starts in a thread of its own (its processes take about a second to come up): the
    caller goes on opening its source or repository meanwhile, and the first use of ``Cluster.client``
    waits for it."""
    if address is not None and not address.strip():
        raise UsageError(EMPTY_DASK)
    if address is None and workers is None:  # --workers wins over AIBACKUP_DASK, as over the config's dask
        address = os.environ.get(DASK_ENV) or None
    if workers is None and address is None:
        yield None
        return
    if workers is not None and address is not None:
        raise UsageError("give either --workers (a local cluster) or --dask (a running scheduler), not both")
    if workers is not None and workers < 1:
        raise UsageError(f"bad --workers {workers}: at least 1")
    try:
        from dask.distributed import Client
    except ImportError:
        raise UsageError("a partitioned backup needs Dask: pip install 'aibackup[dask]'") from None
    with contextlib.ExitStack() as stack:
        if address is None:
            saved = dict(os.environ)
            stack.callback(_restore_environ, saved)  # last: Dask's nanny writes into this process's environment
            pool = ThreadPoolExecutor(1, thread_name_prefix="aibackup-dask-start")
            starting = pool.submit(_start_local, workers or 1)
            stack.callback(_close_local, starting, pool)
            yield Cluster(starting, workers or 1)
            return
        _check_address(address)
        try:
            client = stack.enter_context(Client(address, timeout="10s"))
        except OSError as exc:
            raise UnavailableError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        count = len(client.scheduler_info().get("workers", {})) or (workers or 1)
        yield Cluster(client, count)


def _check_address(address: str) -> None:
    """UsageError for a scheduler address Dask cannot parse ("missing port number", "unknown address
    scheme"): checked before a Client is made, which would leave its half-started event loop behind."""
    from distributed.comm import get_address_host_port

    try:
        _, port = get_address_host_port(address)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"bad Dask scheduler address {address!r}: {exc} (expected tcp://HOST:PORT)") from None
    if not 0 < port < 65536:  # else a Client waits 10 s, then "cannot reach"
        raise UsageError(f"bad Dask scheduler address {address!r}: port {port} out of range (expected tcp://HOST:PORT)")


def _start_local(workers: int) -> tuple[Any, Any]:
    """A LocalCluster of `workers` one-thread processes and its client (in :func:`cluster`'s thread)."""
    import dask
    from dask.distributed import Client, LocalCluster

    # The workers run this module's dask_setup as they start (and as a nanny restarts one).
    preload = [*dask.config.get("distributed.worker.preload", default=[]), __name__]
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ (and thread limits) in the workers' environment, and in this
    # process's: glibc then stops raising its mmap threshold, every large buffer a partition streams is
    # page-faulted in afresh, and a worker writes ~30% slower (11.1 s against 14.4 s per 1M x 384 here).
    # Our workers run one task at a time on streamed batches: glibc's defaults suit them.
    # No dashboard, and its HTTP server (health and metrics routes) on a free local port: None would mean
    # :8787, and a UserWarning on stderr whenever another Dask holds that port. Dask's log lines below ERROR
    # (a cancelled task, a worker killed at close) are not the user's business: our errors say what failed.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}):
        local = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
            preload=preload,
        )
    try:
        return local, Client(local)
    except BaseException:
        local.close()
        raise


def dask_setup(worker: Any) -> None:
    """Run by each worker of a local cluster as it starts (Dask's preload): Ctrl-C at the terminal reaches
    the whole process group, the workers too. A worker then ends at once and says nothing (else each prints
    its KeyboardInterrupt traceback); the driver says "interrupted" and removes what the tasks wrote."""
    import signal

    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))


def _close_local(starting: Future[tuple[Any, Any]], pool: ThreadPoolExecutor) -> None:
    """Close the local cluster of :func:`cluster` once it has started (or failed to)."""
    try:
        local, client = starting.result()
    except BaseException:
        return  # it did not start: nothing to close (its error reached whoever used the client)
    finally:
        pool.shutdown(wait=False)
    from distributed.utils import silence_logging_cmgr

    # Closed after Ctrl-C, a nanny warns of the worker it had to kill: not the user's business either.
    with silence_logging_cmgr(logging.ERROR):
        try:
            client.close()
        finally:
            local.close()


def settle(client: Any, futures: Sequence[Any], exc: BaseException) -> None:
    """The tasks of `futures` after `exc` stopped the wait for them, before what they wrote is removed.
    Dask cannot stop a task already running: cancelled, it still runs to its end on its worker, and what it
    writes after the removal would stay. So after a task's failure the others are waited for (they end, or
    fail, on their own); on Ctrl-C they are cancelled at once (a running one may then leave an orphan, which
    ``prune`` removes, or a load area its connector's ``abandon_load`` says how to remove)."""
    try:
        if not isinstance(exc, KeyboardInterrupt):
            from dask.distributed import wait

            with contextlib.suppress(Exception):
                wait(futures)
    finally:
        with contextlib.suppress(Exception):  # a scheduler lost: its tasks are gone (and the error says so)
            client.cancel(futures)


@contextlib.contextmanager
def completed(
    client: Any, function: Any, tasks: Sequence[Any], *, writes: bool = False, **kwargs: Any
) -> Iterator[Iterator[Any]]:
    """`function` over `tasks` on `client`'s workers (a task that raised is retried :data:`RETRIES` times),
    its results yielded as each task completes. When a task or the caller's loop raises, the tasks left are
    cancelled on the way out; tasks that write (`writes`) are :func:`settle`-d first, so that the caller's
    clean-up after the exception finds them ended. `kwargs` go to every call (``client.map``'s).

    UnavailableError (naming the task's partition and collection) when a task's workers kept dying
    (KilledWorker: a machine out of memory on that partition, say) or the scheduler was lost: failures of
    the cluster, not bugs. Waiting here, not in ``client.gather``, also leaves nothing unretrieved on
    Ctrl-C (gather's own asyncio tasks then print "Task exception was never retrieved")."""
    from dask.distributed import as_completed

    futures = client.map(function, tasks, retries=RETRIES, pure=False, **kwargs)
    try:
        yield (result for _, result in as_completed(futures, with_results=True))
    except BaseException as exc:
        if writes:
            settle(client, futures, exc)
        else:
            with contextlib.suppress(Exception):  # a scheduler lost: its tasks are gone (and the error says so)
                client.cancel(futures)
        lost = _lost(client, exc, {f.key: (n, t) for n, (f, t) in enumerate(zip(futures, tasks, strict=True))})
        if lost is not None:
            raise lost from exc
        raise


def _lost(client: Any, exc: BaseException, tasks: Mapping[Any, tuple[int, Any]]) -> UnavailableError | None:
    """The UnavailableError for `exc` if it says the cluster failed the tasks (`tasks`: the position and task
    of each future's key), else None (a task's own error, Ctrl-C: raised as they are)."""
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError, FuturesCancelledError
    from distributed.comm import CommClosedError

    if isinstance(exc, KilledWorker):
        known = tasks.get(exc.task)
        what = _partition(*known) if known is not None else f"task {exc.task!r}"
        deaths = exc.allowed_failures + 1
        return UnavailableError(
            f"{what} failed: its Dask worker died {deaths} time{'s' if deaths > 1 else ''} (KilledWorker; out of "
            "memory? see the workers' logs)"
        )
    reasons: set[str] = set()
    if isinstance(exc, FutureCancelledError):
        reasons = {exc.reason}
    elif isinstance(exc, FuturesCancelledError):
        reasons = {group.reason for group in exc.error_groups}
    if "scheduler-connection-lost" in reasons or isinstance(exc, CommClosedError):
        return UnavailableError(f"lost the connection to the Dask scheduler ({type(exc).__name__})")
    if isinstance(exc, OSError) and getattr(client, "status", "running") != "running":  # TimeoutError included
        return UnavailableError(f"lost the connection to the Dask scheduler ({type(exc).__name__})")
    return None


def _partition(position: int, task: Any) -> str:
    """ "partition N of collection 'NAME'" for a task of :func:`completed` (its `position` in the tasks
    when it has no ``number`` of its own)."""
    number = getattr(task, "number", position)
    dataset = getattr(task, "description", None) or getattr(task, "dataset", None)
    name = getattr(dataset, "name", None)
    return f"partition {number} of collection {name!r}" if name is not None else f"partition {number}"


def _restore_environ(saved: Mapping[str, str]) -> None:
    """This process's environment as it was before the cluster started (Dask's nanny writes into it)."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


@dataclass(frozen=True)
class PartitionTask:
    """One partition of one dataset, as a worker needs it (no credential: see the module docstring)."""

    repository: str
    key_file: str | None
    bundle_id: str
    index: int
    number: int
    source: str
    options: Mapping[str, Any]
    description: DatasetDescription
    partition: Mapping[str, Any]
    write: WriteOptions | None
    #: the search baseline's query records per dense vector, and the seed of this partition's sample
    queries: int
    seed: int
    #: an incremental backup's: the dataset of the parent bundle (the digests come broadcast, see below)
    parent: DatasetManifest | None = None


@dataclass
class Written:
    """What one partition task did: the manifest of its parts, its sample of the baseline's queries, and
    what its layout detector saw (the driver merges them: no second read of the parts); for an incremental
    backup what its delta saw (the manifest is then None if the partition alone changed too much)."""

    dataset: DatasetManifest | None
    sampler: QuerySampler
    detector: layouts.Detector
    delta: DeltaPart | None = None
    #: the task's partition (the tasks complete in any order; the driver puts them back in this one)
    number: int = 0
    #: the records whose dense vectors hold NaN or Infinity (the driver's note adds them up)
    non_finite: NonFinite = field(default_factory=NonFinite)


def write_partition(task: PartitionTask, parent: ParentDigests | None = None) -> Written:
    """The worker's side: read one partition and write its parts (and record-index parts), sampling the
    baseline's queries and watching for an application layout on the way; with the `parent`'s digests (an
    incremental backup), only the records they do not hold. Whatever it wrote is removed if it fails."""
    use_arrow_allocator()  # as a backup's own process does (aibackup.pipeline)
    repo = Repository.open(task.repository)
    repo.use_key(repo.key(task.key_file))
    writer = BundleWriter(repo, task.bundle_id, task.write)
    columns = [dense_column(s.name) for s in searchable(task.description)] if task.queries else []
    sampler = QuerySampler(columns, task.queries, task.seed)
    try:
        # steady_memory: the per-batch collections of `collecting` scan only what the stream creates, not
        # the worker's whole heap (Dask's own objects included).
        with steady_memory(), open_connector(task.source, options=dict(task.options)) as connector:
            detector = layouts.Detector(connector.kind)
            non_finite = NonFinite()

            def watch(batch: pa.RecordBatch) -> None:
                if columns:
                    sampler.add(batch)
                detector.add(batch)
                non_finite.add(batch)

            delta = None
            if task.parent is not None and parent is not None:
                delta = Delta(task.parent, ParentIndex.of(parent), connector.id_types)
            try:
                dataset = writer.write_dataset(
                    task.index,
                    task.description,
                    collecting(prefetch(connector.export_partition(task.description, task.partition))),
                    connector.id_types,
                    on_batch=watch,
                    select=delta,
                    with_index=True,
                    part_prefix=f"p{task.number:04d}-",
                )
            except TooManyChanges as exc:  # not an error to retry: the driver backs the dataset up in full
                writer.discard()
                assert delta is not None
                return Written(None, sampler, detector, delta.part(exc), task.number, non_finite=non_finite)
            delta_part = delta.part() if delta is not None else None
            return Written(dataset, sampler, detector, delta_part, task.number, non_finite=non_finite)
    except BaseException:
        writer.discard()
        raise


def write_partitioned(
    on: Cluster,
    split: Partitioning,
    repo: Repository,
    writer: BundleWriter,
    index: int,
    description: DatasetDescription,
    source_uri: str,
    key_file: str | None,
    queries: int,
    seed: int,
    delta: Delta | None = None,
) -> tuple[DatasetManifest, list[Written]]:
    """Write `description` as `split` partitions on the cluster; the dataset's manifest (a chain of one
    link, like a single-process full backup) and what each task wrote and saw. IntegrityError when the
    partitions together do not hold the records the source counted; a task's error after its retries
    otherwise (every part removed).

    With `delta` (an incremental backup: nothing seen yet) the tasks write only what its parent lacks and
    the manifest holds just that (for :meth:`Delta.link`); `delta` has absorbed what they saw. Its
    TooManyChanges and SourceDataError come with every part removed."""
    folder = writer.dataset_folder(index, description.name)
    options = dict(split.options)
    tasks = [
        PartitionTask(
            repository=repo.storage.url,
            key_file=key_file,
            bundle_id=writer.bundle_id,
            index=index,
            number=number,
            source=source_uri,
            options=options,
            description=description,
            partition=partition,
            write=writer.options,
            queries=queries,
            seed=seed + number,
            parent=delta.parent if delta is not None else None,
        )
        for number, partition in enumerate(split.partitions)
    ]
    client = on.client
    # The digests go to every worker once, not once per task (16 bytes a record of the parent).
    parent = client.scatter(delta.index.digests(), broadcast=True, hash=False) if delta is not None else None
    written: list[Written] = []
    try:
        with completed(client, write_partition, tasks, writes=True, parent=parent) as done:
            written.extend(done)
    except UnavailableError as exc:  # the cluster failed (completed() settled the tasks)
        _remove_folder(repo, folder, keep=())
        raise UnavailableError(f"{exc}; nothing was committed") from exc
    except BaseException:
        _remove_folder(repo, folder, keep=())
        raise
    written.sort(key=lambda w: w.number)
    if delta is not None:
        try:
            delta.absorb([w.delta for w in written if w.delta is not None])
        except BaseException:
            _remove_folder(repo, folder, keep=())
            raise
    results = [w.dataset for w in written if w.dataset is not None]
    merged = merge(writer.bundle_id, description, results)
    _remove_folder(repo, folder, keep={p.path for p in merged.all_parts()})  # attempts that did not count
    writer.created += [p.path for p in merged.all_parts()]  # the driver discards them if the backup fails
    held = delta.read_rows if delta is not None else merged.rows
    if held != description.rows:
        raise IntegrityError(
            f"collection {description.name!r}: the {len(written)} partitions held {held} records, the "
            f"source counted {description.rows} in the same snapshot; nothing was committed"
        )
    return merged, written


def merge(bundle_id: str, description: DatasetDescription, results: list[DatasetManifest]) -> DatasetManifest:
    """One dataset of partitions' manifests, in partition order: rows and id types add up, the dataset
    digest is the sum of theirs modulo 2**128, the record parts and index parts are theirs in order."""
    parts: tuple[PartEntry, ...] = tuple(p for r in results for p in r.parts)
    index_parts = tuple(p for r in results for link in r.chain for p in link.index)
    rows = sum(r.rows for r in results)
    digest = sum(int(r.digest, 16) for r in results) % (1 << 128)
    kinds: Counter[str] = Counter()
    for r in results:
        kinds.update(r.id_types)
    first = results[0]
    link = ChainLink(bundle_id, len(parts), rows, index_parts, (), added=rows, changed=0, deleted=0)
    return replace(
        first,
        rows=rows,
        digest=f"{digest:032x}",
        digest_algorithm=DIGEST_ALGORITHM,
        parts=parts,
        id_types=dict(sorted(kinds.items())),
        chain=(link,),
        config=description.config_json(),
    )


def _remove_folder(repo: Repository, folder: str, keep: Any) -> None:
    """Remove what the dataset's folder holds besides `keep` (a failed attempt's parts, or all of them)."""
    with contextlib.suppress(FileNotFoundError):
        for rel in repo.storage.sizes_below(folder):
            if rel not in keep:
                with contextlib.suppress(Exception):
                    repo.storage.remove(rel)
