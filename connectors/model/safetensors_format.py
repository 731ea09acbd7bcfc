"""safetensors headers: parsed and checked by the rules of the reference reader (huggingface/safetensors,
``safetensors/src/tensor.rs``: ``read_metadata`` and ``Metadata::validate``).

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (``{"__metadata__": {str: str},
name: {"dtype", "shape", "data_offsets": [begin, end]}}``, offsets relative to the data start ``8 + N``),
then the tensor bytes. Rules: N ≤ 100,000,000; the header is a JSON object and text (serde_json refuses a
``\\u`` escape of a lone UTF-16 surrogate anywhere in it, even in a field it ignores); every shape value and
offset is a ``usize`` (an integer from 0 to 2**64 - 1); the tensors sorted by offsets cover the data from 0
without hole or overlap; each tensor's byte length is its element count times its dtype's size, the element
count (multiplied dimension by dimension) and its bit count each below 2**64 (sub-byte dtypes, F4 and F6,
must fill whole bytes); the file ends where the last tensor does.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from aibackup.connectors.model.formatinfo import MAX_HEAD, FormatInfo, Head, Tensor, Truncated, escaped, lone_surrogates

FORMAT = "safetensors"
#: The reference reader's limit on N (``MAX_HEADER_SIZE``).
MAX_HEADER = 100_000_000
#: The largest shape value, offset, element count and bit count the reference reader takes (a 64-bit
#: ``usize``; its products are ``checked_mul``).
USIZE_MAX = 2**64 - 1
#: Bits per element of every dtype the reference reader knows (``Dtype::bitsize``).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
#: A metadata value longer than this is cut in the summary (LoRA trainers store tag frequencies of hundreds of
#: KB there; a manifest's summary stays small, and the file's own bytes are backed up whole anyway).
METADATA_VALUE_CHARS = 1000


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether a file without the ``.safetensors`` suffix starts like one: a header length that fits the file
    and the limit, followed by ``{"`` (the reference writer's first bytes)."""
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= min(MAX_HEADER, size - 8) and head[8:10] == b'{"'


def inspect_safetensors(head: Head) -> FormatInfo:
    """A safetensors file's :class:`FormatInfo`: valid per the module's rules, else the first broken rule.
    Reads exactly ``8 + N`` bytes of head; a header past :data:`MAX_HEAD` is not inspected (valid None)."""
    size = head.size
    if size < 8:
        return _invalid(size, f"the file is {size} bytes, shorter than the 8-byte header length", {})
    n = int.from_bytes(head.data[:8], "little")
    counts: dict[str, Any] = {"header_bytes": n}
    if n > MAX_HEADER:
        return _invalid(size, f"header length {n} exceeds the format's limit of {MAX_HEADER:,} bytes", counts)
    if 8 + n > size:
        return _invalid(size, f"header length {n} runs past the end of the file ({size} bytes)", counts)
    if 8 + n > MAX_HEAD:
        return FormatInfo(FORMAT, None, f"header of {n} bytes is larger than 64 MiB: not inspected", counts, (), size)
    try:
        head.need(8 + n, exact=True)
    except Truncated:  # the file shrank since its size was taken
        return _invalid(size, f"the file ends inside its header ({len(head.data)} of {8 + n} bytes)", counts)
    header, problem = _header_json(head.data[8 : 8 + n])
    if header is None:
        return _invalid(size, problem, counts)
    metadata, metadata_problem = _metadata(header.get("__metadata__"))
    tensors, entry_problem = _tensors(header, 8 + n)
    problem = problem or metadata_problem or entry_problem or _layout_problem(tensors, 8 + n, size)
    summary = _summary(n, metadata, tensors)
    return FormatInfo(FORMAT, problem is None, problem, summary, tensors, size, 8 + n)


def _invalid(size: int, problem: str | None, summary: dict[str, Any]) -> FormatInfo:
    return FormatInfo(FORMAT, False, problem, summary, (), size)


