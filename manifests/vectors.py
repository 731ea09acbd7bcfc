"""The canonical Arrow schema of a vectors dataset, shared by every vector connector.

One row per record, columns in this order:

``id``                 string, not null. Qdrant unsigned ints are written in decimal, UUIDs in canonical
                       lowercase hyphenated form, string ids as they are; the manifest counts each id type.
``vector`` / ``vector:<name>``
                       one column per dense vector, sorted by name; the unnamed (default) vector is
                       ``vector``. A plain vector is ``fixed_size_list<float32>[size]``; a multivector
                       (Qdrant ``multivector_config``) is ``list<fixed_size_list<float32>[size]>``.
                       Null where a record has no value for that vector (Qdrant named vectors are optional).
``sparse:<name>``      one column per sparse vector, sorted by name:
                       ``struct<indices: list<uint32>, values: list<float32>>``, null where absent.
``document``, ``uri``  strings, null where absent.
``metadata``           canonical JSON text of the record's metadata/payload (see :func:`canonical_json`):
                       sorted keys, no spaces, UTF-8, ints stay ints (any size), floats keep their shortest
                       round-trip repr. An absent or empty metadata map is null, never ``{}``.

In column names a vector name is escaped (``%`` -> ``%25``, ``.`` -> ``%2E``) because Parquet column paths
use ``.`` as separator (``vector:a.b`` would make ``byte_stream_split`` miss the column).
"""

from __future__ import annotations

import json
import json.encoder
from typing import Any

import pyarrow as pa

from aibackup.manifests.model import DenseVectorSpec, SparseVectorSpec, VectorsConfig

ID = "id"
DOCUMENT = "document"
URI = "uri"
METADATA = "metadata"
DENSE_PREFIX = "vector"
SPARSE_PREFIX = "sparse:"


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace(".", "%2E")


def dense_column(name: str) -> str:
    """Column holding the dense vector `name` ("" is the unnamed default vector)."""
    return DENSE_PREFIX if name == "" else f"{DENSE_PREFIX}:{_escape(name)}"


def sparse_column(name: str) -> str:
    """Column holding the sparse vector `name`."""
    return SPARSE_PREFIX + _escape(name)


def dense_type(spec: DenseVectorSpec) -> pa.DataType:
    """Arrow type of a dense vector column: a fixed-size float32 list, or a list of them for multivectors."""
    item = pa.list_(pa.float32(), spec.size)
    return pa.list_(item) if spec.multivector else item


SPARSE_TYPE = pa.struct([("indices", pa.list_(pa.uint32())), ("values", pa.list_(pa.float32()))])


def arrow_schema(config: VectorsConfig) -> pa.Schema:
    """The canonical schema of a vectors dataset with this configuration."""
    fields = [pa.field(ID, pa.string(), nullable=False)]
    fields += [pa.field(dense_column(d.name), dense_type(d)) for d in sorted_dense(config)]
    fields += [pa.field(sparse_column(s.name), SPARSE_TYPE) for s in sorted_sparse(config)]
    fields += [pa.field(DOCUMENT, pa.string()), pa.field(URI, pa.string()), pa.field(METADATA, pa.string())]
    return pa.schema(fields)


def sorted_dense(config: VectorsConfig) -> list[DenseVectorSpec]:
    return sorted(config.dense, key=lambda d: d.name)


def sorted_sparse(config: VectorsConfig) -> list[SparseVectorSpec]:
    return sorted(config.sparse, key=lambda s: s.name)


def float_vector_paths(schema: pa.Schema) -> list[str]:
    """Parquet leaf paths of the float32 vector data, for byte_stream_split encoding.

    pyarrow applies a column encoding only by the full leaf path (``vector.list.element``) and silently
    ignores any other spelling, so the paths are derived from the Arrow types here, in one place.
    """
    paths: list[str] = []
    for field in schema:
        path = _float_leaf(field.name, field.type)
        if path is not None:
            paths.append(path)
        elif pa.types.is_struct(field.type):
            for child in field.type:
                child_path = _float_leaf(f"{field.name}.{child.name}", child.type)
                if child_path is not None:
                    paths.append(child_path)
    return paths


def _float_leaf(prefix: str, typ: pa.DataType) -> str | None:
    if pa.types.is_float32(typ):
        return prefix
    if pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_large_list(typ):
        return _float_leaf(f"{prefix}.list.element", typ.value_type)
    return None


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
# json.dumps() with non-default options builds a new encoder per call, and even JSONEncoder.encode() builds
# a new C iterator per call: together half the cost on small metadata dicts. The C encoder is built once
# (same arguments JSONEncoder.iterencode passes it; the pure-Python encoder where C is unavailable).
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER = (
    _make_c_encoder(None, _CANONICAL.default, json.encoder.encode_basestring, None, ":", ",", True, False, True)
    if _make_c_encoder is not None
    else None
)


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, UTF-8 (not ASCII-escaped), ints exact, floats by repr.

    NaN and infinities are written as ``NaN``/``Infinity`` (Python's JSON extension) rather than refused,
    so whatever a backend held comes back. Text that is not valid Unicode (a lone surrogate, which a
    backend storing Python objects can hold) has no UTF-8 form: UnicodeEncodeError (a ValueError), naming it.
    """
    if _C_ENCODER is None or not isinstance(value, dict | list):
        text = _CANONICAL.encode(value)
    else:
        text = "".join(_C_ENCODER(value, 0))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            reason = "a lone surrogate: text that is not valid Unicode, with no UTF-8 form"
            raise UnicodeEncodeError("utf-8", exc.object, exc.start, exc.end, reason) from None
    return text


def metadata_json(metadata: dict[str, Any] | None) -> str | None:
    """The canonical ``metadata`` cell for a record: null for absent or empty metadata."""
    if not metadata:
        return None
    return canonical_json(metadata)


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    """Inverse of :func:`metadata_json`."""
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("metadata must be a JSON object")
    return value
