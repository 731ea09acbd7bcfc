"""Record and dataset digests: order-independent, duplicate-sensitive, exact about every field."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from aibackup.manifests.digest import DIGEST_ALGORITHM, DIGEST_ALGORITHMS, DatasetDigest, record_digests
from aibackup.manifests.model import DenseVectorSpec, VectorsConfig
from aibackup.manifests.vectors import arrow_schema, canonical_json, float_vector_paths
from tests.vectordata import canonical_batch, config


def digest_of(*batches: pa.RecordBatch) -> str:
    d = DatasetDigest()
    for b in batches:
        d.add_batch(b)
    return d.hexdigest


def test_dataset_digest_ignores_order_and_batching() -> None:
    cfg = config(8, sparse=("bm25",))
    batch = canonical_batch(cfg, 0, 50)
    shuffled = batch.take(pa.array(list(reversed(range(50)))))
    assert digest_of(batch) == digest_of(shuffled) == digest_of(batch.slice(0, 20), batch.slice(20))


def test_duplicates_do_not_cancel() -> None:
    batch = canonical_batch(config(), 0, 2)
    twice = pa.Table.from_batches([batch, batch.slice(0, 1), batch.slice(0, 1)]).combine_chunks().to_batches()[0]
    assert digest_of(twice) != digest_of(batch)


def test_every_field_changes_the_record_digest() -> None:
    cfg = config(4, named=("image",))
    base = canonical_batch(cfg, 1, 1).to_pylist()[0]
    assert base["document"] is not None and base["uri"] is None
    variants = {
        "id": {**base, "id": base["id"] + "x"},
        "vector": {**base, "vector:image": [base["vector:image"][0] + 1e-7, *base["vector:image"][1:]]},
        "document": {**base, "document": None},
        "uri": {**base, "uri": ""},
        "metadata": {**base, "metadata": canonical_json({"n": 1.0})},
    }
    schema = arrow_schema(cfg)
    (original,) = record_digests(pa.RecordBatch.from_pylist([base], schema=schema))
    for name, row in variants.items():
        (changed,) = record_digests(pa.RecordBatch.from_pylist([row], schema=schema))
        assert changed != original, name


def test_null_and_empty_string_differ_and_framing_is_unambiguous() -> None:
    cfg = config()
    base = canonical_batch(cfg, 0, 1).to_pylist()[0]
    schema = arrow_schema(cfg)
    a = {**base, "document": "ab", "uri": "c"}
    b = {**base, "document": "a", "uri": "bc"}
    c = {**base, "document": None, "uri": ""}
    d = {**base, "document": "", "uri": None}
    digests = record_digests(pa.RecordBatch.from_pylist([a, b, c, d], schema=schema))
    assert len(set(digests)) == 4


def test_ints_and_floats_stay_apart_in_canonical_json() -> None:
    assert (
        canonical_json({"b": 1, "a": 1.0, "big": 2**70, "u": "é"})
        == '{"a":1.0,"b":1,"big":1180591620717411303424,"u":"é"}'
    )


def test_excluded_columns_leave_the_digest() -> None:
    cfg = config(4)
    rows = canonical_batch(cfg, 0, 1).to_pylist()
    schema = arrow_schema(cfg)
    other = [{**rows[0], "vector": [9.0, 9.0, 9.0, 9.0]}]
    full = record_digests(pa.RecordBatch.from_pylist(rows, schema=schema))
    assert full != record_digests(pa.RecordBatch.from_pylist(other, schema=schema))
    assert record_digests(pa.RecordBatch.from_pylist(rows, schema=schema), ["vector"]) == record_digests(
        pa.RecordBatch.from_pylist(other, schema=schema), ["vector"]
    )


def test_multivector_and_byte_stream_split_paths() -> None:
    cfg = VectorsConfig(dense=(DenseVectorSpec("colbert.v1", 3, "cosine", multivector=True),))
    schema = arrow_schema(cfg)
    assert schema.names[1] == "vector:colbert%2Ev1"
    assert float_vector_paths(schema) == ["vector:colbert%2Ev1.list.element.list.element"]
    rows = [
        {
            "id": "a",
            "vector:colbert%2Ev1": [[1, 2, 3], [4, 5, 6]],
            "document": None,
            "uri": None,
            "metadata": None,
        },
        {
            "id": "a",
            "vector:colbert%2Ev1": [
                [
                    1,
                    2,
                    3,
                ],
                [4, 5, 7],
            ],
            "document": None,
            "uri": None,
            "metadata": None,
        },
        {"id": "a", "vector:colbert%2Ev1": [[1, 2, 3]], "document": None, "uri": None, "metadata": None},
    ]
    digests = record_digests(pa.RecordBatch.from_pylist(rows, schema=schema))
    assert len(set(digests)) == 3
    # A sliced batch digests its own rows, not the rows before the slice.
    sliced = pa.RecordBatch.from_pylist(rows, schema=schema).slice(1)
    assert record_digests(sliced) == digests[1:]


def test_known_answer_locks_the_format() -> None:
    """The digest is part of the bundle format: bundles written by earlier versions must keep verifying."""
    cfg = VectorsConfig(dense=(DenseVectorSpec("", 3, "l2"), DenseVectorSpec("m", 2, "cosine", multivector=True)))
    rows = [
        {
            "id": "a",
            "vector": [0.5, -1.0, 3.25],
            "vector:m": [[1.0, 2.0], [3.0, 4.0]],
            "document": "dé",
            "uri": None,
            "metadata": canonical_json({"n": 1, "f": 1.0, "t": True}),
        },
        {"id": "17", "vector": None, "vector:m": None, "document": None, "uri": "", "metadata": None},
    ]
    batch = pa.RecordBatch.from_pylist(rows, schema=arrow_schema(cfg))
    # The second record by hand, from the module docstring's framing rules.
    framed = b"\x01" + (2).to_bytes(8, "little") + b"17" + b"\x00\x00\x00" + b"\x01" + bytes(8) + b"\x00"
    by_hand = {
        "sha256-128-sum-v1": hashlib.sha256(framed).digest()[:16],
        "blake2b128-sum-v1": hashlib.blake2b(framed, digest_size=16).digest(),
    }
    assert set(KNOWN) == set(DIGEST_ALGORITHMS) and DIGEST_ALGORITHM == "sha256-128-sum-v1"
    for algorithm, (records, dataset) in KNOWN.items():
        assert [d.hex() for d in record_digests(batch, algorithm=algorithm)] == records, algorithm
        assert by_hand[algorithm].hex() == records[1]
        digest = DatasetDigest(algorithm=algorithm)
        digest.add_batch(batch)
        assert digest.hexdigest == dataset
    assert record_digests(batch) == record_digests(batch, algorithm=DIGEST_ALGORITHM)


#: Record digests and dataset digest of the batch above, per algorithm (never edit: bundles rely on them).
KNOWN = {
    "sha256-128-sum-v1": (
        ["c9a60ceb4f7d02ddbd1cf6189343e4a0", "74e869600198227bd2261cc2d0b70649"],
        "e9eafb63db124390582515514b768f3d",
    ),
    "blake2b128-sum-v1": (
        ["fca49bfd6d97a803c44ba001f3de55a9", "b4b6729310e974a8e9bd24235d9fee60"],
        "0a447e5024c509adac1d807e910e5bb0",
    ),
}


def test_unknown_algorithm_is_refused() -> None:
    batch = canonical_batch(config(), 0, 2)
    with pytest.raises(ValueError, match="unknown digest algorithm 'md5'"):
        record_digests(batch, algorithm="md5")
    with pytest.raises(ValueError, match="unknown digest algorithm"):
        DatasetDigest(algorithm="md5")


def test_algorithms_give_different_digests() -> None:
    batch = canonical_batch(config(), 0, 5)
    sha, blake = (DatasetDigest(algorithm=a) for a in ("sha256-128-sum-v1", "blake2b128-sum-v1"))
    assert sha.add_batch(batch) != blake.add_batch(batch)
    assert sha.hexdigest != blake.hexdigest and sha.rows == blake.rows == 5
