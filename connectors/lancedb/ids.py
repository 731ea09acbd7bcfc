"""The unique-id proof of a LanceDB backup: restores rely on ids being unique, and LanceDB does not enforce
it. 8 bytes per record (the 64-bit hash of its canonical id) are sorted; equal hashes are confirmed, or
not, by an id-only pass over the version."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.lancedb.client import Database
from aibackup.errors import SourceDataError

#: Rows per batch of an id-only pass.
ID_BATCH_ROWS = 65_536


def hashes(ids: Iterable[str]) -> np.ndarray:
    """The 64-bit hashes of canonical ids (text; integers in decimal)."""
    return np.fromiter(map(hash, ids), dtype=np.int64)


def scan(table: Any, column: str) -> Iterator[str]:
    """The canonical ids of `table` (at the version it was opened at), by an id-only pass."""
    for batch in table.search().select([column]).to_batches(ID_BATCH_ROWS):
        yield from pc.cast(batch.column(0), pa.string()).to_pylist()


def check_unique(database: Database, table: Any, column: str, name: str, hashed: np.ndarray) -> None:
    """SourceDataError naming up to three repeated ids of `table`, whose ids hash to `hashed`."""
    hashed = np.sort(hashed)
    same = hashed[1:] == hashed[:-1]
    if not same.any():
        return
    suspects = set(hashed[1:][same].tolist())
    seen: Counter[str] = Counter()
    with database.errors("read the ids", name):
        for rid in scan(table, column):
            if hash(rid) in suspects:
                seen[rid] += 1
    repeated = [f"{rid!r} ({n} rows)" for rid, n in seen.most_common(3) if n > 1]
    if repeated:
        raise SourceDataError(
            f"LanceDB table {name!r} in {database.where}: id column {column!r} is not unique "
            f"({', '.join(repeated)}); remove the copies, or name a unique column with ?id=COLUMN"
        )
