"""Golden queries (aibackup.yaml ``golden_queries``): a user's query vectors with the ids they expect in
the top k, asked of the source at backup (the search baseline keeps its recall) and of the restored store
in the restore-test drill, which compares the two.

File: a JSON list, or JSON lines, of ``{"collection", "vector": [floats], "expected": [ids],
"vector_name"?}``; k is the number of expected ids of each query.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aibackup.connectors.base import VectorConnector
from aibackup.errors import UsageError, first_line


@dataclass(frozen=True)
class GoldenQuery:
    collection: str
    vector: tuple[float, ...]
    expected: tuple[str, ...]
    vector_name: str = ""


@dataclass(frozen=True)
class GoldenFile:
    """The queries of one golden file, and the sha256 of its bytes (a baseline holds for this file only)."""

    path: str
    sha256: str
    queries: tuple[GoldenQuery, ...]

    def collections(self) -> list[str]:
        return sorted({q.collection for q in self.queries})

    def of(self, collection: str) -> list[GoldenQuery]:
        return [q for q in self.queries if q.collection == collection]


def load(path: str) -> GoldenFile:
    """Read a golden file. UsageError naming the file (and the query) when it cannot be read or used."""
    try:
        data = Path(path).read_bytes()
        text = data.decode("utf-8")
        items = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(x) for x in text.splitlines() if x.strip()]
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read golden queries {path}: {first_line(exc)}") from None
    except RecursionError:  # unreadable like the rest: the backup notes it rather than failing every source
        raise UsageError(f"cannot read golden queries {path}: JSON nested too deeply to read") from None
    if not isinstance(items, list):
        raise UsageError(f"golden queries {path}: expected a JSON list or JSON lines of queries")
    if not items:
        raise UsageError(f"golden queries {path} holds no query")
    queries = tuple(_query(item, n, path) for n, item in enumerate(items, 1))
    return GoldenFile(path, hashlib.sha256(data).hexdigest(), queries)


def _query(item: Any, n: int, path: str) -> GoldenQuery:
    vector = item.get("vector") if isinstance(item, dict) else None
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("collection"), str)
        or not isinstance(vector, list)
        or not vector
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector)
        or not isinstance(item.get("expected"), list)
        or not item["expected"]
        or not isinstance(item.get("vector_name", ""), str)
    ):
        raise UsageError(
            f"golden queries {path}: query {n} needs a collection, a non-empty numeric vector and expected ids"
        )
    return GoldenQuery(
        collection=item["collection"],
        vector=tuple(float(x) for x in vector),
        expected=tuple(str(x) for x in item["expected"]),
        vector_name=item.get("vector_name", ""),
    )


def recalls(connector: VectorConnector, collection: str, queries: Sequence[GoldenQuery]) -> list[float]:
    """Each query's share of its expected ids found in the top len(expected) that `collection` answers, in
    the file's order. Raises what the connector's search raises (AibackupError)."""
    scores = []
    for q in queries:
        k = len(q.expected)
        got = connector.search(collection, q.vector_name, np.asarray([q.vector], dtype=np.float32), k)
        scores.append(len(set(got[0][:k]) & set(q.expected)) / k)
    return scores
