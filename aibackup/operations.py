"""The unattended jobs: a nightly backup of every configured source, and the status a monitor polls (the
monthly restore-test drill: aibackup.drill). All read ``aibackup.yaml`` (aibackup.config) and leave
reports in the repository (aibackup.reports), so any machine can answer ``status`` and write metrics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aibackup import clock, reports
from aibackup.backup import SourceOptions, run_backup
from aibackup.config import Config, CopyConfig, SourceConfig
from aibackup.connectors.registry import parse_location
from aibackup.errors import (
    EXIT_INTERNAL,
    AibackupError,
    ConfigError,
    IntegrityError,
    UnavailableError,
    UsageError,
    first_line,
)
from aibackup.manifests.model import BundleManifest
from aibackup.progress import Progress, Quiet
from aibackup.recall_rule import DEFAULT_QUERIES
from aibackup.repository import MAX_CLOCK_STEP_BACK, Repository, Scan, parse_iso

# --- nightly backup of every source ---------------------------------------------------------------------


@dataclass
class SourceRun:
    """One source of a config-driven backup: its bundle, or why it failed."""

    source: str
    ok: bool
    bundle_id: str | None = None
    rows: int = 0
    new_rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "ok": self.ok,
            "bundle_id": self.bundle_id,
            "rows": self.rows,
            "new_rows": self.new_rows,
            "bytes": self.bytes,
            "new_bytes": self.bytes,  # the bytes this run wrote (an incremental run: the change only)
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "notes": self.notes,
        }


@dataclass
class CopyRun:
    """The copy of a config-driven backup's new bundles into one of the config's ``copies``."""

    repository: str
    ok: bool
    copied: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    #: Parts the copy had found damaged, copied again (aibackup.copy).
    repaired: list[str] = field(default_factory=list)
    #: Master key generations the copy took from the source (rotated there since).
    generations_added: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "repository": self.repository,
            "ok": self.ok,
            "copied": self.copied,
            "repaired": self.repaired,
            "generations_added": self.generations_added,
            "failed": self.failed,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class SourcesResult:
    """A config-driven backup: one run per source, then one copy per configured second repository; ``ok``
    when every source was backed up and every new bundle copied."""

    runs: list[SourceRun]
    copies: list[CopyRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs) and all(c.ok for c in self.copies)

    @property
    def exit_code(self) -> int:
        """The command's exit code: the first failed source's, else the first failed copy's, else 0."""
        failed = [(r.exit_code, r.ok) for r in self.runs if not r.ok] + [
            (c.exit_code, c.ok) for c in self.copies if not c.ok
        ]
        return (failed[0][0] or IntegrityError.exit_code) if failed else 0

    def to_json(self) -> dict[str, object]:
        """The `backup --json` document without SOURCE: ok, sources [...] and copies [...]."""
        return {
            "ok": self.ok,
            "sources": [r.to_json() for r in self.runs],
            "copies": [c.to_json() for c in self.copies],
        }


def backup_sources(
    config: Config,
    names: Sequence[str],
    progress: Progress | None = None,
    *,
    queries: int = DEFAULT_QUERIES,
    repo: Repository | None = None,
    full: bool = False,
    full_every: int | None = None,
    workers: int | None = None,
    dask: str | None = None,
    allow_lossy: bool = False,
) -> SourcesResult:
    """Back up every named source (all when empty), each on its own: one failing source does not stop the
    others. Every run leaves a report in the repository (when the repository can be reached). `queries`:
    the search baseline's query records per dense vector (a source's golden queries are recorded too).
    `repo`: the config's repository, already opened (else its URL is used, and created when missing).
    `full`, `full_every` (vectors): every backup full; the most incremental links after a full one, over
    each source's ``full_every``. `workers`, `dask` (over the config's ``dask``): a partitioned backup
    (aibackup.distributed). `allow_lossy`: every source's, whatever its ``allow_lossy``."""
    report = progress or Quiet()
    runs: list[SourceRun] = []
    for source in sources_of(config, names):
        started = time.perf_counter()
        options = SourceOptions(
            on_bad_line=source.on_bad_line,
            job_config=source.job_config,
            redact_secrets=source.redact_secrets,
            key_file=config.key_file,
            queries=queries,
            golden_queries=source.golden_queries,
            full=full,
            full_every=source.full_every if full_every is None else full_every,
            workers=workers,
            dask=dask if dask is not None or workers is not None else config.dask,
            allow_lossy=allow_lossy or source.allow_lossy,
        )
        try:
            result = run_backup(
                repo if repo is not None else config.repository,
                source.uri,
                source.collections,
                source_options=options,
                progress=report,
                lock_stale_after=config.lock_stale_after,
            )
        except AibackupError as exc:
            run = SourceRun(
                source.name, False, seconds=time.perf_counter() - started, error=str(exc), exit_code=exc.exit_code
            )
        else:
            mine = f"data/{result.manifest.bundle_id}/"
            datasets = result.manifest.datasets
            run = SourceRun(
                source.name,
                True,
                bundle_id=result.manifest.bundle_id,
                rows=sum(d.rows for d in datasets),
                new_rows=sum(p.rows for d in datasets for p in d.parts if p.path.startswith(mine)),
                bytes=sum(result.outcome(d).new_bytes for d in datasets),
                seconds=result.seconds,
                notes=list(result.notes),
            )
        report.event("source_done", _summary(run), **run.to_json())
        record_report(config, reports.BACKUPS, {"kind": "backup", "uri": source.uri, **run.to_json()}, repo)
        runs.append(run)
    # Every night, also one whose sources all failed: a copy that failed before catches up.
    tonight = [r.bundle_id for r in runs if r.bundle_id]
    return SourcesResult(runs, [copy_bundles(config, c, repo, report, tonight) for c in config.copies])


