"""The canonical metadata JSON of many records at once, column by column.

:func:`metadata_texts` gives, for each record, the very text :func:`aibackup.manifests.vectors.metadata_json`
makes of the dict ``{column: value}`` of its non-null values (sorted keys, no spaces, UTF-8, ints exact,
floats by ``repr``, NaN/Infinity as Python's JSON writes them; null for a record with none), byte for byte,
but built per column: Arrow casts for ints and booleans, the C string and float formatters of Python's json
module for text and floats, the C encoder per value only for lists and objects. A backup of 100k records
with three metadata columns spends ~0.1 s here where a dict and a ``metadata_json`` per record took ~0.8 s.
"""

from __future__ import annotations

import json.encoder
import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aibackup.manifests.vectors import canonical_json

__all__ = ["json_texts", "metadata_texts"]

_encode_string = json.encoder.encode_basestring  # what canonical JSON writes a str with (not ASCII-escaped)


def _float_text(value: float) -> str:
    if math.isfinite(value):
        return float.__repr__(value)
    return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"


def json_texts(array: pa.Array) -> pa.Array:
    """Each value of a JSON-ready column (:func:`.values.to_json_ready`) as its canonical JSON text; a null
    value stays null."""
    typ = array.type
    if pa.types.is_null(typ):
        return pa.nulls(len(array), pa.string())
    if pa.types.is_boolean(typ):
        return pc.if_else(array, "true", "false")
    if pa.types.is_integer(typ):
        return pc.cast(array, pa.string())
    mask = array.is_null() if array.null_count else None
    if pa.types.is_floating(typ):
        floats = array.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        if np.isfinite(floats).all():
            texts = list(map(float.__repr__, floats.tolist()))
        else:
            texts = list(map(_float_text, floats.tolist()))
        return pa.array(texts, pa.string(), mask=mask)
    values = array.to_pylist()
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return pa.array([None if v is None else _encode_string(v) for v in values], pa.string())
    return pa.array([None if v is None else canonical_json(v) for v in values], pa.string())


def metadata_texts(keys: Sequence[str], arrays: Sequence[pa.Array]) -> pa.Array:
    """The canonical metadata JSON of each record of JSON-ready columns `arrays` named `keys`: the keys
    sorted, a null value leaves its key out, a record without any is null."""
    parts = []
    for key, array in sorted(zip(keys, arrays, strict=True), key=lambda pair: pair[0]):
        prefix = "," + _encode_string(key) + ":"
        parts.append(pc.binary_join_element_wise(prefix, json_texts(array), "").fill_null(""))
    # Never null_handling="skip": pyarrow 26 drops the rows where every input is null (the result shrinks).
    joined = pc.binary_join_element_wise(*parts, "") if len(parts) > 1 else parts[0]
    wrapped = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 1), "}", "")
    return pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), wrapped)
