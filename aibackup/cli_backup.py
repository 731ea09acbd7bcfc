"""`aibackup backup`: a store into a new bundle, or every source of aibackup.yaml."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from aibackup.cli_common import (
    METRICS_NEED_CONFIG,
    conclude,
    config_option,
    dask_options,
    emit_json,
    json_option,
    key_file_option,
    observe_options,
    repo_option,
    resolve,
    size,
    table,
)
from aibackup.config import FULL_EVERY
from aibackup.errors import (
    UsageError,
)
from aibackup.recall_rule import DEFAULT_QUERIES, MAX_QUERIES


@click.command()
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
    type=click.IntRange(0, MAX_QUERIES),
    help="Vectors: query records sampled per dense vector for the search baseline (the source's own answers, "
    "which a restore is compared with); 0 records none.",
)
@click.option(
    "--full",
    is_flag=True,
    help="Vectors: a full backup, even where an incremental one could follow the previous bundle's chain.",
)
@click.option(
    "--full-every",
    type=click.IntRange(0, 100_000),
    default=None,
    metavar="N",
    help=f"Vectors: at most N incremental backups after a full one, then a full one (default {FULL_EVERY}, or "
    "the source's full_every; 0: every backup full).",
)
@click.option(
    "--allow-lossy",
    is_flag=True,
    help="Back up what a source holds only approximately, saying so in the report (a LanceDB table without "
    "an id column: its row positions as ids).",
)
@dask_options(
    "Vectors: spread a backup (full, or an incremental link) over a local Dask cluster of N processes, where "
    "the source can split a collection (pgvector: block ranges of one exported snapshot; LanceDB: fragments; "
    "a Chroma server: ids; a Milvus server: key ranges); needs aibackup[dask].",
    "source",
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
    full: bool,
    full_every: int | None,
    allow_lossy: bool,
    workers: int | None,
    dask_address: str | None,
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
    pgvector://[USER@]HOST[:PORT]/DB, lancedb:PATH, milvus:PATH, milvus+http://HOST:PORT,
    conversations:PATH, conversations+sqlite:PATH?table=T, conversations+postgresql://HOST/DB?table=T,
    finetune:PATH or config:PATH.
    The repository is created if it is missing or empty. Vector collections are backed up
    incrementally once a full backup exists: the source is read whole, and only the records added or
    changed since the previous bundle are written, with tombstones for those deleted (full again with
    --full, every --full-every backups, when more than half the records changed or the vectors' shape
    did). Conversation logs are backed up incrementally: only what is new since the previous bundle of
    the same source. A backup of a source already running (say an overlapping cron run) is refused by
    the repository lock.
    """
    from aibackup import api
    from aibackup.progress import make_progress

    repo, config = resolve(repo, config_path, need_config=source is None, key_file=key_file)
    # --on-bad-line has a default: only one the user gave counts as asked for.
    bad_line = on_bad_line if click.get_current_context().get_parameter_source("on_bad_line") in _GIVEN else None
    if source is None:
        _for_a_source_only(
            collection=collections,
            on_bad_line=bad_line,
            job_config=job_config,
            redact_secrets=redact_secrets,
        )
        _backup_config(
            config,
            source_names,
            queries,
            full,
            full_every,
            show_progress,
            log_format,
            metrics_file,
            as_json,
            workers,
            dask_address,
            allow_lossy,
        )
        return
    if source_names:
        raise UsageError("--source names configured sources: give either SOURCE or --source")
    if metrics_file and config is None:  # refused before the backup runs, not after it committed
        raise UsageError(METRICS_NEED_CONFIG)
    _only_for_their_kind(source, on_bad_line=bad_line, job_config=job_config, redact_secrets=redact_secrets)
    progress = make_progress(show_progress, log_format)
    try:
        # Through the location, not an opened repository: a first backup creates it (and a failed one
        # removes it again).
        result = api.backup(
            repo,
            source,
            collections,
            queries=queries,
            on_bad_line=on_bad_line,
            job_config=job_config,
            redact_secrets=redact_secrets,
            golden_queries=_configured_golden(config, source),
            key_file=key_file or (config.key_file if config else None),
            progress=progress,
            full=full,
            full_every=_configured(config, source, "full_every", FULL_EVERY) if full_every is None else full_every,
            allow_lossy=allow_lossy,
            workers=workers,
            dask=dask_address,
        )
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
        ["COLLECTION", "KIND", "ROWS", "NEW", "DELETED", "WRITTEN", "TOTAL"],
        [
            [
                d.name,
                d.kind,
                str(d.rows),
                str(sum(p.rows for p in d.parts if p.path.startswith(own))) + (" (incremental)" if d.extends else ""),
                str(result.outcome(d).deleted),
                size(result.outcome(d).new_bytes),
                size(d.config.get("bytes", 0) if d.kind == "model" else sum(p.bytes for p in d.all_parts())),
            ]
            for d in m.datasets
        ],
    )
    for d in m.datasets:
        if d.kind == "finetune":
            _finetune_summary(d.config)
        if d.kind == "model":
            _model_summary(d.config)
    for note in result.notes:
        click.echo(f"note: {note}")
    conclude(config, metrics_file, 0, as_json)


