"""How the Chroma connector reads a collection: offset pages fetched ahead of their conversion, then the
ids-only pass that proves each record was exported once (:func:`pages`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import id_checksum
from aibackup.connectors.chroma.client import raw_get

FETCH_AHEAD = 2  # pages a Chroma export reads ahead of their conversion
ID_PAGE = 200_000  # ids-only pages of the proof pass (1M records: 3.2 s in 200k pages, 5.2 s in 50k pages)

Errors = Callable[[str, str], AbstractContextManager[None]]


def pages(
    col: Any, include: list[str], name: str, convert: Callable[[Any], pa.RecordBatch], step: int, errors: Errors
) -> Generator[pa.RecordBatch, None, tuple[int, int]]:
    """Yield ``convert(page)`` for every non-empty ``get`` page of `step` records in offset order; return
    the ids-only pass (:func:`id_sum`) run after the last page was read.

    Chroma's ``get`` spends about half its time in Rust with the GIL released, so a worker thread
    fetches up to ``FETCH_AHEAD`` pages ahead (in order, one at a time) while this thread turns pages
    into Arrow: with one page ahead the worker sat idle 0.5 s per 100k records, waiting for a consumer
    that the GIL slowed. Paging stops at the first short page (pages fetched past it are dropped: the
    records they would hold arrived during the backup, which the proof reports); the ids-only pass
    then starts at once in the same worker (after the last read, as the proof needs), overlapping the
    conversion of the last page and the writer's tail.
    """

    def fetch(offset: int) -> Any:
        with errors("read records", name):
            return raw_get(col, include, limit=step, offset=offset)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aibackup-chroma-get") as pool:
        ahead = deque(pool.submit(fetch, k * step) for k in range(FETCH_AHEAD))
        following = FETCH_AHEAD * step  # the offset of the next page to ask for
        try:
            while True:
                page = ahead.popleft().result()
                count = len(page["ids"])
                if count < step:
                    for future in ahead:
                        future.cancel()
                    proof = pool.submit(id_sum, col, name, errors)
                    if count:
                        yield convert(page)
                    result: tuple[int, int] = proof.result()
                    return result
                ahead.append(pool.submit(fetch, following))
                following += step
                yield convert(page)
        finally:  # an error or an early stop: nothing more is read
            for future in ahead:
                future.cancel()


def id_sum(col: Any, name: str, errors: Errors) -> tuple[int, int]:
    """(records, sum of id hashes) of the collection, from an ids-only pass."""
    total = offset = 0
    while True:
        with errors("read ids", name):
            ids = list(col.get(include=[], limit=ID_PAGE, offset=offset)["ids"])
        if not ids:
            return offset, total
        total += id_checksum(ids)
        offset += len(ids)
