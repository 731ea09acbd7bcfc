"""Deterministic test records: realistic shapes (unicode, emoji, nested metadata, ints vs floats, nulls)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from aibackup.connectors.base import DatasetDescription
from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import arrow_schema, metadata_json

WORDS = ["alpha", "βeta", "gamma", "дельта", "epsilon", "ζήτα", "eta", "θ", "iota", "kappa", "🙂", "naïve"]


def vectors(n: int, dim: int, seed: int = 0, normalise: bool = False) -> np.ndarray:
    """Correlated embeddings (a low-rank mixture plus noise), float32."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((8, dim))
    v = rng.standard_normal((n, 8)) @ basis + 0.3 * rng.standard_normal((n, dim))
    v = v.astype(np.float32)
    if normalise:
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def metadata(i: int) -> dict[str, Any] | None:
    """Flat metadata that every backend holds (Chroma's rules): str, int, float, bool; some records none."""
    if i % 7 == 3:
        return None
    return {
        "n": i,
        "score": i / 3,
        "whole_float": float(i),
        "even": i % 2 == 0,
        "word": WORDS[i % len(WORDS)] + " ✓",
    }


def chroma_records(n: int, dim: int, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for chromadb's collection.add()."""
    return {
        "ids": [f"doc-{i:05d}" for i in range(n)],
        "embeddings": vectors(n, dim, seed),
        "documents": [None if i % 5 == 4 else f"document {i}: {WORDS[i % len(WORDS)]} 🚀" for i in range(n)],
        "metadatas": [metadata(i) for i in range(n)],
        "uris": [None if i % 3 else f"s3://bucket/doc-{i}.txt" for i in range(n)],
    }


def config(
    dim: int = 8, distance: str = "l2", named: tuple[str, ...] = (), sparse: tuple[str, ...] = ()
) -> VectorsConfig:
    dense = tuple(DenseVectorSpec(name, dim, distance) for name in ("", *named) if name != "" or not named)
    return VectorsConfig(dense=dense, sparse=tuple(SparseVectorSpec(s) for s in sparse))


def canonical_batch(cfg: VectorsConfig, start: int, n: int, seed: int = 0) -> pa.RecordBatch:
    """A canonical batch of records start..start+n-1 for `cfg` (deterministic per record index)."""
    schema = arrow_schema(cfg)
    columns: dict[str, Any] = {"id": [f"rec-{i:06d}" for i in range(start, start + n)]}
    for spec in cfg.dense:
        col = "vector" if spec.name == "" else f"vector:{spec.name}"
        v = np.stack([vectors(1, spec.size, seed * 1_000_003 + i)[0] for i in range(start, start + n)])
        columns[col] = pa.FixedSizeListArray.from_arrays(pa.array(v.ravel(), pa.float32()), spec.size)
    for s in cfg.sparse:
        columns[f"sparse:{s.name}"] = [
            {"indices": [i % 5, 7 + i % 3], "values": [0.5, i / 7]} for i in range(start, start + n)
        ]
    columns["document"] = [f"doc {i} {WORDS[i % len(WORDS)]}" if i % 4 else None for i in range(start, start + n)]
    columns["uri"] = [None] * n
    columns["metadata"] = [metadata_json(metadata(i)) for i in range(start, start + n)]
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def description(name: str, cfg: VectorsConfig, rows: int) -> DatasetDescription:
    return DatasetDescription(name=name, config=cfg, rows=rows)
