"""What Chroma's metadata and collection configuration can hold, and the mapping to and from canonical form.

Functions without chromadb (imported only where needed) used by :mod:`aibackup.connectors.chroma.connector`:

- record metadata: :func:`from_chroma` (Chroma -> canonical dict), :func:`record_problems` (what a local
  Chroma would refuse or silently change), :func:`lossy_record` (the documented lossy mapping) and
  :func:`to_chroma` (canonical dict -> what ``collection.add`` takes);
- collection metadata: :func:`collection_problems` / :func:`lossy_collection` (scalars only);
- records: :func:`page_to_batch` (a ``get()`` page -> canonical batch), :func:`add_arguments` (canonical batch
  -> ``collection.add`` arguments, refusing what Chroma cannot hold), :func:`batch_transform`
  (``ImportPlan.transform``: drop the columns Chroma cannot hold, map metadata when lossy);
- configuration: :func:`space_of`, :func:`neutral_hnsw`, :func:`cross_kind_configuration`;
- :func:`standin_embedding_functions`: recreate a collection's embedding-function config exactly without
  building (or ever calling) the real embedding function.

Limits measured on chromadb 1.5.9 (embedded PersistentClient and ``chroma run``), which the checks here
encode (a value is refused up front rather than handed to Chroma, because Chroma does not always refuse):

- values: str, bool, int in [-2**63, 2**63), finite float, and non-empty lists of one of those types.
  Embedded Chroma silently turns 2**70 into a float and drops a NaN/Infinity key (server: refused);
  -0.0 comes back as 0.0; null values, nested objects, empty and mixed-type lists are refused.
- keys: not empty, not starting with ``#`` or ``$``, not ``chroma:document`` (reserved).
- ``SparseVector`` values: local Chroma (embedded and server) refuses them ("Sparse vector is not supported
  for local chroma"); only Chroma Cloud holds them. Exported (if ever met) in Chroma's own wire form
  ``{"#type": "sparse_vector", "indices": [...], "values": [...]}`` (plus ``"tokens"`` when labelled).
- collection metadata: scalars only. A list value makes Chroma panic (the Rust core hits ``unreachable!``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa

from aibackup.connectors.base import dense_array, identity
from aibackup.errors import SourceDataError, UnsupportedFeatureError
from aibackup.manifests.model import DenseVectorSpec
from aibackup.manifests.vectors import canonical_json, dense_column, metadata_json, parse_metadata

#: Collection metadata key holding the name of the one dense vector when it is not "" (written by a restore
#: from a source with a named vector, read back by describe so a round trip keeps the name).
VECTOR_NAME_KEY = "_aibackup_vector_name"
#: Legacy collection metadata keys (``hnsw:space``, ``hnsw:M``...) that only mirror the configuration.
LEGACY_PREFIX = "hnsw:"
SPARSE_TYPE_KEY = "#type"
SPARSE_TYPE_VALUE = "sparse_vector"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RESERVED_KEYS = frozenset({"chroma:document"})
SPACES = {"cosine": "cosine", "l2": "l2", "ip": "ip"}  # Chroma space -> neutral distance (same names)
#: Chroma's collection-name rule (1.5.9): 3-512 of [a-zA-Z0-9._-], starting and ending alphanumeric.
NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{1,510})[a-zA-Z0-9]$")
F32_MAX, F32_MIN_NORMAL = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)
#: neutral hnsw name -> Chroma hnsw configuration name
HNSW_NAMES = {"m": "max_neighbors", "ef_construction": "ef_construction", "ef_search": "ef_search"}


# --- record metadata --------------------------------------------------------------------------------------


def from_chroma(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A record's metadata as Chroma returned it -> canonical dict (None stays None).

    A ``SparseVector`` value becomes Chroma's own tagged wire form (``SparseVector.to_dict()``)."""
    if not metadata:
        return None
    return {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in metadata.items()}


