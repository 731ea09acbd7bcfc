"""Incremental backups of vector datasets: only the records that changed since the parent bundle.

The stores have no change feed, so the source is still read whole; what follows the read shrinks. Before
the stream, the parent's live record digests are loaded from its record index (:class:`ParentIndex`:
sorted numpy arrays, 20 bytes a record, never a dict of ids). While the stream passes, :class:`Delta`
(the writer's ``select``) looks each record's digest up: a record whose digest the parent holds is the
same id with the same content (the digest covers both) and is not written again; any other is new or
changed and is written. After the stream, the parent's records that were not read again are removed: an
id also written is *changed*, any other *deleted* (a tombstone). Their positions and ids come from the
parent's index, by ordinal, so no record part is read.

The link's digest is the parent's plus what was written minus what was removed, and it must equal the sum
of every digest read: the two are computed independently, so a chain that would not restore to what the
source held is never committed.

A backup is full instead (:func:`full_reason`) on ``--full``, past ``full_every`` links, once the chain
stores MAX_DEAD dead records per live one, when the parent has no usable index or chain, when the
collection's vectors changed, and when more than half of the records changed (:class:`TooManyChanges`,
raised from the stream as soon as that is certain from what was written).

A partitioned incremental backup (aibackup.distributed) runs the same lookup on every worker: the parent's
sorted digests (:class:`ParentDigests`, 16 bytes a record) are broadcast to them, each task's
:class:`Delta` looks up its partition's records and hands back a :class:`DeltaPart` (the parent positions
it read again, its sums, the ids it wrote), and the driver's :meth:`Delta.absorb` adds them up before
:meth:`Delta.link`. The lookup is by digest, not by id, so any split of the source works and no record moves
between workers (bucketing the index by id hash would need the partitions split by the same hash).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aibackup import reports
from aibackup.bundle import BundleWriter, IdTypes, schema_entries
from aibackup.bundle_reader import BundleReader
from aibackup.chains import part_starts
from aibackup.connectors.base import DatasetDescription
from aibackup.errors import IntegrityError, SourceDataError
from aibackup.manifests.chain import INDEX_SCHEMA, TOMBSTONE_SCHEMA, PartEntry
from aibackup.manifests.digest import MOD, digest_sum
from aibackup.manifests.model import DIGEST_ALGORITHM, DatasetManifest, VectorsConfig
from aibackup.repository import KEY_ROTATED

#: More than this share of the parent's records changed (added, changed or deleted): a full backup.
MAX_CHANGED = 0.5
#: A chain whose stored records that are no longer live (old versions of changed records, deleted ones)
#: reach this share of its live records is followed by a full backup. A restore reads and checks every
#: stored record and copies the live ones out of each batch that holds a dead one (about 12% more), so
#: this bounds its read to about 1.3x that of a full bundle whatever the churn (1.27x measured at 1M
#: records, docs/benchmarks.md); without it, 30 links of 10% a night would read 3.25x.
MAX_DEAD = 0.15
#: The kinds whose datasets chain record by record (order-free sets of records keyed by id).
CHAINED_KINDS = ("vectors",)


class TooManyChanges(Exception):
    """Raised from the stream once more than MAX_CHANGED of the parent's records were written."""


@dataclass(frozen=True)
class Outcome:
    """How one dataset was backed up, for the backup's report."""

    full_reason: str | None  # None: incremental
    new_bytes: int  # bytes this bundle wrote for it: records, index and tombstones
    deleted: int  # tombstones for deleted ids written

    @classmethod
    def of(cls, dataset: DatasetManifest, bundle_id: str, full_reason: str | None) -> Outcome:
        own = f"data/{bundle_id}/"
        written = sum(p.bytes for p in dataset.all_parts() if p.path.startswith(own))
        deleted = dataset.chain[-1].deleted if dataset.chained else 0
        return cls(full_reason, written, deleted)


