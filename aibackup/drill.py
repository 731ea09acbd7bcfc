"""The monthly restore-test drill: the latest bundle of every configured source restored into a scratch
target, proven (the checks of a restore and the source's golden queries), timed against the source's RTO,
cleaned up, and recorded in the repository (aibackup.reports) for ``status``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aibackup import reports, spool
from aibackup.config import Config, SourceConfig
from aibackup.connectors.base import VectorConnector
from aibackup.connectors.registry import connector_class, open_connector, parse_location
from aibackup.errors import AibackupError, NotARepositoryError, UnavailableError
from aibackup.golden import GoldenFile
from aibackup.golden import load as load_golden
from aibackup.golden import recalls as golden_recalls
from aibackup.manifests.baseline import GoldenBaseline
from aibackup.manifests.model import BundleManifest
from aibackup.operations import latest_bundle, record_report, sources_of
from aibackup.progress import Progress, Quiet
from aibackup.proof import Check
from aibackup.recall_rule import CheckOptions, judge
from aibackup.repository import Repository, Scan
from aibackup.restore import RestoreResult, run_restore
from aibackup.storage import same_place

#: The drill's temporary scratch stores are folders named so in the system's temporary folder.
SCRATCH_PREFIX = "aibackup-drill-"


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
    repository: str | None = None  # the copy tested (``restore_test.repository``); None: the repository
    #: What the result does not say by itself: a tested copy behind the repository (its newest bundle older).
    note: str | None = None

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
            "repository": self.repository,
            "note": self.note,
        }


@dataclass
class DrillReport:
    """The drill of every source tested: ``ok`` when every check passed and every RTO was met."""

    results: list[DrillResult]
    #: Why a result could not be recorded in the repository, where `status` reads it (None: all were).
    unrecorded: AibackupError | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict[str, Any]:
        """The `restore-test --json` document (and PATH.json): ok and sources [...]."""
        return {"ok": self.ok, "sources": [r.to_json() for r in self.results]}

    def markdown(self) -> str:
        """The report as Markdown (what ``restore-test`` prints, and PATH.md)."""
        return _markdown(self.to_json())

    def write(self, path: str) -> None:
        """PATH.md and PATH.json (a PATH already ending in .md or .json names the pair too)."""
        doc = self.to_json()
        base = path.removesuffix(".md") if path.endswith(".md") else path.removesuffix(".json")
        try:
            Path(base).parent.mkdir(parents=True, exist_ok=True)
            Path(base + ".json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            Path(base + ".md").write_text(_markdown(doc), encoding="utf-8")
        except OSError as exc:
            raise UnavailableError(f"cannot write the report {path}: {exc.strerror}") from None


def restore_test(
    config: Config,
    names: Sequence[str],
    progress: Progress | None = None,
    *,
    repo: Repository | None = None,
    cannot_open: AibackupError | None = None,
) -> DrillReport:
    """Restore the latest bundle of every source (or the named ones) into a scratch target, prove it, time
    it from start to verified against the source's RTO, clean up, and record the result. `repo`: the
    config's repository, already opened (None: opened here, unless `cannot_open` says why it could not be).

    The drill of a copy (``restore_test: {repository: COPY}``) runs when the repository cannot be opened
    (its region down, its bucket lost): that is what it proves. Its results then cannot be recorded, which
    ``unrecorded`` says."""
    report = progress or Quiet()
    unrecorded: AibackupError | None = None
    if repo is None and cannot_open is None:
        try:
            repo = Repository.open(config.repository, key_file=config.key_file)
        except AibackupError as exc:
            cannot_open = exc
    if repo is None:
        assert cannot_open is not None
        if config.restore_test.repository is None:
            raise cannot_open
        unrecorded = _not_recorded(config.repository, cannot_open)
    results: list[DrillResult] = []
    unopened: str | None = None  # why the copy to test could not be opened
    try:
        tested, key_file = _tested_repository(config, repo)
    except AibackupError as exc:
        # The copy out of reach (its region down), gone or refusing the key is what a drill of it is there to
        # find: each source's drill fails, recorded (it was one error line, and status and the metrics went on
        # showing the drill before as the last).
        tested, key_file, unopened = None, None, f"cannot open the copy {config.restore_test.repository!r}: {exc}"
    primary: Callable[[], Scan] | None = None if repo is None else functools.cache(repo.scan)  # once, for _behind
    for source in sources_of(config, names):
        if source.restore_test_skip and not names:
            continue
        if tested is None:
            objective = source.rto.total_seconds() if source.rto else None
            result = DrillResult(source.name, False, None, None, 0.0, objective, error=unopened)
        else:
            result = _drill(config, tested, source, key_file)
        if tested is not repo:
            result.repository = config.restore_test.repository
            result.note = None if repo is None or primary is None else _behind(repo, source, result.bundle_id, primary)
        state = "ok" if result.ok else "FAILED"
        report.event(
            "restore_test", f"{source.name}: restore test {state} in {result.rto_seconds:.1f} s", **result.to_json()
        )
        if repo is not None:
            doc = {"kind": "restore-test", **result.to_json()}
            problem = record_report(config, reports.RESTORE_TESTS, doc, repo)
            if problem is not None and unrecorded is None:
                unrecorded = _not_recorded(repo.storage.display(), problem)
        results.append(result)
    return DrillReport(results, unrecorded)


def _not_recorded(where: str, problem: AibackupError) -> UnavailableError:
    # Not the missing repository's own advice (`aibackup init` there would make an empty one where the real
    # repository is only out of reach).
    why = "no repository there" if isinstance(problem, NotARepositoryError) else str(problem)
    return UnavailableError(
        f"the restore test's result was not recorded in {where} (status goes on showing the one before): {why}"
    )


def _tested_repository(config: Config, repo: Repository | None) -> tuple[Repository, str | None]:
    """The repository the drill restores from, and its key file: a configured copy when ``restore_test``
    names one (its own key file, when the copy has one), else the repository itself (`repo`: not None then).
    The reports go to the repository either way (``status`` reads them there)."""
    where = config.restore_test.repository
    if where is None:
        assert repo is not None, "the repository itself is drilled: it was opened"
        return repo, config.key_file
    copy = next((c for c in config.copies if same_place(c.repository, where)), None)  # however spelled
    key_file = (copy.key_file if copy is not None else None) or config.key_file
    return Repository.open(where, key_file=key_file), key_file


def _behind(repo: Repository, source: SourceConfig, tested: str | None, scanned: Callable[[], Scan]) -> str | None:
    """Why a drill of a copy proved less than it seems: the repository holds a newer bundle of `source` than
    the one the copy had (`tested`); None when it does not, or cannot be read (its key elsewhere). `scanned`
    gives the repository's scan, read once for every source."""
    if tested is None:
        return None
    try:
        newest = latest_bundle(repo, source, scanned()).bundle_id
    except AibackupError:
        return None
    if newest <= tested:
        return None
    return (
        f"the copy is behind: it holds {tested}, the repository a newer bundle of this source, {newest} "
        "(not copied yet: `aibackup status` shows the copy against the RPO)"
    )


