"""Writing and reading the Parquet parts of a bundle.

Parts are immutable Parquet files under ``data/<bundle-id>/<nnn>-<dataset>/part-<nnnnn>.parquet``:
zstd-compressed, float vectors in ``BYTE_STREAM_SPLIT`` encoding with dictionary encoding and statistics
off for them (a float vector column is incompressible noise to a dictionary and statistics on it are
waste), page checksums on. Each part's sha256 and byte count are computed while it is written (never read
back); rows are grouped into row groups of about ``row_group_bytes`` of Arrow memory and parts are rolled at
about ``part_bytes``, so memory stays bounded whatever the dataset size.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aibackup.chains import Removed
from aibackup.connectors.base import DatasetDescription
from aibackup.errors import IntegrityError, SourceDataError, UnavailableError, first_line
from aibackup.manifests.chain import INDEX_SCHEMA, TOMBSTONE_SCHEMA, ChainLink
from aibackup.manifests.digest import DIGEST_ALGORITHM, DatasetDigest, digest_sum, record_digests
from aibackup.manifests.kinds import arrow_schema
from aibackup.manifests.model import DatasetManifest, FieldEntry, ManifestError, PartEntry
from aibackup.manifests.vectors import float_vector_paths
from aibackup.repository import Repository
from aibackup.spool import PartSpool
from aibackup.storage import CHUNK, HashingWriter

IdTypes = Callable[[pa.Array], Counter[str]]
#: An incremental backup's choice of the rows of a batch to write, given their record digests (None: all).
Select = Callable[[pa.RecordBatch, list[bytes]], "np.ndarray | None"]

#: Parts encoded at once, each by its own thread (the machine this was tuned on has 2 cores).
ENCODERS = 2
#: Parts of one dataset being completed at once (their uploads finishing) while the encoders go on.
CLOSING = 2


@dataclass(frozen=True)
class WriteOptions:
    """Parquet tuning. zstd level 1 measured smallest *and* fastest on float vectors with byte_stream_split."""

    compression: str = "zstd"
    compression_level: int = 1
    row_group_bytes: int = 8 * 1024 * 1024
    part_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class PartContents:
    """What one part written under :class:`PartGroups` holds: its entry, its rows per value of the grouping
    column (a file name), in row order, and the sum modulo 2**128 of its records' digests."""

    part: PartEntry
    files: dict[str, int]
    digest: int


class PartGroups:
    """Asks ``write_dataset`` to record which values of `column` (the file a record comes from) each part
    holds, for a later bundle that references the parts of unchanged files instead of writing them again.

    With `split`, a part never holds records of two values: a new part starts wherever the value changes
    (the records of one value must come together; they still roll into several parts at ``part_bytes``).
    ``parts`` is filled in part order once the dataset is written.
    """

    def __init__(self, column: str, *, split: bool = False) -> None:
        self.column = column
        self.split = split
        self.parts: list[PartContents] = []


