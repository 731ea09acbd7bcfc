"""The live records of a chained dataset (the format: :mod:`aibackup.manifests.chain`).

Every record of a chain has an *ordinal*: its position among all the chain's record parts, in order (part
*p*, row *r* is ``starts[p] + r``). A link's record index lists its records in the same order, so the
ordinals number the index rows too. The live dataset at a link is every ordinal up to it less those its
tombstones and the earlier links' remove; :class:`Removed` holds those, sorted, and tells each batch of a
part (or of an index part) which of its rows to keep. Memory follows the records removed over the chain,
not the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from aibackup.errors import IntegrityError
from aibackup.manifests.model import DatasetManifest, PartEntry


def part_starts(dataset: DatasetManifest) -> np.ndarray:
    """The ordinal of the first record of each of the dataset's record parts, and the total at the end."""
    return np.concatenate([[0], np.cumsum([p.rows for p in dataset.parts], dtype=np.int64)])


class Removed:
    """The ordinals a chain's tombstones remove from its live dataset (sorted, each once)."""

    def __init__(self, ordinals: np.ndarray) -> None:
        self.ordinals = ordinals

    @classmethod
    def of(cls, dataset: DatasetManifest, tombstones: Sequence[tuple[int, pa.Table]]) -> Removed:
        """From each link's tombstone tables (``(link number, table)``), checked against the chain: a
        tombstone must name a record of an earlier link, each record is removed at most once, and each
        link removes as many records as its manifest says. IntegrityError names the bundle otherwise."""
        starts = part_starts(dataset)
        first_part = np.concatenate([[0], np.cumsum([link.parts for link in dataset.chain])])
        pieces: list[np.ndarray] = []
        deleted = {n: 0 for n in range(len(dataset.chain))}
        counted = {n: 0 for n in range(len(dataset.chain))}
        for n, table in tombstones:
            link = dataset.chain[n]
            where = f"the tombstones of bundle {link.bundle} (collection {dataset.name!r})"
            part = table.column("part").to_numpy().astype(np.int64)
            row = table.column("row").to_numpy().astype(np.int64)
            if len(part) and (part.min() < 0 or part.max() >= first_part[n] or row.min() < 0):
                raise IntegrityError(f"damaged chain: {where} name a record outside the links before it")
            if len(part) and (row >= starts[part + 1] - starts[part]).any():
                raise IntegrityError(f"damaged chain: {where} name a row past the end of its part")
            pieces.append(starts[part] + row)
            deleted[n] += int(np.count_nonzero(table.column("deleted").to_numpy(zero_copy_only=False)))
            counted[n] += len(part)
        for n, link in enumerate(dataset.chain):
            if (counted[n], deleted[n]) != (link.changed + link.deleted, link.deleted):
                raise IntegrityError(
                    f"damaged chain: the tombstones of bundle {link.bundle} (collection {dataset.name!r}) do not "
                    "match its manifest"
                )
        ordinals = np.sort(np.concatenate(pieces)) if pieces else np.empty(0, dtype=np.int64)
        if len(ordinals) > 1 and (np.diff(ordinals) == 0).any():
            raise IntegrityError(f"damaged chain: collection {dataset.name!r} has a record removed twice")
        return cls(ordinals)

    def share(self, dataset: DatasetManifest, parts: Sequence[PartEntry]) -> Removed:
        """What this removes from `parts`, contiguous record parts of `dataset` (a partition's share;
        the ordinals stay the dataset's)."""
        starts = part_starts(dataset)
        first = dataset.parts.index(parts[0])
        lo, hi = np.searchsorted(self.ordinals, [starts[first], starts[first + len(parts)]])
        return Removed(self.ordinals[lo:hi].copy())

    def keep(self, start: int, rows: int) -> np.ndarray | None:
        """Which of the `rows` records from ordinal `start` on are live (None: all of them)."""
        lo, hi = np.searchsorted(self.ordinals, [start, start + rows])
        if lo == hi:
            return None
        mask = np.ones(rows, dtype=bool)
        mask[self.ordinals[lo:hi] - start] = False
        return mask
