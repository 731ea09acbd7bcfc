"""A Chroma server's collection split for a partitioned backup on Dask (``backup --workers``): the ids of
one ids-only listing, in contiguous groups; each worker reads its group's records by id, in pages.

Chroma has no snapshot to share. The listing is the backup's point in time: it must hold as many ids as
the collection counted when described (else the collection is changing: SourceDataError, as a
one-process export's final ids pass refuses it), and a worker that finds fewer records than its ids (a
record deleted since) refuses too. A record changed in place after the listing is read as it is then, as
a one-process export reads each page when it gets there. An embedded store belongs to one process: it
does not split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from aibackup.connectors.chroma.client import raw_get
from aibackup.errors import SourceDataError

#: Ids per page of the listing.
LIST_PAGE = 200_000

Errors = Callable[[str, str], AbstractContextManager[None]]


def id_groups(col: Any, name: str, rows: int, wanted: int, errors: Errors) -> list[list[str]]:
    """The ids of `col` in at most `wanted` contiguous groups of about equal size, from one listing that
    must hold the `rows` the collection was described with."""
    ids: list[str] = []
    while True:
        with errors("read ids", name):
            page = list(col.get(include=[], limit=LIST_PAGE, offset=len(ids))["ids"])
        ids += page
        if len(page) < LIST_PAGE:
            break
    if len(ids) != rows:
        raise SourceDataError(
            f"collection {name!r} changed during the backup (described with {rows} records, {len(ids)} listed); "
            "run it again while nothing writes to the collection"
        )
    count = max(1, min(wanted, len(ids)))
    size = -(-len(ids) // count) if ids else 0
    return [ids[start : start + size] for start in range(0, len(ids), size)] if ids else []


def pages(col: Any, name: str, ids: list[str], include: list[str], step: int, errors: Errors) -> Iterator[Any]:
    """The records of `ids`, `step` ids per ``get``; SourceDataError when some are gone."""
    found = 0
    for start in range(0, len(ids), step):
        chunk = ids[start : start + step]
        with errors("read records", name):
            page = raw_get(col, include, ids=chunk)
        found += len(page["ids"])
        yield page
    if found != len(ids):
        raise SourceDataError(
            f"collection {name!r} changed during the backup ({len(ids) - found} of the records listed are gone); "
            "run it again while nothing writes to the collection"
        )
