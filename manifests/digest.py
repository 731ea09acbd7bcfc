"""Record digests and the order-independent dataset digest (algorithm ``blake2b128-sum-v1``).

A record's digest is BLAKE2b with a 16-byte output over its canonical form: for every column of the
canonical schema, in schema order (id, dense vectors by name, sparse vectors by name, document, uri,
metadata), one marker byte and the value:

- ``0x00`` for null;
- ``0x01``, the value's byte length as 8-byte little-endian, then the bytes: UTF-8 for strings, little-endian
  float32 for a dense vector; for a multivector the vector count (8-byte LE) then all floats; for a sparse
  vector the pair count (8-byte LE), the uint32 LE indices, then the float32 LE values;
- ``0x02`` for a column left out of this digest (see ``exclude``), so the framing stays fixed.

The **dataset digest** is the sum of the record digests read as little-endian 128-bit integers, modulo
2**128: independent of record order, computable while streaming, mergeable across parts by addition, and
(being a sum, not an XOR) duplicated records do not cancel out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

from manifests.model import DIGEST_ALGORITHM

__all__ = ["DIGEST_ALGORITHM", "DatasetDigest", "column_encoders", "record_digests"]

MOD = 1 << 128
_NULL = b"\x00"
_SKIP = b"\x02"

Encoder = Callable[[int], bytes | None]


def _framed(value: bytes) -> bytes:
    return b"\x01" + len(value).to_bytes(8, "little") + value


def _fixed_list_rows(array: pa.FixedSizeListArray) -> np.ndarray:
    """Rows of a fixed-size float32 list as raw little-endian bytes (one row of the 2-D array per record)."""
    size = array.type.list_size
    flat = array.values.slice(array.offset * size, len(array) * size)
    values = flat.to_numpy(zero_copy_only=False).astype("<f4", copy=False)
    return np.ascontiguousarray(values).view(np.uint8).reshape(len(array), size * 4)


def _encoder(array: pa.Array) -> Encoder:
    """A function from row index to the encoded (framed) cell, for one column."""
    typ = array.type
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else None
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        values = array.to_pylist()

        def enc_str(i: int) -> bytes | None:
            v = values[i]
            return None if v is None else v.encode("utf-8")

        return enc_str
    if pa.types.is_fixed_size_list(typ):
        rows = _fixed_list_rows(array)

        def enc_fixed(i: int) -> bytes | None:
            if valid is not None and not valid[i]:
                return None
            return rows[i].tobytes()

        return enc_fixed
    if pa.types.is_list(typ) and pa.types.is_fixed_size_list(typ.value_type):
        offsets = array.offsets.to_numpy()
        inner = _fixed_list_rows(array.values)

        def enc_multi(i: int) -> bytes | None:
            if valid is not None and not valid[i]:
                return None
            start, end = int(offsets[i]), int(offsets[i + 1])
            return (end - start).to_bytes(8, "little") + inner[start:end].tobytes()

        return enc_multi
    if pa.types.is_struct(typ):
        pairs = array.to_pylist()

        def enc_sparse(i: int) -> bytes | None:
            v = pairs[i]
            if v is None:
                return None
            indices = np.asarray(v["indices"], dtype="<u4")
            floats = np.asarray(v["values"], dtype="<f4")
            return len(indices).to_bytes(8, "little") + indices.tobytes() + floats.tobytes()

        return enc_sparse
    raise TypeError(f"no canonical encoding for Arrow type {typ}")


def column_encoders(batch: pa.RecordBatch, exclude: Iterable[str] = ()) -> list[Encoder | None]:
    """One encoder per column in schema order; None for an excluded column."""
    skip = set(exclude)
    return [None if name in skip else _encoder(batch.column(i)) for i, name in enumerate(batch.schema.names)]


def record_digests(batch: pa.RecordBatch, exclude: Iterable[str] = ()) -> list[bytes]:
    """The 16-byte digest of every record of `batch`, in row order.

    `exclude` names columns left out (marked ``0x02``): the restore checks use it to compare vectors that a
    backend changes by design (normalised cosine vectors) separately, with a tolerance.
    """
    encoders = column_encoders(batch, exclude)
    out: list[bytes] = []
    blake2b = hashlib.blake2b
    for i in range(batch.num_rows):
        h = blake2b(digest_size=16)
        for enc in encoders:
            if enc is None:
                h.update(_SKIP)
                continue
            value = enc(i)
            h.update(_NULL if value is None else _framed(value))
        out.append(h.digest())
    return out


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

    def merge(self, other: DatasetDigest) -> None:
        self._sum = (self._sum + other._sum) % MOD
        self.rows += other.rows

    @property
    def hexdigest(self) -> str:
        """32 lowercase hex digits (the sum as a 128-bit big-endian number)."""
        return f"{self._sum:032x}"
