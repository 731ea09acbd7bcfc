"""Reading a committed bundle's parts: :class:`BundleReader` checks each part against its manifest entry
and yields the live records of a dataset (a chained one's links less their tombstones), or their ids and
digests; :func:`dataset_schema` is the schema every part of a dataset must have.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from aibackup.chains import Removed, part_starts
from aibackup.errors import IntegrityError, UnavailableError, first_line
from aibackup.manifests.chain import INDEX_SCHEMA, TOMBSTONE_SCHEMA
from aibackup.manifests.digest import DatasetDigest, record_digests
from aibackup.manifests.kinds import arrow_schema
from aibackup.manifests.model import DatasetManifest, ManifestError, PartEntry
from aibackup.pipeline import prefetch
from aibackup.repository import Repository
from aibackup.spool import PartSpool

#: Record parts :meth:`BundleReader.dataset_digest` decodes and digests at once, each on a thread of its own
#: (with a decoding thread of its own): one part's Python-bound hashing overlaps another's decoding, so two
#: cores work where one pipeline kept about 1.3 busy.
DIGEST_WORKERS = 2


def dataset_schema(dataset: DatasetManifest) -> pa.Schema:
    """The Arrow schema every part of `dataset` must have (from its kind and configuration)."""
    try:
        return arrow_schema(dataset.kind, dataset.config)
    except ManifestError as exc:
        raise IntegrityError(f"dataset {dataset.name!r}: {exc}") from None


class BundleReader:
    """Reads the parts of a committed bundle, checking each against its manifest entry.

    With `spool` (a command that reads parts more than once: restore, ``verify --read-data``), the parts of
    a remote repository are downloaded once, by :meth:`check_part`, into a local spool that later reads use
    (:mod:`aibackup.spool`); :meth:`close` (or the ``with`` block) removes it. A :class:`PartSpool` given
    (a backup's, holding the parts it wrote) is read from, and left to its owner to close."""

    def __init__(self, repo: Repository, *, spool: bool | PartSpool = False) -> None:
        self.repo = repo
        self._owned = spool is True and not repo.storage.is_local  # a spool given is closed by its owner
        self.spool = spool if isinstance(spool, PartSpool) else PartSpool(repo.storage) if self._owned else None
        #: Parts whose spooled copy :meth:`check_part` proved by its sha256: decoded from that copy, their pages
        #: are not CRC-checked again (a page checksum can only catch what the part's sha256 already ruled out).
        self._proven: set[str] = set()

    def fetch_ahead(self, parts: Sequence[PartEntry]) -> None:
        """With a spool: start downloading `parts` in the background, in this order (see
        :meth:`aibackup.spool.PartSpool.fetch_ahead`); without one, nothing."""
        if self.spool is not None:
            self.spool.fetch_ahead((part.path, part.bytes) for part in parts)

    def close(self) -> None:
        if self.spool is not None and self._owned:
            self.spool.close()

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_part(self, part: PartEntry, *, read_data: bool) -> str | None:
        """The problem with one part, or None. Without `read_data` only presence and size are checked."""
        storage = self.repo.storage
        try:
            if read_data:
                spool = self.spool
                sha, size = spool.hash(part.path, part.bytes) if spool else storage.hash_file(part.path, part.bytes)
            else:
                sha, size = None, storage.size(part.path)
        except FileNotFoundError:
            return "missing part"
        except IntegrityError as exc:  # say a folder where the part should be
            return str(exc)
        if size != part.bytes:
            return f"size {size} bytes, manifest says {part.bytes} (truncated or replaced)"
        if sha is not None and sha != part.sha256:
            return "sha256 mismatch (the part was changed or damaged)"
        if sha is not None and self.spool is not None and self.spool.holds(part.path):
            self._proven.add(part.path)
        return None

    def batches(
        self, dataset: DatasetManifest, batch_rows: int = 8192, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Every live record of `dataset` in bundle order, as batches of at most `batch_rows` rows (only
        `columns`, when given: Parquet reads no other column). For a chained dataset these are the records
        of every link less those its tombstones remove (aibackup.chains).

        Each part is checked as it is opened (size, Parquet page checksums, schema and row count against
        the manifest; a spooled copy :meth:`check_part` proved skips the page checksums, which its sha256
        covered); any damage raises IntegrityError naming the part. Callers that must refuse damage
        *before* acting (restore) run :meth:`check_part` with ``read_data=True`` on every part first.
        """
        yield from self._live(dataset.parts, dataset_schema(dataset), batch_rows, columns, self.removed(dataset))

    def part_records(
        self,
        dataset: DatasetManifest,
        part: PartEntry,
        batch_rows: int = 8192,
        columns: Sequence[str] | None = None,
        removed: Removed | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The live records of one record part of `dataset`, checked as :meth:`batches` checks them (only
        `columns`, when given). A chained dataset's part needs `removed` (:meth:`removed`, or its share of
        this part: a later link's tombstones may remove some of its records)."""
        if dataset.chained and removed is None:
            raise ValueError(f"dataset {dataset.name!r} is chained: the records its tombstones remove are needed")
        if removed is None:
            yield from self._part_batches(part, dataset_schema(dataset), batch_rows, columns)
            return
        start = int(part_starts(dataset)[dataset.parts.index(part)])
        yield from self._live([part], dataset_schema(dataset), batch_rows, columns, removed, start)

    def dataset_digest(
        self, dataset: DatasetManifest, before: Callable[[PartEntry], None] | None = None
    ) -> DatasetDigest:
        """The digest of `dataset`'s live records, decoded from its parts. `before(part)` runs for every part
        the dataset needs before its records are read (restore re-hashes the part there and refuses damage);
        what it or a part raises is raised here, the first in part order.

        A chain's records are its links' less their tombstones, digested in order once every part passed
        `before`. Otherwise each record part is decoded and digested on a thread of its own,
        :data:`DIGEST_WORKERS` at a time, in order (a spool's downloads come in the same order), right after
        its own `before`; the parts not started when one fails are not read."""
        digest = DatasetDigest(algorithm=dataset.digest_algorithm)
        if dataset.chained:
            for part in dataset.all_parts():
                if before is not None:
                    before(part)
            for batch in prefetch(self.batches(dataset)):  # decoded while this thread digests
                digest.add_batch(batch)
            return digest

        def one(part: PartEntry) -> DatasetDigest:
            if before is not None:
                before(part)
            share = DatasetDigest(algorithm=dataset.digest_algorithm)
            for batch in prefetch(self.part_records(dataset, part)):  # decoded while this thread digests
                share.add_batch(batch)
            return share

        with concurrent.futures.ThreadPoolExecutor(DIGEST_WORKERS, thread_name_prefix="aibackup-digest") as pool:
            shares = [pool.submit(one, part) for part in dataset.parts]
            try:
                for share in shares:
                    digest.add(share.result())
            finally:
                for share in shares:
                    share.cancel()
        for part in dataset.all_parts()[len(dataset.parts) :]:  # its record index
            if before is not None:
                before(part)
        return digest

    def removed(self, dataset: DatasetManifest) -> Removed | None:
        """The records a chained dataset's tombstones remove (None for a dataset that is not chained)."""
        if not dataset.chained:
            return None
        tables = [
            (
                n,
                pa.Table.from_batches(
                    list(self._part_batches(part, TOMBSTONE_SCHEMA, 1 << 20, ("part", "row", "deleted")))
                ),
            )
            for n, link in enumerate(dataset.chain)
            for part in link.tombstones
        ]
        return Removed.of(dataset, tables)

    def id_digests(self, dataset: DatasetManifest, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """(id, digest) of every live record of `dataset` (INDEX_SCHEMA), from its record index where it has
        one (no record is read), else computed from its records (bundles of 0.3.x, other kinds)."""
        if not dataset.chain:
            for batch in self.batches(dataset, batch_rows):
                digests = record_digests(batch, (), dataset.digest_algorithm)
                data = pa.py_buffer(b"".join(digests))
                column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), batch.num_rows, [None, data])
                yield pa.RecordBatch.from_arrays([batch.column(0).cast(pa.string()), column], schema=INDEX_SCHEMA)
            return
        index = [part for link in dataset.chain for part in link.index]
        yield from self._live(index, INDEX_SCHEMA, batch_rows, None, self.removed(dataset))

    def _live(
        self,
        parts: Sequence[PartEntry],
        expected: pa.Schema,
        batch_rows: int,
        columns: Sequence[str] | None,
        removed: Removed | None,
        start: int = 0,
    ) -> Iterator[pa.RecordBatch]:
        """The batches of `parts`, read one after the other (record ordinals count from `start`, the first
        part's first row's ordinal in the dataset, as tombstones count), less the records `removed` names."""
        for part in parts:
            for batch in self._part_batches(part, expected, batch_rows, columns):
                rows = batch.num_rows
                keep = removed.keep(start, rows) if removed is not None else None
                start += rows
                if keep is not None:
                    batch = batch.filter(pa.array(keep))
                if batch.num_rows:
                    yield batch

    def _part_batches(
        self, part: PartEntry, expected: pa.Schema, batch_rows: int, columns: Sequence[str] | None
    ) -> Iterator[pa.RecordBatch]:
        """The batches of one part, checked as it is opened (see :meth:`batches`)."""
        where = self.repo.storage.display(part.path)
        try:
            decryption = self.repo.part_decryption(part.path)
            opened = self.spool.open(part.path) if self.spool else self.repo.storage.open_read(part.path)
            proven = self.spool is not None and part.path in self._proven and self.spool.holds(part.path)
            with opened as f:
                pf = pq.ParquetFile(f, page_checksum_verification=not proven, decryption_properties=decryption)
                # Arrow type equality ignores list item names ("item" in memory, "element" in Parquet).
                if not pf.schema_arrow.equals(expected):
                    raise IntegrityError(f"damaged part {where}: schema differs from the manifest")
                if pf.metadata.num_rows != part.rows:
                    raise IntegrityError(
                        f"damaged part {where}: {pf.metadata.num_rows} rows, manifest says {part.rows}"
                    )
                yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
        except FileNotFoundError:
            raise IntegrityError(f"missing part {where}") from None
        except pa.ArrowException as exc:  # undecodable Parquet: damage
            raise IntegrityError(f"damaged part {where}: {first_line(exc)}") from None
        except OSError as exc:
            # pyarrow reports a failed page CRC, and an encrypted module that does not authenticate (changed,
            # moved, another key), as a plain OSError; anything else is the storage.
            if any(word in str(exc).lower() for word in ("checksum", "decrypt", "encrypted")):
                raise IntegrityError(f"damaged part {where}: {first_line(exc)}") from None
            raise UnavailableError(f"cannot read {where}: {first_line(exc)}") from None
