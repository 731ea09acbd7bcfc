"""What inspecting a model file yields (:class:`Tensor`, :class:`FormatInfo`), and :class:`Head`: the growing
view of a file's first bytes that the header parsers read through, never past :data:`MAX_HEAD`.

The public face is :mod:`aibackup.connectors.model.formats`; this module holds the shared pieces so that the
per-format parsers (``safetensors_format``, ``gguf_format``) need not import it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The most of a file's head any inspection asks for. A header past it is not inspected (valid None).
MAX_HEAD = 64 << 20
#: The first read: enough for detection and for the whole header of most files.
FIRST_HEAD = 64 << 10

#: ``read_head(n)`` returns the first ``min(n, size)`` bytes of the file.
ReadHead = Callable[[int], bytes]
#: A UTF-16 surrogate code point: in a Python string, always a lone one (json.loads makes one of a ``\u``
#: escape that has no partner). It is not text: UTF-8 cannot encode it, and strict JSON readers (serde_json,
#: the safetensors library's) refuse the escape.
LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def lone_surrogates(text: str) -> bool:
    """Whether the JSON `text` (which json.loads parses) holds a lone surrogate escape anywhere: in a key or a
    value, in an entry a later duplicate key replaces, in a field nobody reads (serde_json refuses them all)."""
    if "\\u" not in text:
        return False
    stack: list[Any] = [json.loads(text, object_pairs_hook=list)]  # pairs as they are: duplicates too
    while stack:  # a loop, not recursion: JSON nested as deep as json.loads allows
        value = stack.pop()
        if isinstance(value, str):
            if LONE_SURROGATE.search(value):
                return True
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return False


def escaped(value: Any) -> Any:
    """Parsed JSON `value` with every lone surrogate written as the six characters of its escape (``\\ud800``),
    so that a summary holding it is text (UTF-8, Parquet, the manifest) and says what the file held."""
    text = json.dumps(value, ensure_ascii=False)
    if LONE_SURROGATE.search(text) is None:
        return value
    return json.loads(LONE_SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", text))


@dataclass(frozen=True)
class Tensor:
    """One tensor as its file's header declares it. `start`/`end` are absolute byte offsets in the file
    (`end` exclusive). `dtype` is the format's own name ("F16", "BF16" for safetensors; the ggml type name,
    "Q4_K", for GGUF). `shape` is as the file stores it: row-major for safetensors, ggml order (fastest-varying
    dimension first, as gguf's GGUFReader reports it) for GGUF."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class FormatInfo:
    """What a file is, from its header alone.

    - `format`: "safetensors", "gguf", "safetensors-index", "peft-adapter-config", "json", "pytorch", "onnx"
      or "other".
    - `valid`: True when the format's structure rules hold, False when they do not (`problem` says why, one
      line), None when no rule applies or the header was not inspected (then `problem` says why not, e.g. a
      header larger than :data:`MAX_HEAD`).
    - `summary`: small, JSON-able, deterministic; for invalid files, what could be read.
    - `tensors`: by start offset; for invalid files the entries that could be read (they may overlap or run
      past the file's end). Empty for formats without tensors.
    - `size`: the file's size; `data_start`: where the tensor data begins (None without one).
    """

    format: str
    valid: bool | None
    problem: str | None
    summary: dict[str, Any]
    tensors: tuple[Tensor, ...] = ()
    size: int = 0
    data_start: int | None = None

    def cuts(self) -> list[int]:
        """Sorted unique absolute offsets where a chunker must cut so that no chunk spans a header/data or a
        tensor boundary: the data start and every tensor's start and end, each strictly inside the file.
        Empty unless the file is valid (an invalid header's offsets cannot be trusted)."""
        if self.valid is not True:
            return []
        points = {t.start for t in self.tensors} | {t.end for t in self.tensors}
        if self.data_start is not None:
            points.add(self.data_start)
        return sorted(p for p in points if 0 < p < self.size)


class Truncated(Exception):
    """The file ends before the structure being parsed does (content, not a bug: turned into valid=False)."""


class HeadTooLarge(Exception):
    """The structure continues past :data:`MAX_HEAD` (turned into valid=None, "not inspected")."""


class Head:
    """The first bytes of a file of `size` bytes, read through `read_head` and grown on demand.

    `data` always holds the first ``len(data)`` bytes of the file. :meth:`need` grows it or raises
    :class:`Truncated` / :class:`HeadTooLarge`; nothing here reads past :data:`MAX_HEAD`."""

    def __init__(self, size: int, read_head: ReadHead, first: int = FIRST_HEAD) -> None:
        self.size = size
        self._read_head = read_head
        self.data = read_head(min(first, size))

    def need(self, end: int, *, exact: bool = False) -> None:
        """Make the first `end` bytes available in `data`. Grows by doubling (a parser that walks a header
        of unknown length re-reads O(its length) in all), or to exactly `end` when `exact`."""
        if end <= len(self.data):
            return
        if end > self.size:
            raise Truncated
        if end > MAX_HEAD:
            raise HeadTooLarge
        want = end if exact else min(max(end, 2 * len(self.data)), MAX_HEAD, self.size)
        self.data = self._read_head(want)
        if len(self.data) < end:  # the file shrank while it was being read
            raise Truncated
