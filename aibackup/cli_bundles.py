"""The commands on bundles: `list`, `show`, `verify`, `diff`, `restore`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from aibackup.cli_common import (
    config_option,
    dask_options,
    echo_error,
    emit_json,
    json_option,
    key_file_option,
    open_repository,
    parse_time,
    repo_option,
    resolve,
    size,
    table,
)
from aibackup.errors import (
    EXIT_INTEGRITY,
    UsageError,
)
from aibackup.manifests.model import FRAMEWORKS
from aibackup.recall_rule import ABSOLUTE_MIN_RECALL, ABSOLUTE_QUERIES, DEFAULT_TOLERANCE, MAX_QUERIES


@click.command(name="list")
@key_file_option
@repo_option
@config_option
@json_option
def list_(key_file: str | None, repo: str | None, config_path: str | None, as_json: bool) -> None:
    """List bundles, newest first. Exits 1 if a manifest is damaged (listed with its problem)."""
    listed = open_repository(*resolve(repo, config_path), key_file).list()
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
                    ", ".join(f"{d['name']} ({d['rows']})" for d in e["datasets"])
                    + ("  [--collection: only these]" if "collections" in e["source"] else ""),
                ]
                for e in entries
            ],
        )
    if not listed.ok:
        sys.exit(EXIT_INTEGRITY)


@click.command()
@click.argument("bundle")
@key_file_option
@repo_option
@config_option
@json_option
def show(bundle: str, key_file: str | None, repo: str | None, config_path: str | None, as_json: bool) -> None:
    """Show one bundle (an id, a unique prefix, or `latest`): datasets, config, parts."""
    manifest = open_repository(*resolve(repo, config_path), key_file).show(bundle)
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
        if d.chain:
            for line in _chain_lines(d, manifest.bundle_id):
                click.echo(f"  {line}")
        elif d.extends and d.kind in ("finetune", "config"):  # aibackup.filereuse: parts referenced
            own = f"data/{manifest.bundle_id}/"
            borrowed = sorted({p.bundle for p in d.parts if not p.path.startswith(own)})
            click.echo(
                f"  incremental: unchanged files referenced from bundle(s) {', '.join(borrowed)} "
                f"({sum(p.rows for p in d.parts if not p.path.startswith(own))} of {d.rows} rows)"
            )
        elif d.extends:
            click.echo(f"  incremental: extends bundle {d.extends}; high-water mark {json.dumps(d.state)[:500]}")
        if d.id_types:
            click.echo("  ids: " + ", ".join(f"{n} {t}" for t, n in d.id_types.items()))
        for p in d.all_parts():
            link = d.link_of(p)
            role = "index" if link and p in link.index else "tombstones" if link and p in link.tombstones else "part"
            click.echo(f"  {role} {p.path}  {p.rows} rows  {size(p.bytes)}  sha256 {p.sha256[:16]}…")


def _chain_lines(dataset: Any, bundle_id: str) -> list[str]:
    """What `show` says of a chained dataset: its links, oldest (the full backup) first."""
    links = dataset.chain
    if len(links) == 1:
        return ["full backup (with a record index: the next backup can be incremental)"]
    lines = [f"incremental: link {len(links) - 1} after the full backup {links[0].bundle}; extends {dataset.extends}"]
    for n, link in enumerate(links):
        what = "full" if n == 0 else f"+{link.added} added, ~{link.changed} changed, -{link.deleted} deleted"
        mine = " (this bundle)" if link.bundle == bundle_id else ""
        lines.append(f"  link {n}: {link.bundle}{mine}: {link.rows} records written ({what})")
    return lines


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
            f"recall@{baseline.k} {_recall(v.recall)} ({v.index.get('store', '?')}, {how})"
        )
    if baseline.golden is not None:
        g = baseline.golden
        lines.append(f"golden queries: {g.queries}, source recall {g.recall:.3f} (file sha256 {g.sha256[:16]}…)")
    return lines + [f"search baseline: {note}" for note in baseline.notes]


@click.command()
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
        from aibackup.chunkcheck import UNPLACED  # loaded by the verify already
        from aibackup.chunks import UNINDEXED_HINT

        if any(UNPLACED in p.problem for p in result.problems):  # said once, not on every chunk's line
            click.echo(f"note: chunks no index file places: {UNINDEXED_HINT}")
    if not result.ok:
        sys.exit(EXIT_INTEGRITY)


@click.command()
@click.argument("bundles", nargs=-1, metavar="[BUNDLE|latest]...")
@click.option(
    "--to-repo", "to_repo", required=True, help="The repository to copy into (created when missing or empty)."
)
@click.option(
    "--to-key-file",
    default=None,
    help="The destination's key (a passphrase file), when it has a key slot of its own; default: the source's key.",
)
@key_file_option
@repo_option
@config_option
@json_option
def copy(
    bundles: tuple[str, ...],
    to_repo: str,
    to_key_file: str | None,
    key_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Copy the bundles (all by default) that the repository TO_REPO lacks into it: every part, chain link and
    chunk pack they need, re-hashed on the way, manifests last. Exits 1 if a bundle could not be copied."""
    url, config = resolve(repo, config_path)
    key_file = key_file or (config.key_file if config else None)
    result = open_repository(url).copy(bundles, to_repo=to_repo, key_file=key_file, to_key_file=to_key_file)
    if as_json:
        emit_json(result.to_json())
    else:
        if result.destination_created:
            click.echo(f"created repository at {to_repo} (a copy of {url}: same id and key slots)")
        if result.slot_added:
            click.echo(
                f"added key slot {result.slot_added} to {to_repo} for {to_key_file} (no slot of {url} opens for it)"
            )
        if result.generations_added:
            ids = ", ".join(map(str, result.generations_added))
            click.echo(f"master key(s) {ids} of {url} (rotated there) added to {to_repo}'s key slots")
        for bundle_id in result.copied:
            click.echo(f"copied   {bundle_id}")
        for bundle_id, problem in result.failed:
            click.echo(f"FAILED   {bundle_id}: {problem}")
        for path in result.repaired:
            click.echo(f"repaired {path} (damaged or missing in {to_repo}; copied again, proven by {url}'s manifest)")
        click.echo(
            f"{len(result.copied)} copied, {len(result.skipped)} already there, {len(result.failed)} failed; "
            f"{size(result.bytes)} in {result.seconds:.1f} s"
        )
    if result.error is not None:  # after what did land, never instead of it
        echo_error(result.error, as_json)
        sys.exit(result.error.exit_code)
    if not result.ok:
        sys.exit(EXIT_INTEGRITY)


