"""Exact nearest neighbours over a stream of record batches, and the sampling of query records.

Both the backup (recording the source's search baseline) and the restore (the ``search`` check) measure an
index against the truth: the exact top-k of a few query records over every record of a dataset. Neither
may hold a dataset in memory, so both work on a stream of batches:

- :class:`QuerySampler` picks query records while they stream past: a uniform sample without replacement
  (the records with the smallest of one seeded random key per record), up to a count per vector column.
- :class:`ExactTopK` keeps the exact top-k of each query over the batches it is given, and the distances
  of any ids it was asked to watch (the answers an index gave), so one pass also settles ties: an answer
  outside the exact top-k counts when its exact distance ties the k-th.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Relative slack when an answer's distance is compared with the k-th exact one (float64 round-off).
TIE_SLACK = 1e-6


def vector_matrix(column: pa.Array, dtype: type = np.float64) -> np.ndarray:
    """The rows of a fixed-size float list column without nulls, as a matrix of `dtype`."""
    size = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(dtype, copy=False).reshape(len(column), size)


class ExactTopK:
    """The exact `k` nearest records of each query over the batches given to :meth:`add` (bounded memory:
    k ids and distances per query, plus the distances of the watched ids)."""

    def __init__(self, queries: np.ndarray, k: int, metric: str, watch: Iterable[str] = ()) -> None:
        self.q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        self.q_squares = np.einsum("ij,ij->i", self.q, self.q)
        self.q_unit = self.q / np.maximum(np.sqrt(self.q_squares), 1e-30)[:, None]
        self.k = k
        self.metric = metric
        self.best_d = np.full((len(self.q), 0), np.inf)
        self.best_ids = np.empty((len(self.q), 0), dtype=object)
        self.watched = pa.array(sorted(set(watch)), pa.string())
        #: id -> its exact distance to every query, for the watched ids met so far
        self.seen: dict[str, np.ndarray] = {}

    def distances(self, vectors: np.ndarray) -> np.ndarray:
        """Query x record distances, smaller is nearer (cosine: 1 - cosine similarity; ip: -dot)."""
        q, v = self.q, vectors
        if self.metric == "l2":
            return self.q_squares[:, None] - 2 * (q @ v.T) + np.einsum("ij,ij->i", v, v)[None, :]
        if self.metric == "ip":
            return -(q @ v.T)
        if self.metric == "cosine":
            # Divide the products by the vectors' norms rather than normalise the vectors: one pass less.
            norms = np.maximum(np.sqrt(np.einsum("ij,ij->i", v, v)), 1e-30)
            return 1.0 - (self.q_unit @ v.T) / norms[None, :]
        return np.stack([np.abs(v - row).sum(1) for row in q])  # manhattan

    def add(self, ids: pa.Array, column: pa.Array) -> None:
        """Take one batch: its ids and its vector column (nulls are records without this vector)."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if column.null_count:
            valid = column.is_valid()
            ids, column = ids.filter(valid), column.filter(valid)
        if not len(column):
            return
        d = self.distances(vector_matrix(column))
        if len(self.watched):
            for n in np.flatnonzero(pc.is_in(ids, value_set=self.watched).to_numpy(zero_copy_only=False)):
                self.seen[ids[n].as_py()] = d[:, n].copy()
        kept = self.best_d.shape[1]
        d = np.concatenate([self.best_d, d], axis=1)
        keep = min(self.k, d.shape[1])
        idx = np.argpartition(d, keep - 1, axis=1)[:, :keep]
        self.best_d = np.take_along_axis(d, idx, axis=1)
        # Positions below `kept` are the previous best, the others this batch's rows: look up only the ids
        # kept (k per query), never every id of the batch for every query.
        id_values = np.asarray(ids.to_pylist(), dtype=object)
        previous = np.take_along_axis(self.best_ids, np.minimum(idx, max(kept - 1, 0)), axis=1) if kept else None
        fresh = id_values[np.maximum(idx - kept, 0)]
        self.best_ids = fresh if previous is None else np.where(idx < kept, previous, fresh)

    def merge(self, other: ExactTopK) -> None:
        """Take in what `other` (the same queries, k, metric and watched ids) found in records this one did
        not see: a pass split over partitions gives the one pass's top-k (up to ties at the k-th)."""
        self.seen.update(other.seen)
        d = np.concatenate([self.best_d, other.best_d], axis=1)
        keep = min(self.k, d.shape[1])
        if keep == 0:
            return
        ids = np.concatenate([self.best_ids, other.best_ids], axis=1)
        idx = np.argpartition(d, keep - 1, axis=1)[:, :keep]
        self.best_d = np.take_along_axis(d, idx, axis=1)
        self.best_ids = np.take_along_axis(ids, idx, axis=1)

    def top(self) -> list[list[str]]:
        """The exact top-k ids of each query, nearest first."""
        order = np.argsort(self.best_d, axis=1, kind="stable")
        return [list(np.take(self.best_ids[qi], order[qi])) for qi in range(len(self.q))]

    def recalls(self, answers: Sequence[Sequence[str]]) -> np.ndarray:
        """Recall@k of each query's answers: the share of the exact top-k they hold, where an answer outside
        it counts when its exact distance ties the k-th (it must have been watched; an unwatched one or an
        id the stream never held is a miss). A dataset smaller than k asks for all of its records."""
        want = min(self.k, self.best_d.shape[1])
        if want == 0:
            return np.ones(len(answers))
        kth = self.best_d.max(axis=1)
        scores = np.empty(len(answers))
        for qi, ids in enumerate(answers):
            exact = set(self.best_ids[qi].tolist())
            bound = kth[qi] + TIE_SLACK * max(abs(kth[qi]), 1.0)
            hits = 0
            for rid in dict.fromkeys(ids[: self.k]):  # an id answered twice counts once
                if rid in exact or (rid in self.seen and self.seen[rid][qi] <= bound):
                    hits += 1
            scores[qi] = min(hits, want) / want
        return scores


