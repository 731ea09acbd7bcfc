"""LanceDB table definitions <-> the neutral collection config (the mapping is in :mod:`.connector`).

:func:`columns_of` says which column of a table holds which part of a canonical record (:class:`Columns`);
:func:`describe_config` makes the neutral config of a table, with ``native`` holding all a LanceDB restore
needs to recreate it (the Arrow schema, the roles of its columns, its indexes and the version read);
:func:`plan_table` decides the table a bundle's collection becomes, :func:`check_merge` whether a merge can
write it into an existing one. Nothing here opens a table: lancedb is imported only inside
:func:`index_config` (an optional extra).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import DatasetDescription
from aibackup.connectors.lancedb.values import unsupported
from aibackup.errors import SourceDataError, UnsupportedFeatureError
from aibackup.manifests.model import DenseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import canonical_json, dense_type

#: The record id column unless the URI names another (``?id=COLUMN``).
ID_COLUMN = "id"
#: The columns that hold a record's document, first match: ``text`` is where LangChain's and LlamaIndex's
#: LanceDB stores keep it; ``document`` is where a restore from another backend writes it.
DOCUMENT_COLUMNS = ("document", "text")
URI_COLUMN = "uri"
#: The canonical-JSON metadata column of a table a restore from another backend wrote.
METADATA_COLUMN = "metadata"
#: LanceDB's default vector column: the unnamed ("") vector of the canonical record.
DEFAULT_VECTOR = "vector"
#: Field and schema metadata a restore writes (nowhere else does LanceDB keep them):
#: a vector column's distance (LanceDB stores a metric only in a vector index),
DISTANCE_KEY = b"aibackup:distance"
#: the marker of a string column that holds canonical metadata JSON (not a value of one metadata key),
FORMAT_KEY = b"aibackup:format"
METADATA_JSON = b"metadata-json"
#: and the collection-level metadata of the source collection (canonical JSON).
COLLECTION_KEY = b"aibackup:metadata"
#: LanceDB metric -> neutral distance, and back. A table without a vector index has no metric: l2 is
#: LanceDB's default for a query that names none.
DISTANCES = {"l2": "l2", "cosine": "cosine", "dot": "ip"}
METRICS = {neutral: metric for metric, neutral in DISTANCES.items()}
DEFAULT_DISTANCE = "l2"
#: index_type (list_indices) -> the lancedb.index class that builds it.
VECTOR_INDEXES = {
    "IvfFlat": "IvfFlat",
    "IvfPq": "IvfPq",
    "IvfSq": "IvfSq",
    "IvfRq": "IvfRq",
    "IvfHnswSq": "HnswSq",
    "IvfHnswPq": "HnswPq",
    "IvfHnswFlat": "HnswFlat",
}
SCALAR_INDEXES = {"BTree": "BTree", "Bitmap": "Bitmap", "LabelList": "LabelList", "FTS": "FTS"}
#: FTS build parameters: index_details key -> lancedb.index.FTS field.
FTS_PARAMS = {
    "with_position": "with_position",
    "base_tokenizer": "base_tokenizer",
    "language": "language",
    "max_token_length": "max_token_length",
    "lower_case": "lower_case",
    "stem": "stem",
    "remove_stop_words": "remove_stop_words",
    "custom_stop_words": "custom_stop_words",
    "ascii_folding": "ascii_folding",
    "min_ngram_length": "ngram_min_length",
    "max_ngram_length": "ngram_max_length",
    "prefix_only": "prefix_only",
    "block_size": "block_size",
}


def _text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)


def _vector_type(typ: pa.DataType) -> tuple[int, bool] | None:
    """(size, multivector) when a column of `typ` is a dense vector: a fixed-size list of floats, or a
    list of them (a multivector)."""
    if pa.types.is_fixed_size_list(typ) and pa.types.is_floating(typ.value_type):
        return typ.list_size, False
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        inner = _vector_type(typ.value_type)
        return None if inner is None or inner[1] else (inner[0], True)
    return None


def vector_name(column: str) -> str:
    return "" if column == DEFAULT_VECTOR else column


def vector_column(name: str) -> str:
    return DEFAULT_VECTOR if name == "" else name


@dataclass(frozen=True)
class Columns:
    """Which column of a table holds which part of a canonical record."""

    id: str | None  # None: the table has no id column, ids are row positions
    vectors: tuple[tuple[str, str], ...]  # (vector name, column), sorted by name
    document: str | None = None
    uri: str | None = None
    json: str | None = None  # canonical metadata JSON (a table a restore from another backend wrote)
    metadata: tuple[str, ...] = ()  # every other column: one key of the record's metadata each

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "vectors": {name: column for name, column in self.vectors},
            "document": self.document,
            "uri": self.uri,
            "metadata_json": self.json,
            "metadata": list(self.metadata),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Columns:
        return cls(
            id=doc.get("id"),
            vectors=tuple(sorted(dict(doc.get("vectors") or {}).items())),
            document=doc.get("document"),
            uri=doc.get("uri"),
            json=doc.get("metadata_json"),
            metadata=tuple(doc.get("metadata") or ()),
        )

    def column_of(self, vector: str) -> str | None:
        return dict(self.vectors).get(vector)


def columns_of(schema: pa.Schema, id_column: str, table: str) -> Columns:
    """The roles of `table`'s columns (the connector's mapping). Raises SourceDataError for an id column
    that is neither text nor an integer and for a column whose type has no JSON form."""
    names = set(schema.names)
    id_field = schema.field(id_column) if id_column in names else None
    if id_field is not None and not (_text(id_field.type) or pa.types.is_integer(id_field.type)):
        raise SourceDataError(
            f"LanceDB table {table!r}: id column {id_column!r} holds {id_field.type}, not text or integers; "
            f"name another column with ?id=COLUMN"
        )
    taken = {id_column}
    vectors = []
    for f in schema:
        if f.name not in taken and _vector_type(f.type) is not None:
            vectors.append((vector_name(f.name), f.name))
            taken.add(f.name)

    def text_column(candidates: Sequence[str]) -> str | None:
        found = next((c for c in candidates if c in names - taken and _text(schema.field(c).type)), None)
        if found is not None:
            taken.add(found)
        return found

    document = text_column(DOCUMENT_COLUMNS)
    uri = text_column((URI_COLUMN,))
    json_column = None
    if METADATA_COLUMN in names - taken:
        meta = schema.field(METADATA_COLUMN)
        if _text(meta.type) and (meta.metadata or {}).get(FORMAT_KEY) == METADATA_JSON:
            json_column = METADATA_COLUMN
            taken.add(METADATA_COLUMN)
    rest = []
    for f in schema:
        if f.name in taken:
            continue
        why = unsupported(f.type)
        if why:
            raise SourceDataError(f"LanceDB table {table!r}: column {f.name!r}: {why}")
        rest.append(f.name)
    return Columns(
        id=id_field.name if id_field is not None else None,
        vectors=tuple(sorted(vectors)),
        document=document,
        uri=uri,
        json=json_column,
        metadata=tuple(rest),
    )


# --- describe ------------------------------------------------------------------------------------------


def index_entries(indexes: Iterable[Any]) -> list[dict[str, Any]]:
    """``list_indices()`` as JSON: name, type, columns, metric (neutral, vector indexes) and the build
    details LanceDB reports (``index_details``)."""
    entries = []
    for index in indexes:
        details = _jsonable(getattr(index, "index_details", None) or {})
        metric = str(details.get("metric_type", "")).lower() if isinstance(details, dict) else ""
        entries.append(
            {
                "name": index.name,
                "type": index.index_type,
                "columns": list(index.columns),
                "distance": DISTANCES.get(metric),
                "details": details,
            }
        )
    return sorted(entries, key=lambda e: e["name"])


def _jsonable(value: Any) -> Any:
    """index_details as plain JSON (it is a dict of str/int/bool/None/lists/dicts)."""
    return json.loads(json.dumps(value, default=str))


def vector_index(indexes: Sequence[Mapping[str, Any]], column: str) -> Mapping[str, Any] | None:
    return next((i for i in indexes if i["type"] in VECTOR_INDEXES and i["columns"] == [column]), None)


def describe_config(
    schema: pa.Schema, columns: Columns, indexes: Sequence[Mapping[str, Any]], version: int, library: str
) -> VectorsConfig:
    """The neutral config of a table, ``native`` = {kind, lancedb (library version), version (of the
    table, the one read), schema (the Arrow schema as base64 IPC), fields (the same, readable), columns
    (:class:`Columns`), indexes (:func:`index_entries`), distances (where each vector's distance came from:
    its index, a restore's field metadata, or not known)}."""
    dense = []
    hnsw = None
    known: dict[str, str] = {}
    for name, column in columns.vectors:
        f = schema.field(column)
        size, multi = _vector_type(f.type) or (0, False)
        index = vector_index(indexes, column)
        recorded = (f.metadata or {}).get(DISTANCE_KEY, b"").decode()
        if index is not None and index.get("distance"):
            distance, known[name] = index["distance"], "the vector index's metric"
        elif recorded in METRICS:
            distance, known[name] = recorded, "recorded by the restore that wrote the table"
        else:
            distance, known[name] = DEFAULT_DISTANCE, "not known (no vector index): LanceDB's default"
        value_type = f.type.value_type.value_type if multi else f.type.value_type
        datatype = "float16" if pa.types.is_float16(value_type) else "float32"
        dense.append(DenseVectorSpec(name, size, distance, multivector=multi, datatype=datatype))
        graph = (index or {}).get("details", {}).get("hnsw")
        if isinstance(graph, dict) and (hnsw is None or name == ""):
            hnsw = {"m": graph.get("max_connections"), "ef_construction": graph.get("construction_ef")}
    collection = (schema.metadata or {}).get(COLLECTION_KEY)
    native = native_config(schema, columns, [dict(i) for i in indexes], known, library, version)
    return VectorsConfig(
        dense=tuple(dense),
        metadata=json.loads(collection) if collection else None,
        hnsw=hnsw,
        native=native,
    )


def native_config(
    schema: pa.Schema,
    columns: Columns,
    indexes: list[dict[str, Any]],
    distances: Mapping[str, str],
    library: str | None,
    version: int | None,
) -> dict[str, Any]:
    """A table's ``native`` config (see :func:`describe_config`): what a LanceDB -> LanceDB restore makes."""
    return {
        "kind": "lancedb",
        "lancedb": library,
        "version": version,
        "schema": base64.b64encode(schema.serialize().to_pybytes()).decode("ascii"),
        "fields": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema],
        "columns": columns.to_json(),
        "indexes": indexes,
        "distances": dict(distances),
    }


def native_schema(native: Mapping[str, Any]) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(native["schema"])))


