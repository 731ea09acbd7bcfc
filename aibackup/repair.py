"""``aibackup repair index``: the chunk index made whole again from the packs themselves (restic's
``repair index``), for a repository with no copy to bring it back from.

An index file found damaged (its bytes rotted, a sealed one that does not authenticate) is left out by
every reader (:meth:`aibackup.chunks.ChunkIndex.load`), but until it is replaced ``verify`` names it, a
bundle whose chunks only it placed cannot be restored, and ``prune`` leaves the chunk store alone; an index
file lost outright leaves its packs unplaced the same way. Packs hold their chunks' ids, so the index can be
made again from them:

1. **Find** what is lacking: the chunks every bundle's model files list, and the place a reader finds each
   at (the newest index file's). When no index file is damaged and every chunk's place is in a stored
   pack, the index is whole and nothing is read (a crashed backup's unlisted packs are prune's business).
2. **Read** every pack no intact index file lists (the damaged or lost files' packs, and any other
   unlisted one) whole, and check every chunk against its id: a chunk is indexed only when its bytes give
   its id back (damaged packs and chunks are never built on: they are named, never indexed). A chunk whose
   newest place is in a pack since lost, but which an intact index file also places in a stored pack (a
   chunk stored twice), is indexed there once that pack is read and the row proven (never in a pack found
   damaged before: the chunk then stays lacking, and a copy brings it back). An unlisted pack that does not
   decode at all, in the folder of no bundle, is a crashed run's unfinished write, not damage (named as
   such; prune removes it after its grace period), unless a bundle still lacks chunks: then it may be the
   pack that held them, and is damage.
3. **Publish**: remember the damaged packs as a ``verify --read-data`` remembers damage
   (:func:`aibackup.reports.damaged_parts`: no backup reuses their chunks, and a copy writes them again),
   write one new index file for the chunks found, *then* remove the damaged index files (prune's order: a
   crash in between leaves both, and the next repair has nothing left to read).
4. **Prove**: every chunk each bundle needs is placed in a stored pack, or the bundles still lacking one
   are named (``unrestorable``; their chunks are nowhere in this repository: a copy holding them brings
   them back, ``aibackup copy --repo COPY --to-repo REPO``); a bundle whose manifest or file table does not
   read is named as ``unchecked`` (``aibackup verify`` says what is damaged). Either is exit 1.

It runs under the exclusive lock a prune takes (no backup writes packs meanwhile). ``dry_run`` reads and
decides the same and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aibackup import reports
from aibackup.chunkprune import referenced_chunks
from aibackup.chunks import INDEX, ChunkIds, ChunkIndex, Stored, index_bytes, is_pack, new_writer_id, pack_chunks
from aibackup.errors import AibackupError
from aibackup.repository import Repository


@dataclass
class IndexRepairResult:
    """What ``repair index`` found, read and wrote (or would, in a dry run)."""

    dry_run: bool
    #: Index files found damaged (path relative to the repository -> problem): removed, or would be.
    damaged_files: dict[str, str] = field(default_factory=dict)
    packs_read: list[str] = field(default_factory=list)
    chunks_indexed: int = 0
    bytes_read: int = 0
    #: The new index file (None when there was nothing to index, or in a dry run).
    index_written: str | None = None
    #: Intact index files replaced by the new one (``read_all_packs``): removed, or would be.
    replaced_files: list[str] = field(default_factory=list)
    #: Packs of bundles, or chunks of them, found damaged on the way (pack path -> problem): not indexed.
    damaged_packs: dict[str, str] = field(default_factory=dict)
    #: Unlisted packs that do not decode in a folder of no bundle: a crashed run's unfinished writes, not
    #: damage (prune removes them after its grace period).
    unfinished: list[str] = field(default_factory=list)
    #: Bundles some of whose chunks are still in no intact pack this repository holds.
    unrestorable: list[str] = field(default_factory=list)
    #: Bundles whose chunks could not be listed (a manifest or file table that does not read: `notes` says
    #: why; `aibackup verify` names the damage).
    unchecked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every chunk of every bundle is placed in a stored pack (after the repair, or after it would have
        run), and every bundle could be checked."""
        return not self.unrestorable and not self.unchecked

    @property
    def changed(self) -> bool:
        """Whether there was (or would be) anything to write or remove."""
        return bool(self.damaged_files or self.chunks_indexed or self.replaced_files)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "damaged_index_files": [{"path": p, "problem": why} for p, why in sorted(self.damaged_files.items())],
            "packs_read": list(self.packs_read),
            "chunks_indexed": self.chunks_indexed,
            "bytes_read": self.bytes_read,
            "index_written": self.index_written,
            "index_files_replaced": list(self.replaced_files),
            "damaged_packs": [{"path": p, "problem": why} for p, why in sorted(self.damaged_packs.items())],
            "unfinished_packs": list(self.unfinished),
            "unrestorable": list(self.unrestorable),
            "unchecked": list(self.unchecked),
            "notes": list(self.notes),
        }