class QuerySampler:
    """Query records sampled while a dataset streams past (see the module docstring).

    Every record draws one random key from a generator seeded with `seed`; for each dense vector column
    the records holding that vector with the `count` smallest keys are kept (ids and float32 vectors).
    The same seed over the same stream picks the same records; memory is `count` vectors per column.
    """

    def __init__(self, columns: Sequence[str], count: int, seed: int) -> None:
        self.columns = list(columns)
        self.count = count
        self.rng = np.random.default_rng(seed)
        self.keys = {c: np.empty(0) for c in self.columns}
        self.ids: dict[str, list[str]] = {c: [] for c in self.columns}
        self.vectors: dict[str, np.ndarray | None] = dict.fromkeys(self.columns)

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Pass the batches through, sampling each on the way."""
        for batch in batches:
            self.add(batch)
            yield batch

    def add(self, batch: pa.RecordBatch) -> None:
        keys = self.rng.random(batch.num_rows)
        for column in self.columns:
            kept = self.keys[column]
            threshold = np.partition(kept, self.count - 1)[self.count - 1] if len(kept) >= self.count else np.inf
            values = batch.column(column)
            candidates = keys < threshold
            if values.null_count:
                candidates &= values.is_valid().to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(candidates)
            if not len(rows):
                continue
            taken = values.take(pa.array(rows))
            new = vector_matrix(taken, np.float32)
            old = self.vectors[column]
            merged_keys = np.concatenate([kept, keys[rows]])
            merged_ids = self.ids[column] + batch.column("id").take(pa.array(rows)).to_pylist()
            merged = new if old is None else np.concatenate([old, new])
            best = np.argsort(merged_keys, kind="stable")[: self.count]
            self.keys[column] = merged_keys[best]
            self.ids[column] = [merged_ids[i] for i in best]
            self.vectors[column] = merged[best]

    def merge(self, others: Sequence[QuerySampler]) -> None:
        """Take in the samples of other streams (the partitions of one dataset, each sampled by a worker
        with a seed of its own): per column, the `count` records of smallest keys among all of them, which
        is a uniform sample of the whole as each one is of its part."""
        for other in others:
            for column in self.columns:
                vectors = other.vectors.get(column)
                if vectors is None:
                    continue
                old = self.vectors[column]
                keys = np.concatenate([self.keys[column], other.keys[column]])
                ids = self.ids[column] + other.ids[column]
                merged = vectors if old is None else np.concatenate([old, vectors])
                best = np.argsort(keys, kind="stable")[: self.count]
                self.keys[column] = keys[best]
                self.ids[column] = [ids[i] for i in best]
                self.vectors[column] = merged[best]

    def sample(self, column: str) -> tuple[list[str], np.ndarray]:
        """The sampled ids of a column and their vectors (rows in key order; empty when none held it)."""
        vectors = self.vectors[column]
        if vectors is None:
            return [], np.empty((0, 0), dtype=np.float32)
        return list(self.ids[column]), vectors