def is_sparse_vector(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SPARSE_TYPE_KEY) == SPARSE_TYPE_VALUE


def key_problem(key: str) -> str | None:
    if key == "":
        return "an empty key"
    if key[0] in "#$":
        return f"key {key!r} starting with '#' or '$'"
    if key in RESERVED_KEYS:
        return f"reserved key {key!r}"
    return None


def _scalar_problem(value: Any) -> str | None:
    if value is None:
        return "a null value"
    if isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if INT64_MIN <= value <= INT64_MAX else f"integer {value} outside int64"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"non-finite float {canonical_json(value)}"
        if value == 0.0 and math.copysign(1.0, value) < 0:
            return "-0.0 (Chroma stores 0.0)"
        return None
    if isinstance(value, list):
        return "a list value"
    return "a nested object"


def _kind(value: Any) -> type | None:
    return type(value) if isinstance(value, bool | int | float | str) else None


def value_problem(value: Any, *, lists: bool = True, sparse_ok: bool = False) -> str | None:
    """Why Chroma cannot hold `value` exactly (None when it can)."""
    if isinstance(value, list) and lists:
        if not value:
            return "an empty list"
        kinds = {_kind(v) for v in value}
        if None in kinds:
            return "a list holding nested values"
        if len(kinds) > 1:
            return "a list of mixed types"
        return next((p for p in map(_scalar_problem, value) if p), None)
    if is_sparse_vector(value):
        return _sparse_problem(value) if sparse_ok else "a sparse vector value (local Chroma cannot hold it)"
    return _scalar_problem(value)


def _sparse_problem(value: Mapping[str, Any]) -> str | None:
    """What ``SparseVector.from_dict`` would refuse: indices strictly ascending ints >= 0, one number each."""
    indices, values = value.get("indices"), value.get("values")
    if not (isinstance(indices, list) and isinstance(values, list) and len(indices) == len(values)):
        return "a malformed sparse vector value"
    if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in indices) or any(
        b <= a for a, b in pairwise(indices)
    ):
        return "a sparse vector value whose indices are not ascending ints >= 0"
    if any(not isinstance(v, int | float) or isinstance(v, bool) for v in values):
        return "a sparse vector value with non-numeric values"
    return None


def record_problems(metadata: Mapping[str, Any] | None, *, sparse_ok: bool = False) -> list[str]:
    """Every reason Chroma cannot hold this record metadata exactly, as 'key: reason' strings."""
    out: list[str] = []
    for key, value in (metadata or {}).items():
        problem = key_problem(key) or value_problem(value, sparse_ok=sparse_ok)
        if problem:
            out.append(f"{key!r}: {problem}")
    return out


def _lossy_value(value: Any, *, lists: bool, sparse_ok: bool) -> tuple[bool, Any]:
    """(keep, new value) under the lossy rules; deterministic so the restore checks see what is written."""
    if value_problem(value, lists=lists, sparse_ok=sparse_ok) is None:
        return True, value
    if value is None:
        return False, None  # nulls are dropped
    if isinstance(value, float) and math.isfinite(value):
        return True, 0.0  # -0.0, the only finite float Chroma changes
    if isinstance(value, list) and lists:
        fixed = [0.0 if isinstance(v, float) and v == 0.0 else v for v in value]
        if value_problem(fixed, lists=True) is None:
            return True, fixed
    if isinstance(value, int) and not isinstance(value, bool):
        return True, str(value)  # outside int64: its decimal string
    # nested objects, sparse vectors, empty/mixed/nested lists, NaN and infinities: canonical JSON text
    return True, canonical_json(value)


def lossy_record(metadata: Mapping[str, Any] | None, *, sparse_ok: bool = False) -> dict[str, Any] | None:
    """The documented lossy mapping of a record's metadata (None when nothing is left)."""
    out: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if key_problem(key):
            continue  # a key Chroma refuses is dropped
        keep, new = _lossy_value(value, lists=True, sparse_ok=sparse_ok)
        if keep:
            out[key] = new
    return out or None