# --- restore -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TablePlan:
    """The table a bundle's collection becomes: its Arrow schema, the roles of its columns, the indexes to
    build after the data, the canonical columns the restore drops (lossy) and what it reports."""

    schema: pa.Schema
    columns: Columns
    config: VectorsConfig
    indexes: tuple[Mapping[str, Any], ...] = ()
    drop: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    native: bool = False  # the bundle came from LanceDB: the table is recreated as it was


def plan_table(source: DatasetDescription, dest: str, id_column: str, *, allow_lossy: bool) -> TablePlan:
    """Table `dest` for bundle collection `source`. From a LanceDB bundle: the recorded table (schema,
    columns, indexes). From any other: the canonical layout (module docstring of :mod:`.connector`).
    Raises UnsupportedFeatureError naming the collection and the feature LanceDB cannot hold, unless
    `allow_lossy` maps it (then in ``dropped``)."""
    config: VectorsConfig = source.config
    native = config.native
    if native is not None and native.get("kind") == "lancedb":
        return _from_native(config, native, dest)
    return _canonical(config, dest, id_column, allow_lossy)


def _from_native(config: VectorsConfig, native: Mapping[str, Any], dest: str) -> TablePlan:
    schema = native_schema(native)
    columns = Columns.from_json(native.get("columns") or {})
    wanted = {(d.name, d.size, d.multivector) for d in config.dense}
    held = set()
    for name, column in columns.vectors:
        shape = _vector_type(schema.field(column).type) if column in schema.names else None
        if shape is not None:
            held.add((name, *shape))
    if held != wanted or config.sparse:
        raise UnsupportedFeatureError(
            f"collection {dest!r}: the bundle's LanceDB table definition does not match its vectors "
            f"(a damaged or hand-edited config)"
        )
    indexes = tuple(i for i in native.get("indexes") or () if i.get("type") in {**VECTOR_INDEXES, **SCALAR_INDEXES})
    notes = [
        f"index {i.get('name')!r} ({i.get('type')}) not rebuilt: this aibackup does not know that index type"
        for i in native.get("indexes") or ()
        if i not in indexes
    ]
    if any(i["type"] in VECTOR_INDEXES for i in indexes):
        notes.append(
            "vector indexes rebuilt with the recorded metric and build parameters; LanceDB does not report "
            "the number of IVF partitions, so it picks it for the table's size"
        )
    target = dataclasses.replace(config, native={**native, "version": None})
    return TablePlan(schema, columns, target, indexes, notes=tuple(notes), native=True)


