"""The backup verb: export a store's collections into a new bundle, committed last.

Order of operations (DESIGN.md "Commit order"): describe the source, stream each collection into Parquet
parts (sha256 computed while writing), then write the manifest exclusively. Until the manifest exists the
bundle does not exist: a crash leaves at most unreferenced parts, never a partial bundle; an error or an
interrupt also removes the parts it wrote.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aibackup import __version__
from aibackup.bundle import BundleWriter, WriteOptions
from aibackup.errors import AibackupError, UsageError
from aibackup.pipeline import prefetch, steady_memory
from aibackup.repository import Repository, iso, utc_now
from connectors.registry import open_connector
from manifests.model import BundleManifest, DatasetManifest

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BackupResult:
    manifest: BundleManifest
    repository_created: bool
    seconds: float

    def to_json(self) -> dict[str, object]:
        """The `backup --json` contract: bundle_id and datasets [{name, kind, rows}] (extended, not changed)."""
        return {
            "bundle_id": self.manifest.bundle_id,
            "datasets": [{"name": d.name, "kind": d.kind, "rows": d.rows} for d in self.manifest.datasets],
            "parent": self.manifest.parent,
            "seconds": round(self.seconds, 3),
        }


def source_identity(source: Mapping[str, object]) -> tuple[object, object]:
    return (source.get("kind"), source.get("uri"))


def run_backup(
    repo_url: str,
    source_uri: str,
    collections: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
    options: WriteOptions | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    """Back up `collections` (all when empty) of the store at `source_uri` into a new bundle."""
    if len(set(collections)) != len(collections):
        raise UsageError("a collection is named twice in --collection")
    started = utc_now()
    say = progress or (lambda _msg: None)
    with open_connector(source_uri) as connector:
        descriptions = connector.describe(list(collections) or None)
        if not descriptions:
            raise UsageError(f"{connector.location.display()} holds no collections: nothing to back up")
        repo, created = Repository.open_or_init(repo_url)
        bundle_id = repo.next_bundle_id(now or started)
        writer = BundleWriter(repo, bundle_id, options)
        datasets: list[DatasetManifest] = []
        try:
            with steady_memory():
                for index, description in enumerate(descriptions):
                    say(f"backing up {description.name} ({description.rows} rows)")
                    dataset = writer.write_dataset(
                        index, description, prefetch(connector.export(description)), connector.id_types
                    )
                    datasets.append(dataset)
            source = {"kind": connector.kind, "uri": connector.location.display()}
            manifest = BundleManifest(
                bundle_id=bundle_id,
                created_at=iso(now or started),
                tool_version=__version__,
                source=source,
                datasets=tuple(datasets),
                parent=_parent(repo, source),
            )
            repo.commit(manifest)
        except BaseException:
            # An error or Ctrl-C: no manifest, so no bundle; remove the parts too. (A crash leaves them as
            # unreferenced orphans, which no reader ever looks at.)
            writer.discard()
            raise
    return BackupResult(manifest, created, (utc_now() - started).total_seconds())


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
