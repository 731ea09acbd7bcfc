"""The restore verb: rehydrate a bundle into a target store, then prove it.

1. Resolve the bundle and the collections (``--collection SRC[=DEST]``; all by default).
2. Re-hash every part of the selected datasets and recompute each dataset's digest from its records
   (part by part, while the next parts download): damage, or records that do not give the manifest's
   digest, are refused before the target is even opened, and remembered as a failed verify would be
   (``reports.record_damage``: the next backup does not extend a chain that reads a damaged part).
3. Plan every import (target capabilities, lossy mapping, existing collections) and stream every record
   through the target's per-record checks (``validate_records``): a refusal also comes before anything
   is written.
4. Import each dataset (the bundle is read in a background thread while the target ingests), then run
   the checks of aibackup.checks against what the target gives back. Any failed check fails the restore.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from aibackup import distributed, partitioned_restore, reports
from aibackup.bundle_reader import BundleReader
from aibackup.checks import prove
from aibackup.chunk_reader import ChunkReader
from aibackup.chunks import ChunkIndex
from aibackup.connectors import layouts
from aibackup.connectors.base import (
    MODES,
    ChunkedConnector,
    Connector,
    DatasetDescription,
    ImportPlan,
    Location,
)
from aibackup.connectors.registry import connector_class, open_connector, parse_location
from aibackup.errors import (
    AibackupError,
    DatasetNotFoundError,
    IntegrityError,
    Interrupted,
    UnsupportedFeatureError,
    UsageError,
)
from aibackup.lossy import LossTally
from aibackup.manifests.kinds import KINDS
from aibackup.manifests.model import BundleManifest, DatasetManifest, PartEntry
from aibackup.manifests.vectors import METADATA, parse_metadata
from aibackup.pipeline import prefetch, use_arrow_allocator
from aibackup.proof import Check
from aibackup.recall_rule import DEFAULT_TOLERANCE, CheckOptions
from aibackup.repository import Repository, Where


@dataclass
class DatasetResult:
    name: str  # the collection in the bundle
    target: str  # the collection restored into
    layout: str  # the application layout written (aibackup.connectors.layouts): "raw", "langchain (chroma -> qdrant)"
    rows: int
    dropped: tuple[str, ...]  # the lossy mappings the plan applies
    lost: tuple[str, ...]  # what they really changed in this bundle's records
    notes: tuple[str, ...]
    load_seconds: float
    check_seconds: float
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "target": self.target,
            "layout": self.layout,
            "rows": self.rows,
            "ok": self.ok,
            "dropped": list(self.dropped),
            "lost": list(self.lost),
            "notes": list(self.notes),
            "load_seconds": round(self.load_seconds, 3),
            "check_seconds": round(self.check_seconds, 3),
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass
class RestoreResult:
    bundle_id: str
    target: str
    datasets: list[DatasetResult]
    validate_seconds: float = 0.0
    #: the re-hash of every part and the digests before the target is opened (the partitioned collections'
    #: are done by the workers, inside validate_seconds)
    verify_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.datasets)

    def to_json(self) -> dict[str, object]:
        """The `restore --json` contract: ok, bundle_id, datasets [{name, rows, checks}] (extended)."""
        return {
            "ok": self.ok,
            "bundle_id": self.bundle_id,
            "target": self.target,
            "verify_seconds": round(self.verify_seconds, 3),
            "validate_seconds": round(self.validate_seconds, 3),
            "datasets": [d.to_json() for d in self.datasets],
        }


def parse_renames(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``--collection SRC[=DEST]`` values as (source, destination) pairs."""
    pairs = []
    for spec in specs:
        src, sep, dest = spec.partition("=")
        if not src or (sep and not dest):
            raise UsageError(f"bad --collection {spec!r}: expected NAME or SRC=DEST")
        pairs.append((src, dest or src))
    seen: dict[str, str] = {}
    for src, dest in pairs:
        if dest in seen:
            which = f"{src!r} twice" if seen[dest] == src else f"{seen[dest]!r} and {src!r}"
            raise UsageError(f"bad --collection: {which} would be restored into the same collection {dest!r}")
        seen[dest] = src
    return pairs


