"""The unattended jobs: a nightly backup of every configured source, the monthly restore-test drill, and
the status a monitor polls. All read ``aibackup.yaml`` (aibackup.config) and leave reports in the
repository (aibackup.reports), so any machine can answer ``status`` and write metrics.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibackup import clock, reports
from aibackup.backup import SourceOptions, run_backup
from aibackup.config import Config, SourceConfig
from aibackup.connectors.base import VectorConnector
from aibackup.connectors.registry import connector_class, open_connector, parse_location
from aibackup.errors import AibackupError, ConfigError, IntegrityError, UsageError
from aibackup.golden import GoldenFile
from aibackup.golden import load as load_golden
from aibackup.golden import recall as golden_recall
from aibackup.manifests.baseline import GoldenBaseline
from aibackup.manifests.model import BundleManifest
from aibackup.progress import Progress, Quiet
from aibackup.proof import Check
from aibackup.recall_rule import DEFAULT_QUERIES, CheckOptions, judge
from aibackup.repository import Repository, parse_iso
from aibackup.restore import RestoreResult, run_restore

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
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "notes": self.notes,
        }


def backup_sources(
    config: Config, names: Sequence[str], progress: Progress | None = None, *, queries: int = DEFAULT_QUERIES
) -> list[SourceRun]:
    """Back up every named source (all when empty), each on its own: one failing source does not stop the
    others. Every run leaves a report in the repository (when the repository can be reached). `queries`:
    the search baseline's query records per dense vector (a source's golden queries are recorded too)."""
    report = progress or Quiet()
    runs: list[SourceRun] = []
    for source in _sources(config, names):
        started = time.perf_counter()
        options = SourceOptions(
            on_bad_line=source.on_bad_line,
            job_config=source.job_config,
            redact_secrets=source.redact_secrets,
            key_file=config.key_file,
            queries=queries,
            golden_queries=source.golden_queries,
        )
        try:
            result = run_backup(
                config.repository,
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
            own = [
                p
                for d in result.manifest.datasets
                for p in d.parts
                if p.path.startswith(f"data/{result.manifest.bundle_id}/")
            ]
            run = SourceRun(
                source.name,
                True,
                bundle_id=result.manifest.bundle_id,
                rows=sum(d.rows for d in result.manifest.datasets),
                new_rows=sum(p.rows for p in own),
                bytes=sum(p.bytes for p in own),
                seconds=result.seconds,
                notes=list(result.notes),
            )
        report.event("source_done", _summary(run), **run.to_json())
        _record(config, reports.BACKUPS, {"kind": "backup", "uri": source.uri, **run.to_json()})
        runs.append(run)
    return runs


def _summary(run: SourceRun) -> str:
    if run.ok:
        return f"{run.source}: bundle {run.bundle_id} ({run.rows} rows, {run.new_rows} new, {run.seconds:.1f} s)"
    return f"{run.source}: FAILED: {run.error}"


def _sources(config: Config, names: Sequence[str]) -> list[SourceConfig]:
    if not config.sources:
        raise ConfigError(f"{config.path}: no sources configured")
    return [config.source(n) for n in names] if names else list(config.sources.values())


def _record(config: Config, folder: str, report: dict[str, Any]) -> None:
    """Leave a report in the repository; a repository that cannot take it only loses history."""
    with contextlib.suppress(AibackupError, OSError):
        repo = Repository.find(config.repository)
        if repo is not None:
            reports.write(repo, folder, report)


# --- the monthly restore-test drill ---------------------------------------------------------------------


@dataclass
class DrillResult:
    """The restore test of one source: the bundle restored, every check, and the achieved RTO."""

    source: str
    ok: bool
    bundle_id: str | None
    target: str | None
    rto_seconds: float
    rto_objective_seconds: float | None
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    cleanup: str | None = None

    @property
    def rto_met(self) -> bool:
        return self.rto_objective_seconds is None or self.rto_seconds <= self.rto_objective_seconds

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "ok": self.ok,
            "bundle_id": self.bundle_id,
            "target": self.target,
            "rto_seconds": round(self.rto_seconds, 3),
            "rto_objective_seconds": self.rto_objective_seconds,
            "rto_met": self.rto_met,
            "checks": [c.to_json() for c in self.checks],
            "error": self.error,
            "cleanup": self.cleanup,
        }


def restore_test(config: Config, names: Sequence[str], progress: Progress | None = None) -> list[DrillResult]:
    """Restore the latest bundle of every source (or the named ones) into a scratch target, prove it, time
    it from start to verified against the source's RTO, clean up, and record the result."""
    report = progress or Quiet()
    repo = Repository.open(config.repository)
    results: list[DrillResult] = []
    for source in _sources(config, names):
        if source.restore_test_skip and not names:
            continue
        result = _drill(config, repo, source)
        state = "ok" if result.ok else "FAILED"
        report.event(
            "restore_test", f"{source.name}: restore test {state} in {result.rto_seconds:.1f} s", **result.to_json()
        )
        _record(config, reports.RESTORE_TESTS, {"kind": "restore-test", **result.to_json()})
        results.append(result)
    return results


