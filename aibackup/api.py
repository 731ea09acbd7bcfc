"""The Python API: what schedulers (Airflow, Dagster, Prefect) and notebooks call. The command line is a
thin layer over it: each command parses its flags, calls one method here and prints the result.

::

    import aibackup
    repo = aibackup.Repository.open("s3://backups/ai", create=True)
    result = repo.backup("chroma:./data/chroma", collections=["docs"])
    restored = repo.restore("latest", to="qdrant:./restored", mode="overwrite")
    assert restored.ok, restored.to_json()

Contracts, for every method: errors are :class:`aibackup.AibackupError` subclasses whose ``exit_code`` is
the command line's (README, exit codes); nothing is printed and nothing exits; ``.to_json()`` of a result
is exactly what the same command prints with ``--json``; progress goes to an optional callback
(:class:`aibackup.progress.Progress`). A repository is resolved once, when it is opened, and everything
the methods do goes through that one object.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Self

from aibackup import keys
from aibackup import repository as _repository
from aibackup.config import FULL_EVERY
from aibackup.crypto import passphrase_from
from aibackup.recall_rule import DEFAULT_QUERIES, DEFAULT_TOLERANCE, CheckOptions
from aibackup.repository import storage_of

if TYPE_CHECKING:
    from aibackup.backup import BackupResult
    from aibackup.config import Config
    from aibackup.copy import CopyResult
    from aibackup.diff import DiffResult
    from aibackup.drill import DrillReport
    from aibackup.manifests.model import BundleManifest
    from aibackup.operations import SourcesResult, StatusReport
    from aibackup.progress import Progress
    from aibackup.prune import PruneResult
    from aibackup.repair import IndexRepairResult
    from aibackup.restore import RestoreResult
    from aibackup.verify import VerifyResult


@dataclass(frozen=True)
class BundleList:
    """The bundles of a repository, newest first; a manifest that cannot be read is listed with its
    problem (``ok`` is then False: the command exits 1)."""

    entries: builtins.list[dict[str, Any]] = field(default_factory=builtins.list)

    @property
    def ok(self) -> bool:
        return not any("problem" in e for e in self.entries)

    def to_json(self) -> builtins.list[dict[str, Any]]:
        """The `list --json` document: [{bundle_id, created_at, source, parent, datasets}] or, for a damaged
        manifest, [{bundle_id, created_at: null, datasets: [], problem}]."""
        return [dict(e) for e in self.entries]


def backup(
    repository: _repository.Where | _repository.Repository,
    source: str,
    collections: Sequence[str] = (),
    *,
    queries: int = DEFAULT_QUERIES,
    on_bad_line: str = "fail",
    job_config: str | None = None,
    redact_secrets: bool = False,
    golden_queries: str | None = None,
    key_file: str | None = None,
    progress: Progress | None = None,
    full: bool = False,
    full_every: int = FULL_EVERY,
    allow_lossy: bool = False,
    workers: int | None = None,
    dask: str | None = None,
) -> BackupResult:
    """Back up the store `source` into a new bundle of `repository`: an opened one, or a location where
    one is created when missing or empty, and removed again if this first backup fails (what ``aibackup
    backup SOURCE`` does; :meth:`Repository.backup` for an opened repository).

    A vector collection is backed up incrementally when it can follow the chain of its previous bundle
    (docs/bundle-format.md): `full` forces a full backup; `full_every` is the most incremental links
    after a full backup (0: always full); `allow_lossy` lets a source back up what it holds only
    approximately, saying so (a LanceDB table without an id column: row positions as ids). `workers` (a
    local Dask cluster of that many processes) or `dask` (a scheduler's address; else ``AIBACKUP_DASK``)
    spread a full backup of a collection its source can split over workers (aibackup.distributed)."""
    from aibackup.backup import SourceOptions, run_backup

    options = SourceOptions(
        on_bad_line=on_bad_line,
        job_config=job_config,
        redact_secrets=redact_secrets,
        key_file=key_file,
        queries=queries,
        golden_queries=golden_queries,
        full=full,
        full_every=full_every,
        allow_lossy=allow_lossy,
        workers=workers,
        dask=dask,
    )
    return run_backup(repository, source, collections, source_options=options, progress=progress)


class Repository(_repository.Repository):
    """A backup repository (a local path, ``s3://bucket/prefix``, or any fsspec URL), with the verbs."""

    @classmethod
    def open(
        cls,
        url: _repository.Where,
        *,
        create: bool = False,
        key: str | None = None,
        key_file: str | None = None,
    ) -> Self:
        """Open the repository at `url`. With `create`, a missing or empty location gets a new one
        (encrypted when a `key` or `key_file` is given, else AIBACKUP_KEY_FILE or AIBACKUP_KEY, as a
        backup into a new location does: the passphrase, as ``aibackup init --encrypt``).
        A key given is checked now and used by every method that needs one (else AIBACKUP_KEY, when one
        does). NotARepositoryError (exit 2) without `create` when there is no repository; UsageError for
        a wrong key."""
        storage = storage_of(url)
        given = key.encode("utf-8") if key is not None else passphrase_from(key_file) if key_file else None
        found = cls.find(storage) if create else cls._read(storage)
        if found is None:
            found = cls.init(storage, passphrase=given if given is not None else passphrase_from())
        if given is not None:
            found.passphrase = given
            found.key()  # an encrypted repository: a wrong key stops here
        return found

    # --- backing up ------------------------------------------------------------------------------------

    def backup(
        self,
        source: str,
        collections: Sequence[str] = (),
        *,
        queries: int = DEFAULT_QUERIES,
        on_bad_line: str = "fail",
        job_config: str | None = None,
        redact_secrets: bool = False,
        golden_queries: str | None = None,
        key_file: str | None = None,
        progress: Progress | None = None,
        full: bool = False,
        full_every: int = FULL_EVERY,
        allow_lossy: bool = False,
        workers: int | None = None,
        dask: str | None = None,
    ) -> BackupResult:
        """Back up the store `source` (a URI, docs/stores.md) into a new bundle, as ``aibackup backup``
        (`full`, `full_every`, `allow_lossy`, `workers`, `dask`: see :func:`backup`)."""
        return backup(
            self,
            source,
            collections,
            queries=queries,
            on_bad_line=on_bad_line,
            job_config=job_config,
            redact_secrets=redact_secrets,
            golden_queries=golden_queries,
            key_file=key_file,
            progress=progress,
            full=full,
            full_every=full_every,
            allow_lossy=allow_lossy,
            workers=workers,
            dask=dask,
        )

    def backup_sources(
        self,
        config: str | Config,
        sources: Sequence[str] = (),
        *,
        queries: int = DEFAULT_QUERIES,
        progress: Progress | None = None,
        full: bool = False,
        full_every: int | None = None,
        workers: int | None = None,
        dask: str | None = None,
    ) -> SourcesResult:
        """Back up every source of an aibackup.yaml (or the named ones) into this repository, each on its
        own, as ``aibackup backup`` without SOURCE (`full_every`: over each source's ``full_every``;
        `workers`, `dask`: over the config's ``dask``, see :func:`backup`)."""
        from aibackup.operations import backup_sources

        config_ = self._config(config)
        return backup_sources(
            config_,
            sources,
            progress,
            queries=queries,
            repo=self,
            full=full,
            full_every=full_every,
            workers=workers,
            dask=dask,
        )

    # --- reading -----------------------------------------------------------------------------------------

    def list(self) -> BundleList:
        """Every bundle, newest first, as ``aibackup list``."""
        good, damaged = self.scan()
        entries: builtins.list[dict[str, Any]] = [
            {
                "bundle_id": m.bundle_id,
                "created_at": m.created_at,
                "source": dict(m.source),
                "parent": m.parent,
                "datasets": [{"name": d.name, "kind": d.kind, "rows": d.rows} for d in m.datasets],
            }
            for m in good
        ]
        entries += [
            {"bundle_id": d.bundle_id, "created_at": None, "datasets": [], "problem": d.problem} for d in damaged
        ]
        entries.sort(key=lambda e: e["bundle_id"], reverse=True)
        return BundleList(entries)

    def show(self, ref: str = "latest") -> BundleManifest:
        """One bundle's manifest (an id, a unique prefix, or latest), as ``aibackup show``."""
        return self.resolve(ref)

    def verify(
        self, bundles: Sequence[str] = (), *, read_data: bool = False, key_file: str | None = None
    ) -> VerifyResult:
        """Check bundles (all by default) against their manifests, as ``aibackup verify``; with
        `read_data` every byte is re-hashed, and the result is remembered for ``status``."""
        from aibackup.reports import record_verify
        from aibackup.verify import run_verify

        result = run_verify(self, bundles, read_data=read_data, key_file=key_file)
        if read_data:  # evidence for `status` and the metrics (best effort: a read-only repository loses it)
            record_verify(self, result.bundle_ids, result.ok, [p.to_json() for p in result.problems])
        return result

    def copy(
        self,
        bundles: Sequence[str] = (),
        *,
        to_repo: str,
        key_file: str | None = None,
        to_key_file: str | None = None,
    ) -> CopyResult:
        """Copy the bundles (all by default) that the repository at `to_repo` lacks into it, verified on the
        way, as ``aibackup copy``. A damaged source part fails its bundle only (the result's ``failed``)."""
        from aibackup.copy import run_copy

        return run_copy(self, to_repo, bundles, key_file=key_file, to_key_file=to_key_file)

    def diff(
        self, a: str, b: str, collections: Sequence[str] = (), *, limit: int = 1000, key_file: str | None = None
    ) -> DiffResult:
        """The records added, changed and deleted from bundle `a` to bundle `b` (ids, unique prefixes or
        latest) of one source, per collection (only `collections` when given), as ``aibackup diff``: exact
        counts, and the first `limit` ids of each kind (0: counts only). UsageError (exit 2) for bundles of
        different sources."""
        from aibackup.diff import run_diff

        return run_diff(self, a, b, collections, limit=limit, key_file=key_file)

    # --- restoring ---------------------------------------------------------------------------------------

    def restore(
        self,
        ref: str | None = "latest",
        *,
        to: str,
        collections: Sequence[str] = (),
        mode: str = "create",
        allow_lossy: bool = False,
        layout: str = "auto",
        at: dt.datetime | None = None,
        queries: int | None = None,
        recall_tolerance: float = DEFAULT_TOLERANCE,
        min_recall: float | None = None,
        key_file: str | None = None,
        load_check: bool = False,
        workers: int | None = None,
        dask: str | None = None,
    ) -> RestoreResult:
        """Restore bundle `ref` into the target URI `to` and prove it, as ``aibackup restore``. A failed
        check is not an exception: the result's ``ok`` is False (the command exits 1). `load_check`
        (models): also open every safetensors file with the safetensors library. `workers` / `dask`: a
        partitioned restore on a Dask cluster, as ``--workers`` / ``--dask``. A setting of another kind of
        data than the bundle's (`layout`, `queries`, `min_recall`, `recall_tolerance` for vectors,
        `load_check` for models) is refused (UsageError) before anything is written."""
        from aibackup.restore import run_restore

        return run_restore(
            self,
            ref,
            to,
            collections,
            mode=mode,
            allow_lossy=allow_lossy,
            layout=layout,
            at=at,
            check_options=CheckOptions(queries=queries, min_recall=min_recall, recall_tolerance=recall_tolerance),
            key_file=key_file,
            load_check=load_check,
            workers=workers,
            dask=dask,
            strict=True,
        )

    # --- operations (aibackup.yaml) ----------------------------------------------------------------------

    def restore_test(
        self, config: str | Config, sources: Sequence[str] = (), *, progress: Progress | None = None
    ) -> DrillReport:
        """The drill of an aibackup.yaml's sources against this repository, as ``aibackup restore-test``
        (the report: ``result.write(path)``)."""
        from aibackup.drill import restore_test

        return restore_test(self._config(config), sources, progress, repo=self)

    def status(self, config: str | Config) -> StatusReport:
        """Each configured source's newest intact bundle against its RPO, as ``aibackup status``."""
        from aibackup.operations import StatusReport, status

        return StatusReport(status(self._config(config), repo=self))

    def prune(
        self,
        *,
        keep_last: int | None = None,
        keep_hourly: int | None = None,
        keep_daily: int | None = None,
        keep_weekly: int | None = None,
        keep_monthly: int | None = None,
        keep_yearly: int | None = None,
        keep_within: dt.timedelta | None = None,
        grace: dt.timedelta = dt.timedelta(hours=24),
        dry_run: bool = False,
        config: str | Config | None = None,
    ) -> PruneResult:
        """Forget the bundles outside the keep rules, then the parts nothing references, as ``aibackup
        prune``: the rules given here, else the config's retention (per source)."""
        from aibackup.config import RetentionPolicy
        from aibackup.lock import DEFAULT_STALE_AFTER, RepositoryLock
        from aibackup.prune import policies_for, run_prune

        rules = RetentionPolicy(
            keep_last=keep_last,
            keep_hourly=keep_hourly,
            keep_daily=keep_daily,
            keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
            keep_yearly=keep_yearly,
            keep_within=keep_within,
        )
        loaded = self._config(config) if config is not None else None
        policy = policies_for(loaded, rules)
        stale = loaded.lock_stale_after if loaded else DEFAULT_STALE_AFTER
        with RepositoryLock(self, "prune", "*", stale_after=stale):
            result = run_prune(self, policy, dry_run=dry_run, grace=grace)
            retired = keys.retire(self, dry_run=dry_run)  # an encrypted repository: old keys out of use
        if retired.generations:
            verb = "would be retired" if dry_run else "retired"
            resealed = (
                f" ({retired.resealed} report(s) and pin(s) resealed under the current key)" if retired.resealed else ""
            )
            result.notes.append(f"master key generation(s) {retired.generations} {verb}: no bundle uses them{resealed}")
        if retired.problem:
            result.notes.append(retired.problem)
        return result

    def repair_index(
        self, *, dry_run: bool = False, read_all_packs: bool = False, config: str | Config | None = None
    ) -> IndexRepairResult:
        """Make the chunk index whole again from the packs, as ``aibackup repair index``: index the chunks of
        every pack no intact index file lists (each checked against its id), then remove the damaged index
        files (see :mod:`aibackup.repair`); `read_all_packs`: every pack read, every index file replaced.
        Under the exclusive lock a prune takes (the config's ``lock_stale_after``, when one is given)."""
        from aibackup.lock import DEFAULT_STALE_AFTER, RepositoryLock
        from aibackup.repair import run_repair_index

        self.key()  # a wrong key stops here, before the lock is written
        stale = self._config(config).lock_stale_after if config is not None else DEFAULT_STALE_AFTER
        with RepositoryLock(self, "prune", "*", stale_after=stale, purpose="repair index"):
            return run_repair_index(self, dry_run=dry_run, read_all_packs=read_all_packs)

    # --- keys ------------------------------------------------------------------------------------------

    def keys(self, *, key_file: str | None = None) -> dict[str, Any]:
        """The key slots (never a key) and master key generations of an encrypted repository, as
        ``aibackup key list --json``."""
        return keys.describe(self, key_file)

    def add_key(
        self, *, passphrase: str | None = None, kms_key_id: str | None = None, key_file: str | None = None
    ) -> dict[str, Any]:
        """Add a key slot: a new passphrase, or an AWS KMS key. Returns the slot (id, type)."""
        from aibackup.lock import RepositoryLock

        self.key(key_file)  # a wrong key stops here, before the lock is written
        with RepositoryLock(self, "prune", "*", purpose="key add"):
            # surrogateescape: the CLI hands over a key file's or $AIBACKUP_NEW_KEY's bytes that are not UTF-8
            # decoded that way; they go back to exactly those bytes (strict UTF-8 crashed on them).
            given = passphrase.encode("utf-8", "surrogateescape") if passphrase is not None else None
            return keys.add(self, passphrase=given, kms_key_id=kms_key_id, key_file=key_file)

    def remove_key(self, slot_id: str, *, key_file: str | None = None) -> dict[str, Any]:
        """Remove a key slot (an id or a unique prefix): not the last, not the one opening the repository."""
        from aibackup.lock import RepositoryLock

        self.key(key_file)
        with RepositoryLock(self, "prune", "*", purpose="key remove"):
            return keys.remove(self, slot_id, key_file)

    def rotate_key(self, *, key_file: str | None = None) -> dict[str, Any]:
        """A new master key for the bundles from now on (old ones stay readable); its generation."""
        from aibackup.lock import RepositoryLock

        self.key(key_file)
        with RepositoryLock(self, "prune", "*", purpose="key rotate"):
            return keys.rotate(self, key_file)

    def pin(self, ref: str) -> str:
        """Pin a bundle (an id, a unique prefix, or latest): prune never removes it. Returns its id."""
        from aibackup.prune import pin

        bundle_id = self.resolve(ref).bundle_id
        pin(self, bundle_id)
        return bundle_id

    def unpin(self, ref: str) -> str:
        """Unpin a bundle: prune applies the keep rules to it again. Returns its id."""
        from aibackup.prune import pinned, unpin

        # A pin may outlive its bundle's manifest: an exact pinned id is unpinned as it is.
        bundle_id = ref if ref in pinned(self) else self.resolve(ref).bundle_id
        unpin(self, bundle_id)
        return bundle_id

    def _config(self, config: str | Config) -> Config:
        """An aibackup.yaml (a path, or loaded), its repository this one."""
        from aibackup.config import load_config

        loaded = load_config(config) if isinstance(config, str) else config
        return replace(loaded, repository=self.storage.url)
