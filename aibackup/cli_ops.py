"""The operations commands: status, restore-test, prune, pin, unpin (registered on the group in cli.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from aibackup.cli_common import (
    conclude,
    config_option,
    emit_json,
    json_option,
    metrics_option,
    observe_options,
    repo_option,
    resolve,
    table,
)
from aibackup.errors import EXIT_INTEGRITY, UnavailableError, UsageError


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.1f}{unit}"
    return f"{seconds:.0f}s"


@click.command()
@metrics_option
@repo_option
@config_option
@json_option
def status(metrics_file: str | None, repo: str | None, config_path: str | None, as_json: bool) -> None:
    """Per configured source: the newest intact bundle and its age against the RPO, the last restore test
    and its achieved RTO, the last backup run. Exits 1 when any source breaches its RPO."""
    from aibackup.operations import status as run_status

    _, config = resolve(repo, config_path, need_config=True)
    if repo:
        config = _with_repository(config, repo)
    statuses = run_status(config)
    breached = [s for s in statuses if s.rpo_breached]
    if as_json:
        emit_json({"ok": not breached, "sources": [s.to_json() for s in statuses]})
    else:
        rows = []
        for s in statuses:
            doc = s.to_json()
            test: dict[str, Any] = doc["last_restore_test"] or {}  # type: ignore[assignment]
            tested = "-" if not test else f"{'ok' if test.get('ok') else 'FAILED'} ({_age(test.get('rto_seconds'))})"
            rows.append(
                [
                    s.source,
                    s.newest_bundle or "none",
                    _age(s.age_seconds),
                    _age(s.rpo_seconds),
                    "BREACHED" if s.rpo_breached else "ok",
                    tested,
                ]
            )
        table(["SOURCE", "NEWEST BUNDLE", "AGE", "RPO", "RPO STATUS", "LAST RESTORE TEST (RTO)"], rows)
    conclude(config, metrics_file, EXIT_INTEGRITY if breached else 0, as_json)


def _with_repository(config: Any, repo: str) -> Any:
    from dataclasses import replace

    return replace(config, repository=repo)


@click.command(name="restore-test")
@click.option("--source", "names", multiple=True, metavar="NAME", help="Test only this source (repeatable).")
@click.option(
    "--report",
    metavar="PATH",
    default=None,
    help="Write the report as Markdown and JSON: PATH.md and PATH.json (default: the config's restore_test.report).",
)
@observe_options
@repo_option
@config_option
@json_option
def restore_test(
    names: tuple[str, ...],
    report: str | None,
    show_progress: bool | None,
    log_format: str,
    metrics_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """The drill: restore the latest bundle of every source into a scratch target, prove it, time it from
    start to verified against the source's RTO, clean up, report. Exits 1 if any check fails or an RTO is
    missed."""
    from aibackup.operations import restore_test as run_drill
    from aibackup.progress import make_progress

    _, config = resolve(repo, config_path, need_config=True)
    if repo:
        config = _with_repository(config, repo)
    progress = make_progress(show_progress, log_format)
    try:
        results = run_drill(config, names, progress)
    finally:
        progress.close()
    doc = {"ok": all(r.ok for r in results), "sources": [r.to_json() for r in results]}
    path = report or config.restore_test.report
    if path:
        _write_report(path, doc)
    if as_json:
        emit_json(doc)
    else:
        click.echo(_markdown(doc), nl=False)
    conclude(config, metrics_file, 0 if doc["ok"] else EXIT_INTEGRITY, as_json)


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
            lines.append(f"Error: {r['error']}")
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


def _write_report(path: str, doc: dict[str, Any]) -> None:
    """PATH.md and PATH.json (a PATH already ending in .md or .json names the pair too)."""
    base = path.removesuffix(".md") if path.endswith(".md") else path.removesuffix(".json")
    try:
        Path(base).parent.mkdir(parents=True, exist_ok=True)
        Path(base + ".json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        Path(base + ".md").write_text(_markdown(doc), encoding="utf-8")
    except OSError as exc:
        raise UnavailableError(f"cannot write the report {path}: {exc.strerror}") from None


@click.command()
@click.option("--keep-last", type=click.IntRange(0), default=None, help="Keep the N newest bundles of each source.")
@click.option("--keep-hourly", type=click.IntRange(0), default=None, help="Keep the newest bundle of N hours.")
@click.option("--keep-daily", type=click.IntRange(0), default=None, help="Keep the newest bundle of N days.")
@click.option("--keep-weekly", type=click.IntRange(0), default=None, help="Keep the newest bundle of N ISO weeks.")
@click.option("--keep-monthly", type=click.IntRange(0), default=None, help="Keep the newest bundle of N months.")
@click.option("--keep-yearly", type=click.IntRange(0), default=None, help="Keep the newest bundle of N years.")
@click.option("--keep-within", default=None, metavar="DURATION", help="Keep every bundle younger than this (7d).")
@click.option(
    "--grace",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="Orphan parts of crashed runs are removed only once older than this.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be removed and why the rest stays; remove nothing.")
@metrics_option
@repo_option
@config_option
@json_option
def prune(
    keep_last: int | None,
    keep_hourly: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_yearly: int | None,
    keep_within: str | None,
    grace: str,
    dry_run: bool,
    metrics_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Forget bundles outside the keep rules (restic style: the rules are ORed, per source, calendar
    buckets in UTC; pinned bundles stay), then remove the parts no remaining bundle references. Flags
    replace the config's retention; the config's per-source retention applies otherwise."""
    from aibackup.config import RetentionPolicy, parse_duration
    from aibackup.lock import RepositoryLock
    from aibackup.prune import run_prune
    from aibackup.repository import Repository

    repo_url, config = resolve(repo, config_path)
    flags = RetentionPolicy(
        keep_last=keep_last,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
        keep_within=parse_duration(keep_within) if keep_within else None,
    )
    by_uri = _policies(config, flags)

    def policy(source: Any) -> Any:
        return by_uri(str(source.get("uri")))

    repository = Repository.open(repo_url)
    stale = config.lock_stale_after if config else dt.timedelta(minutes=10)
    with RepositoryLock(repository, "prune", "*", stale_after=stale):
        result = run_prune(repository, policy, dry_run=dry_run, grace=parse_duration(grace))
    if as_json:
        emit_json(result.to_json())
        conclude(config, metrics_file, 0, as_json)
        return
    verb = "would be removed" if dry_run else "removed"
    table(
        ["BUNDLE", "DECISION", "WHY"],
        [[d.bundle_id, "keep", ", ".join(d.reasons)] for d in result.kept]
        + [[d.bundle_id, verb, ", ".join(d.reasons) or "no keep rule matched"] for d in result.removed],
    )
    click.echo(
        f"{len(result.removed)} bundle(s) {verb}, {len(result.parts_removed)} part(s) "
        f"({result.bytes_removed} bytes), {len(result.orphans_removed)} orphan part(s); "
        f"{len(result.orphans_waiting)} orphan part(s) younger than the grace period kept"
    )
    for note in result.notes:
        click.echo(f"note: {note}")
    conclude(config, metrics_file, 0, as_json)


