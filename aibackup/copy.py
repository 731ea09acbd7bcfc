"""The copy verb: the bundles a second repository lacks, copied into it byte for byte and verified on the way.

``run_copy(source, destination, refs)`` copies every bundle of `source` (or the named ones) that
`destination` does not hold yet, oldest first, with every part its manifest lists (a chain's earlier links,
a file kind's referenced parts) and, for model bundles, every chunk pack its files need. The bytes are the
source's own (an encrypted repository's parts and documents stay sealed), so bundle ids, manifests, MACs and
part hashes are the same in both repositories: ``restore``, ``verify``, ``list`` and ``--at`` behave the same
on the copy.

Nothing unverified is copied: each part is hashed while it streams and must give its manifest's sha256 and
size before its upload completes (else it is discarded and the bundle fails, naming the part; the other
bundles still copy); each chunk pack is read and every chunk checked against its id before it is written.
Per bundle, in the commit order of a backup: parts, packs, the destination's index file for the packs it
was given, then the manifest, written exclusively, last. An interrupted copy therefore leaves no partial
bundle, only unreferenced parts (which a rerun reuses when their size is right, and prune removes after its
grace period otherwise); a second run copies nothing.

A part (or chunk pack) the destination holds but found damaged (a `verify --read-data` or restore of it
recorded so, see :func:`aibackup.reports.damaged_parts`) is not reused: it is copied again over the damaged
one, proven by the source manifest's sha256 as any part before it replaces the damaged one whole (which
stays as it was if the new one never completes), and the repair recorded in the destination
(:func:`aibackup.reports.record_repair`), so that its next backups may build on it again. That covers the
bundles a run copies and, for the bundles the destination already holds, those named or all (not the
nightly copy's, which takes only newer bundles): ``copy --to-repo PRIMARY`` from a copy repairs the primary.
Those held bundles are made whole the same way where the destination lost something without a reader
noticing: a part or pack missing or of another size is copied again, and a manifest that does not load
(damaged, or its MAC wrong) is replaced by the source's, after its parts (a second run of an unchanged pair
reads each manifest on both sides and lists each bundle folder once; it writes nothing).

The destination is a repository of its own (its own locks, retention, reports). A missing or empty one is
created with the source's marker (same repository id and, when encrypted, the same key slots: the same
passphrase opens it; add slots of its own with ``aibackup key add``). An existing destination must match:
copying between an encrypted and an unencrypted repository is refused, and an encrypted destination must be
the same repository (its id). Master key generations the source gained by ``key rotate`` are added to the
destination's keyring (its own slots re-wrapped); one rotated on its own in the destination is refused.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aibackup import keyring as keyslots
from aibackup import keys, reports
from aibackup.chunk_writer import PackWriter
from aibackup.chunkprune import referenced_chunks
from aibackup.chunks import (
    INDEX,
    ChunkIds,
    ChunkIndex,
    Stored,
    index_bytes,
    is_pack,
    last_index_name,
    new_writer_id,
    pack_chunks,
    pack_problem,
)
from aibackup.crypto import RepositoryKey, passphrase_from
from aibackup.errors import AibackupError, IntegrityError, UnavailableError, UsageError
from aibackup.lock import RepositoryLock
from aibackup.manifests.model import BundleManifest, PartEntry
from aibackup.repository import MARKER, Repository, Where, marker_bytes, storage_of
from aibackup.retention import series_key
from aibackup.spool import PARTS_AT_ONCE
from aibackup.storage import AlreadyExistsError, Storage
from aibackup.vault import bundle_of_part


@dataclass
class CopyResult:
    """What a copy did: bundles copied, already there, failed (with why); bytes moved."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    destination_created: bool = False
    #: The passphrase slot a destination created for the copy's own key got (None: none was needed).
    slot_added: str | None = None
    #: Paths in the destination it had found damaged, copied again from the source (see the module docstring).
    repaired: list[str] = field(default_factory=list)
    generations_added: list[int] = field(default_factory=list)  # master keys the copy took from the source
    #: What stopped the copy part-way (a full disk, a destination out of reach): the bundles before it stand.
    error: AibackupError | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None

    def to_json(self) -> dict[str, object]:
        """The `copy --json` contract."""
        return {
            "ok": self.ok,
            "copied": list(self.copied),
            "skipped": list(self.skipped),
            "failed": [{"bundle_id": b, "problem": p} for b, p in self.failed],
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "generations_added": list(self.generations_added),
            "repaired": list(self.repaired),
            "slot_added": self.slot_added,
            "error": str(self.error) if self.error is not None else None,
        }


