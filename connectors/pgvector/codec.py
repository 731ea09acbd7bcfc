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

import struct

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_SPARSE_HEAD = struct.Struct(">iii")
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


def split_rows(
    buf: bytes | bytearray | memoryview, start: int, ends: list[int], nfields: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fields of binary COPY tuples whose ends are known (PostgreSQL sends one message per row: the
    first tuple starts at `start`, each ends where its message ended), walked field by field for every row at
    once with numpy: per field (offsets, lengths) as int64 arrays, length -1 for NULL. ValueError when the
    tuples do not end where their messages did."""
    data = np.frombuffer(buf, dtype=np.uint8)
    stops = np.asarray(ends, dtype=np.int64)
    begins = np.empty_like(stops)
    if len(stops):
        begins[0] = start
        begins[1:] = stops[:-1]
    counts = _read_be(data, begins, 2).astype(np.int16)
    if len(counts) and not (counts == nfields).all():
        raise ValueError(f"binary COPY tuples without {nfields} fields")
    position = begins + 2
    out = []
    for _ in range(nfields):
        lengths = _read_be(data, position, 4).astype(np.int32).astype(np.int64)
        offsets = position + 4
        position = offsets + np.maximum(lengths, 0)
        out.append((offsets, lengths))
    if not np.array_equal(position, stops):
        raise ValueError("binary COPY tuples do not end where their messages do")
    return out


def _read_be(data: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """The big-endian unsigned integers of `size` bytes at each of `positions` (uint32)."""
    out = np.zeros(len(positions), dtype=np.uint32)
    for k in range(size):
        out = (out << 8) | data[positions + k]
    return out


def gather(buf: bytes | bytearray | memoryview, offsets: np.ndarray, lengths: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The bytes of the non-NULL cells concatenated, and Arrow-style int64 offsets into them (one per cell
    plus one; a NULL cell is empty). One numpy gather, no Python step per cell."""
    sizes = np.maximum(lengths, 0)
    bounds = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    total = int(bounds[-1])
    if not total:
        return b"", bounds
    data = np.frombuffer(buf, dtype=np.uint8)
    # index of each output byte = its cell's offset + its place inside the cell
    index = np.arange(total, dtype=np.int64) + np.repeat(offsets - bounds[:-1], sizes)
    return data[index].tobytes(), bounds


def decode_dense(
    buf: bytes | bytearray | memoryview, offsets: np.ndarray, lengths: np.ndarray, dim: int, kind: str
) -> np.ndarray:
    """The (cells, dim) little-endian float32 values of non-NULL ``vector``/``halfvec`` cells (NULL rows
    are zero: the caller masks them). ValueError for a cell of another dimension."""
    element = np.dtype(ELEMENTS[kind])
    present = lengths >= 0
    expected = 4 + element.itemsize * dim
    if not (lengths[present] == expected).all():
        bad = int(np.flatnonzero(present & (lengths != expected))[0])
        got = (int(lengths[bad]) - 4) // element.itemsize
        raise ValueError(f"row {bad} holds a {kind} of {got} dimensions, not {dim}")
    cell = np.dtype([("dim", ">u2"), ("unused", ">u2"), ("values", element, (dim,))])
    # Big fixed-size cells: one join of memoryview slices copies at memory speed (a numpy fancy index of
    # every byte measured 2.5x slower).
    view = memoryview(buf)
    data = b"".join([view[o : o + expected] for o in offsets[present].tolist()])
    out = np.zeros((len(lengths), dim), dtype="<f4")
    out[present] = np.frombuffer(data, dtype=cell)["values"]
    return out


def decode_sparse(cell: bytes | memoryview) -> tuple[int, np.ndarray, np.ndarray]:
    """One ``sparsevec`` cell: (dim, 0-based indices as uint32, values as float32)."""
    dim, nnz, _ = _SPARSE_HEAD.unpack_from(cell, 0)
    indices = np.frombuffer(cell, dtype=">i4", count=nnz, offset=12).astype(np.uint32)
    values = np.frombuffer(cell, dtype=">f4", count=nnz, offset=12 + 4 * nnz).astype("<f4")
    return dim, indices, values


def encode_sparse(dim: int, indices: np.ndarray, values: np.ndarray) -> bytes:
    """The binary form of one ``sparsevec`` (indices 0-based, strictly increasing, below `dim`)."""
    return (
        _SPARSE_HEAD.pack(dim, len(indices), 0)
        + np.asarray(indices, dtype=">i4").tobytes()
        + np.asarray(values, dtype=">f4").tobytes()
    )


def encode_rows(columns: list[list[bytes | None]]) -> bytes:
    """The binary COPY tuples (no header or trailer) of `columns`, each a list of one field's cells
    already in binary form (None: NULL)."""
    nfields = _INT16.pack(len(columns))
    null = _INT32.pack(-1)
    pack = _INT32.pack
    out: list[bytes] = []
    for row in zip(*columns, strict=True):
        out.append(nfields)
        for cell in row:
            if cell is None:
                out.append(null)
            else:
                out.append(pack(len(cell)))
                out.append(cell)
    return b"".join(out)


def encode_dense_cells(vectors: np.ndarray, kind: str) -> list[bytes]:
    """One binary ``vector``/``halfvec`` cell per row of `vectors` (rows, dim); ValueError when a halfvec
    cannot hold the values exactly."""
    rows, dim = vectors.shape
    converted = vectors.astype(ELEMENTS[kind])
    if kind == "halfvec" and not np.array_equal(converted.astype("<f4"), vectors.astype("<f4"), equal_nan=True):
        raise ValueError("these vectors do not fit halfvec exactly (float16)")
    head = np.empty(rows, dtype=np.dtype([("dim", ">u2"), ("unused", ">u2"), ("values", ELEMENTS[kind], (dim,))]))
    head["dim"] = dim
    head["unused"] = 0
    head["values"] = converted
    raw = head.tobytes()
    step = head.dtype.itemsize
    return [raw[i * step : (i + 1) * step] for i in range(rows)]
