"""pgvector's ``vector`` and ``halfvec`` columns in PostgreSQL's binary COPY format, without a Python
object per value.

Binary COPY (``COPY … TO STDOUT (FORMAT BINARY)``) is an 11-byte signature, a 4-byte flags field and a
4-byte header-extension length, then one tuple per row: an int16 field count and, per field, an int32 byte
length (-1 for NULL) and the bytes; an int16 -1 ends it. pgvector sends a ``vector(d)`` as uint16 d, uint16
0, then d big-endian float32; a ``halfvec(d)`` the same with big-endian float16.

A COPY of one vector column of one dimension with no NULL is a run of equal-sized tuples, so the whole
stream is one numpy structured array: :func:`decode_vectors` checks every tuple's header in one pass and
turns the values into little-endian float32 (halfvec widened, exactly). :func:`encode_vectors` is the
reverse, for ``COPY … FROM STDIN (FORMAT BINARY)``. Both raise ValueError naming what is wrong: the caller
words it for the user.
"""

from __future__ import annotations

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
#: pgvector's element types by column type.
ELEMENTS = {"vector": ">f4", "halfvec": ">f2"}


def _tuple_dtype(dim: int, kind: str) -> np.dtype:
    return np.dtype(
        [("fields", ">i2"), ("length", ">i4"), ("dim", ">u2"), ("unused", ">u2"), ("values", ELEMENTS[kind], (dim,))]
    )


def decode_vectors(data: bytes | memoryview, dim: int, kind: str = "vector") -> np.ndarray:
    """The rows of a binary COPY of one ``vector(dim)`` (or ``halfvec(dim)``) column without NULLs, as a
    C-contiguous (rows, dim) little-endian float32 array."""
    if kind not in ELEMENTS:
        raise ValueError(f"unknown pgvector type {kind!r} (expected one of {', '.join(ELEMENTS)})")
    buf = memoryview(data)
    if bytes(buf[: len(SIGNATURE)]) != SIGNATURE:
        raise ValueError("not a binary COPY stream (bad signature)")
    extension = int.from_bytes(buf[15:19], "big")
    body = buf[19 + extension :]
    if bytes(body[-2:]) != TRAILER:
        raise ValueError("binary COPY stream without its trailer (cut short?)")
    body = body[:-2]
    dtype = _tuple_dtype(dim, kind)
    if len(body) % dtype.itemsize:
        raise ValueError(
            f"binary COPY of {len(body)} bytes is not a whole number of {kind}({dim}) rows "
            "(another dimension, a NULL, or more than one column)"
        )
    rows = np.frombuffer(body, dtype=dtype)
    element = np.dtype(ELEMENTS[kind]).itemsize
    if rows.size and not (
        (rows["fields"] == 1).all() and (rows["length"] == 4 + element * dim).all() and (rows["dim"] == dim).all()
    ):
        raise ValueError(f"binary COPY rows are not all one non-NULL {kind}({dim})")
    return np.ascontiguousarray(rows["values"], dtype="<f4")


def encode_vectors(vectors: np.ndarray, kind: str = "vector") -> bytes:
    """A binary COPY stream of one ``vector(dim)`` (or ``halfvec(dim)``) column holding `vectors` (rows,
    dim). A halfvec must hold the values exactly: ValueError when float16 cannot."""
    if kind not in ELEMENTS:
        raise ValueError(f"unknown pgvector type {kind!r} (expected one of {', '.join(ELEMENTS)})")
    values = np.asarray(vectors)
    if values.ndim != 2:
        raise ValueError(f"expected a (rows, dim) array, got shape {values.shape}")
    rows, dim = values.shape
    if dim > 16000:
        raise ValueError(f"pgvector holds at most 16000 dimensions, not {dim}")
    converted = values.astype(ELEMENTS[kind])
    if kind == "halfvec" and not np.array_equal(converted.astype("<f4"), values.astype("<f4"), equal_nan=True):
        raise ValueError("these vectors do not fit halfvec exactly (float16): use vector")
    out = np.empty(rows, dtype=_tuple_dtype(dim, kind))
    out["fields"] = 1
    out["length"] = 4 + np.dtype(ELEMENTS[kind]).itemsize * dim
    out["dim"] = dim
    out["unused"] = 0
    out["values"] = converted
    return HEADER + out.tobytes() + TRAILER