def to_chroma(metadata: Mapping[str, Any] | None, sparse_vector: type | None = None) -> dict[str, Any] | None:
    """A checked canonical metadata dict -> the dict ``collection.add`` takes.

    Tagged sparse-vector dicts become ``sparse_vector`` instances (Chroma's ``SparseVector`` class, passed
    in so this module does not import chromadb) when the target holds them."""
    if not metadata:
        return None
    if sparse_vector is None:
        return dict(metadata)
    return {
        k: (sparse_vector.from_dict(v) if is_sparse_vector(v) else v)  # type: ignore[attr-defined]
        for k, v in metadata.items()
    }


def batch_transform(
    source: pa.Schema, target: pa.Schema, *, lossy_metadata: bool, sparse_ok: bool = False
) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """Canonical batch of `source` -> canonical batch of `target`: drop the columns Chroma cannot hold and,
    when lossy, map the metadata (deterministic, so the restore checks see exactly what is written)."""
    if source == target and not lossy_metadata:
        return identity

    def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = []
        for field in target:
            column = batch.column(field.name)
            if column.type != field.type:  # e.g. a list child named "element" after a Parquet round trip
                column = column.cast(field.type)
            if field.name == "metadata" and lossy_metadata:
                texts = column.to_pylist()
                mapped = [metadata_json(lossy_record(parse_metadata(t), sparse_ok=sparse_ok)) for t in texts]
                column = pa.array(mapped, pa.string())
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=target)

    return transform


# --- records ------------------------------------------------------------------------------------------


def page_to_batch(name: str, schema: pa.Schema, size: int | None, page: Mapping[str, Any]) -> pa.RecordBatch:
    """A ``collection.get()`` page -> canonical batch of `schema` (`size`: the dimension, None: no vector)."""
    ids = list(page["ids"])
    n = len(ids)
    arrays: list[pa.Array] = [pa.array(ids, pa.string())]
    if size is not None:
        arrays.append(_embeddings(name, page["embeddings"], n, size))
    for key in ("documents", "uris"):
        arrays.append(pa.array(page.get(key) or [None] * n, pa.string()))
    metadatas = page.get("metadatas") or [None] * n
    arrays.append(pa.array([metadata_json(from_chroma(m)) for m in metadatas], pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _embeddings(name: str, embeddings: Any, n: int, size: int) -> pa.Array:
    """The vector column of a page: `embeddings` as :func:`raw_get` returns them (lists of Python floats)
    or as ``Collection.get`` does (a float64 matrix). Values are float32 in Chroma: the nearest float32 of
    what it returns is the stored value."""
    if isinstance(embeddings, np.ndarray):
        matrix = np.asarray(embeddings, dtype=np.float64)
        if matrix.shape != (n, size):
            raise SourceDataError(f"collection {name!r}: embeddings of shape {matrix.shape}, expected ({n}, {size})")
        flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, size)
    cells = list(embeddings)
    if len(cells) != n or any(cell is None for cell in cells):
        raise SourceDataError(f"collection {name!r}: {len(cells)} embeddings for {n} records")
    try:
        return dense_array(cells, size)
    except (ValueError, TypeError) as exc:
        raise SourceDataError(f"collection {name!r}: an embedding is not a list of {size} numbers ({exc})") from None


def add_arguments(
    name: str, batch: pa.RecordBatch, spec: DenseVectorSpec | None, sparse_vector: type | None = None
) -> dict[str, Any]:
    """A canonical batch -> keyword arguments of ``collection.add``, refusing what Chroma can't hold.

    `sparse_vector` is chromadb's ``SparseVector`` class when the target holds such metadata values."""
    ids = batch.column("id").to_pylist()
    if "" in ids:
        raise UnsupportedFeatureError(f"collection {name!r}: Chroma cannot hold an empty record id")
    if spec is None:
        raise UnsupportedFeatureError(f"collection {name!r}: record {ids[0]!r} has no dense vector")
    column = batch.column(dense_column(spec.name))
    if column.null_count:
        bad = ids[column.is_null().to_numpy(zero_copy_only=False).argmax()]
        raise UnsupportedFeatureError(
            f"collection {name!r}: record {bad!r} has no dense vector {spec.name!r}; Chroma needs one for every record"
        )
    flat = column.values.slice(column.offset * spec.size, len(column) * spec.size)
    matrix = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, spec.size)
    bad_rows = ~np.isfinite(matrix).all(axis=1)
    if spec.distance == "cosine":  # Chroma keeps the norm in float32: its square must stay normal
        norm2 = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
        bad_rows |= (norm2 > F32_MAX) | ((norm2 < F32_MIN_NORMAL) & (norm2 > 0))
    if bad_rows.any():
        raise UnsupportedFeatureError(
            f"collection {name!r}: record {ids[int(bad_rows.argmax())]!r} has a vector Chroma cannot "
            "hold (non-finite components, or in a cosine collection a norm beyond float32 range)"
        )
    metadatas = []
    for record_id, text in zip(ids, batch.column("metadata").to_pylist(), strict=True):
        metadata = parse_metadata(text)
        problems = record_problems(metadata, sparse_ok=sparse_vector is not None)
        if problems:
            raise UnsupportedFeatureError(
                f"collection {name!r}: record {record_id!r} has metadata Chroma cannot hold "
                f"({'; '.join(problems)}); restore with --allow-lossy to apply the documented mapping"
            )
        metadatas.append(to_chroma(metadata, sparse_vector))
    documents, uris = batch.column("document").to_pylist(), batch.column("uri").to_pylist()
    return {
        "ids": ids,
        "embeddings": matrix,
        "metadatas": metadatas if any(m is not None for m in metadatas) else None,
        "documents": documents if any(d is not None for d in documents) else None,
        "uris": uris if any(u is not None for u in uris) else None,
    }


