"""Writing the chunk store (:mod:`aibackup.chunks`): :class:`PackWriter` writes chunks into packs, and
:class:`ChunkStore` is a backup's access to the store: it names chunks, stores those the repository lacks
in packs of this backup, then publishes them with one index file (:class:`StoreStats` says what it did).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aibackup import reports
from aibackup.chunks import (
    INDEX,
    PACK_SCHEMA,
    ChunkAccess,
    ChunkIds,
    ChunkIndex,
    Stored,
    compress,
    index_bytes,
    pack_folder,
    pack_problem,
)
from aibackup.errors import IntegrityError
from aibackup.hashing_writer import HashingWriter
from aibackup.repository import Repository
from aibackup.storage import AlreadyExistsError

#: A pack is closed once it holds this many stored bytes (a chunk is at most 4 MiB: a pack ends up a little
#: larger). 64 MiB: few objects on S3, and a repack moves little more than it must.
PACK_BYTES = 64 * 1024 * 1024
_PACK_OPTIONS: dict[str, Any] = {
    "compression": "none",  # chunks are compressed one by one, where it pays
    "use_dictionary": False,
    "write_statistics": False,
    "write_page_checksum": True,
}


class PackWriter:
    """Writes chunks into packs under ``data/<writer_id>/packs/``, one row group per chunk, rolling at
    :data:`PACK_BYTES`. Compressing and encoding run in a thread of their own, a few chunks behind the
    caller (zstd and pyarrow release the GIL), which hands its pages to the part writer's own thread: the
    caller keeps reading, cutting and hashing meanwhile. An error of the thread is raised by the next
    :meth:`add` or by :meth:`finish`."""

    QUEUE = 4  # chunks waiting (at most 4 MiB each)
    #: Packs completing at once (S3: their last parts upload, the multipart upload completes; local disk:
    #: the fsync) while the next pack is written. Memory: at most this many packs' unsent buffers.
    CLOSING = 2

    def __init__(self, repo: Repository, writer_id: str, ids: ChunkIds | None = None) -> None:
        self.repo = repo
        self.writer_id = writer_id
        self.ids = ids or ChunkIds(repo.key())  # the chunk ids, to recognise a pack of its own
        self.packs: list[str] = []  # every pack created (finished or not), for discard
        self.entries: list[tuple[bytes, Stored]] = []  # complete once finish() returned
        self.stored_bytes = 0
        self.raw_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._file: HashingWriter | None = None
        self._rows = 0
        self._pack_bytes = 0
        self._queue: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue(maxsize=self.QUEUE)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closing: list[Future[None]] = []
        self._closer: ThreadPoolExecutor | None = None

    def add(self, chunk: bytes, data: bytes) -> None:
        """Queue one chunk to be written (compressed there when that pays)."""
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="aibackup-pack-writer", daemon=True)
            self._thread.start()
        self._queue.put((chunk, data))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:  # after an error, keep consuming so that the caller never blocks
                try:
                    self._write(*item)
                except BaseException as exc:
                    self._error = exc

    def _write(self, chunk: bytes, data: bytes) -> None:
        packed = compress(data)
        stored = packed if packed is not None else data
        if self._writer is None:
            self._open()
        assert self._writer is not None
        table = pa.table([[chunk], [len(data)], [packed is not None], [stored]], schema=PACK_SCHEMA)
        self._writer.write_table(table, row_group_size=1)
        self.entries.append((chunk, Stored(self.packs[-1], self._rows, len(data), len(stored))))
        self._rows += 1
        self._pack_bytes += len(stored)
        self.stored_bytes += len(stored)
        self.raw_bytes += len(data)
        if self._pack_bytes >= PACK_BYTES:
            self._close()

    def _open(self) -> None:
        path = f"{pack_folder(self.writer_id)}/pack-{len(self.packs):05d}.parquet"
        self.packs.append(path)
        self._file = self.repo.storage.create(path, hashing=False)
        kwargs = dict(_PACK_OPTIONS)
        encryption = self.repo.part_encryption(path)
        if encryption is not None:
            kwargs["encryption_properties"] = encryption
        self._writer = pq.ParquetWriter(pa.PythonFile(self._file, mode="w"), PACK_SCHEMA, **kwargs)
        self._rows = self._pack_bytes = 0

    def _close(self) -> None:
        """Complete the current pack in the background (at most CLOSING at once)."""
        if self._writer is None:
            return
        assert self._file is not None
        self._writer.close()
        if self._closer is None:
            self._closer = ThreadPoolExecutor(self.CLOSING, thread_name_prefix="aibackup-pack-close")
        while len(self._closing) >= self.CLOSING:
            self._closing.pop(0).result()
        self._closing.append(self._closer.submit(self._complete, self._file, self.packs[-1]))
        self._writer = self._file = None

    def _complete(self, file: HashingWriter, path: str) -> None:
        """Complete a pack. One that S3 applied although its answer was lost meets itself on the retry:
        packs are not hashed whole (each chunk is), so the object at this writer's own path counts as this
        pack when it has its size and holds this pack's chunks, each giving its id back."""
        try:
            self.repo.storage.close_part(file, path)
        except AlreadyExistsError:
            raw = self.repo.storage.fs.cat_file(self.repo.storage.full(path))
            holds = [chunk for chunk, stored in list(self.entries) if stored.pack == path]
            decryption = self.repo.part_decryption(path)
            if len(raw) != file.bytes or pack_problem(raw, self.ids, decryption, holds) is not None:
                raise

    def _drain_closing(self) -> None:
        try:
            while self._closing:
                self._closing.pop(0).result()
        finally:
            if self._closer is not None:
                self._closer.shutdown(wait=True)
                self._closer = None

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def finish(self) -> None:
        """Write what is queued and close the last pack (every pack is then durable)."""
        self._stop()
        if self._error is not None:
            raise self._error
        self._close()
        self._drain_closing()

    def discard(self) -> None:
        """Stop writing and remove every pack this writer created: for a run that fails before an index file
        lists them (nothing can rely on their chunks yet)."""
        self.abort()
        for path in self.packs:
            with contextlib.suppress(Exception):
                self.repo.storage.remove(path)

    def abort(self) -> None:
        """Stop writing; the caller removes the packs."""
        with contextlib.suppress(BaseException):
            self._stop()
        with contextlib.suppress(BaseException):
            self._drain_closing()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self._file is not None:
            self._file.abort()
        self._writer = self._file = None


