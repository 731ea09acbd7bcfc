"""The repository's chunk store, its format: layout, pack and index schemas, chunk ids (:class:`ChunkIds`),
the index (:class:`ChunkIndex`, index files) and the compression of chunks. Writing it is
:mod:`aibackup.chunk_writer`'s (packs, a backup's :class:`~aibackup.chunk_writer.ChunkStore`), reading it
:mod:`aibackup.chunk_reader`'s.

The chunk store keeps content-defined chunks of model files once however many bundles need them. Model files
(:mod:`aibackup.connectors.model`) are cut into content-defined chunks; a bundle's file table lists each
file's chunk ids, and the bytes live in the chunk store, shared by every bundle of the repository, so a new
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

import datetime as dt
import hashlib
import hmac
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aibackup import clock
from aibackup.crypto import RepositoryKey
from aibackup.errors import IntegrityError, first_line
from aibackup.repository import Repository, id_time, new_bundle_id

INDEX = "index"
#: The key of an index file's footer metadata holding the sha256 of its entries (see :func:`index_bytes`).
INDEX_DIGEST = b"aibackup.entries.sha256"
#: What a damaged or lost index file's message suggests (aibackup.repair; a copy holding the bundles does too).
REPAIR_HINT = "`aibackup repair index` rebuilds it from the packs"
#: What a chunk no index file places suggests (an index file lost without a trace, or never written).
UNINDEXED_HINT = "`aibackup repair index` indexes the packs no index file lists"
PACKS = "packs"
ID_BYTES = 32
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


def pack_folder(writer_id: str) -> str:
    return f"data/{writer_id}/{PACKS}"


def is_pack(path: str) -> bool:
    """Whether `path` (relative to the repository) is where chunk packs are written."""
    parts = path.split("/")
    return (
        len(parts) == 4
        and parts[0] == "data"
        and parts[1] not in ("", ".", "..")  # `data/../packs/x` would lead out of the repository
        and parts[2] == PACKS
        and parts[3].endswith(".parquet")
    )


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


class ChunkAccess:
    """What every access to the chunk store shares: how chunks are named, and the chunker's seed."""

    ids: ChunkIds

    @property
    def seed(self) -> int:
        return self.ids.seed

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return self.ids(data)


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
    copies: list[tuple[bytes, Stored]] = field(default_factory=list)  # further places of chunks stored twice
    #: Index files skipped as damaged (`skip_damaged`): path relative to the repository -> problem.
    damaged: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, repo: Repository, *, skip_damaged: bool = False) -> ChunkIndex:
        """Every index file of `repo`. DamagedIndexError naming a damaged one (an encrypted one that does not
        authenticate, Parquet that does not decode): what prunes or verifies must not guess. `skip_damaged`:
        such a file is left out and named in ``damaged`` instead, for the readers that lose nothing by it: a
        backup stores the chunks it listed again (one damaged file had stopped every model backup, --full
        too), a restore fails only for a chunk it needs and cannot find (saying why), a copy indexes again the
        chunks its bundles need."""
        index = cls()
        for name in repo.storage.list_names(INDEX):
            if not name.endswith(".parquet"):
                continue
            rel = f"{INDEX}/{name}"
            try:
                raw = repo.storage.read_bytes(rel)
                entries = read_index(raw, repo.storage.display(rel))
            except FileNotFoundError:
                continue  # removed by a prune that just replaced it: its entries are in the new one
            except IntegrityError as exc:  # a sealed one that does not authenticate, or undecodable Parquet
                if skip_damaged:
                    index.damaged[rel] = str(exc)
                    continue
                raise DamagedIndexError(str(exc), repo.storage.display(rel)) from None
            for chunk, place in entries:
                # Index files are read oldest first and a later copy wins: it is the one under the
                # current master key (an older copy is prune's to drop once the old key retires).
                older = index.places.get(chunk)
                if older is not None:
                    index.copies.append((chunk, older))
                index.places[chunk] = place
            index.files.append(rel)
        return index

    def get(self, chunk: bytes) -> Stored | None:
        return self.places.get(chunk)

    def damage_note(self) -> str:
        """ " (the first damaged index file's problem; the way out)" for the message of a chunk no index
        places, where index files were left out as damaged (`skip_damaged`); else " (the way out)"."""
        for problem in list(self.damaged.values())[:1]:
            return f" ({problem}; {REPAIR_HINT})"
        return f" ({UNINDEXED_HINT})"

    def every(self) -> Iterable[Stored]:
        """Every place the index lists, copies of a chunk stored twice included."""
        yield from self.places.values()
        yield from (place for _, place in self.copies)

    def __contains__(self, chunk: object) -> bool:
        return chunk in self.places

    def __len__(self) -> int:
        return len(self.places)


