"""The bundle format: manifest models, the canonical vectors schema, record digests and the JSON Schema.

This package imports nothing else of aibackup's, so the format can be read by other tools.
"""

from __future__ import annotations

from manifests.model import (
    FORMAT_VERSION,
    BundleManifest,
    DatasetManifest,
    DenseVectorSpec,
    ManifestError,
    PartEntry,
    SparseVectorSpec,
    VectorsConfig,
)

__all__ = [
    "FORMAT_VERSION",
    "BundleManifest",
    "DatasetManifest",
    "DenseVectorSpec",
    "ManifestError",
    "PartEntry",
    "SparseVectorSpec",
    "VectorsConfig",
]
