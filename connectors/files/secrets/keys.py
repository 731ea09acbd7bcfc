"""Secrets found by their key: the value after a secret-named key, flag, XML element or env-file line, with
its extent in YAML, JSON, TOML, INI, env and shell syntax (:mod:`aibackup.connectors.files.secrets`, rules 1-2)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from aibackup.connectors.files.secrets.rules import PLACEHOLDER, REF, Span, exempt, name_strength
from aibackup.connectors.files.secrets.shapes import SHAPES

# --- key = value ------------------------------------------------------------------------------------------

_KEY = re.compile(rb"""(?<![\w.$@-])(["'`]?)([A-Za-z_][\w.-]*)\1[ \t]*(:(?!:)|=)""")
_ENV_LINE = re.compile(rb"^[ \t]*(?:#[ \t]*)?(?:export[ \t]+)?([A-Za-z_][\w.-]*)[ \t]*=[ \t]*", re.M)
_FLAG = re.compile(rb"(?<![\w-])--([A-Za-z][\w-]*)(=|[ \t]+)")
_XML = re.compile(rb"<([A-Za-z_][\w.-]*)(?:\s[^<>]*)?>([^<]*)</\1>")
_LINE_PREFIX = re.compile(rb"[ \t]*(?:(?:#+|//|;+|-+|\*|>|export(?=[ \t]))[ \t]*)*")
_SCHEME = re.compile(rb"(?i)(?:bearer|basic|token|digest)[ \t]+(?=\S)")
_DQ = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.S)
_SQ = re.compile(rb"'((?:[^']|'')*)'", re.S)
_BLOCK_INDICATOR = re.compile(rb"[|>][-+0-9]*[ \t]*(?:#[^\n]*)?(?=\r?\n|$)")
_STOPS = {
    "flow": b",}])\n",
    "query": b"&# \t\r\n\"'<>",
    "conn": b";\"'\n",
    "inline": b" \t\r\n\"'`;&<>",
}

Leaf = tuple[int, int]


def _eol(data: bytes, pos: int) -> int:
    end = data.find(b"\n", pos)
    return len(data) if end < 0 else end


def _rstrip(data: bytes, start: int, end: int) -> int:
    while end > start and data[end - 1] in b" \t\r":
        end -= 1
    return end


def _quoted(data: bytes, pos: int) -> Leaf | None:
    """The inside of the quoted string starting at `pos` (triple quotes too), or None if unterminated."""
    for triple in (b'"""', b"'''"):
        if data.startswith(triple, pos):
            end = data.find(triple, pos + 3)
            return (pos + 3, end) if end >= 0 else None
    m = (_DQ if data[pos : pos + 1] == b'"' else _SQ).match(data, pos)
    return m.span(1) if m else None


def _close(data: bytes, pos: int) -> int:
    """The position of the bracket closing the one at `pos` (quote-aware), or the end of the data."""
    depth, i, n = 0, pos, len(data)
    unterminated: set[bytes] = set()  # a quote that never closes is not a string opener again (stays linear)
    while i < n:
        c = data[i : i + 1]
        if c in b"[{":
            depth += 1
        elif c in b"]}":
            depth -= 1
            if depth == 0:
                return i
        elif c in b"\"'" and c not in unterminated:
            q = _quoted(data, i)
            if q is None:
                unterminated.add(c)
            else:
                i = q[1]
        i += 1
    return n


def _flow_leaves(data: bytes, start: int, end: int) -> list[Leaf]:
    """Scalar leaves inside a flow region (JSON/YAML/TOML arrays and objects), keys skipped."""
    leaves: list[Leaf] = []
    i = start
    while i < end:
        c = data[i : i + 1]
        if c in b" \t\r\n,[]{}":
            i += 1
            continue
        if c in b"\"'":
            q = _quoted(data, i)
            if q is None or q[1] >= end:
                leaves.append((i, _rstrip(data, i, end)))
                break
            token, j = q, q[1] + 1
        else:
            j = i
            while j < end and data[j : j + 1] not in b",[]{}\n":
                if data[j : j + 1] == b":" and (j + 1 >= end or data[j + 1 : j + 2] in b" \t\r\n,]}"):
                    break
                if data[j : j + 1] == b"=" and (data[j - 1 : j] in b" \t" or data[j + 1 : j + 2] in b" \t"):
                    break  # TOML ``{ a = "x" }``; base64 padding (``dGVzdA==``) has no space around it
                j += 1
            token = (i, _rstrip(data, i, j))
        k = j
        while k < end and data[k : k + 1] in b" \t":
            k += 1
        if k < end and data[k : k + 1] in b":=":
            i = k + 1  # a key, not a value
            continue
        leaves.append(token)
        i = max(j, i + 1)
    return leaves


