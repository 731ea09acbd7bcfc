"""Search in one version of a LanceDB table, for the connector's ``search`` (:mod:`.connector`): the queries
in chunks (a multivector query alone), LanceDB's hits turned back into record ids in distance order, and, for
a table without an id column, the row positions its row ids stand for."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.lancedb.client import Database
from aibackup.connectors.lancedb.tables import Columns

#: Query rows per LanceDB search call (a multi-vector query answers all of them in one scan).
SEARCH_CHUNK = 256
#: Rows per batch of the ids-only scan that maps row ids to row positions (the export's largest batch).
ID_SCAN_ROWS = 65_536


class TableSearch:
    """Searches in the tables of `database`; keeps the row-position map of each table version it needed."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._positions: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def run(
        self,
        table: Any,
        name: str,
        columns: Columns,
        column: str,
        metric: str,
        queries: np.ndarray,
        k: int,
        *,
        multivector: bool,
    ) -> list[list[str]]:
        """Top-`k` ids per query row of `queries` on vector column `column` of `table` (opened at the version
        to search), by LanceDB's own search with `metric`."""
        matrix = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        out: list[list[str]] = []
        for start in range(0, len(matrix), 1 if multivector else SEARCH_CHUNK):
            chunk = matrix[start : start + (1 if multivector else SEARCH_CHUNK)]
            query: Any = chunk if multivector or len(chunk) > 1 else chunk[0]
            with self._database.errors("search", name):
                builder = table.search(query, vector_column_name=column).distance_type(metric).limit(k)
                if columns.id is not None:
                    found = builder.select([columns.id]).to_arrow()
                else:
                    found = builder.select([]).with_row_id(True).to_arrow()
            out += self._answers(found, columns, len(chunk) if not multivector else 1, name, table)
        return out

    def _answers(self, found: pa.Table, columns: Columns, queries: int, name: str, table: Any) -> list[list[str]]:
        if columns.id is not None:
            ids = pc.cast(found.column(columns.id), pa.string()).to_pylist()
        else:
            ids = [str(p) for p in self._position_of(name, table, found.column("_rowid"))]
        which = found.column("query_index").to_pylist() if "query_index" in found.column_names else [0] * len(ids)
        distances = found.column("_distance").to_pylist()
        answers: list[list[tuple[float, str]]] = [[] for _ in range(queries)]
        for q, d, rid in zip(which, distances, ids, strict=True):
            answers[q].append((d, rid))
        return [[rid for _, rid in sorted(row, key=lambda pair: pair[0])] for row in answers]

    def _position_of(self, name: str, table: Any, row_ids: pa.ChunkedArray) -> list[int]:
        """Row positions (in scan order of the pinned version) of LanceDB row ids, for a table without an
        id column. The map is one ids-only scan, kept for the version."""
        key = (name, int(table.version))
        if key not in self._positions:
            first = table.schema.names[0]
            parts = []
            with self._database.errors("read the row ids", name):
                for batch in table.search().select([first]).with_row_id(True).to_batches(ID_SCAN_ROWS):
                    parts.append(batch.column("_rowid").to_numpy(zero_copy_only=False))
            scanned = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
            order = np.argsort(scanned, kind="stable")
            self._positions[key] = (scanned[order], order)
        ordered, order = self._positions[key]
        wanted = row_ids.to_numpy().astype(ordered.dtype, copy=False)
        return [int(p) for p in order[np.searchsorted(ordered, wanted)]]
