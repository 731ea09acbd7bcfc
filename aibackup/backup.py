"""The backup verb: export a store's collections into a new bundle, committed last.

Order of operations (DESIGN.md "Commit order"): describe the source, stream each collection into Parquet
parts (sha256 computed while writing), then write the manifest exclusively. Until the manifest exists the
bundle does not exist: a crash leaves at most unreferenced parts, never a partial bundle; an error or an
interrupt also removes the parts it wrote.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import pyarrow as pa

from aibackup import __version__, clock, distributed, exact_tasks, filereuse, reports
from aibackup.baseline import BaselineRecorder, seed_for
from aibackup.bundle import BundleWriter, PartGroups
from aibackup.bundle_reader import BundleReader
from aibackup.chunk_writer import ChunkStore
from aibackup.config import FULL_EVERY
from aibackup.connectors import layouts
from aibackup.connectors.base import ChunkedConnector, Connector, DatasetDescription, Partitioning
from aibackup.connectors.registry import open_connector, parse_location
from aibackup.crypto import KEY_ENV, KEY_FILE_ENV, RepositoryKey, passphrase_from
from aibackup.errors import AibackupError, UsageError
from aibackup.filereuse import FILE_KINDS, Offer
from aibackup.golden import GoldenFile
from aibackup.golden import load as load_golden
from aibackup.incremental import CHAINED_KINDS, Delta, Outcome, ParentIndex, TooManyChanges, full_reason
from aibackup.keyring import Keyring
from aibackup.lock import DEFAULT_STALE_AFTER, LockedError, RepositoryLock
from aibackup.manifests.model import DIGEST_ALGORITHM, BundleManifest, DatasetManifest
from aibackup.nonfinite import NonFinite
from aibackup.parquet_parts import WriteOptions
from aibackup.pipeline import collecting, collector_paused, prefetch, steady_memory, use_arrow_allocator
from aibackup.progress import Progress, Quiet
from aibackup.recall_rule import DEFAULT_QUERIES, MAX_QUERIES
from aibackup.repository import KEY_ROTATED, Repository, Where, iso, storage_of
from aibackup.spool import PartSpool
from aibackup.vault import Vault


@dataclass(frozen=True)
class SourceOptions:
    """What the command line says about reading the source (each connector takes the ones it knows)."""

    on_bad_line: str = "fail"  # conversations: "fail" or "skip" (kept raw, reported)
    job_config: str | None = None  # finetune: a YAML or JSON job configuration file
    redact_secrets: bool = False  # config: drop secret values instead of sealing them
    key_file: str | None = None  # the repository key, instead of AIBACKUP_KEY
    queries: int = DEFAULT_QUERIES  # vectors: query records of the search baseline per dense vector (0: none)
    golden_queries: str | None = None  # vectors: the config's golden queries, asked of the source too
    full: bool = False  # vectors: a full backup even where an incremental one could follow the chain
    full_every: int = FULL_EVERY  # vectors: incremental links after a full backup before the next full one
    allow_lossy: bool = False  # a source may back up what it holds only approximately, saying so (LanceDB)
    workers: int | None = None  # a partitioned backup on a local Dask cluster of this many processes
    dask: str | None = None  # ... or on the Dask scheduler at this address (also AIBACKUP_DASK)

    def __post_init__(self) -> None:
        """UsageError for a value the command line refuses too (the Python API passes them as given)."""
        if self.on_bad_line not in ("fail", "skip"):
            raise UsageError(f"bad on_bad_line {self.on_bad_line!r}: expected fail or skip")
        if not _whole(self.queries) or not 0 <= self.queries <= MAX_QUERIES:
            raise UsageError(f"queries must be a whole number from 0 to {MAX_QUERIES}, not {self.queries!r}")
        if not _whole(self.full_every) or self.full_every < 0:
            raise UsageError(f"full_every must be a whole number from 0, not {self.full_every!r}")

    def connector_options(self, key: RepositoryKey | None, exclude: Sequence[str]) -> dict[str, object]:
        return {
            "on_bad_line": self.on_bad_line,
            "job_config": self.job_config,
            "redact_secrets": self.redact_secrets,
            "secrets": key,
            "exclude": list(exclude),
            "allow_lossy": self.allow_lossy,
        }


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BackupResult:
    manifest: BundleManifest
    repository_created: bool
    seconds: float
    notes: tuple[str, ...] = ()
    #: How each dataset was backed up, by name (full or incremental, bytes written, tombstones).
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)

    def outcome(self, dataset: DatasetManifest) -> Outcome:
        return self.outcomes.get(dataset.name) or Outcome.of(dataset, self.bundle_id, None)

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    @property
    def datasets(self) -> tuple[DatasetManifest, ...]:
        return self.manifest.datasets

    def to_json(self) -> dict[str, object]:
        """The `backup --json` contract: bundle_id and datasets [{name, kind, rows}] (extended, not changed)."""
        own = f"data/{self.manifest.bundle_id}/"
        return {
            "bundle_id": self.manifest.bundle_id,
            "datasets": [
                {
                    "name": d.name,
                    "kind": d.kind,
                    "rows": d.rows,
                    "new_rows": sum(p.rows for p in d.parts if p.path.startswith(own)),
                    # A model bundle extends no parent: it is incremental when its chunks were found stored.
                    "incremental": d.extends is not None or (d.kind == "model" and self.outcome(d).full_reason is None),
                    "new_bytes": self.outcome(d).new_bytes,
                    "deleted": self.outcome(d).deleted,
                    "full_reason": self.outcome(d).full_reason,
                }
                for d in self.manifest.datasets
            ],
            "parent": self.manifest.parent,
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


#: Why a dataset of a kind other than vectors is backed up in full when nothing of it was backed up before.
FIRST = "no earlier bundle of this dataset"
#: Why a file-kind dataset referenced nothing from its parent although it could have.
PARTS_CHANGED = "every part of the previous bundle holds a changed file or is small (written again with the changes)"


def source_identity(source: Mapping[str, object]) -> tuple[object, object]:
    return (source.get("kind"), source.get("uri"))


def run_backup(
    repository: Where | Repository,
    source_uri: str,
    collections: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
    options: WriteOptions | None = None,
    source_options: SourceOptions | None = None,
    progress: Progress | None = None,
    lock_stale_after: dt.timedelta = DEFAULT_STALE_AFTER,
) -> BackupResult:
    """Back up `collections` (all when empty) of the store at `source_uri` into a new bundle of
    `repository` (opened, or a location: created there when missing or empty, and removed again if this
    first backup fails).

    A vector dataset gets a search baseline (aibackup.baseline): the source's answers to sampled queries
    (and to the source's golden queries), which the restore's search check compares the target with.

    A dataset whose connector can continue from the previous bundle of the same source (conversation
    logs) is exported incrementally: only the records past that bundle's high-water mark are written, and
    the manifest lists the previous bundle's parts first, so the new bundle alone restores everything.
    """
    if len(set(collections)) != len(collections):
        raise UsageError("a collection is named twice in --collection")
    use_arrow_allocator()
    source_options = source_options or SourceOptions()
    parse_location(source_uri)  # a bad URI is refused before any repository is created
    started = now or clock.now()
    timer = time.perf_counter()
    report = progress or Quiet()
    # The repository is resolved once: given opened, or found at one Storage (and created there below).
    if isinstance(repository, Repository):
        repo: Repository | None = repository
        storage = repository.storage
    else:
        storage = storage_of(repository)
        repo = Repository.find(storage)
    key = repo.key(source_options.key_file) if repo is not None else None
    if repo is not None:
        repo.use_key(key)  # an encrypted repository: manifests are signed, and read ones must be authentic
        repo.refuse_downgrade()
    # A new repository is created encrypted when a key is given (--key-file, AIBACKUP_KEY_FILE, AIBACKUP_KEY):
    # whoever set a key wants its backups encrypted.
    new_passphrase = passphrase_from(source_options.key_file) if repo is None else None
    new_keyring = Keyring.new(str(uuid.uuid4()), iso(started)) if new_passphrase is not None else None
    if new_keyring is not None:
        key = Vault(new_keyring, "").secrets  # the connector seals secrets with the key-to-be
    # A file source never backs up the repository it is writing into (`config:.` with ./aibackup-repo).
    exclude = [storage.root] if storage.is_local else []
    # A local Dask cluster (--workers) comes up in the background while the source opens and is described.
    with distributed.cluster(source_options.workers, source_options.dask) as on:
        with collector_paused():  # opening a store can load all of it into this process (Qdrant local mode)
            opened = open_connector(source_uri, options=source_options.connector_options(key, exclude))
        with opened as connector:
            descriptions = connector.describe(list(collections) or None)
            if not descriptions:
                raise UsageError(f"{connector.location.display()} holds no collections: nothing to back up")
            created = repo is None
            if repo is None:
                repo = Repository.init(storage, passphrase=new_passphrase, keyring=new_keyring)
                repo.use_key(repo.key())
            source: dict[str, object] = {"kind": connector.kind, "uri": connector.location.display()}
            if collections:  # some of the store's collections, by name: not a backup of the whole store
                source["collections"] = list(collections)
            # One backup of a source at a time (a cron run overlapping the previous one is refused), and never
            # while a prune runs; a crashed run's lock goes stale by itself.
            try:
                lock = RepositoryLock(
                    repo, "backup", connector.location.display(), stale_after=lock_stale_after
                ).acquire()
            except BaseException:
                if created:
                    repo.forget()
                raise
            # Until the run's own try below: an error here must not leave the lock behind (a long-lived
            # process's heartbeat would keep it alive, refusing prune and the key verbs).
            spool: PartSpool | None = None
            try:
                if not created and repo.reread_marker():
                    # A key verb ran between the opening and the lock (they exclude each other only once both
                    # hold it): this bundle takes the keys as they are now, or is refused if its key was removed.
                    try:
                        repo.use_key(repo.key(source_options.key_file))
                    except AibackupError as exc:
                        raise type(exc)(
                            f"the repository's keys changed while this backup was starting: {exc}"
                        ) from None
                notes: list[str] = list(lock.notes)
                if key is None and (os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV)):
                    # A key in the environment is meant for encrypted repositories; this one is not: say so.
                    notes.append(
                        f"${KEY_ENV} or ${KEY_FILE_ENV} is set, but the repository at {storage.display()} is not "
                        "encrypted: this bundle is not encrypted either"
                    )
                parent = _parent(repo, source)
                bundle_id = repo.next_bundle_id(started)
                # A remote repository: the vector parts are also kept locally, for the baselines' exact passes.
                spool = None if repo.storage.is_local else PartSpool(repo.storage)
                writer = BundleWriter(repo, bundle_id, options, spool=spool)
                golden = _golden(source_options.golden_queries, notes)
                datasets: list[DatasetManifest] = []
                recorders: list[BaselineRecorder] = []
                outcomes: dict[str, Outcome] = {}
                committing = False
                # Model files: their chunks go to the repository's chunk store, in packs of this bundle
                # (aibackup.chunks).
                store = ChunkStore(repo, bundle_id) if isinstance(connector, ChunkedConnector) else None
                if store is not None and isinstance(connector, ChunkedConnector):
                    connector.use_chunks(store)
                    for problem in store.index.damaged.values():  # each names its file
                        notes.append(
                            f"{problem}: the chunks it lists are stored again (`aibackup verify` names it until a "
                            "copy holding every bundle of this repository replaces it: `aibackup copy --repo COPY "
                            "--to-repo` this repository)"
                        )
            except BaseException:
                lock.release()
                if spool is not None:
                    spool.close()
                if created:
                    repo.forget()
                raise
            try:
                with steady_memory():
                    for index, description in enumerate(descriptions):
                        if description.kind in CHAINED_KINDS:
                            chained = _write_chained(
                                connector,
                                repo,
                                writer,
                                index,
                                description,
                                source,
                                source_options,
                                report,
                                on,
                                source_uri,
                            )
                            chained.recorder.ask(golden)
                            recorders.append(chained.recorder)
                            datasets.append(chained.dataset)
                            outcomes[description.name] = Outcome.of(chained.dataset, bundle_id, chained.full_reason)
                            notes += chained.notes
                            continue
                        file_kind = FILE_KINDS.get(description.kind)
                        # File kinds find what they may reference themselves (filereuse.offer, below).
                        previous, unchained = (  # unchained: why it is full, if it is
                            (None, FIRST) if file_kind else _previous(repo, parent, description.name, description.kind)
                        )
                        if previous is None and unchained != FIRST:  # a parent with a part missing or damaged
                            notes.append(f"{description.name}: full backup, not incremental ({unchained})")
                        refused = None  # why an earlier bundle there is not continued
                        if previous is not None and previous.digest_algorithm != DIGEST_ALGORITHM:
                            # The dataset digest of a chain is a sum: every link must use one algorithm.
                            refused = (
                                f"the previous bundle's record digests are {previous.digest_algorithm}, an older format"
                            )
                        elif previous is not None and repo.rotated_since(p.path for p in previous.all_parts()):
                            refused = KEY_ROTATED
                        if refused is not None:
                            unchained = refused
                            notes.append(f"{description.name}: full backup, not incremental ({unchained})")
                            previous = None
                        since = previous.state if previous is not None else None
                        offer: Offer | None = None
                        groups: PartGroups | None = None
                        if file_kind is not None:  # fine-tuning and config files: unchanged files are referenced
                            earlier, earlier_dataset = _previous_dataset(repo, source, description)
                            offer, unreused = filereuse.offer(
                                BundleReader(repo), file_kind, earlier, earlier_dataset, full=source_options.full
                            )
                            if offer is None and earlier is not None:
                                notes.append(f"{description.name}: every file written: {unreused}")
                            if offer is not None and offer.damaged:
                                notes.append(
                                    f"{description.name}: the files of {len(offer.damaged)} part(s) of bundle "
                                    f"{earlier} found damaged written again ({repo.storage.display(offer.damaged[0])}"
                                    f"{', …' if len(offer.damaged) > 1 else ''})"
                                )
                            since = offer.since() if offer is not None else None
                            groups = PartGroups(file_kind.column, split=file_kind.split)
                        # an incremental export yields only what is new: its size is not known ahead
                        report.dataset(description.name, None if since else description.rows)
                        recorder = BaselineRecorder(connector, description, source_options.queries, seed_for(bundle_id))
                        detector = layouts.Detector(connector.kind if description.kind == "vectors" else "")
                        dataset = writer.write_dataset(
                            index,
                            description,
                            collecting(prefetch(connector.export(description, since))),
                            connector.id_types,
                            report.advance,
                            _each(recorder.add, detector.add),
                            groups=groups,
                        )
                        recorder.ask(golden)
                        recorders.append(recorder)
                        found = detector.result(getattr(description.config, "native", None))
                        if found is not None:  # every record is in a framework's layout: the restore keeps it
                            dataset = replace(dataset, config={**dataset.config, "layout": found})
                        state = connector.export_state(description.name)
                        if file_kind is not None and groups is not None and state is not None:
                            assembled = filereuse.assemble(
                                file_kind, dataset, groups.parts, state.state, state.config or dataset.config, offer
                            )
                            dataset = assembled.dataset
                            notes += [f"{description.name}: {note}" for note in state.notes]
                            if assembled.reused:
                                notes.append(
                                    f"{description.name}: {assembled.referenced} of {assembled.files} file(s) "
                                    f"referenced from bundle {assembled.dataset.extends}, not written again "
                                    "(unchanged since)"
                                )
                                reason = None
                            else:
                                reason = unreused if offer is None else PARTS_CHANGED
                            outcomes[description.name] = Outcome.of(dataset, bundle_id, reason)
                        elif state is not None:
                            notes += [f"{description.name}: {note}" for note in state.notes]
                            dataset = replace(
                                dataset,
                                state=dict(state.state),
                                config=dict(state.config) if state.config is not None else dataset.config,
                            )
                            if state.incremental and previous is not None and parent is not None:
                                dataset = chain(previous, dataset, parent)
                        if description.name not in outcomes:  # conversation logs: continued from their mark, or not
                            if previous is not None and dataset.extends is None:
                                unchained = "the source could not continue from the previous bundle (see the notes)"
                            reason = None if dataset.extends else unchained
                            outcomes[description.name] = Outcome.of(dataset, bundle_id, reason)
                        datasets.append(dataset)
                    if store is not None:  # packs, then their index, then (below) the manifest
                        store.publish()
                        store.check_referenced()
                        datasets = [_with_chunk_stats(d, store, outcomes) if d.kind == "model" else d for d in datasets]
                    # The source is done with: close it before the baselines' exact passes, which read the
                    # parts just written (an embedded store's threads and memory would compete with them).
                    connector.close()
                    for n, recorder in enumerate(recorders):
                        # A chained dataset's exact pass would read the whole chain: the source's answers are kept
                        # without it (aibackup.baseline).
                        baseline, said = recorder.settle(
                            BundleReader(repo, spool=spool or False), datasets[n], measure=not datasets[n].chained
                        )
                        datasets[n] = replace(datasets[n], baseline=baseline)
                        notes += said
                manifest = BundleManifest(
                    bundle_id=bundle_id,
                    created_at=iso(started),
                    tool_version=__version__,
                    source=source,
                    datasets=tuple(datasets),
                    parent=parent,
                )
                if lock.lost:  # a run that lost its lock may no longer be alone: publish nothing
                    raise LockedError(
                        f"the lock of this backup of {source['uri']} was taken over while it ran (stale heartbeat?); "
                        "nothing was committed: run it again"
                    )
                committing = True
                repo.commit(manifest)
            except BaseException:
                lock.release()
                if committing and not repo.manifest_absent(bundle_id):
                    # The manifest may have been written (a lost answer, an interrupt during the write): its
                    # parts stay. If it was not, they are orphans that prune removes after its grace period.
                    raise
                # An error or Ctrl-C: no manifest, so no bundle; remove the parts too. (A crash leaves them as
                # unreferenced orphans, which no reader ever looks at.) A repository this run created goes as
                # well, so that the fix an error suggests (say `aibackup init --encrypt`) works on the spot.
                writer.discard()
                if store is not None:
                    store.discard()
                if created:
                    repo.forget()
                raise
            finally:
                if spool is not None:
                    spool.close()
            lock.release()
        return BackupResult(manifest, created, time.perf_counter() - timer, tuple(notes), outcomes)


def _with_chunk_stats(dataset: DatasetManifest, store: ChunkStore, outcomes: dict[str, Outcome]) -> DatasetManifest:
    """A model dataset with what the chunk store did for it (``config.stored``); its outcome counts the new
    packs' bytes. (A model source has one dataset: the store's figures are its.)"""
    config = {**dataset.config, "stored": store.stats.to_json(), "chunk_ids": store.ids.algorithm}
    outcome = outcomes[dataset.name]
    # Incremental when the files' chunks were found in the repository already, only the new ones written
    # (the conversation logs' "could not continue" reason made no sense here).
    stats = store.stats
    reason: str | None = outcome.full_reason if outcome.full_reason == FIRST else "none of its chunks was stored yet"
    if stats.new_chunks < stats.chunks or not stats.chunks:
        reason = None
    outcomes[dataset.name] = replace(outcome, new_bytes=outcome.new_bytes + stats.new_bytes, full_reason=reason)
    return replace(dataset, config=config)


@dataclass
class _Chained:
    """One chained-kind dataset written: its manifest, its baseline recorder, why it is full (or None)."""

    dataset: DatasetManifest
    recorder: BaselineRecorder
    full_reason: str | None
    notes: list[str]


def _write_chained(
    connector: Connector,
    repo: Repository,
    writer: BundleWriter,
    index: int,
    description: DatasetDescription,
    source: Mapping[str, object],
    options: SourceOptions,
    report: Progress,
    on: distributed.Cluster | None = None,
    source_uri: str = "",
) -> _Chained:
    """Write a vector dataset as a link after its previous bundle's chain, or in full (aibackup.incremental):
    read the source once, or twice when the first read finds that more than half the records changed. `on`
    a Dask cluster, either is written by its workers, one partition each, where the connector can split the
    dataset (aibackup.distributed)."""
    reader = BundleReader(repo)
    previous_bundle, previous = _previous_dataset(repo, source, description)
    reason = full_reason(reader, previous, description, full=options.full, full_every=options.full_every)
    delta = None
    if reason is None and previous is not None:
        try:
            delta = Delta(previous, ParentIndex.load(reader, previous), connector.id_types)
        except AibackupError as exc:
            reason = f"the previous bundle's record index cannot be used ({exc})"
    folder = writer.dataset_folder(index, description.name)
    split = connector.partition(description, on.workers * distributed.PER_WORKER) if on is not None else None
    if on is not None and split is not None:
        args = (connector, repo, writer, index, description, source_uri, options, report, on, split)
        if delta is not None and previous_bundle is not None:
            try:
                return _write_partitioned(*args, None, previous, delta, previous_bundle)
            except TooManyChanges as exc:
                writer.discard(folder + "/")
                reason = str(exc)
        return _write_partitioned(*args, reason, previous)
    while True:
        recorder = BaselineRecorder(connector, description, options.queries, seed_for(writer.bundle_id))
        detector = layouts.Detector(connector.kind)
        non_finite = NonFinite()
        report.dataset(description.name, description.rows)
        stream = collecting(prefetch(connector.export(description, None)))
        try:
            dataset = writer.write_dataset(
                index,
                description,
                stream,
                connector.id_types,
                report.advance,
                _each(recorder.add, detector.add, non_finite.add),
                select=delta,
                with_index=True,
            )
            if delta is not None and previous_bundle is not None:
                dataset = delta.link(reader, writer, folder, dataset, previous_bundle)
        except TooManyChanges as exc:
            writer.discard(folder + "/")
            reason, delta = str(exc), None
            continue  # once: a full write never raises it
        finally:
            stream.close()
        break
    found = detector.result(getattr(description.config, "native", None))
    if found is not None:  # every record is in a framework's layout: the restore keeps it
        dataset = replace(dataset, config={**dataset.config, "layout": found})
    notes = [f"{description.name}: full backup: {reason}"] if reason and previous is not None else []
    if on is not None:
        notes.append(f"{description.name}: not partitioned (the source cannot split it)")
    state = connector.export_state(description.name)  # a vector connector's notes (ids it had to make up)
    notes += [f"{description.name}: {note}" for note in (state.notes if state is not None else ())]
    notes += [f"{description.name}: {note}" for note in non_finite.notes()]
    return _Chained(dataset, recorder, reason, notes)


def _write_partitioned(
    connector: Connector,
    repo: Repository,
    writer: BundleWriter,
    index: int,
    description: DatasetDescription,
    source_uri: str,
    options: SourceOptions,
    report: Progress,
    on: distributed.Cluster,
    split: Partitioning,
    reason: str | None,
    previous: DatasetManifest | None,
    delta: Delta | None = None,
    parent_bundle: str | None = None,
) -> _Chained:
    """A vector dataset written by the cluster's workers (aibackup.distributed), which also sampled the
    search baseline's queries and watched for a layout: their samples and detectors merge. In full, or with
    `delta` (nothing seen yet) as an incremental link after `parent_bundle`: the workers write what changed,
    this process the tombstones (TooManyChanges: the caller writes it in full)."""
    report.dataset(description.name, description.rows)
    seed = seed_for(writer.bundle_id)
    dataset, written = distributed.write_partitioned(
        on, split, repo, writer, index, description, source_uri, options.key_file, options.queries, seed, delta
    )
    if delta is not None and parent_bundle is not None:
        folder = writer.dataset_folder(index, description.name)
        dataset = delta.link(BundleReader(repo), writer, folder, dataset, parent_bundle)
    report.advance(description.rows)
    recorder = BaselineRecorder(connector, description, options.queries, seed)
    if recorder.specs:
        recorder.sampler.merge([w.sampler for w in written])
    if delta is None:  # the baseline's exact pass reads the parts the workers wrote on the workers too
        recorder.spread = partial(exact_tasks.exact_on, on, repo.storage.url, options.key_file)
    detector = layouts.Detector(connector.kind)
    detector.merge([w.detector for w in written])
    found = detector.result(getattr(description.config, "native", None))
    if found is not None:
        dataset = replace(dataset, config={**dataset.config, "layout": found})
    notes = [f"{description.name}: full backup: {reason}"] if reason and previous is not None else []
    notes.append(f"{description.name}: partitioned: {split.how}, written by {on.describe()}")
    non_finite = NonFinite()
    non_finite.merge([w.non_finite for w in written])
    notes += [f"{description.name}: {note}" for note in non_finite.notes()]
    return _Chained(dataset, recorder, reason, notes)


def _previous_dataset(
    repo: Repository, source: Mapping[str, object], description: DatasetDescription
) -> tuple[str | None, DatasetManifest | None]:
    """The newest earlier bundle of the same source that holds this collection, with its dataset: the one an
    incremental backup follows (a bundle that could not be read is skipped; `verify` reports it)."""
    for bundle_id in reversed(repo.bundle_ids()):
        try:
            manifest = repo.load(bundle_id)
        except AibackupError:
            continue
        if source_identity(manifest.source) != source_identity(source):
            continue
        try:
            dataset = manifest.dataset(description.name)
        except KeyError:
            continue
        if dataset.kind == description.kind:
            return bundle_id, dataset
    return None, None


def _each(*watchers: Callable[[pa.RecordBatch], None]) -> Callable[[pa.RecordBatch], None]:
    """One callback that hands each batch to every watcher, in order."""

    def watch(batch: pa.RecordBatch) -> None:
        for watcher in watchers:
            watcher(batch)

    return watch


def _golden(path: str | None, notes: list[str]) -> GoldenFile | None:
    """The source's golden queries, to record the source's own recall of them (a file that cannot be read
    is a note: the drill reports it as a failed check, the backup itself is not at stake)."""
    if path is None:
        return None
    try:
        return load_golden(path)
    except AibackupError as exc:
        notes.append(f"golden queries not recorded: {exc}")
        return None


def chain(previous: DatasetManifest, new: DatasetManifest, previous_bundle: str) -> DatasetManifest:
    """The dataset of an incremental backup: the previous bundle's parts, then the new ones.

    Rows and id-type counts add up; so does the dataset digest (a sum of record digests modulo 2**128),
    so the manifest states the digest of the whole dataset without reading the old parts again.
    """
    if previous.digest_algorithm != new.digest_algorithm:
        raise ValueError(f"cannot chain {previous.digest_algorithm} digests with {new.digest_algorithm} digests")
    digest = (int(previous.digest, 16) + int(new.digest, 16)) % (1 << 128)
    id_types = Counter(previous.id_types)
    id_types.update(new.id_types)
    return replace(
        new,
        rows=previous.rows + new.rows,
        digest=f"{digest:032x}",
        parts=previous.parts + new.parts,
        id_types=dict(sorted(id_types.items())),
        extends=previous_bundle,
    )


def _previous(repo: Repository, parent: str | None, name: str, kind: str) -> tuple[DatasetManifest | None, str]:
    """The parent bundle's dataset of the same name and kind, if its parts are all still there and none was
    found damaged (an incremental backup must never extend a chain with a missing or damaged link: then it
    is a full backup), with FIRST; else None and why."""
    if parent is None:
        return None, FIRST
    try:
        dataset = repo.load(parent).dataset(name)
    except (AibackupError, KeyError):
        return None, FIRST
    if dataset.kind != kind or dataset.state is None:
        return None, FIRST
    reader = BundleReader(repo)
    found = reports.damaged_parts(repo)  # same size, other bytes: known once a verify --read-data or restore saw it
    for part in dataset.parts:
        problem = reader.check_part(part, read_data=False)
        if problem is None and part.path in found:
            problem = "found damaged by an earlier verify --read-data or restore"
        if problem:
            return None, f"a part of bundle {parent} is damaged ({repo.storage.display(part.path)}: {problem})"
    return dataset, FIRST  # why it is full if the source cannot continue: said below


def _parent(repo: Repository, source: Mapping[str, object]) -> str | None:
    """The newest earlier bundle of the same source, if any (the chain incremental backups build on)."""
    for bundle_id in reversed(repo.bundle_ids()):
        try:
            manifest = repo.load(bundle_id)
        except AibackupError:
            continue  # a damaged or newer manifest is no parent; `verify` reports it
        if source_identity(manifest.source) == source_identity(source):
            return bundle_id
    return None