def slug(name: str) -> str:
    """A file-name-safe form of a dataset name (the index prefix keeps paths unique)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "_"


def schema_entries(schema: pa.Schema) -> tuple[FieldEntry, ...]:
    return tuple(FieldEntry(f.name, str(f.type), f.nullable) for f in schema)


def parquet_options(schema: pa.Schema, options: WriteOptions) -> dict[str, object]:
    """ParquetWriter keyword arguments for a canonical schema."""
    float_paths = float_vector_paths(schema)
    plain = [f.name for f in schema if not _is_vector(f.type)]
    return {
        "compression": options.compression,
        "compression_level": options.compression_level,
        "use_dictionary": plain,
        "write_statistics": plain,
        "column_encoding": {p: "BYTE_STREAM_SPLIT" for p in float_paths},
        "write_page_checksum": True,
    }


def dataset_schema(dataset: DatasetManifest) -> pa.Schema:
    """The Arrow schema every part of `dataset` must have (from its kind and configuration)."""
    try:
        return arrow_schema(dataset.kind, dataset.config)
    except ManifestError as exc:
        raise IntegrityError(f"dataset {dataset.name!r}: {exc}") from None


def _is_vector(typ: pa.DataType) -> bool:
    return pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_struct(typ)


class _PartSink:
    """One part being written: the hashing file and its Parquet writer."""

    def __init__(
        self,
        repo: Repository,
        path: str,
        schema: pa.Schema,
        options: WriteOptions,
        *,
        plain: bool = False,
        spool: PartSpool | None = None,
    ) -> None:
        self.path = path
        self.rows = 0
        self.arrow_bytes = 0
        self.spool = spool
        self.file: HashingWriter = repo.storage.create(path, copy=spool.tee() if spool is not None else None)
        # Pages reach the (Python) hashing file in CHUNK-sized writes, not one call per page: each call
        # needs the GIL, which the digests hold most of the time (measured 1.9x raw pyarrow with per-page
        # calls).
        self.stream = pa.BufferedOutputStream(pa.PythonFile(self.file, mode="w"), buffer_size=CHUNK)
        # plain (record indexes, tombstones): unique ids and digests, where dictionaries and statistics are
        # waste.
        kwargs = dict(_PLAIN if plain else parquet_options(schema, options))
        encryption = repo.part_encryption(path)  # an encrypted repository: PME, footer and every column
        if encryption is not None:
            kwargs["encryption_properties"] = encryption
        self.writer = pq.ParquetWriter(self.stream, schema, **kwargs)

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows
        self.arrow_bytes += table.nbytes

    def finish(self, repo: Repository) -> PartEntry:
        entry = self.seal(repo)
        self.complete(repo)
        return entry

    def seal(self, repo: Repository) -> PartEntry:
        """Write the Parquet footer and hand every byte to storage: the part's size and sha256 are final,
        its upload or fsync may still be running (:meth:`complete` waits for it)."""
        self.writer.close()
        self.stream.flush()
        repo.storage.settle_part(self.file, self.path)
        return PartEntry(path=self.path, rows=self.rows, bytes=self.file.bytes, sha256=self.file.sha256)

    def complete(self, repo: Repository) -> None:
        """Make the sealed part durable (an S3 upload completed, a local file fsynced)."""
        repo.storage.close_part(self.file, self.path)
        if self.spool is not None:
            self.spool.keep(self.path, self.file.copy)

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the original error matters, not this one
            self.writer.close()
        self.file.abort()


_PLAIN: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": False,
    "write_statistics": False,
    "write_page_checksum": True,
}


class _IndexWriter:
    """The record-index parts of one dataset (INDEX_SCHEMA: id and digest of each record written, in
    order), encoded in their own thread and rolled like record parts."""

    GROUP_ROWS = 65536

    def __init__(self, writer: BundleWriter, folder: str) -> None:
        self.writer = writer
        self.folder = folder
        self.ids: list[pa.Array] = []
        self.digests: list[bytes] = []
        self.pending = 0
        self.number = 0
        self.sink: _PartSink | None = None
        self.parts: list[PartEntry] = []
        self.encoder = _Encoder(ahead=4)

    def add(self, ids: pa.Array, digests: list[bytes]) -> None:
        self.ids.append(ids)
        self.digests += digests
        self.pending += len(ids)
        if self.pending >= self.GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        data = pa.py_buffer(b"".join(self.digests))
        digests = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), self.pending, [None, data])
        ids = pa.concat_arrays([a.cast(pa.string()) for a in self.ids])
        table = pa.Table.from_arrays([ids, digests], schema=INDEX_SCHEMA)
        self.ids, self.digests, self.pending = [], [], 0
        self.encoder.submit(self._write, table)

    def _write(self, table: pa.Table) -> None:
        if self.sink is None:
            path = f"{self.folder}/index-{self.number:05d}.parquet"
            self.writer.created.append(path)
            self.sink = _PartSink(self.writer.repo, path, INDEX_SCHEMA, self.writer.options, plain=True)
        self.sink.write(table)
        if self.sink.arrow_bytes >= self.writer.options.part_bytes:
            self._roll()

    def _roll(self) -> None:
        assert self.sink is not None
        self.parts.append(self.sink.finish(self.writer.repo))
        self.sink = None
        self.number += 1

    def finish(self) -> tuple[PartEntry, ...]:
        self._flush()
        self.encoder.submit(lambda: self._roll() if self.sink is not None else None)
        self.encoder.drain()
        self.encoder.stop()
        return tuple(self.parts)

    def abort(self) -> None:
        self.encoder.stop()
        if self.sink is not None:
            self.sink.abort()


class _Encoder:
    """One encoder thread and the row groups queued for it: ``submit`` waits while more than `ahead` jobs
    are queued, so memory stays bounded; the first error of a job is raised by the next ``submit`` or by
    ``drain``, and the jobs queued after it are skipped (a part missing a row group is never completed)."""

    def __init__(self, ahead: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aibackup-encoder")
        self._jobs: deque[Future[None]] = deque()
        self._ahead = ahead
        self._failed = False

    def _run(self, job: Callable[..., None], args: tuple[object, ...]) -> None:
        if self._failed:
            return
        try:
            job(*args)
        except BaseException:
            self._failed = True
            raise

    def submit(self, job: Callable[..., None], *args: object) -> None:
        self._jobs.append(self._pool.submit(self._run, job, args))
        while len(self._jobs) > self._ahead:
            self._jobs.popleft().result()

    def drain(self) -> None:
        while self._jobs:
            self._jobs.popleft().result()

    def stop(self) -> None:
        """Cancel the queued jobs and wait for the running one (idempotent)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class BundleWriter:
    """Writes the parts of one bundle. The manifest is committed separately, last (see backup.py)."""

    def __init__(
        self, repo: Repository, bundle_id: str, options: WriteOptions | None = None, *, spool: PartSpool | None = None
    ) -> None:
        self.repo = repo
        self.bundle_id = bundle_id
        self.options = options or WriteOptions()
        #: Where vector parts also go, locally, for the backup's read of them (a remote repository's).
        self.spool = spool
        #: Every part path this writer created (finished or not), for `discard`.
        self.created: list[str] = []

    def discard(self, prefix: str = "") -> None:
        """Remove the parts of a bundle that will not be committed (only those under `prefix`, when given:
        a dataset written again). Best effort: a part left behind is an unreferenced orphan, harmless to
        every reader."""
        gone = [path for path in self.created if path.startswith(prefix)]
        for path in gone:
            with contextlib.suppress(Exception):
                self.repo.storage.remove(path)
        self.created = [path for path in self.created if not path.startswith(prefix)]

    def write_dataset(
        self,
        index: int,
        description: DatasetDescription,
        batches: Iterable[pa.RecordBatch],
        id_types: IdTypes | None = None,
        on_rows: Callable[[int], None] | None = None,
        on_batch: Callable[[pa.RecordBatch], None] | None = None,
        select: Select | None = None,
        with_index: bool = False,
        groups: PartGroups | None = None,
    ) -> DatasetManifest:
        """Stream `batches` (canonical schema of `description`) into parts; return the dataset's manifest.

        `on_batch` sees every batch read, once its schema is checked, in the calling thread (the backup
        samples its search-baseline queries there). `select` (an incremental backup) is given every batch
        read with its record digests and returns the rows to write (None: all); the manifest's rows,
        digest and id types are those of the records written. With `with_index`, the id and digest of every
        record written also go into record-index parts (aibackup.manifests.chain), in record order, and the
        manifest is a chain of one link (this bundle's). With `groups`, what each part holds is recorded
        there (and with ``groups.split`` parts are rolled wherever the grouping value changes).

        Raises SourceDataError if a batch does not have the dataset's schema (a connector bug must not
        produce a bundle that cannot be restored).
        """
        schema = description.schema
        folder = self.dataset_folder(index, description.name)
        digest = DatasetDigest(algorithm=DIGEST_ALGORITHM)  # new datasets: always the current algorithm
        record_index = _IndexWriter(self, folder) if with_index else None
        kinds: Counter[str] = Counter()
        finished: dict[int, PartEntry] = {}
        sinks: dict[int, _PartSink] = {}  # open parts; each is touched only by its own encoder thread
        pending: list[pa.RecordBatch] = []
        pending_bytes = 0
        part = part_bytes = 0  # the part being filled and the Arrow bytes given to it so far
        held: dict[int, Counter[str]] = {}  # with `groups`: each part's rows per value
        held_digest: Counter[int] = Counter()  # with `groups`: each part's digest sum (reduced at the end)
        value: object = None  # with `groups.split`: the value of the part being filled

        def write_group(number: int, table: pa.Table) -> None:
            """Encode one row group into part `number` (in that part's encoder thread, in order)."""
            sink = sinks.get(number)
            if sink is None:
                path = f"{folder}/part-{number:05d}.parquet"
                self.created.append(path)
                spool = self.spool if description.kind == "vectors" else None  # the search baseline reads them
                sink = sinks[number] = _PartSink(self.repo, path, schema, self.options, spool=spool)
            sink.write(table)

        # A full part is sealed by its encoder, which then moves on, and completed (its upload finished,
        # on S3 a round trip or two and the last parts in flight) by one of CLOSING threads; an encoder
        # waits only when CLOSING parts are completing already, so memory stays bounded.
        closer = ThreadPoolExecutor(CLOSING, thread_name_prefix="aibackup-part-close")
        closing_slots = threading.BoundedSemaphore(CLOSING)
        closing: list[Future[None]] = []

        def complete(sink: _PartSink) -> None:
            try:
                sink.complete(self.repo)
            finally:
                closing_slots.release()

        def finish_part(number: int) -> None:
            finished[number] = sinks[number].seal(self.repo)
            closing_slots.acquire()
            closing.append(closer.submit(complete, sinks[number]))
            del sinks[number]  # only now: a part that could not be sealed is still aborted below

        # Parts are encoded in parallel, part k by encoder k % ENCODERS (Parquet encoding is C++ with the
        # GIL released), while this thread computes the record digests. Rows stay in order: part k holds
        # the rows after part k-1's. Each encoder queues at most a part's worth of row groups, so this
        # thread can fill the next part while the previous one is still being encoded, and memory stays
        # bounded (about ENCODERS parts of Arrow data in flight).
        ahead = max(1, -(-self.options.part_bytes // self.options.row_group_bytes))
        encoders = [_Encoder(ahead) for _ in range(ENCODERS)]

        def flush(roll: bool = False) -> None:
            """Encode the pending batches into the current part; finish it when full (or `roll`)."""
            nonlocal pending, pending_bytes, part, part_bytes
            if pending:
                table = pa.Table.from_batches(pending, schema=schema)
                pending, pending_bytes = [], 0
                encoders[part % ENCODERS].submit(write_group, part, table)
                part_bytes += table.nbytes
            if part_bytes and (roll or part_bytes >= self.options.part_bytes):
                encoders[part % ENCODERS].submit(finish_part, part)
                part, part_bytes = part + 1, 0

        def add(batch: pa.RecordBatch, digests: list[bytes]) -> None:
            """Queue rows for the current part (with `groups`: rows of one value when split)."""
            nonlocal pending_bytes
            if groups is not None:
                held.setdefault(part, Counter()).update(batch.column(groups.column).to_pylist())
                held_digest[part] += digest_sum(b"".join(digests))
            pending.append(batch)
            pending_bytes += batch.nbytes
            if pending_bytes >= self.options.row_group_bytes:
                flush()

        try:
            for batch in batches:
                if not batch.schema.equals(schema):
                    raise SourceDataError(
                        f"collection {description.name!r}: the connector produced columns "
                        f"{batch.schema.names} with types that differ from the canonical schema"
                    )
                if batch.num_rows == 0:
                    continue
                digests = record_digests(batch, (), digest.algorithm)
                if on_rows is not None:
                    on_rows(batch.num_rows)
                if on_batch is not None:
                    on_batch(batch)
                if select is not None:
                    keep = select(batch, digests)
                    if keep is not None:
                        batch = batch.filter(pa.array(keep))
                        digests = list(itertools.compress(digests, keep))
                        if batch.num_rows == 0:
                            continue
                digest.add_digests(digests)
                ids = batch.column(0)
                kinds.update(id_types(ids) if id_types else {"string": len(ids)})
                if record_index is not None:
                    record_index.add(ids, digests)
                if groups is not None and groups.split:
                    for start, stop, run in _runs(batch.column(groups.column).to_pylist()):
                        if run != value and (pending or part_bytes):
                            flush(roll=True)  # a part never holds two values
                        value = run
                        add(batch.slice(start, stop - start), digests[start:stop])
                else:
                    add(batch, digests)
            flush(roll=True)
            index_parts = record_index.finish() if record_index is not None else ()
            for encoder in encoders:
                encoder.drain()
            for completed in closing:
                completed.result()  # the first part that could not be completed fails the dataset
        except BaseException:
            for encoder in encoders:  # the open sinks are the encoders' until they stop
                encoder.stop()
            futures_wait(closing)  # a part being completed finishes (or fails) before the caller discards
            for sink in sinks.values():
                sink.abort()
            if record_index is not None:
                record_index.abort()
            raise
        finally:
            for encoder in encoders:
                encoder.stop()
            closer.shutdown(wait=True)
        parts = tuple(finished[number] for number in sorted(finished))
        if groups is not None:
            groups.parts = [
                PartContents(finished[n], dict(held[n]), held_digest[n] % (1 << 128)) for n in sorted(finished)
            ]
        chain: tuple[ChainLink, ...] = ()
        if with_index:
            rows = digest.rows
            chain = (ChainLink(self.bundle_id, len(parts), rows, index_parts, (), added=rows, changed=0, deleted=0),)
        return DatasetManifest(
            name=description.name,
            kind=description.kind,
            rows=digest.rows,
            schema=schema_entries(schema),
            config=description.config_json(),
            digest=digest.hexdigest,
            digest_algorithm=digest.algorithm,
            parts=parts,
            id_types=dict(sorted(kinds.items())),
            chain=chain,
        )

    def write_table(self, path: str, table: pa.Table) -> PartEntry:
        """Write one small part (a link's tombstones) whole, in the calling thread."""
        self.created.append(path)
        sink = _PartSink(self.repo, path, table.schema, self.options, plain=True)
        try:
            sink.write(table)
            return sink.finish(self.repo)
        except BaseException:
            sink.abort()
            raise

    def dataset_folder(self, index: int, name: str) -> str:
        """Where the parts of the bundle's `index`-th dataset go (named after it, but in an encrypted
        repository, whose listing must not say what it holds)."""
        if self.repo.fully_encrypted:
            return f"{self.repo.part_prefix(self.bundle_id)}/{index:03d}"
        return f"{self.repo.part_prefix(self.bundle_id)}/{index:03d}-{slug(name)}"


def _runs(values: list[object]) -> Iterator[tuple[int, int, object]]:
    """(start, stop, value) of each run of equal consecutive values."""
    start = 0
    for n in range(1, len(values) + 1):
        if n == len(values) or values[n] != values[start]:
            yield start, n, values[start]
            start = n


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
                sha, size = spool.hash(part.path, part.bytes) if spool else storage.hash_file(part.path)
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
        return None

    def batches(
        self, dataset: DatasetManifest, batch_rows: int = 8192, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Every live record of `dataset` in bundle order, as batches of at most `batch_rows` rows (only
        `columns`, when given: Parquet reads no other column). For a chained dataset these are the records
        of every link less those its tombstones remove (aibackup.chains).

        Each part is checked as it is opened (size, Parquet page checksums, schema and row count against
        the manifest); any damage raises IntegrityError naming the part. Callers that must refuse damage
        *before* acting (restore) run :meth:`check_part` with ``read_data=True`` on every part first.
        """
        yield from self._live(dataset.parts, dataset_schema(dataset), batch_rows, columns, self.removed(dataset))

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
    ) -> Iterator[pa.RecordBatch]:
        """The batches of `parts`, read one after the other (record ordinals count from the first part's
        first row, as tombstones do), less the records `removed` names."""
        start = 0
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
            with opened as f:
                pf = pq.ParquetFile(f, page_checksum_verification=True, decryption_properties=decryption)
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
