"""The repository's chunk store: content-defined chunks of model files, kept once however many bundles need them.

Model files (:mod:`aibackup.connectors.model`) are cut into content-defined chunks; a bundle's file table
lists each file's chunk ids, and the bytes live here, shared by every bundle of the repository, so a new
version of a model stores only the chunks the repository lacks.

Layout::

    data/<writer-id>/packs/pack-<nnnnn>.parquet   chunk packs: Parquet, one row (and one row group) per chunk
    index/<writer-id>.parquet                     which pack holds which chunk (a sealed document when the
                                                  repository is encrypted)

``writer-id`` is the id of the backup that wrote the packs (or of the prune that repacked them): packs live
in a bundle's data folder so that encryption (a part's key is derived from its path and its bundle's key
generation), the orphan rules of prune and ``verify`` treat them like any part. A pack's columns: ``chunk``
(the 32-byte id), ``size`` (the chunk's bytes), ``zstd`` (stored compressed), ``data`` (the stored bytes).
Packs are immutable; Parquet compression is off for ``data`` (each chunk is compressed on its own, and only
where it pays: see :data:`COMPRESS_BELOW`).

An index file lists ``chunk``, ``pack`` (its path), ``row``, ``size`` and ``stored`` for the packs one run
wrote. The repository's index is the union of its index files (a chunk found twice is stored twice; either
copy serves). Commit order of a backup: packs, then its index file, then the manifest. A backup that fails
before its index is written removes its packs; once the index exists another backup may already rely on its
chunks, so they stay (unreferenced chunks are prune's business: :mod:`aibackup.chunkprune`).

Chunk ids are the SHA-256 of the chunk's bytes, or in an encrypted repository their HMAC-SHA256 under a key
derived from the repository key (so nobody without the key can test whether a known file is stored), and the
chunker's gear table is then seeded from the same key (restic's reason: chunk boundaries would otherwise
fingerprint known files).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import io
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aibackup import clock
from aibackup.crypto import RepositoryKey
from aibackup.errors import IntegrityError, UnavailableError, first_line
from aibackup.repository import Repository
from aibackup.storage import HashingWriter

INDEX = "index"
PACKS = "packs"
ID_BYTES = 32
#: A pack is closed once it holds this many stored bytes (a chunk is at most 4 MiB: a pack ends up a little
#: larger). 64 MiB: few objects on S3, and a repack moves little more than it must.
PACK_BYTES = 64 * 1024 * 1024
#: A chunk is kept compressed only when zstd saves at least 10% of it; whether to try at all is decided on
#: its first PROBE bytes (measured: bf16 weights compress to ~0.78, fp16 to ~0.92, fp32 ~0.93, quantised
#: GGUF blocks not at all; JSON and tokenizers far better).
COMPRESS_BELOW = 0.9
PROBE = 64 * 1024
ZSTD_LEVEL = 1

PACK_SCHEMA = pa.schema(
    [
        pa.field("chunk", pa.binary(ID_BYTES), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("zstd", pa.bool_(), nullable=False),
        pa.field("data", pa.binary(), nullable=False),
    ]
)
INDEX_SCHEMA = pa.schema(
    [
        pa.field("chunk", pa.binary(ID_BYTES), nullable=False),
        pa.field("pack", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("stored", pa.int64(), nullable=False),
    ]
)
_PACK_OPTIONS: dict[str, Any] = {
    "compression": "none",  # chunks are compressed one by one, where it pays
    "use_dictionary": False,
    "write_statistics": False,
    "write_page_checksum": True,
}


def pack_folder(writer_id: str) -> str:
    return f"data/{writer_id}/{PACKS}"


def is_pack(path: str) -> bool:
    """Whether `path` (relative to the repository) is where chunk packs are written."""
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == "data" and parts[2] == PACKS and parts[3].endswith(".parquet")


class ChunkIds:
    """How a repository names chunks (sha256, or keyed HMAC-SHA256) and seeds its chunker."""

    def __init__(self, key: RepositoryKey | None) -> None:
        if key is None:
            self._key: bytes | None = None
            self.seed = 0
        else:
            self._key = bytes.fromhex(key.keyed_hash(b"aibackup chunk ids v1\x00"))
            # pyfastcdc shifts the seed left by one inside a uint64: 62 bits keep it whole.
            self.seed = int(key.keyed_hash(b"aibackup chunker seed v1\x00")[:16], 16) >> 2
        self.algorithm = "sha256" if key is None else "hmac-sha256"

    def __call__(self, data: bytes | memoryview) -> bytes:
        if self._key is None:
            return hashlib.sha256(data).digest()
        return hmac.digest(self._key, data, "sha256")


@dataclass(frozen=True)
class Stored:
    """Where a chunk is: its pack, its row (= row group) there, its size and its stored size."""

    pack: str
    row: int
    size: int
    stored: int


@dataclass
class ChunkIndex:
    """The union of the repository's index files: chunk id -> where it is stored (the newest copy of a chunk
    stored twice; the others in ``copies``)."""

    places: dict[bytes, Stored] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # the index files read, relative to the repository
    copies: list[Stored] = field(default_factory=list)  # further places of chunks stored twice

    @classmethod
    def load(cls, repo: Repository) -> ChunkIndex:
        """Every index file of `repo`. IntegrityError naming a damaged one (an encrypted one that does not
        authenticate, Parquet that does not decode): a restore or backup must not guess."""
        index = cls()
        for name in repo.storage.list_names(INDEX):
            if not name.endswith(".parquet"):
                continue
            rel = f"{INDEX}/{name}"
            try:
                raw = repo.storage.read_bytes(rel)
            except FileNotFoundError:
                continue  # removed by a prune that just replaced it: its entries are in the new one
            for chunk, place in read_index(raw, repo.storage.display(rel)):
                # Index files are read oldest first and a later copy wins: it is the one under the
                # current master key (an older copy is prune's to drop once the old key retires).
                older = index.places.get(chunk)
                if older is not None:
                    index.copies.append(older)
                index.places[chunk] = place
            index.files.append(rel)
        return index

    def get(self, chunk: bytes) -> Stored | None:
        return self.places.get(chunk)

    def every(self) -> Iterable[Stored]:
        """Every place the index lists, copies of a chunk stored twice included."""
        yield from self.places.values()
        yield from self.copies

    def __contains__(self, chunk: object) -> bool:
        return chunk in self.places

    def __len__(self) -> int:
        return len(self.places)


def read_index(raw: bytes, where: str) -> list[tuple[bytes, Stored]]:
    """The entries of one index file's bytes (opened); IntegrityError naming `where` when it is damaged."""
    try:
        table = pq.read_table(pa.BufferReader(raw))
        if not table.schema.equals(INDEX_SCHEMA):
            raise IntegrityError(f"damaged chunk index {where}: unexpected columns {table.schema.names}")
        cols = [table.column(n).to_pylist() for n in INDEX_SCHEMA.names]
    except pa.ArrowException as exc:
        raise IntegrityError(f"damaged chunk index {where}: {first_line(exc)}") from None
    packs: dict[str, str] = {}  # one string per pack, not one per chunk (an index holds millions of rows)
    return [(c, Stored(packs.setdefault(p, p), r, s, t)) for c, p, r, s, t in zip(*cols, strict=True)]