def full_reason(
    reader: BundleReader,
    parent: DatasetManifest | None,
    description: DatasetDescription,
    *,
    full: bool,
    full_every: int,
) -> str | None:
    """Why `description` must be backed up in full rather than as a link after `parent` (its dataset in
    the parent bundle, None without one); None when it can be incremental."""
    if parent is None:
        return "no earlier bundle of this collection"
    if full:
        return "--full was given"
    if not parent.chain:
        return "the previous bundle has no record index (written before aibackup 0.4.0)"
    if reader.repo.rotated_since(p.path for p in parent.all_parts()):
        return KEY_ROTATED
    if parent.digest_algorithm != DIGEST_ALGORITHM:
        return f"the previous bundle's record digests are {parent.digest_algorithm}, an older format"
    if len(parent.chain) > full_every:
        return f"the chain reached full_every ({full_every} incremental links after a full backup)"
    dead = sum(link.rows for link in parent.chain) - parent.rows
    if parent.rows and dead >= MAX_DEAD * parent.rows:
        return (
            f"the chain holds {dead:,} records that are no longer live, {dead / parent.rows:.0%} of the "
            f"{parent.rows:,} live ones (a restore reads them too; at {MAX_DEAD:.0%} a backup is full)"
        )
    changed = _vectors_changed(parent, description)
    if changed:
        return f"the collection's vectors changed ({changed})"
    # Record parts are not re-hashed every night (a chain's are a full bundle's worth): one a `verify
    # --read-data` or a restore found damaged (same size, other bytes) is known, and the chain must not be
    # extended.
    found = reports.damaged_parts(reader.repo)
    for part in parent.all_parts():
        small = part not in parent.parts  # index and tombstones: read now, so re-hashed; records: present
        problem = reader.check_part(part, read_data=small)
        if problem is None and part.path in found:
            problem = "found damaged by an earlier verify --read-data or restore"
        if problem:
            link = parent.link_of(part)
            which = f"link {link.bundle}" if link is not None else "a link"
            return f"{which} of the chain is damaged ({reader.repo.storage.display(part.path)}: {problem})"
    return None


def _vectors_changed(parent: DatasetManifest, description: DatasetDescription) -> str | None:
    """What changed in the vectors (names, sizes, distances, kinds) since the parent, or None."""
    if parent.schema != schema_entries(description.schema):
        return "vector names or sizes"
    config = description.config
    if isinstance(config, VectorsConfig):
        before = {d.name: (d.size, d.distance, d.multivector) for d in parent.vectors_config().dense}
        after = {d.name: (d.size, d.distance, d.multivector) for d in config.dense}
        if before != after:
            return "a distance or a vector kind"
    return None


def _words(column: pa.Array) -> np.ndarray:
    """A fixed_size_binary(16) column as an (n, 2) little-endian uint64 array (zero copy)."""
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    start = column.offset * 16
    return data[start : start + 16 * len(column)].view("<u8").reshape(len(column), 2)


class ParentIndex:
    """The live record digests of the parent dataset: ``hi`` (sorted) and ``lo``, the two 64-bit halves of
    each digest, with the record's chain ordinal; ``seen`` marks those read again."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray, ordinals: np.ndarray) -> None:
        self.hi, self.lo, self.ordinals = hi, lo, ordinals
        self.seen = np.zeros(len(hi), dtype=bool)

    @classmethod
    def load(cls, reader: BundleReader, dataset: DatasetManifest) -> ParentIndex:
        """Read `dataset`'s record index (digests only) less its tombstones. IntegrityError unless the
        live digests add up to the manifest's rows and digest.

        Memory: the live digests and ordinals (20 bytes a record) are filled batch by batch, then sorted one
        array at a time, so the peak is 36 bytes a live record (the sort order and one reordered array more):
        360 MB at 10M records."""
        removed = reader.removed(dataset)
        total, n = sum(link.rows for link in dataset.chain), dataset.rows
        hi, lo = np.empty(n, dtype="<u8"), np.empty(n, dtype="<u8")
        ordinals = np.empty(n, dtype=np.uint32 if total < 2**32 else np.int64)
        start = filled = added = 0
        wrong = IntegrityError(
            f"the record index of collection {dataset.name!r} does not give its manifest's rows and digest"
        )
        for link in dataset.chain:
            for part in link.index:
                for batch in reader._part_batches(part, INDEX_SCHEMA, 1 << 16, ["digest"]):
                    words, rows = _words(batch.column(0)), batch.num_rows
                    keep = removed.keep(start, rows) if removed is not None else None
                    picked = np.arange(rows) if keep is None else np.flatnonzero(keep)
                    if filled + len(picked) > n:
                        raise wrong
                    live = words[picked]
                    hi[filled : filled + len(picked)] = live[:, 0]
                    lo[filled : filled + len(picked)] = live[:, 1]
                    ordinals[filled : filled + len(picked)] = picked + start
                    added += digest_sum(live)
                    filled += len(picked)
                    start += rows
        if (start, filled, added % MOD) != (total, n, int(dataset.digest, 16)):
            raise wrong
        pa.default_memory_pool().release_unused()  # the index parts' buffers, before the sort's peak
        order = np.argsort(hi)  # introsort: no buffer beside the order (a stable sort takes half again)
        hi = hi[order]  # one array at a time: the old one is freed before the next is reordered
        lo = lo[order]
        ordinals = ordinals[order]
        del order
        return cls(hi, lo, ordinals)

    @classmethod
    def of(cls, digests: ParentDigests) -> ParentIndex:
        """A worker's index of the broadcast digests: lookups only (no ordinals: the driver makes the link)."""
        return cls(digests.hi, digests.lo, np.empty(0, dtype=np.int64))

    def digests(self) -> ParentDigests:
        """The sorted digests, for the workers of a partitioned incremental backup."""
        return ParentDigests(self.hi, self.lo)

    def __len__(self) -> int:
        return len(self.hi)

    def find(self, digests: np.ndarray) -> np.ndarray:
        """For each digest (an (n, 2) uint64 array), its position in the index, or -1."""
        n = len(self.hi)
        found = np.full(len(digests), -1, dtype=np.int64)
        if n == 0 or len(digests) == 0:
            return found
        pos = np.searchsorted(self.hi, digests[:, 0])
        at = np.minimum(pos, n - 1)
        same_hi = self.hi[at] == digests[:, 0]
        match = same_hi & (self.lo[at] == digests[:, 1])
        found[match] = at[match]
        # Two live records whose digests share their first 64 bits (about one in 10**12 pairs at 10M
        # records): searchsorted finds the first; look at the others with the same half.
        for i in np.flatnonzero(same_hi & ~match):
            j = int(at[i]) + 1
            while j < n and self.hi[j] == digests[i, 0]:
                if self.lo[j] == digests[i, 1]:
                    found[i] = j
                    break
                j += 1
        return found


