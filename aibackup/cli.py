"""The `aibackup` command line: thin click commands that call the verbs and render text or JSON.

Errors reach the user as one line on stderr (a JSON object under ``--json``) and the exit code of the
README's table; a traceback is shown only with ``AIBACKUP_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import click

from aibackup import __version__
from aibackup.cli_common import (
    conclude,
    config_option,
    emit_json,
    json_option,
    key_file_option,
    observe_options,
    open_repository,
    parse_time,
    repo_option,
    resolve,
    size,
    table,
)
from aibackup.errors import (
    EXIT_INTEGRITY,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    AibackupError,
    ConfigError,
    UsageError,
)
from aibackup.manifests.model import FRAMEWORKS
from aibackup.recall_rule import ABSOLUTE_MIN_RECALL, ABSOLUTE_QUERIES, DEFAULT_QUERIES, DEFAULT_TOLERANCE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="aibackup")
def cli() -> None:
    """Back up and restore the state of AI systems: vector stores into versioned, checksummed Parquet
    bundles; restore into the same or another backend, proven by integrity checks."""


@cli.command()
@click.option(
    "--encrypt",
    is_flag=True,
    help="Seal secret values (config: sources) with AES-256-GCM under a key derived from $AIBACKUP_KEY "
    "or --key-file; the repository keeps only a salt and a key check.",
)
@key_file_option
@repo_option
@config_option
@json_option
def init(encrypt: bool, key_file: str | None, repo: str | None, config_path: str | None, as_json: bool) -> None:
    """Create an empty repository at --repo."""
    repo, _config = resolve(repo, config_path)
    from aibackup.crypto import KEY_ENV, passphrase_from
    from aibackup.repository import Repository

    passphrase = None
    if encrypt:
        passphrase = passphrase_from(key_file)
        if passphrase is None:
            raise ConfigError(f"--encrypt needs a key: set {KEY_ENV} or pass --key-file")
    created = Repository.init(repo, passphrase=passphrase)
    if as_json:
        emit_json({"repository": created.storage.display(), "created": True, "encrypted": created.encrypted})
    else:
        kind = "encrypted repository" if created.encrypted else "repository"
        click.echo(f"created {kind} at {created.storage.display()}")


@cli.command()
@click.argument("source", required=False)
@click.option(
    "--source",
    "source_names",
    multiple=True,
    metavar="NAME",
    help="With a config and no SOURCE: back up only this configured source (repeatable). Default: all.",
)
@click.option(
    "--collection",
    "collections",
    multiple=True,
    metavar="NAME",
    help="Back up only this collection (repeatable). Default: every collection of the store.",
)
@click.option(
    "--on-bad-line",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="Conversation logs: fail on a malformed line (naming file:line), or keep it raw and report it.",
)
@click.option(
    "--job-config",
    metavar="FILE",
    default=None,
    help="Fine-tuning: the job's configuration (YAML or JSON: base model, hyperparameters, seed, job id).",
)
@click.option(
    "--redact-secrets",
    is_flag=True,
    help="Configs: drop secret values (restored as placeholders) instead of sealing them with the key.",
)
@click.option(
    "--queries",
    default=DEFAULT_QUERIES,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="Vectors: query records sampled per dense vector for the search baseline (the source's own answers, "
    "which a restore is compared with); 0 records none.",
)
@key_file_option
@observe_options
@repo_option
@config_option
@json_option
def backup(
    source: str | None,
    source_names: tuple[str, ...],
    collections: tuple[str, ...],
    on_bad_line: str,
    job_config: str | None,
    redact_secrets: bool,
    queries: int,
    key_file: str | None,
    show_progress: bool | None,
    log_format: str,
    metrics_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Back up the store SOURCE into a new bundle, or (without SOURCE) every source of the config.

    SOURCE is chroma:PATH, chroma+http://HOST:PORT, qdrant:PATH, qdrant+http://HOST:PORT,
    conversations:PATH, conversations+sqlite:PATH?table=T, finetune:PATH or config:PATH.
    The repository is created if it is missing or empty. Conversation logs are backed up
    incrementally: only what is new since the previous bundle of the same source. A backup of a
    source already running (say an overlapping cron run) is refused by the repository lock.
    """
    from aibackup.backup import SourceOptions, run_backup
    from aibackup.progress import make_progress

    repo, config = resolve(repo, config_path, need_config=source is None)
    if source is None:
        _backup_config(config, source_names, queries, show_progress, log_format, metrics_file, as_json)
        return
    if source_names:
        raise UsageError("--source names configured sources: give either SOURCE or --source")
    options = SourceOptions(
        on_bad_line=on_bad_line,
        job_config=job_config,
        redact_secrets=redact_secrets,
        key_file=key_file or (config.key_file if config else None),
        queries=queries,
        golden_queries=_configured_golden(config, source),
    )
    progress = make_progress(show_progress, log_format)
    try:
        result = run_backup(repo, source, collections, source_options=options, progress=progress)
    finally:
        progress.close()
    if as_json:
        emit_json(result.to_json())
        conclude(config, metrics_file, 0, as_json)
        return
    m = result.manifest
    if result.repository_created:
        click.echo(f"created repository at {repo}")
    click.echo(f"bundle {m.bundle_id} committed ({result.seconds:.1f} s)")
    own = f"data/{m.bundle_id}/"
    table(
        ["COLLECTION", "KIND", "ROWS", "NEW", "PARTS", "BYTES"],
        [
            [
                d.name,
                d.kind,
                str(d.rows),
                str(sum(p.rows for p in d.parts if p.path.startswith(own))) + (" (incremental)" if d.extends else ""),
                str(len(d.parts)),
                size(sum(p.bytes for p in d.parts)),
            ]
            for d in m.datasets
        ],
    )
    for d in m.datasets:
        if d.kind == "finetune":
            _finetune_summary(d.config)
    for note in result.notes:
        click.echo(f"note: {note}")