class DamagedIndexError(IntegrityError):
    """A chunk index file that cannot be read as one (`where`: the file), for reports that name files."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where


def read_index(raw: bytes, where: str) -> list[tuple[bytes, Stored]]:
    """The entries of one index file's bytes (opened); IntegrityError naming `where` when it is damaged:
    Parquet that does not decode, a page that fails its checksum, entries that do not give the digest the
    file carries (index files of aibackup before 2026-12-07 carry neither: only what decodes is checked)."""
    try:
        table = pq.read_table(pa.BufferReader(raw), page_checksum_verification=True)
        if not table.schema.equals(INDEX_SCHEMA):
            raise IntegrityError(f"damaged chunk index {where}: unexpected columns {table.schema.names}")
        given = (table.schema.metadata or {}).get(INDEX_DIGEST)
        if given is not None and given.decode("ascii", "replace") != _entries_digest(table):
            raise IntegrityError(f"damaged chunk index {where}: its entries do not give the digest it carries")
        cols = [table.column(n).to_pylist() for n in INDEX_SCHEMA.names]
    except (pa.ArrowException, OSError) as exc:  # bytes in memory: an OSError is undecodable Parquet (thrift)
        raise IntegrityError(f"damaged chunk index {where}: {first_line(exc)}") from None
    packs: dict[str, str] = {}  # one string per pack, not one per chunk (an index holds millions of rows)
    entries = [(c, Stored(packs.setdefault(p, p), r, s, t)) for c, p, r, s, t in zip(*cols, strict=True)]
    # A place outside the repository's packs (`data/../../x`: an unencrypted index file anyone who can write
    # the bucket can rewrite) would have verify read, and copy write, beyond the repository's root.
    if stray := next((p for p in packs if not is_pack(p)), None):
        raise IntegrityError(f"damaged chunk index {where}: {stray!r} is not a chunk pack of the repository")
    return entries


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
    table = table.replace_schema_metadata({INDEX_DIGEST: _entries_digest(table).encode("ascii")})
    sink = io.BytesIO()
    # Page checksums and the entries' digest: an unencrypted index file has no other protection (a sealed
    # one is authenticated as a whole), and a flipped bit in a Parquet page often still decodes, to another
    # row number or pack; measured on a small index file, one bit flip in five did.
    pq.write_table(
        table, sink, compression="zstd", use_dictionary=["pack"], write_statistics=False, write_page_checksum=True
    )
    return sink.getvalue()


def _entries_digest(table: pa.Table) -> str:
    """sha256 of an index table's entries, column by column in their canonical bytes (the chunk ids, each
    pack path's byte length as int32 then the paths' UTF-8, rows as int32, sizes and stored sizes as int64,
    little-endian), whatever the table's chunking (each Arrow chunk is hashed in turn: combining them would
    overflow a string column's 32-bit offsets past 2 GiB of paths)."""
    sha = hashlib.sha256()
    for ids in table.column("chunk").chunks:
        if len(ids):
            sha.update(memoryview(ids.buffers()[1])[ids.offset * ID_BYTES : (ids.offset + len(ids)) * ID_BYTES])
    packs = table.column("pack").chunks
    for paths in packs:
        sha.update(pc.binary_length(paths).to_numpy(zero_copy_only=False).astype("<i4").tobytes())
    for paths in packs:
        if len(paths):  # the paths' bytes end to end: the data buffer between the first and the last offset
            bounds = np.frombuffer(paths.buffers()[1], np.int32)[paths.offset : paths.offset + len(paths) + 1]
            sha.update(memoryview(paths.buffers()[2])[bounds[0] : bounds[-1]])
    for name, dtype in (("row", "<i4"), ("size", "<i8"), ("stored", "<i8")):
        for values in table.column(name).chunks:
            sha.update(values.to_numpy(zero_copy_only=False).astype(dtype).tobytes())
    return sha.hexdigest()


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


