"""The Milvus collection a restore creates for a bundle's collection (:func:`plan_collection`), and whether a
merge can upsert into an existing one (:func:`merge_problem`); the rules are in :mod:`.connector`.

From ``native`` when the bundle came from Milvus (adapted to Milvus Lite where it lacks a type, an index or
auto_id with explicit ids), from the neutral fields otherwise; what Milvus cannot hold is refused
(UnsupportedFeatureError) unless --allow-lossy maps it. The plan is ``native`` JSON, which
:func:`.schema.build_schema` and :func:`.schema.build_indexes` turn into pymilvus objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aibackup.connectors.milvus.schema import (
    DEFAULT_PARTITION,
    DEFAULT_VECTOR_FIELD,
    DOCUMENT_FIELDS,
    METADATA_FIELD,
    METADATA_PROPERTY,
    METRICS,
    NAME,
    SPARSE,
    URI_FIELD,
    Layout,
    canonical_dense_name,
    index_of,
    layout_of,
)
from aibackup.errors import UnsupportedFeatureError
from aibackup.manifests.model import VectorsConfig
from aibackup.manifests.vectors import dense_column, sparse_column

#: The fields a collection restored from another backend has besides its vectors.
ID_FIELD = "id"
#: Milvus's VARCHAR limit (bytes): ids, documents and uris from other backends get the whole of it.
MAX_VARCHAR = 65535
#: A server takes explicit primary keys into an auto_id collection when this property is "true".
ALLOW_INSERT_AUTO_ID = "allow_insert_auto_id"
#: What Milvus Lite (milvus-lite 3.x) builds: other index types are made AUTOINDEX (vectors) or left out.
LITE_VECTOR_INDEXES = frozenset(
    {"AUTOINDEX", "FLAT", "BRUTE_FORCE", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "SPARSE_INVERTED_INDEX"}
)
LITE_SCALAR_INDEXES = frozenset({"INVERTED"})


@dataclass(frozen=True)
class CollectionPlan:
    """The collection a restore creates (``native`` form) and how the bundle's columns reach it.

    ``columns`` maps each canonical column of the target to the bundle's column it is read from (the same
    name unless a vector was renamed for Milvus's naming rule); a bundle column not mapped is dropped.
    ``dropped``: what --allow-lossy gave up; ``notes``: settings without data the target ignores."""

    native: dict[str, Any]
    columns: Mapping[str, str] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def renamed(self) -> bool:
        return any(target != source for target, source in self.columns.items())


def plan_collection(source: VectorsConfig, collection: str, *, lite: bool, allow_lossy: bool) -> CollectionPlan:
    """The Milvus collection `collection` (in Milvus Lite when `lite`) for a bundle's `source` config: from
    ``native`` when the bundle came from Milvus, else from the neutral fields. Raises
    UnsupportedFeatureError naming the collection and the feature Milvus (Lite) cannot hold, unless
    `allow_lossy` maps it (then in ``dropped``)."""
    if not lite and not NAME.fullmatch(collection):  # Milvus Lite takes any name a folder can have
        raise UnsupportedFeatureError(
            f"a Milvus server cannot name a collection {collection!r}: names are 1-255 letters, digits and "
            f"'_', not starting with a digit; restore it under another name with --collection SRC=DEST"
        )
    native = source.native
    if native is not None and native.get("kind") == "milvus":
        plan = _from_native(source, dict(native), collection, lite=lite, allow_lossy=allow_lossy)
    else:
        plan = _from_neutral(source, collection, lite=lite, allow_lossy=allow_lossy)
    if not layout_of(plan.native).dense and not layout_of(plan.native).sparse:
        raise UnsupportedFeatureError(
            f"collection {collection!r}: Milvus needs at least one vector field and the bundle's collection has none"
        )
    return plan


def _lossy(collection: str, allow_lossy: bool, feature: str, mapping: str, dropped: list[str]) -> None:
    if not allow_lossy:
        raise UnsupportedFeatureError(
            f"collection {collection!r}: Milvus cannot hold {feature}; --allow-lossy would {mapping}"
        )
    dropped.append(f"{feature}: {mapping}")


def _from_native(
    source: VectorsConfig, native: dict[str, Any], collection: str, *, lite: bool, allow_lossy: bool
) -> CollectionPlan:
    dropped: list[str] = []
    notes: list[str] = []
    native = json.loads(json.dumps(native))  # a copy to adapt
    native["mode"] = "lite" if lite else "server"
    layout = layout_of(native)
    if layout.unsupported:
        names = ", ".join(f"{f.name!r} ({f.type})" for f in layout.unsupported)
        raise UnsupportedFeatureError(
            f"collection {collection!r}: the bundle has vector fields aibackup does not hold: {names}"
        )
    properties = dict(native.get("properties") or {})
    if layout.auto_id:
        if lite:
            # Milvus Lite numbers auto ids from its own counter, which explicit ids do not move: a later
            # insert without an id could be given one a restored record holds.
            _lossy(
                collection,
                allow_lossy,
                "auto_id with the records' own ids in Milvus Lite (its next auto ids could repeat them)",
                "create the collection without auto_id (ids kept; new inserts must give one)",
                dropped,
            )
            native["auto_id"] = False
            for f in native["fields"]:
                f.pop("auto_id", None)
        else:
            properties[ALLOW_INSERT_AUTO_ID] = "true"  # the records keep their ids; new ones are still auto
    if lite:
        for f in native["fields"]:
            if f["type"] in ("FLOAT16_VECTOR", "BFLOAT16_VECTOR"):
                notes.append(f"Milvus Lite has no {f['type']}: field {f['name']!r} is a FLOAT_VECTOR (same values)")
                f["type"] = "FLOAT_VECTOR"
        kept = []
        for index in native.get("indexes") or ():
            indexed: dict[str, Any] = next((x for x in native["fields"] if x["name"] == index["field"]), {})
            vector = "VECTOR" in str(indexed.get("type", ""))
            if vector and index.get("index_type") not in LITE_VECTOR_INDEXES:
                sparse = indexed.get("type") == SPARSE
                made = "SPARSE_INVERTED_INDEX" if sparse else "AUTOINDEX"
                notes.append(
                    f"Milvus Lite has no {index.get('index_type')} index: field {index['field']!r} gets {made}"
                )
                index = {**index, "index_type": made, "params": {}}
            elif not vector and index.get("index_type") not in LITE_SCALAR_INDEXES:
                notes.append(f"Milvus Lite has no {index.get('index_type')} index: field {index['field']!r} has none")
                continue
            kept.append(index)
        native["indexes"] = kept
    native["properties"] = properties
    return CollectionPlan(native=native, columns=_identity_columns(source), dropped=tuple(dropped), notes=tuple(notes))


def _identity_columns(config: VectorsConfig) -> dict[str, str]:
    names = [dense_column(d.name) for d in config.dense] + [sparse_column(s.name) for s in config.sparse]
    return {n: n for n in names}


def field_name_problem(name: str) -> str | None:
    if not NAME.fullmatch(name):
        return "Milvus field names are 1-255 letters, digits and '_', not starting with a digit"
    return None


def _milvus_name(name: str, taken: set[str]) -> str:
    """A valid field name for `name` not in `taken` (the lossy rename)."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)[:250] or "_"
    if not (base[0].isalpha() or base[0] == "_"):
        base = f"_{base}"[:250]
    made, n = base, 2
    while made in taken:
        made, n = f"{base}_{n}", n + 1
    return made