def description_of(dataset: DatasetManifest) -> DatasetDescription:
    config = dataset.vectors_config() if dataset.kind == "vectors" else dict(dataset.config)
    return DatasetDescription(name=dataset.name, config=config, rows=dataset.rows, kind=dataset.kind)


def run_restore(
    repository: Where | Repository,
    ref: str | None,
    target_uri: str,
    collections: Sequence[str] = (),
    *,
    mode: str = "create",
    allow_lossy: bool = False,
    at: dt.datetime | None = None,
    check_options: CheckOptions | None = None,
    key_file: str | None = None,
    layout: str = "auto",
    load_check: bool = False,
    workers: int | None = None,
    dask: str | None = None,
    strict: bool = False,
) -> RestoreResult:
    """Restore bundle `ref` (an id, a prefix or latest; `at`: the newest bundle up to that time) into
    `target_uri` and prove it. `layout` (vectors): auto writes each collection in the application layout
    recorded at backup (aibackup.connectors.layouts), raw in each connector's own mapping, langchain or
    llamaindex in that framework's layout for the target. `load_check` (models): also open every restored
    safetensors file with the safetensors library and compare each tensor's shape and dtype. `workers` (a
    local Dask cluster of that many processes) or `dask` (a scheduler's address; also ``AIBACKUP_DASK``):
    the collections that can be split are validated and loaded by the cluster's workers
    (aibackup.partitioned_restore), published and proven here."""
    layouts.check_choice(layout)  # a bad flag is refused before anything is opened
    if mode not in MODES:
        raise UsageError(f"bad --mode {mode!r}: expected one of {', '.join(MODES)}")
    pairs = parse_renames(collections)
    use_arrow_allocator()
    repo = repository if isinstance(repository, Repository) else Repository.open(repository)
    key = repo.key(key_file)  # an encrypted repository: a wrong or missing key stops here, before writing
    repo.use_key(key)  # ... and every manifest read must be authenticated by it
    manifest = repo.resolve(ref, datasets=[src for src, _ in pairs], at=at)
    selected = _select(manifest, pairs)
    latest = ref in (None, "latest") and not pairs  # the bundle was not chosen for what it holds
    partial = _partial_note(repo, manifest) if latest else None
    if strict:
        _refuse_unused({d.kind for d, _ in selected}, manifest.bundle_id, layout, load_check, check_options)
    location = parse_location(target_uri, target=True)
    _refuse_target_in_repository(location, repo)
    target_class = connector_class(location.kind)
    # Before any part is read (a bundle of logs is not downloaded to learn that Qdrant cannot take it), and
    # so before the target is opened (opening an embedded store creates it).
    _refuse_other_kind(repo, manifest, [d for d, _ in selected], location.display(), target_class.dataset_kind, latest)
    # Each part is read up to four times (re-hash, validation, import, content check): a remote repository's
    # parts are downloaded once, into a local spool that the later reads use.
    with distributed.cluster(workers, dask) as on, BundleReader(repo, spool=True) as reader:
        # With a cluster, the collections it can split are re-hashed and validated by its workers.
        alone = (
            {d.name: partitioned_restore.why_not(d, target_class, location, mode) for d, _ in selected} if on else {}
        )
        spread = {name for name, why in alone.items() if why is None}
        verifying = time.perf_counter()
        _verify_before_writing(
            reader,
            repo,
            manifest,
            [d for d, _ in selected if d.name not in spread],
            [d for d, _ in selected if d.name in spread],
        )
        verify_seconds = time.perf_counter() - verifying
        results: list[DatasetResult] = []
        options = {"secrets": key, "load_check": load_check}
        with (
            open_connector(target_uri, target=True, options=options) as connector,
            _chunks(repo, connector, manifest.bundle_id),
        ):
            source_kind = str(manifest.source.get("kind"))
            plans, applied = _plans(connector, reader, selected, source_kind, layout, mode, allow_lossy, alone)
            # Every record is checked against what the target can hold before anything is written (against
            # the manifest's digest it was, with the parts' hashes).
            validated = time.perf_counter()
            for dataset, plan in plans:
                if dataset.name not in spread:
                    connector.validate_records(plan, prefetch(reader.batches(dataset)))
            jobs = [(d, p) for d, p in plans if d.name in spread]
            with _loads(on, connector, jobs, reader, key_file, target_uri, manifest.bundle_id) as loaded:
                validate_seconds = time.perf_counter() - validated
                written: set[str] = set()  # the collections whose import completed (then proven, or not)
                for dataset, plan in plans:
                    try:
                        results.append(
                            _restore_one(
                                connector,
                                reader,
                                dataset,
                                plan,
                                check_options,
                                applied[dataset.name],
                                loaded.get(dataset.name),
                                on,
                                target_uri,
                                written,
                            )
                        )
                    except AibackupError as exc:
                        raise _stopped(exc, connector, plan, results, plan.target.name in written) from None
                    except KeyboardInterrupt:  # Ctrl-C half-way into a collection: say which, and what now
                        raise Interrupted(_stopped_in(connector, plan, results, plan.target.name in written)) from None
            target = connector.location.display()
        if partial is not None:
            results = [replace(r, notes=(partial, *r.notes)) for r in results]
        return RestoreResult(
            bundle_id=manifest.bundle_id,
            target=target,
            datasets=results,
            validate_seconds=validate_seconds,
            verify_seconds=verify_seconds,
        )


