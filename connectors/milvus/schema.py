"""Milvus collection schemas <-> :class:`aibackup.manifests.model.VectorsConfig` (the rules: :mod:`.connector`).

A collection is described once, as ``native`` (JSON: fields, functions, indexes, partitions, properties,
auto_id, dynamic fields, description, consistency level; :func:`native_of`); everything else is derived from
it: the neutral config (:func:`config_of`), which field plays which canonical role (:func:`layout_of`), and
the pymilvus schema and index parameters that create it (:func:`build_schema`, :func:`build_indexes`). The
collection a restore creates is planned in :mod:`.plan`. pymilvus is imported inside the functions that need
it (an optional extra).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig

#: Milvus metric <-> neutral distance, for float vectors.
DISTANCES = {"COSINE": "cosine", "L2": "l2", "IP": "ip"}
METRICS = {neutral: metric for metric, neutral in DISTANCES.items()}
#: Milvus's metric for a vector field without an index (search without one, Milvus Lite) since 2.4.
DEFAULT_METRIC = "COSINE"
#: Dense vector types -> the datatype they store (the bundle always holds float32).
DENSE_TYPES = {"FLOAT_VECTOR": "float32", "FLOAT16_VECTOR": "float16", "BFLOAT16_VECTOR": "bfloat16"}
SPARSE = "SPARSE_FLOAT_VECTOR"
#: The Milvus field of the unnamed canonical vector (pymilvus's quick setup names it so).
DEFAULT_VECTOR_FIELD = "vector"
#: VARCHAR fields read as the canonical document (the first present) and uri; a JSON field read as the whole
#: metadata object (when it is the only other scalar field and dynamic fields are off).
DOCUMENT_FIELDS = ("document", "text")
URI_FIELD = "uri"
METADATA_FIELD = "metadata"
#: A record's partition, when not ``_default``, travels in this metadata key (see the connector).
PARTITION_KEY = "_aibackup_partition"
DEFAULT_PARTITION = "_default"
#: Collection property holding the neutral collection metadata (canonical JSON) of another backend.
METADATA_PROPERTY = "aibackup.metadata"
#: Index types whose search scans every record (exact).
EXACT_INDEXES = frozenset({"FLAT", "BRUTE_FORCE"})
#: Milvus's rule for field, collection and partition names.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
#: describe_index keys that are not build parameters.
_INDEX_INFO = {"index_type", "metric_type", "field_name", "index_name", "total_rows", "indexed_rows"}
_INDEX_INFO |= {"pending_index_rows", "state", "index_state_fail_reason", "params"}


def canonical_dense_name(field_name: str) -> str:
    """The canonical name of a dense vector field: ``vector`` is the unnamed vector, others keep theirs."""
    return "" if field_name == DEFAULT_VECTOR_FIELD else field_name


# --- fields and roles ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One field of a collection, as its ``native`` entry describes it."""

    name: str
    type: str  # the pymilvus DataType name: INT64, VARCHAR, FLOAT_VECTOR, ...
    primary: bool = False
    nullable: bool = False
    has_default: bool = False
    function_output: bool = False
    partition_key: bool = False
    element_type: str | None = None
    dim: int | None = None
    max_length: int | None = None
    max_capacity: int | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Field:
        params = doc.get("params") or {}

        def number(key: str) -> int | None:
            value = params.get(key)
            return None if value is None else int(value)

        return cls(
            name=str(doc["name"]),
            type=str(doc["type"]),
            primary=bool(doc.get("is_primary")),
            nullable=bool(doc.get("nullable")),
            has_default="default_value" in doc,
            function_output=bool(doc.get("is_function_output")),
            partition_key=bool(doc.get("is_partition_key")),
            element_type=doc.get("element_type"),
            dim=number("dim"),
            max_length=number("max_length"),
            max_capacity=number("max_capacity"),
        )

    @property
    def optional(self) -> bool:
        """A record may leave it out (null, or the default fills it in)."""
        return self.nullable or self.has_default


@dataclass(frozen=True)
class Layout:
    """Which field of a collection plays which canonical role (the rules: :mod:`.connector`)."""

    pk: Field
    dense: tuple[tuple[str, Field], ...]  # (canonical name, field), sorted by canonical name
    sparse: tuple[tuple[str, Field], ...]
    document: Field | None
    uri: Field | None
    metadata_field: Field | None  # a JSON field holding the whole metadata object
    scalars: tuple[Field, ...]  # every other field: a metadata key each
    dynamic: bool  # dynamic field keys are metadata keys too
    partition_key: bool
    partitions: tuple[str, ...]  # explicit partitions besides _default (none with a partition key)
    auto_id: bool
    unsupported: tuple[Field, ...] = ()  # vector types the canonical schema has no place for

    @property
    def int_pk(self) -> bool:
        return self.pk.type == "INT64"

    @property
    def fields(self) -> list[Field]:
        """The fields a record is read from and written to (never a function's output)."""
        roles = [self.document, self.uri, self.metadata_field]
        return [
            self.pk,
            *(f for _, f in self.dense),
            *(f for _, f in self.sparse),
            *(f for f in roles if f is not None),
            *self.scalars,
        ]

    @property
    def output_fields(self) -> list[str]:
        return [f.name for f in self.fields] + (["$meta"] if self.dynamic else [])