def copy_bundles(
    config: Config, copy: CopyConfig, repo: Repository | None, report: Progress, tonight: Sequence[str] = ()
) -> CopyRun:
    """Copy into `copy`'s repository the bundles `tonight` (this run's) and every bundle it lacks that is
    newer than its newest of the same series (those of nights whose copy failed; not those the copy's own
    prune removed: aibackup.copy.run_copy's `since_newest`); never raises (a copy that cannot be made is a
    failed CopyRun, the backups themselves stand)."""
    from aibackup.copy import run_copy

    started = time.perf_counter()
    try:
        source = repo if repo is not None else Repository.open(config.repository, key_file=config.key_file)
        done = run_copy(
            source,
            copy.repository,
            key_file=config.key_file,
            to_key_file=copy.key_file,
            since_newest=True,
            tonight=tonight,
        )
    except AibackupError as exc:
        run = CopyRun(
            copy.repository, False, seconds=time.perf_counter() - started, error=str(exc), exit_code=exc.exit_code
        )
    except Exception as exc:  # a bug in the copy must not hide the night's backups, which stand
        run = CopyRun(
            copy.repository,
            False,
            seconds=time.perf_counter() - started,
            error=f"internal error: {type(exc).__name__}: {first_line(exc)} (a bug; please report it)",
            exit_code=EXIT_INTERNAL,
        )
    else:
        failed = [{"bundle_id": b, "problem": p} for b, p in done.failed]
        run = CopyRun(
            copy.repository,
            done.ok,
            done.copied,
            failed,
            done.bytes,
            done.seconds,
            repaired=done.repaired,
            generations_added=done.generations_added,
        )
        run.exit_code = 0 if done.ok else IntegrityError.exit_code
        if done.error is not None:  # stopped part-way: what landed is listed, and why the rest did not
            run.error, run.exit_code = str(done.error), done.error.exit_code
    report.event("copy_done", f"copy to {copy.repository}: {'ok' if run.ok else 'FAILED'}", **run.to_json())
    return run


def _summary(run: SourceRun) -> str:
    if run.ok:
        return f"{run.source}: bundle {run.bundle_id} ({run.rows} rows, {run.new_rows} new, {run.seconds:.1f} s)"
    return f"{run.source}: FAILED: {run.error}"


def sources_of(config: Config, names: Sequence[str]) -> list[SourceConfig]:
    if not config.sources:
        raise ConfigError(f"{config.path}: no sources configured")
    return [config.source(n) for n in names] if names else list(config.sources.values())


def record_report(
    config: Config, folder: str, report: dict[str, Any], repo: Repository | None = None
) -> AibackupError | None:
    """Leave a report in the repository; returns why it could not be (None: recorded). A backup's report
    lost only loses history (its bundle says the rest); a drill's is what `status` shows of it, so the
    drill says so (:func:`aibackup.drill.restore_test`)."""
    try:
        if repo is None and (found := Repository.find(config.repository)) is not None:
            repo = found.with_key_file(config.key_file)  # an encrypted repository seals its reports
        if repo is not None:
            reports.write(repo, folder, report)
    except AibackupError as exc:
        return exc
    except OSError as exc:
        return UnavailableError(f"cannot write a report into {config.repository}: {exc.strerror or exc}")
    return None


