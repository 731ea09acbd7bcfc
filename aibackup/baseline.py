"""Recording a vector dataset's search baseline at backup (the format: :mod:`aibackup.manifests.baseline`).

While the records stream into the bundle, :class:`~aibackup.nearest.QuerySampler` keeps a seeded uniform
sample of query records per dense vector (bounded: `queries` vectors each). After the stream, with the
source still open:

1. the source store is asked for each query's top-k through the connector's own search (``search``),
   unless its search is an exact scan (``search_index(...)["exact"]``: Qdrant local mode), whose answers
   are the exact search's by definition and cost ~20 ms per query there;
2. one pass over the dataset's parts just written, reading only the id and the sampled vector columns,
   finds the exact top-k of every query and the exact distances of the source's answers (ties count);
3. the source's recall@k, its answers and the query ids go into the manifest.

An incremental backup (aibackup.incremental) skips step 2 where the source was asked: the pass would read
every link of the chain after the source, the one cost of such a backup that grows with the dataset rather
than the change. A restore measures the source's answers against an exact search over what it restored in
any case; only the recall the source reached at backup (shown by ``aibackup show``) is then not recorded.

The pass reads back what was written rather than the source: a query is known only once its record has
streamed past, and the exact search needs every record after that. Reading the parts back costs a local
read of the vector columns (the benchmark states it); on S3 it downloads them again. A failed search of
one vector is a note in the baseline, not a failed backup: that vector's restores use the absolute rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from aibackup.bundle_reader import BundleReader
from aibackup.connectors.base import Connector, DatasetDescription, VectorConnector
from aibackup.errors import AibackupError
from aibackup.golden import GoldenFile, recalls
from aibackup.manifests.baseline import GoldenBaseline, SearchBaseline, VectorBaseline
from aibackup.manifests.model import DatasetManifest, DenseVectorSpec
from aibackup.manifests.vectors import ID, dense_column
from aibackup.nearest import ExactTopK, QuerySampler
from aibackup.pipeline import prefetch

K = 10
#: Rows per batch of the exact pass over the parts just written.
SETTLE_ROWS = 2048


def seed_for(bundle_id: str) -> int:
    """The sampling seed of a bundle: derived from its id, so each night samples other records, and
    recorded, so the sample can be drawn again from the same stream."""
    return int.from_bytes(hashlib.sha256(bundle_id.encode("utf-8")).digest()[:4], "big")


def searchable(description: DatasetDescription) -> list[DenseVectorSpec]:
    """The dense vectors a baseline covers: single vectors (multivectors are proved by their digests)."""
    if description.kind != "vectors":
        return []
    return description.config.single_vectors()


@dataclass
class _Probe:
    """One dense vector's sampled queries on their way to the baseline."""

    spec: DenseVectorSpec
    ids: list[str]
    search: ExactTopK
    answers: list[list[str]] | None  # the source's; None when its search is exact (then the exact top-k)
    index: dict[str, Any]