@dataclass
class StoreStats:
    """What one backup's chunk store did: chunks referenced, new ones and their bytes."""

    chunks: int = 0  # chunk references of the files written
    new_chunks: int = 0
    new_bytes: int = 0  # stored (after compression)
    raw_new_bytes: int = 0
    compressed_chunks: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "chunks": self.chunks,
            "new_chunks": self.new_chunks,
            "new_bytes": self.new_bytes,
            "raw_new_bytes": self.raw_new_bytes,
            "compressed_chunks": self.compressed_chunks,
        }


class ChunkStore(ChunkAccess):
    """A backup's access to the chunk store (implements the connectors' ``ChunkSink``): names chunks, stores
    those the repository lacks (in packs of this backup), then publishes them with one index file.

    Dedup: against the repository's index as loaded at the start (chunks in packs written under an older
    master key are stored again, so that prune can retire that key) and against what this backup stored.
    """

    def __init__(self, repo: Repository, writer_id: str, index: ChunkIndex | None = None) -> None:
        self.repo = repo
        self.ids = ChunkIds(repo.key())
        self.index = index if index is not None else ChunkIndex.load(repo, skip_damaged=True)
        self._usable: dict[str, bool] = {}
        self._damaged: frozenset[str] | None = None  # packs found damaged (read at the first reuse)
        self._packs = PackWriter(repo, writer_id, self.ids)
        self._new: set[bytes] = set()
        self._reused: set[bytes] = set()  # chunks found in packs of earlier runs
        self.stats = StoreStats()
        self.published: str | None = None
        self.writer_id = writer_id

    def put(self, chunk: bytes, data: bytes | memoryview) -> bool:
        """Keep chunk `chunk` (its id, from :meth:`chunk_id`) holding `data`; True when it was stored now,
        False when the repository already has it."""
        self.stats.chunks += 1
        if chunk in self._new:
            return False
        if self._has(chunk):
            self._reused.add(chunk)
            return False
        self._packs.add(chunk, bytes(data))
        self._new.add(chunk)
        return True

    def get(self, chunk: bytes, *, check: bool = True) -> bytes | memoryview:
        raise NotImplementedError("a backup's chunk store is written, not read")

    def size(self, chunk: bytes) -> int | None:
        place = self.index.get(chunk)
        return None if place is None else place.size

    def _has(self, chunk: bytes) -> bool:
        """Whether the repository holds `chunk` in a pack this backup may reference: one under the current
        master key (so that prune can retire an older key) that is still there and that no verify or restore
        found damaged (a pack lost to damage or a hand-made deletion would otherwise keep every later backup
        from storing its chunks again: stored again, the newer copy is the one the index gives)."""
        place = self.index.get(chunk)
        if place is None:
            return False
        usable = self._usable.get(place.pack)
        if usable is None:
            if self._damaged is None:
                self._damaged = reports.damaged_parts(self.repo)
            usable = (
                place.pack not in self._damaged
                and not self.repo.rotated_since([place.pack])
                and self.repo.storage.exists(place.pack)
            )
            self._usable[place.pack] = usable
        return usable

    def publish(self) -> None:
        """Close the packs and write this backup's index file (nothing when no chunk was new); ``stats`` are
        complete from here. From here on the chunks are the repository's: :meth:`discard` leaves them."""
        self._packs.finish()
        for _, place in self._packs.entries:
            self.stats.new_chunks += 1
            self.stats.new_bytes += place.stored
            self.stats.raw_new_bytes += place.size
            self.stats.compressed_chunks += place.stored != place.size
        if self._packs.entries:
            rel = f"{INDEX}/{self.writer_id}.parquet"
            self.repo.storage.write_exclusive(rel, index_bytes(self._packs.entries))
            self.published = rel

    def check_referenced(self) -> None:
        """Before the manifest is committed: every pack holding a chunk of an earlier run that this backup
        reuses is still there. IntegrityError otherwise (nothing is committed)."""
        packs = {p.pack for c in self._reused if (p := self.index.get(c)) is not None}
        for pack in sorted(packs):
            if not self.repo.storage.exists(pack):
                raise IntegrityError(f"the chunk pack {self.repo.storage.display(pack)} went missing during the backup")

    def discard(self) -> None:
        """A backup that will not commit: its packs go unless their index was published (another backup may
        already reuse their chunks; prune removes them once nothing references them)."""
        if self.published is not None:
            self._packs.abort()
        else:
            self._packs.discard()