#: Where a flag's value was given by the user rather than by its default.
_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


#: The flags of ``backup SOURCE`` that the config sets instead, and where.
_CONFIG_KEYS = {
    "collection": "sources.NAME.collections",
    "on_bad_line": "sources.NAME.on_bad_line",
    "job_config": "sources.NAME.job_config",
    "redact_secrets": "sources.NAME.redact_secrets",
}


def _for_a_source_only(**given: Any) -> None:
    """UsageError for a flag of ``backup SOURCE`` given with the config's sources, which take it from
    aibackup.yaml (:data:`_CONFIG_KEYS`): it would be ignored."""
    for name, value in given.items():
        if value:
            flag = f"--{name.replace('_', '-')}"
            raise UsageError(f"{flag} is for `backup SOURCE`; the config's sources take {_CONFIG_KEYS[name]} instead")


def _only_for_their_kind(source: str, **given: Any) -> None:
    """UsageError for a flag of one kind of source (``--job-config``: finetune, ``--redact-secrets``: config)
    given with a source of another kind, as the config refuses the same keys: it would be ignored."""
    from aibackup.config import ONLY_FOR
    from aibackup.connectors.registry import connector_class, parse_location

    kind = parse_location(source).kind
    for name, value in given.items():
        if value and ONLY_FOR[name] != connector_class(kind).dataset_kind:
            raise UsageError(f"--{name.replace('_', '-')} is only for {ONLY_FOR[name]} sources, not {kind}")


def _configured_golden(config: Any, source: str) -> str | None:
    """The golden queries the config names for the store `source` (a source given by URI is still the
    configured source of that store: its bundles get the golden baseline the drill compares with)."""
    golden = _configured(config, source, "golden_queries", None)
    return str(golden) if golden else None


def _configured(config: Any, source: str, key: str, default: Any) -> Any:
    """A setting of the configured source whose store is `source` (`default` when none is)."""
    if config is None:
        return default
    from aibackup.connectors.registry import parse_location

    store = parse_location(source).display()
    for configured in config.sources.values():
        if parse_location(configured.uri).display() == store:
            return getattr(configured, key)
    return default


def _backup_config(
    config: Any,
    names: tuple[str, ...],
    queries: int,
    full: bool,
    full_every: int | None,
    show_progress: bool | None,
    log_format: str,
    metrics_file: str | None,
    as_json: bool,
    workers: int | None = None,
    dask: str | None = None,
    allow_lossy: bool = False,
) -> None:
    """Every configured source (or the named ones), each on its own; a summary; exit non-zero if any failed."""
    from aibackup.operations import backup_sources
    from aibackup.progress import make_progress

    progress = make_progress(show_progress, log_format)
    try:
        # Through the URL, not an opened repository: the first backup creates it (as `backup SOURCE`).
        result = backup_sources(
            config,
            names,
            progress,
            queries=queries,
            full=full,
            full_every=full_every,
            workers=workers,
            dask=dask,
            allow_lossy=allow_lossy,
        )
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
        for c in result.copies:
            if c.copied or not c.error:  # a copy stopped part-way says what did land first
                copied = f"{len(c.copied)} bundle(s) copied ({size(c.bytes)}, {c.seconds:.1f} s)"
                click.echo(f"copy to {c.repository}: {copied}")
            if c.generations_added:
                ids = ", ".join(map(str, c.generations_added))
                click.echo(f"copy to {c.repository}: master key(s) {ids} (rotated in the source) added to its slots")
            for path in c.repaired:
                click.echo(f"copy to {c.repository}: repaired {path} (damaged or missing there; copied again, proven)")
            if c.error:
                click.echo(f"copy to {c.repository}: FAILED: {c.error}")
            for f in c.failed:
                click.echo(f"copy to {c.repository}: FAILED {f['bundle_id']}: {f['problem']}")
    conclude(config, metrics_file, result.exit_code, as_json)


def _model_summary(config: Any) -> None:
    """What a model backup stored: files by format, chunks, and what the chunk store already held."""
    stored = config.get("stored", {})
    formats = ", ".join(f"{n} {fmt}" for fmt, n in config.get("formats", {}).items())
    files = config.get("files", [])
    invalid = [f for f in files if (f.get("format") or {}).get("valid") is False]
    total = config.get("bytes", 0)
    kept_out = 1 - stored.get("raw_new_bytes", 0) / total if total else 0.0
    click.echo(
        f"model: {len(files)} entries ({formats or 'no known formats'}), {size(total)}; {stored.get('chunks', 0)} "
        f"chunks, {stored.get('new_chunks', 0)} new: {size(stored.get('new_bytes', 0))} stored "
        f"({kept_out:.1%} of the bytes were already in the repository)"
    )
    for f in invalid[:5]:
        what = f["format"]
        click.echo(f"note: {f['path']} is not a valid {what['format']} file ({what['problem']}): backed up as it is")


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


COMMANDS = [backup]