def _canonical(config: VectorsConfig, dest: str, id_column: str, allow_lossy: bool) -> TablePlan:
    dropped: list[str] = []
    notes: list[str] = []

    def lossy(feature: str, mapping: str) -> None:
        if not allow_lossy:
            raise UnsupportedFeatureError(
                f"collection {dest!r}: LanceDB cannot hold {feature}; --allow-lossy would {mapping}"
            )
        dropped.append(f"{feature}: {mapping}")

    if config.sparse:
        names = ", ".join(repr(s.name) for s in config.sparse)
        lossy(f"sparse vectors ({names}): LanceDB has no sparse vector type", "drop them")
    reserved = {id_column, DOCUMENT_COLUMNS[0], URI_COLUMN, METADATA_COLUMN}
    fields = [pa.field(id_column, pa.string(), nullable=False)]
    dense = []
    seen: set[str] = set()
    for spec in sorted(config.dense, key=lambda d: d.name):
        column = vector_column(spec.name)
        if spec.name == DEFAULT_VECTOR:  # named 'vector': its column would read back as the unnamed vector
            why = "is the column of a table's unnamed vector (it would read back as that)"
            raise UnsupportedFeatureError(
                f"collection {dest!r}: vector {spec.name!r} cannot be a LanceDB column: {column!r} {why}"
            )
        if "." in column or column in reserved or column in seen:
            why = "has a '.'" if "." in column else "is the name of another column of the table"
            raise UnsupportedFeatureError(
                f"collection {dest!r}: vector {spec.name!r} cannot be a LanceDB column: {column!r} {why}"
            )
        seen.add(column)
        distance = spec.distance
        if distance not in METRICS:
            lossy(f"distance {distance} (vector {spec.name!r})", "restore it with l2")
            distance = DEFAULT_DISTANCE
        if spec.datatype != "float32":
            notes.append(f"vector {spec.name!r}: {spec.datatype} values stored as float32 (exactly)")
        target = DenseVectorSpec(spec.name, spec.size, distance, multivector=spec.multivector)
        dense.append(target)
        fields.append(pa.field(column, dense_type(target), metadata={DISTANCE_KEY: distance.encode()}))
    fields += [
        pa.field(DOCUMENT_COLUMNS[0], pa.string()),
        pa.field(URI_COLUMN, pa.string()),
        pa.field(METADATA_COLUMN, pa.string(), metadata={FORMAT_KEY: METADATA_JSON}),
    ]
    collection = {COLLECTION_KEY: canonical_json(dict(config.metadata)).encode()} if config.metadata else None
    if config.hnsw and any(v is not None for v in config.hnsw.values()):
        settings = ", ".join(f"{k}={v}" for k, v in sorted(config.hnsw.items()) if v is not None)
        notes.append(
            f"HNSW {settings} not applied: a table restored from another backend gets no vector index, so "
            "LanceDB searches it exactly (build one with create_index when it grows)"
        )
    if config.payload_indexes:
        notes.append(f"{len(config.payload_indexes)} payload index(es) not recreated (metadata is one JSON column)")
    columns = Columns(
        id=id_column,
        vectors=tuple((d.name, vector_column(d.name)) for d in dense),
        document=DOCUMENT_COLUMNS[0],
        uri=URI_COLUMN,
        json=METADATA_COLUMN,
    )
    target_config = VectorsConfig(dense=tuple(dense), metadata=config.metadata)
    return TablePlan(
        schema=pa.schema(fields, metadata=collection),
        columns=columns,
        config=target_config,
        drop=tuple(f"sparse:{s.name}" for s in config.sparse),
        dropped=tuple(dropped),
        notes=tuple(notes),
    )


