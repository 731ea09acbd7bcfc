"""Reading the chunk store (:mod:`aibackup.chunks`) back: :class:`ChunkReader` (restore, verify, prune's
repacking) checks every chunk against its id, so damage is always named.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aibackup.chunk_writer import PACK_BYTES
from aibackup.chunks import PACK_SCHEMA, ChunkAccess, ChunkIds, ChunkIndex, Stored, decompress
from aibackup.errors import IntegrityError, UnavailableError, first_line
from aibackup.repository import Repository
from aibackup.spool import PartSpool


class ChunkReader(ChunkAccess):
    """Reads chunks back (restore, verify): each one checked against its id, so damage is always named.
    Packs are opened once and kept open while read (a few at a time). A remote repository's pack is
    downloaded whole into a local spool when first read (concurrent ranged GETs: one pass over the network
    instead of a request per chunk) and removed from it when the pack is closed."""

    OPEN_PACKS = 4
    #: The most a pack holds (its writer closes it past PACK_BYTES, by one chunk at most): the room the
    #: spool's disk must have for it.
    PACK_HINT = 2 * PACK_BYTES

    def __init__(
        self,
        repo: Repository,
        index: ChunkIndex | None = None,
        *,
        page_checksums: bool = True,
        on_damage: Callable[[str, str], None] | None = None,
    ) -> None:
        """`page_checksums` False: pages are not CRC-checked as they are read (a restore, which proves every
        byte by its file's sha256 and then traces a mismatch to its chunk by the chunk's own hash).
        `on_damage(pack, problem)` is told of a pack found missing or damaged before the IntegrityError is
        raised (a restore records it, as it records a damaged part)."""
        self.repo = repo
        self.page_checksums = page_checksums
        self.on_damage = on_damage
        self.ids = ChunkIds(repo.key())
        self.index = index if index is not None else ChunkIndex.load(repo)
        self._open: OrderedDict[str, tuple[Any, pq.ParquetFile]] = OrderedDict()
        #: pack -> whether Arrow decodes it from bytes already here (memory-mapped: the local repository's
        #: file, or a remote pack's spooled copy), not from a stream still reading the storage.
        self._in_place: dict[str, bool] = {}
        self._spool = None if repo.storage.is_local else PartSpool(repo.storage)
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
            raise IntegrityError(
                f"chunk {chunk.hex()[:16]}… is in no pack of the repository's chunk index{self.index.damage_note()}"
            )
        return place

    def get(self, chunk: bytes, *, check: bool = True) -> bytes | memoryview:
        """The bytes of chunk `chunk` (a view of Arrow's buffer when stored uncompressed). IntegrityError
        when it is missing, its pack is damaged, or (with `check`) its bytes do not give its id."""
        place = self.where(chunk)
        try:
            return self._get(chunk, place, check)
        except IntegrityError as exc:
            if self.on_damage is not None:
                self.on_damage(place.pack, str(exc))
            raise

    def _get(self, chunk: bytes, place: Stored, check: bool) -> bytes | memoryview:
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
            if undecodable(exc, in_place=self._in_place.get(place.pack, False)):
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
        f: Any
        try:
            if self._spool is None:
                f = pa.memory_map(storage.full(path))
            else:
                self._spool.hash(path, self.PACK_HINT)  # downloaded once; the chunks are proven by their ids
                f = self._spool.open(path)
        except FileNotFoundError:
            raise
        except OSError as exc:  # the storage, before a byte was decoded: never damage
            raise UnavailableError(f"cannot read {storage.display(path)}: {first_line(exc)}") from None
        self._in_place[path] = isinstance(f, pa.MemoryMappedFile)
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
            if self._spool is not None:
                self._spool.discard(path)
            raise
        self._open[path] = (f, pf)
        while len(self._open) > self.OPEN_PACKS:
            gone, (old, _) = self._open.popitem(last=False)
            old.close()
            if self._spool is not None:
                self._spool.discard(gone)
        return pf

    def close(self) -> None:
        while self._open:
            _, (f, _) = self._open.popitem()
            f.close()
        if self._spool is not None:
            self._spool.close()


def undecodable(exc: OSError, *, in_place: bool) -> bool:
    """Whether pyarrow's `exc`, reading a chunk pack, is damage rather than storage that cannot be read.
    pyarrow raises a plain OSError both for Parquet it cannot decode (a thrift footer or page header,
    "Unexpected end of stream", a failed page CRC, an encrypted module that does not authenticate) and for a
    read that failed; only the latter carries an errno (EIO, EACCES, a network error's). So: a failed
    checksum or decryption is damage wherever the bytes came from, and any OSError without an errno is
    damage when Arrow decoded bytes already here (`in_place`: memory-mapped). A pack streamed from the
    storage (its spool short of room) keeps every other error as the storage's."""
    if any(word in str(exc).lower() for word in ("checksum", "decrypt", "encrypted")):
        return True
    return in_place and exc.errno is None
