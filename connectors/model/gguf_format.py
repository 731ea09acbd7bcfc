"""GGUF headers (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), parsed and checked by the rules
of ggml's reader (``gguf_init_from_file``) without importing gguf.

Layout: magic ``GGUF``, u32 version (2 or 3; version 1 had 32-bit counts and is refused), u64 tensor count,
u64 key-value count, the key-value pairs (a string key, a u32 value type, the value; strings are a u64 length
and bytes, arrays an item type, a u64 count and the items), the tensor table (name, u32 dimension count, u64
dimensions, u32 ggml type, u64 offset into the data section), then the data section at the next multiple of
``general.alignment`` (u32, a power of two; 32 when absent). Files written on big-endian machines are read in
their byte order (detected from the version, as gguf's GGUFReader does).

Rules: everything above parses within the file; at most 4 dimensions; a known ggml type whose block divides
the first dimension; unique tensor names shorter than 64 bytes; tensors laid out one after another in table
order, each padded to the alignment (ggml refuses any other offset); every tensor ends inside the file.
Key-value arrays (tokenizer vocabularies run to megabytes) are skipped, never built; only ``general.*`` strings
and the alignment are kept.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from typing import Any

from aibackup.connectors.model.formatinfo import FormatInfo, Head, HeadTooLarge, Tensor, Truncated

FORMAT = "gguf"
MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME, with the terminating NUL
INT64_MAX = (1 << 63) - 1
QK_K = 256
#: ggml type id -> (name, elements per block, bytes per block): gguf-py's GGML_QUANT_SIZES (constants.py).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 2 + 16),
    3: ("Q4_1", 32, 2 + 2 + 16),
    6: ("Q5_0", 32, 2 + 4 + 16),
    7: ("Q5_1", 32, 2 + 2 + 4 + 16),
    8: ("Q8_0", 32, 2 + 32),
    9: ("Q8_1", 32, 4 + 4 + 32),
    10: ("Q2_K", 256, 2 + 2 + QK_K // 16 + QK_K // 4),
    11: ("Q3_K", 256, 2 + QK_K // 4 + QK_K // 8 + 12),
    12: ("Q4_K", 256, 2 + 2 + QK_K // 2 + 12),
    13: ("Q5_K", 256, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    14: ("Q6_K", 256, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    15: ("Q8_K", 256, 4 + QK_K + QK_K // 8),
    16: ("IQ2_XXS", 256, 2 + QK_K // 4),
    17: ("IQ2_XS", 256, 2 + QK_K // 4 + QK_K // 32),
    18: ("IQ3_XXS", 256, 2 + QK_K // 4 + QK_K // 8),
    19: ("IQ1_S", 256, 2 + QK_K // 8 + QK_K // 16),
    20: ("IQ4_NL", 32, 2 + 16),
    21: ("IQ3_S", 256, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    22: ("IQ2_S", 256, 2 + QK_K // 4 + QK_K // 16),
    23: ("IQ4_XS", 256, 2 + 2 + QK_K // 2 + QK_K // 64),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, QK_K // 8 + QK_K // 16 + QK_K // 32),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 2 + 4 * 13),
    35: ("TQ2_0", 256, 2 + 64),
    39: ("MXFP4", 32, 1 + 16),
    40: ("NVFP4", 64, 4 + 32),
    41: ("Q1_0", 128, 2 + 16),
}
#: GGUF value type -> struct code of a scalar; 8 is a string, 9 an array.
SCALARS: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY, UINT32 = 8, 9, 4
#: The keys whose values the summary keeps; every other value is skipped.
KEPT_KEYS = frozenset({"general.architecture", "general.name", "general.alignment"})


class Malformed(Exception):
    """A GGUF structure rule is broken; the message is the one-line problem."""


class _Cursor:
    """Reads GGUF's little (or big) endian values from a :class:`Head`, growing it as needed."""

    def __init__(self, head: Head, order: str) -> None:
        self.head, self.pos = head, 0
        self._structs = {code: struct.Struct(order + code) for code in "BbHhIiQqfd?"}

    def scalar(self, code: str) -> Any:
        s = self._structs[code]
        self.head.need(self.pos + s.size)
        (value,) = s.unpack_from(self.head.data, self.pos)
        self.pos += s.size
        return value

    def skip(self, n: int) -> None:
        self.head.need(self.pos + n)
        self.pos += n

    def string(self) -> str:
        n = self.scalar("Q")
        self.skip(n)
        return self.head.data[self.pos - n : self.pos].decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.skip(self.scalar("Q"))

    def plausible(self, count: int, each: int) -> None:
        """Refuse `count` items of at least `each` bytes that the file cannot hold, before looping over them
        (a garbage count must not become billions of iterations)."""
        if count * each > self.head.size - self.pos:
            raise Truncated


