"""Numbers a JSON store cannot hold: a Qdrant server's payloads and Milvus's JSON fields keep integers in
int64 and have no NaN or Infinity, where a bundle's canonical metadata holds ints of any size and both.
Shared by the connectors of those stores: :func:`json_number_problem` finds the first such number (for a
refusal that names it), :func:`json_safe` maps them (``--allow-lossy``: a float, or null)."""

from __future__ import annotations

import math
from typing import Any

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def json_number_problem(value: Any, path: str = "") -> str | None:
    """The first number under `value` outside int64, or NaN/Infinity, as ``a.1.b = 2**63 is outside
    int64`` (the path of keys and list positions to it); None when there is none."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, int):
        return None if INT64_MIN <= value <= INT64_MAX else f"{path or 'value'} = {value} is outside int64"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'value'} = {value}"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        problem = json_number_problem(item, f"{path}.{key}" if path else str(key))
        if problem:
            return problem
    return None


def json_safe(value: Any) -> Any:
    """`value` with every int outside int64 made a float (null beyond float range) and NaN/Infinity null."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
