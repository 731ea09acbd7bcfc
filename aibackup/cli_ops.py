"""The operations commands: status, restore-test, prune, pin, unpin, repair (registered on the group in cli.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from typing import TYPE_CHECKING, Any

import click

from aibackup.cli_common import (
    METRICS_NEED_CONFIG,
    conclude,
    config_option,
    echo_error,
    emit_json,
    json_option,
    key_file_option,
    metrics_option,
    observe_options,
    open_repository,
    repo_option,
    resolve,
    size,
    table,
    write_metrics_of,
)
from aibackup.errors import EXIT_INTEGRITY, AibackupError, ConfigError, UsageError

if TYPE_CHECKING:
    from aibackup.repository import Repository


def _flag_duration(flag: str, text: str, *, positive: bool = False) -> dt.timedelta:
    """A duration flag's value; an error names the flag (parse_duration's message does not), and with
    `positive` refuses 0 as the config refuses it (otherwise `--keep-within 0` read as no keep rule)."""
    from aibackup.config import parse_duration

    try:
        value = parse_duration(text)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
    if positive and not value:
        raise ConfigError(f"{flag}: a duration must be longer than 0")
    return value


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:  # a bundle dated after this machine's clock
        return f"{_age(-seconds)} ahead"
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.1f}{unit}"
    return f"{seconds:.0f}s"


def _wrote(run: dict[str, Any] | None) -> str:
    """What the last successful backup run wrote: bytes, and new records of all."""
    if not run:
        return "-"
    written = run.get("new_bytes", run.get("bytes"))
    return f"{size(int(written or 0))} ({run.get('new_rows', 0)} of {run.get('rows', 0)} rows)"


@click.command()
@metrics_option
@key_file_option
@repo_option
@config_option
@json_option
def status(
    metrics_file: str | None, key_file: str | None, repo: str | None, config_path: str | None, as_json: bool
) -> None:
    """Per configured source: the newest intact bundle and its age against the RPO, the last restore test
    and its achieved RTO, the last backup run. Exits 1 when any source breaches its RPO."""
    from aibackup.operations import StatusReport
    from aibackup.operations import status as status_of

    url, config = resolve(repo, config_path, need_config=True, key_file=key_file)
    unreadable: AibackupError | None = None
    try:
        report = open_repository(url, config).status(config)
    except AibackupError as exc:
        # The metrics file must not go on saying "fine" about a repository that cannot be read.
        with contextlib.suppress(AibackupError):
            write_metrics_of(config, metrics_file)  # writes metrics.unreadable's file, raises the same error
        if not config.copies:
            raise
        # Its region down: what the copies hold is what the on-call needs to see now (then the error line).
        report, unreadable = StatusReport(status_of(config, readable=False)), exc
    if as_json:
        emit_json(report.to_json())
    else:
        rows = []
        for s in report.sources:
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
                    _wrote(s.last_successful_backup),
                    tested,
                ]
            )
        headers = ["SOURCE", "NEWEST BUNDLE", "AGE", "RPO", "RPO STATUS", "LAST RUN WROTE", "LAST RESTORE TEST (RTO)"]
        table(headers, rows)
        copies = [(s.source, c) for s in report.sources for c in s.copies]
        if copies:
            click.echo("")
            table(
                ["SOURCE", "COPY", "NEWEST BUNDLE", "AGE", "RPO STATUS"],
                [
                    [
                        name,
                        c["repository"],
                        c["newest_bundle"] or ("unreadable: " + c["error"] if c["error"] else "none"),
                        _age(c["age_seconds"]),
                        "BREACHED" if c["rpo_breached"] else "ok",
                    ]
                    for name, c in copies
                ],
            )
    if unreadable is not None:
        echo_error(unreadable, as_json)
        sys.exit(unreadable.exit_code)
    conclude(config, metrics_file, 0 if report.ok else EXIT_INTEGRITY, as_json)


@click.command(name="restore-test")
@click.option("--source", "names", multiple=True, metavar="NAME", help="Test only this source (repeatable).")
@click.option(
    "--report",
    metavar="PATH",
    default=None,
    help="Write the report as Markdown and JSON: PATH.md and PATH.json (default: the config's restore_test.report).",
)
@observe_options
@key_file_option
@repo_option
@config_option
@json_option
def restore_test(
    names: tuple[str, ...],
    report: str | None,
    show_progress: bool | None,
    log_format: str,
    metrics_file: str | None,
    key_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """The drill: restore the latest bundle of every source into a scratch target, prove it, time it from
    start to verified against the source's RTO, clean up, report. Exits 1 if any check fails or an RTO is
    missed."""
    from aibackup.drill import restore_test as drill_sources
    from aibackup.progress import make_progress

    url, config = resolve(repo, config_path, need_config=True, key_file=key_file)
    unopened: AibackupError | None = None
    try:
        repository: Repository | None = open_repository(url, config)
    except AibackupError as exc:
        # The drill of a copy is the proof that the second region restores: it runs while the repository's
        # region is down (the result then cannot be recorded there: exit 3 after it).
        if config.restore_test.repository is None:
            raise
        repository, unopened = None, exc
        with contextlib.suppress(AibackupError):  # says the repository cannot be read, raising the same error
            write_metrics_of(config, metrics_file)
    progress = make_progress(show_progress, log_format)
    try:
        drill = drill_sources(config, names, progress, repo=repository, cannot_open=unopened)
    finally:
        progress.close()
    path = report or config.restore_test.report
    if as_json:
        emit_json(drill.to_json())
    else:
        click.echo(drill.markdown(), nl=False)
    # The report file is written after the result is shown: a path that cannot be written must not hide
    # the drill's outcome (recorded in the repository already), nor turn a failed drill's exit 1 into 3.
    written = (lambda: drill.write(path)) if path else None
    code = 0 if drill.ok else EXIT_INTEGRITY
    conclude(config, metrics_file, code, as_json, report=written, also=drill.unrecorded, metrics=unopened is None)


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
@key_file_option
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
    key_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Forget bundles outside the keep rules (restic style: the rules are ORed, per source, calendar
    buckets in UTC; pinned bundles stay), then remove the parts no remaining bundle references. Flags
    replace the config's retention; the config's per-source retention applies otherwise."""
    within = _flag_duration("--keep-within", keep_within, positive=True) if keep_within else None
    grace_period = _flag_duration("--grace", grace)
    repo_url, config = resolve(repo, config_path, key_file=key_file)
    if metrics_file and config is None:  # refused before anything is removed, not after
        raise UsageError(METRICS_NEED_CONFIG)
    result = open_repository(repo_url, config, key_file).prune(
        keep_last=keep_last,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
        keep_within=within,
        grace=grace_period,
        dry_run=dry_run,
        config=config,
    )
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
    if result.uploads_aborted:
        click.echo(
            f"{len(result.uploads_aborted)} unfinished upload(s) of crashed runs {'would be ' if dry_run else ''}"
            "aborted (S3 bills their parts; no listing shows them)"
        )
    chunks = result.chunks
    if chunks.packs_removed or chunks.packs_repacked:
        click.echo(
            f"chunk store: {len(chunks.packs_removed)} pack(s) {verb}, {len(chunks.packs_repacked)} repacked, "
            f"{chunks.bytes_reclaimed} bytes {'to reclaim' if dry_run else 'reclaimed'} "
            f"({chunks.chunks_removed} unused chunk(s); {chunks.chunks_live} still used)"
        )
    if result.parts_kept_for_chains:
        click.echo(
            f"{len(result.parts_kept_for_chains)} part(s) of {'these' if dry_run else 'the removed'} bundles kept: "
            "the chains of kept bundles still read them"
        )
    if result.reports_removed:
        click.echo(f"{len(result.reports_removed)} run report(s) no reader needs any more {verb}")
    for note in result.notes:
        click.echo(f"note: {note}")
    conclude(config, metrics_file, 0, as_json)