def check_merge(plan: TablePlan, schema: pa.Schema, dest: str, where: str) -> None:
    """UnsupportedFeatureError unless the records of `plan` can be merged into table `dest` (in `where`),
    whose schema is `schema`: the plan has an id column to merge on and the same columns."""
    if plan.columns.id is None:
        raise UnsupportedFeatureError(
            f"table {dest!r}: the bundle's ids are row positions (its table had no id column), so there is "
            "nothing to merge on; restore with --mode overwrite or into another table"
        )

    # The distance recorded on a vector column is compared only where the table records one: a table a
    # framework made itself (langchain-community's LanceDB) has no such marker, its distance is the app's.
    marked = {f.name for f in schema if DISTANCE_KEY in (f.metadata or {})}

    def shape(s: pa.Schema) -> list[tuple[str, str, str]]:
        return [
            (f.name, str(f.type), (f.metadata or {}).get(DISTANCE_KEY, b"").decode() if f.name in marked else "")
            for f in s
        ]

    if shape(schema) != shape(plan.schema):
        mine, theirs = set(shape(plan.schema)), set(shape(schema))
        differ = sorted({n for n, _, _ in mine ^ theirs})
        raise UnsupportedFeatureError(
            f"table {dest!r} in {where} has other columns than the bundle's (differing: "
            f"{', '.join(differ[:5])}); restore with --mode overwrite or into another table"
        )