def _plans(
    connector: Connector,
    reader: BundleReader,
    selected: Sequence[tuple[DatasetManifest, str]],
    source_kind: str,
    layout: str,
    mode: str,
    allow_lossy: bool,
    alone: Mapping[str, str | None],
) -> tuple[list[tuple[DatasetManifest, ImportPlan]], dict[str, layouts.Applied | None]]:
    """Each selected (dataset, destination) planned into the target, writing nothing: its plan (with the
    layout it is written in, and why it restores in one process where a cluster does not take it) and
    that layout by dataset name. UsageError when two collections would go into one framework table."""
    plans: list[tuple[DatasetManifest, ImportPlan]] = []
    applied: dict[str, layouts.Applied | None] = {}
    taken: dict[str, str] = {}
    for d, dest in selected:
        chosen, description, dest, note = _layout(layout, d, dest, source_kind, connector.kind, reader)
        if dest in taken:  # a framework's one table for every collection (langchain_pg_embedding)
            raise UsageError(
                f"collections {taken[dest]!r} and {d.name!r} would both be restored into {dest!r} "
                f"({chosen.framework if chosen else 'the'} layout's one table for every collection): restore "
                "one with --collection, then the other with --collection and --mode merge"
            )
        taken[dest] = d.name
        plan = connector.plan_import(description, dest, mode=mode, allow_lossy=allow_lossy)
        if (
            chosen is not None
            and mode == "merge"
            and chosen.framework == layouts.LANGCHAIN
            and chosen.target == "qdrant"
        ):
            chosen = layouts.merge_keys(chosen, _existing_payload(connector, dest), dest)
        if chosen is not None:
            plan = layouts.apply(plan, chosen)
        elif note:
            plan = replace(plan, notes=(*plan.notes, note))
        if alone.get(d.name):
            plan = replace(plan, notes=(*plan.notes, f"restored in one process: {alone[d.name]}"))
        applied[d.name] = chosen
        plans.append((d, plan))
    return plans, applied


def _existing_payload(connector: Connector, name: str) -> dict[str, Any] | None:
    """The metadata (a Qdrant point's payload) of one record of collection `name` on the target, which a
    merge writes into (None: it does not exist or holds no record)."""
    try:
        (existing,) = connector.describe([name])
    except DatasetNotFoundError:
        return None
    for batch in connector.export(existing):
        if batch.num_rows:
            return parse_metadata(batch.column(METADATA)[0].as_py()) or {}
    return None