@click.command()
@click.argument("bundle")
@key_file_option
@repo_option
@config_option
def pin(bundle: str, key_file: str | None, repo: str | None, config_path: str | None) -> None:
    """Pin BUNDLE (an id or a unique prefix): prune never removes it."""
    click.echo(f"pinned {open_repository(*resolve(repo, config_path), key_file).pin(bundle)}")


@click.command()
@click.argument("bundle")
@key_file_option
@repo_option
@config_option
def unpin(bundle: str, key_file: str | None, repo: str | None, config_path: str | None) -> None:
    """Unpin BUNDLE: prune applies the keep rules to it again."""
    click.echo(f"unpinned {open_repository(*resolve(repo, config_path), key_file).unpin(bundle)}")


@click.group()
def repair() -> None:
    """Make what a repository lost findable again from what it still holds."""


@repair.command(name="index")
@click.option(
    "--dry-run", is_flag=True, help="Read the packs and say what would be indexed and removed; change nothing."
)
@click.option(
    "--read-all-packs",
    is_flag=True,
    help="Read every pack and replace every index file with one built from them (index files suspected of "
    "damage that still decodes, such as those written before 2026-12-07, without their entries' digest).",
)
@key_file_option
@repo_option
@config_option
@json_option
def repair_index(
    dry_run: bool, read_all_packs: bool, key_file: str | None, repo: str | None, config_path: str | None, as_json: bool
) -> None:
    """Rebuild the chunk index from the packs: every chunk of a pack no intact index file lists is read,
    checked against its id and indexed, then the damaged index files are removed (--read-all-packs: every
    pack read, every index file replaced). Exit 1 when bundles still need chunks no intact pack holds (a
    copy brings them back: aibackup copy --repo COPY --to-repo REPO), or could not be checked."""
    repo_url, config = resolve(repo, config_path)
    opened = open_repository(repo_url, config, key_file)
    result = opened.repair_index(dry_run=dry_run, read_all_packs=read_all_packs, config=config)
    code = 0 if result.ok else EXIT_INTEGRITY
    if as_json:
        emit_json(result.to_json())
        conclude(None, None, code, as_json)
        return
    would = "would be " if dry_run else ""
    if not (result.changed or result.packs_read or result.unrestorable or result.unchecked):
        click.echo("the chunk index is whole: every chunk the bundles need is indexed in a stored pack")
    if result.packs_read or result.chunks_indexed:
        written = f" into {result.index_written}" if result.index_written else ""
        click.echo(
            f"{len(result.packs_read)} pack(s) read ({result.bytes_read} bytes): "
            f"{result.chunks_indexed} chunk(s) {would}indexed{written}"
        )
    for path, problem in sorted(result.damaged_packs.items()):
        click.echo(
            f"DAMAGED  {path}: {problem} (its damaged chunks {'would not be' if dry_run else 'are not'} indexed)"
        )
    for path in result.unfinished:
        click.echo(f"unfinished pack {path}: a crashed run's, not indexed (prune removes it after its grace period)")
    for path, problem in sorted(result.damaged_files.items()):
        click.echo(f"damaged index file {path} {would}removed ({problem})")
    if result.replaced_files:
        click.echo(f"{len(result.replaced_files)} index file(s) {would}replaced by the one built from the packs")
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.unrestorable:
        click.echo(
            f"{len(result.unrestorable)} bundle(s) still need chunks that no intact pack of this repository holds: "
            f"{', '.join(result.unrestorable)} (a copy holding them brings them back: aibackup copy --repo COPY "
            "--to-repo REPO)"
        )
    elif result.changed and not result.unchecked:
        click.echo(f"every chunk the bundles need {'would be' if dry_run else 'is'} indexed")
    conclude(None, None, code, as_json)


COMMANDS = [status, restore_test, prune, pin, unpin, repair]
