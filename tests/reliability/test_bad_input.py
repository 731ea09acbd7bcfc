"""Bad and extreme input: big payloads round-trip, and a restore that fails midway says what it left.

(Other bad input is tested where it enters: URIs, flags and configs in ``tests/aibackup/test_cli.py`` and
``test_config.py``; NaN/inf and out-of-range vectors in the connector tests; bad log lines in
``tests/connectors/test_conversations.py``; see ``docs/reliability.md``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Cli, chroma_client, ok, one_line_error, seed_chroma

TEN_MB = 10 * 1024 * 1024


def test_a_10_mb_document_and_payload_round_trip(tmp_path: Path, cli: Cli) -> None:
    """A 10 MB document in Chroma and a 10 MB payload value in Qdrant survive backup, cross-backend restore
    and the proof (record digests compare them byte for byte)."""
    from qdrant_client import QdrantClient, models

    col = chroma_client(tmp_path / "chroma").create_collection("big", embedding_function=None)
    col.add(ids=["huge", "small"], embeddings=[[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], documents=["é" * (TEN_MB // 2), "s"])
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    client.create_collection("big", vectors_config=models.VectorParams(size=3, distance=models.Distance.DOT))
    client.upsert("big", points=[models.PointStruct(id=1, vector=[0.1, 0.2, 0.3], payload={"blob": "x" * TEN_MB})])
    client.close()
    for source, target in (("chroma", "qdrant"), ("qdrant", "chroma")):
        ok(cli("backup", f"{source}:{tmp_path / source}"))
        restored = ok(cli("restore", "latest", "--to", f"{target}:{tmp_path / f'{source}-to-{target}'}", "--json"))
        assert restored.json()["ok"], restored.out


def test_a_restore_that_fails_midway_names_the_collection_it_left_partly_written(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target dies while the second collection is written: the one line says which collection may hold
    part of the bundle and which were restored (and proven) before."""
    from qdrant_client import QdrantClient

    seed_chroma(tmp_path / "chroma", "alpha", n=600)
    seed_chroma(tmp_path / "chroma", "beta", n=600)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    upsert = QdrantClient.upsert
    calls = {"beta": 0}

    def dies_in_beta(self: QdrantClient, collection_name: str, *args: Any, **kwargs: Any) -> Any:
        if collection_name == "beta":
            calls["beta"] += 1
            if calls["beta"] == 2:  # one batch of beta is written, then the connection goes
                raise ConnectionError("connection reset by peer")
        return upsert(self, collection_name, *args, **kwargs)

    monkeypatch.setattr(QdrantClient, "upsert", dies_in_beta)
    line = one_line_error(cli("restore", "latest", "--to", f"qdrant:{tmp_path / 'q'}"), 3, "connection reset")
    assert "collection 'beta', which may now hold part of the bundle (run it again with --mode overwrite)" in line
    assert "already restored: 'alpha' (checks passed)" in line
    # What the line says to do works: the same restore again, replacing what it left.
    monkeypatch.setattr(QdrantClient, "upsert", upsert)
    again = ok(cli("restore", "latest", "--to", f"qdrant:{tmp_path / 'q'}", "--mode", "overwrite", "--json"))
    assert again.json()["ok"] and {d["target"] for d in again.json()["datasets"]} == {"alpha", "beta"}


def test_text_that_is_not_valid_unicode_is_refused_naming_the_point(tmp_path: Path, cli: Cli) -> None:
    """Qdrant local mode stores Python objects, so a payload can hold a lone surrogate, which has no UTF-8
    form: the backup names the point and the text in one line (exit 2), and leaves no bundle."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("bad", vectors_config=models.VectorParams(size=3, distance=models.Distance.DOT))
    client.upsert(
        "bad",
        points=[
            models.PointStruct(id=1, vector=[0.1, 0.2, 0.3], payload={"fine": "ok"}),
            models.PointStruct(id=7, vector=[0.1, 0.2, 0.3], payload={"text": "lone \ud800 surrogate"}),
        ],
    )
    client.close()
    line = one_line_error(cli("backup", f"qdrant:{tmp_path / 'q'}", "--repo", str(tmp_path / "repo")), 2)
    assert "point 7" in line and "'bad'" in line and "not valid Unicode" in line, line
    assert not list((tmp_path / "repo").rglob("*.json"))


def test_a_bundle_with_duplicate_ids_is_never_restored_as_a_success(tmp_path: Path, cli: Cli) -> None:
    """Our connectors prove each record exported once, so only a hand-made (or future, buggy) bundle can
    hold an id twice. Qdrant keeps one point per id: the proof fails, naming the duplicates (exit 1).
    Chroma refuses the batch: the one line names the collection left partly written (exit 2)."""
    import pyarrow as pa

    from aibackup import clock
    from aibackup.bundle import BundleWriter
    from aibackup.manifests.model import BundleManifest
    from aibackup.repository import Repository, iso
    from tests.vectordata import canonical_batch, config, description

    repo = Repository.init(str(tmp_path / "repo"))
    cfg = config(dim=8, distance="l2")
    batch = canonical_batch(cfg, 0, 10)
    doubled = pa.Table.from_batches([batch, batch.slice(0, 3)]).combine_chunks().to_batches()[0]
    bundle_id = repo.next_bundle_id(clock.now())
    dataset = BundleWriter(repo, bundle_id).write_dataset(0, description("dups", cfg, 13), iter([doubled]))
    source = {"kind": "chroma", "uri": "chroma:/hand/made"}
    repo.commit(BundleManifest(bundle_id, iso(clock.now()), "0.1.0", source, (dataset,)))

    into_qdrant = cli("restore", "latest", "--repo", str(tmp_path / "repo"), "--to", f"qdrant:{tmp_path / 'q'}")
    assert into_qdrant.code == 1 and "RESTORE CHECKS FAILED" in into_qdrant.out
    assert "3 duplicated (e.g. 'rec-000000'" in into_qdrant.out
    into_chroma = cli("restore", "latest", "--repo", str(tmp_path / "repo"), "--to", f"chroma:{tmp_path / 'c'}")
    line = one_line_error(into_chroma, 2, "collection 'dups', which may now hold part of the bundle")
    assert "duplicates" in line


def test_points_that_do_not_fit_the_description_are_refused_naming_the_point() -> None:
    """A collection recreated or changed between describe and export can hand back vectors of another size
    or vectors it did not describe: the export refuses them (SourceDataError, exit 2), naming the point."""
    import pyarrow as pa
    from qdrant_client import models

    from aibackup.connectors.qdrant.points import points_to_batch
    from aibackup.errors import SourceDataError
    from aibackup.manifests.vectors import arrow_schema
    from tests.vectordata import config

    cfg = config(dim=4, distance="dot")
    schema: pa.Schema = arrow_schema(cfg)
    good = models.Record(id=1, vector=[0.1, 0.2, 0.3, 0.4], payload={})
    assert points_to_batch([good], cfg, schema, "c").num_rows == 1
    short = models.Record(id=2, vector=[0.1, 0.2, 0.3], payload={})
    with pytest.raises(SourceDataError, match=r"does not have the described size 4"):
        points_to_batch([good, short], cfg, schema, "c")
    named = models.Record(id=3, vector={"image": [0.5, 0.5]}, payload={})
    with pytest.raises(SourceDataError, match=r"point 3 .* \['image'\] that the collection description lacks"):
        points_to_batch([good, named], cfg, schema, "c")