def _header_json(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The header's JSON object, or None, and why it is not valid: a header holding a lone surrogate escape
    comes back with each one escaped (its summary stays text) and that problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "header is not UTF-8 text"
    try:
        header = json.loads(text)
        lone = lone_surrogates(text)
    except json.JSONDecodeError as exc:
        return None, f"header is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except ValueError:  # an integer of more than 4300 digits (Python's int limit), which json does not wrap
        return None, "header is not JSON: a number too long"
    except RecursionError:
        return None, "header is not JSON: nested too deeply"
    if not isinstance(header, dict):
        return None, "header is not a JSON object"
    if lone:
        return escaped(header), "header is not text: a \\u escape of a lone UTF-16 surrogate"
    return header, None


def _metadata(value: Any) -> tuple[dict[str, str], str | None]:
    """``__metadata__`` as the summary keeps it (sorted, long values cut), and a problem when it is not the
    object of strings the reference reader requires (absent or null is fine)."""
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        return {}, "__metadata__ is not an object"
    kept = {k: _cut(v) for k, v in sorted(value.items()) if isinstance(v, str)}
    bad = next((k for k, v in value.items() if not isinstance(v, str)), None)
    return kept, None if bad is None else f"__metadata__ value {bad!r} is not a string"


def _cut(value: str) -> str:
    if len(value) <= METADATA_VALUE_CHARS:
        return value
    return f"{value[:METADATA_VALUE_CHARS]}… ({len(value)} characters)"


def _tensors(header: dict[str, Any], data_start: int) -> tuple[tuple[Tensor, ...], str | None]:
    """Every well-formed entry as a :class:`Tensor` (absolute offsets, sorted by offsets as the reference
    reader sorts them), and the first malformed entry's problem."""
    tensors: list[Tensor] = []
    problem: str | None = None
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensor, why = _tensor(name, entry, data_start)
        if tensor is not None:
            tensors.append(tensor)
        problem = problem or why
    tensors.sort(key=lambda t: (t.start, t.end, t.name))
    return tuple(tensors), problem


def _tensor(name: str, entry: Any, data_start: int) -> tuple[Tensor | None, str | None]:
    if not isinstance(entry, dict):
        return None, f"tensor {name!r}: entry is not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return None, f"tensor {name!r}: unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        return None, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers below 2**64"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_count(o) for o in offsets):
        return None, f"tensor {name!r}: data_offsets {offsets!r} are not two non-negative integers below 2**64"
    return Tensor(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1]), None


def _count(value: Any) -> bool:
    """A JSON value the reference reader takes as usize (bool is an int to Python, not to serde; a larger
    integer is a float to serde_json, which it refuses)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= USIZE_MAX


def _layout_problem(tensors: tuple[Tensor, ...], data_start: int, size: int) -> str | None:
    """The first broken layout rule, walking the tensors in offset order as the reference reader does."""
    expected, previous = data_start, None
    for t in tensors:
        if t.end < t.start:
            return f"tensor {t.name!r} ends at byte {t.end} before it starts at byte {t.start}"
        if t.start < expected:
            return f"tensor {t.name!r} starts at byte {t.start}, inside tensor {previous!r} (which ends at {expected})"
        if t.start > expected:
            where = f"after tensor {previous!r}" if previous else "before the first tensor"
            return f"bytes {expected}..{t.start} {where} belong to no tensor"
        problem = _byte_length_problem(t)
        if problem:
            return problem
        expected, previous = t.end, t.name
    if expected > size:
        return f"tensor {previous!r} ends at {expected} but the file is {size} bytes"
    if expected < size:
        after = f"the last tensor's end ({expected})" if previous else f"the header ({expected})"
        return f"the file has {size - expected} bytes after {after} that no tensor covers"
    return None


def _byte_length_problem(t: Tensor) -> str | None:
    elements = 1
    for dimension in t.shape:  # in order, as the reference folds it: [2**40, 2**40, 0] overflows before the 0
        elements *= dimension
        if elements > USIZE_MAX:
            return f"tensor {t.name!r}: shape {list(t.shape)} counts more than 2**64 - 1 elements"
    bits = elements * DTYPE_BITS[t.dtype]
    if bits > USIZE_MAX:
        return f"tensor {t.name!r}: {elements} elements of {t.dtype} are more than 2**64 - 1 bits"
    if bits % 8:
        return f"tensor {t.name!r}: {elements} elements of {t.dtype} do not fill whole bytes"
    if t.end - t.start != bits // 8:
        return (
            f"tensor {t.name!r} holds {t.end - t.start} bytes but shape {list(t.shape)} of {t.dtype} needs {bits // 8}"
        )
    return None


def _summary(n: int, metadata: dict[str, str], tensors: tuple[Tensor, ...]) -> dict[str, Any]:
    dtypes = Counter(t.dtype for t in tensors)
    return {
        "tensors": len(tensors),
        "dtypes": dict(sorted(dtypes.items())),
        "parameters": sum(math.prod(t.shape) for t in tensors),
        "metadata": metadata,
        "header_bytes": n,
    }