def _stopped(
    exc: AibackupError, connector: Connector, plan: ImportPlan, results: Sequence[DatasetResult], written: bool
) -> AibackupError:
    """`exc` (of its type, for its exit code) saying in which collection the restore stopped, what became
    of it (`written`: its import had completed, its proof had not), and which collections were restored
    before it."""
    where, done = _stopped_at(connector, plan, results, written)
    return type(exc)(f"{where}: {exc}{done}")


def _stopped_in(connector: Connector, plan: ImportPlan, results: Sequence[DatasetResult], written: bool) -> str:
    """What a Ctrl-C half-way into `plan`'s collection leaves (:func:`_stopped`'s words): without it a rerun
    met "already holds N records" as if they were the user's own."""
    where, done = _stopped_at(connector, plan, results, written)
    return f"{where}{done}"


def _stopped_at(
    connector: Connector, plan: ImportPlan, results: Sequence[DatasetResult], written: bool
) -> tuple[str, str]:
    """(in which collection the restore stopped and what became of it, which collections it restored before)."""
    if written:  # during the proof: the collection holds what the import wrote (an overwrite: replaced)
        again = "it again with --mode overwrite" if plan.mode == "create" else "it again"
        state = f", which now holds the bundle's records but was not proven (run {again} to prove it)"
    elif connector.atomic_import:
        state = "; nothing of it was written (the target writes in one transaction)"
    elif plan.undone_on_failure:
        state = "; nothing of it was left (what it had written was removed)"
    elif plan.mode == "create":  # the same command again would refuse the collection it left
        state = ", which may now hold part of the bundle (run it again with --mode overwrite)"
    else:  # overwrite and merge: the same command again replaces or completes it
        state = ", which may now hold part of the bundle (run it again)"
    done = ", ".join(f"{r.target!r} ({'checks passed' if r.ok else 'checks FAILED'})" for r in results)
    return f"restore stopped in collection {plan.target.name!r}{state}", f" (already restored: {done})" if done else ""


def _layout(
    choice: str, dataset: DatasetManifest, dest: str, source_kind: str, target_kind: str, reader: BundleReader
) -> tuple[layouts.Applied | None, DatasetDescription, str, str | None]:
    """The application layout a restore writes `dataset` in (``--layout`` `choice`), the description and
    name to plan the target with, and a note when a layout recorded at backup is restored raw (its
    framework's layout on the target is not known, or cannot hold these records: ``auto`` falls back, an
    explicit choice is refused)."""
    description = description_of(dataset)
    if dataset.kind != "vectors":
        return None, description, dest, None
    recorded = dataset.vectors_config().layout
    chosen = layouts.resolve(choice, recorded, source_kind, target_kind, dataset.name)
    if chosen is None:
        return None, description, dest, layouts.fallback_note(choice, recorded, source_kind, target_kind)
    try:
        chosen, description, dest = layouts.place(
            chosen, description, dest, renamed=dest != dataset.name, records=partial(reader.batches, dataset)
        )
    except UnsupportedFeatureError as exc:
        if choice != "auto":
            raise
        return None, description, dest, f"recorded in {chosen.framework}'s layout, restored raw: {exc}"
    return chosen, description, dest, None


@contextlib.contextmanager
def _chunks(repo: Repository, connector: Connector, bundle_id: str) -> Iterator[None]:
    """A target whose files travel as chunks (models) reads them from the repository's chunk store; a pack
    found missing or damaged there is recorded against `bundle_id` (reports.record_damage), as a part is."""
    if not isinstance(connector, ChunkedConnector):
        yield
        return

    def damaged(pack: str, problem: str) -> None:
        entry = {"bundle_id": bundle_id, "path": repo.storage.display(pack), "problem": problem}
        reports.record_damage(repo, bundle_id, [entry], found_by="restore")

    # Each file's sha256 proves its bytes. A damaged index file fails only the files whose chunks it alone
    # placed (the bundles backed up since it was damaged stored those chunks again: see ChunkIndex.load).
    index = ChunkIndex.load(repo, skip_damaged=True)
    reader = ChunkReader(repo, index, page_checksums=False, on_damage=damaged)
    connector.use_chunks(reader)
    try:
        yield
    finally:
        reader.close()


