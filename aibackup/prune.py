"""The prune verb: remove the bundles no keep rule wants, then the parts nothing references; and pins.

What ``run_prune`` does, in this order (nothing is removed before every decision is made):

1. **Decide.** Every manifest is loaded. Bundles are grouped by their manifest's source (kind and uri) and
   each group gets its own policy (``policies(source)``; ``None`` keeps every bundle of that source); the
   keep rules are those of :mod:`aibackup.retention`. A policy without any rule is refused (UsageError)
   before anything is removed. A pinned bundle (``pins/<bundle-id>``) is always kept. So is a bundle whose
   parts (its chain's included) are not all in the listing of ``data/`` with their manifest sizes: it
   cannot be restored, so it takes no keep rule's place (``--keep-last 1`` after a damaged nightly link
   keeps the intact bundle before it too), and it is not removed either (``verify`` says what is wrong).
2. **Remove manifests.** A bundle stops existing when its manifest goes, so manifests go first: a prune
   interrupted after this step leaves only unreferenced parts, which the next prune removes.
3. **Remove the parts of the removed bundles that no remaining manifest references.** A manifest lists
   every part it needs, including the parts of the bundles an incremental bundle extends, so "a part any
   remaining manifest lists is kept" keeps every chain restorable. The bundle list is read again after
   step 2: a manifest committed meanwhile keeps what it references too.
4. **Remove orphan parts**: files under ``data/<bundle-id>/`` that no manifest references (the parts of a
   backup that crashed before its commit). They go only after the **grace period** (default 24 hours),
   counted for a whole ``data/<bundle-id>/`` folder from its most recent sign of life: the time in the
   bundle id (when its backup started) or the storage modification time of any file in the folder,
   whichever is **later**. So a backup still writing, however long it has been running, keeps all of its
   parts as long as it wrote one within the grace period; a file whose modification time the storage does
   not give is never removed. Anything under ``data/`` that is not in a ``data/<bundle-id>/`` folder is not
   ours and is left alone. (``prune`` should also hold the repository lock that excludes running backups;
   the grace period does not rely on it.) On S3, the **multipart uploads** a crashed run left open (never
   completed: S3 bills their parts, yet no listing of objects shows them) go too, begun before the grace
   period, with the same lock keeping a running backup's out of the way (``uploads_aborted``).

5. **Remove the run reports no reader needs any more** (``reports/``, :func:`aibackup.reports.superseded`):
   a verify report that no longer decides whether a remaining bundle counts as verified and is not the
   newest word on a damaged part still stored (nor a repair that a kept damage report needs); a backup or
   restore-test report older than the oldest remaining bundle that names none that remains and is not its
   source's newest or newest success. Reports are history, never data: this keeps what every backup
   reads of them (the damaged parts a chain must not extend) from growing night after night.

**Unreadable manifests** (damaged, or written by a newer aibackup) are never removed, and while one exists
no part at all is removed (steps 3 and 4 are skipped; the result's ``notes`` say so): such a manifest may
reference its own parts, the parts of the bundles it extends, or, in a newer format, anything. Steps 1
and 2 still run (removing other manifests never takes a byte any bundle needs); the parts they free
become orphans that the first prune after the manifest is repaired or removed takes away.

``--dry-run`` computes exactly the same result and removes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aibackup import clock, reports
from aibackup.chunkprune import ChunkPruneResult, PackFile, absent_packs, prune_chunks
from aibackup.chunks import INDEX, ChunkIndex, is_pack
from aibackup.errors import (
    AibackupError,
    BundleNotFoundError,
    IntegrityError,
    ManifestVersionError,
    UsageError,
)
from aibackup.lock_files import CLOCK_SKEW
from aibackup.manifests.model import BundleManifest
from aibackup.repository import DATA, Repository, id_time, iso
from aibackup.retention import NO_RULE, Candidate, Decision, KeepPolicy, decide, is_empty, series_key
from aibackup.storage import AlreadyExistsError

if TYPE_CHECKING:
    from aibackup.config import Config, RetentionPolicy

PINS = "pins"
DEFAULT_GRACE = dt.timedelta(hours=24)

Policies = Callable[[Mapping[str, object]], KeepPolicy | None]


@dataclass
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove) and why the rest stays."""

    kept: list[Decision]  # manifests that stay, newest first, each with its reasons
    removed: list[Decision]  # manifests removed, newest first
    parts_removed: list[str]  # parts of removed bundles that no remaining manifest references
    bytes_removed: int  # of parts_removed and orphans_removed
    orphans_removed: list[str]  # unreferenced parts older than the grace period
    orphans_waiting: list[str]  # unreferenced parts within the grace period (maybe a running backup's)
    dry_run: bool
    notes: list[str] = field(default_factory=list)  # why parts were held back, what was left alone
    #: Parts written by removed bundles that stay: the chains of kept bundles still read them.
    parts_kept_for_chains: list[str] = field(default_factory=list)
    #: The chunk store's prune (model files): packs removed and repacked (aibackup.chunkprune).
    chunks: ChunkPruneResult = field(default_factory=ChunkPruneResult)
    #: Run reports no reader needs any more (aibackup.reports.superseded).
    reports_removed: list[str] = field(default_factory=list)
    #: S3 multipart uploads of crashed runs, never completed, begun before the grace period (aborted).
    uploads_aborted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The `prune --json` document."""
        return {
            "dry_run": self.dry_run,
            "kept": [{"bundle_id": d.bundle_id, "reasons": list(d.reasons)} for d in self.kept],
            "removed": [{"bundle_id": d.bundle_id, "reasons": list(d.reasons)} for d in self.removed],
            "parts_removed": list(self.parts_removed),
            "parts_kept_for_chains": list(self.parts_kept_for_chains),
            "orphans_removed": list(self.orphans_removed),
            "orphans_waiting": list(self.orphans_waiting),
            "bytes_removed": self.bytes_removed,
            "chunks": self.chunks.to_json(),
            "reports_removed": list(self.reports_removed),
            "uploads_aborted": list(self.uploads_aborted),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Stored:
    size: int
    modified: dt.datetime | None  # None: the storage did not say


def run_prune(
    repo: Repository,
    policies: Policies,
    *,
    dry_run: bool = False,
    grace: dt.timedelta = DEFAULT_GRACE,
    now: dt.datetime | None = None,
) -> PruneResult:
    """Apply the retention policy of each source to `repo` and remove what no rule keeps (see the module
    docstring for the order and the safety rules).

    `policies(source)` gives the policy for a bundle's source mapping (``{"kind", "uri"}``), or None to
    keep every bundle of that source. Raises UsageError for a source whose policy has no rule and for a
    negative grace period, before anything is removed; storage errors pass through (UnavailableError).
    """
    if grace < dt.timedelta(0):
        raise UsageError("the grace period for orphan parts must not be negative")
    moment = (now or clock.now()).astimezone(dt.UTC)
    good, bad = repo.scan()
    pins = pinned(repo)
    stored = _list_data(repo)  # before anything goes: what a backup writes after this is never seen
    index = _chunk_index(repo)
    broken = {m.bundle_id: n for m in good if (n := _absent_parts(repo, m, stored, index))}

    decisions: list[Decision] = [
        Decision(bundle_id, True, (_BROKEN.format(n=n), *_pin(bundle_id, pins))) for bundle_id, n in broken.items()
    ]
    groups: dict[str, list[BundleManifest]] = {}
    for manifest in good:
        if manifest.bundle_id not in broken:  # a bundle that cannot be restored takes no keep rule's place
            groups.setdefault(series_key(manifest), []).append(manifest)
    for manifests in groups.values():
        source = manifests[0].source
        policy = policies(source)
        if policy is None:
            decisions += [
                Decision(m.bundle_id, True, ("no retention policy for this source", *_pin(m.bundle_id, pins)))
                for m in manifests
            ]
            continue
        if is_empty(policy):
            raise UsageError(f"{NO_RULE} (source {_source_name(source)})")
        candidates = [Candidate(m.bundle_id, _created(m), m.bundle_id in pins) for m in manifests]
        decided = decide(candidates, policy, moment)
        if not any(d.keep for d in decided):  # every rule keeps the newest bundle: never empty a source
            raise AssertionError(f"retention would remove every bundle of {_source_name(source)}")
        decisions += decided
    decisions += [Decision(d.bundle_id, True, (f"unreadable: {d.problem}", *_pin(d.bundle_id, pins))) for d in bad]
    decisions.sort(key=lambda d: d.bundle_id, reverse=True)  # ids sort by time: newest first

    gone = {d.bundle_id for d in decisions if not d.keep}
    removed_manifests = [m for m in good if m.bundle_id in gone]
    referenced = {p.path for m in good if m.bundle_id not in gone for d in m.datasets for p in d.all_parts()}

    if not dry_run:
        for manifest in removed_manifests:
            repo.storage.remove(repo.manifest_path(manifest.bundle_id))

    # A manifest committed since the scan (the lock should prevent it; never rely on that alone).
    unreadable = [d.bundle_id for d in bad]
    known = {m.bundle_id for m in good} | set(unreadable)
    remaining = [m for m in good if m.bundle_id not in gone]
    for bundle_id in repo.bundle_ids():
        if bundle_id in known:
            continue
        try:
            late = repo.load(bundle_id)
            remaining.append(late)
            referenced |= {p.path for d in late.datasets for p in d.all_parts()}
        except (IntegrityError, ManifestVersionError):
            unreadable.append(bundle_id)
        except BundleNotFoundError:
            pass

    freed = {p.path for m in removed_manifests for d in m.datasets for p in d.all_parts()} - referenced
    # What the removed bundles wrote that a kept bundle's chain still reads: it stays (their links).
    own = {f"{DATA}/{m.bundle_id}/" for m in removed_manifests}
    chained = sorted(p for p in referenced if p.split("/", 2)[0] + "/" + p.split("/", 2)[1] + "/" in own)
    parts = sorted(p for p in freed if p in stored)
    missing = len(freed) - len(parts)
    orphans, waiting, foreign = _orphans(stored, referenced | freed, moment, grace)
    chunks = ChunkPruneResult()
    if not unreadable:  # the chunk store: reference counts over what remains (aibackup.chunkprune)
        chunks = prune_chunks(repo, remaining, _packs(stored, moment, grace), dry_run=dry_run, now=moment)

    notes: list[str] = []
    if missing:
        notes.append(f"{missing} part(s) of removed bundles were already missing")
    if foreign:
        notes.append(f"{len(foreign)} file(s) under {DATA}/ outside any {DATA}/<bundle-id>/ folder left alone")
    if unreadable:
        held = parts + orphans
        notes.append(
            f"no part removed: {len(unreadable)} manifest(s) cannot be read ({', '.join(sorted(unreadable))}) and "
            f"may reference any part; {len(held)} part(s), {sum(stored[p].size for p in held)} bytes, are held "
            "until they are repaired or removed"
        )
        parts, orphans = [], []
    result = PruneResult(
        kept=[d for d in decisions if d.keep],
        removed=[d for d in decisions if not d.keep],
        parts_removed=parts,
        bytes_removed=sum(stored[p].size for p in parts + orphans),
        orphans_removed=orphans,
        orphans_waiting=waiting,
        dry_run=dry_run,
        notes=notes,
        parts_kept_for_chains=chained,
        chunks=chunks,
    )
    notes += chunks.notes
    if not dry_run:
        for path in parts + orphans:
            repo.storage.remove(path)
        repo.storage.remove_emptied_folders(parts + orphans + chunks.packs_removed + chunks.packs_repacked, DATA)
    # Reports last: a prune stopped before this point leaves only history the next one removes.
    left = set(stored).difference(parts, orphans, chunks.packs_removed, chunks.packs_repacked)
    result.reports_removed = reports.superseded(repo, {m.bundle_id for m in remaining} | set(unreadable), left)
    if not dry_run:
        for path in result.reports_removed:
            repo.storage.remove(path)
    # Uploads a crashed run left open (S3 bills their parts; no listing of objects shows them), by the same
    # grace period as orphan parts: a running backup's are younger. Parts and packs go up under data/, a large
    # chunk index file under index/. Last, and never failing the prune: what it removed stands.
    try:
        result.uploads_aborted = repo.storage.unfinished_uploads((DATA, INDEX), moment - grace, abort=not dry_run)
    except AibackupError as exc:  # e.g. credentials without s3:ListBucketMultipartUploads
        notes.append(f"unfinished uploads not checked: {exc}")
    return result


#: Why a bundle with parts missing (or of another size than its manifest's) is kept outside the keep rules.
_BROKEN = (
    "damaged: {n} part(s) missing or of the wrong size (`aibackup verify`); kept, and not counted by the keep "
    "rules, so that it does not take the place of a bundle that restores"
)


def _absent_parts(
    repo: Repository, manifest: BundleManifest, stored: Mapping[str, _Stored], index: ChunkIndex | None
) -> int:
    """How many parts `manifest` needs (its chain's included) are missing from `stored` or of another size,
    and how many chunk packs its model files need are missing: damage the listing shows (a model bundle's
    file table read, no pack), as ``status`` finds a source's newest intact bundle. `index`: None when the
    chunk index cannot be read (then packs are not looked at; the chunk store's prune says so)."""
    needed = {p.path: p.bytes for d in manifest.datasets for p in d.all_parts()}
    absent = sum(1 for path, size in needed.items() if path not in stored or stored[path].size != size)
    if absent or index is None:
        return absent
    return absent_packs(repo, manifest, index, stored.__contains__)


def _chunk_index(repo: Repository) -> ChunkIndex | None:
    try:
        return ChunkIndex.load(repo)
    except AibackupError:
        return None


# --- pins ------------------------------------------------------------------------------------------------


def policies_for(config: Config | None, rules: RetentionPolicy) -> Policies:
    """Each source's policy by its manifest's source: the `rules` when any is set, else the config's (per
    source, then global). UsageError when there is neither."""
    from aibackup.connectors.registry import parse_location

    if not rules.is_empty():
        return lambda _source: rules
    if config is None:
        raise UsageError("no keep rule: pass --keep-last N (or another --keep-*) or set retention in the config")
    per_uri = {parse_location(s.uri).display(): config.retention_for(s.name) for s in config.sources.values()}
    default = config.retention
    return lambda source: per_uri.get(str(source.get("uri")), default)


def pin(repo: Repository, bundle_id: str) -> None:
    """Pin a bundle (an id or a unique prefix of one) so that prune never removes it.

    Writes ``pins/<bundle-id>`` exclusively (``{"bundle_id", "pinned_at"}``); pinning twice is fine and
    keeps the first time. Raises BundleNotFoundError for an unknown or ambiguous bundle.
    """
    full = repo.match_id(bundle_id)
    doc = {"bundle_id": full, "pinned_at": iso(clock.now())}
    with contextlib.suppress(AlreadyExistsError):
        repo.storage.write_exclusive(f"{PINS}/{full}", (json.dumps(doc) + "\n").encode())


def unpin(repo: Repository, bundle_id: str) -> None:
    """Remove the pin of a bundle (an id or a unique prefix); unpinning a bundle that is not pinned is
    fine. Raises BundleNotFoundError when neither a bundle nor a pin matches."""
    pins = pinned(repo)
    if bundle_id not in pins:
        try:
            bundle_id = repo.match_id(bundle_id)
        except BundleNotFoundError:
            # The pin of a bundle whose manifest is gone can still be removed.
            matches = [p for p in pins if p.startswith(bundle_id)] if bundle_id else []
            if len(matches) != 1:
                raise
            bundle_id = matches[0]
    repo.storage.remove(f"{PINS}/{bundle_id}")


def pinned(repo: Repository) -> set[str]:
    """Ids of the pinned bundles (the names under ``pins/``; other names are ignored)."""
    return {name for name in repo.storage.list_names(PINS) if id_time(name) is not None}


# --- helpers ---------------------------------------------------------------------------------------------


def _pin(bundle_id: str, pins: set[str]) -> tuple[str, ...]:
    return ("pinned",) if bundle_id in pins else ()


def _source_name(source: Mapping[str, Any]) -> str:
    return str(source.get("uri") or source.get("kind") or "unknown")


def _created(manifest: BundleManifest) -> dt.datetime:
    """When the bundle was made, for the keep rules: the time in its id. Ids sort in the order bundles were
    made, also after the clock stepped back (a new id is moved past the newest one, see
    ``repository.new_bundle_id``), and ``latest`` and ``status`` go by them; ``created_at`` is the clock's own
    reading, and ranking by it made prune remove the newest bundle as if it were older."""
    moment = id_time(manifest.bundle_id)
    assert moment is not None  # Repository.bundle_ids lists only ids with a time
    return moment


def _orphans(
    stored: Mapping[str, _Stored], referenced: set[str], now: dt.datetime, grace: dt.timedelta
) -> tuple[list[str], list[str], list[str]]:
    """Unreferenced files under data/: (past the grace period, within it, not in a data/<bundle-id>/ folder).

    A folder's age runs from its latest sign of life: its bundle id's time or the modification time of any
    file in it (referenced or not), so a backup that is still writing keeps every part it wrote.
    """
    folders: dict[str, list[str]] = {}
    foreign: list[str] = []
    for path in stored:
        if is_pack(path):
            continue  # chunk packs: the chunk store's prune decides (aibackup.chunkprune)
        _, bundle_id, *rest = path.split("/")
        if rest and id_time(bundle_id) is not None:
            folders.setdefault(bundle_id, []).append(path)
        elif path not in referenced:
            foreign.append(path)
    old: list[str] = []
    young: list[str] = []
    for bundle_id, paths in folders.items():
        unreferenced = [p for p in paths if p not in referenced]
        if not unreferenced:
            continue
        expired = _expired(bundle_id, [stored[p].modified for p in paths], now, grace)
        (old if expired else young).extend(unreferenced)
    return sorted(old), sorted(young), sorted(foreign)


def _expired(bundle_id: str, times: Sequence[dt.datetime | None], now: dt.datetime, grace: dt.timedelta) -> bool:
    """Whether a ``data/<bundle-id>/`` folder (its files' modification times: `times`) showed its last sign
    of life more than `grace` ago: its bundle id's time or any file's, whichever is later. A time the storage
    does not give keeps the folder young."""
    started = id_time(bundle_id)
    known = [t for t in times if t is not None]
    if started is None or len(known) != len(times):
        return False
    # A bundle id dated in the future (a run under a later AIBACKUP_NOW, a clock running ahead) would keep
    # its folder young for ever: then only the files' own modification times count.
    signs = known if started > now + CLOCK_SKEW and known else [started, *known]
    return now - max(signs) >= grace


def _packs(stored: Mapping[str, _Stored], now: dt.datetime, grace: dt.timedelta) -> dict[str, PackFile]:
    """The chunk packs among `stored`, each young unless its folder expired (the rule of orphan parts)."""
    folders: dict[str, list[dt.datetime | None]] = {}
    for path, info in stored.items():
        folders.setdefault(path.split("/")[1], []).append(info.modified)
    return {
        path: PackFile(info.size, not _expired(path.split("/")[1], folders[path.split("/")[1]], now, grace))
        for path, info in stored.items()
        if is_pack(path)
    }


def _list_data(repo: Repository) -> dict[str, _Stored]:
    """Every file under data/ (relative path -> size, modification time). Only prune lists data/."""
    storage = repo.storage
    base = storage.full(DATA)
    with storage._errors(DATA):
        try:
            found: Mapping[str, Mapping[str, Any]] = storage.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
    root = storage.full("").rstrip("/") + "/"
    listing: dict[str, _Stored] = {}
    for path, info in found.items():
        # Local paths are absolute like the root; s3fs gives "bucket/prefix/...", as the root is kept.
        name = str(path)
        if info.get("type") == "directory" or not name.startswith(root):
            continue
        rel = name[len(root) :]
        if rel.startswith(f"{DATA}/"):
            listing[rel] = _Stored(int(info.get("size") or 0), _modified(info))
    return listing


def _modified(info: Mapping[str, Any]) -> dt.datetime | None:
    """The modification time fsspec reports (local: ``mtime`` epoch seconds; S3: ``LastModified``)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value, dt.UTC)
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return None
