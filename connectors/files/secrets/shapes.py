"""Secrets found by their shape alone, wherever they stand (:mod:`aibackup.connectors.files.secrets`, rule 3)."""

from __future__ import annotations

import re

from aibackup.connectors.files.secrets.rules import PLACEHOLDER, Span, exempt

# --- shapes -----------------------------------------------------------------------------------------------

# (pattern, reason, hints: one must be in the data (lower-cased for (?i) patterns) or the pattern is not
# run, bounded: the byte before must not be [A-Za-z0-9_-]). Patterns start with a literal and the boundary
# is checked in Python: a leading look-behind would make `re` try every position (30x slower on big files).
SHAPES: list[tuple[re.Pattern[bytes], str, tuple[bytes, ...], bool]] = [
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
_AWS_ID = SHAPES[1][0]
_AWS_SECRET = re.compile(rb"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_PEM_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(rb"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
# After a scheme (checked in Python); a raw "@" in a password reaches to the last one.
# The user part may be empty: redis://:PASSWORD@host is the usual form for Redis.
_URL_AUTH = re.compile(rb"://([^\s/?#@:'\"<>]*)(?::([^\s?'\"<>]*))?@")


def _bounded(data: bytes, start: int) -> bool:
    before = data[start - 1 : start]
    return not before or not (before.isalnum() or before in b"_-")


def shape_spans(data: bytes) -> list[Span]:
    spans: list[Span] = []
    lowered = data.lower()
    for pattern, reason, hints, bounded in SHAPES:
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
            if reason == "Authorization header" and exempt(value, "strong"):
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
            if password and not exempt(password, "strong") and not re.match(rb"\d{1,5}/", password):  # a port
                spans.append(Span(m.start(2), m.end(2), "password in a URL"))
        elif len(user) >= 20 and not exempt(user, "strong"):
            spans.append(Span(m.start(1), m.end(1), "token as the user of a URL"))
    start = data.find(PLACEHOLDER)
    while start >= 0:
        spans.append(Span(start, start + len(PLACEHOLDER), "redaction placeholder"))
        start = data.find(PLACEHOLDER, start + len(PLACEHOLDER))
    return spans