def _restore_one(
    connector: Connector,
    reader: BundleReader,
    dataset: DatasetManifest,
    plan: ImportPlan,
    check_options: CheckOptions | None,
    layout: layouts.Applied | None,
    load: partitioned_restore.Load | None,
    on: distributed.Cluster | None,
    target_uri: str,
    written: set[str],
) -> DatasetResult:
    """Load one collection (or publish what the cluster's workers loaded: `load`) and prove it (the record
    comparison of a partitioned one spread over the cluster too). Its name joins `written` once the import
    (or publication) completed, before the proof."""
    started = time.perf_counter()
    spread = None
    if load is not None:  # validated and loaded by the cluster's workers: published here
        assert on is not None and load.loss is not None
        loss = load.loss
        rows = load.publish(connector)
        plan = replace(plan, notes=(*plan.notes, load.note(on)))
        spread = load.proof(on, target_uri)
    else:
        # The loss is tallied on the import pass: a connector's mapping may depend on what its validation saw
        # (the config connector learns there which symlinks lead out and are left out).
        loss = LossTally(plan)
        rows = connector.import_(plan, loss.watch(prefetch(reader.batches(dataset))))
    written.add(plan.target.name)
    loaded = time.perf_counter()
    checks = prove(connector, plan, reader, dataset, check_options, layout, spread)
    if spread is not None:
        plan = replace(plan, notes=(*plan.notes, spread.note))
    return DatasetResult(
        name=dataset.name,
        target=plan.target.name,
        layout=layout.describe() if layout else "raw",
        rows=rows,
        dropped=plan.dropped,
        lost=loss.lines(),
        notes=plan.notes,
        load_seconds=loaded - started,
        check_seconds=time.perf_counter() - loaded,
        checks=checks,
    )


@contextlib.contextmanager
def _loads(
    on: distributed.Cluster | None,
    connector: Connector,
    jobs: list[tuple[DatasetManifest, ImportPlan]],
    reader: BundleReader,
    key_file: str | None,
    target_uri: str,
    bundle_id: str,
) -> Iterator[Mapping[str, partitioned_restore.Load]]:
    """The collections of `jobs` loaded by the cluster's workers (none without a cluster or jobs); an
    incremental chain's tombstones are read here, once (their parts re-hashed before)."""
    if on is None or not jobs:
        yield {}
        return
    load_check = bool(connector.options.get("load_check"))
    with partitioned_restore.loads(
        on,
        connector,
        jobs,
        repository=reader.repo.storage.url,
        key_file=key_file,
        target=target_uri,
        load_check=load_check,
        removed={d.name: reader.removed(d) for d, _ in jobs},
        bundle_id=bundle_id,
        opened=reader.repo,
    ) as made:
        yield made


def _refuse_unused(
    kinds: set[str], bundle_id: str, layout: str, load_check: bool, options: CheckOptions | None
) -> None:
    """UsageError for a setting of one kind of data asked of a restore whose collections hold none of it:
    it would be ignored, and the restore reported as if it applied (``strict``: the command line and the
    API; the drill's configured check options serve every source it tests, whatever its kind)."""
    options = options or CheckOptions()
    vector_only = {
        "--layout": layout != "auto",
        "--queries": options.queries is not None,
        "--min-recall": options.min_recall is not None,
        "--recall-tolerance": options.recall_tolerance != DEFAULT_TOLERANCE,
    }
    unused = [flag for flag, asked in vector_only.items() if asked and "vectors" not in kinds]
    unused += ["--load-check"] if load_check and "model" not in kinds else []
    if unused:
        holds = ", ".join(sorted(kinds)) or "nothing"
        raise UsageError(
            f"{', '.join(unused)}: not for what bundle {bundle_id} holds ({holds}); "
            "--load-check is for models, the others for vector collections"
        )