@click.command()
@click.argument("bundle_a", metavar="BUNDLE_A")
@click.argument("bundle_b", metavar="BUNDLE_B")
@click.option(
    "--collection",
    "collections",
    multiple=True,
    metavar="NAME",
    help="Compare only this collection (repeatable). Default: every collection of either bundle.",
)
@click.option(
    "--limit",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="List at most N ids of each kind (added, changed, deleted) per collection; 0: counts only.",
)
@key_file_option
@repo_option
@config_option
@json_option
def diff(
    bundle_a: str,
    bundle_b: str,
    collections: tuple[str, ...],
    limit: int,
    key_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """The records added, changed and deleted from BUNDLE_A to BUNDLE_B (ids, unique prefixes, or
    `latest`), two bundles of one source, per collection: exact counts, then the ids."""
    url, config = resolve(repo, config_path)
    result = open_repository(url).diff(
        bundle_a, bundle_b, collections, limit=limit, key_file=key_file or (config.key_file if config else None)
    )
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(f"from {result.a} to {result.b} ({result.source.get('kind')} {result.source.get('uri')})\n")
    table(
        ["COLLECTION", "ADDED", "CHANGED", "DELETED"],
        [[d.name, str(d.added), str(d.changed), str(d.deleted)] for d in result.datasets],
    )
    for d in result.datasets:
        if not d.total or not limit:
            continue
        click.echo(f"\ncollection {d.name!r}:")
        for kind, mark, count in (("added", "+", d.added), ("changed", "~", d.changed), ("deleted", "-", d.deleted)):
            listed = d.ids[kind]
            for record_id in listed:
                click.echo(f"{mark} {record_id}")
            more = count - len(listed)
            if more:
                click.echo(f"… and {more} more {kind}")
    for d in result.datasets:
        if d.settings:  # every record may be equal, and the restored collections still differ
            click.echo(f"\ncollection {d.name!r}: settings changed: {', '.join(d.settings)}")
    if result.same:
        click.echo("\nno differences")
    elif not result.total:
        click.echo("\nno record differs")


@click.command()
@click.argument("bundle", required=False)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="TARGET",
    help="qdrant, chroma, lancedb, milvus (embedded under ./aibackup-restore/), qdrant:PATH, chroma:PATH, "
    "lancedb:PATH, milvus:PATH, qdrant+http://HOST:PORT, chroma+http://HOST:PORT, milvus+http://HOST:PORT, "
    "pgvector://[USER@]HOST[:PORT]/DB, or a conversations/finetune/config target.",
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
    type=click.IntRange(0, MAX_QUERIES),
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
@click.option(
    "--load-check",
    is_flag=True,
    help="Models: also open every restored safetensors file with the safetensors library and compare each "
    "tensor's shape and dtype with its header.",
)
@dask_options(
    "Vectors: validate and load each collection's parts on a local Dask cluster of N processes, where the "
    "target can take it (pgvector, LanceDB, a Chroma or Milvus server; published once); needs aibackup[dask].",
    "target",
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
    load_check: bool,
    workers: int | None,
    dask_address: str | None,
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
        load_check=load_check,
        workers=workers,
        dask=dask_address,
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


COMMANDS = [list_, show, verify, copy, diff, restore]


def _recall(value: float | None) -> str:
    return "not measured (incremental backup)" if value is None else f"{value:.3f}"
