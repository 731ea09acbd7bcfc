"""Strict readers of manifest JSON: a missing or mistyped field raises :class:`ManifestError` naming it.

Shared by every model of the format (:mod:`aibackup.manifests.model`, :mod:`aibackup.manifests.baseline`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

#: The distances a dense vector may use (the format's vocabulary; backends map their own names to these).
DISTANCES = ("cosine", "l2", "ip", "manhattan")


class ManifestError(ValueError):
    """The manifest document is malformed (a missing or mistyped field, a bad checksum)."""


def get(doc: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise ManifestError(f"{where}: missing field {key!r}")
    value = doc[key]
    # bool is an int in Python; a count must not be `true`.
    if isinstance(value, bool) and typ is int:
        raise ManifestError(f"{where}.{key}: expected int, got bool")
    if not isinstance(value, typ):
        raise ManifestError(f"{where}.{key}: expected {typename(typ)}, got {type(value).__name__}")
    return value


def opt(doc: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str, default: Any) -> Any:
    if doc.get(key) is None:
        return default
    return get(doc, key, typ, where)


def typename(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def count(doc: Mapping[str, Any], key: str, where: str) -> int:
    value: int = get(doc, key, int, where)
    if value < 0:
        raise ManifestError(f"{where}.{key}: must not be negative")
    return value


def hex_digits(doc: Mapping[str, Any], key: str, where: str, length: int) -> str:
    value: str = get(doc, key, str, where)
    if len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise ManifestError(f"{where}.{key}: expected {length} lowercase hex digits")
    return value


def utc_time(doc: Mapping[str, Any], key: str, where: str) -> str:
    """An ISO 8601 time in UTC written with a ``Z`` ("2026-11-25T02:00:00.123456Z"), as written: listings,
    status and metrics read it as a time, so a value that is not one is a damaged manifest, not a crash."""
    value: str = get(doc, key, str, where)
    try:
        parsed = dt.datetime.fromisoformat(value[:-1] + "+00:00") if value.endswith("Z") else None
    except ValueError:
        parsed = None
    if parsed is None or "T" not in value:
        raise ManifestError(
            f"{where}.{key}: expected an ISO 8601 UTC time like 2026-11-25T02:00:00Z, got {value[:40]!r}"
        )
    return value


def obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected object, got {type(value).__name__}")
    return value