def _drill(config: Config, repo: Repository, source: SourceConfig) -> DrillResult:
    started = time.perf_counter()
    objective = source.rto.total_seconds() if source.rto else None
    bundle: BundleManifest | None = None
    target: str | None = None
    options = CheckOptions(
        queries=config.restore_test.queries,
        min_recall=config.restore_test.min_recall,
        recall_tolerance=config.restore_test.recall_tolerance,
    )
    try:
        bundle = latest_bundle(repo, source)
        with _scratch(config, source) as target:
            result = run_restore(
                config.repository,
                bundle.bundle_id,
                target,
                source.collections,
                mode="overwrite",
                check_options=options,
                key_file=config.key_file,
            )
            checks = [c for d in result.datasets for c in _named(d.name, d.checks, len(result.datasets))]
            if source.golden_queries:
                checks += _golden(source.golden_queries, target, result, bundle, options)
            cleanup = _clean_scratch(config, source, target, result)
        seconds = time.perf_counter() - started
        ok = all(c.ok for c in checks) and (objective is None or seconds <= objective)
        return DrillResult(source.name, ok, bundle.bundle_id, target, seconds, objective, checks, cleanup=cleanup)
    except AibackupError as exc:
        problem = str(exc)
    except Exception as exc:  # a bug in one source's drill must not stop (nor hide) the others'
        problem = f"internal error: {type(exc).__name__} (a bug; please report it)"
    bundle_id = bundle.bundle_id if bundle else None
    return DrillResult(source.name, False, bundle_id, target, time.perf_counter() - started, objective, error=problem)


def _clean_scratch(config: Config, source: SourceConfig, target: str, result: RestoreResult) -> str:
    """Remove what the drill restored into a configured scratch target (a temporary one goes whole)."""
    name = source.restore_test_target or config.restore_test.target
    if name is None or config.targets[name].uri != target:
        return "temporary scratch store removed"
    with open_connector(target, target=True) as connector:
        dropped = [d.target for d in result.datasets if connector.drop(d.target)]
    if len(dropped) == len(result.datasets):
        return f"restored collections removed from {name}"
    return f"the restored data stays in {name} ({target}): this kind of target cannot drop it"


def _named(dataset: str, checks: list[Check], datasets: int) -> list[Check]:
    """Check names prefixed by their dataset when a source holds several."""
    return checks if datasets == 1 else [Check(f"{dataset}: {c.name}", c.ok, c.detail) for c in checks]


def of_source(manifest: BundleManifest, source: SourceConfig) -> bool:
    """Whether a bundle was made from this configured source: its store, holding its collections."""
    names = {d.name for d in manifest.datasets}
    return manifest.source.get("uri") == parse_location(source.uri).display() and set(source.collections) <= names


def latest_bundle(repo: Repository, source: SourceConfig) -> BundleManifest:
    """The newest bundle of a configured source. IntegrityError when a newer manifest cannot be read: it
    may be this source's newest bundle, and a drill must test the latest one, not quietly an older one."""
    good, damaged = repo.scan()
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


@contextlib.contextmanager
def _scratch(config: Config, source: SourceConfig) -> Iterator[str]:
    """The target to restore into: the configured scratch target if it holds this kind of data, else a
    temporary embedded store or folder of the source's own kind, removed afterwards."""
    kind = connector_class(parse_location(source.uri).kind).dataset_kind
    name = source.restore_test_target or config.restore_test.target
    if name is not None:
        target = config.targets[name].uri
        if connector_class(parse_location(target, target=True).kind).dataset_kind == kind:
            yield target
            return
    scheme = parse_location(source.uri).scheme.split("+")[0]
    folder = Path(tempfile.mkdtemp(prefix=f"aibackup-drill-{source.name}-"))
    try:
        if parse_location(source.uri).scheme == "conversations+sqlite":
            yield f"conversations+sqlite:{folder / 'restored.db'}?table={parse_location(source.uri).params['table']}"
        else:
            yield f"{scheme}:{folder / scheme}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _golden(
    path: str, target: str, result: RestoreResult, bundle: BundleManifest, options: CheckOptions
) -> list[Check]:
    """The source's golden queries against the restored target, one check per collection: their recall
    compared with the source's own at backup (the bundle's baseline, while the file is unchanged), else
    with the absolute minimum."""
    try:
        golden = load_golden(path)
    except AibackupError as exc:
        return [Check("golden queries", False, str(exc))]
    names = {d.name: d.target for d in result.datasets}
    collections = golden.collections()
    checks = []
    with open_connector(target, target=True) as connector:
        if not isinstance(connector, VectorConnector):
            return [Check("golden queries", False, "golden queries need a vector source")]
        for collection in collections:
            name = "golden queries" if len(collections) == 1 else f"{collection}: golden queries"
            queries = golden.of(collection)
            try:
                got = golden_recall(connector, names.get(collection, collection), queries)
            except AibackupError as exc:
                checks.append(Check(name, False, f"search failed: {exc}"))
                continue
            checks.append(_golden_check(name, got, len(queries), _golden_baseline(bundle, collection, golden), options))
    return checks


