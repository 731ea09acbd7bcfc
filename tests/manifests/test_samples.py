"""Bundles written by earlier versions keep loading, verifying and restoring.

``samples/repo-<version>/`` is a whole repository written by that version of aibackup (a Chroma collection
with cosine vectors, documents, uris and metadata; a Qdrant collection with named, multi and sparse
vectors and nested payload; from 0.4.0, a full bundle of the Chroma collection and an incremental link
after it: 10 records changed, 5 deleted, 5 added). Add a new one whenever the format changes; never edit an old one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aibackup import manifests
from aibackup.manifests.model import DIGEST_ALGORITHMS, BundleManifest

SAMPLES = sorted((Path(__file__).parent / "samples").glob("repo-*"))


def test_there_are_samples() -> None:
    assert SAMPLES, "no sample repositories found"


def test_samples_cover_every_digest_algorithm() -> None:
    """Each algorithm a manifest may name is read, verified and restored from a real bundle below."""
    used = {
        dataset.digest_algorithm
        for path in (Path(__file__).parent / "samples").glob("repo-*/bundles/*.json")
        for dataset in BundleManifest.from_bytes(path.read_bytes(), str(path)).datasets
    }
    assert used == set(DIGEST_ALGORITHMS)


@pytest.mark.parametrize("repo", SAMPLES, ids=lambda p: p.name)
def test_sample_manifests_load_and_validate(repo: Path) -> None:
    paths = sorted(repo.glob("bundles/*.json"))
    assert len(paths) == 2
    for path in paths:
        manifest = BundleManifest.from_bytes(path.read_bytes(), str(path))
        assert manifest.bundle_id == path.stem
        jsonschema.validate(json.loads(path.read_bytes()), manifests.json_schema())


@pytest.mark.parametrize("repo", SAMPLES, ids=lambda p: p.name)
def test_sample_repository_verifies_and_restores(repo: Path, tmp_path: Path, cli: Any) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    verified = cli("verify", "--read-data", "--repo", str(copy), "--json")
    assert verified.code == 0 and verified.json()["ok"], verified
    for n, bundle in enumerate(cli("list", "--repo", str(copy), "--json").json()):
        kind = "qdrant" if bundle["source"]["kind"] == "chroma" else "chroma"
        # A store per bundle: the two bundles of a chain (0.4.0) hold the same collection.
        args = ["restore", bundle["bundle_id"], "--repo", str(copy), "--to", f"{kind}:{tmp_path / f'{kind}-{n}'}"]
        if kind == "chroma":
            args.append("--allow-lossy")  # named, multi and sparse vectors do not all fit into Chroma
        restored = cli(*args, "--json")
        assert restored.code == 0 and restored.json()["ok"], restored
