"""How a bundle's parts are encoded: Parquet options, one part being written, and the encoder threads.

Parts are immutable Parquet files: zstd-compressed, float vectors in ``BYTE_STREAM_SPLIT`` encoding with
dictionary encoding and statistics off for them (a float vector column is incompressible noise to a
dictionary and statistics on it are waste), page checksums on (:class:`WriteOptions`, :func:`parquet_options`).
A :class:`PartSink` streams one part through a :class:`aibackup.hashing_writer.HashingWriter`, so its sha256
and byte count are computed while it is written (never read back); an :class:`Encoder` is one thread that
encodes row groups queued for it, with bounded memory. :mod:`aibackup.bundle` drives them.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from aibackup.hashing_writer import HashingWriter
from aibackup.manifests.model import PartEntry
from aibackup.manifests.vectors import float_vector_paths
from aibackup.repository import Repository
from aibackup.spool import PartSpool
from aibackup.storage import CHUNK


@dataclass(frozen=True)
class WriteOptions:
    """Parquet tuning. zstd level 1 measured smallest *and* fastest on float vectors with byte_stream_split."""

    compression: str = "zstd"
    compression_level: int = 1
    row_group_bytes: int = 8 * 1024 * 1024
    part_bytes: int = 32 * 1024 * 1024


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


def _is_vector(typ: pa.DataType) -> bool:
    return pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_struct(typ)


class PartSink:
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


class Encoder:
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
