"""pgvector's binary COPY form, decoded and encoded without a Python object per value, against a real
PostgreSQL 18 with pgvector 0.8 (the `postgres` fixture): what the server sends decodes to what it holds,
and what we encode loads into what we meant."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aibackup.connectors.pgvector.codec import decode_vectors, encode_vectors
from tests.conftest import Postgres

pytestmark = pytest.mark.postgres


def _copy_out(conn: Any, query: str) -> bytes:
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as copy:
        return b"".join(bytes(chunk) for chunk in copy)


def _text_vectors(conn: Any, query: str) -> np.ndarray:
    """The server's own text form of the vectors, parsed: the reference the binary form must match."""
    rows = conn.execute(query).fetchall()
    return np.array([[float(x) for x in row[0].strip("[]").split(",")] for row in rows], dtype=np.float32)


@pytest.mark.parametrize("kind", ["vector", "halfvec"])
def test_what_the_server_sends_decodes_to_what_it_holds(postgres: Postgres, kind: str) -> None:
    rng = np.random.default_rng(18)
    values = rng.standard_normal((500, 24)).astype(np.float32)
    if kind == "halfvec":
        values = values.astype(np.float16).astype(np.float32)  # what a halfvec can hold
    values[0, :3] = [0.0, -0.0, 1e-7 if kind == "vector" else 0.5]
    with postgres.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS codec_{kind}; CREATE TABLE codec_{kind} (id int primary key, v {kind}(24))")
        with conn.cursor() as cur, cur.copy(f"COPY codec_{kind} (id, v) FROM STDIN") as copy:
            for i, row in enumerate(values):
                copy.write_row((i, "[" + ",".join(repr(float(x)) for x in row) + "]"))
        decoded = decode_vectors(_copy_out(conn, f"SELECT v FROM codec_{kind} ORDER BY id"), 24, kind)
        reference = _text_vectors(conn, f"SELECT v::text FROM codec_{kind} ORDER BY id")
    assert decoded.dtype == np.float32 and decoded.flags.c_contiguous and decoded.shape == (500, 24)
    assert np.array_equal(decoded, values) and np.array_equal(decoded, reference)
    assert np.signbit(decoded[0, 1])  # -0.0 kept


@pytest.mark.parametrize("kind", ["vector", "halfvec"])
def test_what_we_encode_loads_as_meant(postgres: Postgres, kind: str) -> None:
    values = np.arange(30 * 8, dtype=np.float32).reshape(30, 8) / 4  # exact in float16 too
    with postgres.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS load_{kind}; CREATE TABLE load_{kind} (v {kind}(8))")
        with conn.cursor() as cur, cur.copy(f"COPY load_{kind} (v) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(encode_vectors(values, kind))
        loaded = _text_vectors(conn, f"SELECT v::text FROM load_{kind}")
    assert np.array_equal(np.sort(loaded, axis=0), values)


def test_streams_that_are_not_one_vector_column_are_refused(postgres: Postgres) -> None:
    with postgres.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS odd; CREATE TABLE odd (id int, v vector(3))")
        conn.execute("INSERT INTO odd VALUES (1, '[1,2,3]'), (2, NULL)")
        with_null = _copy_out(conn, "SELECT v FROM odd ORDER BY id")
        two_columns = _copy_out(conn, "SELECT id, v FROM odd WHERE v IS NOT NULL")
        one_row = _copy_out(conn, "SELECT v FROM odd WHERE v IS NOT NULL")
    for stream, dim in ((with_null, 3), (two_columns, 3), (one_row, 4), (one_row[:-2], 3), (b"nope", 3)):
        with pytest.raises(ValueError):
            decode_vectors(stream, dim)
    assert decode_vectors(one_row, 3).tolist() == [[1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="halfvec exactly"):
        encode_vectors(np.array([[0.1, 0.2]], dtype=np.float32), "halfvec")