def of_source(manifest: BundleManifest, source: SourceConfig) -> bool:
    """Whether a bundle was made from this configured source: its store, holding its collections; for a
    source of the whole store, a bundle of the whole store (one of a few collections by name, `backup
    --collection docs` by hand, holds nothing of the others and must not pass for their newest backup)."""
    if manifest.source.get("uri") != parse_location(source.uri).display():
        return False
    if not source.collections:
        return "collections" not in manifest.source
    return set(source.collections) <= {d.name for d in manifest.datasets}


def latest_bundle(repo: Repository, source: SourceConfig, scanned: Scan | None = None) -> BundleManifest:
    """The newest bundle of a configured source (`scanned`: the repository's :meth:`Repository.scan`, where
    the caller asks of several sources). IntegrityError when a newer manifest cannot be read: it may be this
    source's newest bundle, and a drill must test the latest one, not quietly an older one."""
    good, damaged = scanned if scanned is not None else repo.scan()
    for manifest in reversed(good):
        if of_source(manifest, source):
            newer = [d for d in damaged if d.bundle_id > manifest.bundle_id]
            if newer:
                raise IntegrityError(
                    f"bundle {newer[-1].bundle_id}, newer than {manifest.bundle_id}, cannot be read "
                    f"({newer[-1].problem}); the drill does not fall back to an older bundle"
                )
            return manifest
    where = parse_location(source.uri).display()
    raise UsageError(f"source {source.name!r} ({where}) has no bundle in {repo.storage.display()} yet")


# --- status ----------------------------------------------------------------------------------------------


@dataclass
class SourceStatus:
    source: str
    uri: str
    rpo_seconds: float | None
    newest_bundle: str | None
    newest_created_at: str | None
    age_seconds: float | None
    verified: bool
    rpo_breached: bool
    last_restore_test: dict[str, Any] | None
    last_backup: dict[str, Any] | None
    last_successful_backup: dict[str, Any] | None = None
    #: Per configured copy: {"repository", "newest_bundle", "age_seconds", "rpo_breached", "error"}; a copy
    #: that falls behind breaches the source's RPO as the repository itself would.
    copies: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        test = self.last_restore_test or {}
        return {
            "copies": self.copies,
            "source": self.source,
            "uri": self.uri,
            "newest_bundle": self.newest_bundle,
            "newest_created_at": self.newest_created_at,
            "age_seconds": None if self.age_seconds is None else round(self.age_seconds, 1),
            "rpo_seconds": self.rpo_seconds,
            "rpo_breached": self.rpo_breached,
            "verified": self.verified,
            "last_restore_test": None
            if not test
            else {
                "ok": test.get("ok"),
                "at": test.get("recorded_at"),
                "bundle_id": test.get("bundle_id"),
                "rto_seconds": test.get("rto_seconds"),
                "rto_objective_seconds": test.get("rto_objective_seconds"),
            },
            "last_backup": _run_json(self.last_backup),
            # What the table's LAST RUN WROTE shows: the last run that succeeded, while a later one fails.
            "last_successful_backup": _run_json(self.last_successful_backup),
        }