def _configured_golden(config: Any, source: str) -> str | None:
    """The golden queries the config names for the store `source` (a source given by URI is still the
    configured source of that store: its bundles get the golden baseline the drill compares with)."""
    if config is None:
        return None
    from aibackup.connectors.registry import parse_location

    store = parse_location(source).display()
    for configured in config.sources.values():
        if parse_location(configured.uri).display() == store:
            return str(configured.golden_queries) if configured.golden_queries else None
    return None


def _backup_config(
    config: Any,
    names: tuple[str, ...],
    queries: int,
    show_progress: bool | None,
    log_format: str,
    metrics_file: str | None,
    as_json: bool,
) -> None:
    """Every configured source (or the named ones), each on its own; a summary; exit non-zero if any failed."""
    from aibackup.operations import backup_sources
    from aibackup.progress import make_progress

    progress = make_progress(show_progress, log_format)
    try:
        # Through the URL, not an opened repository: the first backup creates it (as `backup SOURCE`).
        result = backup_sources(config, names, progress, queries=queries)
    finally:
        progress.close()
    runs = result.runs
    if as_json:
        emit_json(result.to_json())
    else:
        table(
            ["SOURCE", "RESULT", "BUNDLE", "ROWS", "NEW", "BYTES", "SECONDS"],
            [
                [r.source, "ok", r.bundle_id or "", str(r.rows), str(r.new_rows), size(r.bytes), f"{r.seconds:.1f}"]
                if r.ok
                else [r.source, "FAILED", "", "", "", "", f"{r.seconds:.1f}"]
                for r in runs
            ],
        )
        for r in runs:
            if r.error:
                click.echo(f"{r.source}: {r.error}")
            for note in r.notes:
                click.echo(f"{r.source}: note: {note}")
    conclude(config, metrics_file, result.exit_code, as_json)