def _drill(config: Config, repo: Repository, source: SourceConfig, key_file: str | None) -> DrillResult:
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
                repo,
                bundle.bundle_id,
                target,
                source.collections,
                mode="overwrite",
                check_options=options,
                key_file=key_file,
                dask=config.dask,  # timed as an incident restore on the same cluster would run
            )
            checks = [c for d in result.datasets for c in _named(d.name, d.checks, len(result.datasets))]
            if source.golden_queries:
                checks += _golden(source.golden_queries, target, result, bundle, options)
            # The RTO runs from the start to a proven restore: removing the drill's scratch store afterwards
            # is no part of an incident's recovery (a large one took seconds and failed a met RTO).
            seconds = time.perf_counter() - started
            cleanup = _clean_scratch(config, source, target, result)
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
    return checks if datasets == 1 else [replace(c, name=f"{dataset}: {c.name}") for c in checks]


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
    # A drill killed outright (kill -9, the OOM killer) cannot remove its scratch store, a whole restored
    # copy of the source: the next drill removes every one whose owner died, as spools are swept.
    parent = tempfile.gettempdir()
    spool.sweep_dead(parent, SCRATCH_PREFIX)
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{source.name}-", dir=parent))
    owner = spool.own(str(folder))
    try:
        if parse_location(source.uri).scheme == "conversations+sqlite":
            yield f"conversations+sqlite:{folder / 'restored.db'}?table={parse_location(source.uri).params['table']}"
        else:
            yield f"{scheme}:{folder / scheme}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if owner is not None:
            owner.close()  # after the folder is gone: a sweep never sees it unlocked while it is in use


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
                got = golden_recalls(connector, names.get(collection, collection), queries)
            except AibackupError as exc:
                checks.append(Check(name, False, f"search failed: {exc}"))
                continue
            checks.append(_golden_check(name, got, _golden_baseline(bundle, collection, golden), options))
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