def _select(manifest: BundleManifest, pairs: list[tuple[str, str]]) -> list[tuple[DatasetManifest, str]]:
    if pairs:
        selected = []
        for src, dest in pairs:
            try:
                selected.append((manifest.dataset(src), dest))
            except KeyError:
                names = ", ".join(d.name for d in manifest.datasets)
                raise DatasetNotFoundError(
                    f"bundle {manifest.bundle_id} has no collection {src!r} (it has: {names})"
                ) from None
    else:
        selected = [(d, d.name) for d in manifest.datasets]
    for dataset, dest in selected:
        if dataset.kind != "vectors" and dest != dataset.name:
            raise UsageError(
                f"--collection {dataset.name}={dest}: a {dataset.kind} dataset is restored into the folder or "
                "table its target URI names; only vector collections can be renamed"
            )
        if dataset.kind not in KINDS:
            raise UsageError(
                f"collection {dataset.name!r} of bundle {manifest.bundle_id} is of kind {dataset.kind!r}, "
                "which this aibackup cannot restore: upgrade aibackup"
            )
    return selected


def _verify_before_writing(
    reader: BundleReader,
    repo: Repository,
    manifest: BundleManifest,
    datasets: list[DatasetManifest],
    spread: Sequence[DatasetManifest] = (),
) -> None:
    """Re-hash every part the selected datasets need (a chain's: every link's) and recompute each dataset's
    digest, before the target is opened: damage, or records that do not give the manifest's digest, are
    refused with nothing written. A dataset that is not a chain is digested part by part, each part once
    its hash is proven, while the next ones download (a remote repository's spool fetches ahead): the
    download and the decoding overlap. A chain's records are its links' less their tombstones: digested
    once every part is proven. The `spread` datasets' record parts are a partitioned restore's workers' to
    re-hash and digest: only their links' other parts (record indexes, tombstones) are re-hashed here."""
    others = [(d, p) for d in spread for p in d.all_parts() if p not in d.parts]
    reader.fetch_ahead([p for _, p in others] + [part for dataset in datasets for part in dataset.all_parts()])

    def refuse(where: str, problem: str, line: str) -> IntegrityError:
        """The error refusing the restore, once the damage is remembered (reports.record_damage)."""
        entry = {"bundle_id": manifest.bundle_id, "path": where, "problem": problem}
        reports.record_damage(repo, manifest.bundle_id, [entry], found_by="restore")
        return IntegrityError(line)

    def check(dataset: DatasetManifest, part: PartEntry) -> None:
        problem = reader.check_part(part, read_data=True)
        if problem:
            older = _older_without(repo, manifest, dataset.name, part.path)
            hint = f"; the newest earlier bundle of this source that does not read it: {older}" if older else ""
            raise refuse(
                repo.storage.display(part.path),
                problem,
                f"refusing to restore: {chain_problem(repo, manifest.bundle_id, dataset, part, problem)}; "
                f"nothing was written (run `aibackup verify --read-data`){hint}",
            )

    for dataset, part in others:
        check(dataset, part)
    for dataset in datasets:
        # Each record part digested once its hash is proven, two at a time, while the next ones download.
        digest = reader.dataset_digest(dataset, before=partial(check, dataset))
        if (digest.hexdigest, digest.rows) != (dataset.digest, dataset.rows):
            raise refuse(
                repo.storage.display(repo.manifest_path(manifest.bundle_id)),
                f"collection {dataset.name!r}: the records do not give the manifest's digest",
                f"refusing to restore: the records of collection {dataset.name!r} in bundle "
                f"{manifest.bundle_id} do not match its manifest's digest; nothing was written",
            )


def _refuse_target_in_repository(location: Location, repo: Repository) -> None:
    """UsageError for an embedded store or folder target inside a local repository (`--to chroma:REPO`):
    the store's files would lie among the bundles', where nothing expects them."""
    if location.path is None or not repo.storage.is_local:
        return
    root = Path(repo.storage.root)
    target = Path(os.path.expanduser(location.path)).resolve()
    if target == root or root in target.parents:
        raise UsageError(
            f"restore target {location.display()} is inside the repository {repo.storage.display()}: "
            "restore somewhere else"
        )


#: How many older bundles a refused restore looks through for one that does not read the damaged part.
OLDER_LOOKED_AT = 100


