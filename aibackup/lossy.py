"""What a restore's lossy mapping really changed in a bundle's records (:class:`LossTally`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import pyarrow as pa

from aibackup.connectors.base import ImportPlan
from aibackup.manifests.vectors import DOCUMENT, ID, METADATA, URI


class LossTally:
    """What the plan's lossy mapping really changes in the bundle's records (records left out, columns with
    values dropped, records whose metadata is rewritten, values of other columns changed in place: a
    document cut to the target's limit), so the report says what was lost, not only what could have been."""

    def __init__(self, plan: ImportPlan) -> None:
        self.plan = plan
        self.dropped: Counter[str] = Counter()
        self.rewritten = 0
        #: values of other columns the mapping changed in place (a document cut to the target's limit)
        self.changed: Counter[str] = Counter()
        self.records_dropped = 0
        self.examples: list[str] = []

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """`batches` as they are, tallied on the way: each against the plan's mapping of it, from the
        records in the application layout written (rewriting them into it loses nothing)."""
        for batch in batches:
            if self.plan.dropped:
                self._tally(self.plan.layout_transform(batch), self.plan.transform(batch))
            yield batch

    def _tally(self, before: pa.RecordBatch, after: pa.RecordBatch) -> None:
        self.records_dropped += before.num_rows - after.num_rows
        kept = set(after.schema.names)
        if before.num_rows != after.num_rows:
            return  # records left out: their columns no longer line up row by row
        for name in before.schema.names:
            if name not in kept:
                column = before.column(name)
                self.dropped[name] += len(column) - column.null_count
        ids: list[object] | None = None
        # The record's text is what mappings rewrite in place (metadata, a document cut short); a vector
        # column may be reordered without a loss (sparse indices sorted), a folder target's file names are
        # renamed by design, and a converted type is a mapping the plan states.
        for name in (METADATA, DOCUMENT, URI):
            if name not in kept or name not in before.schema.names:
                continue
            old_column, new_column = before.column(name), after.column(name)
            if old_column.type != new_column.type or old_column.equals(new_column):
                continue
            ids = before.column(ID).to_pylist() if ids is None else ids
            pairs = zip(old_column.to_pylist(), new_column.to_pylist(), strict=True)
            for n, (old, new) in enumerate(pairs):
                if old != new:
                    if name == METADATA:
                        self.rewritten += 1
                    else:
                        self.changed[name] += 1
                    if len(self.examples) < 3 and repr(ids[n]) not in self.examples:
                        self.examples.append(repr(ids[n]))

    def merge(self, other: LossTally) -> None:
        """Add what `other` (the same plan's tally over other batches: a partitioned restore's worker) saw."""
        self.dropped.update(other.dropped)
        self.rewritten += other.rewritten
        self.changed.update(other.changed)
        self.records_dropped += other.records_dropped
        self.examples = (self.examples + other.examples)[:3]

    def lines(self) -> tuple[str, ...]:
        lines = [f"{self.records_dropped} records left out"] if self.records_dropped else []
        lines += [f"column {name!r}: {count} values dropped" for name, count in sorted(self.dropped.items()) if count]
        lines += [f"column {name!r}: {count} values changed" for name, count in sorted(self.changed.items())]
        if self.rewritten:
            lines.append(f"metadata of {self.rewritten} records rewritten")
        if self.rewritten or self.changed:
            lines[-1] += f" (e.g. {', '.join(self.examples)})"
        return tuple(lines)