def _finetune_summary(config: Any) -> None:
    """The per-file validation summary of a fine-tuning dataset: examples, roles, invalid lines and why."""
    files = config.get("files", []) if isinstance(config, dict) else []
    table(
        ["FILE", "EXAMPLES", "INVALID", "ROLES"],
        [
            [
                f.get("name", "?"),
                str(f.get("examples", 0)),
                str(f.get("invalid", 0)),
                ", ".join(f"{role} {n}" for role, n in sorted(f.get("roles", {}).items())),
            ]
            for f in files
        ],
        indent="  ",
    )
    for f in files:
        for problem in f.get("problems", []):
            click.echo(f"  {f.get('name', '?')}: {problem}")


@cli.command(name="list")
@repo_option
@config_option
@json_option
def list_(repo: str | None, config_path: str | None, as_json: bool) -> None:
    """List bundles, newest first. Exits 1 if a manifest is damaged (listed with its problem)."""
    listed = open_repository(resolve(repo, config_path)[0]).list()
    entries = listed.entries
    if as_json:
        emit_json(listed.to_json())
    elif not entries:
        click.echo("no bundles yet")
    else:
        table(
            ["BUNDLE", "CREATED", "SOURCE", "COLLECTIONS (ROWS)"],
            [
                [e["bundle_id"], "-", "DAMAGED", e["problem"]]
                if "problem" in e
                else [
                    e["bundle_id"],
                    e["created_at"][:19] + "Z",
                    e["source"].get("uri", ""),
                    ", ".join(f"{d['name']} ({d['rows']})" for d in e["datasets"]),
                ]
                for e in entries
            ],
        )
    if not listed.ok:
        sys.exit(EXIT_INTEGRITY)


@cli.command()
@click.argument("bundle")
@repo_option
@config_option
@json_option
def show(bundle: str, repo: str | None, config_path: str | None, as_json: bool) -> None:
    """Show one bundle (an id, a unique prefix, or `latest`): datasets, config, parts."""
    manifest = open_repository(resolve(repo, config_path)[0]).show(bundle)
    if as_json:
        emit_json(manifest.to_json())
        return
    click.echo(f"bundle   {manifest.bundle_id}")
    click.echo(f"created  {manifest.created_at}")
    click.echo(f"source   {manifest.source.get('kind')} {manifest.source.get('uri')}")
    click.echo(f"parent   {manifest.parent or '-'}")
    click.echo(f"tool     aibackup {manifest.tool_version} (manifest format {manifest.format_version})")
    for d in manifest.datasets:
        click.echo(f"\ncollection {d.name!r}: {d.kind}, {d.rows} rows, digest {d.digest}")
        if d.kind == "vectors":
            config = d.vectors_config()
            for v in config.dense:
                kind = "multivector" if v.multivector else "vector"
                click.echo(f"  {kind} {v.name or '(default)'}: {v.size} dims, {v.distance}, {v.datatype}")
            for sv in config.sparse:
                click.echo(f"  sparse vector {sv.name}" + (f" ({sv.modifier})" if sv.modifier else ""))
            if config.metadata:
                click.echo(f"  collection metadata: {json.dumps(config.metadata, ensure_ascii=False)}")
            if config.layout:
                evidence = ", ".join(f"{k} {v}" for k, v in sorted(config.layout.get("evidence", {}).items()))
                click.echo(f"  layout: {config.layout['framework']} on {config.layout['backend']} ({evidence})")
            for line in _baseline_lines(d):
                click.echo(f"  {line}")
        else:
            click.echo(f"  config: {json.dumps(d.config, ensure_ascii=False, sort_keys=True)[:2000]}")
        if d.extends:
            click.echo(f"  incremental: extends bundle {d.extends}; high-water mark {json.dumps(d.state)[:500]}")
        if d.id_types:
            click.echo("  ids: " + ", ".join(f"{n} {t}" for t, n in d.id_types.items()))
        for p in d.parts:
            click.echo(f"  part {p.path}  {p.rows} rows  {size(p.bytes)}  sha256 {p.sha256[:16]}…")