class BaselineRecorder:
    """Samples one dataset's queries while it streams (:meth:`add`), asks the source (:meth:`ask`), then,
    the source closed, records the baseline (:meth:`settle`). For a store that is not a vector store, or
    with `queries` 0, they do nothing."""

    def __init__(self, connector: Connector, description: DatasetDescription, queries: int, seed: int) -> None:
        self.connector = connector if isinstance(connector, VectorConnector) else None
        self.description = description
        self.specs = searchable(description) if queries and self.connector else []
        self.seed = seed
        self.sampler = QuerySampler([dense_column(s.name) for s in self.specs], queries, seed)
        self.probes: dict[str, _Probe] = {}
        self.golden: GoldenBaseline | None = None
        self.notes: list[str] = []
        #: the exact pass spread over a cluster (a partitioned backup: ``exact_tasks.exact_on`` less its last
        #: three arguments); None: :meth:`settle` reads the parts itself
        self.spread: Callable[[DatasetManifest, list[ExactTopK], list[str]], object] | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        if self.specs:
            self.sampler.add(batch)

    def ask(self, golden: GoldenFile | None = None) -> None:
        """While the source is open, after its export: ask it the sampled queries (unless its search is an
        exact scan) and the golden queries of this collection. A search that fails is a note."""
        connector = self.connector
        if connector is None:
            return
        name = self.description.name
        for spec in self.specs:
            column = dense_column(spec.name)
            ids, vectors = self.sampler.sample(column)
            if not ids:
                continue  # no record holds this vector
            index = dict(connector.search_index(self.description, spec.name))
            answers = None
            if not index.get("exact"):
                try:
                    answers = connector.search(name, spec.name, vectors, K)
                except AibackupError as exc:
                    self.notes.append(f"vector {spec.name!r}: the source could not be searched: {exc}")
                    continue
            watch = {rid for row in answers or () for rid in row}
            self.probes[column] = _Probe(spec, ids, ExactTopK(vectors, K, spec.distance, watch), answers, index)
        self.golden = self._golden(connector, golden, self.notes)

    def settle(
        self, reader: BundleReader, dataset: DatasetManifest, *, measure: bool = True
    ) -> tuple[SearchBaseline | None, list[str]]:
        """After :meth:`ask`, with the source closed (its threads and memory no longer compete): one pass over
        the vectors `dataset` wrote into `reader`'s repository for the exact top k; the baseline and the
        notes for the user. None when there is nothing to record (no dense vector, ``--queries 0``, no
        golden queries).

        Without `measure` (an incremental backup, whose pass would read every link of the chain) the pass
        runs only for vectors whose source search is an exact scan (their answers are the pass's); the
        others keep the source's answers with their recall not measured (None)."""
        passed = {column: p for column, p in self.probes.items() if measure or p.answers is None}
        if passed and self.spread is not None:
            self.spread(dataset, [p.search for p in passed.values()], list(passed))
        elif passed:
            # Read ahead in a thread: decoding the parts and the distances (numpy) both release the GIL. Small
            # batches keep the float64 copies small (8192-row batches raised a 100k x 384 backup's peak RSS
            # by 45-95 MB; at 2048 rows it is the peak of a backup without a baseline).
            batches = reader.batches(dataset, batch_rows=SETTLE_ROWS, columns=[ID, *passed])
            for batch in prefetch(batches, depth=1):
                for column, probe in passed.items():
                    probe.search.add(batch.column(ID), batch.column(column))
        entries = []
        for column, probe in self.probes.items():
            got = probe.answers if probe.answers is not None else probe.search.top()
            recall = round(float(np.mean(probe.search.recalls(got))), 6) if column in passed else None
            entries.append(
                VectorBaseline(
                    vector=probe.spec.name,
                    distance=probe.spec.distance,
                    queries=tuple(probe.ids),
                    answers=tuple(tuple(a[:K]) for a in got),
                    recall=recall,
                    index=probe.index,
                )
            )
        if not entries and self.golden is None and not self.notes:
            return None, []
        baseline = SearchBaseline(
            seed=self.seed, k=K, vectors=tuple(entries), golden=self.golden, notes=tuple(self.notes)
        )
        return baseline, [f"{self.description.name}: search baseline: {n}" for n in self.notes]

    def _golden(self, connector: VectorConnector, golden: GoldenFile | None, notes: list[str]) -> GoldenBaseline | None:
        """The source's recall of the golden queries of this collection, if the config names any."""
        queries = golden.of(self.description.name) if golden else []
        if not golden or not queries:
            return None
        try:
            values = recalls(connector, self.description.name, queries)
        except AibackupError as exc:
            notes.append(f"golden queries: the source could not be searched: {exc}")
            return None
        each = tuple(round(v, 6) for v in values)
        return GoldenBaseline(golden.sha256, len(queries), round(sum(values) / len(values), 6), each)
