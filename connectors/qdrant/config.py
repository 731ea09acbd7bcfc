"""Qdrant collection configuration <-> :class:`aibackup.manifests.model.VectorsConfig` (see :mod:`.connector`).

:func:`describe_config` reads a ``CollectionInfo`` into the neutral config plus ``native`` (everything needed
to recreate the collection in Qdrant, as JSON); :func:`plan_collection` turns a bundle's config into the
arguments of ``create_collection`` and ``create_payload_index``: from ``native`` when the bundle came from
Qdrant, from the neutral fields otherwise. qdrant-client is imported inside the functions (optional extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aibackup.errors import UnsupportedFeatureError
from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig

if TYPE_CHECKING:
    from qdrant_client.http import models as qm

DISTANCES = {"Cosine": "cosine", "Euclid": "l2", "Dot": "ip", "Manhattan": "manhattan"}
QDRANT_DISTANCES = {neutral: qdrant for qdrant, neutral in DISTANCES.items()}
NEUTRAL_DATATYPES = ("float32", "float16", "uint8")
#: Settings a server applies and local mode ignores (its CollectionInfo reports fixed placeholders):
#: create_collection keyword -> what to call it in a note.
SERVER_ONLY = {
    "hnsw_config": "HNSW",
    "optimizers_config": "optimizer",
    "wal_config": "WAL",
    "quantization_config": "quantization",
    "strict_mode_config": "strict mode",
}


# --- describe ------------------------------------------------------------------------------------------


def describe_config(info: qm.CollectionInfo, *, local: bool) -> VectorsConfig:
    """The neutral config of a collection, with ``native`` = ``{"kind": "qdrant", "mode": "local"|"server",
    "config": CollectionConfig JSON, "payload_schema": {field: {"data_type", "params"}}}``.

    In local mode only the vector params and metadata are real (hnsw, optimizer and WAL figures are
    placeholders and payload indexes are not kept), so they are left out rather than recorded as settings.
    """
    config = info.config
    params = config.params
    vectors = params.vectors
    named: Mapping[str, qm.VectorParams] = (
        {} if vectors is None else vectors if isinstance(vectors, dict) else {"": vectors}
    )
    dense = tuple(_dense_spec(name, named[name]) for name in sorted(named))
    sparse = tuple(
        SparseVectorSpec(
            name=name,
            modifier=None if sp.modifier is None or sp.modifier.value == "none" else sp.modifier.value,
            options={"index": sp.index.model_dump(mode="json", exclude_none=True)} if sp.index else {},
        )
        for name, sp in sorted((params.sparse_vectors or {}).items())
    )
    schema = {} if local else info.payload_schema
    indexes = tuple(_payload_index(name, schema[name]) for name in sorted(schema))
    if local:
        native_config: dict[str, Any] = {"params": params.model_dump(mode="json", exclude_none=True)}
        if config.metadata is not None:
            native_config["metadata"] = config.metadata
    else:
        native_config = config.model_dump(mode="json", exclude_none=True)
    native = {
        "kind": "qdrant",
        "mode": "local" if local else "server",
        "config": native_config,
        "payload_schema": {
            name: index.model_dump(mode="json", exclude_none=True, exclude={"points"})
            for name, index in sorted(schema.items())
        },
    }
    hnsw = None if local else {"m": config.hnsw_config.m, "ef_construction": config.hnsw_config.ef_construct}
    return VectorsConfig(
        dense=dense,
        sparse=sparse,
        metadata=dict(config.metadata) if config.metadata else None,
        hnsw=hnsw,
        payload_indexes=indexes,
        native=native,
    )


def _dense_spec(name: str, vp: qm.VectorParams) -> DenseVectorSpec:
    options = vp.model_dump(mode="json", exclude_none=True, exclude={"size", "distance", "datatype"})
    datatype = "float32" if vp.datatype is None else vp.datatype.value
    if datatype not in NEUTRAL_DATATYPES:
        # A storage format the neutral model has no name for: the bundle holds float32 values anyway.
        options["datatype"], datatype = datatype, "float32"
    return DenseVectorSpec(
        name=name,
        size=vp.size,
        distance=DISTANCES[vp.distance.value],
        multivector=vp.multivector_config is not None,
        datatype=datatype,
        options=options,
    )


def _payload_index(name: str, info: qm.PayloadIndexInfo) -> dict[str, Any]:
    params = {} if info.params is None else info.params.model_dump(mode="json", exclude_none=True)
    params.pop("type", None)
    return {"field": name, "type": info.data_type.value, **params}


def vector_shape(config: VectorsConfig) -> tuple[frozenset[tuple[str, int, str, bool]], frozenset[str]]:
    """What must agree between a bundle and an existing collection to merge into it."""
    return (
        frozenset((d.name, d.size, d.distance, d.multivector) for d in config.dense),
        frozenset(s.name for s in config.sparse),
    )


# --- create --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionPlan:
    """How to create a collection: ``create_collection`` kwargs, payload indexes, and what the collection
    will look like (``target``). ``dropped``: lost under --allow-lossy; ``notes``: settings the target
    ignores that hold no data (tuning), reported but never refused."""

    target: VectorsConfig
    create_kwargs: dict[str, Any]
    payload_indexes: tuple[tuple[str, Any], ...] = ()
    params_update: dict[str, Any] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def plan_collection(source: VectorsConfig, collection: str, *, local_target: bool, allow_lossy: bool) -> CollectionPlan:
    """Create arguments for `source` as Qdrant collection `collection`. Raises UnsupportedFeatureError
    (naming the collection and the feature) for what Qdrant cannot hold unless `allow_lossy`."""
    native = source.native
    if native is not None and native.get("kind") == "qdrant":
        try:
            plan = _from_native(source, native, collection, allow_lossy)
        except ValueError as exc:  # pydantic: settings this qdrant-client does not know
            first = str(exc).splitlines()[:3]
            if not allow_lossy:
                raise UnsupportedFeatureError(
                    f"collection {collection!r}: the bundle's Qdrant settings are not understood by this "
                    f"qdrant-client ({' '.join(first)}); upgrade qdrant-client, or use --allow-lossy to "
                    f"create the collection from the neutral config"
                ) from None
            plan = _from_neutral(source, collection, allow_lossy)
            plan = replace(plan, dropped=(*plan.dropped, "Qdrant-specific collection settings"))
    else:
        plan = _from_neutral(source, collection, allow_lossy)
    if local_target:
        ignored = [label for k, label in SERVER_ONLY.items() if plan.create_kwargs.get(k) is not None]
        if plan.payload_indexes:
            ignored.append("payload indexes")
        notes = plan.notes
        if ignored:
            notes = (*notes, f"Qdrant local mode ignores {', '.join(ignored)} settings (no data)")
        plan = replace(plan, target=replace(plan.target, hnsw=None, payload_indexes=()), notes=notes, params_update={})
    return plan


#: CollectionConfig field -> create_collection keyword.
_KWARG = {"optimizer_config": "optimizers_config"}


def _from_native(
    source: VectorsConfig, native: Mapping[str, Any], collection: str, allow_lossy: bool
) -> CollectionPlan:
    from pydantic import TypeAdapter
    from qdrant_client.http import models

    config = native.get("config") or {}
    params = models.CollectionParams.model_validate(config.get("params") or {})
    dropped: list[str] = []
    kwargs: dict[str, Any] = {
        "vectors_config": params.vectors if params.vectors is not None else {},
        "sparse_vectors_config": params.sparse_vectors,
        "shard_number": params.shard_number,
        "sharding_method": params.sharding_method,
        "replication_factor": params.replication_factor,
        "write_consistency_factor": params.write_consistency_factor,
        "on_disk_payload": params.on_disk_payload,
        "payload": params.payload,
        "id_tracker": params.id_tracker,
        "metadata": config.get("metadata"),
    }
    if params.sharding_method == models.ShardingMethod.CUSTOM:
        # Shard keys are per point and not part of the bundle: custom sharding cannot be rebuilt.
        if not allow_lossy:
            raise UnsupportedFeatureError(
                f"collection {collection!r} uses Qdrant custom sharding, whose shard keys a bundle does not "
                f"hold; use --allow-lossy to restore it with automatic sharding"
            )
        kwargs["sharding_method"] = kwargs["shard_number"] = None
        dropped.append("custom sharding (restored with automatic sharding)")
    diffs: dict[str, Any] = {
        "hnsw_config": models.HnswConfigDiff,
        "optimizer_config": models.OptimizersConfigDiff,
        "wal_config": models.WalConfigDiff,
        "strict_mode_config": models.StrictModeConfig,
    }
    for key, model in diffs.items():
        if config.get(key) is not None:
            kwargs[_KWARG.get(key, key)] = model.model_validate(config[key])
    if config.get("quantization_config") is not None:
        kwargs["quantization_config"] = TypeAdapter(models.QuantizationConfig).validate_python(
            config["quantization_config"]
        )
    indexes = []
    for name, index in (native.get("payload_schema") or {}).items():
        info = models.PayloadIndexInfo.model_validate({**index, "points": 0})
        indexes.append((name, info.params if info.params is not None else info.data_type))
    update = {
        k: getattr(params, k)
        for k in ("read_fan_out_factor", "read_fan_out_delay_ms")
        if getattr(params, k, None) is not None
    }
    return CollectionPlan(
        target=source,
        create_kwargs={k: v for k, v in kwargs.items() if v is not None},
        payload_indexes=tuple(indexes),
        params_update=update,
        dropped=tuple(dropped),
    )


def _from_neutral(source: VectorsConfig, collection: str, allow_lossy: bool) -> CollectionPlan:
    from qdrant_client.http import models

    dropped: list[str] = []
    notes: list[str] = []
    dense: dict[str, qm.VectorParams] = {}
    specs = []
    for d in sorted(source.dense, key=lambda d: d.name):
        max_sim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
        dense[d.name] = models.VectorParams(
            size=d.size,
            distance=models.Distance(QDRANT_DISTANCES[d.distance]),
            datatype=None if d.datatype == "float32" else models.Datatype(d.datatype),
            multivector_config=max_sim if d.multivector else None,
        )
        options = {"multivector_config": {"comparator": "max_sim"}} if d.multivector else {}
        specs.append(replace(d, options=options))
    sparse: dict[str, qm.SparseVectorParams] = {}
    sparse_specs = []
    for s in sorted(source.sparse, key=lambda s: s.name):
        if s.name == "":
            raise UnsupportedFeatureError(
                f"collection {collection!r}: Qdrant cannot name a sparse vector with the empty name"
            )
        modifier = s.modifier
        if modifier not in (None, "idf"):
            if not allow_lossy:
                raise UnsupportedFeatureError(
                    f"collection {collection!r}: Qdrant has no sparse vector modifier {modifier!r} "
                    f"(sparse vector {s.name!r}); use --allow-lossy to create it without one"
                )
            dropped.append(f"sparse vector {s.name!r} modifier {modifier!r}")
            modifier = None
        idf = models.Modifier.IDF if modifier == "idf" else None
        sparse[s.name] = models.SparseVectorParams(modifier=idf)
        sparse_specs.append(SparseVectorSpec(name=s.name, modifier=modifier))
    kwargs: dict[str, Any] = {
        # One unnamed default vector is Qdrant's plain form; anything else is a map of named vectors.
        "vectors_config": dense[""] if list(dense) == [""] else dense,
        "sparse_vectors_config": sparse or None,
        "metadata": dict(source.metadata) if source.metadata else None,
    }
    hnsw = dict(source.hnsw or {})
    target_hnsw = None
    if hnsw.get("m") is not None or hnsw.get("ef_construction") is not None:
        kwargs["hnsw_config"] = models.HnswConfigDiff(m=hnsw.get("m"), ef_construct=hnsw.get("ef_construction"))
        target_hnsw = {k: hnsw[k] for k in ("m", "ef_construction") if hnsw.get(k) is not None}
    extra_hnsw = sorted(k for k, v in hnsw.items() if k not in ("m", "ef_construction") and v is not None)
    if extra_hnsw:
        # ef_search is a per-query parameter in Qdrant: a tuning setting, not data.
        notes.append(f"HNSW {', '.join(f'{k}={hnsw[k]}' for k in extra_hnsw)} (Qdrant sets it per query)")
    indexes = []
    target_indexes = []
    for index in source.payload_indexes:
        made = _neutral_index(index)
        if made is None:
            notes.append(f"payload index {index!r} (no such Qdrant index type)")
            continue
        indexes.append(made)
        target_indexes.append(index)
    target = VectorsConfig(
        dense=tuple(specs),
        sparse=tuple(sparse_specs),
        metadata=kwargs["metadata"],
        hnsw=target_hnsw,
        payload_indexes=tuple(target_indexes),
        native=None,
    )
    return CollectionPlan(
        target=target,
        create_kwargs={k: v for k, v in kwargs.items() if v is not None},
        payload_indexes=tuple(indexes),
        dropped=tuple(dropped),
        notes=tuple(notes),
    )


def _neutral_index(index: Mapping[str, Any]) -> tuple[str, Any] | None:
    from qdrant_client.http import models

    classes: dict[str, Any] = {
        "keyword": models.KeywordIndexParams,
        "integer": models.IntegerIndexParams,
        "float": models.FloatIndexParams,
        "geo": models.GeoIndexParams,
        "text": models.TextIndexParams,
        "bool": models.BoolIndexParams,
        "datetime": models.DatetimeIndexParams,
        "uuid": models.UuidIndexParams,
    }
    name, kind = index.get("field"), index.get("type")
    if not isinstance(name, str) or kind not in classes:
        return None
    params = {k: v for k, v in index.items() if k not in ("field", "type")}
    try:
        if not params:
            return name, models.PayloadSchemaType(kind)
        schema = classes[kind].model_validate({"type": kind, **params})
    except ValueError:
        return None
    return name, schema
