"""Record digests and the order-independent dataset digest.

A record's digest is a 16-byte hash of its canonical form: SHA-256 truncated to its first 16 bytes
(algorithm ``sha256-128-sum-v1``, the default since 0.2.0) or BLAKE2b with a 16-byte output
(``blake2b128-sum-v1``, bundles written by 0.1.0). The canonical form is the same for both: for every column
of the canonical schema, in schema order (id, dense vectors by name, sparse vectors by name, document, uri,
metadata), one marker byte and the value:

- ``0x00`` for null;
- ``0x01``, the value's byte length as 8-byte little-endian, then the bytes: UTF-8 for strings, the bytes
  themselves for binary, little-endian float32 for a dense vector; for a multivector the vector count
  (8-byte LE) then all floats; for a sparse vector the pair count (8-byte LE), the uint32 LE indices, then
  the float32 LE values; 8-byte LE two's complement for int64, 8-byte LE IEEE 754 for float64, the int64
  count of the column's unit for a timestamp (microseconds for the record kinds), one byte 0/1 for bool;
- ``0x02`` for a column left out of this digest (see ``exclude``), so the framing stays fixed.

The **dataset digest** is the sum of the record digests read as little-endian 128-bit integers, modulo
2**128: independent of record order, computable while streaming, mergeable across parts by addition, and
(being a sum, not an XOR) duplicated records do not cancel out.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aibackup.manifests.model import DIGEST_ALGORITHM, DIGEST_ALGORITHMS

__all__ = ["DIGEST_ALGORITHM", "DIGEST_ALGORITHMS", "DatasetDigest", "digest_sum", "record_digests"]

MOD = 1 << 128
_NULL = b"\x00"
_SKIP = b"\x02"
_CELL = pa.large_binary()
_EMPTY = pa.scalar(b"", _CELL)
_NULL_CELL = pa.scalar(_NULL, _CELL)

# Framing is vectorised: every column becomes an Arrow array of framed cells (numpy and Arrow compute, no
# per-value Python), the columns are joined row by row in Arrow, and the only per-record Python work left
# is one hash call over a slice of the joined buffer. The digest runs on every backup, restore and verify,
# so its per-record cost is paid on every record of every dataset.


def _fixed_list_rows(array: pa.FixedSizeListArray) -> np.ndarray:
    """Rows of a fixed-size float32 list as raw little-endian bytes (one row of the 2-D array per record)."""
    size = array.type.list_size
    flat = array.values.slice(array.offset * size, len(array) * size)
    values = flat.to_numpy(zero_copy_only=False).astype("<f4", copy=False)
    return np.ascontiguousarray(values).view(np.uint8).reshape(len(array), size * 4)


def _headers(lengths: np.ndarray) -> np.ndarray:
    """The ``0x01`` marker and 8-byte little-endian length of each cell, as an (n, 9) byte matrix."""
    out = np.empty((len(lengths), 9), dtype=np.uint8)
    out[:, 0] = 1
    out[:, 1:] = np.ascontiguousarray(lengths, dtype="<u8").view(np.uint8).reshape(len(lengths), 8)
    return out


def _cells_of_matrix(matrix: np.ndarray) -> pa.Array:
    """One binary cell per row of a 2-D byte matrix, sharing the matrix's memory (the offsets are
    arithmetic: a cast from fixed-size binary would copy every byte once more)."""
    n, width = matrix.shape
    offsets = pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int64))
    data = pa.py_buffer(np.ascontiguousarray(matrix))
    return pa.LargeBinaryArray.from_buffers(_CELL, n, [None, offsets, data])


def _with_nulls(array: pa.Array, cells: pa.Array) -> pa.Array:
    """`cells` with the null marker wherever `array` is null."""
    if not array.null_count:
        return cells
    return pc.if_else(array.is_valid(), cells, _NULL_CELL)


def _framed_fixed(array: pa.FixedSizeListArray) -> pa.Array:
    """Framed cells of a dense vector column: marker, length, float32 bytes, built as one byte matrix."""
    rows = _fixed_list_rows(array)
    framed = np.empty((len(array), 9 + rows.shape[1]), dtype=np.uint8)
    framed[:, :9] = _headers(np.full(1, rows.shape[1]))
    framed[:, 9:] = rows
    return _with_nulls(array, _cells_of_matrix(framed))


def _framed_scalars(array: pa.Array, dtype: str) -> pa.Array:
    """Framed cells of a fixed-width scalar column (int64, float64, timestamp, bool)."""
    width = np.dtype(dtype).itemsize
    values = array.cast(pa.uint8()) if pa.types.is_boolean(array.type) else array
    raw = np.ascontiguousarray(values.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype, copy=False))
    framed = np.empty((len(array), 9 + width), dtype=np.uint8)
    framed[:, :9] = _headers(np.full(1, width))
    framed[:, 9:] = raw.view(np.uint8).reshape(len(array), width)
    return _with_nulls(array, _cells_of_matrix(framed))


def _framed_bytes(array: pa.Array) -> pa.Array:
    """Framed cells of a string or binary column: marker, byte length, the bytes (UTF-8 for strings)."""
    values = array.cast(_CELL)
    lengths = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False)
    joined = pc.binary_join_element_wise(_cells_of_matrix(_headers(lengths)), values, _EMPTY)
    return joined.fill_null(_NULL_CELL) if array.null_count else joined


def _framed_values(values: list[bytes | None]) -> pa.Array:
    """Framed cells from per-record payload bytes (the rare nested types, built in Python)."""
    return pa.array([_NULL if v is None else b"\x01" + len(v).to_bytes(8, "little") + v for v in values], type=_CELL)


def _framed_cells(array: pa.Array) -> pa.Array:
    """The framed canonical encoding of every cell of one column (see the module docstring)."""
    typ = array.type
    if any(
        test(typ)
        for test in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    ):
        return _framed_bytes(array)
    if pa.types.is_int64(typ):
        return _framed_scalars(array, "<i8")
    if pa.types.is_timestamp(typ):
        return _framed_scalars(array.cast(pa.int64()), "<i8")
    if pa.types.is_float64(typ):
        return _framed_scalars(array, "<f8")
    if pa.types.is_boolean(typ):
        return _framed_scalars(array, "u1")
    if pa.types.is_fixed_size_list(typ):
        return _framed_fixed(array)
    if pa.types.is_list(typ) and pa.types.is_fixed_size_list(typ.value_type):
        offsets = array.offsets.to_numpy()
        inner = _fixed_list_rows(array.values)
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        return _framed_values(
            [
                (int(offsets[i + 1] - offsets[i])).to_bytes(8, "little") + inner[offsets[i] : offsets[i + 1]].tobytes()
                if valid[i]
                else None
                for i in range(len(array))
            ]
        )
    if pa.types.is_struct(typ):
        return _framed_values(
            [
                None
                if v is None
                else len(v["indices"]).to_bytes(8, "little")
                + np.asarray(v["indices"], dtype="<u4").tobytes()
                + np.asarray(v["values"], dtype="<f4").tobytes()
                for v in array.to_pylist()
            ]
        )
    raise TypeError(f"no canonical encoding for Arrow type {typ}")


def _hashed(data: memoryview, bounds: list[int], algorithm: str) -> list[bytes]:
    """The 16-byte hash of every slice ``data[bounds[i]:bounds[i + 1]]`` under `algorithm`."""
    # One hash call per record over its slice of the joined buffer: the only per-record Python work.
    if algorithm == "sha256-128-sum-v1":
        sha256 = hashlib.sha256
        return [sha256(data[a:b]).digest()[:16] for a, b in itertools.pairwise(bounds)]
    if algorithm == "blake2b128-sum-v1":
        blake2b = hashlib.blake2b
        return [blake2b(data[a:b], digest_size=16).digest() for a, b in itertools.pairwise(bounds)]
    raise ValueError(_unknown(algorithm))


def _unknown(algorithm: str) -> str:
    return f"unknown digest algorithm {algorithm!r} (known: {', '.join(DIGEST_ALGORITHMS)})"


def digest_sum(joined: bytes | np.ndarray) -> int:
    """The sum modulo 2**128 of record digests given end to end (16 bytes each, as bytes or a uint8/uint64
    array): a dataset digest, or what a chain adds to or removes from one."""
    data = np.frombuffer(joined, dtype=np.uint8) if isinstance(joined, bytes) else np.ascontiguousarray(joined)
    words = data.view("<u4").reshape(-1, 4)
    # Four 32-bit limbs summed in uint64 (exact below 2**32 records per call), then carried in Python: no
    # per-record Python integer.
    limbs = words.sum(axis=0, dtype=np.uint64)
    return sum(int(limb) << (32 * k) for k, limb in enumerate(limbs)) % MOD


def record_digests(
    batch: pa.RecordBatch, exclude: Iterable[str] = (), algorithm: str = DIGEST_ALGORITHM
) -> list[bytes]:
    """The 16-byte digest of every record of `batch`, in row order, under `algorithm`.

    `exclude` names columns left out (marked ``0x02``): the restore checks use it to compare vectors that a
    backend changes by design (normalised cosine vectors) separately, with a tolerance. Raises ValueError
    for an algorithm not in ``DIGEST_ALGORITHMS``.
    """
    n = batch.num_rows
    if n == 0:
        return []
    skip = set(exclude)
    columns = [
        pa.repeat(pa.scalar(_SKIP, _CELL), n) if name in skip else _framed_cells(batch.column(i))
        for i, name in enumerate(batch.schema.names)
    ]
    records = pc.binary_join_element_wise(*columns, _EMPTY)
    offsets = np.frombuffer(records.buffers()[1], dtype=np.int64)[records.offset : records.offset + n + 1]
    return _hashed(memoryview(records.buffers()[2]), offsets.tolist(), algorithm)


class DatasetDigest:
    """Accumulates the order-independent digest of a dataset while its batches stream past.

    A digest compared with a manifest's must use that manifest's algorithm (``dataset.digest_algorithm``);
    new datasets use ``DIGEST_ALGORITHM``.
    """

    def __init__(self, exclude: Sequence[str] = (), algorithm: str = DIGEST_ALGORITHM) -> None:
        if algorithm not in DIGEST_ALGORITHMS:
            raise ValueError(_unknown(algorithm))
        self.algorithm = algorithm
        self._sum = 0
        self.rows = 0
        self._exclude = tuple(exclude)

    def add_digests(self, digests: Iterable[bytes]) -> None:
        joined = b"".join(digests)
        self._sum = (self._sum + digest_sum(joined)) % MOD
        self.rows += len(joined) // 16

    def add(self, other: DatasetDigest) -> None:
        """Add the records `other` holds (a share of the same dataset digested apart, e.g. one part)."""
        if (other.algorithm, other._exclude) != (self.algorithm, self._exclude):
            raise ValueError("digests of different algorithms or exclusions do not add up")
        self._sum = (self._sum + other._sum) % MOD
        self.rows += other.rows

    def add_batch(self, batch: pa.RecordBatch) -> list[bytes]:
        """Add every record of `batch`; returns their digests for callers that need them too."""
        digests = record_digests(batch, self._exclude, self.algorithm)
        self.add_digests(digests)
        return digests

    @property
    def hexdigest(self) -> str:
        """32 lowercase hex digits (the sum as a 128-bit big-endian number)."""
        return f"{self._sum:032x}"
