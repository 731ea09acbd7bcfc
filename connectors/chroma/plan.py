"""How a bundle's collection becomes a Chroma collection, decided from its config alone: which vector is
kept, the distance, the collection metadata and configuration, the route Chroma is created by, and what
the lossy mapping drops (refused unless --allow-lossy). The connector adds what depends on the target's
existing collection (:mod:`.connector`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aibackup.connectors.base import DatasetDescription
from aibackup.connectors.chroma import metadata as cm
from aibackup.errors import UnsupportedFeatureError
from aibackup.manifests.model import DenseVectorSpec


@dataclass(frozen=True)
class Shape:
    keep: DenseVectorSpec | None  # the one dense vector Chroma holds (None: none)
    distance: str
    metadata: dict[str, Any]  # the collection metadata to create it with
    configuration: Mapping[str, Any] | None
    schema: Mapping[str, Any] | None
    route: str  # how to create it: "configuration", "schema" or "metadata" (cm.create_route)
    dropped: tuple[str, ...]  # the lossy mappings applied


def chroma_shape(source: DatasetDescription, dest: str, allow_lossy: bool) -> Shape:
    """The Chroma collection `dest` for bundle collection `source`. Raises UnsupportedFeatureError naming
    the collection and the feature Chroma cannot hold, unless `allow_lossy` (then listed in ``dropped``)."""
    cfg = source.config
    dropped: list[str] = []

    def lossy(feature: str, mapping: str) -> None:
        if not allow_lossy:
            raise UnsupportedFeatureError(
                f"collection {dest!r}: Chroma cannot hold {feature}; --allow-lossy would {mapping}"
            )
        dropped.append(f"{feature}: {mapping}")

    plain = cfg.single_vectors()
    keep = next((d for d in plain if d.name == ""), plain[0] if plain else None)
    multi = [d.name for d in cfg.dense if d.multivector]
    if multi and keep is None:
        raise UnsupportedFeatureError(
            f"collection {dest!r}: Chroma cannot hold multivectors "
            f"({', '.join(map(repr, multi))}) and no plain vector remains"
        )
    if multi and keep is not None:
        lossy(f"multivectors {', '.join(map(repr, multi))}", f"drop them and keep vector {keep.name!r}")
    others = [d.name for d in plain if d is not keep]
    if others and keep is not None:
        lossy(
            f"more than one vector per record ({', '.join(map(repr, others))} besides {keep.name!r})",
            f"keep only {keep.name!r}",
        )
    if cfg.sparse:
        lossy(f"sparse vectors ({', '.join(repr(s.name) for s in cfg.sparse)})", "drop them")
    if keep is None and source.rows:
        raise UnsupportedFeatureError(
            f"collection {dest!r}: Chroma needs a dense vector for every record and the source has none"
        )
    distance = keep.distance if keep else "l2"
    if distance == "manhattan":
        lossy("distance manhattan", "use l2")
        distance = "l2"

    native = dict(cfg.native or {})
    if native.get("kind") == "chroma":
        metadata = dict(native.get("metadata") or {})
        configuration, schema = native.get("configuration"), native.get("schema")
        route = cm.create_route(configuration, schema, metadata)
    else:
        metadata = dict(cfg.metadata or {})
        problems = cm.collection_problems(metadata)
        if problems:
            lossy(
                f"collection metadata {'; '.join(problems)}",
                "drop nulls and refused keys and write other values as JSON text",
            )
            metadata = cm.lossy_collection(metadata) or {}
        if keep is not None and keep.name:
            metadata[cm.VECTOR_NAME_KEY] = keep.name
        configuration, schema = cm.cross_kind_configuration(distance, cfg.hnsw), None
        route = "configuration"
    if allow_lossy:
        dropped.append(
            "record metadata Chroma cannot hold, if any: nulls and refused keys dropped; "
            "nested objects, empty/mixed lists, NaN/Infinity as JSON text; ints beyond "
            "int64 as decimal strings; -0.0 as 0.0"
        )
    return Shape(keep, distance, metadata, configuration, schema, route, tuple(dropped))


def check_merge(model: Any, store: str, keep: DenseVectorSpec | None, distance: str) -> None:
    """A merge into an existing Chroma collection (its model) must agree on dimension, distance and vector
    name: UnsupportedFeatureError otherwise."""
    metadata = model.metadata or {}
    have = {
        "dimension": model.dimension,  # None until the first record: any dimension fits
        "distance": cm.SPACES.get(cm.space_of(model.configuration_json, metadata)),
        "vector name": metadata.get(cm.VECTOR_NAME_KEY, ""),
    }
    ours = {
        "dimension": keep.size if keep else None,
        "distance": distance,
        "vector name": keep and keep.name,
    }
    for what, theirs in have.items():
        if keep is not None and theirs is not None and theirs != ours[what]:
            raise UnsupportedFeatureError(
                f"collection {model.name!r} in {store} has {what} {theirs!r}, the bundle "
                f"{ours[what]!r}: cannot merge; restore with --mode overwrite or into another collection"
            )
