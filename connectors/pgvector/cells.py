"""A restore's canonical batches as the binary COPY cells of its staging columns (id, dense vectors, sparse
vectors, document, uri, metadata), through :mod:`.codec`.

:func:`cells` also refuses, naming the collection and the record, a value PostgreSQL cannot hold: NaN or
Infinity in a vector or in metadata, -0.0 in metadata, a NUL character in text or metadata, a sparse vector
that does not fit its ``sparsevec`` or holds an explicit zero, a halfvec value float16 cannot hold exactly.
With ``check_only`` it checks without encoding (``validate_records``). Whole floats of metadata written with
an exponent (``1e+20``) are written with a fraction, so that jsonb keeps them floats.
"""

from __future__ import annotations

import decimal
import json
import math
import re
from typing import Any

import numpy as np
import pyarrow as pa

from aibackup.connectors.base import ImportPlan
from aibackup.connectors.pgvector import codec
from aibackup.errors import UnsupportedFeatureError
from aibackup.manifests.vectors import DOCUMENT, ID, METADATA, URI, dense_column, sparse_column

#: The dimension a sparse vector of unknown dimension is written with (pgvector's limit).
SPARSE_MAX_DIM = 1_000_000_000


def cells(plan: ImportPlan, batch: pa.RecordBatch, *, check_only: bool) -> list[list[bytes | None]]:
    """The binary COPY cells of the staging columns for `batch`, or UnsupportedFeatureError naming the
    collection and the record when a value cannot go into PostgreSQL."""
    name = plan.target.name
    ids = batch.column(ID).to_pylist()
    cfg = plan.target.config
    out: list[list[bytes | None]] = [[_text(i, name, i, "id") for i in ids]]
    for d in cfg.dense:
        column = batch.column(dense_column(d.name))
        values = _dense_matrix(column, d.size)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise UnsupportedFeatureError(
                f"collection {name}: record {ids[bad]!r} has NaN or Infinity in vector {d.name or 'default'} "
                "(pgvector refuses them)"
            )
        if check_only:
            continue
        kind = "halfvec" if d.datatype == "float16" else "vector"
        try:
            encoded: list[bytes | None] = list(codec.encode_dense_cells(values, kind))
        except ValueError as exc:
            raise UnsupportedFeatureError(f"collection {name}: vector {d.name or 'default'}: {exc}") from None
        if column.null_count:
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            encoded = [e if v else None for e, v in zip(encoded, valid, strict=True)]
        out.append(encoded)
    for s in cfg.sparse:
        dim = int(s.options.get("dim") or SPARSE_MAX_DIM)
        cells_: list[bytes | None] = []
        for rid, cell in zip(ids, batch.column(sparse_column(s.name)).to_pylist(), strict=True):
            if cell is None:
                cells_.append(None)
                continue
            order = np.argsort(np.asarray(cell["indices"], dtype=np.int64), kind="stable")
            indices = np.asarray(cell["indices"], dtype=np.int64)[order]
            if len(indices) and (indices[-1] >= dim or (np.diff(indices) == 0).any()):
                raise UnsupportedFeatureError(
                    f"collection {name}: record {rid!r}: sparse {s.name} does not fit sparsevec({dim})"
                )
            if 0.0 in cell["values"]:
                raise UnsupportedFeatureError(
                    f"collection {name}: record {rid!r}: sparse {s.name} holds an explicit zero, which "
                    "sparsevec cannot (--allow-lossy leaves zeros out)"
                )
            cells_.append(
                None if check_only else codec.encode_sparse(dim, indices, np.asarray(cell["values"], np.float32)[order])
            )
        out.append(cells_)
    out.append([_text(d, name, i, "document") for i, d in zip(ids, batch.column(DOCUMENT).to_pylist(), strict=True)])
    out.append([_text(u, name, i, "uri") for i, u in zip(ids, batch.column(URI).to_pylist(), strict=True)])
    out.append([_jsonb(m, name, i) for i, m in zip(ids, batch.column(METADATA).to_pylist(), strict=True)])
    return out


def _dense_matrix(column: pa.Array, size: int) -> np.ndarray:
    """The (rows, size) float32 values of a fixed-size list column; zeros where a cell is null."""
    out = np.zeros((len(column), size), dtype=np.float32)
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        present = column.filter(column.is_valid())
        out[valid] = present.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
    elif len(column):
        out[:] = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
    return out


def _text(value: str | None, collection: str, record: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if "\x00" in value:
        raise UnsupportedFeatureError(
            f"collection {collection}: record {record!r}: its {what} holds a NUL character (PostgreSQL text cannot)"
        )
    return value.encode("utf-8")


def _jsonb(text: str | None, collection: str, record: Any) -> bytes | None:
    """jsonb's binary form (version 1, then the JSON text) of a metadata cell."""
    if text is None:
        return None
    if "\\u0000" in text or "\x00" in text:
        raise UnsupportedFeatureError(
            f"collection {collection}: record {record!r}: metadata holds a NUL character (jsonb cannot)"
        )
    exponent = _EXPONENT.search(text)
    if "NaN" in text or "Infinity" in text or exponent or _NEGATIVE_ZERO.search(text):  # else parsing finds nothing
        value = json.loads(text)
        problem = _jsonb_problem(value)
        if problem:
            raise UnsupportedFeatureError(f"collection {collection}: record {record!r}: metadata holds {problem}")
        if exponent and _has_whole_float(value):
            text = _jsonb_text(value)
    return b"\x01" + text.encode("utf-8")


#: A JSON number written with an exponent (``1e+20``), or text inside a string that looks like one (then
#: the parse finds nothing to change). Number tokens follow ``:``, ``[`` or ``,``: a date or a hex id in a
#: string does not match.
_EXPONENT = re.compile(r"[:\[,]\s*-?[0-9]+(?:\.[0-9]+)?[eE]")
#: A JSON -0.0 (or -0, -0.0e…) token.
_NEGATIVE_ZERO = re.compile(r"[:\[,]\s*-0(?:\.0+)?(?:[eE][+-]?[0-9]+)?\s*[,\]}]")


def _jsonb_problem(value: Any) -> str | None:
    """What jsonb cannot hold in `value`: NaN or Infinity, or a negative zero (jsonb numbers are
    ``numeric``, which has no negative zero: -0.0 would come back as 0.0)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN or Infinity, which jsonb cannot"
        return "-0.0, which jsonb would keep as 0.0" if value == 0.0 and math.copysign(1.0, value) < 0 else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((p for p in map(_jsonb_problem, items) if p), None)


def _has_whole_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_has_whole_float(v) for v in items)


def _jsonb_text(value: Any) -> str:
    """`value` as JSON text whose whole floats keep a fraction (``100000000000000000000.0``): jsonb keeps a
    number as written, so ``1e+20`` (Python's form of a float from 1e16 up) would come back as the integer
    100000000000000000000 and fail the restore's record comparison."""
    if isinstance(value, float) and value.is_integer():
        text = format(decimal.Decimal(repr(value)), "f")  # "1.0" stays; "1e+20" gains its ".0"
        return text if "." in text else text + ".0"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_jsonb_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_jsonb_text, value)) + "]"
    return json.dumps(value)