def _golden_baseline(bundle: BundleManifest, collection: str, golden: GoldenFile) -> GoldenBaseline | str:
    """The source's recall of these golden queries at backup, or why there is none to compare with."""
    try:
        baseline = bundle.dataset(collection).baseline
    except KeyError:
        return f"bundle {bundle.bundle_id} holds no collection {collection!r}"
    if baseline is None or baseline.golden is None:
        return "the bundle recorded no golden baseline (a backup without the config, or before aibackup 0.3.0)"
    if baseline.golden.sha256 != golden.sha256:
        return "the golden file changed since the backup"
    return baseline.golden


def _golden_check(name: str, got: float, n: int, baseline: GoldenBaseline | str, options: CheckOptions) -> Check:
    if isinstance(baseline, str):
        verdict = judge(got, None, options)
        detail = f"recall {got:.3f} over {n} golden queries ({verdict.words}); {baseline}"
        measures = {"rule": verdict.rule, "recall": round(got, 6), "needs": verdict.needs, "queries": n}
        return Check(name, verdict.ok, detail, measures)
    verdict = judge(got, baseline.recall, options)
    detail = (
        f"recall {got:.3f}, the source's {baseline.recall:.3f} at backup, over {n} golden queries ({verdict.words})"
    )
    measures = {
        "rule": verdict.rule,
        "recall": round(got, 6),
        "source_recall": baseline.recall,
        "needs": verdict.needs,
        "queries": n,
    }
    return Check(name, verdict.ok, detail, measures)


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

    def to_json(self) -> dict[str, object]:
        test = self.last_restore_test or {}
        return {
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
            "last_backup": None
            if not self.last_backup
            else {k: self.last_backup.get(k) for k in ("ok", "recorded_at", "bundle_id", "error", "seconds")},
        }


def status(config: Config) -> list[SourceStatus]:
    """Per configured source: its newest bundle that checks out (manifest readable, every part present with
    its size), the bundle's age against the RPO, the last restore test and the last backup run."""
    from aibackup.bundle import BundleReader

    repo = Repository.open(config.repository)
    now = clock.now()
    good, _damaged = repo.scan()
    reader = BundleReader(repo)
    names = list(config.sources)
    tests = reports.latest_by_source(repo, reports.RESTORE_TESTS, names)
    backups = reports.latest_by_source(repo, reports.BACKUPS, names)
    good_backups = reports.latest_by_source(repo, reports.BACKUPS, names, lambda doc: bool(doc.get("ok")))
    out: list[SourceStatus] = []
    for source in config.sources.values():
        uri = parse_location(source.uri).display()
        newest: BundleManifest | None = None
        for manifest in reversed(good):
            if not of_source(manifest, source):
                continue
            parts = [p for d in manifest.datasets for p in d.parts]
            if not any(reader.check_part(p, read_data=False) for p in parts):
                newest = manifest
                break
        age = None
        if newest is not None:
            created = parse_iso(newest.created_at)
            age = (now - created).total_seconds()
        rpo = source.rpo.total_seconds() if source.rpo else None
        # No intact bundle at all is a breach whatever the RPO: there is nothing to restore.
        breached = age is None or (rpo is not None and age > rpo)
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
            )
        )
    return out


def record_verify(repo_url: str, bundle_ids: list[str], ok: bool, problems: list[dict[str, str]]) -> None:
    """Remember a `verify --read-data` (best effort: a read-only repository only loses the history)."""
    with contextlib.suppress(AibackupError, OSError):
        repo = Repository.open(repo_url)
        reports.write(repo, reports.VERIFY, {"kind": "verify", "ok": ok, "bundles": bundle_ids, "problems": problems})