def _block_lines(data: bytes, after: int, column: int, sequences: bool = True) -> list[Leaf]:
    """Content lines (start, end) of the YAML block under a key at `column` whose line ends at `after`
    (with `sequences`, also ``- item`` lines at the key's own indentation)."""
    lines: list[Leaf] = []
    pos, n, same_indent_seq = after + 1, len(data), None if sequences else False
    while pos < n:
        end = _eol(data, pos)
        text = data[pos:end]
        body = text.lstrip(b" \t")
        if not body.strip():
            pos = end + 1
            continue
        indent = len(text) - len(body)
        if same_indent_seq is None:
            same_indent_seq = indent == column and (body.startswith(b"- ") or body.rstrip() == b"-")
        if not (indent > column or (same_indent_seq and indent == column and body.startswith(b"-"))):
            break
        lines.append((pos + indent, _rstrip(data, pos, end)))
        pos = end + 1
    return lines


def _block_leaves(data: bytes, lines: list[Leaf], strength: str) -> list[Leaf]:
    if not lines:
        return []
    if strength != "weak":
        return [(lines[0][0], lines[-1][1])]
    leaves = []
    for start, end in lines:
        while data.startswith(b"- ", start) or data[start:end] == b"-":
            start += 2
            while start < end and data[start : start + 1] in b" \t":
                start += 1
        if start >= end or data[start : start + 1] == b"#":
            continue
        m = _KEY.match(data, start)
        if m and m.group(3) == b":" and data[m.end() : m.end() + 1] in b" \t\r\n":
            start = m.end()
            while start < end and data[start : start + 1] in b" \t":
                start += 1
            if start >= end or _BLOCK_INDICATOR.match(data, start):
                continue
        if data[start : start + 1] in b"\"'":
            q = _quoted(data, start)
            if q is not None and q[1] <= end:
                leaves.append(q)
                continue
        comment = data.find(b" #", start, end)
        leaves.append((start, _rstrip(data, start, comment if comment >= 0 else end)))
    return leaves


def _value_leaves(
    data: bytes, pos: int, ctx: str, strength: str, *, colon: bool, column: int, comments: bool, continued: bool = True
) -> list[Leaf]:
    """The value leaves after a separator at `pos` (horizontal space not yet skipped)."""
    n = len(data)
    while pos < n and data[pos : pos + 1] in b" \t":
        pos += 1
    scheme = _SCHEME.match(data, pos) if strength == "weak" else None
    if scheme:  # "Authorization: Bearer TOKEN": the scheme word is not the secret
        pos = scheme.end()
    c = data[pos : pos + 1]
    ref = REF.match(data, pos)
    if ref and data[ref.end() : ref.end() + 1] in b"\r\n \t,]})\"';&#":
        return []
    eol = _eol(data, pos)
    # `` #`` starts a comment (YAML, TOML, env) only after a space: ``KEY=#abc`` holds "#abc".
    at_end = not data[pos:eol].strip() or (comments and data[pos : pos + 1] == b"#" and data[pos - 1 : pos] in b" \t")
    if at_end or (colon and _BLOCK_INDICATOR.match(data, pos)):
        if colon and ctx == "line":
            return _block_leaves(data, _block_lines(data, eol, column), strength if at_end else "strong")
        return []
    if c in b"\"'":
        q = _quoted(data, pos)
        return [q] if q is not None else [(pos + 1, _rstrip(data, pos, eol))]
    if c in b"[{":
        close = _close(data, pos)
        if strength == "weak":
            return _flow_leaves(data, pos + 1, close)
        return [(pos + 1, close)]
    stops = _STOPS.get(ctx, b"\n")
    end = pos
    while end < eol and data[end : end + 1] not in stops:
        if comments and data[end : end + 1] == b"#" and data[end - 1 : end] in b" \t":
            break
        end += 1
    end = _rstrip(data, pos, end)
    if ctx == "line" and continued:
        # Deeper-indented lines continue the value (YAML plain scalars, INI multi-line values).
        more = _block_lines(data, eol, column, sequences=False)
        end = more[-1][1] if more else end
    return [(pos, end)]