def run_copy(
    source: Repository,
    destination: Where,
    refs: Sequence[str] = (),
    *,
    key_file: str | None = None,
    to_key_file: str | None = None,
    since_newest: bool = False,
    tonight: Sequence[str] = (),
) -> CopyResult:
    """Copy the bundles of `source` named by `refs` (ids, prefixes or latest; all when empty) that
    `destination` lacks (see the module docstring). `since_newest`: only those newer than the destination's
    newest bundle of their series, and those in `tonight` (the nightly copy: a night whose copy failed is
    caught up, and bundles the copy's own prune removed do not come back; see :func:`_not_yet_copied`).
    UsageError before anything is written for a destination that cannot take them; a damaged source part
    fails its bundle only (``failed``)."""
    started = time.perf_counter()
    key = source.key(key_file)  # an encrypted source: a wrong or missing key stops here
    source.use_key(key)
    wanted = [source.match_id(r) for r in refs] if refs else source.bundle_ids()
    target, created, slot_added = _destination(source, storage_of(destination), key_file, to_key_file)
    result = CopyResult(destination_created=created, slot_added=slot_added)
    if target.fully_encrypted and not created:
        # A marker change, as `aibackup key rotate` makes it.
        with RepositoryLock(target, "prune", "*", purpose=f"copy from {source.storage.display()} (its new keys)"):
            result.generations_added = keys.adopt_generations(
                target, source.vault(key_file).keyring, to_key_file or key_file
            )
    try:
        _copy_locked(source, target, wanted, key, result, created=created, since_newest=since_newest, tonight=tonight)
    except AibackupError as exc:
        if not result.generations_added:
            raise
        result.error = exc  # after the keys were taken: said with them (`key list` would be the only trace)
    result.seconds = time.perf_counter() - started
    return result


def _copy_locked(
    source: Repository,
    target: Repository,
    wanted: list[str],
    key: RepositoryKey | None,
    result: CopyResult,
    *,
    created: bool,
    since_newest: bool,
    tonight: Sequence[str],
) -> None:
    """run_copy's part under both repositories' locks: what it copied, repaired or failed goes into `result`."""
    with (
        RepositoryLock(source, "backup", f"copy to {target.storage.display()}"),
        RepositoryLock(target, "backup", f"copy from {source.storage.display()}"),
    ):
        present = set() if created else set(target.bundle_ids())  # a location just made holds no bundle
        if since_newest and present:
            wanted = _not_yet_copied(source, target, wanted, present, tonight)
        if target.fully_encrypted:
            _same_generations(source, target, sorted(set(wanted) - present))
        copier = _Copier(source, target, key, fresh=created, held=present)
        for bundle_id in sorted(set(wanted)):
            try:
                if bundle_id in present:
                    result.bytes += copier.repair(bundle_id)
                else:
                    result.bytes += copier.bundle(bundle_id)
            except IntegrityError as exc:
                result.failed.append((bundle_id, str(exc)))
                _remember(source, bundle_id, exc)
                continue
            except AibackupError as exc:
                # A full disk or a destination out of reach fails every bundle after it alike: stop, and say
                # which bundles did land (they are whole: their manifests went last).
                result.error = exc
                break
            (result.skipped if bundle_id in present else result.copied).append(bundle_id)
        if not result.failed and result.error is None:
            copier.drop_damaged_index(wanted)
        result.repaired = sorted(copier.repaired)
        if result.repaired:
            reports.record_repair(target, [target.storage.display(p) for p in result.repaired], "copy")