def _golden_check(name: str, got: Sequence[float], baseline: GoldenBaseline | str, options: CheckOptions) -> Check:
    """The golden queries' verdict from the target's recall of each (`got`, in the file's order)."""
    n = len(got)
    mean = float(np.mean(got)) if n else 1.0
    if isinstance(baseline, str):
        verdict = judge(mean, None, options)
        detail = f"recall {mean:.3f} over {n} golden queries ({verdict.words}); {baseline}"
        measures = {"rule": verdict.rule, "recall": round(mean, 6), "needs": verdict.needs, "queries": n}
        return Check(name, verdict.ok, detail, measures)
    noise = _golden_noise(got, baseline)
    verdict = judge(mean, baseline.recall, options, noise=noise)
    detail = (
        f"recall {mean:.3f}, the source's {baseline.recall:.3f} at backup, over {n} golden queries ({verdict.words})"
    )
    measures = {
        "rule": verdict.rule,
        "recall": round(mean, 6),
        "source_recall": baseline.recall,
        "needs": verdict.needs,
        "standard_error": round(noise, 6),
        "queries": n,
    }
    return Check(name, verdict.ok, detail, measures)


def _golden_noise(got: Sequence[float], baseline: GoldenBaseline) -> float:
    """The standard error of the difference between the target's mean recall and the source's: from the
    per-query differences where the bundle recorded the source's recall of each query; else (bundles
    before that) at most sqrt(2) times the target's own per-query spread over sqrt(n), since the source's
    recall of a query is another draw of the same build-to-build noise (an overestimate, which keeps a
    perfect restore from failing and widens the allowance, as the detail then says)."""
    n = len(got)
    if n < 2:
        return 0.0
    mine = np.asarray(got, dtype=np.float64)
    if baseline.recalls is not None and len(baseline.recalls) == n:
        return float(np.std(mine - np.asarray(baseline.recalls), ddof=1) / np.sqrt(n))
    return float(np.sqrt(2) * np.std(mine, ddof=1) / np.sqrt(n))


def _markdown(doc: dict[str, Any]) -> str:
    lines = ["# aibackup restore test", ""]
    lines.append(f"Result: **{'passed' if doc['ok'] else 'FAILED'}**")
    lines += ["", "| source | bundle | result | achieved RTO | objective |", "|---|---|---|---|---|"]
    for r in doc["sources"]:
        objective = r["rto_objective_seconds"]
        checks_ok = not r["error"] and all(c["ok"] for c in r["checks"])
        verdict = "ok" if r["ok"] else ("RTO missed" if checks_ok and not r["rto_met"] else "FAILED")
        lines.append(
            f"| {r['source']} | {r['bundle_id'] or '-'} | {verdict} | {r['rto_seconds']:.1f} s | "
            f"{'-' if objective is None else f'{objective:.0f} s'} |"
        )
    for r in doc["sources"]:
        lines += ["", f"## {r['source']}", ""]
        if r["error"]:
            lines += [f"Error: {r['error']}", ""]
        if r.get("repository") and r["bundle_id"]:
            lines += [f"Restored from the copy at {r['repository']}.", ""]
        if r.get("note"):
            lines += [f"Note: {r['note']}", ""]
        if r.get("cleanup"):  # what stays behind (a file target keeps its files), as the JSON report says
            lines += [f"Cleanup: {r['cleanup']}", ""]
        if r["checks"]:
            lines += ["| check | result | detail |", "|---|---|---|"]
            lines += [f"| {c['name']} | {'ok' if c['ok'] else 'FAILED'} | {c['detail']} |" for c in r["checks"]]
        lines += _recall_table(r["checks"])
    return "\n".join(lines) + "\n"


def _recall_table(checks: list[dict[str, Any]]) -> list[str]:
    """Source vs restored recall, per collection and vector (and golden queries), from the checks' measures."""
    rows = [c for c in checks if "recall" in c.get("measures", {})]
    if not rows:
        return []
    lines = ["", "| search | restored recall | source recall at backup | rule | result |", "|---|---|---|---|---|"]
    for c in rows:
        m = c["measures"]
        source = "-" if m.get("source_recall") is None else f"{m['source_recall']:.3f}"
        lines.append(f"| {c['name']} | {m['recall']:.3f} | {source} | {m['rule']} | {'ok' if c['ok'] else 'FAILED'} |")
    return lines
