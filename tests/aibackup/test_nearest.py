"""Exact nearest neighbours over a stream, and the sampling of query records (aibackup.nearest)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from aibackup.nearest import ExactTopK, QuerySampler


def batches(vectors: np.ndarray, ids: list[str], rows: int, nulls: set[int] = frozenset()) -> list[pa.RecordBatch]:  # type: ignore[assignment]
    out = []
    for start in range(0, len(ids), rows):
        chunk = vectors[start : start + rows]
        mask = pa.array([start + n in nulls for n in range(len(chunk))])
        values = pa.array(chunk.reshape(-1).astype(np.float32), pa.float32())
        column = pa.FixedSizeListArray.from_arrays(values, vectors.shape[1], mask=mask)
        out.append(pa.RecordBatch.from_arrays([pa.array(ids[start : start + rows]), column], ["id", "vector"]))
    return out


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip", "manhattan"])
def test_exact_top_k_over_batches_equals_a_full_sort(metric: str) -> None:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((1000, 12)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(data))]
    queries = data[[5, 500, 999]]
    search = ExactTopK(queries, 10, metric)
    for batch in batches(data, ids, 97):
        search.add(batch.column("id"), batch.column("vector"))
    full = search.distances(data.astype(np.float64))
    expected = [[ids[i] for i in np.argsort(row, kind="stable")[:10]] for row in full]
    assert [sorted(t) for t in search.top()] == [sorted(e) for e in expected]
    assert [t[0] for t in search.top()] == [e[0] for e in expected]  # nearest first
    assert search.recalls(expected).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_searches_over_partitions_merged_are_the_one_pass(metric: str) -> None:
    """A partitioned restore's exact pass: each worker adds its parts to a copy of the empty search, the
    driver merges them; the top-k and the watched distances are those of one pass (a partition with no
    record, or fewer than k, included)."""
    rng = np.random.default_rng(5)
    data = rng.standard_normal((600, 8)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(data))]
    watch = {"r1", "r350", "r599"}
    one = ExactTopK(data[[2, 300]], 10, metric, watch)
    for batch in batches(data, ids, 64):
        one.add(batch.column("id"), batch.column("vector"))
    merged = ExactTopK(data[[2, 300]], 10, metric, watch)
    for lo, hi in ((0, 0), (0, 5), (5, 320), (320, 600)):
        part = ExactTopK(data[[2, 300]], 10, metric, watch)
        for batch in batches(data[lo:hi], ids[lo:hi], 64) if hi > lo else []:
            part.add(batch.column("id"), batch.column("vector"))
        merged.merge(part)
    assert merged.top() == one.top()
    assert merged.seen.keys() == one.seen.keys() == watch
    assert all(np.array_equal(merged.seen[i], one.seen[i]) for i in watch)
    answers = [["r1", "r2", "r3"], ["r300", "r350", "r599"]]
    assert merged.recalls(answers).tolist() == one.recalls(answers).tolist()


def test_recall_counts_ties_only_for_watched_answers_and_ignores_repeats() -> None:
    # Twelve records at the same distance from the query: any ten of them are a perfect answer.
    data = np.vstack([np.zeros((1, 4)), np.eye(4), -np.eye(4), [[0, 0, 0, 2]] * 3, [[0.5, 0, 0, 0]]])
    ids = [f"r{i}" for i in range(len(data))]
    tied = ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"]  # distance 1 from the origin
    query = np.zeros((1, 4))
    watched = ExactTopK(query, 10, "l2", watch=["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10"])
    blind = ExactTopK(query, 10, "l2")
    for search in (watched, blind):
        for batch in batches(data, ids, 5):
            search.add(batch.column("id"), batch.column("vector"))
    answer = ["r0", "r12", *tied]  # the exact ten: itself, the 0.5 one, the eight at distance 1
    assert watched.recalls([answer]).tolist() == [1.0]
    farther = ["r0", "r12", *tied[:7], "r9"]  # r9 lies at distance 2: a miss, watched or not
    assert watched.recalls([farther]).tolist() == [0.9]
    assert watched.recalls([["r0", "r0", "r0"]]).tolist() == [0.1]  # an id answered thrice counts once
    assert watched.recalls([["r0", "unknown"]]).tolist() == [0.1]


def test_recall_over_fewer_records_than_k_asks_for_all_of_them() -> None:
    data = np.eye(3, dtype=np.float32)
    search = ExactTopK(data[:2], 10, "l2")
    for batch in batches(data, ["a", "b", "c"], 2):
        search.add(batch.column("id"), batch.column("vector"))
    assert search.recalls([["a", "b", "c"], ["a"]]).tolist() == [1.0, pytest.approx(1 / 3)]


def test_records_without_the_vector_are_neither_neighbours_nor_queries() -> None:
    data = np.arange(40, dtype=np.float32).reshape(20, 2)
    ids = [f"r{i}" for i in range(20)]
    nulls = {0, 1, 2, 3}
    search = ExactTopK(np.asarray([[0.0, 1.0]]), 3, "l2")
    sampler = QuerySampler(["vector"], 20, seed=1)
    for batch in batches(data, ids, 6, nulls):
        search.add(batch.column("id"), batch.column("vector"))
        sampler.add(batch)
    assert search.top() == [["r4", "r5", "r6"]]
    sampled, vectors = sampler.sample("vector")
    assert sorted(sampled) == sorted(ids[4:]) and vectors.shape == (16, 2)
    assert all(vectors[n].tolist() == data[int(i[1:])].tolist() for n, i in enumerate(sampled))


def test_sampler_is_seeded_bounded_and_uniform() -> None:
    data = np.arange(2000, dtype=np.float32).reshape(1000, 2)
    ids = [f"r{i}" for i in range(1000)]

    def draw(seed: int, rows: int) -> list[str]:
        sampler = QuerySampler(["vector"], 25, seed)
        for batch in sampler.watch(batches(data, ids, rows)):
            assert batch.num_rows <= rows  # passed through untouched
        sampled, vectors = sampler.sample("vector")
        assert len(sampled) == 25 and len(set(sampled)) == 25 and vectors.dtype == np.float32
        assert sampler.vectors["vector"] is not None and len(sampler.vectors["vector"]) == 25  # bounded
        return sampled

    assert draw(7, 100) == draw(7, 100)  # the same seed over the same stream: the same records
    assert draw(7, 100) != draw(8, 100)
    # Uniform over positions: across many seeds every decile of the stream gets about a tenth of the picks.
    picks = Counter(int(i[1:]) // 100 for seed in range(200) for i in draw(seed, 333))
    assert all(abs(count - 500) < 120 for count in picks.values()) and len(picks) == 10


def test_sampler_of_an_empty_column_is_empty() -> None:
    sampler = QuerySampler(["vector"], 5, seed=0)
    data = np.zeros((4, 2), dtype=np.float32)
    for batch in batches(data, ["a", "b", "c", "d"], 2, nulls={0, 1, 2, 3}):
        sampler.add(batch)
    ids, vectors = sampler.sample("vector")
    assert ids == [] and vectors.size == 0


def test_the_float32_screening_settles_in_float64_and_never_lowers_a_recall() -> None:
    """Neighbours that float32 cannot tell apart: the exact answer is still recognised as exact."""
    rng = np.random.default_rng(9)
    query = rng.standard_normal(384)
    # 40 records a hair from the query (float32 cannot order them), the rest far away.
    near = query[None, :] + rng.standard_normal((40, 384)) * 1e-6
    far = rng.standard_normal((960, 384)) * 3
    data = np.vstack([far[:500], near, far[500:]]).astype(np.float32)
    ids = [f"r{i}" for i in range(len(data))]
    exact64 = ExactTopK(query[None, :], 10, "l2").distances(data.astype(np.float64))[0]
    truth = [ids[i] for i in np.argsort(exact64, kind="stable")[:10]]
    search = ExactTopK(query[None, :], 10, "l2", watch=truth)
    for batch in batches(data, ids, 128):
        search.add(batch.column("id"), batch.column("vector"))
    assert all(i in {f"r{n}" for n in range(500, 540)} for i in search.top()[0])  # among the near ones
    assert search.recalls([truth]).tolist() == [1.0]  # the true top 10 is a perfect answer
    assert search.recalls([search.top()[0]]).tolist() == [1.0]
