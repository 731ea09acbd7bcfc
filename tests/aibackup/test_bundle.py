"""Bundle parts: byte_stream_split really applied, parts rolled, read back exactly, damage named."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aibackup import parquet_parts
from aibackup.bundle import BundleWriter
from aibackup.bundle_reader import BundleReader
from aibackup.errors import IntegrityError, SourceDataError
from aibackup.manifests.digest import DatasetDigest
from aibackup.manifests.model import DenseVectorSpec
from aibackup.parquet_parts import WriteOptions
from aibackup.repository import Repository
from aibackup.spool import PartSpool
from tests.helpers import flip_middle_byte
from tests.vectordata import canonical_batch, config, description


def write(tmp_path: Path, batches: list[pa.RecordBatch], cfg, options: WriteOptions | None = None):  # type: ignore[no-untyped-def]
    repo = Repository.init(str(tmp_path / "repo"))
    writer = BundleWriter(repo, "20261125T020000.000000Z-00000001", options)
    rows = sum(b.num_rows for b in batches)
    return repo, writer.write_dataset(0, description("docs", cfg, rows), iter(batches))


def test_float_vectors_use_byte_stream_split_without_dictionary(tmp_path: Path) -> None:
    cfg = config(64, named=("image",), sparse=("bm25",))
    cfg = replace(cfg, dense=(*cfg.dense, DenseVectorSpec("", 64, "cosine")))
    repo, dataset = write(tmp_path, [canonical_batch(cfg, 0, 300)], cfg)
    meta = pq.ParquetFile(repo.storage.full(dataset.parts[0].path)).metadata
    encodings = {
        meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).encodings
        for i in range(meta.num_columns)
    }
    for path in ("vector.list.element", "vector:image.list.element", "sparse:bm25.values.list.element"):
        assert "BYTE_STREAM_SPLIT" in encodings[path], (path, encodings[path])
        assert "RLE_DICTIONARY" not in encodings[path]
        assert not meta.row_group(0).column(list(encodings).index(path)).is_stats_set
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_parts_roll_and_read_back_exactly(tmp_path: Path) -> None:
    cfg = config(32)
    batches = [canonical_batch(cfg, i * 100, 100) for i in range(10)]
    options = WriteOptions(row_group_bytes=20_000, part_bytes=60_000)
    repo, dataset = write(tmp_path, batches, cfg, options)
    assert len(dataset.parts) > 2
    assert dataset.rows == 1000 == sum(p.rows for p in dataset.parts)
    for part in dataset.parts:
        sha, size = repo.storage.hash_file(part.path)
        assert (sha, size) == (part.sha256, part.bytes)  # hashed while writing, equal to the bytes on disk
    back = pa.Table.from_batches(list(BundleReader(repo).batches(dataset)))
    assert back.equals(pa.Table.from_batches(batches))
    digest = DatasetDigest()
    for b in batches:
        digest.add_batch(b)
    assert dataset.digest == digest.hexdigest


def test_parts_digested_two_at_a_time_give_the_manifests_digest_and_the_first_damage_in_order(
    tmp_path: Path,
) -> None:
    """Restore and verify digest a dataset's record parts two at once (each on a thread of its own): the
    shares add up to the manifest's digest and row count; of two damaged parts the first is named, as a
    part-by-part read names it; a check run before each part stops the digest at the first it refuses."""
    cfg = config(32)
    batches = [canonical_batch(cfg, i * 100, 100) for i in range(10)]
    repo, dataset = write(tmp_path, batches, cfg, WriteOptions(row_group_bytes=20_000, part_bytes=60_000))
    assert len(dataset.parts) >= 4
    reader = BundleReader(repo)
    digest = reader.dataset_digest(dataset)
    assert (digest.hexdigest, digest.rows) == (dataset.digest, dataset.rows)
    seen: list[str] = []
    reader.dataset_digest(dataset, before=lambda part: seen.append(part.path))
    assert sorted(seen) == sorted(p.path for p in dataset.parts)
    second, third = dataset.parts[1], dataset.parts[2]
    for part in (second, third):
        path = Path(repo.storage.full(part.path))
        path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=second.path.split("/")[-1]):
        reader.dataset_digest(dataset)

    def refuse(part: object) -> None:
        if part == second:
            raise IntegrityError("refused")

    with pytest.raises(IntegrityError, match="refused"):
        reader.dataset_digest(dataset, before=refuse)


def _encoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("aibackup-encoder", "aibackup-part-writer"))]


@pytest.mark.parametrize("where", ["source", "encoder"])
def test_a_failure_while_parts_are_encoded_in_parallel_stops_every_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Parts are encoded by several threads at once: an error in the source or in any encoder fails the
    dataset, no thread outlives the call, and ``discard`` leaves no part behind."""
    cfg = config(32)
    options = WriteOptions(row_group_bytes=20_000, part_bytes=40_000)

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(12):
            yield canonical_batch(cfg, i * 100, 100)
        raise SourceDataError("the source broke after several parts")

    if where == "encoder":
        original = parquet_parts.PartSink.write

        def failing(self: parquet_parts.PartSink, table: pa.Table) -> None:
            if self.path.endswith("part-00003.parquet"):
                raise OSError(28, "No space left on device")
            original(self, table)

        monkeypatch.setattr(parquet_parts.PartSink, "write", failing)
    repo = Repository.init(str(tmp_path / "repo"))
    writer = BundleWriter(repo, "20261125T020000.000000Z-00000001", options)
    with pytest.raises((SourceDataError, OSError)) as caught:
        writer.write_dataset(0, description("docs", cfg, 1200), batches())
    assert ("No space left" if where == "encoder" else "source broke") in str(caught.value)
    assert not _encoder_threads()
    assert len(writer.created) >= 4  # both encoders had parts open or done
    if where == "encoder":  # the part that lost a row group was never completed (no footer, not Parquet)
        [failed] = (tmp_path / "repo" / "data").rglob("part-00003.parquet")
        with pytest.raises(pa.ArrowInvalid):
            pq.ParquetFile(failed)
    writer.discard()
    assert not [p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()]


