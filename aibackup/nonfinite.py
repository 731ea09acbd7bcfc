"""Dense vectors holding NaN or Infinity, counted while a backup streams its records.

A store that holds them (LanceDB, Qdrant local mode) is backed up as it is: the bundle keeps every record
exactly. But no vector store takes such a vector back (Chroma, Qdrant, LanceDB, Milvus and pgvector all
refuse it, and ``--allow-lossy`` maps none away), so a restore of that collection is refused. The backup
says so at once, in a note, rather than leaving it to the night of the restore.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from aibackup.manifests.vectors import DENSE_PREFIX


class NonFinite:
    """Counts, per dense vector column, the records whose vector holds NaN or Infinity (:meth:`add` watches
    each canonical batch; :meth:`notes` words the result)."""

    def __init__(self) -> None:
        self.found: Counter[str] = Counter()

    def add(self, batch: pa.RecordBatch) -> None:
        for i, field in enumerate(batch.schema):
            typ = field.type
            if not (field.name.startswith(DENSE_PREFIX) and pa.types.is_fixed_size_list(typ)):
                continue  # multivectors and sparse vectors: left to the restore's own checks
            column = batch.column(i)
            size = typ.list_size
            values = column.values.slice(column.offset * size, len(column) * size)
            rows = values.to_numpy(zero_copy_only=False).reshape(len(column), size)
            bad = ~np.isfinite(rows).all(axis=1)
            if column.null_count:
                bad &= column.is_valid().to_numpy(zero_copy_only=False)
            if count := int(bad.sum()):
                self.found[field.name] += count

    def merge(self, others: list[NonFinite]) -> None:
        """Add what other counters saw (the partitions of one dataset, counted on their workers)."""
        for other in others:
            self.found.update(other.found)

    def notes(self) -> list[str]:
        """One line per vector column that holds any (none when every vector is finite)."""
        return [
            f"{count} record(s) hold NaN or Infinity in {column!r}: backed up as they are, but no vector store "
            "takes such a vector back, so a restore of this collection is refused"
            for column, count in sorted(self.found.items())
        ]
