"""Dataset kinds: what a bundle's datasets can hold, and the canonical Arrow schema of each.

``vectors`` derives its schema from the collection's configuration (:mod:`aibackup.manifests.vectors`); the record
kinds of :mod:`aibackup.manifests.records` have one fixed schema each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from aibackup.manifests.model import ManifestError, VectorsConfig
from aibackup.manifests.records import SCHEMAS
from aibackup.manifests.vectors import arrow_schema as vectors_schema

KINDS = ("vectors", *SCHEMAS)


def arrow_schema(kind: str, config: VectorsConfig | Mapping[str, Any]) -> pa.Schema:
    """The canonical schema of a dataset of `kind` with this configuration. ManifestError for an unknown
    kind (a newer aibackup wrote it)."""
    if kind == "vectors":
        cfg = config if isinstance(config, VectorsConfig) else VectorsConfig.from_json(config)
        return vectors_schema(cfg)
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise ManifestError(f"unknown dataset kind {kind!r}") from None