def pack_problem(
    raw: bytes, ids: Callable[[bytes], bytes], decryption: Any = None, holds: Sequence[bytes] | None = None
) -> str | None:
    """What is wrong with the whole chunk pack `raw` (its stored form; `decryption`: the repository's
    properties for it), or None when every row's chunk gives its id back (and, with `holds`, the pack
    holds exactly those chunks, in that order)."""
    rows, problem = pack_chunks(raw, ids, decryption)
    if problem is not None:
        return problem
    if holds is not None and len(rows) != len(holds):
        return f"{len(rows)} chunks, not the {len(holds)} expected"
    for (n, chunk, _, _), expected in zip(rows, holds or [], strict=False):
        if chunk != expected:
            return f"row {n} holds another chunk"
    return None


def pack_chunks(
    raw: bytes,
    ids: Callable[[bytes], bytes],
    decryption: Any = None,
    take: Callable[[bytes, bytes], None] | None = None,
) -> tuple[list[tuple[int, bytes, int, int]], str | None]:
    """The chunks of the whole pack `raw` (its stored form; `decryption`: the repository's properties for
    it) whose bytes give their id back, as (row, chunk id, size, stored bytes), and the first problem found
    (None for a sound pack). A row that does not decode or check is left out and the others still read; a
    pack whose footer does not decode gives none. `take` is given each of those chunks' id and bytes."""
    try:
        pf = pq.ParquetFile(pa.BufferReader(raw), page_checksum_verification=True, decryption_properties=decryption)
        if not pf.schema_arrow.equals(PACK_SCHEMA):
            return [], "unexpected columns"
        count = pf.metadata.num_row_groups
    except (pa.ArrowException, OSError) as exc:
        return [], first_line(exc)
    found: list[tuple[int, bytes, int, int]] = []
    problem: str | None = None
    for n in range(count):
        try:
            (row,) = pf.read_row_group(n).to_pylist()
            data = decompress(row["data"], row["size"]) if row["zstd"] else row["data"]
        except MemoryError:
            raise  # this machine's, not the pack's
        except Exception as exc:  # pyarrow's, zstandard's own ZstdError, a row group of another length: damage
            problem = problem or f"row {n}: {first_line(exc)}"
            continue
        if len(data) != row["size"] or ids(data) != row["chunk"]:
            problem = problem or f"row {n} does not match its id"
            continue
        if take is not None:
            take(row["chunk"], data)
        found.append((n, row["chunk"], row["size"], len(row["data"])))
    return found, problem


def new_writer_id(repo: Repository) -> str:
    """An id for what a prune writes (repacked packs, the new index file): a bundle id no bundle has, sorting
    after every one, so that its key generation is the current one."""
    return repo.next_bundle_id(clock.now().astimezone(dt.UTC))


def last_index_name(repo: Repository, files: Sequence[str]) -> str:
    """A name for a new index file of `repo` sorting after every one in `files` (readers take the last
    file's place for a chunk listed twice), also after one dated past this machine's clock (another host's
    prune)."""
    name = new_writer_id(repo)
    stems = [f.rsplit("/", 1)[-1].removesuffix(".parquet").removesuffix("-copy") for f in files]
    last = max((stem for stem in stems if id_time(stem) is not None), default=None)
    if last is not None and name <= last:
        name = new_bundle_id(clock.now(), after=last)
    return name