def layout_of(native: Mapping[str, Any]) -> Layout:
    """The roles of a collection's fields (see the connector's docstring for the rules)."""
    fields = [Field.of(f) for f in native.get("fields") or ()]
    pk = next(f for f in fields if f.primary)
    rest = [f for f in fields if not f.primary and not f.function_output]
    dense = sorted(((canonical_dense_name(f.name), f) for f in rest if f.type in DENSE_TYPES), key=lambda p: p[0])
    sparse = sorted(((f.name, f) for f in rest if f.type == SPARSE), key=lambda p: p[0])
    unsupported = tuple(f for f in rest if "VECTOR" in f.type and f.type not in DENSE_TYPES and f.type != SPARSE)
    strings = {f.name: f for f in rest if f.type == "VARCHAR"}
    document = next((strings[n] for n in DOCUMENT_FIELDS if n in strings), None)
    uri = strings.get(URI_FIELD)
    taken = {f.name for _, f in (*dense, *sparse)} | {f.name for f in unsupported}
    scalars = [f for f in rest if f.name not in taken and f is not document and f is not uri]
    dynamic = bool(native.get("enable_dynamic_field"))
    metadata_field = None
    if not dynamic and len(scalars) == 1 and scalars[0].name == METADATA_FIELD and scalars[0].type == "JSON":
        metadata_field, scalars = scalars[0], []
    partition_key = any(f.partition_key for f in fields)
    partitions = () if partition_key else tuple(p for p in native.get("partitions") or () if p != DEFAULT_PARTITION)
    return Layout(
        pk=pk,
        dense=tuple(dense),
        sparse=tuple(sparse),
        document=document,
        uri=uri,
        metadata_field=metadata_field,
        scalars=tuple(scalars),
        dynamic=dynamic,
        partition_key=partition_key,
        partitions=partitions,
        auto_id=bool(native.get("auto_id")) or any(f.get("auto_id") for f in native.get("fields") or ()),
        unsupported=unsupported,
    )


def index_of(native: Mapping[str, Any], field_name: str) -> Mapping[str, Any] | None:
    return next((i for i in native.get("indexes") or () if i.get("field") == field_name), None)


# --- describe ----------------------------------------------------------------------------------------------


def native_of(
    info: Mapping[str, Any], indexes: Iterable[Mapping[str, Any]], partitions: Sequence[str], *, lite: bool
) -> dict[str, Any]:
    """The ``native`` JSON of a collection from pymilvus's ``describe_collection``, ``describe_index`` of
    each index, and ``list_partitions``."""
    from pymilvus import DataType

    def type_name(value: Any) -> str:
        return DataType(value).name if isinstance(value, int) else str(getattr(value, "name", value))

    fields = []
    for f in info.get("fields") or ():
        doc: dict[str, Any] = {"name": f["name"], "type": type_name(f["type"])}
        for flag in ("is_primary", "auto_id", "nullable", "is_partition_key", "is_clustering_key"):
            if f.get(flag):
                doc[flag] = True
        if f.get("is_function_output"):
            doc["is_function_output"] = True
        if f.get("element_type") is not None:
            doc["element_type"] = type_name(f["element_type"])
        if f.get("description"):
            doc["description"] = str(f["description"])
        params = {str(k): _jsonable(v) for k, v in (f.get("params") or {}).items()}
        if params:
            doc["params"] = params
        if f.get("default_value") is not None:
            doc["default_value"] = _default_value(f["default_value"])
        fields.append(doc)
    functions = [
        {
            "name": fn.get("name"),
            "type": str(getattr(fn.get("type"), "name", fn.get("type"))),
            "description": fn.get("description") or "",
            "input_field_names": list(fn.get("input_field_names") or ()),
            "output_field_names": list(fn.get("output_field_names") or ()),
            "params": {str(k): _jsonable(v) for k, v in (fn.get("params") or {}).items()},
        }
        for fn in info.get("functions") or ()
    ]
    native: dict[str, Any] = {
        "kind": "milvus",
        "mode": "lite" if lite else "server",
        "description": info.get("description") or "",
        "auto_id": bool(info.get("auto_id")),
        "enable_dynamic_field": bool(info.get("enable_dynamic_field")),
        "consistency_level": info.get("consistency_level_name") or None,
        "properties": {str(k): str(v) for k, v in sorted((info.get("properties") or {}).items())},
        "fields": fields,
        "functions": functions,
        "indexes": sorted((_index(i) for i in indexes), key=lambda i: (i["field"], i["name"])),
        "partitions": sorted(partitions),
    }
    if any(f.get("is_partition_key") for f in fields) and info.get("num_partitions"):
        native["num_partitions"] = int(info["num_partitions"])
    return native


