"""Prune of the chunk store (:mod:`aibackup.chunks`): chunks are reference-counted over the bundles that
remain, packs nothing needs are removed, packs mostly unneeded are repacked.

Run by :func:`aibackup.prune.run_prune` once the removed bundles' manifests are gone (under the prune lock,
which no backup holds at the same time). In this order, restic's:

1. **Decide.** The live chunks are those the files of every remaining model dataset list (its file table
   parts are read; one that cannot be read holds every pack: nothing of the chunk store is removed). Each
   indexed pack is *dead* (no live chunk), *sparse* (more than :data:`REPACK_UNUSED` of its stored bytes
   unused: repacked) or kept. A pack no index lists is a crashed backup's, removed like any orphan part;
   a pack whose folder showed a sign of life within the grace period is never touched (a backup still
   writing, or one whose manifest is about to be committed).
2. **Repack.** The live chunks of sparse packs are read (each checked against its id: a damaged chunk is
   not copied, its pack is kept and the notes say so) and written into new packs of a new writer id.
3. **Publish** one new index file listing every kept and new pack's chunks, then remove the old index files:
   every live chunk is findable at every moment (before: through the old index; after: the new one).
4. **Remove** dead, repacked and orphan packs.

``dry_run`` decides exactly the same and changes nothing; ``bytes_reclaimed`` is what removal and repacking
free (a repack's new packs are counted against it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aibackup.bundle_reader import BundleReader
from aibackup.chunk_reader import ChunkReader
from aibackup.chunk_writer import PackWriter
from aibackup.chunks import (
    INDEX,
    REPAIR_HINT,
    UNINDEXED_HINT,
    ChunkIndex,
    Stored,
    index_bytes,
    new_writer_id,
    read_index,
)
from aibackup.connectors.model.restore import chunk_ids
from aibackup.errors import AibackupError, IntegrityError
from aibackup.manifests.model import BundleManifest
from aibackup.repository import Repository

#: A pack is repacked when more than this share of its stored bytes holds chunks no bundle needs.
REPACK_UNUSED = 0.5


@dataclass
class ChunkPruneResult:
    """What the chunk store's prune removed, repacked and published (or would, in a dry run)."""

    packs_removed: list[str] = field(default_factory=list)
    packs_repacked: list[str] = field(default_factory=list)
    packs_written: list[str] = field(default_factory=list)
    bytes_reclaimed: int = 0
    chunks_live: int = 0
    chunks_removed: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "packs_removed": list(self.packs_removed),
            "packs_repacked": list(self.packs_repacked),
            "packs_written": list(self.packs_written),
            "bytes_reclaimed": self.bytes_reclaimed,
            "chunks_live": self.chunks_live,
            "chunks_removed": self.chunks_removed,
        }


@dataclass(frozen=True)
class PackFile:
    """A pack as the storage lists it: size and the latest sign of life of its folder (None: unknown)."""

    size: int
    young: bool


def referenced_chunks(repo: Repository, manifests: Iterable[BundleManifest]) -> set[bytes]:
    """Every chunk the model datasets of `manifests` list (prune: what remains needs; copy: what a bundle
    needs). IntegrityError when a file table cannot be read."""
    reader = BundleReader(repo)
    live: set[bytes] = set()
    for manifest in manifests:
        for dataset in manifest.datasets:
            if dataset.kind != "model":
                continue
            for batch in reader.batches(dataset, columns=["chunks"]):
                for data in batch.column(0).to_pylist():
                    if data:
                        live.update(chunk_ids({"chunks": data}))
    return live


def absent_packs(repo: Repository, manifest: BundleManifest, index: ChunkIndex, stored: Callable[[str], bool]) -> int:
    """How many chunk packs the files of `manifest`'s model datasets need are not stored (`stored(pack)`
    says which are); a chunk no index file lists, or a file table that cannot be read, counts as one: the
    bundle cannot be restored either way. 0 for a bundle without a model dataset."""
    if not any(d.kind == "model" for d in manifest.datasets):
        return 0
    try:
        chunks = referenced_chunks(repo, [manifest])
    except AibackupError:
        return 1
    places = [index.get(chunk) for chunk in chunks]
    packs = {place.pack for place in places if place is not None}
    return sum(1 for pack in packs if not stored(pack)) + (1 if None in places else 0)