@dataclass(frozen=True)
class ParentDigests:
    """The parent's live record digests, sorted by ``hi`` (:class:`ParentIndex` without its ordinals)."""

    hi: np.ndarray
    lo: np.ndarray


@dataclass(frozen=True)
class DeltaPart:
    """What one partition's :class:`Delta` saw, for the driver's :meth:`Delta.absorb`."""

    seen: np.ndarray  # positions in the parent's index of the records read again unchanged
    read_rows: int
    read_sum: int
    kinds: Counter[str]
    written: int
    written_ids: pa.Array  # string
    too_many: str | None  # why the partition alone changed more than MAX_CHANGED (its parts discarded)


class Delta:
    """One dataset's incremental backup: the writer's ``select`` (see the module docstring)."""

    def __init__(self, parent: DatasetManifest, index: ParentIndex, id_types: IdTypes | None) -> None:
        self.parent = parent
        self.index = index
        self.id_types = id_types
        self.limit = int(MAX_CHANGED * parent.rows)
        self.read_rows = 0
        self.read_sum = 0
        self.kinds: Counter[str] = Counter()
        self.written = 0
        self.written_ids: list[pa.Array] = []

    def __call__(self, batch: pa.RecordBatch, digests: list[bytes]) -> np.ndarray | None:
        joined = b"".join(digests)
        words = np.frombuffer(joined, dtype="<u8").reshape(-1, 2)
        self.read_rows += len(words)
        self.read_sum += digest_sum(joined)
        ids = batch.column(0)
        self.kinds.update(self.id_types(ids) if self.id_types else {"string": len(ids)})
        found = self.index.find(words)
        hit = found >= 0
        positions = found[hit]
        if self.index.seen[positions].any() or len(np.unique(positions)) != len(positions):
            raise SourceDataError(
                f"collection {self.parent.name!r}: a record was read twice; run the backup again while "
                "nothing writes to the collection"
            )
        self.index.seen[positions] = True
        new = ~hit
        self.written += int(new.sum())
        if self.written > self.limit:
            raise TooManyChanges(f"more than half the records changed (over {self.written} of {self.parent.rows})")
        if not new.any():
            return new
        self.written_ids.append(ids.filter(pa.array(new)).cast(pa.string()))
        return None if new.all() else new

    def part(self, too_many: TooManyChanges | None = None) -> DeltaPart:
        """What this (a partition's) delta saw; `too_many` when it stopped because of it."""
        ids = pa.concat_arrays(self.written_ids) if self.written_ids else pa.array([], pa.string())
        why = str(too_many) if too_many is not None else None
        return DeltaPart(
            np.flatnonzero(self.index.seen), self.read_rows, self.read_sum, self.kinds, self.written, ids, why
        )

    def absorb(self, parts: list[DeltaPart]) -> None:
        """Add up the partitions' deltas (nothing seen here yet). TooManyChanges when one partition stopped
        for it or together they wrote too much; SourceDataError when two read the same record."""
        for part in parts:
            if part.too_many is not None:
                raise TooManyChanges(part.too_many)
            if self.index.seen[part.seen].any():
                raise SourceDataError(
                    f"collection {self.parent.name!r}: a record was read by two partitions; run the backup again "
                    "while nothing writes to the collection"
                )
            self.index.seen[part.seen] = True
            self.read_rows += part.read_rows
            self.read_sum += part.read_sum
            self.kinds.update(part.kinds)
            self.written += part.written
            self.written_ids.append(part.written_ids)
        if self.written > self.limit:
            raise TooManyChanges(f"more than half the records changed (over {self.written} of {self.parent.rows})")

    def link(
        self, reader: BundleReader, writer: BundleWriter, folder: str, written: DatasetManifest, parent_bundle: str
    ) -> DatasetManifest:
        """After the stream: the chained dataset (the parent's chain and this bundle's link), its tombstones
        written. TooManyChanges when, deletions counted, more than half the records changed."""
        index = self.index
        unseen = np.flatnonzero(~index.seen)
        removed_sum = digest_sum(np.stack([index.hi[unseen], index.lo[unseen]], axis=1)) if len(unseen) else 0
        ordinals = np.sort(index.ordinals[unseen].astype(np.int64))
        ids = self._ids_at(reader, ordinals)
        written_ids = pa.concat_arrays(self.written_ids) if self.written_ids else pa.array([], pa.string())
        if pc.count_distinct(written_ids).as_py() != len(written_ids):
            raise SourceDataError(
                f"collection {self.parent.name!r}: an id was read twice; run the backup again while nothing "
                "writes to the collection"
            )
        changed = pc.is_in(ids, value_set=written_ids).to_numpy(zero_copy_only=False).astype(bool)
        n_changed = int(changed.sum())
        n_deleted = len(ordinals) - n_changed
        added = self.written - n_changed
        if added + n_changed + n_deleted > self.limit:
            raise TooManyChanges(
                f"more than half the records changed ({added} added, {n_changed} changed, {n_deleted} deleted "
                f"of {self.parent.rows})"
            )
        rows = self.parent.rows - len(ordinals) + self.written
        digest = (int(self.parent.digest, 16) + int(written.digest, 16) - removed_sum) % MOD
        if (rows, digest) != (self.read_rows, self.read_sum % MOD):
            raise SourceDataError(
                f"collection {self.parent.name!r}: the records read do not add up to the previous bundle's "
                "less what changed (was a record read twice?); run the backup again"
            )
        tombstones: tuple[PartEntry, ...] = ()
        if len(ordinals):
            starts = part_starts(self.parent)
            part = np.searchsorted(starts, ordinals, side="right") - 1
            table = pa.Table.from_arrays(
                [
                    pa.array(part.astype(np.int32)),
                    pa.array((ordinals - starts[part]).astype(np.int32)),
                    ids,
                    pa.array(~changed),
                ],
                schema=TOMBSTONE_SCHEMA,
            )
            tombstones = (writer.write_table(f"{folder}/tombstones-00000.parquet", table),)
        link = replace(written.chain[0], tombstones=tombstones, added=added, changed=n_changed, deleted=n_deleted)
        return replace(
            written,
            rows=rows,
            digest=f"{digest:032x}",
            parts=self.parent.parts + written.parts,
            id_types=dict(sorted(self.kinds.items())),
            extends=parent_bundle,
            chain=(*self.parent.chain, link),
        )

    def _ids_at(self, reader: BundleReader, ordinals: np.ndarray) -> pa.Array:
        """The ids of the parent's records at `ordinals` (sorted), from its record index."""
        pieces: list[pa.Array] = []
        start = 0
        for link in self.parent.chain:
            for part in link.index:
                end = start + part.rows
                lo, hi = np.searchsorted(ordinals, [start, end])
                if lo < hi:
                    for batch in reader._part_batches(part, INDEX_SCHEMA, 1 << 16, ["id"]):
                        n = batch.num_rows
                        a, b = np.searchsorted(ordinals, [start, start + n])
                        if a < b:
                            pieces.append(batch.column(0).take(pa.array(ordinals[a:b] - start)))
                        start += n
                start = end
        ids = pa.concat_arrays(pieces) if pieces else pa.array([], pa.string())
        if len(ids) != len(ordinals):
            raise IntegrityError(f"the record index of collection {self.parent.name!r} is shorter than its chain")
        return ids