def _from_neutral(source: VectorsConfig, collection: str, *, lite: bool, allow_lossy: bool) -> CollectionPlan:
    dropped: list[str] = []
    notes: list[str] = []
    reserved = {ID_FIELD, DOCUMENT_FIELDS[0], URI_FIELD, METADATA_FIELD}
    taken = set(reserved) | {DEFAULT_VECTOR_FIELD}
    fields: list[dict[str, Any]] = [
        {"name": ID_FIELD, "type": "VARCHAR", "is_primary": True, "params": {"max_length": MAX_VARCHAR}}
    ]
    indexes: list[dict[str, Any]] = []
    columns: dict[str, str] = {}
    multi = [d.name for d in source.dense if d.multivector]
    if multi:
        _lossy(collection, allow_lossy, f"multivectors ({', '.join(map(repr, multi))})", "drop them", dropped)
    hnsw = dict(source.hnsw or {})
    build = {k: hnsw[n] for n, k in (("m", "M"), ("ef_construction", "efConstruction")) if hnsw.get(n) is not None}
    if hnsw.get("ef_search") is not None:
        notes.append(f"HNSW ef_search={hnsw['ef_search']} (Milvus sets ef per search)")
    if source.payload_indexes:
        notes.append("payload indexes are not recreated in Milvus (no data)")

    def named(name: str, what: str) -> str:
        if name == "":
            return DEFAULT_VECTOR_FIELD
        problem = field_name_problem(name) or (
            f"'{name}' names a field Milvus keeps for aibackup" if name in taken else None
        )
        if problem is None:
            return name
        made = _milvus_name(name, taken)
        _lossy(
            collection, allow_lossy, f"{what} {name!r} as a field name ({problem})", f"name the field {made!r}", dropped
        )
        return made

    for d in sorted((d for d in source.dense if not d.multivector), key=lambda d: d.name):
        name = named(d.name, "vector")
        taken.add(name)
        distance = d.distance
        if distance not in METRICS:
            _lossy(collection, allow_lossy, f"distance {distance} (vector {d.name!r})", "use l2", dropped)
            distance = "l2"
        kind = "FLOAT_VECTOR"
        if d.datatype == "float16" or d.options.get("datatype") == "bfloat16":
            wanted = "FLOAT16_VECTOR" if d.datatype == "float16" else "BFLOAT16_VECTOR"
            if lite:
                notes.append(f"Milvus Lite has no {wanted}: vector {d.name!r} is a FLOAT_VECTOR (same values)")
            else:
                kind = wanted
        elif d.datatype != "float32":
            notes.append(f"vector {d.name!r} ({d.datatype}) is a FLOAT_VECTOR (same values)")
        fields.append({"name": name, "type": kind, "params": {"dim": d.size}})
        index_type, params = ("HNSW", dict(build)) if build else ("AUTOINDEX", {})
        indexes.append(_new_index(name, index_type, METRICS[distance], params))
        columns[dense_column(canonical_dense_name(name))] = dense_column(d.name)
    for s in sorted(source.sparse, key=lambda s: s.name):
        name = named(s.name, "sparse vector")
        taken.add(name)
        if s.modifier is not None:
            _lossy(collection, allow_lossy, f"sparse vector {s.name!r} modifier {s.modifier!r}", "drop it", dropped)
        fields.append({"name": name, "type": SPARSE})
        indexes.append(_new_index(name, "SPARSE_INVERTED_INDEX", "IP", {}))
        columns[sparse_column(name)] = sparse_column(s.name)
    text = {"type": "VARCHAR", "nullable": True, "params": {"max_length": MAX_VARCHAR}}
    fields += [{"name": DOCUMENT_FIELDS[0], **text}, {"name": URI_FIELD, **text}]
    fields.append({"name": METADATA_FIELD, "type": "JSON", "nullable": True})
    properties = {METADATA_PROPERTY: json.dumps(dict(source.metadata), sort_keys=True)} if source.metadata else {}
    native: dict[str, Any] = {
        "kind": "milvus",
        "mode": "lite" if lite else "server",
        "description": "",
        "auto_id": False,
        "enable_dynamic_field": False,
        "consistency_level": None,
        "properties": properties,
        "fields": fields,
        "functions": [],
        "indexes": sorted(indexes, key=lambda i: i["field"]),
        "partitions": [DEFAULT_PARTITION],
    }
    return CollectionPlan(native=native, columns=columns, dropped=tuple(dropped), notes=tuple(notes))