def _not_yet_copied(
    source: Repository, target: Repository, wanted: Sequence[str], present: set[str], tonight: Sequence[str]
) -> list[str]:
    """The nightly copy's share of `wanted`: `tonight`'s bundles and every bundle the copy lacks that is newer
    than the copy's newest bundle of the same series (:func:`aibackup.retention.series_key`), or of a series
    the copy holds no bundle of. `present`: every bundle the copy holds (not given again: the nightly copy
    repairs nothing it holds).

    Every keep rule keeps a series' newest bundle, so a bundle the copy lacks while holding a newer one of
    its series is one the copy's own prune removed: it does not come back (whether the source still holds
    that newer one or not); and a series the copy holds nothing of was never copied whole. Going by each
    series' newest, not the copy's newest of all, catches up a bundle whose copy failed on a night another
    series' bundle with a later id was copied (a long backup's, beside a short one started after it): by
    the copy's newest of all it would never have been copied. Reads the manifests of the lacking bundles
    older than the copy's newest, and of the copy's bundles newer than the oldest of them (a manifest of
    the copy that does not load leaves its series unknown: its bundles are copied, the safe way)."""
    newest = max(present)
    taken = [b for b in wanted if b not in present and (b > newest or b in tonight)]
    older = sorted(set(wanted) - present - set(taken))
    if not older:
        return taken
    newest_of: dict[str, str] = {}  # series -> the copy's newest bundle of it
    for bundle_id, held in target.load_each(sorted((b for b in present if b > older[0]), reverse=True)):
        if isinstance(held, BundleManifest):
            newest_of.setdefault(series_key(held), bundle_id)
    for bundle_id, lacking in source.load_each(older):
        # A source manifest that does not load is not copied: the source's verify names it, no copy could.
        if isinstance(lacking, BundleManifest) and newest_of.get(series_key(lacking), "") < bundle_id:
            taken.append(bundle_id)
    return taken


def _destination(
    source: Repository, storage: Storage, key_file: str | None, to_key_file: str | None
) -> tuple[Repository, bool, str | None]:
    """The destination repository, whether this copy creates it, and the id of the key slot it added to
    the new one for `to_key_file` (see :func:`_with_slot_for`). A missing or empty location is created from
    the source's marker, written only once every check passed: a refused copy leaves nothing there.
    UsageError when it cannot take the source's bundles as they are, or the key for it does not open them."""
    if storage.same_place(source.storage):
        raise UsageError("the destination is the source repository itself")
    if to_key_file and not source.encrypted:  # before a new destination is made
        raise UsageError(
            f"key file {to_key_file} given for the copy, but the source repository is not encrypted, so its copy "
            "is not either (a copy keeps the bytes as they are)"
        )
    found = Repository.find(storage)
    marker: bytes | None = None  # the source's marker, for a destination still to be made
    slot_added: str | None = None
    if found is None:
        marker = source.storage.read_stored(MARKER)
        target = Repository.with_marker(storage, marker)  # written below, once the key is known to open it
    else:
        target = found
    if target.encrypted != source.encrypted or target.fully_encrypted != source.fully_encrypted:
        raise UsageError(
            f"the source repository is {_kind(source)} and {storage.display()} is {_kind(target)}: a copy keeps the "
            "bytes as they are, so both must be the same kind (copy into a new location, or `aibackup init` it "
            "like the source)"
        )
    if target.encrypted:
        if target.id != source.id:
            raise UsageError(
                f"{storage.display()} is another encrypted repository (id {target.id}, the source's is {source.id}): "
                "encrypted bytes are bound to their repository; copy into a new location"
            )
        if marker is not None and to_key_file and target.fully_encrypted:
            marker, slot_added = _with_slot_for(source, marker, key_file, to_key_file)
            target = Repository.with_marker(storage, marker)
        target.use_key(target.key(to_key_file or key_file))
    if marker is not None:  # only now: a refused copy leaves the new location as it found it
        try:
            storage.write_exclusive(MARKER, marker)  # the marker is never sealed: its bytes as they are
        except AlreadyExistsError:
            # Another run made it a repository since it was found empty (two copies started at once): as a
            # repository another run holds, exit 3, not a usage error ("already exists", exit 2).
            raise UnavailableError(
                f"{storage.display()} was made a repository by another run meanwhile (a second copy into it?): "
                "try again once that run is done"
            ) from None
    return target, marker is not None, slot_added


def _kind(repo: Repository) -> str:
    """How a repository is encrypted, for the refusal of a copy between two kinds."""
    if not repo.encrypted:
        return "not encrypted"
    return "encrypted" if repo.fully_encrypted else "encrypted by aibackup 0.4 (its manifests only)"


