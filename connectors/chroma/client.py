"""Calls under chromadb's public API, and how a failure of the transport is told from Chroma's own errors.

``raw_get`` reads a page the way ``Collection.get`` does, without its float64 matrix (see its docstring);
the Chroma connector (:mod:`.connector`) reads through it and the benchmarks time it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def raw_get(
    col: Any, include: list[str], *, limit: int | None = None, offset: int | None = None, ids: list[str] | None = None
) -> Mapping[str, Any]:
    """A ``get`` page of `col` as the client's API returns it, before ``Collection.get`` turns the vectors
    into a float64 numpy matrix (lists of Python floats then, which :func:`cm.page_to_batch` packs straight
    into float32: 9 ms per 2,500 x 384 page against 22 ms through the matrix, all of it holding the GIL
    that Chroma's own reading needs too). ``Collection.get`` without filters is exactly this call plus
    that conversion (chromadb 1.x, embedded and HTTP clients alike); a client without the call, or
    whose call takes other arguments, gets the public one. `ids`: those records only (a page of ids)."""
    get = getattr(getattr(col, "_client", None), "_get", None)
    if callable(get):
        try:
            return get(
                collection_id=col.id,
                ids=ids,
                where=None,
                where_document=None,
                include=list(include),
                limit=limit,
                offset=offset,
                tenant=col.tenant,
                database=col.database,
            )
        except TypeError:  # another chromadb's signature (a real failure recurs in the public call)
            pass
    return col.get(ids=ids, include=include, limit=limit, offset=offset)


def is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, ValueError) and "Could not connect" in str(exc):
        return True
    try:
        import httpx
    except ImportError:  # pragma: no cover - chromadb depends on httpx
        return False
    return isinstance(exc, httpx.TransportError | httpx.HTTPStatusError)
