"""LangChain's and LlamaIndex's tables in LanceDB: what they are, so that a collection of another backend
restores into the table the framework's own class reads.

LangChain (``langchain_community.vectorstores.LanceDB``) writes ``vector``, ``id``, ``text`` and
``metadata`` (a struct of the document's metadata); LlamaIndex (``LanceDBVectorStore``) writes ``id`` (the
node id), ``doc_id`` (the node's ``ref_doc_id``), ``vector``, ``text`` and ``metadata`` (a struct of
``node_to_metadata_dict``: ``_node_content`` with the text, ``_node_type``, ``doc_id``, ``document_id``,
``ref_doc_id`` and the node's metadata). Read by this connector, the ``metadata`` struct (and ``doc_id``)
are keys of the record's metadata, the text its document.

A struct column has one type for every row, so the table's ``metadata`` type is learned from the records
being restored (:func:`metadata_type`): every record must hold the same keys (the framework could not have
written them otherwise), each key one JSON type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from aibackup.connectors.lancedb.tables import DISTANCE_KEY, METRICS, Columns, native_config
from aibackup.errors import UnsupportedFeatureError, first_line
from aibackup.manifests.model import DenseVectorSpec

VECTOR, ID, TEXT, METADATA, DOC_ID = "vector", "id", "text", "metadata", "doc_id"


def metadata_type(collection: str, metadatas: Iterable[Mapping[str, Any]]) -> pa.DataType:
    """The struct type of the ``metadata`` column for `metadatas` (every record's, in order). Raises
    UnsupportedFeatureError naming the collection when records hold different keys, or a key values a
    struct field cannot hold alike (text in one record, a number in another)."""
    keys: list[str] | None = None
    fields: dict[str, pa.DataType] = {}
    for n, metadata in enumerate(metadatas):
        if keys is None:
            keys = list(metadata)
        elif set(metadata) != set(keys):
            raise UnsupportedFeatureError(
                f"collection {collection!r}: record {n} holds metadata keys {sorted(metadata)}, the first "
                f"{sorted(keys)}: LanceDB's metadata struct holds one set of keys; restore with --layout raw"
            )
        for key, value in metadata.items():
            if value is None:
                continue
            typ = _value_type(collection, key, value)
            if fields.setdefault(key, typ) != typ:  # a number read back as another would not be the record's
                raise UnsupportedFeatureError(
                    f"collection {collection!r}: metadata key {key!r} holds {fields[key]} and {typ}: "
                    "LanceDB's metadata struct holds one type per key; restore with --layout raw"
                )
    if not keys:
        raise UnsupportedFeatureError(
            f"collection {collection!r}: the records hold no metadata, which LanceDB's metadata struct cannot "
            "hold (a struct needs a field); restore with --layout raw"
        )
    return pa.struct([pa.field(key, fields.get(key, pa.string())) for key in keys])


def _value_type(collection: str, key: str, value: Any) -> pa.DataType:
    """The Arrow type of one metadata value, when a struct field of it gives the value back as it is:
    UnsupportedFeatureError for one Arrow cannot type (an integer past 64 bits, a list mixing numbers and
    text), an empty object (an empty struct; LanceDB then reads the record's other keys back as None) or
    objects in a list with different keys (read back with the others' keys added as None)."""
    try:
        typ = pa.array([value]).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise UnsupportedFeatureError(
            f"collection {collection!r}: metadata key {key!r} holds a value LanceDB's metadata struct cannot "
            f"type ({first_line(exc)}); restore with --layout raw"
        ) from None
    if pa.types.is_nested(typ) and (_has_empty_struct(typ) or pa.array([value], type=typ).to_pylist()[0] != value):
        raise UnsupportedFeatureError(
            f"collection {collection!r}: metadata key {key!r} holds {value!r:.80}, which LanceDB's metadata struct "
            "would not give back as it is (an empty object, or objects with different keys); restore with "
            "--layout raw"
        )
    return typ


def _has_empty_struct(typ: pa.DataType) -> bool:
    if pa.types.is_struct(typ):
        return typ.num_fields == 0 or any(_has_empty_struct(typ.field(i).type) for i in range(typ.num_fields))
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return _has_empty_struct(typ.value_type)
    return False


def native_definition(framework: str, spec: DenseVectorSpec, metadata: pa.DataType) -> dict[str, Any]:
    """A LanceDB bundle's definition of the framework's table (the connector's LanceDB -> LanceDB path makes
    it): the vector column records its distance, so the restored table says it."""
    vector = pa.field(VECTOR, pa.list_(pa.float32(), spec.size))
    if spec.distance in METRICS:
        vector = vector.with_metadata({DISTANCE_KEY: spec.distance.encode()})
    if framework == "langchain":
        fields = [vector, pa.field(ID, pa.string()), pa.field(TEXT, pa.string()), pa.field(METADATA, metadata)]
        keys = [METADATA]
    else:
        fields = [pa.field(ID, pa.string()), pa.field(DOC_ID, pa.string()), vector]
        fields += [pa.field(TEXT, pa.string()), pa.field(METADATA, metadata)]
        keys = [DOC_ID, METADATA]
    schema = pa.schema(fields)
    columns = Columns(id=ID, vectors=(("", VECTOR),), document=TEXT, metadata=tuple(keys))
    return native_config(schema, columns, [], {"": "recorded by the restore that wrote the table"}, None, None)