def index_bytes(entries: Iterable[tuple[bytes, Stored]]) -> bytes:
    """One index file's bytes for `entries`."""
    chunks, packs, rows, sizes, stored = [], [], [], [], []
    for chunk, place in entries:
        chunks.append(chunk)
        packs.append(place.pack)
        rows.append(place.row)
        sizes.append(place.size)
        stored.append(place.stored)
    table = pa.table([chunks, packs, rows, sizes, stored], schema=INDEX_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=["pack"], write_statistics=False)
    return sink.getvalue()


def compress(data: bytes) -> bytes | None:
    """`data` compressed with zstd when that saves at least 1 - COMPRESS_BELOW of it, else None (judged on
    its first PROBE bytes first, so incompressible weights cost one small attempt)."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    if len(data) > 4 * PROBE and len(compressor.compress(data[:PROBE])) >= COMPRESS_BELOW * PROBE:
        return None
    packed: bytes = compressor.compress(data)
    return packed if len(packed) < COMPRESS_BELOW * len(data) else None


def decompress(data: bytes | memoryview, size: int) -> bytes:
    import zstandard

    out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    return out


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

    def __init__(self, repo: Repository, writer_id: str) -> None:
        self.repo = repo
        self.writer_id = writer_id
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
        self._closing.append(self._closer.submit(self.repo.storage.close_part, self._file, self.packs[-1]))
        self._writer = self._file = None

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


class _Named:
    """What every access to the chunk store shares: how chunks are named, and the chunker's seed."""

    ids: ChunkIds

    @property
    def seed(self) -> int:
        return self.ids.seed

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return self.ids(data)