def _policies(config: Any, flags: Any) -> Any:
    """source URI -> policy: the flags when any is given, else the config (per source, then global)."""
    from aibackup.connectors.registry import parse_location

    if not flags.is_empty():
        return lambda _uri: flags
    if config is None:
        raise UsageError("no keep rule: pass --keep-last N (or another --keep-*) or set retention in the config")
    per_uri = {parse_location(s.uri).display(): config.retention_for(s.name) for s in config.sources.values()}
    default = config.retention
    return lambda uri: per_uri.get(uri, default)


@click.command()
@click.argument("bundle")
@repo_option
@config_option
def pin(bundle: str, repo: str | None, config_path: str | None) -> None:
    """Pin BUNDLE (an id or a unique prefix): prune never removes it."""
    from aibackup.prune import pin as do_pin
    from aibackup.repository import Repository

    repository = Repository.open(resolve(repo, config_path)[0])
    bundle_id = repository.resolve(bundle).bundle_id  # an id, a unique prefix, or latest
    do_pin(repository, bundle_id)
    click.echo(f"pinned {bundle_id}")


@click.command()
@click.argument("bundle")
@repo_option
@config_option
def unpin(bundle: str, repo: str | None, config_path: str | None) -> None:
    """Unpin BUNDLE: prune applies the keep rules to it again."""
    from aibackup.prune import pinned
    from aibackup.prune import unpin as do_unpin
    from aibackup.repository import Repository

    repository = Repository.open(resolve(repo, config_path)[0])
    # A pin may outlive its bundle's manifest: an exact pinned id is unpinned as it is.
    bundle_id = bundle if bundle in pinned(repository) else repository.resolve(bundle).bundle_id
    do_unpin(repository, bundle_id)
    click.echo(f"unpinned {bundle_id}")


COMMANDS = [status, restore_test, prune, pin, unpin]
