"""A Milvus server's collection split for a partitioned backup on Dask (``backup --workers``): ranges of
primary keys from one ids-only listing; each worker reads its range, Milvus partition by Milvus partition.

Milvus has no snapshot to share. The listing is the backup's point in time, as for a Chroma server: it must
hold as many keys as the collection counted when described, and each range must then hold exactly the keys
the listing found in it (their count and a checksum of them), else the collection is changing and the
backup is refused (SourceDataError), as a one-process export's final ids pass refuses it. The first range
has no lower bound and the last no upper one, so a record added anywhere lands in a range that checks it.
A record changed in place after the listing is read as it is then, as a one-process export reads each page
when it gets there. Milvus Lite (``milvus:PATH``) is served by the process that opens its folder: it does
not split.

The checksums are computed by the listing's process and the workers' alike, so they use a keyed-free
hash (BLAKE2b, 8 bytes) rather than Python's per-process ``hash``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from aibackup.connectors.milvus.client import Store, escaped
from aibackup.connectors.milvus.schema import Layout
from aibackup.errors import SourceDataError

#: Keys per page of the listing (pymilvus caps iterator pages at 16384).
LIST_PAGE = 16_000


def checksum(keys: Iterable[object]) -> int:
    """An order-free checksum of primary keys that every process computes alike."""
    return sum(int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "little") for k in keys)


def key_ranges(store: Store, name: str, layout: Layout, rows: int, wanted: int) -> list[dict[str, Any]]:
    """At most `wanted` ranges of about equal size over one keys-only listing of collection `name`, which
    must hold the `rows` it was described with: ``{"after": key or None, "last": key or None, "rows": n,
    "sum": checksum}`` (keys in ``(after, last]``, unbounded where None)."""
    count = max(1, min(wanted, rows))
    size = -(-rows // count) if rows else 1
    pk = layout.pk.name
    ranges: list[dict[str, Any]] = []
    after: Any = None
    listed = held = total = 0
    last: Any = None
    for page in store.pages(name, layout, LIST_PAGE, None, full=False):
        for record in page:
            key = record[pk]
            if held == size:  # the range before `key` is full: it ends at the key before
                ranges.append({"after": after, "last": last, "rows": held, "sum": total})
                after, held, total = last, 0, 0
            held += 1
            total += checksum((key,))
            last = key
            listed += 1
    if held:
        ranges.append({"after": after, "last": None, "rows": held, "sum": total})
    if listed != rows:
        raise SourceDataError(
            f"Milvus collection {name!r} changed during the backup (described with {rows} records, {listed} "
            "listed); run it again while nothing writes to the collection"
        )
    return ranges


def range_filter(layout: Layout, key_range: Mapping[str, Any]) -> str:
    """The Milvus filter of the keys in `key_range` ("" for the whole collection)."""
    pk = layout.pk.name

    def literal(key: Any) -> str:
        return str(int(key)) if layout.int_pk else f'"{escaped(str(key))}"'

    terms = []
    if key_range.get("after") is not None:
        terms.append(f"{pk} > {literal(key_range['after'])}")
    if key_range.get("last") is not None:
        terms.append(f"{pk} <= {literal(key_range['last'])}")
    return " and ".join(terms)


def range_pages(
    store: Store, name: str, layout: Layout, rows: int, partitions: list[str | None], key_range: Mapping[str, Any]
) -> Iterator[tuple[str | None, list[dict[str, Any]]]]:
    """Every record of `key_range`, as (Milvus partition, page) in query-iterator pages; SourceDataError
    once read when the range does not hold the keys the listing found in it."""
    expr = range_filter(layout, key_range)
    pk = layout.pk.name
    found = total = 0
    for partition in partitions:
        for page in store.pages(name, layout, rows, partition, full=True, expr=expr):
            found += len(page)
            total += checksum(r[pk] for r in page)
            yield partition, page
    if (found, total) != (int(key_range["rows"]), int(key_range["sum"])):
        raise SourceDataError(
            f"Milvus collection {name!r} changed during the backup (a range of keys listed with "
            f"{key_range['rows']} records holds {found} now, or other keys); run it again while nothing writes "
            "to the collection"
        )