def prune_chunks(
    repo: Repository,
    remaining: Iterable[BundleManifest],
    packs: Mapping[str, PackFile],
    *,
    dry_run: bool,
    now: dt.datetime,
) -> ChunkPruneResult:
    """Reference-count the chunk store against the `remaining` bundles and remove or repack what they do not
    need (see the module docstring). `packs`: every pack file stored, with its size and youth."""
    result = ChunkPruneResult()
    try:
        live = referenced_chunks(repo, remaining)
    except AibackupError as exc:
        result.notes.append(f"chunk store left as it is: a model bundle's file list cannot be read ({exc})")
        return result
    files = [f"{INDEX}/{name}" for name in repo.storage.list_names(INDEX) if name.endswith(".parquet")]
    entries: list[tuple[bytes, Stored]] = []
    try:
        for rel in files:
            entries += read_index(repo.storage.read_bytes(rel), repo.storage.display(rel))
    except IntegrityError as exc:  # which pack holds a live chunk is not known: no pack can go
        result.notes.append(f"chunk store left as it is: {exc} ({REPAIR_HINT})")
        return result

    # The copy of each live chunk that stays: in a pack that exists, preferably under the current master key
    # (so that an older key can retire), then the newest (index files are read oldest first). Other copies of
    # a chunk stored twice are unused.
    home: dict[bytes, Stored] = {}
    rotated: dict[str, bool] = {}
    for chunk, place in entries:
        if chunk not in live or place.pack not in packs:
            continue
        old = rotated.setdefault(place.pack, repo.rotated_since([place.pack]))
        chosen = home.get(chunk)
        if chosen is None or not old or rotated[chosen.pack]:
            home[chunk] = place
    missing = live - home.keys()
    if missing:
        result.notes.append(
            f"chunk store left as it is: {len(missing)} chunk(s) that bundles need are in no stored pack "
            f"(run `aibackup verify`; {UNINDEXED_HINT})"
        )
        return result
    used: dict[str, int] = {}
    total: dict[str, int] = {}
    for chunk, place in entries:
        total[place.pack] = total.get(place.pack, 0) + place.stored
        if home.get(chunk) == place:
            used[place.pack] = used.get(place.pack, 0) + place.stored
    indexed = set(total)
    dead = sorted(p for p in indexed if p in packs and not used.get(p) and not packs[p].young)
    sparse = sorted(
        p
        for p in indexed
        if p in packs and used.get(p) and not packs[p].young and total[p] - used[p] > REPACK_UNUSED * total[p]
    )
    orphans = sorted(p for p in packs if p not in indexed and not packs[p].young)
    result.chunks_live = len(home)
    result.chunks_removed = sum(1 for c, p in entries if p.pack in dead or (p.pack in sparse and home.get(c) != p))
    result.bytes_reclaimed = sum(packs[p].size for p in dead + orphans) + sum(packs[p].size - used[p] for p in sparse)
    lost = {p.pack for _, p in entries if p.pack not in packs}
    if not (dead or sparse or orphans or lost) and len(files) <= 1:
        return result
    result.packs_removed = dead + orphans
    result.packs_repacked = sparse
    if dry_run:
        return result

    gone = set(dead) | set(orphans)
    moved: list[tuple[bytes, Stored]] = []
    if sparse:
        writer_id = new_writer_id(repo)
        writer = PackWriter(repo, writer_id)
        chunks = ChunkReader(repo)
        held: dict[str, list[bytes]] = {}
        for chunk, place in home.items():
            held.setdefault(place.pack, []).append(chunk)
        try:
            for pack in sparse:
                keep_pack = False
                for chunk in held.get(pack, []):
                    try:
                        data = chunks.get(chunk, check=True)
                    except IntegrityError as exc:
                        result.notes.append(f"pack {pack} kept: a chunk it holds cannot be copied ({exc})")
                        keep_pack = True
                        break
                    writer.add(chunk, bytes(data))
                if keep_pack:
                    continue
                gone.add(pack)
            writer.finish()
        except BaseException:
            writer.discard()
            raise
        finally:
            chunks.close()
        moved = writer.entries
        result.packs_written = list(writer.packs)
        result.packs_repacked = [p for p in sparse if p in gone]
        # The packs removed, less the live chunks moved into new packs (their few bytes of Parquet framing
        # aside: so the dry run, which cannot know those, says the same).
        result.bytes_reclaimed = sum(packs[p].size for p in gone) - writer.stored_bytes
    kept = [(c, p) for c, p in entries if p.pack not in gone and p.pack in packs]  # a lost pack's entries go
    new_index = f"{INDEX}/{new_writer_id(repo)}.parquet"
    repo.storage.write_exclusive(new_index, index_bytes(_unique(moved + kept)))
    for rel in files:
        repo.storage.remove(rel)
    for pack in sorted(gone):
        repo.storage.remove(pack)
    result.packs_removed = sorted(gone - set(sparse))
    return result


def _unique(entries: list[tuple[bytes, Stored]]) -> list[tuple[bytes, Stored]]:
    """`entries` without repeats of one (chunk, place)."""
    seen: set[tuple[bytes, Stored]] = set()
    out = []
    for entry in entries:
        if entry not in seen:
            seen.add(entry)
            out.append(entry)
    return out