def _context(data: bytes, start: int, attached: bool, quoted: bool) -> str | None:
    """Where a key starting at `start` stands: "line", "flow", "query", "conn", "inline" or None (prose)."""
    line_start = data.rfind(b"\n", 0, start) + 1
    prefix = data[line_start:start]
    if _LINE_PREFIX.fullmatch(prefix):
        return "line"
    last = prefix.rstrip(b" \t")[-1:]
    if last in (b"{", b",", b"[", b"("):
        return "flow"
    if last in (b"?", b"&"):
        return "query"
    if last == b";":
        return "conn"
    if attached or (not quoted and last in (b'"', b"'")):
        return "inline"
    return None


def reason_of(name: bytes) -> str:
    text = name.decode("ascii", "replace")[:60]
    if any(p.search(name) for p, *_ in SHAPES[:10]) or PLACEHOLDER in name:
        return "a secret-named key"
    return f"key {text!r}"


_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_SECRET_WORDS = re.compile(rb"key|token|secret|pass|pw|credential|auth")


def _key_matches(data: bytes) -> Iterator[re.Match[bytes]]:
    """The ``_KEY`` matches whose name holds a word of a secret name, found from those words: a big file with
    few of them is scanned at the speed of a literal search, not of a regex tried at every position."""
    seen = -1
    for w in _SECRET_WORDS.finditer(data.lower()):
        start = w.start()
        while start > 0 and data[start - 1] in _NAME_CHARS:
            start -= 1
        if start <= seen:
            continue  # the same name again
        seen = start
        m = _KEY.match(data, start - 1) if start and data[start - 1 : start] in b"\"'`" else None
        m = m if m and m.start(2) == start else _KEY.match(data, start)
        if m:
            yield m


def key_spans(data: bytes, comments: bool, env: bool) -> list[Span]:
    spans: list[Span] = []

    def add(leaves: list[Leaf], strength: str, name: bytes) -> None:
        for s, e in leaves:
            if e > s and not exempt(data[s:e], strength):
                spans.append(Span(s, e, reason_of(name)))

    for m in _key_matches(data):
        name = m.group(2)
        strength = name_strength(name.decode("ascii"))
        if strength is None:
            continue
        quoted = bool(m.group(1))
        attached = m.group(3) == b"=" and data[m.start(3) - 1 : m.start(3)] not in b" \t"
        ctx = _context(data, m.start(), attached, quoted)
        if ctx is None:
            continue
        if ctx == "line" and quoted and m.group(1) == b'"':
            ctx = "flow"  # JSON style: an unquoted value ends at , } ]
        column = m.start() - (data.rfind(b"\n", 0, m.start()) + 1)
        colon = m.group(3) == b":"
        leaves = _value_leaves(data, m.end(), ctx, strength, colon=colon, column=column, comments=comments)
        add(leaves, strength, name)
    for m in _FLAG.finditer(data):
        strength = name_strength(m.group(1).decode("ascii"))
        if strength is None or data.startswith(b"--", m.end()):  # "--token --next": no value
            continue
        add(
            _value_leaves(data, m.end(), "inline", strength, colon=False, column=0, comments=False),
            strength,
            m.group(1),
        )
    for m in _XML.finditer(data):
        strength = name_strength(m.group(1).decode("ascii"))
        if strength is not None:
            s, e = m.span(2)
            while s < e and data[s : s + 1] in b" \t\r\n":
                s += 1
            add([(s, _rstrip(data, s, e))], strength, m.group(1))
    return spans


def env_spans(data: bytes) -> list[Span]:
    spans = []
    for m in _ENV_LINE.finditer(data):
        leaves = _value_leaves(data, m.end(), "line", "env", colon=False, column=0, comments=True, continued=False)
        for s, e in leaves:
            if e > s and not exempt(data[s:e], "env"):
                spans.append(Span(s, e, reason_of(m.group(1))))
    return spans