def inspect_gguf(head: Head) -> FormatInfo:
    """A GGUF file's :class:`FormatInfo`: valid per the module's rules, else the first broken rule. A header
    that runs past :data:`~aibackup.connectors.model.formatinfo.MAX_HEAD` is not inspected (valid None)."""
    parser = _Parser(head)
    try:
        parser.parse()
    except Truncated:
        return parser.info(False, f"the file ends inside the GGUF header ({parser.where})")
    except HeadTooLarge:
        return parser.info(None, "GGUF header larger than 64 MiB: not inspected")
    except Malformed as exc:
        return parser.info(False, str(exc))
    return parser.info(*parser.layout())


class _Parser:
    """One pass over a GGUF header; what it has read so far stays available for the summary of a bad file."""

    def __init__(self, head: Head) -> None:
        self.head = head
        self.where = "magic and version"
        self.version: int | None = None
        self.tensor_count: int | None = None
        self.kv_count: int | None = None
        self.kept: dict[str, Any] = {}
        self.alignment = DEFAULT_ALIGNMENT
        self.data_offset: int | None = None
        self.table: list[tuple[str, int, tuple[int, ...], int]] = []  # name, ggml type, dims, relative offset

    def parse(self) -> None:
        if self.head.data[:4] != MAGIC:
            raise Malformed("no GGUF magic at the start of the file")
        self.head.need(8)
        order = "<" if int.from_bytes(self.head.data[4:8], "little") & 0xFFFF else ">"
        cursor = _Cursor(self.head, order)
        cursor.pos = 4
        self.version = cursor.scalar("I")
        if self.version != 2 and self.version != 3:
            raise Malformed(f"GGUF version {self.version} is not supported (only 2 and 3)")
        self.where = "counts"
        self.tensor_count, self.kv_count = cursor.scalar("Q"), cursor.scalar("Q")
        # Smallest key-value pair: empty key, type, one byte; smallest table entry: empty name, no dimension,
        # type, offset. Garbage counts are refused here rather than looped over.
        if self.kv_count * 13 + self.tensor_count * 24 > self.head.size - cursor.pos:
            raise Malformed(
                f"the header declares {self.kv_count} key-value pairs and {self.tensor_count} tensors, "
                f"more than a file of {self.head.size} bytes can hold"
            )
        for i in range(self.kv_count):
            self.where = f"key-value pair {i + 1} of {self.kv_count}"
            self._pair(cursor)
        self._alignment()
        for i in range(self.tensor_count):
            self.where = f"tensor table entry {i + 1} of {self.tensor_count}"
            self._table_entry(cursor)
        self.data_offset = _pad(cursor.pos, self.alignment)

    def _pair(self, cursor: _Cursor) -> None:
        key = cursor.string()
        self.where += f" ({_short(key)!r})"
        vtype = cursor.scalar("I")
        if key in KEPT_KEYS:
            self.kept[key] = (vtype, _value(cursor, vtype, keep=True))
        else:
            _value(cursor, vtype, keep=False)

    def _alignment(self) -> None:
        if "general.alignment" not in self.kept:
            return
        vtype, value = self.kept["general.alignment"]
        if vtype != UINT32:
            raise Malformed(f"general.alignment has value type {vtype}, not uint32")
        if value <= 0 or value & (value - 1):
            raise Malformed(f"general.alignment {value} is not a power of two")
        self.alignment = value

    def _table_entry(self, cursor: _Cursor) -> None:
        name = cursor.string()
        if len(name.encode()) >= MAX_NAME:
            raise Malformed(f"tensor name {_short(name)!r} is longer than ggml's {MAX_NAME - 1} bytes")
        n_dims = cursor.scalar("I")
        if n_dims > MAX_DIMS:
            raise Malformed(f"tensor {name!r} has {n_dims} dimensions, ggml allows at most {MAX_DIMS}")
        dims = tuple(cursor.scalar("Q") for _ in range(n_dims))
        if any(d > INT64_MAX for d in dims) or math.prod(dims) > INT64_MAX:
            raise Malformed(f"tensor {name!r}: dimensions {list(dims)} overflow int64")
        ggml_type, offset = cursor.scalar("I"), cursor.scalar("Q")
        self.table.append((name, ggml_type, dims, offset))

    def layout(self) -> tuple[bool, str | None]:
        """Check the parsed table the way ggml lays tensors out: (valid, first problem)."""
        assert self.data_offset is not None  # parse() finished
        expected, seen = 0, set()
        for name, ggml_type, dims, offset in self.table:
            if name in seen:
                return False, f"duplicate tensor name {name!r}"
            seen.add(name)
            if ggml_type not in GGML_TYPES:
                return False, f"tensor {name!r} has unknown ggml type {ggml_type}"
            type_name, block, _ = GGML_TYPES[ggml_type]
            first = dims[0] if dims else 1  # ggml's absent dimensions are 1
            if first % block:
                return (
                    False,
                    f"tensor {name!r}: first dimension {first} is not a multiple of {type_name}'s block {block}",
                )
            if offset % self.alignment:
                return False, f"tensor {name!r} offset {offset} is not a multiple of the alignment {self.alignment}"
            if offset != expected:
                return False, (
                    f"tensor {name!r} starts at offset {offset} of the data section, expected {expected}: "
                    "tensors must follow one another in table order"
                )
            nbytes = _nbytes(ggml_type, dims)
            end = self.data_offset + offset + nbytes
            if end > self.head.size:
                return False, f"tensor {name!r} ends at {end} but the file is {self.head.size} bytes"
            expected = _pad(offset + nbytes, self.alignment)
        return True, None

    def info(self, valid: bool | None, problem: str | None) -> FormatInfo:
        tensors = self._tensors()
        kept = {key: value for key, (_, value) in self.kept.items()}
        summary = {
            "version": self.version,
            "architecture": _text(kept.get("general.architecture")),
            "name": _text(kept.get("general.name")),
            "tensors": self.tensor_count,
            "kv": self.kv_count,
            "alignment": self.alignment,
            "data_offset": self.data_offset,
            "parameters": sum(math.prod(dims) for _, _, dims, _ in self.table),
            "dtypes": dict(sorted(Counter(t.dtype for t in tensors).items())),
        }
        return FormatInfo(FORMAT, valid, problem, summary, tensors, self.head.size, self.data_offset)

    def _tensors(self) -> tuple[Tensor, ...]:
        """The table's tensors with absolute offsets (none before the data section's start is known)."""
        if self.data_offset is None:
            return ()
        tensors = []
        for name, ggml_type, dims, offset in self.table:
            type_name = GGML_TYPES[ggml_type][0] if ggml_type in GGML_TYPES else f"type {ggml_type}"
            start = self.data_offset + offset
            tensors.append(Tensor(name, type_name, dims, start, start + _nbytes(ggml_type, dims)))
        return tuple(sorted(tensors, key=lambda t: (t.start, t.end, t.name)))


