"""Find secret values in configuration files, as exact byte spans (no parsing: regexes and a little scanning).

``find_secrets(data, name)`` returns the byte ranges of secret VALUES (never the key name, never the quotes)
sorted and non-overlapping, each with a reason such as ``key 'api_key'`` or ``shape sk-…`` that never
contains the value. The config connector cuts these ranges out and seals them; the finetune connector uses
it for job configs. The rule is "false positives are safer than leaks": a doubtful value is a secret.

What is a secret
----------------
1. **Env files** (named ``.env``, ``*.env`` or ``.env.*``): the value of every ``KEY=VALUE`` line (``export``
   prefix, single/double quotes (which may span lines), `` #`` comments after unquoted values), commented-out
   assignments (``# KEY=VALUE``) included: a value in a comment is still in the file.
2. **Secret-named keys** in any text file: a name is *strong* when it contains ``secret``, ``passw``
   (password, passwd), ``passphrase``, ``credential``, ``privatekey``/``private_key``, or has a word ``pass``,
   ``pw`` or ``pwd``; *weak* when it contains ``key`` or ``token`` (not only inside tokeniz*, keyword,
   keyboard, keyframe, keypoint, keystroke, monkey) or is ``auth``/``auths``/``authorization``. A name whose
   last word describes the secret rather than holding it (url, uri, endpoint, file, path, dir, env, var,
   name, type, length, len, size, count, limit, ttl, expiry, expires, header, prefix, id, ids, algorithm,
   format, location, enabled, metric) is not secret-named: ``token_url``, ``api_key_env``, ``password_file``;
   nor is ``<role>_key`` for a field role (text, label, prompt, response, chosen, rejected, input, output,
   sort, cache, primary, foreign, partition, column, field, message(s), content, role, image, target,
   source, group, hash, lookup, join, shard, dict, public, id): ``text_key: text`` names a field.
   Names are matched where a key can stand: at the start of a line (after indentation, ``- ``, ``*``, ``>``,
   ``export``, or comment markers ``#``/``//``/``;``, so commented-out keys count), after ``{ , [ (``
   (flows, JSON, call arguments), after ``? &`` (URL queries), after ``;`` (connection strings), as
   ``name=value`` anywhere, and inside a string (``"Authorization: Bearer …"``). Separators ``:`` and ``=``:
   YAML ``key: value``, JSON ``"key": "value"``, TOML/INI/properties ``key = value``, code ``key="v"``;
   also ``--key value`` / ``--key=value`` command-line flags and ``<key>value</key>`` XML elements.
   The value is the quoted string's inside (``"…"`` with escapes, ``'…'``, ``\"\"\"…\"\"\"``), or the unquoted
   text up to the end of the line and over deeper-indented continuation lines (YAML/TOML/env files: up to
   a `` #`` comment; JSON-style quoted keys and flows: up to ``, } ]``; queries up to ``&``; connection
   strings up to ``;``; ``name=value`` inline up to whitespace), after an auth scheme word of a weak name
   (``Bearer``/``Basic``/``Token``/``Digest``).
   A flow ``[…]``/``{…}`` or an indented YAML block (``key:`` then deeper lines, or ``key: |``) under a
   secret-named key: strong names give the whole inside as one value, weak names give each leaf value.
3. **Shapes**, anywhere (also in binary files, i.e. files holding a NUL byte, where only shapes are
   searched): OpenAI-style ``sk-…`` (20+ chars: sk-proj-, sk-ant-, sk-svcacct- …), AWS access key ids
   ``AKIA…``/``ASIA…`` and any 40-char base64-ish run within 512 bytes of one (the secret key), GitHub
   ``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``, Slack ``xox?-`` tokens and webhook paths, Hugging Face
   ``hf_…``, Google ``AIza…``, Stripe ``sk_live_``/``rk_test_`` …, JWTs ``eyJ….eyJ….…``, whole
   ``-----BEGIN … PRIVATE KEY-----`` blocks (to the END line, or to the end of the data if none), the
   password of ``scheme://user:password@host`` (to the last ``@``; not one starting like a port,
   ``8080/``; a user part alone of 20+ chars is a token), ``Bearer`` tokens of 16+ chars holding a digit
   (or 24+ chars), and ``Authorization:`` header values.
4. The redaction placeholder ``REDACTED-BY-AIBACKUP`` is reported as a span wherever it stands, so a file
   restored from a redacted backup gives the same rows again (the connector tells placeholders from
   secrets by their text).

What is not a secret
--------------------
An empty value; a pure reference (``${NAME}``, ``{{ name }}``, ``{name}``, ``%(name)s``,
``os.environ/NAME``; not ``$NAME``: a password may start with ``$``); ``null``/``none``/``nil``/``~``/
``true``/``false``; a secret-named key mentioned in prose (``Never reveal the password to anyone``: no key
position or separator); a ``--flag`` followed by another ``--flag``; for weak names only, also
numbers of up to 12 digits (``max_tokens: 4096``) and tokenizer tokens (``<s>``, ``<|endoftext|>``,
``[PAD]``). Placeholders such as ``changeme`` or ``xxx`` ARE secrets: they may be real.
Not handled: UTF-16 text (only shapes in its bytes, which rarely match), secrets split over several
keys, and secret values under names matching none of the rules and no shape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

PLACEHOLDER = b"REDACTED-BY-AIBACKUP"


@dataclass(frozen=True)
class Span:
    """Byte offsets ``[start, end)`` of one secret value, and why it is one (never the value itself)."""

    start: int
    end: int
    reason: str


# --- names ------------------------------------------------------------------------------------------------

_STRONG_PARTS = ("secret", "passw", "passphrase", "credential", "privatekey")
_STRONG_WORDS = frozenset({"pass", "pw", "pwd"})
_EXEMPT_PARTS = ("tokeniz", "keyword", "keyboard", "keyframe", "keypoint", "keystroke", "monkey")
_AUTH_WORDS = frozenset({"auth", "auths", "authorization"})
_DESCRIPTORS = frozenset(
    {
        *("url", "uri", "urls", "endpoint", "file", "path", "dir", "env", "var", "name", "type", "length"),
        *("len", "size", "count", "limit", "ttl", "expiry", "expires", "header", "prefix", "id", "ids"),
        *("algorithm", "format", "location", "enabled", "metric"),
        # plurals name counts or lists of those things, not a credential: secret_files, token_counts
        *("uris", "endpoints", "files", "paths", "dirs", "names", "types", "counts", "limits", "headers"),
    }
)
#: ``<role>_key`` names a field or record key, not a credential: ``text_key: text``, ``sort_key``, ``public_key``.
_FIELD_ROLES = frozenset(
    {
        *("text", "label", "prompt", "response", "chosen", "rejected", "input", "output", "sort", "cache"),
        *("primary", "foreign", "partition", "column", "field", "message", "messages", "content", "role"),
        *("image", "target", "source", "group", "hash", "lookup", "join", "shard", "dict", "public", "id"),
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def name_strength(name: str) -> str | None:
    """ "strong", "weak" or None: whether (and how surely) a key name holds a secret (see the docstring)."""
    words = [w.lower() for w in _WORD.findall(name)]
    if not words or (len(words) > 1 and words[-1] in _DESCRIPTORS):
        return None
    compact = "".join(words)
    if any(p in compact for p in _STRONG_PARTS) or _STRONG_WORDS.intersection(words):
        return "strong"
    if len(words) > 1 and words[-1] in ("key", "keys") and words[-2] in _FIELD_ROLES:
        return None
    for part in _EXEMPT_PARTS:
        compact = compact.replace(part, "")
    if "key" in compact or "token" in compact or _AUTH_WORDS.intersection(words):
        return "weak"
    return None


# --- values that are not secrets --------------------------------------------------------------------------

_REF = re.compile(
    rb"\$\{[A-Za-z_]\w*\}|\{\{\s*[A-Za-z_][\w.]*\s*\}\}|\{[A-Za-z_][\w.]*\}"
    rb"|%\([A-Za-z_]\w*\)s|os\.environ/[A-Za-z_]\w*"
)
_CONSTANT = frozenset({b"null", b"none", b"nil", b"~", b"true", b"false"})
_NUMBER = re.compile(
    rb"[-+]?(?:\d[\d_]{0,11}(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+|0[xX][0-9a-fA-F]{1,12}|\.?inf|\.?nan)", re.I
)
_SPECIAL_TOKEN = re.compile(rb"<[^<>\s]{0,40}>|\[[A-Za-z_]{1,20}\]")


def _exempt(value: bytes, strength: str) -> bool:
    v = value.strip()
    if not v or _REF.fullmatch(v):
        return True
    if strength == "env":
        return False
    if v.lower() in _CONSTANT:
        return True
    return strength == "weak" and bool(_NUMBER.fullmatch(v) or _SPECIAL_TOKEN.fullmatch(v))


# --- shapes -----------------------------------------------------------------------------------------------

# (pattern, reason, hints: one must be in the data (lower-cased for (?i) patterns) or the pattern is not
# run, bounded: the byte before must not be [A-Za-z0-9_-]). Patterns start with a literal and the boundary
# is checked in Python: a leading look-behind would make `re` try every position (30x slower on big files).
_SHAPES: list[tuple[re.Pattern[bytes], str, tuple[bytes, ...], bool]] = [
    (re.compile(rb"sk-[\w-]{20,}"), "shape sk-…", (b"sk-",), True),
    (re.compile(rb"(?:AKIA|ASIA)[A-Z0-9]{16}"), "shape AKIA… (AWS access key id)", (), False),
    (re.compile(rb"gh[pousr]_[A-Za-z0-9]{30,}"), "shape ghp_… (GitHub token)", (), True),
    (re.compile(rb"github_pat_\w{20,}"), "shape github_pat_…", (), True),
    (re.compile(rb"xox[a-z]-[A-Za-z0-9-]{10,}"), "shape xox?-… (Slack token)", (), True),
    (re.compile(rb"hooks\.slack\.com/services/([\w/-]{10,})"), "Slack webhook path", (), False),
    (re.compile(rb"hf_[A-Za-z0-9]{30,}"), "shape hf_… (Hugging Face token)", (), True),
    (re.compile(rb"AIza[\w-]{35}"), "shape AIza… (Google API key)", (), True),
    (
        re.compile(rb"[srp]k_(?:live|test)_[A-Za-z0-9]{16,}"),
        "shape sk_live_… (Stripe key)",
        (b"k_live_", b"k_test_"),
        True,
    ),
    (re.compile(rb"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}"), "shape eyJ… (JWT)", (), True),
    (re.compile(rb"(?i)bearer[ \t]+([\w.~+/-]{16,}=*)"), "bearer token", (b"bearer",), True),
    (
        re.compile(
            rb"(?i)(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
            rb"(?:(?:bearer|basic|token|digest)[ \t]+)?([^\s\"',;]+)"
        ),
        "Authorization header",
        (b"authorization",),
        True,
    ),
]
_AWS_ID = _SHAPES[1][0]
_AWS_SECRET = re.compile(rb"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_PEM_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(rb"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
# After a scheme (checked in Python); a raw "@" in a password reaches to the last one.
# The user part may be empty: redis://:PASSWORD@host is the usual form for Redis.
_URL_AUTH = re.compile(rb"://([^\s/?#@:'\"<>]*)(?::([^\s?'\"<>]*))?@")


def _bounded(data: bytes, start: int) -> bool:
    before = data[start - 1 : start]
    return not before or not (before.isalnum() or before in b"_-")


def _shape_spans(data: bytes) -> list[Span]:
    spans: list[Span] = []
    lowered = data.lower()
    for pattern, reason, hints, bounded in _SHAPES:
        if hints and not any(h in (lowered if pattern.flags & re.I else data) for h in hints):
            continue
        for m in pattern.finditer(data):
            if bounded and not _bounded(data, m.start()):
                continue
            group = 1 if pattern.groups else 0
            start, end = m.span(group)
            value = m.group(group)
            if reason == "bearer token" and not (len(value) >= 24 or re.search(rb"\d", value)):
                continue
            if reason == "Authorization header" and _exempt(value, "strong"):
                continue
            spans.append(Span(start, end, reason))
    for m in _AWS_ID.finditer(data):
        lo, hi = max(0, m.start() - 512), min(len(data), m.end() + 512)
        for s in _AWS_SECRET.finditer(data, lo, hi):
            spans.append(Span(s.start(), s.end(), "40-char AWS secret key next to an access key id"))
    for m in _PEM_BEGIN.finditer(data):
        close = _PEM_END.search(data, m.end())
        spans.append(Span(m.start(), close.end() if close else len(data), "PEM private key block"))
    for m in _URL_AUTH.finditer(data):
        if not data[m.start() - 1 : m.start()].isalnum():
            continue  # "://" with no scheme before it
        user, password = m.group(1), m.group(2)
        if password is not None:
            if password and not _exempt(password, "strong") and not re.match(rb"\d{1,5}/", password):  # a port
                spans.append(Span(m.start(2), m.end(2), "password in a URL"))
        elif len(user) >= 20 and not _exempt(user, "strong"):
            spans.append(Span(m.start(1), m.end(1), "token as the user of a URL"))
    start = data.find(PLACEHOLDER)
    while start >= 0:
        spans.append(Span(start, start + len(PLACEHOLDER), "redaction placeholder"))
        start = data.find(PLACEHOLDER, start + len(PLACEHOLDER))
    return spans


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
    ref = _REF.match(data, pos)
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


def _reason(name: bytes) -> str:
    text = name.decode("ascii", "replace")[:60]
    if any(p.search(name) for p, *_ in _SHAPES[:10]) or PLACEHOLDER in name:
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


def _key_spans(data: bytes, comments: bool, env: bool) -> list[Span]:
    spans: list[Span] = []

    def add(leaves: list[Leaf], strength: str, name: bytes) -> None:
        for s, e in leaves:
            if e > s and not _exempt(data[s:e], strength):
                spans.append(Span(s, e, _reason(name)))

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


def _env_spans(data: bytes) -> list[Span]:
    spans = []
    for m in _ENV_LINE.finditer(data):
        leaves = _value_leaves(data, m.end(), "line", "env", colon=False, column=0, comments=True, continued=False)
        for s, e in leaves:
            if e > s and not _exempt(data[s:e], "env"):
                spans.append(Span(s, e, _reason(m.group(1))))
    return spans


def is_env_file(name: str) -> bool:
    base = os.path.basename(name)
    return base == ".env" or base.endswith(".env") or base.startswith(".env.")


def find_secrets(data: bytes, name: str) -> list[Span]:
    """The secret values of a file's bytes, sorted and non-overlapping (see the module docstring).

    `name` is the file's name or relative path: it picks the env-file rule and where `` #`` starts a
    comment (env, YAML, TOML). A file holding a NUL byte is binary: only shapes are searched."""
    spans = _shape_spans(data)
    if b"\x00" not in data:
        base = os.path.basename(name).lower()
        env = is_env_file(base)
        comments = env or base.endswith((".yaml", ".yml", ".toml"))
        spans += _key_spans(data, comments, env)
        if env:
            spans += _env_spans(data)
    return _merge(spans)


def _merge(spans: list[Span]) -> list[Span]:
    """Overlapping spans become one (the first one's reason): a value is cut out once."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.end <= span.start:
            continue
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            if span.end > last.end:
                merged[-1] = Span(last.start, span.end, last.reason)
            continue
        merged.append(span)
    return merged


def line_of(data: bytes, offset: int) -> int:
    """The 1-based line number of a byte offset (for messages that name where a secret is, not what)."""
    return data.count(b"\n", 0, offset) + 1