def _with_slot_for(
    source: Repository, marker: bytes, key_file: str | None, to_key_file: str
) -> tuple[bytes, str | None]:
    """The source's `marker` for a new copy, with a passphrase slot of its own for `to_key_file` (the key
    the copy is to be opened with, `--to-key-file` or a configured copy's `key_file`) unless one of the
    source's slots opens for it already; and that slot's id (None: none added). Without it the copy's own
    key could not open the copy just made: a configured copy with a key of its own was never created."""
    passphrase = passphrase_from(to_key_file)
    assert passphrase is not None  # a key file gives one or raises ConfigError
    doc = json.loads(marker)
    entry = doc["encryption"]
    try:
        keyslots.open_keyring(entry, source.id, passphrase, source.storage.display(MARKER), "")
        return marker, None  # the copy's key is one of the source's already
    except UsageError:
        pass
    slot = keyslots.passphrase_slot(passphrase, source.vault(key_file).keyring)
    entry["slots"] = [*keyslots.slots_of(entry), slot]
    return marker_bytes(doc), str(slot["id"])


def _same_generations(source: Repository, target: Repository, bundle_ids: Sequence[str]) -> None:
    """UsageError unless the destination reads each of `bundle_ids` with the master key that sealed it (the
    generation of a bundle follows from its id: a key rotated in the copy on its own would take the
    source's later bundles)."""
    ours, theirs = source.vault().keyring, target.vault().keyring
    wrong = [b for b in bundle_ids if ours.for_bundle(b) != theirs.for_bundle(b)]
    if wrong:
        raise UsageError(
            f"{target.storage.display()} would read bundle {wrong[0]} with another master key than the source's "
            f"(generation {theirs.for_bundle(wrong[0]).id} there, {ours.for_bundle(wrong[0]).id} here: its key was "
            "rotated on its own): copy into a new location"
        )


class _SourceDamage(IntegrityError):
    """Damage the copy found in its source: the part or chunk pack at `rel` is missing or its bytes are not
    the manifest's (remembered in the source as a verify's finding is, see :func:`_remember`)."""

    def __init__(self, message: str, rel: str) -> None:
        super().__init__(message)
        self.rel = rel


class _DamagedPack(_SourceDamage):
    """A source pack of which some chunk does not decode or give its id back (`raw`: its stored bytes)."""

    def __init__(self, message: str, pack: str, raw: bytes) -> None:
        super().__init__(message, pack)
        self.pack = pack
        self.raw = raw


def _remember(source: Repository, bundle_id: str, damage: IntegrityError) -> None:
    """Record in `source` the damage its copy met there, as a restore records what it meets: the next backup
    extends no chain that reads it, the bundle no longer counts as verified, and a copy back from a sound
    repository repairs it (before, that repair found nothing to do until a verify had run)."""
    if isinstance(damage, _SourceDamage):
        where = source.storage.display(damage.rel)
        reports.record_damage(
            source, bundle_id, [{"bundle_id": bundle_id, "path": where, "problem": str(damage)}], found_by="copy"
        )


