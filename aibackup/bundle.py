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
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from aibackup.connectors.base import DatasetDescription
from aibackup.errors import IntegrityError, SourceDataError, UnavailableError, first_line
from aibackup.manifests.digest import DIGEST_ALGORITHM, DatasetDigest
from aibackup.manifests.kinds import arrow_schema
from aibackup.manifests.model import DatasetManifest, FieldEntry, ManifestError, PartEntry
from aibackup.manifests.vectors import float_vector_paths
from aibackup.repository import Repository
from aibackup.storage import CHUNK, HashingWriter

IdTypes = Callable[[pa.Array], Counter[str]]

#: Parts encoded at once, each by its own thread (the machine this was tuned on has 2 cores).
ENCODERS = 2


@dataclass(frozen=True)
class WriteOptions:
    """Parquet tuning. zstd level 1 measured smallest *and* fastest on float vectors with byte_stream_split."""

    compression: str = "zstd"
    compression_level: int = 1
    row_group_bytes: int = 8 * 1024 * 1024
    part_bytes: int = 32 * 1024 * 1024


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

    def __init__(self, repo: Repository, path: str, schema: pa.Schema, options: WriteOptions) -> None:
        self.path = path
        self.rows = 0
        self.arrow_bytes = 0
        self.file: HashingWriter = repo.storage.create(path)
        # Pages reach the (Python) hashing file in CHUNK-sized writes, not one call per page: each call
        # needs the GIL, which the digests hold most of the time (measured 1.9x raw pyarrow with per-page
        # calls).
        self.stream = pa.BufferedOutputStream(pa.PythonFile(self.file, mode="w"), buffer_size=CHUNK)
        self.writer = pq.ParquetWriter(self.stream, schema, **parquet_options(schema, options))

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows
        self.arrow_bytes += table.nbytes

    def finish(self, repo: Repository) -> PartEntry:
        self.writer.close()
        self.stream.flush()
        repo.storage.close_part(self.file, self.path)
        return PartEntry(path=self.path, rows=self.rows, bytes=self.file.bytes, sha256=self.file.sha256)

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the original error matters, not this one
            self.writer.close()
        self.file.abort()


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

    def __init__(self, repo: Repository, bundle_id: str, options: WriteOptions | None = None) -> None:
        self.repo = repo
        self.bundle_id = bundle_id
        self.options = options or WriteOptions()
        #: Every part path this writer created (finished or not), for `discard`.
        self.created: list[str] = []

    def discard(self) -> None:
        """Remove the parts of a bundle that will not be committed (best effort: a part left behind is an
        unreferenced orphan, harmless to every reader)."""
        for path in self.created:
            with contextlib.suppress(Exception):
                self.repo.storage.remove(path)

    def write_dataset(
        self,
        index: int,
        description: DatasetDescription,
        batches: Iterable[pa.RecordBatch],
        id_types: IdTypes | None = None,
        on_rows: Callable[[int], None] | None = None,
        on_batch: Callable[[pa.RecordBatch], None] | None = None,
    ) -> DatasetManifest:
        """Stream `batches` (canonical schema of `description`) into parts; return the dataset's manifest.

        `on_batch` sees every batch that is written, once its schema is checked, in the calling thread
        (the backup samples its search-baseline queries there).

        Raises SourceDataError if a batch does not have the dataset's schema (a connector bug must not
        produce a bundle that cannot be restored).
        """
        schema = description.schema
        folder = f"{self.repo.part_prefix(self.bundle_id)}/{index:03d}-{slug(description.name)}"
        digest = DatasetDigest(algorithm=DIGEST_ALGORITHM)  # new datasets: always the current algorithm
        kinds: Counter[str] = Counter()
        finished: dict[int, PartEntry] = {}
        sinks: dict[int, _PartSink] = {}  # open parts; each is touched only by its own encoder thread
        pending: list[pa.RecordBatch] = []
        pending_bytes = 0
        part = part_bytes = 0  # the part being filled and the Arrow bytes given to it so far

        def write_group(number: int, table: pa.Table) -> None:
            """Encode one row group into part `number` (in that part's encoder thread, in order)."""
            sink = sinks.get(number)
            if sink is None:
                path = f"{folder}/part-{number:05d}.parquet"
                self.created.append(path)
                sink = sinks[number] = _PartSink(self.repo, path, schema, self.options)
            sink.write(table)

        def finish_part(number: int) -> None:
            finished[number] = sinks[number].finish(self.repo)
            del sinks[number]  # only now: a part whose commit failed is still aborted below

        # Parts are encoded in parallel, part k by encoder k % ENCODERS (Parquet encoding is C++ with the
        # GIL released), while this thread computes the record digests. Rows stay in order: part k holds
        # the rows after part k-1's. Each encoder queues at most a part's worth of row groups, so this
        # thread can fill the next part while the previous one is still being encoded, and memory stays
        # bounded (about ENCODERS parts of Arrow data in flight).
        ahead = max(1, -(-self.options.part_bytes // self.options.row_group_bytes))
        encoders = [_Encoder(ahead) for _ in range(ENCODERS)]

        def flush() -> None:
            nonlocal pending, pending_bytes, part, part_bytes
            if not pending:
                return
            table = pa.Table.from_batches(pending, schema=schema)
            pending, pending_bytes = [], 0
            encoder = encoders[part % ENCODERS]
            encoder.submit(write_group, part, table)
            part_bytes += table.nbytes
            if part_bytes >= self.options.part_bytes:
                encoder.submit(finish_part, part)
                part, part_bytes = part + 1, 0

        try:
            for batch in batches:
                if not batch.schema.equals(schema):
                    raise SourceDataError(
                        f"collection {description.name!r}: the connector produced columns "
                        f"{batch.schema.names} with types that differ from the canonical schema"
                    )
                if batch.num_rows == 0:
                    continue
                digest.add_batch(batch)
                ids = batch.column(0)
                kinds.update(id_types(ids) if id_types else {"string": len(ids)})
                pending.append(batch)
                pending_bytes += batch.nbytes
                if on_rows is not None:
                    on_rows(batch.num_rows)
                if on_batch is not None:
                    on_batch(batch)
                if pending_bytes >= self.options.row_group_bytes:
                    flush()
            flush()
            if part_bytes:
                encoders[part % ENCODERS].submit(finish_part, part)
            for encoder in encoders:
                encoder.drain()
        except BaseException:
            for encoder in encoders:  # the open sinks are the encoders' until they stop
                encoder.stop()
            for sink in sinks.values():
                sink.abort()
            raise
        finally:
            for encoder in encoders:
                encoder.stop()
        parts = tuple(finished[number] for number in sorted(finished))
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
        )


class BundleReader:
    """Reads the parts of a committed bundle, checking each against its manifest entry."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def check_part(self, part: PartEntry, *, read_data: bool) -> str | None:
        """The problem with one part, or None. Without `read_data` only presence and size are checked."""
        storage = self.repo.storage
        try:
            if read_data:
                sha, size = storage.hash_file(part.path)
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
        """Every record of `dataset` in bundle order, as batches of at most `batch_rows` rows (only
        `columns`, when given: Parquet reads no other column).

        Each part is checked as it is opened (size, Parquet page checksums, schema and row count against
        the manifest); any damage raises IntegrityError naming the part. Callers that must refuse damage
        *before* acting (restore) run :meth:`check_part` with ``read_data=True`` on every part first.
        """
        expected = dataset_schema(dataset)
        for part in dataset.parts:
            where = self.repo.storage.display(part.path)
            try:
                with self.repo.storage.open_read(part.path) as f:
                    pf = pq.ParquetFile(f, page_checksum_verification=True)
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
                # pyarrow reports a failed page CRC as a plain OSError; anything else is the storage.
                if "checksum" in str(exc).lower():
                    raise IntegrityError(f"damaged part {where}: {first_line(exc)}") from None
                raise UnavailableError(f"cannot read {where}: {first_line(exc)}") from None