def test_wrong_schema_from_a_connector_is_refused(tmp_path: Path) -> None:
    cfg = config(8)
    bad = canonical_batch(config(9), 0, 5)
    with pytest.raises(SourceDataError, match="canonical schema"):
        write(tmp_path, [bad], cfg)


def test_empty_dataset_has_no_parts(tmp_path: Path) -> None:
    _repo, dataset = write(tmp_path, [], config(8))
    assert dataset.rows == 0 and dataset.parts == ()


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing"])
def test_damaged_part_is_named(tmp_path: Path, damage: str) -> None:
    cfg = config(16)
    repo, dataset = write(tmp_path, [canonical_batch(cfg, 0, 200)], cfg)
    part = dataset.parts[0]
    path = Path(repo.storage.full(part.path))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 3] ^= 0x10
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-10]))
    else:
        path.unlink()
    reader = BundleReader(repo)
    problem = reader.check_part(part, read_data=True)
    assert problem is not None
    expected = {"flip": "sha256 mismatch", "truncate": "truncated", "missing": "missing"}[damage]
    assert expected in problem
    with pytest.raises(IntegrityError, match=part.path.split("/")[-1]):
        list(reader.batches(dataset))


def test_bundle_ids_sort_by_start_even_within_a_microsecond_or_a_clock_step_back(tmp_path: Path) -> None:
    import datetime as dt

    from aibackup.repository import new_bundle_id

    now = dt.datetime(2026, 11, 25, 2, 0, 0, tzinfo=dt.UTC)
    first = new_bundle_id(now)
    same_instant = new_bundle_id(now, after=first)
    clock_back = new_bundle_id(now - dt.timedelta(hours=1), after=same_instant)
    assert first < same_instant < clock_back
    assert first.startswith("20261125T020000.000000Z-")


def test_a_part_proven_from_the_spool_is_decoded_without_page_checksums_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spooled part whose sha256 :meth:`check_part` proved is decoded from that very copy without its page
    CRCs (the sha256 already covered every byte they cover); every other read keeps them: a part not
    checked, a part whose check failed (its damage then still stops the read), a part read from the
    repository once the spool dropped its copy."""
    cfg = config(16)
    batches = [canonical_batch(cfg, i * 100, 100) for i in range(10)]
    repo, dataset = write(tmp_path, batches, cfg, WriteOptions(row_group_bytes=10_000, part_bytes=25_000))
    proven, unchecked, damaged, dropped = dataset.parts[:4]
    flip_middle_byte(Path(repo.storage.full(damaged.path)))
    checksummed: list[bool] = []
    real = pq.ParquetFile

    def spy(source: object, *args: object, **kwargs: object) -> pq.ParquetFile:
        checksummed.append(bool(kwargs["page_checksum_verification"]))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", spy)
    held = PartSpool(repo.storage, str(tmp_path))
    try:
        reader = BundleReader(repo, spool=held)
        assert reader.check_part(proven, read_data=True) is None
        assert "sha256 mismatch" in (reader.check_part(damaged, read_data=True) or "")
        assert reader.check_part(dropped, read_data=True) is None
        assert held.holds(proven.path) and held.holds(damaged.path)
        records = {part.path: list(reader.part_records(dataset, part)) for part in (proven, unchecked)}
        with pytest.raises(IntegrityError, match="checksum"):  # the spooled copy's damage, found by its CRC
            list(reader.part_records(dataset, damaged))
        held.drop()
        list(reader.part_records(dataset, dropped))
    finally:
        held.close()
    assert checksummed == [False, True, True, True]
    assert sum(b.num_rows for b in records[proven.path]) == proven.rows
    assert sum(b.num_rows for b in records[unchecked.path]) == unchecked.rows
