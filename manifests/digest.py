"""Record digests and the order-independent dataset digest (algorithm ``blake2b128-sum-v1``).

A record's digest is BLAKE2b with a 16-byte output over its canonical form: for every column of the
canonical schema, in schema order (id, dense vectors by name, sparse vectors by name, document, uri,
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
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from manifests.model import DIGEST_ALGORITHM

__all__ = ["DIGEST_ALGORITHM", "DatasetDigest", "record_digests"]

MOD = 1 << 128
_NULL = b"\x00"
_SKIP = b"\x02"

Cell = bytes | memoryview


def _framed(value: bytes) -> bytes:
    return b"\x01" + len(value).to_bytes(8, "little") + value


def _fixed_list_rows(array: pa.FixedSizeListArray) -> np.ndarray:
    """Rows of a fixed-size float32 list as raw little-endian bytes (one row of the 2-D array per record)."""
    size = array.type.list_size
    flat = array.values.slice(array.offset * size, len(array) * size)
    values = flat.to_numpy(zero_copy_only=False).astype("<f4", copy=False)
    return np.ascontiguousarray(values).view(np.uint8).reshape(len(array), size * 4)


def _framed_fixed(array: pa.FixedSizeListArray) -> list[Cell]:
    """Framed cells of a dense vector column, built in one numpy pass: marker, length, float32 bytes."""
    rows = _fixed_list_rows(array)
    framed = np.empty((len(array), 9 + rows.shape[1]), dtype=np.uint8)
    framed[:, 0] = 1
    framed[:, 1:9] = np.frombuffer(rows.shape[1].to_bytes(8, "little"), dtype=np.uint8)
    framed[:, 9:] = rows
    width = framed.shape[1]
    view = memoryview(framed.reshape(-1).data)
    cells: list[Cell] = [view[i * width : (i + 1) * width] for i in range(len(array))]
    if array.null_count:
        for i in np.flatnonzero(~array.is_valid().to_numpy(zero_copy_only=False)):
            cells[i] = _NULL
    return cells


def _framed_values(values: list[bytes | None]) -> list[Cell]:
    return [_NULL if v is None else _framed(v) for v in values]


def _framed_scalars(array: pa.Array, dtype: str) -> list[Cell]:
    """Framed cells of a fixed-width scalar column (int64, float64, timestamp, bool), via numpy."""
    width = np.dtype(dtype).itemsize
    if pa.types.is_boolean(array.type):
        array = array.cast(pa.uint8())
    values = array.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    header = b"\x01" + width.to_bytes(8, "little")
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(len(array), width)
    cells: list[Cell] = [header + row.tobytes() for row in raw]
    if array.null_count:
        for i in np.flatnonzero(~array.is_valid().to_numpy(zero_copy_only=False)):
            cells[i] = _NULL
    return cells


def _framed_cells(array: pa.Array) -> list[Cell]:
    """The framed canonical encoding of every cell of one column (see the module docstring)."""
    typ = array.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return [_NULL if v is None else _framed(v.encode("utf-8")) for v in array.to_pylist()]
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return [_NULL if v is None else _framed(v) for v in array.to_pylist()]
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


def record_digests(batch: pa.RecordBatch, exclude: Iterable[str] = ()) -> list[bytes]:
    """The 16-byte digest of every record of `batch`, in row order.

    `exclude` names columns left out (marked ``0x02``): the restore checks use it to compare vectors that a
    backend changes by design (normalised cosine vectors) separately, with a tolerance.
    """
    skip = set(exclude)
    n = batch.num_rows
    columns = [
        [_SKIP] * n if name in skip else _framed_cells(batch.column(i)) for i, name in enumerate(batch.schema.names)
    ]
    blake2b = hashlib.blake2b
    join = b"".join
    # One hash call per record over its joined cells: the per-record Python work is a join and a digest.
    return [blake2b(join(cells), digest_size=16).digest() for cells in zip(*columns, strict=True)]


class DatasetDigest:
    """Accumulates the order-independent digest of a dataset while its batches stream past."""

    algorithm = DIGEST_ALGORITHM

    def __init__(self, exclude: Sequence[str] = ()) -> None:
        self._sum = 0
        self.rows = 0
        self._exclude = tuple(exclude)

    def add_digests(self, digests: Iterable[bytes]) -> None:
        total = self._sum
        n = 0
        for d in digests:
            total += int.from_bytes(d, "little")
            n += 1
        self._sum = total % MOD
        self.rows += n

    def add_batch(self, batch: pa.RecordBatch) -> list[bytes]:
        """Add every record of `batch`; returns their digests for callers that need them too."""
        digests = record_digests(batch, self._exclude)
        self.add_digests(digests)
        return digests

    @property
    def hexdigest(self) -> str:
        """32 lowercase hex digits (the sum as a 128-bit big-endian number)."""
        return f"{self._sum:032x}"
