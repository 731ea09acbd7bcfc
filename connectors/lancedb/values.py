"""LanceDB column values <-> JSON, for the columns that travel as keys of a record's metadata.

:func:`to_json_ready` turns an Arrow array into one of the same length whose ``to_pylist()`` holds only what
JSON holds (None, bools, ints, floats, strings, lists, dicts); :func:`from_json_ready` builds the original
Arrow type back from such values, exactly: LanceDB -> bundle -> LanceDB gives back every value.

=================================================  =====================================================
Arrow type                                         JSON value
=================================================  =====================================================
bool, (u)int8-64, float64                          boolean, number
float32, float16                                   number: the shortest decimal that reads back as the
                                                   same float32 (0.1, not 0.10000000149011612)
string, large_string, string_view                  string
binary, large_binary, fixed_size_binary            base64 text
decimal128/256                                     text, as Arrow writes it ("-12.30")
timestamp (any unit, with or without zone),        ISO-8601 text as Arrow writes it
date32, date64                                     ("2024-01-31 12:00:00.000000Z", "2024-01-31")
time32/64, duration                                integer count of the type's unit
list, large_list, fixed_size_list                  array
struct                                             object (every field, null ones as null)
map                                                array of {"key": k, "value": v}
dictionary                                         its value; extension types: their storage
null                                               null
=================================================  =====================================================

Types outside this table (unions, intervals, list views, run-end encoded arrays) are refused:
:func:`unsupported` names them before anything is read.
"""

from __future__ import annotations

import base64

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["from_json_ready", "json_type", "needs_conversion", "to_json_ready", "unsupported"]


def _binary(typ: pa.DataType) -> bool:
    return (
        pa.types.is_binary(typ)
        or pa.types.is_large_binary(typ)
        or pa.types.is_fixed_size_binary(typ)
        or pa.types.is_binary_view(typ)
    )


def _as_text(typ: pa.DataType) -> bool:
    """Types that travel as Arrow's own text form (checked to come back exactly)."""
    return pa.types.is_timestamp(typ) or pa.types.is_date(typ) or pa.types.is_decimal(typ)


def _list_like(typ: pa.DataType) -> bool:
    return pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)


def unsupported(typ: pa.DataType) -> str | None:
    """Why a column of `typ` cannot travel as metadata (None: it can)."""
    if isinstance(typ, pa.ExtensionType):
        return unsupported(typ.storage_type)
    if pa.types.is_dictionary(typ):
        return unsupported(typ.value_type)
    if pa.types.is_map(typ):
        return unsupported(typ.key_type) or unsupported(typ.item_type)
    if _list_like(typ):
        return unsupported(typ.value_type)
    if pa.types.is_struct(typ):
        return next((why for why in (unsupported(f.type) for f in typ) if why), None)
    simple = (
        pa.types.is_null(typ)
        or pa.types.is_boolean(typ)
        or pa.types.is_integer(typ)
        or pa.types.is_floating(typ)
        or pa.types.is_string(typ)
        or pa.types.is_large_string(typ)
        or pa.types.is_string_view(typ)
        or _binary(typ)
        or _as_text(typ)
        or pa.types.is_time(typ)
        or pa.types.is_duration(typ)
    )
    return None if simple else f"Arrow type {typ} has no JSON form in aibackup"


def needs_conversion(typ: pa.DataType) -> bool:
    """Whether ``to_pylist()`` of a column of `typ` holds anything but JSON values (or a map's tuples)."""
    if isinstance(typ, pa.ExtensionType) or pa.types.is_dictionary(typ) or pa.types.is_map(typ):
        return True
    if _list_like(typ):
        return needs_conversion(typ.value_type)
    if pa.types.is_struct(typ):
        return any(needs_conversion(f.type) for f in typ)
    return _narrow_float(typ) or _binary(typ) or _as_text(typ) or pa.types.is_time(typ) or pa.types.is_duration(typ)


def _narrow_float(typ: pa.DataType) -> bool:
    return pa.types.is_float16(typ) or pa.types.is_float32(typ)