def _baseline_lines(dataset: Any) -> list[str]:
    """What `show` says of a dataset's search baseline (the source's answers a restore is compared with)."""
    baseline = dataset.baseline
    if baseline is None:
        return ["search baseline: none (the restore's search check uses the absolute rule)"]
    lines = []
    for v in baseline.vectors:
        how = "exact scan" if v.exact else "approximate index"
        lines.append(
            f"search baseline {v.vector or '(default)'}: {len(v.queries)} queries (seed {baseline.seed}), source "
            f"recall@{baseline.k} {v.recall:.3f} ({v.index.get('store', '?')}, {how})"
        )
    if baseline.golden is not None:
        g = baseline.golden
        lines.append(f"golden queries: {g.queries}, source recall {g.recall:.3f} (file sha256 {g.sha256[:16]}…)")
    return lines + [f"search baseline: {note}" for note in baseline.notes]


@cli.command()
@click.argument("bundles", nargs=-1, metavar="[BUNDLE]...")
@click.option("--read-data", is_flag=True, help="Re-hash every byte of every part (default: presence and size).")
@key_file_option
@repo_option
@config_option
@json_option
def verify(
    bundles: tuple[str, ...],
    read_data: bool,
    key_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Check bundles (all by default) against their manifests. Exits 1 if anything is damaged. In an
    encrypted repository, with its key, every manifest must also be authenticated by the key."""
    url, config = resolve(repo, config_path)
    key_file = key_file or (config.key_file if config else None)
    result = open_repository(url).verify(bundles, read_data=read_data, key_file=key_file)
    if as_json:
        emit_json(result.to_json())
    else:
        for p in result.problems:
            click.echo(f"DAMAGED  {p.bundle_id}  {p.path}: {p.problem}")
        depth = f", {size(result.bytes_read)} re-hashed" if read_data else " (sizes only; --read-data re-hashes)"
        verdict = "ok" if result.ok else f"{len(result.problems)} problem(s)"
        click.echo(f"{verdict}: {result.bundles} bundle(s), {result.parts} part(s) checked{depth}")
        if result.authenticated is False:
            click.echo("note: encrypted repository and no key given: manifests were not authenticated")
    if not result.ok:
        sys.exit(EXIT_INTEGRITY)


@cli.command()
@click.argument("bundle", required=False)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="TARGET",
    help="qdrant, chroma (embedded under ./aibackup-restore/), qdrant:PATH, chroma:PATH, "
    "qdrant+http://HOST:PORT or chroma+http://HOST:PORT.",
)
@click.option(
    "--collection",
    "collections",
    multiple=True,
    metavar="SRC[=DEST]",
    help="Restore only this collection, optionally renamed (repeatable). Default: all.",
)
@click.option(
    "--mode",
    type=click.Choice(["create", "overwrite", "merge"]),
    default="create",
    show_default=True,
    help="create refuses a non-empty existing collection; overwrite replaces it; merge upserts.",
)
@click.option(
    "--at",
    "at",
    default=None,
    metavar="TIME",
    help="Restore the newest bundle started at or before TIME (ISO 8601, e.g. 2026-11-25T02:00; UTC if no "
    "zone is given) instead of the latest.",
)
@click.option(
    "--allow-lossy",
    is_flag=True,
    help="Apply the documented lossy mapping where the target cannot hold a feature (reported).",
)
@click.option(
    "--layout",
    type=click.Choice(["auto", "raw", *FRAMEWORKS]),
    default="auto",
    show_default=True,
    help="Vectors: write the target in the application layout recorded at backup (auto), in each store's "
    "own mapping (raw), or in LangChain's or LlamaIndex's layout for the target store.",
)
@click.option(
    "--queries",
    default=None,
    type=click.IntRange(0, 10_000),
    help="Queries of the search check: the first N of the bundle's baseline (default: all of them), or N "
    f"records sampled from a bundle without one (default {ABSOLUTE_QUERIES}); 0 skips the check.",
)
@click.option(
    "--recall-tolerance",
    default=DEFAULT_TOLERANCE,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="The search check passes when the target's recall@10 is at least the source's (recorded at backup) "
    "minus this.",
)
@click.option(
    "--min-recall",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="An absolute floor on the target's recall@10, besides the comparison with the source (the rule of "
    f"bundles without a search baseline; default {ABSOLUTE_MIN_RECALL} there).",
)
@key_file_option
@repo_option
@config_option
@json_option
def restore(
    bundle: str | None,
    target: str,
    collections: tuple[str, ...],
    mode: str,
    at: str | None,
    allow_lossy: bool,
    layout: str,
    queries: int | None,
    recall_tolerance: float,
    min_recall: float | None,
    key_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Restore BUNDLE (an id, a unique prefix, or `latest`) into TARGET, then prove it.

    Exits 1 if any check fails.
    """
    url, config = resolve(repo, config_path)
    for flag, value in (("--min-recall", min_recall), ("--recall-tolerance", recall_tolerance)):
        if value is not None and value != value:  # click's FloatRange lets NaN through
            raise UsageError(f"{flag} must be a number between 0 and 1")
    result = open_repository(url).restore(
        bundle,
        to=target,
        collections=collections,
        mode=mode,
        allow_lossy=allow_lossy,
        layout=layout,
        at=None if at is None else parse_time(at),
        queries=queries,
        recall_tolerance=recall_tolerance,
        min_recall=min_recall,
        key_file=key_file or (config.key_file if config else None),
    )
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(f"restored bundle {result.bundle_id} into {result.target}")
        for d in result.datasets:
            arrow = d.name if d.name == d.target else f"{d.name} -> {d.target}"
            arrow += "" if d.layout == "raw" else f" in {d.layout}'s layout"
            click.echo(
                f"\ncollection {arrow}: {d.rows} rows (load {d.load_seconds:.1f} s, checks {d.check_seconds:.1f} s)"
            )
            for item in d.dropped:
                click.echo(f"  lossy mapping (--allow-lossy): {item}")
            for item in d.lost:
                click.echo(f"  lost: {item}")
            if d.dropped and not d.lost:
                click.echo("  lost: nothing (no record held what the target cannot)")
            for item in d.notes:
                click.echo(f"  note: {item}")
            table(
                ["CHECK", "RESULT", "DETAIL"],
                [[c.name, "ok" if c.ok else "FAILED", c.detail] for c in d.checks],
                indent="  ",
            )
        click.echo("\nall checks passed" if result.ok else "\nRESTORE CHECKS FAILED")
    if not result.ok:
        sys.exit(EXIT_INTEGRITY)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every error into one line and a documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    if not args:  # no command: the help, on stdout, as a success (not an error line)
        click.echo(cli.get_help(click.Context(cli, info_name="aibackup")))
        sys.exit(EXIT_OK)
    try:
        # make_context/invoke rather than cli.main: main() prints a blank line to stderr on Ctrl-C.
        with cli.make_context("aibackup", list(args)) as ctx:
            cli.invoke(ctx)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(as_json, "usage", exc.format_message(), EXIT_USAGE)
    except BrokenPipeError:
        # The reader of our output went away (`aibackup list --json | head`): nothing is wrong here.
        # Point stdout at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
    except (KeyboardInterrupt, click.exceptions.Abort):
        _fail(as_json, "interrupted", "interrupted", EXIT_INTERRUPTED)
    except AibackupError as exc:
        _fail(as_json, exc.code, str(exc), exc.exit_code)
    except Exception as exc:  # a bug: still one line, unless the user asks for the traceback
        if os.environ.get("AIBACKUP_DEBUG"):
            traceback.print_exc()
        # The type and where, not the message: a library's message may quote the data it choked on (a
        # config file's secret, a log line), and this line goes to terminals and cron mails.
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
        _fail(
            as_json,
            "internal",
            f"internal error: {type(exc).__name__}{where} (a bug; AIBACKUP_DEBUG=1 shows the details)",
            EXIT_INTERNAL,
        )
    sys.exit(EXIT_OK)


def _fail(as_json: bool, code: str, message: str, exit_code: int) -> None:
    message = " ".join(message.split())  # one line, whatever the underlying library said
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "message": message, "exit_code": exit_code}}), err=True)
    else:
        click.echo(f"aibackup: error: {message}", err=True)
    sys.exit(exit_code)


def _register_operations() -> None:
    from aibackup.cli_ops import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register_operations()