class ChunkStore(_Named):
    """A backup's access to the chunk store (implements the connectors' ``ChunkSink``): names chunks, stores
    those the repository lacks (in packs of this backup), then publishes them with one index file.

    Dedup: against the repository's index as loaded at the start (chunks in packs written under an older
    master key are stored again, so that prune can retire that key) and against what this backup stored.
    """

    def __init__(self, repo: Repository, writer_id: str, index: ChunkIndex | None = None) -> None:
        self.repo = repo
        self.ids = ChunkIds(repo.key())
        self.index = index if index is not None else ChunkIndex.load(repo)
        self._usable: dict[str, bool] = {}
        self._packs = PackWriter(repo, writer_id)
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
        master key (so that prune can retire an older key) that is still there (a pack lost to damage or a
        hand-made deletion would otherwise keep every later backup from storing its chunks again)."""
        place = self.index.get(chunk)
        if place is None:
            return False
        usable = self._usable.get(place.pack)
        if usable is None:
            usable = not self.repo.rotated_since([place.pack]) and self.repo.storage.exists(place.pack)
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
        self._packs.abort()
        if self.published is not None:
            return
        for pack in self._packs.packs:
            with contextlib.suppress(Exception):
                self.repo.storage.remove(pack)


class ChunkReader(_Named):
    """Reads chunks back (restore, verify): each one checked against its id, so damage is always named.
    Packs are opened once and kept open while read (a few at a time)."""

    OPEN_PACKS = 4

    def __init__(self, repo: Repository, index: ChunkIndex | None = None, *, page_checksums: bool = True) -> None:
        """`page_checksums` False: pages are not CRC-checked as they are read (a restore, which proves every
        byte by its file's sha256 and then traces a mismatch to its chunk by the chunk's own hash)."""
        self.repo = repo
        self.page_checksums = page_checksums
        self.ids = ChunkIds(repo.key())
        self.index = index if index is not None else ChunkIndex.load(repo)
        self._open: OrderedDict[str, tuple[Any, pq.ParquetFile]] = OrderedDict()
        self.present: dict[str, bool] = {}  # pack -> whether it exists, for the packs looked at

    def put(self, chunk: bytes, data: bytes | memoryview) -> bool:
        """Reading a store back stores nothing (a restore's proof chunks the restored files the same way)."""
        return False

    def size(self, chunk: bytes) -> int | None:
        """The chunk's size, None when the index does not list it or its pack is gone (checked once per pack:
        a restore refuses such a file before it writes anything)."""
        place = self.index.get(chunk)
        if place is None:
            return None
        present = self.present.get(place.pack)
        if present is None:
            present = self.present[place.pack] = self.repo.storage.exists(place.pack)
        return place.size if present else None

    def where(self, chunk: bytes) -> Stored:
        place = self.index.get(chunk)
        if place is None:
            raise IntegrityError(f"chunk {chunk.hex()[:16]}… is in no pack of the repository's chunk index")
        return place

    def get(self, chunk: bytes, *, check: bool = True) -> bytes | memoryview:
        """The bytes of chunk `chunk` (a view of Arrow's buffer when stored uncompressed). IntegrityError
        when it is missing, its pack is damaged, or (with `check`) its bytes do not give its id."""
        place = self.where(chunk)
        where = self.repo.storage.display(place.pack)
        try:
            pf = self._pack(place.pack)
            if not 0 <= place.row < pf.metadata.num_row_groups:
                raise IntegrityError(f"damaged chunk pack {where}: it has no row {place.row}")
            table = pf.read_row_group(place.row)
        except FileNotFoundError:
            raise IntegrityError(f"missing chunk pack {where}") from None
        except pa.ArrowException as exc:
            raise IntegrityError(f"damaged chunk pack {where}: {first_line(exc)}") from None
        except OSError as exc:
            if any(word in str(exc).lower() for word in ("checksum", "decrypt", "encrypted")):
                raise IntegrityError(f"damaged chunk pack {where}: {first_line(exc)}") from None
            raise UnavailableError(f"cannot read {where}: {first_line(exc)}") from None
        if (
            table.num_rows != 1
            or table.column("chunk")[0].as_py() != chunk
            or table.column("size")[0].as_py() != place.size
        ):
            raise IntegrityError(f"damaged chunk pack {where}: row {place.row} is not chunk {chunk.hex()[:16]}…")
        # The bytes as Arrow holds them, without a copy into a Python bytes object (a view of the buffer).
        cell = table.column("data").chunk(0)
        value = cell[0].as_buffer()
        data: bytes | memoryview = memoryview(value)
        if table.column("zstd")[0].as_py():
            try:
                data = decompress(data, place.size)
            except Exception:  # zstandard raises its own ZstdError for damaged frames
                raise IntegrityError(f"damaged chunk {chunk.hex()[:16]}… in {where}: it does not decompress") from None
        if len(data) != place.size or (check and self.ids(data) != chunk):
            raise IntegrityError(f"damaged chunk {chunk.hex()[:16]}… in {where}: its bytes do not match its id")
        return data

    def _pack(self, path: str) -> pq.ParquetFile:
        held = self._open.get(path)
        if held is not None:
            self._open.move_to_end(path)
            return held[1]
        storage = self.repo.storage
        # On local disk the pack is mapped: Arrow reads its pages in place, without a copy through Python.
        f: Any = pa.memory_map(storage.full(path)) if storage.is_local else storage.open_read(path)
        try:
            pf = pq.ParquetFile(
                f,
                page_checksum_verification=self.page_checksums,
                decryption_properties=self.repo.part_decryption(path),
            )
            if not pf.schema_arrow.equals(PACK_SCHEMA):
                raise IntegrityError(f"damaged chunk pack {self.repo.storage.display(path)}: unexpected columns")
        except BaseException:
            f.close()
            raise
        self._open[path] = (f, pf)
        while len(self._open) > self.OPEN_PACKS:
            _, (old, _) = self._open.popitem(last=False)
            old.close()
        return pf

    def close(self) -> None:
        while self._open:
            _, (f, _) = self._open.popitem()
            f.close()


def new_writer_id(repo: Repository) -> str:
    """An id for what a prune writes (repacked packs, the new index file): a bundle id no bundle has, sorting
    after every one, so that its key generation is the current one."""
    return repo.next_bundle_id(clock.now().astimezone(dt.UTC))