def json_type(typ: pa.DataType) -> pa.DataType:
    """The Arrow type of :func:`to_json_ready`'s result for a column of `typ`: what a column is built as
    from parsed JSON values before :func:`from_json_ready` makes `typ` of it."""
    if isinstance(typ, pa.ExtensionType):
        return json_type(typ.storage_type)
    if pa.types.is_dictionary(typ):
        return json_type(typ.value_type)
    if pa.types.is_map(typ):
        entry = pa.struct([("key", json_type(typ.key_type)), ("value", json_type(typ.item_type))])
        return pa.list_(entry)
    if _list_like(typ):
        return pa.list_(json_type(typ.value_type))
    if pa.types.is_struct(typ):
        return pa.struct([pa.field(f.name, json_type(f.type)) for f in typ])
    if _narrow_float(typ):
        return pa.float64()
    if _binary(typ) or _as_text(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return pa.string()
    if pa.types.is_time(typ) or pa.types.is_duration(typ):
        return pa.int64()
    return typ


def _mask(array: pa.Array) -> pa.Array | None:
    return array.is_null() if array.null_count else None


def to_json_ready(array: pa.Array) -> pa.Array:
    """`array` with every value in a form JSON holds (the module's table). Raises ValueError for a value
    that has no exact form there (a timestamp outside the years 0-9999)."""
    typ = array.type
    if not needs_conversion(typ):
        return array
    if isinstance(typ, pa.ExtensionType):
        return to_json_ready(array.storage)
    if pa.types.is_dictionary(typ):
        return to_json_ready(array.dictionary_decode())
    if _narrow_float(typ):
        return _shortest(array.cast(pa.float32()))
    if _binary(typ):
        return pa.array([None if v is None else base64.b64encode(v).decode("ascii") for v in array.to_pylist()])
    if _as_text(typ):
        try:
            text = pc.cast(array, pa.string())
            exact = pc.cast(text, typ).equals(array)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"a {typ} value has no text form ({exc})") from None
        if not exact:
            raise ValueError(f"a {typ} value does not come back from its text form")
        return text
    if pa.types.is_time(typ) or pa.types.is_duration(typ):
        count = array.cast(pa.int32() if pa.types.is_time32(typ) else pa.int64())
        return count.cast(pa.int64())
    if pa.types.is_fixed_size_list(typ):
        size = typ.list_size
        values = array.values.slice(array.offset * size, len(array) * size)
        offsets = pa.array(range(0, (len(array) + 1) * size, size), pa.int32())
        return pa.ListArray.from_arrays(offsets, to_json_ready(values), mask=_mask(array))
    if pa.types.is_struct(typ):  # flatten(): each field for exactly this slice of the array
        children = [to_json_ready(child) for child in array.flatten()]
        fields = [pa.field(f.name, c.type) for f, c in zip(typ, children, strict=True)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=_mask(array))
    offsets, values = _list_parts(array)
    if pa.types.is_map(typ):  # values: struct<key, value>
        keys, items = values.flatten()
        entries = pa.StructArray.from_arrays([to_json_ready(keys), to_json_ready(items)], names=["key", "value"])
        return pa.ListArray.from_arrays(offsets, entries, mask=_mask(array))
    return pa.ListArray.from_arrays(offsets, to_json_ready(values), mask=_mask(array))


def _shortest(values: pa.Array) -> pa.Array:
    """float32 values as the float64 of their shortest decimal form (Arrow's float-to-text is the shortest
    text that reads back as the same float32): JSON then holds 0.1 for a float32 0.1, which every backend
    keeps as it is (Chroma changes the last digits of some 17-digit floats), and which reads back exactly.
    A value that would not (never seen in 2M values, random bit patterns included) keeps its exact widening."""
    wide = pc.cast(pc.cast(values, pa.string()), pa.float64())
    back = wide.cast(pa.float32(), safe=False)
    same = pc.or_kleene(pc.equal(back, values), pc.is_nan(values))
    if pc.all(same).as_py() is False:
        wide = pc.if_else(same, wide, values.cast(pa.float64()))
    return wide


def _list_parts(array: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The int32 offsets (from 0) and the values of exactly this slice of a list or map array: from_arrays
    takes no offsets slice together with a null mask."""
    offsets = array.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    values = array.values.slice(start, end - start)
    if start:
        offsets = pc.subtract(offsets, start)
    return offsets.cast(pa.int32()), values


def from_json_ready(array: pa.Array, typ: pa.DataType) -> pa.Array:
    """The column of type `typ` whose :func:`to_json_ready` form is `array` (of type ``json_type(typ)``,
    as ``pa.array(values, json_type(typ))`` builds it). Raises ValueError (ArrowInvalid, binascii.Error)
    for a value `typ` cannot hold."""
    if isinstance(typ, pa.ExtensionType):
        return pa.ExtensionArray.from_storage(typ, from_json_ready(array, typ.storage_type))
    if pa.types.is_dictionary(typ):
        return from_json_ready(array, typ.value_type).dictionary_encode().cast(typ)
    if not needs_conversion(typ):
        return array if array.type == typ else array.cast(typ)
    if _narrow_float(typ):
        return array.cast(typ, safe=False)
    if _binary(typ):
        raw = [None if v is None else base64.b64decode(v, validate=True) for v in array.to_pylist()]
        return pa.array(raw, typ)
    if _as_text(typ):
        return pc.cast(array, typ)
    if pa.types.is_time(typ) or pa.types.is_duration(typ):
        return (array.cast(pa.int32()) if pa.types.is_time32(typ) else array).cast(typ)
    if pa.types.is_map(typ):
        entries = array.values
        keys = from_json_ready(entries.field("key"), typ.key_type)
        items = from_json_ready(entries.field("value"), typ.item_type)
        return pa.MapArray.from_arrays(array.offsets, keys, items, type=typ, mask=_mask(array))
    if _list_like(typ):
        values = from_json_ready(array.values, typ.value_type)
        listed = pa.ListArray.from_arrays(array.offsets, values, mask=_mask(array))
        return listed.cast(typ)  # large_list, fixed_size_list (null lists padded), field names and all
    # flatten(): a null struct's fields are null too (pa.array leaves "" or 0 in them, not values of `typ`)
    children = [from_json_ready(child, f.type) for child, f in zip(array.flatten(), typ, strict=True)]
    return pa.StructArray.from_arrays(children, fields=list(typ), mask=_mask(array))
