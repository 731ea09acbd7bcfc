"""Writing the parts of a bundle: :class:`BundleWriter` streams each dataset's batches into record parts
(and, for a chained dataset, record-index parts) and returns the dataset's manifest.

Parts go under ``data/<bundle-id>/<nnn>-<dataset>/part-<nnnnn>.parquet``, encoded as
:mod:`aibackup.parquet_parts` says, each part's sha256 and byte count computed while it is written (never read
back); rows are grouped into row groups of about ``row_group_bytes`` of Arrow memory and parts are rolled at
about ``part_bytes``, so memory stays bounded whatever the dataset size. :class:`PartGroups` records what each
part holds, for a later bundle that reuses the parts of unchanged files. Reading is
:mod:`aibackup.bundle_reader`'s.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from aibackup.connectors.base import DatasetDescription
from aibackup.errors import SourceDataError
from aibackup.manifests.chain import INDEX_SCHEMA, ChainLink
from aibackup.manifests.digest import DIGEST_ALGORITHM, DatasetDigest, digest_sum, record_digests
from aibackup.manifests.model import DatasetManifest, FieldEntry, PartEntry
from aibackup.parquet_parts import Encoder, PartSink, WriteOptions
from aibackup.repository import Repository
from aibackup.spool import PartSpool

IdTypes = Callable[[pa.Array], Counter[str]]
#: An incremental backup's choice of the rows of a batch to write, given their record digests (None: all).
Select = Callable[[pa.RecordBatch, list[bytes]], "np.ndarray | None"]

#: Parts encoded at once, each by its own thread (the machine this was tuned on has 2 cores).
ENCODERS = 2
#: Parts of one dataset being completed at once (their uploads finishing) while the encoders go on.
CLOSING = 2


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


class _IndexWriter:
    """The record-index parts of one dataset (INDEX_SCHEMA: id and digest of each record written, in
    order), encoded in their own thread and rolled like record parts."""

    GROUP_ROWS = 65536

    def __init__(self, writer: BundleWriter, folder: str, prefix: str = "") -> None:
        self.writer = writer
        self.folder = folder
        self.prefix = prefix
        self.ids: list[pa.Array] = []
        self.digests: list[bytes] = []
        self.pending = 0
        self.number = 0
        self.sink: PartSink | None = None
        self.parts: list[PartEntry] = []
        self.encoder = Encoder(ahead=4)

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
            path = f"{self.folder}/index-{self.prefix}{self.number:05d}.parquet"
            self.writer.created.append(path)
            self.sink = PartSink(self.writer.repo, path, INDEX_SCHEMA, self.writer.options, plain=True)
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
        part_prefix: str = "",
    ) -> DatasetManifest:
        """Stream `batches` (canonical schema of `description`) into parts; return the dataset's manifest.

        `on_batch` sees every batch read, once its schema is checked, in the calling thread (the backup
        samples its search-baseline queries there). `select` (an incremental backup) is given every batch
        read with its record digests and returns the rows to write (None: all); the manifest's rows,
        digest and id types are those of the records written. With `with_index`, the id and digest of every
        record written also go into record-index parts (aibackup.manifests.chain), in record order, and the
        manifest is a chain of one link (this bundle's). With `groups`, what each part holds is recorded
        there (and with ``groups.split`` parts are rolled wherever the grouping value changes).
        `part_prefix` goes before the part (and index part) numbers: the writers of a partitioned backup
        (aibackup.distributed) write one dataset's folder side by side.

        Raises SourceDataError if a batch does not have the dataset's schema (a connector bug must not
        produce a bundle that cannot be restored).
        """
        schema = description.schema
        folder = self.dataset_folder(index, description.name)
        digest = DatasetDigest(algorithm=DIGEST_ALGORITHM)  # new datasets: always the current algorithm
        record_index = _IndexWriter(self, folder, part_prefix) if with_index else None
        kinds: Counter[str] = Counter()
        finished: dict[int, PartEntry] = {}
        sinks: dict[int, PartSink] = {}  # open parts; each is touched only by its own encoder thread
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
                path = f"{folder}/part-{part_prefix}{number:05d}.parquet"
                self.created.append(path)
                spool = self.spool if description.kind == "vectors" else None  # the search baseline reads them
                sink = sinks[number] = PartSink(self.repo, path, schema, self.options, spool=spool)
            sink.write(table)

        # A full part is sealed by its encoder, which then moves on, and completed (its upload finished,
        # on S3 a round trip or two and the last parts in flight) by one of CLOSING threads; an encoder
        # waits only when CLOSING parts are completing already, so memory stays bounded.
        closer = ThreadPoolExecutor(CLOSING, thread_name_prefix="aibackup-part-close")
        closing_slots = threading.BoundedSemaphore(CLOSING)
        closing: list[Future[None]] = []

        def complete(sink: PartSink) -> None:
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
        encoders = [Encoder(ahead) for _ in range(ENCODERS)]

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
        sink = PartSink(self.repo, path, table.schema, self.options, plain=True)
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
