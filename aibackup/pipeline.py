"""Overlapping stages: run an iterator in a background thread behind a bounded queue.

A backup reads from the source while the previous batches are encoded, hashed and uploaded; a restore
reads and decodes the bundle while the target ingests. Both sides mostly run in C/Rust code that releases
the GIL (the Chroma and Qdrant clients, Arrow's Parquet codec, hashlib), so two stages overlap for real
and the pipeline runs at the speed of its slowest stage rather than the sum. The queue bound (`depth`
items) keeps memory flat.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import TypeVar

import pyarrow as pa

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield the items of `items`, produced by a background thread up to `depth` ahead.

    An exception in the producer is re-raised in the consumer at the point it happened. If the consumer
    stops early (an error, or it breaks out), the producer is told to stop and is joined, so no thread
    outlives the call and the source is not read further.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as exc:
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if callable(close):
                close()

    thread = threading.Thread(target=produce, name="aibackup-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def use_arrow_allocator() -> None:
    """Make jemalloc Arrow's default memory pool (the system allocator where pyarrow lacks jemalloc),
    unless ``ARROW_DEFAULT_MEMORY_POOL`` chooses one.

    pyarrow's default on Linux, mimalloc, returns freed memory to the OS within milliseconds, so the large
    buffers every batch allocates and frees (digest framing, row groups, Parquet pages) are page-faulted
    in again each time. Measured on the writer benchmark (100k x 384): 1.54 CPU-seconds with mimalloc,
    1.15 with jemalloc or the system allocator; raw pyarrow, which allocates little, is the same with all
    three. Arrow has one default pool per process, so this applies process-wide (backup, restore and
    verify call it; a program embedding aibackup gets it too).
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's automatic garbage collections off inside (and back on after, if they were on).

    For code that allocates many objects that all stay alive, where every automatic collection traverses
    them again and frees nothing: opening a Qdrant store in local mode unpickles every point (20,000 x 384:
    1.1 s with automatic collections, 0.9 s without). Cycles made meanwhile wait for the next collection.
    """
    automatic = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if automatic:
            gc.enable()


@contextlib.contextmanager
def steady_memory() -> Iterator[None]:
    """Keep peak memory flat across a long stream of batches read through :func:`collecting`.

    Client libraries leave reference cycles per request (Chroma's HTTP client does), which Python frees
    only when its cyclic collector happens to run: several pages of records can pile up first, so peak
    memory drifts upward with the number of batches. Collecting after each batch keeps it flat, and
    freezing the objects that exist before the stream (imported modules, clients) makes each collection
    scan only the new ones, so it costs next to nothing. (No full collection first: with the client
    libraries loaded it takes ~60 ms; the little garbage it would free is left to a collection after
    ``unfreeze``.)

    Python's automatic collections are off meanwhile (and back on after, if they were on): the batches
    :func:`collecting` gives out are its only collection points. The automatic ones ran every few hundred
    allocations and traversed every page still in flight, finding nothing: 0.66 s of a 100k x 384 Chroma
    backup (261 collections, all holding the GIL the source client needs), against 0.06 s for the
    collections :func:`collecting` makes. Any code inside that allocates without going through
    :func:`collecting` leaves its cycles to the next collection point.
    """
    gc.freeze()
    try:
        with collector_paused():
            yield
    finally:
        gc.unfreeze()


#: The most items between two collections of a stream that leaves no cyclic garbage. With Python's automatic
#: collections off inside :func:`steady_memory`, it is also the most items whose cycles can pile up when a
#: client starts leaving some after a clean stretch (a page of Python lists is ~30 MB at 2,500 x 384).
MAX_COLLECT_EVERY = 8


def collecting(items: Iterable[T]) -> Generator[T, None, None]:
    """Yield the items of `items`, freeing the cyclic garbage each one left once the consumer is done with
    it (cheap inside :func:`steady_memory`).

    A collection that finds nothing doubles the wait before the next (after 2, 4 … up to
    ``MAX_COLLECT_EVERY`` items); one that finds garbage makes it every item again, except the first,
    which also frees what was left between :func:`steady_memory` freezing the heap and the stream's start
    (~300 objects in a Chroma backup), so its finding says nothing about the source. A collection still
    traverses every live container of the items in flight (Qdrant's pages of Python float lists: 35-45 ms
    per collection), and a client that leaves no cycles should not pay that after every page."""
    every = 1  # items from one collection to the next
    wait = 0
    first = True
    for item in items:
        yield item
        if wait:
            wait -= 1
            continue
        found = gc.collect()
        every = 1 if found and not first else min(2 * every, MAX_COLLECT_EVERY)
        wait, first = every - 1, False