def _older(repo: Repository, manifest: BundleManifest) -> Iterator[BundleManifest]:
    """The bundles older than `manifest`, newest first, among the OLDER_LOOKED_AT before it (those that
    cannot be read are skipped: none is one to suggest)."""
    older = [b for b in repo.bundle_ids() if b < manifest.bundle_id][-OLDER_LOOKED_AT:]
    for bundle_id in reversed(older):
        try:
            yield repo.load(bundle_id)
        except AibackupError:
            continue


def _older_of_source(repo: Repository, manifest: BundleManifest) -> Iterator[BundleManifest]:
    """The bundles of `manifest`'s source among :func:`_older`."""
    source = (manifest.source.get("kind"), manifest.source.get("uri"))
    for candidate in _older(repo, manifest):
        if (candidate.source.get("kind"), candidate.source.get("uri")) == source:
            yield candidate


def _older_without(repo: Repository, manifest: BundleManifest, name: str, path: str) -> str | None:
    """The newest bundle of `manifest`'s source older than it that holds collection `name` and reads neither
    the part at `path` (the links of a chain share their parts, so the bundle just before may read it too)
    nor a part an earlier verify or restore found damaged: the one to try, as a manifest that cannot be read
    names the one before it. None when none of the OLDER_LOOKED_AT before it."""
    bad = reports.damaged_parts(repo) | {path}
    for candidate in _older_of_source(repo, manifest):
        holds = any(d.name == name for d in candidate.datasets)
        if holds and all(p.path not in bad for d in candidate.datasets for p in d.all_parts()):
            return candidate.bundle_id
    return None


def _refuse_other_kind(
    repo: Repository,
    manifest: BundleManifest,
    datasets: Sequence[DatasetManifest],
    target: str,
    kind: str,
    latest: bool,
) -> None:
    """UsageError when a collection of `datasets` holds another kind of data than `target` (of `kind`)
    takes. Where `latest` named the bundle (also with --at; not with --collection), the line names the
    newest bundle before it, among OLDER_LOOKED_AT, whose every collection `target` can take: in a
    repository of several sources the newest bundle may be another source's (last night's logs, not the
    vectors)."""
    other = next((d for d in datasets if d.kind != kind), None)
    if other is None:
        return
    line = f"collection {other.name!r} holds {other.kind}; {target} holds {kind}: restore it into a {other.kind} target"
    if latest:
        for candidate in _older(repo, manifest):
            if candidate.datasets and all(d.kind == kind for d in candidate.datasets):
                source = candidate.source.get("uri") or candidate.source.get("kind")
                line += f"; the newest bundle of {kind} is {candidate.bundle_id} (of {source}): restore it by its id"
                break
    raise UsageError(line)


def _partial_note(repo: Repository, manifest: BundleManifest) -> str | None:
    """A note when `latest` named a bundle that holds only the collections its backup was given
    (``backup --collection``): the others of its source are not restored, and the newest bundle of the whole
    source (if any of the OLDER_LOOKED_AT before it) is the one that holds them."""
    named = manifest.source.get("collections")
    if not named:
        return None
    whole = next((m.bundle_id for m in _older_of_source(repo, manifest) if "collections" not in m.source), None)
    where = (
        f"the newest bundle of all of them is {whole}: restore it by id (or give --collection)"
        if whole
        else "no earlier bundle holds all of them"
    )
    return (
        f"the latest bundle {manifest.bundle_id} holds only what `backup --collection` named "
        f"({', '.join(map(repr, named))}), not the source's other collections; {where}"
    )


def chain_problem(repo: Repository, bundle_id: str, dataset: DatasetManifest, part: PartEntry, problem: str) -> str:
    """One line for a damaged part: in a chain, which link it belongs to and which bundle needs it."""
    where = f"{repo.storage.display(part.path)}: {problem}"
    link = dataset.link_of(part)
    if dataset.chained and link is not None and link.bundle != bundle_id:
        return (
            f"broken chain: collection {dataset.name!r} of bundle {bundle_id} needs link {link.bundle}, and its "
            f"part {where}"
        )
    return where