class _Copier:
    """Copies bundles from one repository into another, sharing what it learned between bundles."""

    def __init__(
        self,
        source: Repository,
        target: Repository,
        key: RepositoryKey | None,
        *,
        fresh: bool,
        held: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self.source = source
        self.target = target
        self._held_bundles = held  # the bundles the destination holds: a part of theirs it lacks was lost
        self._fresh = fresh  # a destination this run created holds nothing: no listing to ask
        self.ids = ChunkIds(key)  # the key run_copy opened (a 0.4 repository's from --key-file as much)
        self._source_index: ChunkIndex | None = None
        self._target_index: ChunkIndex | None = None
        # What the destination holds, by top folder (data/<bundle or writer>): one listing each, not a HEAD
        # per part (s3fs's size() of a missing key is a HEAD and a LIST), updated as objects land.
        self._held: dict[str, dict[str, int]] = {}
        self._stored: dict[str, dict[str, int]] = {}  # the source's sizes, per folder (see _source_size)
        self._held_lock = threading.Lock()
        # What the destination found damaged: copied again, never reused (a fresh destination found nothing).
        # Once repaired in this run, a path is no longer damaged: the next bundle that lists it reuses it.
        self._damaged = set() if fresh else set(reports.damaged_parts(target))
        self.repaired: set[str] = set()

    def bundle(self, bundle_id: str) -> int:
        """Copy one bundle (parts, packs, index, manifest last); returns the bytes written. IntegrityError
        naming what is damaged in the source (nothing of this bundle is published then)."""
        # Its stored bytes are read once: checked (authenticated when the source is encrypted) now, written last.
        raw = self.source.stored_manifest(bundle_id)
        manifest = self.source.load(bundle_id, stored=raw)
        written = 0
        # Parts travel PARTS_AT_ONCE at a time: one's upload completes (or its first ranges download) while
        # the next one streams. The first failure cancels those not started; the running ones finish.
        with concurrent.futures.ThreadPoolExecutor(PARTS_AT_ONCE, thread_name_prefix="aibackup-copy") as pool:
            parts = _parts(manifest)
            copies = [pool.submit(self._part, part) for part in parts]
            try:
                for part, copied in zip(parts, copies, strict=True):
                    landed = copied.result()
                    if landed and bundle_of_part(part.path) in self._held_bundles:  # an earlier link's, lost
                        self._mark_repaired(part.path, lacking=True)
                    written += landed
            except BaseException:
                for copied in copies:
                    copied.cancel()
                raise
        written += self._chunks(manifest)
        self.target.storage.write_exclusive(self.target.manifest_path(bundle_id), raw, as_stored=True)
        return written + len(raw)

    def repair(self, bundle_id: str) -> int:
        """Bundle `bundle_id`, which the destination holds, made whole again from the source: every part it
        lists that the destination lacks, holds at another size or found damaged, and the chunk packs of its
        files likewise, then its manifest when the destination's does not load (replaced by the source's
        bytes, checked as they are read). Each is recorded in ``repaired``. Returns the bytes written;
        IntegrityError naming what is damaged in the source as well (the destination's stays as it is)."""
        raw = self.source.stored_manifest(bundle_id)
        manifest = self.source.load(bundle_id, stored=raw)
        written = 0
        for part in _parts(manifest):
            copied = self._part(part)
            if copied:  # lacking, or another size: a copy's part is the source's, byte for byte
                self._mark_repaired(part.path, lacking=True)
            written += copied
        written += self._chunks(manifest)
        try:
            self.target.load(bundle_id)
        except IntegrityError:
            # Parts first, manifest last, as a backup commits; the damaged one cannot be taken back
            # exclusively, so it is replaced whole (an S3 put, a local rename: readers see one or the other).
            path = self.target.manifest_path(bundle_id)
            self.target.storage.replace(path, raw, as_stored=True)
            self._mark_repaired(path, lacking=True)
            written += len(raw)
        return written

    def _part(self, part: PartEntry) -> int:
        """One part, unless the destination holds it already (the right size, not found damaged); hashed on
        the way, and completed (an S3 upload finished, a local file fsynced) only when it gives the
        manifest's sha256."""
        dest = self.target.storage
        held = self._held_size(part.path)
        if held == part.bytes and part.path not in self._damaged:
            return 0
        where = self.source.storage.display(part.path)
        # One the destination holds (found damaged, or of another size: cut short by a full disk, or an
        # interrupted copy's) is replaced whole once the new one is proven, and stays as it was otherwise:
        # a damaged copy may still be worth more than none.
        replacing = held is not None
        self._same_key(part.path)
        sha = hashlib.sha256()
        size = 0
        writer = dest.create(part.path, hashing=False, replace=replacing)
        try:
            for block in self.source.storage.read_blocks(part.path, part.bytes):
                sha.update(block)
                size += len(block)
                writer.write(block)
            if (size, sha.hexdigest()) != (part.bytes, part.sha256):
                raise _SourceDamage(
                    f"damaged part {where}: its bytes do not match the manifest's sha256 and size", part.path
                )
            dest.close_part(writer, part.path, sha256=part.sha256)  # proven equal just above
        except FileNotFoundError:
            writer.abort()
            if not replacing:
                with contextlib.suppress(Exception):
                    dest.remove(part.path)
            raise _SourceDamage(f"missing part {where}", part.path) from None
        except BaseException:
            writer.abort()
            if not replacing:
                with contextlib.suppress(Exception):
                    dest.remove(part.path)
            raise
        self._landed(part.path, part.bytes)
        self._mark_repaired(part.path)
        return part.bytes

    def _chunks(self, manifest: BundleManifest) -> int:
        """The chunk packs a model bundle's files need that the destination lacks, each read and every chunk
        checked before it is written, then one index file for them. Returns the bytes written."""
        needed = referenced_chunks(self.source, [manifest])
        if not needed:
            return 0
        source_index = self._index(self.source, "_source_index")
        target_index = self._index(self.target, "_target_index")
        lacking = {c for c in needed if c not in target_index}
        # Chunks the destination holds in a pack it found damaged, or lost: where the source holds that pack
        # (a copied pack keeps its name in both repositories), it is copied again (repaired); where the
        # source's prune has since repacked them, they are copied from the pack that holds them now and
        # indexed there (moved), in an index file sorting after the one that placed them in the bad pack.
        source_packs = {place.pack for place in source_index.places.values()}
        held = needed - lacking
        bad = self._damaged_packs(held, target_index) | self._lost_packs(held, target_index)
        bad |= self._resized_packs(held, target_index, source_packs)
        written = 0
        unsound: set[str] = set()  # of those, the source's is damaged too: only the chunks needed are taken
        for pack in sorted(bad & source_packs):
            try:
                written += self._pack(pack)
            except _DamagedPack:
                unsound.add(pack)
                continue
            self._mark_repaired(pack, lacking=True)
        moved = {c for c in held if (place := target_index.get(c)) and place.pack in (bad - source_packs) | unsound}
        renewed = self._renewed(held - moved, source_index, target_index)
        places: dict[str, list[tuple[bytes, Stored]]] = {}  # the source's packs of the chunks the bundle lacks
        for chunk in lacking | moved:
            place = source_index.get(chunk)
            if place is None:
                where = f"chunk {chunk.hex()[:16]}… of bundle {manifest.bundle_id}"
                raise IntegrityError(
                    f"{where} is in no pack of {self.source.storage.display()}{source_index.damage_note()}"
                )
            places.setdefault(place.pack, []).append((chunk, place))
        entries: list[tuple[bytes, Stored]] = []
        salvaged = False
        # The renewed chunks' packs are taken when sound; a damaged one is left: those chunks stay where the
        # destination holds them, sound, under the old key (the bundle does not fail for it).
        renewing = {place.pack for chunk in renewed if (place := source_index.get(chunk)) is not None}
        for pack in sorted(places.keys() | renewing):
            try:
                copied = self._pack(pack)
            except _DamagedPack as damaged:
                if pack not in places:
                    continue
                taken = self._salvage(damaged, {chunk for chunk, _ in places[pack]})
                written += sum(place.stored for _, place in taken)
                if any(chunk in moved for chunk, _ in places[pack]):
                    for path in sorted({place.pack for _, place in taken}):
                        self._mark_repaired(path, lacking=True)
                entries += taken
                salvaged = True
                continue
            written += copied
            if copied and any(chunk in moved for chunk, _ in places.get(pack, [])):
                self._mark_repaired(pack, lacking=True)
            # Every chunk the pack holds becomes findable in the destination, not only those needed now.
            entries += self._pack_entries(source_index, pack)
        if entries:
            rel = f"{INDEX}/{manifest.bundle_id}-copy.parquet"
            if rel in target_index.files or moved or renewed or salvaged:
                # An earlier copy's intact index of this bundle (a held bundle's repair): kept, and the chunks
                # indexed again go to an index file of their own, the newest (readers take its places).
                rel = f"{INDEX}/{last_index_name(self.target, target_index.files)}.parquet"
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.target.storage.remove(rel)  # an interrupted copy's, or one found damaged: rewritten
            self.target.storage.write_exclusive(rel, index_bytes(entries))
            target_index.files.append(rel)
            if rel in target_index.damaged:  # this copy's own, found damaged
                del target_index.damaged[rel]
                self._mark_repaired(rel, lacking=True)
            for chunk, place in entries:
                if chunk in moved or chunk in renewed:
                    target_index.places[chunk] = place
                else:
                    target_index.places.setdefault(chunk, place)
        return written

    def _renewed(self, chunks: set[bytes], source_index: ChunkIndex, target_index: ChunkIndex) -> set[bytes]:
        """Those of `chunks` (held by the destination) that it holds only under an older master key while the
        source has stored them again under the current one (its first backup after a `key rotate` does):
        copied from the source's pack too, so that the copy, like the source, can retire the old key once
        its prune removed the bundles of before (they stayed needed there for as long as the new bundles
        lived). Nothing in a repository without encryption."""
        if not self.target.fully_encrypted:
            return set()
        older: dict[tuple[Repository, str], bool] = {}

        def rotated(repo: Repository, pack: str) -> bool:
            if (repo, pack) not in older:
                older[repo, pack] = repo.rotated_since([pack])
            return older[repo, pack]

        return {
            chunk
            for chunk in chunks
            if (held := target_index.get(chunk)) is not None
            and (stored := source_index.get(chunk)) is not None
            and rotated(self.target, held.pack)
            and not rotated(self.source, stored.pack)
        }

    def _damaged_packs(self, chunks: set[bytes], target_index: ChunkIndex) -> set[str]:
        """The destination's packs, found damaged, that hold some of `chunks`."""
        with self._held_lock:
            damaged = {p for p in self._damaged if is_pack(p)}
        if not damaged:
            return set()
        return {place.pack for chunk in chunks if (place := target_index.get(chunk)) and place.pack in damaged}

    def drop_damaged_index(self, done: Sequence[str]) -> None:
        """Remove the destination's damaged index files, named as repaired, when this run has copied or
        checked (`done`, none failed) every bundle it holds: each chunk their bundles need is then placed
        by an intact index file (:meth:`_chunks` indexed again those they alone placed), and what cannot be
        read holds nothing more. Until then verify names them and prune leaves the chunk store alone."""
        index = self._target_index
        if index is None or not index.damaged or not set(self.target.bundle_ids()) <= set(done):
            return
        for rel in sorted(index.damaged):
            self.target.storage.remove(rel)
            del index.damaged[rel]
            self._mark_repaired(rel, lacking=True)

    def _lost_packs(self, chunks: set[bytes], target_index: ChunkIndex) -> set[str]:
        """The packs the destination's index places some of `chunks` in but that it does not hold."""
        packs = {place.pack for chunk in chunks if (place := target_index.get(chunk))}
        return {pack for pack in packs if self._held_size(pack) is None}

    def _resized_packs(self, chunks: set[bytes], target_index: ChunkIndex, source_packs: set[str]) -> set[str]:
        """The destination's packs that hold some of `chunks` and are of another size than the source's pack
        of that name (cut short by a full disk, or changed, without a reader noticing yet)."""
        packs = {place.pack for chunk in chunks if (place := target_index.get(chunk)) and place.pack in source_packs}
        return {
            pack for pack in packs if (size := self._held_size(pack)) is not None and size != self._source_size(pack)
        }

    @staticmethod
    def _pack_entries(index: ChunkIndex, pack: str) -> list[tuple[bytes, Stored]]:
        return [(c, p) for c, p in index.places.items() if p.pack == pack]

    def _pack(self, pack: str) -> int:
        """One pack: read whole (at most a few tens of MiB), every chunk checked against its id, written."""
        where = self.source.storage.display(pack)
        try:
            raw = self.source.storage.fs.cat_file(self.source.storage.full(pack))
        except FileNotFoundError:
            raise _SourceDamage(f"missing chunk pack {where}", pack) from None
        dest = self.target.storage
        held = self._held_size(pack)
        if held == len(raw) and pack not in self._damaged:
            return 0
        problem = pack_problem(raw, self.ids, self.source.part_decryption(pack))
        if problem is not None:  # checked before the destination's is replaced: it may be one found damaged
            raise _DamagedPack(f"damaged chunk pack {where}: {problem}", pack, raw)
        self._same_key(pack)
        if held is not None:
            # Replaced whole (an S3 put, a local rename): an interruption leaves the damaged pack or the
            # proven one, never none (its other chunks may still be worth more than nothing).
            dest.replace(pack, raw, as_stored=True)
        else:
            writer = dest.create(pack, hashing=False)
            try:
                writer.write(raw)
                dest.close_part(writer, pack, sha256=hashlib.sha256(raw).hexdigest())
            except BaseException:
                writer.abort()
                with contextlib.suppress(Exception):
                    dest.remove(pack)  # a local pack cut short (a full disk): as a part's, not left in the way
                raise
        self._landed(pack, len(raw))
        self._mark_repaired(pack)
        return len(raw)

    def _salvage(self, damaged: _DamagedPack, chunks: set[bytes]) -> list[tuple[bytes, Stored]]:
        """`chunks`, which a bundle needs from the source's `damaged` pack, written into a new pack of the
        destination when every one of them still gives its id back (the damage lies in chunks the bundle does
        not need: one bad chunk had failed the copy of every bundle sharing its pack, night after night);
        their places there. The damaged pack's error otherwise."""
        taken: dict[bytes, bytes] = {}

        def take(chunk: bytes, data: bytes) -> None:
            if chunk in chunks:
                taken[chunk] = data

        pack_chunks(damaged.raw, self.ids, self.source.part_decryption(damaged.pack), take=take)
        if taken.keys() != chunks:
            raise _SourceDamage(str(damaged), damaged.pack)
        writer = PackWriter(self.target, new_writer_id(self.target), self.ids)
        try:
            for chunk in sorted(taken):
                writer.add(chunk, taken[chunk])
            writer.finish()
        except BaseException:
            writer.discard()
            raise
        # Held now: the next bundle needing these chunks finds them (a copy this run created lists nothing).
        for path in writer.packs:
            self._landed(path, self.target.storage.size(path))
        return writer.entries

    def _mark_repaired(self, rel: str, *, lacking: bool = False) -> None:
        """`rel` has just been written with proven bytes: if it had been found damaged (or, `lacking`, a
        bundle the destination holds lacked it), it is repaired."""
        with self._held_lock:
            if rel in self._damaged or lacking:
                self._damaged.discard(rel)
                self.repaired.add(rel)

    def _held_size(self, rel: str) -> int | None:
        """The size of the destination's object at `rel` (None: not there), from one listing of its top
        folder per copy run."""
        return self._listed_size(self._held, None if self._fresh else self.target.storage, rel)

    def _source_size(self, rel: str) -> int | None:
        """The size of the source's object at `rel` (None: not there), from one listing of its folder."""
        return self._listed_size(self._stored, self.source.storage, rel)

    def _listed_size(self, sizes: dict[str, dict[str, int]], storage: Storage | None, rel: str) -> int | None:
        """`rel`'s size in `sizes` (folder -> its listing), listing its top folder of `storage` at the first
        ask (no `storage`: a location this run created, which holds nothing)."""
        folder = "/".join(rel.split("/")[:2])
        with self._held_lock:
            if folder not in sizes:
                sizes[folder] = storage.sizes_below(folder) if storage is not None else {}
            return sizes[folder].get(rel)

    def _same_key(self, rel: str) -> None:
        """UsageError where the destination would read `rel` with another master key than the one that sealed
        it: the generation follows from the date of its folder (a bundle's, or the prune's that repacked a
        pack), and a copy whose key was rotated on its own maps later dates to its own key."""
        if self.target.fully_encrypted:
            _same_generations(self.source, self.target, [bundle_of_part(rel)])

    def _landed(self, rel: str, size: int) -> None:
        with self._held_lock:
            self._held.setdefault("/".join(rel.split("/")[:2]), {})[rel] = size

    def _index(self, repo: Repository, attr: str) -> ChunkIndex:
        index: ChunkIndex | None = getattr(self, attr)
        if index is None:
            # Damaged index files are left out. The destination's: the chunks they alone placed count as
            # lacking, so their packs are indexed again (see drop_damaged_index). The source's: a bundle that
            # needs a chunk only they placed fails, naming them; the others copy.
            index = ChunkIndex.load(repo, skip_damaged=True)
            setattr(self, attr, index)
        return index


def _parts(manifest: BundleManifest) -> list[PartEntry]:
    """Every part the bundle's datasets list, each once, oldest bundle's first (a chain's links in order)."""
    seen: dict[str, PartEntry] = {}
    for dataset in manifest.datasets:
        for part in dataset.all_parts():
            seen.setdefault(part.path, part)
    return sorted(seen.values(), key=lambda p: (bundle_of_part(p.path), p.path))
