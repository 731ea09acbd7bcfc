"""Pipeline stages: prefetch hands errors over and stops its producer; collecting frees cycles per item
and backs off when there are none; the Arrow allocator choice."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from aibackup.backup import run_backup
from aibackup.errors import AibackupError
from aibackup.pipeline import (
    MAX_COLLECT_EVERY,
    collecting,
    collector_paused,
    prefetch,
    steady_memory,
    use_arrow_allocator,
)


def test_prefetch_yields_in_order_and_reraises_the_producers_error() -> None:
    def produce() -> Iterator[int]:
        yield from range(5)
        raise ValueError("source broke")

    seen: list[int] = []
    with pytest.raises(ValueError, match="source broke"):
        for item in prefetch(produce()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert not [t for t in threading.enumerate() if t.name == "aibackup-prefetch"]


def test_prefetch_stops_reading_when_the_consumer_stops() -> None:
    read: list[int] = []

    def produce() -> Iterator[int]:
        for i in range(1000):
            read.append(i)
            yield i

    for item in prefetch(produce(), depth=2):
        if item == 3:
            break
    assert len(read) < 10  # the producer ran at most `depth` (and the item in hand) ahead, then stopped
    assert not [t for t in threading.enumerate() if t.name == "aibackup-prefetch"]


@pytest.fixture
def default_pool() -> Iterator[None]:
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


def test_arrow_allocator_is_one_that_keeps_freed_memory(default_pool: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    use_arrow_allocator()
    expected = "jemalloc" if "jemalloc" in pa.supported_memory_backends() else "system"
    assert pa.default_memory_pool().backend_name == expected


def test_arrow_allocator_chosen_by_the_environment_is_kept(default_pool: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    use_arrow_allocator()
    assert pa.default_memory_pool().backend_name == "mimalloc"


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def _full_collections(items: Iterator[object]) -> tuple[int, list[int]]:
    """(full collections run while consuming `items` through `collecting`, live _Cycle objects after each)."""
    runs = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            runs[0] += 1

    alive: list[int] = []
    gc.disable()  # only `collecting` collects, so what it frees is what it was asked to free
    gc.callbacks.append(count)
    try:
        with steady_memory():
            for _ in collecting(items):
                alive.append(sum(isinstance(o, _Cycle) for o in gc.get_objects()))
    finally:
        gc.callbacks.remove(count)
        gc.enable()
    return runs[0], alive


def test_collecting_frees_each_items_cycles_before_the_next() -> None:
    def leaky() -> Iterator[int]:
        for i in range(40):
            _Cycle()  # garbage at once: a client that leaves a cycle per request
            yield i

    runs, alive = _full_collections(leaky())
    # The first collection's finding may be the setup's garbage: the next waits one item. From the
    # second on, each finds this item's cycle, so every item is collected: never more than the cycle of
    # the item in hand, and two once.
    assert runs == 39 and alive[:4] == [1, 1, 2, 1] and max(alive[3:]) == 1


def test_cycles_that_start_after_a_clean_stretch_pile_up_for_a_bounded_number_of_items() -> None:
    """Automatic collections are off inside the stream: when a client starts leaving cycles after many clean
    items, at most MAX_COLLECT_EVERY items' worth wait for the next collection, which then makes it every
    item again."""

    def late_leaks() -> Iterator[int]:
        for i in range(120):
            if i >= 50:
                _Cycle()
            yield i

    _, alive = _full_collections(late_leaks())
    assert max(alive) <= MAX_COLLECT_EVERY
    assert alive[-20:] == [1] * 20  # collected after every item again


def test_collecting_spaces_out_collections_that_find_nothing() -> None:
    runs, _ = _full_collections(iter(range(200)))
    # after items 1, 3, 7, then every 8th (MAX_COLLECT_EVERY): 15, 23, ... 199
    assert MAX_COLLECT_EVERY == 8 and runs == 3 + len(range(15, 201, 8))


@pytest.mark.parametrize("automatic", [True, False])
@pytest.mark.parametrize("paused", [steady_memory, collector_paused])
def test_automatic_collections_are_off_inside_and_as_before_after(
    paused: Callable[[], contextlib.AbstractContextManager[None]], automatic: bool
) -> None:
    """Inside a stream (and while a store is opened) Python's automatic collections are off: they traversed
    every page in flight, or every point loaded so far, for nothing. Afterwards they are as they were."""
    (gc.enable if automatic else gc.disable)()
    try:
        with paused():
            assert not gc.isenabled()
        assert gc.isenabled() is automatic
        with pytest.raises(KeyError), paused():
            raise KeyError("an error inside")
        assert gc.isenabled() is automatic
    finally:
        gc.enable()


def test_a_backup_leaves_automatic_collections_on(tmp_path: Path) -> None:
    source = tmp_path / "settings"
    source.mkdir()
    (source / "app.yaml").write_text("retries: 3\n")
    run_backup(str(tmp_path / "repo"), f"config:{source}")
    assert gc.isenabled()
    with pytest.raises(AibackupError):
        run_backup(str(tmp_path / "repo"), f"chroma:{tmp_path / 'no-store'}")
    assert gc.isenabled()
