"""``aibackup repair index``: the chunk index made whole again from the packs themselves (restic's
``repair index``), for a repository with no copy to bring it back from.

An index file found damaged (its bytes rotted, a sealed one that does not authenticate) is left out by
every reader (:meth:`aibackup.chunks.ChunkIndex.load`), but until it is replaced ``verify`` names it, a
bundle whose chunks only it placed cannot be restored, and ``prune`` leaves the chunk store alone; an index
file lost outright leaves its packs unplaced the same way. Packs hold their chunks' ids, so the index can be
made again from them:

1. **Find** what is lacking: the chunks every bundle's model files list, and where the intact index files
   place them. When no index file is damaged and every chunk is placed in a stored pack, the index is
   whole and nothing is read (a crashed backup's unlisted packs are prune's business).
2. **Read** every pack no intact index file lists (the damaged or lost files' packs, and any other
   unlisted one) whole, and check every chunk against its id: a chunk is indexed only when its bytes give
   its id back (damaged packs and chunks are never built on: they are named, never indexed). An unlisted
   pack that does not decode at all, in the folder of no bundle, is a crashed run's unfinished write, not
   damage (named as such; prune removes it after its grace period).
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

import pyarrow as pa
import pyarrow.parquet as pq

from aibackup import reports
from aibackup.chunkprune import referenced_chunks
from aibackup.chunks import (
    INDEX,
    PACK_SCHEMA,
    ChunkIds,
    ChunkIndex,
    Stored,
    decompress,
    index_bytes,
    is_pack,
    new_writer_id,
)
from aibackup.errors import AibackupError, first_line
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
        return bool(self.damaged_files or self.chunks_indexed)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "damaged_index_files": [{"path": p, "problem": why} for p, why in sorted(self.damaged_files.items())],
            "packs_read": list(self.packs_read),
            "chunks_indexed": self.chunks_indexed,
            "bytes_read": self.bytes_read,
            "index_written": self.index_written,
            "damaged_packs": [{"path": p, "problem": why} for p, why in sorted(self.damaged_packs.items())],
            "unfinished_packs": list(self.unfinished),
            "unrestorable": list(self.unrestorable),
            "unchecked": list(self.unchecked),
            "notes": list(self.notes),
        }


def run_repair_index(repo: Repository, *, dry_run: bool = False) -> IndexRepairResult:
    """Make the chunk index of `repo` whole from its packs (see the module docstring). The caller holds the
    repository's exclusive lock. Storage errors pass through as the usual aibackup errors (exit 3), before
    anything is written when they come while reading."""
    result = IndexRepairResult(dry_run=dry_run)
    index = ChunkIndex.load(repo, skip_damaged=True)
    result.damaged_files = dict(index.damaged)
    stored = {path: size for path, size in repo.storage.sizes_below("data").items() if is_pack(path)}
    bundles = repo.bundle_ids()
    needs = _needed_chunks(repo, bundles, result)

    def lacking(chunks: set[bytes]) -> bool:
        return any((place := index.get(c)) is None or place.pack not in stored for c in chunks)

    if index.damaged or any(lacking(chunks) for chunks in needs.values()):
        entries = _unlisted_chunks(repo, index, stored, set(bundles), result)
        if not dry_run:
            _publish(repo, index, entries, result)
        for chunk, place in entries:
            index.places[chunk] = place  # the new index file is read last: its place wins, as here
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


def _unlisted_chunks(
    repo: Repository, index: ChunkIndex, stored: dict[str, int], bundles: set[str], result: IndexRepairResult
) -> list[tuple[bytes, Stored]]:
    """The chunks of every stored pack no intact index file lists, read whole, each checked against its id
    (those that check: their places). What does not decode or check is named in ``result``: damage in a
    bundle's folder; in a folder of no bundle (a crashed backup's, or a prune's repacking), a pack that does
    not decode at all is taken for an unfinished write (if a bundle needed it, the bundle is named as
    lacking its chunks all the same)."""
    listed = {place.pack for place in index.every()}
    ids = ChunkIds(repo.key())
    entries: list[tuple[bytes, Stored]] = []
    for pack in sorted(p for p in stored if p not in listed):
        try:
            raw = b"".join(repo.storage.read_blocks(pack, stored[pack]))
        except FileNotFoundError:
            continue  # gone since the listing: nothing of it to index
        result.packs_read.append(pack)
        result.bytes_read += len(raw)
        found, problem = pack_chunks(raw, ids, repo.part_decryption(pack))
        if problem is not None and not found and pack.split("/")[1] not in bundles:
            result.unfinished.append(pack)
        elif problem is not None:
            result.damaged_packs[pack] = problem
        entries += [(chunk, Stored(pack, row, size, stored_bytes)) for row, chunk, size, stored_bytes in found]
    result.chunks_indexed = len(entries)
    return entries


def _publish(
    repo: Repository, index: ChunkIndex, entries: list[tuple[bytes, Stored]], result: IndexRepairResult
) -> None:
    """Remember the damaged packs, write the new index file, then remove the damaged ones. The damage goes
    first: once the new file lists a partly damaged pack, no later repair reads that pack again, and the
    record is what keeps backups off its chunks and has a copy write it again (reports.damaged_parts)."""
    if result.damaged_packs:
        problems = [
            {"bundle_id": pack.split("/")[1], "path": repo.storage.display(pack), "problem": problem}
            for pack, problem in sorted(result.damaged_packs.items())
        ]
        reports.record_verify(repo, sorted({p["bundle_id"] for p in problems}), False, problems, kind="repair")
    if entries:
        result.index_written = f"{INDEX}/{new_writer_id(repo)}.parquet"
        repo.storage.write_exclusive(result.index_written, index_bytes(entries))
    for rel in sorted(index.damaged):
        repo.storage.remove(rel)  # after the new file: every chunk it placed stays findable


def pack_chunks(
    raw: bytes, ids: ChunkIds, decryption: object = None
) -> tuple[list[tuple[int, bytes, int, int]], str | None]:
    """The chunks of the whole pack `raw` (its stored form; `decryption`: the repository's properties for
    it) whose bytes give their id back, as (row, chunk id, size, stored bytes), and the first problem found
    (None for a sound pack). A row that does not decode or check is left out and the others still read; a
    pack whose footer does not decode gives nothing."""
    found: list[tuple[int, bytes, int, int]] = []
    problem: str | None = None
    try:
        pf = pq.ParquetFile(pa.BufferReader(raw), page_checksum_verification=True, decryption_properties=decryption)
        if not pf.schema_arrow.equals(PACK_SCHEMA):
            return [], "unexpected columns"
        rows = pf.metadata.num_row_groups
    except (pa.ArrowException, OSError) as exc:
        return [], first_line(exc)
    for n in range(rows):
        try:
            (row,) = pf.read_row_group(n).to_pylist()
            data = decompress(row["data"], row["size"]) if row["zstd"] else row["data"]
            if len(data) != row["size"] or ids(data) != row["chunk"]:
                raise ValueError("its bytes do not match its id")
        except Exception as exc:  # pyarrow's, zstandard's own ZstdError, the check above: all damage
            problem = problem or f"row {n}: {first_line(exc)}"
            continue
        found.append((n, row["chunk"], row["size"], len(row["data"])))
    return found, problem