def _index(info: Mapping[str, Any]) -> dict[str, Any]:
    params = dict(info.get("params") or {}) if isinstance(info.get("params"), dict) else {}
    params.update({k: v for k, v in info.items() if k not in _INDEX_INFO})
    return {
        "field": info.get("field_name"),
        "name": info.get("index_name") or info.get("field_name"),
        "index_type": info.get("index_type"),
        "metric_type": info.get("metric_type"),
        "params": {str(k): _jsonable(v) for k, v in sorted(params.items())},
    }


def _default_value(value: Any) -> Any:
    """A field's default as JSON (pymilvus reports a protobuf ValueField)."""
    which = getattr(value, "WhichOneof", None)
    if which is not None:
        kind = which("data")
        value = None if kind is None else getattr(value, kind)
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def config_of(native: Mapping[str, Any]) -> VectorsConfig:
    """The neutral config of a collection described (or planned) as `native`. Raises ValueError for a vector
    field whose metric has no neutral distance."""
    layout = layout_of(native)
    dense = []
    for name, f in layout.dense:
        index = index_of(native, f.name)
        metric = str((index or {}).get("metric_type") or DEFAULT_METRIC).upper()
        if metric not in DISTANCES:
            raise ValueError(f"vector field {f.name!r} uses metric {metric}, which aibackup has no distance for")
        datatype = DENSE_TYPES[f.type]
        options: dict[str, Any] = {}
        if datatype == "bfloat16":  # no neutral name: the bundle's float32 values are exact
            options["datatype"], datatype = "bfloat16", "float32"
        if index is not None:
            options["index_type"] = index.get("index_type")
            if index.get("params"):
                options["index_params"] = dict(index["params"])
        dense.append(DenseVectorSpec(name, int(f.dim or 0), DISTANCES[metric], datatype=datatype, options=options))
    sparse = []
    for name, f in layout.sparse:
        index = index_of(native, f.name)
        options = {"index_type": index.get("index_type"), "metric_type": index.get("metric_type")} if index else {}
        sparse.append(SparseVectorSpec(name, options=options))
    properties = native.get("properties") or {}
    metadata = None
    if METADATA_PROPERTY in properties:
        try:
            parsed = json.loads(properties[METADATA_PROPERTY])
            metadata = parsed if isinstance(parsed, dict) else None
        except ValueError:
            metadata = None
    return VectorsConfig(
        dense=tuple(dense),
        sparse=tuple(sparse),
        metadata=metadata,
        hnsw=_hnsw(native, layout),
        native=dict(native),
    )


def _hnsw(native: Mapping[str, Any], layout: Layout) -> dict[str, Any] | None:
    """m/ef_construction of the first dense vector's HNSW index, where the store reports them."""
    if not layout.dense:
        return None
    index = index_of(native, layout.dense[0][1].name) or {}
    params = index.get("params") or {}
    if index.get("index_type") != "HNSW" or ("M" not in params and "efConstruction" not in params):
        return None
    out = {}
    for neutral, key in (("m", "M"), ("ef_construction", "efConstruction")):
        try:
            out[neutral] = int(params[key])
        except (KeyError, TypeError, ValueError):
            continue
    return out or None


# --- pymilvus objects ----------------------------------------------------------------------------------


def build_schema(native: Mapping[str, Any]) -> Any:
    """The pymilvus CollectionSchema of `native`."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    schema = MilvusClient.create_schema(
        auto_id=bool(native.get("auto_id")),
        enable_dynamic_field=bool(native.get("enable_dynamic_field")),
        description=str(native.get("description") or ""),
    )
    for f in native.get("fields") or ():
        kwargs: dict[str, Any] = dict(f.get("params") or {})
        for flag in ("is_primary", "auto_id", "nullable", "is_partition_key", "is_clustering_key"):
            if f.get(flag):
                kwargs[flag] = True
        if f.get("element_type"):
            kwargs["element_type"] = DataType[f["element_type"]]
        if f.get("description"):
            kwargs["description"] = f["description"]
        if "default_value" in f:
            kwargs["default_value"] = f["default_value"]
        schema.add_field(f["name"], DataType[f["type"]], **kwargs)
    for fn in native.get("functions") or ():
        schema.add_function(
            Function(
                name=fn["name"],
                function_type=FunctionType[fn["type"]],
                input_field_names=list(fn["input_field_names"]),
                output_field_names=list(fn["output_field_names"]),
                description=fn.get("description") or "",
                params=dict(fn.get("params") or {}) or None,
            )
        )
    return schema


def build_indexes(client: Any, native: Mapping[str, Any]) -> Any:
    """pymilvus IndexParams for every index of `native` (None when there is none)."""
    indexes = list(native.get("indexes") or ())
    if not indexes:
        return None
    params = client.prepare_index_params()
    for index in indexes:
        kwargs: dict[str, Any] = {"index_type": index.get("index_type") or "AUTOINDEX", "index_name": index["name"]}
        if index.get("metric_type"):
            kwargs["metric_type"] = index["metric_type"]
        if index.get("params"):
            kwargs["params"] = dict(index["params"])
        params.add_index(index["field"], **kwargs)
    return params