def _run_json(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """A backup run's report as `status --json` shows it."""
    if not run:
        return None
    return {
        k: run.get(k) for k in ("ok", "recorded_at", "bundle_id", "error", "seconds", "rows", "new_rows", "new_bytes")
    }


@dataclass
class StatusReport:
    """Every configured source's status; ``ok`` when no source breaches its RPO."""

    sources: list[SourceStatus]

    @property
    def ok(self) -> bool:
        return not any(s.rpo_breached for s in self.sources)

    def to_json(self) -> dict[str, object]:
        """The `status --json` document: ok and sources [...]."""
        return {"ok": self.ok, "sources": [s.to_json() for s in self.sources]}


def status(config: Config, repo: Repository | None = None, *, readable: bool = True) -> list[SourceStatus]:
    """Per configured source: its newest bundle that checks out (manifest readable, every part present with
    its size), the bundle's age against the RPO, the last restore test and the last backup run. Not
    `readable` (the repository out of reach): nothing of the repository, every source with an RPO breached,
    and each copy's view as usual."""
    from aibackup.bundle_reader import BundleReader

    now = clock.now()
    good: Sequence[BundleManifest] = []
    reader: BundleReader | None = None
    tests: dict[str, dict[str, Any]] = {}
    backups: dict[str, dict[str, Any]] = {}
    good_backups: dict[str, dict[str, Any]] = {}
    if readable:
        repo = repo or Repository.open(config.repository, key_file=config.key_file)
        good, _damaged = repo.scan()
        reader = BundleReader(repo)
        names = list(config.sources)
        tests = reports.latest_by_source(repo, reports.RESTORE_TESTS, names)
        backups = reports.latest_by_source(repo, reports.BACKUPS, names)
        good_backups = reports.latest_by_source(repo, reports.BACKUPS, names, lambda doc: bool(doc.get("ok")))
    copies = [_copy_view(config, copy) for copy in config.copies]
    out: list[SourceStatus] = []
    for source in config.sources.values():
        uri = parse_location(source.uri).display()
        newest = _newest_intact(good, reader, source) if reader is not None else None
        age = None if newest is None else (now - parse_iso(newest.created_at)).total_seconds()
        rpo = source.rpo.total_seconds() if source.rpo else None
        breached = _breached(age, rpo) or not readable
        in_copies = []
        for copy, view in zip(config.copies, copies, strict=True):
            entry = _copy_status(copy, view, source, now, rpo)
            breached = breached or entry["rpo_breached"]
            in_copies.append(entry)
        out.append(
            SourceStatus(
                source=source.name,
                uri=uri,
                rpo_seconds=rpo,
                newest_bundle=newest.bundle_id if newest else None,
                newest_created_at=newest.created_at if newest else None,
                age_seconds=age,
                verified=newest is not None,
                rpo_breached=breached,
                last_restore_test=tests.get(source.name),
                last_backup=backups.get(source.name),
                last_successful_backup=good_backups.get(source.name),
                copies=in_copies,
            )
        )
    return out


def _newest_intact(good: Sequence[BundleManifest], reader: Any, source: SourceConfig) -> BundleManifest | None:
    """The newest bundle of `source` among `good` (oldest first) whose every part is there with its size,
    and, for model files, every chunk pack they need (aibackup.chunkprune.absent_packs)."""
    from aibackup.chunkprune import absent_packs
    from aibackup.chunks import ChunkIndex

    index: ChunkIndex | None = None
    present: dict[str, bool] = {}

    def stored(pack: str) -> bool:
        if pack not in present:
            present[pack] = reader.repo.storage.exists(pack)
        return present[pack]

    for manifest in reversed(good):
        if not of_source(manifest, source):
            continue
        parts = [p for d in manifest.datasets for p in d.all_parts()]
        if any(reader.check_part(p, read_data=False) for p in parts):
            continue
        if any(d.kind == "model" for d in manifest.datasets):
            try:
                # A damaged index file: the bundles whose chunks it alone places do not restore, the others do.
                index = index if index is not None else ChunkIndex.load(reader.repo, skip_damaged=True)
            except AibackupError:
                continue  # a chunk index that cannot be listed or read: no model bundle restores
            if absent_packs(reader.repo, manifest, index, stored):
                continue
        return manifest
    return None


def _copy_view(config: Config, copy: CopyConfig) -> tuple[Any, Any] | str:
    """A copy's manifests and part reader, or why it cannot be read (unreachable, no repository, no key)."""
    from aibackup.bundle_reader import BundleReader

    try:
        repo = Repository.open(copy.repository)
        repo.use_key(repo.key(copy.key_file or config.key_file))
        good, _damaged = repo.scan()
        return good, BundleReader(repo)
    except AibackupError as exc:
        return str(exc)


def _copy_status(
    copy: CopyConfig, view: tuple[Any, Any] | str, source: SourceConfig, now: Any, rpo: float | None
) -> dict[str, Any]:
    """One source's newest intact bundle in one copy, against the source's RPO."""
    entry: dict[str, Any] = {"repository": copy.repository, "newest_bundle": None, "age_seconds": None}
    if isinstance(view, str):
        return entry | {"rpo_breached": True, "error": view}
    newest = _newest_intact(view[0], view[1], source)
    age = None if newest is None else (now - parse_iso(newest.created_at)).total_seconds()
    entry |= {"newest_bundle": newest.bundle_id if newest else None, "age_seconds": age, "error": None}
    return entry | {"rpo_breached": _breached(age, rpo)}


def _breached(age: float | None, rpo: float | None) -> bool:
    """Whether a newest bundle of this age (None: there is none) breaches the RPO. No intact bundle at all
    is a breach whatever the RPO: there is nothing to restore. So is one dated further past this machine's
    clock than a backup tolerates: every next backup is refused until the clock is fixed, while its age
    would read as fresh."""
    if age is None or -age > MAX_CLOCK_STEP_BACK.total_seconds():
        return True
    return rpo is not None and age > rpo