# --- indexes -------------------------------------------------------------------------------------------


def index_config(entry: Mapping[str, Any]) -> Any:
    """The ``lancedb.index`` config object that rebuilds a recorded index: the class of its type, with the
    metric and every build parameter LanceDB reported (unknown ones left at LanceDB's defaults)."""
    from lancedb import index as lance_index

    kind = entry["type"]
    cls = getattr(lance_index, VECTOR_INDEXES.get(kind) or SCALAR_INDEXES[kind])
    accepted = {f.name for f in dataclasses.fields(cls)}
    details = entry.get("details") or {}
    params: dict[str, Any] = {}
    if kind == "FTS":
        params = {FTS_PARAMS[k]: v for k, v in details.items() if k in FTS_PARAMS}
    elif kind in VECTOR_INDEXES:
        params["distance_type"] = METRICS.get(entry.get("distance") or "", DEFAULT_DISTANCE)
        compression = details.get("compression") or {}
        graph = details.get("hnsw") or {}
        hints = details.get("runtime_hints") or {}
        params.update(
            num_sub_vectors=compression.get("num_sub_vectors"),
            num_bits=compression.get("num_bits"),
            m=graph.get("max_connections"),
            ef_construction=graph.get("construction_ef"),
            max_iterations=_int(hints.get("lance.ivf.max_iters")),
            sample_rate=_int(hints.get("lance.ivf.sample_rate")),
        )
    return cls(**{k: v for k, v in params.items() if k in accepted and v is not None})


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def index_settings(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """A vector index's settings in the neutral names of ``search_index`` (none without an index)."""
    if entry is None:
        return {}
    details = entry.get("details") or {}
    graph = details.get("hnsw") or {}
    compression = details.get("compression") or {}
    out: dict[str, Any] = {"index": entry["type"]}
    if graph:
        out.update(m=graph.get("max_connections"), ef_construction=graph.get("construction_ef"))
    if compression.get("type"):
        out["compression"] = compression["type"]
    return {k: v for k, v in out.items() if v is not None}
