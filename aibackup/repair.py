"""``aibackup repair index``: the chunk index made whole again from the packs themselves (restic's
``repair index``), for a repository with no copy to bring it back from.

An index file found damaged (its bytes rotted, a sealed one that does not authenticate) is left out by
every reader (:meth:`aibackup.chunks.ChunkIndex.load`), but until it is replaced ``verify`` names it, a
bundle whose chunks only it placed cannot be restored, and ``prune`` leaves the chunk store alone; an index
file lost outright leaves its packs unplaced the same way. Packs hold their chunks' ids, so the index can be
made again from them:

1. **Find** the packs no intact index file lists (the damaged files' packs, a lost file's, a crashed
   backup's orphans).
2. **Read** each of them whole and check every chunk against its id: a chunk is indexed only when its
   bytes give its id back (damaged packs and chunks are never built on: they are named, never indexed).
3. **Publish** one new index file for the chunks found, *then* remove the damaged index files (the order of
   prune's publish step: a crash in between leaves both, and the next repair finds nothing to read).
   Damaged packs found on the way are remembered as a ``verify --read-data`` remembers them
   (:func:`aibackup.reports.damaged_parts`): no backup reuses their chunks, and a copy replaces them.
4. **Prove**: every chunk each bundle needs is placed by an intact index file in a stored pack, or the
   bundles still lacking one are named (``unrestorable``; their chunks are nowhere in this repository: a
   copy holding them brings them back, ``aibackup copy --repo COPY --to-repo REPO``).

It runs under the exclusive lock a prune takes (no backup writes packs meanwhile). ``dry_run`` reads and
decides the same and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from aibackup import reports
from aibackup.chunkprune import absent_packs
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
    #: Packs or chunks found damaged on the way (pack path -> problem): not indexed.
    damaged_packs: dict[str, str] = field(default_factory=dict)
    #: Bundles some of whose chunks are still in no intact pack this repository holds.
    unrestorable: list[str] = field(default_factory=list)
    #: Bundles whose chunks could not be counted (a manifest or file table that does not read: verify's).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every chunk the bundles need is placed (after the repair, or after it would have run)."""
        return not self.unrestorable

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
            "unrestorable": list(self.unrestorable),
            "notes": list(self.notes),
        }


def run_repair_index(repo: Repository, *, dry_run: bool = False) -> IndexRepairResult:
    """Make the chunk index of `repo` whole from its packs (see the module docstring). The caller holds the
    repository's exclusive lock. Storage errors pass through as the usual aibackup errors (exit 3), before
    anything is written when they come while reading."""
    result = IndexRepairResult(dry_run=dry_run)
    index = ChunkIndex.load(repo, skip_damaged=True)
    result.damaged_files = dict(index.damaged)
    listed = {place.pack for place in index.every()}
    stored = {path: size for path, size in repo.storage.sizes_below("data").items() if is_pack(path)}
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
        if problem is not None:
            result.damaged_packs[pack] = problem
        entries += [(chunk, Stored(pack, row, size, stored_bytes)) for row, chunk, size, stored_bytes in found]
    result.chunks_indexed = len(entries)
    if not dry_run:
        if entries:
            result.index_written = f"{INDEX}/{new_writer_id(repo)}.parquet"
            repo.storage.write_exclusive(result.index_written, index_bytes(entries))
        for rel in sorted(index.damaged):
            repo.storage.remove(rel)  # after the new file: every chunk it placed stays findable
        if result.damaged_packs:
            # Remembered as a verify's finding: no backup reuses a chunk from them, and a copy writes them
            # again with bytes its own repository proves (reports.damaged_parts).
            problems = [
                {"bundle_id": pack.split("/")[1], "path": repo.storage.display(pack), "problem": problem}
                for pack, problem in sorted(result.damaged_packs.items())
            ]
            reports.record_verify(repo, sorted({p["bundle_id"] for p in problems}), False, problems, kind="repair")
    for chunk, place in entries:
        index.places.setdefault(chunk, place)
    for bundle_id in repo.bundle_ids():
        try:
            manifest = repo.load(bundle_id)
        except AibackupError as exc:
            result.notes.append(f"bundle {bundle_id} not checked: {exc} (run `aibackup verify`)")
            continue
        if absent_packs(repo, manifest, index, lambda pack: pack in stored):
            result.unrestorable.append(bundle_id)
    return result


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
