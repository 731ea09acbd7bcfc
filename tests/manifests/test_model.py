"""Manifest models: strict parsing, self-checksum, canonical bytes, version gate, the published schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from aibackup import manifests
from aibackup.manifests.model import (
    FORMAT_VERSION,
    BundleManifest,
    DatasetManifest,
    FieldEntry,
    ManifestError,
    ManifestVersionTooNewError,
    PartEntry,
    canonical_bytes,
)
from tests.vectordata import config


def sample_manifest() -> BundleManifest:
    cfg = config(4, "cosine")
    dataset = DatasetManifest(
        name="docs ✓",
        kind="vectors",
        rows=3,
        schema=(FieldEntry("id", "string", False),),
        config=cfg.to_json(),
        digest="0" * 31 + "1",
        parts=(PartEntry("data/x/000-docs/part-00000.parquet", 3, 100, "a" * 64),),
        id_types={"string": 3},
    )
    return BundleManifest(
        bundle_id="20261125T020000.000000Z-0123abcd",
        created_at="2026-11-25T02:00:00.000000Z",
        tool_version="0.1.0",
        source={"kind": "chroma", "uri": "chroma:/data"},
        datasets=(dataset,),
    )


def test_round_trip_is_exact() -> None:
    m = sample_manifest()
    data = m.to_bytes()
    back = BundleManifest.from_bytes(data)
    assert back == m
    assert back.to_bytes() == data


def test_written_manifest_validates_against_published_schema() -> None:
    jsonschema.validate(json.loads(sample_manifest().to_bytes()), manifests.json_schema())


def test_any_changed_value_is_detected_by_the_checksum() -> None:
    doc = json.loads(sample_manifest().to_bytes())
    doc["datasets"][0]["rows"] = 4
    doc["datasets"][0]["parts"][0]["rows"] = 4  # consistent, but not what was committed
    with pytest.raises(ManifestError, match="checksum mismatch"):
        BundleManifest.from_bytes(canonical_bytes(doc) + b"\n")


def test_a_semantically_neutral_byte_change_is_still_detected() -> None:
    data = sample_manifest().to_bytes()
    changed = data.replace(b'{"bundle_id"', b'{ "bundle_id"', 1)
    assert json.loads(changed) == json.loads(data)
    with pytest.raises(ManifestError, match="canonical"):
        BundleManifest.from_bytes(changed)


@pytest.mark.parametrize("position", range(0, 2000, 37))
def test_every_flipped_byte_is_detected(position: int) -> None:
    data = bytearray(sample_manifest().to_bytes())
    position %= len(data)
    data[position] ^= 0x01
    with pytest.raises(ManifestError):
        BundleManifest.from_bytes(bytes(data))


def test_newer_format_is_refused_with_its_version() -> None:
    doc = json.loads(sample_manifest().to_bytes())
    doc["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ManifestVersionTooNewError, match=f"version {FORMAT_VERSION + 1}"):
        BundleManifest.from_bytes(canonical_bytes(doc) + b"\n")


def test_missing_field_is_named() -> None:
    doc = sample_manifest().to_json()
    del doc["datasets"][0]["digest"]
    body = {k: v for k, v in doc.items() if k != "checksum"}
    import hashlib

    doc["checksum"]["value"] = hashlib.sha256(canonical_bytes(body)).hexdigest()
    with pytest.raises(ManifestError, match="'digest'"):
        BundleManifest.from_bytes(canonical_bytes(doc) + b"\n")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-11-25T02:00:00.123456Z", True),
        ("2026-11-25T02:00:00Z", True),
        ("garbage", False),
        ("2026-13-45T02:00:00Z", False),
        ("2026-11-25T02:00:00+01:00", False),  # the format writes UTC, with a Z
        ("2026-11-25Z", False),
    ],
)
def test_created_at_must_be_a_utc_time(value: str, ok: bool) -> None:
    """Listings, status and metrics read it as a time: a checksum-valid manifest with another value is
    damaged (it listed as 'garbageZ', and status's age of it raised)."""
    import hashlib

    doc = sample_manifest().to_json()
    doc["created_at"] = value
    body = {k: v for k, v in doc.items() if k != "checksum"}
    doc["checksum"]["value"] = hashlib.sha256(canonical_bytes(body)).hexdigest()
    data = canonical_bytes(doc) + b"\n"
    if ok:
        assert BundleManifest.from_bytes(data).created_at == value
    else:
        with pytest.raises(ManifestError, match="created_at: expected an ISO 8601 UTC time"):
            BundleManifest.from_bytes(data)


def test_part_paths_cannot_escape_the_repository() -> None:
    with pytest.raises(ManifestError, match="not a part path"):
        PartEntry.from_json({"path": "data/../../etc/passwd", "rows": 1, "bytes": 1, "sha256": "a" * 64}, "p")