def run_repair_index(repo: Repository, *, dry_run: bool = False, read_all_packs: bool = False) -> IndexRepairResult:
    """Make the chunk index of `repo` whole from its packs (see the module docstring). `read_all_packs`:
    read every pack, whatever the index files say, and replace every index file with one built from them
    (restic's ``--read-all-packs``: for index files suspected of damage that still decodes, such as those
    written before index files carried their entries' digest). The caller holds the repository's exclusive
    lock. Storage errors pass through as the usual aibackup errors (exit 3), before anything is written
    when they come while reading."""
    result = IndexRepairResult(dry_run=dry_run)
    index = ChunkIndex.load(repo, skip_damaged=True)
    result.damaged_files = dict(index.damaged)
    stored = {path: size for path, size in repo.storage.sizes_below("data").items() if is_pack(path)}
    bundles = repo.bundle_ids()
    needs = _needed_chunks(repo, bundles, result)

    def lacking(chunks: set[bytes]) -> bool:
        """Whether a reader misses one of `chunks`: a reader takes the place the newest index file gives."""
        return any((place := index.get(c)) is None or place.pack not in stored for c in chunks)

    if not (read_all_packs or index.damaged or any(lacking(chunks) for chunks in needs.values())):
        return result  # whole: nothing to read (a crashed backup's unlisted packs are prune's business)
    ids = ChunkIds(repo.key())
    if read_all_packs:
        entries, undecodable = _read_packs(repo, sorted(stored), stored, set(bundles), ids, result)
        if entries:  # what the packs hold replaces what every index file says
            result.replaced_files = list(index.files)
            index = ChunkIndex(places=dict(entries), damaged=index.damaged)
    else:
        listed = {place.pack for place in index.every()}
        unlisted = sorted(p for p in stored if p not in listed)
        entries, undecodable = _read_packs(repo, unlisted, stored, set(bundles), ids, result)
        for chunk, place in entries:
            index.places[chunk] = place  # the new index file is read last: its place wins, as here
        entries += _other_copies(repo, index, stored, ids, result)  # a chunk stored twice, its newest place lost
    result.chunks_indexed = len(entries)
    # An unlisted pack that does not decode, in the folder of no bundle: a crashed run's unfinished write,
    # unless a bundle still lacks chunks (then it may be the pack they were in: damage, remembered so that a
    # copy writes it again).
    still = any(lacking(chunks) for chunks in needs.values())
    for pack, problem in undecodable.items():
        if still:
            result.damaged_packs[pack] = problem
        else:
            result.unfinished.append(pack)
    if not dry_run:
        _publish(repo, index, entries, set(bundles), result)
    result.unrestorable = [bundle_id for bundle_id, chunks in needs.items() if lacking(chunks)]
    return result


def _needed_chunks(repo: Repository, bundles: list[str], result: IndexRepairResult) -> dict[str, set[bytes]]:
    """The chunks each bundle's model files list (bundle id -> chunk ids; none for other bundles). A bundle
    whose manifest or file table does not read goes into ``result.unchecked``, with a note saying why."""
    needs: dict[str, set[bytes]] = {}
    for bundle_id in bundles:
        try:
            needs[bundle_id] = referenced_chunks(repo, [repo.load(bundle_id)])
        except AibackupError as exc:
            result.unchecked.append(bundle_id)
            result.notes.append(f"bundle {bundle_id} not checked: {exc} (run `aibackup verify`)")
    return needs


