"""What the secret scanner reports and which names and values count (:mod:`aibackup.connectors.files.secrets`)."""

from __future__ import annotations

import re
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

REF = re.compile(
    rb"\$\{[A-Za-z_]\w*\}|\{\{\s*[A-Za-z_][\w.]*\s*\}\}|\{[A-Za-z_][\w.]*\}"
    rb"|%\([A-Za-z_]\w*\)s|os\.environ/[A-Za-z_]\w*"
)
_CONSTANT = frozenset({b"null", b"none", b"nil", b"~", b"true", b"false"})
_NUMBER = re.compile(
    rb"[-+]?(?:\d[\d_]{0,11}(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+|0[xX][0-9a-fA-F]{1,12}|\.?inf|\.?nan)", re.I
)
_SPECIAL_TOKEN = re.compile(rb"<[^<>\s]{0,40}>|\[[A-Za-z_]{1,20}\]")


def exempt(value: bytes, strength: str) -> bool:
    v = value.strip()
    if not v or REF.fullmatch(v):
        return True
    if strength == "env":
        return False
    if v.lower() in _CONSTANT:
        return True
    return strength == "weak" and bool(_NUMBER.fullmatch(v) or _SPECIAL_TOKEN.fullmatch(v))