def _new_index(field_name: str, index_type: str, metric: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "field": field_name,
        "name": field_name,
        "index_type": index_type,
        "metric_type": metric,
        "params": dict(params),
    }


def merge_problem(existing: Mapping[str, Any], planned: Mapping[str, Any]) -> str | None:
    """Why records planned for `planned` cannot be upserted into the `existing` collection (None: they can):
    the primary key type and the vector fields must agree."""
    have, want = layout_of(existing), layout_of(planned)

    def shape(layout: Layout) -> tuple[str, frozenset[tuple[str, int | None]], frozenset[str]]:
        dense = frozenset((name, f.dim) for name, f in layout.dense)
        return layout.pk.type, dense, frozenset(name for name, _ in layout.sparse)

    if shape(have) == shape(want):
        # The vectors agree; each must be searched by the bundle's metric too (its index says which): the
        # search check does not run on a merge, so records merged under another metric would go unseen.
        for _, f in want.dense:
            theirs, ours = index_of(existing, f.name), index_of(planned, f.name)
            if theirs and ours and theirs.get("metric_type") != ours.get("metric_type"):
                return (
                    f"its vector {f.name!r} is indexed for {theirs.get('metric_type')}, the bundle's is searched "
                    f"by {ours.get('metric_type')}"
                )
        return None

    def show(layout: Layout) -> str:
        vectors = ", ".join(f"{f.name}:{f.dim}" for _, f in layout.dense)
        sparse = "".join(f", sparse {f.name}" for _, f in layout.sparse)
        return f"primary key {layout.pk.type}, vectors {vectors}{sparse}"

    return f"its fields ({show(have)}) differ from the bundle's ({show(want)})"