def _read_packs(
    repo: Repository,
    packs: list[str],
    stored: dict[str, int],
    bundles: set[str],
    ids: ChunkIds,
    result: IndexRepairResult,
) -> tuple[list[tuple[bytes, Stored]], dict[str, str]]:
    """`packs` read whole, each chunk checked against its id: the places of those that check, and the packs
    of which nothing decodes in the folder of no bundle (pack -> problem: the caller tells a crashed run's
    unfinished write from damage). Every other pack or chunk that does not decode or check goes into
    ``result.damaged_packs``."""
    entries: list[tuple[bytes, Stored]] = []
    undecodable: dict[str, str] = {}
    for pack in packs:
        try:
            raw = b"".join(repo.storage.read_blocks(pack, stored[pack]))
        except FileNotFoundError:
            continue  # gone since the listing: nothing of it to index
        result.packs_read.append(pack)
        result.bytes_read += len(raw)
        found, problem = pack_chunks(raw, ids, repo.part_decryption(pack))
        if problem is not None and not found and pack.split("/")[1] not in bundles:
            undecodable[pack] = problem
        elif problem is not None:
            result.damaged_packs[pack] = problem
        entries += [(chunk, Stored(pack, row, size, stored_bytes)) for row, chunk, size, stored_bytes in found]
    return entries, undecodable


def _other_copies(
    repo: Repository, index: ChunkIndex, stored: dict[str, int], ids: ChunkIds, result: IndexRepairResult
) -> list[tuple[bytes, Stored]]:
    """For each chunk whose newest place is in a pack since lost but which intact index files also place in
    other stored packs (a chunk stored twice or more): the newest of those places whose row, read from its
    pack, holds the chunk, with the size and stored size read there (not those the index file says); a pack
    found damaged before (reports.damaged_parts) is not taken (the chunk stays lacking: a copy brings it
    back). Updates `index` to the places taken."""
    damaged = reports.damaged_parts(repo)
    wanted: dict[bytes, list[Stored]] = {}  # chunk -> its other places, newest first
    for chunk, place in reversed(index.copies):  # index files are read oldest first
        if index.places[chunk].pack not in stored and place.pack in stored and place.pack not in damaged:
            wanted.setdefault(chunk, []).append(place)
    if not wanted:
        return []
    packs = sorted({place.pack for places in wanted.values() for place in places})
    read, undecodable = _read_packs(repo, packs, stored, set(), ids, result)
    result.damaged_packs.update(undecodable)  # listed by an intact index file: no unfinished write
    proven = {(place.pack, place.row): (chunk, place) for chunk, place in read}
    taken: list[tuple[bytes, Stored]] = []
    for chunk, places in wanted.items():
        found = [proven[key] for key in ((p.pack, p.row) for p in places) if key in proven and proven[key][0] == chunk]
        if found:
            taken.append(found[0])
            index.places[chunk] = found[0][1]
    return taken


def _publish(
    repo: Repository,
    index: ChunkIndex,
    entries: list[tuple[bytes, Stored]],
    bundles: set[str],
    result: IndexRepairResult,
) -> None:
    """Remember the damaged packs, write the new index file, then remove the damaged ones. The damage goes
    first: once the new file lists a partly damaged pack, no later repair reads that pack again, and the
    record is what keeps backups off its chunks and has a copy write it again (reports.damaged_parts)."""
    if result.damaged_packs:
        problems = [
            {"bundle_id": pack.split("/")[1], "path": repo.storage.display(pack), "problem": problem}
            for pack, problem in sorted(result.damaged_packs.items())
        ]
        # The report names the bundles whose folders hold them (a forgotten bundle's or a prune's: none).
        found_in = sorted({p["bundle_id"] for p in problems} & bundles)
        reports.record_verify(repo, found_in, False, problems, kind="repair")
    if entries:
        result.index_written = f"{INDEX}/{new_writer_id(repo)}.parquet"
        repo.storage.write_exclusive(result.index_written, index_bytes(entries))
    for rel in sorted(index.damaged) + result.replaced_files:
        repo.storage.remove(rel)  # after the new file: every chunk it placed stays findable
