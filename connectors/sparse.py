"""What stores do to sparse vectors, as transforms of canonical batches (``ImportPlan.transform``): Qdrant,
Milvus and pgvector's sparsevec keep a sparse vector sorted by index (not a loss: the bundle's are sorted
the same way); Milvus Lite and sparsevec keep no explicit zero weight (a loss: ``--allow-lossy``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aibackup.manifests.vectors import SPARSE_PREFIX, SPARSE_TYPE


def sorted_sparse_vectors(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with every sparse vector sorted by index (the batch itself when they all are)."""
    return _map_sparse(batch, keep_zeros=True)


def sparse_without_zeros(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with every sparse vector sorted by index and its zero weights left out."""
    return _map_sparse(batch, keep_zeros=False)


def _map_sparse(batch: pa.RecordBatch, *, keep_zeros: bool) -> pa.RecordBatch:
    for index, field in enumerate(batch.schema):
        if not field.name.startswith(SPARSE_PREFIX):
            continue
        cells = batch.column(index).to_pylist()
        if all(c is None or (c["indices"] == sorted(c["indices"]) and (keep_zeros or all(c["values"]))) for c in cells):
            continue
        fixed: list[dict[str, list[Any]] | None] = []
        for c in cells:
            if c is None:
                fixed.append(None)
                continue
            pairs = sorted((i, v) for i, v in zip(c["indices"], c["values"], strict=True) if keep_zeros or v)
            fixed.append({"indices": [p[0] for p in pairs], "values": [p[1] for p in pairs]})
        batch = batch.set_column(index, field, pa.array(fixed, SPARSE_TYPE))
    return batch