def _value(cursor: _Cursor, vtype: int, *, keep: bool) -> Any:
    """One value of type `vtype`: returned when `keep` and a string or scalar, else skipped (None)."""
    if vtype in SCALARS:
        return cursor.scalar(SCALARS[vtype])
    if vtype == STRING:
        if keep:
            return cursor.string()
        cursor.skip_string()
        return None
    if vtype != ARRAY:
        raise Malformed(f"unknown value type {vtype}")
    item_type, count = cursor.scalar("I"), cursor.scalar("Q")
    if item_type in SCALARS:
        cursor.skip(count * struct.calcsize(SCALARS[item_type]))
        return None
    if item_type not in (STRING, ARRAY):
        raise Malformed(f"array of unknown value type {item_type}")
    cursor.plausible(count, 8 if item_type == STRING else 12)
    for _ in range(count):
        _value(cursor, item_type, keep=False)
    return None


def _nbytes(ggml_type: int, dims: tuple[int, ...]) -> int:
    """A tensor's byte size (0 for an unknown type: such a file is already invalid)."""
    if ggml_type not in GGML_TYPES:
        return 0
    _, block, type_size = GGML_TYPES[ggml_type]
    return math.prod(dims) // block * type_size


def _pad(offset: int, alignment: int) -> int:
    return offset + (-offset % alignment)


def _short(text: str, limit: int = 80) -> str:
    """`text` cut for a one-line problem (a garbage length can make a "key" megabytes long)."""
    return text if len(text) <= limit else text[:limit] + "…"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