# --- collection metadata ---------------------------------------------------------------------------------


def collection_problems(metadata: Mapping[str, Any] | None) -> list[str]:
    """Why Chroma cannot hold this collection metadata exactly ('key: reason'); scalars only."""
    out: list[str] = []
    for key, value in (metadata or {}).items():
        problem = key_problem(key) or value_problem(value, lists=False)
        if problem:
            out.append(f"{key!r}: {problem}")
    return out


def lossy_collection(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if key_problem(key):
            continue
        keep, new = _lossy_value(value, lists=False, sparse_ok=False)
        if keep:
            out[key] = new
    return out or None


def neutral_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Collection metadata without the keys that only mirror configuration or carry the vector name."""
    out = {k: v for k, v in (metadata or {}).items() if not (k.startswith(LEGACY_PREFIX) or k == VECTOR_NAME_KEY)}
    return out or None


# --- configuration ---------------------------------------------------------------------------------------


def index_config(configuration: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The vector index part of a configuration_json: hnsw (local Chroma) or spann (distributed)."""
    configuration = configuration or {}
    return configuration.get("hnsw") or configuration.get("spann") or {}


def space_of(configuration: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None) -> str:
    """The collection's space: configuration first, then legacy ``hnsw:space`` metadata, then Chroma's l2."""
    space = index_config(configuration).get("space") or (metadata or {}).get("hnsw:space") or "l2"
    return str(space)


def neutral_hnsw(configuration: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chroma's hnsw parameters under their neutral names (m, ef_construction, ef_search)."""
    index = index_config(configuration)
    out = {neutral: index[native] for neutral, native in HNSW_NAMES.items() if index.get(native) is not None}
    return out or None


def cross_kind_configuration(space: str, hnsw: Mapping[str, Any] | None) -> dict[str, Any]:
    """A Chroma create configuration from neutral fields (no embedding function: we always embed)."""
    config: dict[str, Any] = {"space": space}
    for neutral, native in HNSW_NAMES.items():
        value = (hnsw or {}).get(neutral)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            config[native] = value
    return {"hnsw": config}


def create_route(
    configuration: Mapping[str, Any] | None, schema: Mapping[str, Any] | None, metadata: Mapping[str, Any]
) -> str:
    """How to recreate a Chroma collection exactly: "metadata", "schema" or "configuration".

    No embedding function recorded means the collection was created from metadata alone (passing a
    configuration records ``legacy``, a schema the default function): recreate it that way, then apply
    the hnsw settings changed since (:func:`hnsw_updates`). Chroma refuses a schema together with legacy
    ``hnsw:*`` metadata (it counts as configuration): such a collection comes from its configuration."""
    if configuration is not None and configuration.get("embedding_function") is None:
        return "metadata"
    if schema is not None and not any(k.startswith(LEGACY_PREFIX) for k in metadata):
        return "schema"
    return "configuration"


#: hnsw settings Chroma lets ``collection.modify`` change after creation.
HNSW_UPDATABLE = ("ef_search", "num_threads", "batch_size", "sync_threshold", "resize_factor")


def hnsw_updates(wanted: Mapping[str, Any] | None, have: Mapping[str, Any] | None) -> dict[str, Any]:
    """The updatable hnsw settings of configuration `wanted` that differ in configuration `have`."""
    want, got = (wanted or {}).get("hnsw") or {}, (have or {}).get("hnsw") or {}
    return {k: want[k] for k in HNSW_UPDATABLE if want.get(k) is not None and want[k] != got.get(k)}


def embedding_function_names(*docs: Any) -> set[str]:
    """Names of the 'known' embedding functions a configuration/schema JSON refers to."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ef = node.get("embedding_function")
            if isinstance(ef, dict) and ef.get("type") == "known" and isinstance(ef.get("name"), str):
                names.add(ef["name"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    for doc in docs:
        walk(doc)
    return names


@contextmanager
def standin_embedding_functions(names: set[str]) -> Iterator[None]:
    """While active, Chroma's registry builds a stand-in for each named embedding function.

    Recreating a collection from its configuration/schema JSON makes chromadb *build* each embedding
    function from its config (``known_embedding_functions[name].build_from_config``), which may need a
    package, an API key in the environment, or a model download we must never trigger; when that fails
    chromadb silently records ``legacy`` instead. The stand-in reproduces name and config exactly and
    refuses to embed (aibackup always passes embeddings). The registry entries are restored on exit.
    """
    if not names:
        yield
        return
    from chromadb.api.types import EmbeddingFunction
    from chromadb.utils.embedding_functions import known_embedding_functions as registry

    saved = {name: registry.get(name) for name in names}
    try:
        for name in names:
            registry[name] = _standin_class(EmbeddingFunction, name)
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                registry.pop(name, None)
            else:
                registry[name] = previous


def _standin_class(base: type, ef_name: str) -> type:
    class RestoredEmbeddingFunction(base):
        def __init__(self, config: dict[str, Any]) -> None:
            self._config = dict(config)

        def __call__(self, input: Any) -> Any:  # chromadb's protocol checks the parameter name `input`
            raise RuntimeError(f"aibackup never embeds: {ef_name!r} is a stand-in for its configuration")

        @staticmethod
        def name() -> str:
            return ef_name

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> RestoredEmbeddingFunction:
            return RestoredEmbeddingFunction(config)

        def get_config(self) -> dict[str, Any]:
            return dict(self._config)

        @staticmethod
        def validate_config(config: dict[str, Any]) -> None:
            return None

        def is_legacy(self) -> bool:
            return False

        def supported_spaces(self) -> list[str]:
            return list(SPACES)  # no "unsupported space" warning: the space is restored as it was

    return RestoredEmbeddingFunction
