"""The bundle format: manifest models, the canonical vectors schema, record digests and the JSON Schema.

This package imports nothing else of aibackup's, so the format can be read by other tools.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aibackup.manifests.model import (
    FORMAT_VERSION,
    BundleManifest,
    DatasetManifest,
    DenseVectorSpec,
    ManifestError,
    PartEntry,
    SparseVectorSpec,
    VectorsConfig,
)

#: The published JSON Schema of the bundle manifest, format version 1.
SCHEMA_PATH = Path(__file__).parent / "schema" / "bundle-manifest.v1.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema every manifest this version writes validates against."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


__all__ = [
    "FORMAT_VERSION",
    "SCHEMA_PATH",
    "BundleManifest",
    "DatasetManifest",
    "DenseVectorSpec",
    "ManifestError",
    "PartEntry",
    "SparseVectorSpec",
    "VectorsConfig",
    "json_schema",
]
