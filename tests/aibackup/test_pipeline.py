"""Pipeline stages: prefetch hands errors over and stops its producer; the Arrow allocator choice."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest

from aibackup.pipeline import prefetch, use_arrow_allocator


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
