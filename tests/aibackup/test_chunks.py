"""The repository's chunk store (aibackup.chunks, aibackup.chunkprune) on real repositories written by real model
backups: how chunks are named and stored, what a failed backup leaves, and what prune removes, repacks and keeps.

Packs are aged the way prune sees them: their folder's writer id and their files' modification times, which are
the real clock's; a later night is simulated with ``now=`` (or AIBACKUP_NOW for the CLI) a few days ahead."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from aibackup import clock
from aibackup.api import Repository as ApiRepository
from aibackup.backup import run_backup
from aibackup.chunk_reader import ChunkReader
from aibackup.chunks import ChunkIds, ChunkIndex, Stored, index_bytes, read_index
from aibackup.config import RetentionPolicy
from aibackup.errors import IntegrityError, SourceDataError
from aibackup.prune import PruneResult, run_prune
from aibackup.repository import Repository
from aibackup.restore import run_restore
from aibackup.verify import run_verify
from tests.helpers import Cli, flip_byte_in_chunk, manifest_json, ok, read_part

REPO = "aibackup-repo"
MiB = 1 << 20
LATER = dt.timedelta(days=3)  # past the default 24 h grace period


def weights(rows: int, seed: int) -> np.ndarray[Any, Any]:
    """`rows` x 1024 random float32 (4 KiB a row; incompressible, as trained weights are)."""
    return np.random.default_rng(seed).standard_normal((rows, 1024)).astype(np.float32)


def write_model(path: Path, tensors: dict[str, np.ndarray[Any, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def backup(source: Path, repo: Any = REPO) -> Any:
    return run_backup(repo, f"model:{source}")


def opened(repo: str = REPO) -> Repository:
    repository = Repository.open(repo)
    repository.use_key(repository.key())
    return repository


def packs(repo: str = REPO) -> list[str]:
    return sorted(p.relative_to(repo).as_posix() for p in Path(repo).glob("data/*/packs/*.parquet"))


def index_files(repo: str = REPO) -> list[str]:
    return sorted(p.name for p in Path(repo, "index").glob("*"))


def listing(repo: str = REPO) -> dict[str, int]:
    return {p.relative_to(repo).as_posix(): p.stat().st_size for p in sorted(Path(repo).rglob("*")) if p.is_file()}


def keep_last(n: int) -> Any:
    return lambda _source: RetentionPolicy(keep_last=n)


def prune(n: int = 1, *, later: bool = True, dry_run: bool = False) -> PruneResult:
    now = clock.now() + (LATER if later else dt.timedelta(0))
    return run_prune(opened(), keep_last(n), dry_run=dry_run, now=now)


def restores_identical(source: Path, tmp_path: Path, ref: str | None = None) -> None:
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    result = run_restore(REPO, ref, f"model:{out}")
    assert result.ok, result.to_json()
    expected = {p.relative_to(source): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == expected


def file_chunks(repo: str = REPO, bundle_id: str | None = None) -> dict[str, list[bytes]]:
    """path -> chunk ids, from the model dataset's file table of a bundle (the newest by default)."""
    (dataset,) = manifest_json(repo, bundle_id)["datasets"]
    out = {}
    for part in dataset["parts"]:
        for row in read_part(repo, Path(repo).resolve() / part["path"]).to_pylist():
            data = row["chunks"] or b""
            out[row["path"]] = [data[n : n + 32] for n in range(0, len(data), 32)]
    return out


# --- chunk ids ------------------------------------------------------------------------------------------------


def test_chunk_ids_are_sha256_in_a_plain_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)  # this test is about a repository without a key
    src = tmp_path / "model"
    path = write_model(src / "model.safetensors", {"a": weights(300, 1)})
    (src / "tokenizer.json").write_text('{"vocab": {' + ", ".join(f'"t{i}": {i}' for i in range(5000)) + "}}")
    result = backup(src)
    assert result.datasets[0].config["chunk_ids"] == "sha256"
    repo = opened()
    assert repo.key() is None and ChunkIds(None).seed == 0
    assert ChunkIds(None)(b"weights") == hashlib.sha256(b"weights").digest()
    reader = ChunkReader(repo)
    try:
        chunks = file_chunks()
        for name in ("model.safetensors", "tokenizer.json"):
            pieces = [reader.get(c) for c in chunks[name]]
            assert [hashlib.sha256(p).digest() for p in pieces] == chunks[name]
            assert b"".join(pieces) == (src / name).read_bytes()
    finally:
        reader.close()
    # The pack as plain Parquet: one row group per chunk; the tokenizer's JSON stored compressed, weights not.
    (pack,) = packs()
    table = pq.read_table(Path(REPO) / pack)
    assert table.schema.names == ["chunk", "size", "zstd", "data"]
    assert pq.ParquetFile(Path(REPO) / pack).metadata.num_row_groups == table.num_rows
    rows = {r["chunk"]: r for r in table.to_pylist()}
    (json_chunk,) = chunks["tokenizer.json"]
    assert rows[json_chunk]["zstd"] and len(rows[json_chunk]["data"]) < 0.5 * rows[json_chunk]["size"]
    for chunk in chunks["model.safetensors"][1:]:  # after the header's chunk: float32 weights
        assert not rows[chunk]["zstd"] and len(rows[chunk]["data"]) == rows[chunk]["size"]
    window = path.read_bytes()[600_000:600_064]
    assert window in (Path(REPO) / pack).read_bytes()  # stored as they are: compare the encrypted test below


def test_chunk_ids_are_keyed_in_an_encrypted_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBACKUP_KEY", "passphrase one")  # the helpers open the repository as a user would
    first = ApiRepository.open(str(tmp_path / "enc"), create=True, key="passphrase one")
    ids = ChunkIds(first.key())
    data = b"a chunk of weights" * 100
    assert ids.algorithm == "hmac-sha256"
    assert ids(data) != hashlib.sha256(data).digest() and len(ids(data)) == 32
    assert ids.seed != 0 and 0 < ids.seed < 1 << 62
    again = ChunkIds(ApiRepository.open(str(tmp_path / "enc"), key="passphrase one").key())
    assert (again(data), again.seed) == (ids(data), ids.seed)  # stable: a later backup dedups against it
    # Another repository under the same passphrase has its own random key: its ids and boundaries differ.
    other = ChunkIds(ApiRepository.open(str(tmp_path / "enc2"), create=True, key="passphrase one").key())
    assert other(data) != ids(data) and other.seed != ids.seed

    src = tmp_path / "model"
    path = write_model(src / "model.safetensors", {"a": weights(300, 1)})
    result = first.backup(f"model:{src}")
    assert result.datasets[0].config["chunk_ids"] == "hmac-sha256"
    reader = ChunkReader(first)
    try:
        chunks = file_chunks(str(tmp_path / "enc"))["model.safetensors"]
        pieces = [reader.get(c) for c in chunks]
        assert [ids(p) for p in pieces] == chunks and b"".join(pieces) == path.read_bytes()
    finally:
        reader.close()


def test_encrypted_packs_and_index_files_are_unreadable_without_the_key(tmp_path: Path) -> None:
    where = tmp_path / "enc"
    repo = ApiRepository.open(str(where), create=True, key="passphrase")
    src = tmp_path / "model"
    path = write_model(src / "model.safetensors", {"a": weights(300, 1)})
    repo.backup(f"model:{src}")
    (pack,) = packs(str(where))
    raw_pack = (where / pack).read_bytes()
    assert path.read_bytes()[600_000:600_064] not in raw_pack
    with pytest.raises(OSError, match=r"(?i)encrypt|decrypt|footer|magic"):
        pq.read_table(where / pack)
    (index,) = index_files(str(where))
    raw_index = (where / "index" / index).read_bytes()
    assert raw_index.startswith(b"aibk") and b"PAR1" not in raw_index[:8]
    with pytest.raises(IntegrityError, match="damaged chunk index"):
        read_index(raw_index, "index")
    # Through the repository, with the key: the index lists the pack's chunks.
    assert {p.pack for p in ChunkIndex.load(repo).every()} == {pack}


# --- a failed backup --------------------------------------------------------------------------------------------


def test_a_backup_failing_before_it_publishes_removes_its_packs(tmp_path: Path) -> None:
    write_model(tmp_path / "first" / "a.safetensors", {"a": weights(16, 1)})
    backup(tmp_path / "first")
    before, index_before = listing(), index_files()
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(512, 2), "b": weights(512, 3)})  # 4 MiB chunked first
    os.symlink("/etc/hostname", src / "zz-link")  # then refused
    with pytest.raises(SourceDataError, match="zz-link"):
        backup(src)
    assert listing() == before and index_files() == index_before
    assert len(opened().bundle_ids()) == 1


def test_a_backup_after_a_pack_was_lost_stores_its_chunks_again(tmp_path: Path) -> None:
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(512, 1)})
    backup(src)
    (pack,) = packs()
    (Path(REPO) / pack).unlink()
    result = backup(src)
    assert result.datasets[0].config["stored"]["new_chunks"] == result.datasets[0].config["stored"]["chunks"]
    restores_identical(src, tmp_path)


def test_a_damaged_index_stops_verify_and_restore_before_anything_is_written(tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(256, 1)})
    backup(src)
    (index,) = Path(REPO, "index").iterdir()
    index.write_bytes(index.read_bytes()[:-20])
    failed = cli("verify", "--json")
    assert failed.code == 1
    assert any(index.name in p["problem"] or p["path"].endswith(index.name) for p in failed.json()["problems"])
    out = tmp_path / "restored"
    with pytest.raises(IntegrityError, match=index.name):
        run_restore(REPO, None, f"model:{out}")
    assert not out.exists()


def test_a_damaged_index_file_does_not_hide_a_damaged_pack_from_verify(tmp_path: Path, cli: Cli) -> None:
    """Two model versions, a chunk of the first rotted in its pack and the second's index file damaged:
    verify --read-data read not one chunk ("damaged index" for both bundles, the pack never named, so
    `repair index` then left the rotted pack unknown). Now the chunks the intact index file places are read:
    the first bundle's problem is its pack, the damaged index file is named once, and the second bundle,
    whose chunks only that file placed, says so in one line."""
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(256, 1)})
    first = backup(src)
    write_model(src / "model.safetensors", {"b": weights(256, 2)})
    second = backup(src)
    repo = opened()
    older, newer = (f"index/{name}" for name in index_files())
    chunk = next(c for c, _ in read_index(repo.storage.read_bytes(older), older))
    pack = flip_byte_in_chunk(REPO, chunk)
    Path(REPO, newer).write_bytes(Path(REPO, newer).read_bytes()[:-20])
    result = cli("verify", "--read-data", "--json")
    assert result.code == 1, result
    problems = result.json()["problems"]
    assert {p["bundle_id"] for p in problems if p["path"].endswith(pack.name)} == {first.bundle_id}, problems
    assert sorted(p["bundle_id"] for p in problems if p["path"].endswith(newer)) == ["", second.bundle_id], problems
    assert not [p for p in problems if p["bundle_id"] == first.bundle_id and p["path"].endswith(newer)], problems
    assert result.json()["bytes_read"] > 256 * 4096 // 2


def test_an_index_entry_leading_out_of_the_repository_is_damage(tmp_path: Path, cli: Cli) -> None:
    """An index file whose pack path leads out of the repository (`data/../../evil/...`; an unencrypted
    one is anyone's to rewrite who can write the bucket): verify read the pack there and said ok, and a copy
    wrote it beyond the destination's root. Now the index file is damaged: verify names it (exit 1) and the
    copy fails the bundle, writing nothing outside."""
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(64, 1)})
    backup(src)
    repo = opened()
    (rel,) = [f"index/{name}" for name in index_files()]
    entries = read_index(repo.storage.read_bytes(rel), rel)
    stray = "data/../../evil/packs/pack-00000.parquet"
    (tmp_path / "evil" / "packs").mkdir(parents=True)
    shutil.move(Path(REPO, entries[0][1].pack), tmp_path / "evil" / "packs" / "pack-00000.parquet")
    repo.storage.remove(rel)
    repo.storage.write_exclusive(rel, index_bytes([(c, Stored(stray, p.row, p.size, p.stored)) for c, p in entries]))
    verified = cli("verify", "--read-data", "--json")
    assert verified.code == 1 and rel.split("/")[1] in verified.out, verified
    copied = cli("copy", "--to-repo", str(tmp_path / "a" / "b" / "copy"), "--json")
    assert copied.code == 1 and len(copied.json()["failed"]) == 1, copied
    assert not (tmp_path / "a" / "b" / "evil").exists()


# --- prune ------------------------------------------------------------------------------------------------------


def test_prune_removes_the_packs_only_removed_bundles_needed(tmp_path: Path, cli: Cli, monkeypatch: Any) -> None:
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(768, 1)})  # 3 MiB
    v1 = backup(src)
    write_model(src / "model.safetensors", {"b": weights(768, 2)})  # another model: not one chunk in common
    v2 = backup(src)
    (v1_pack,) = [p for p in packs() if v1.bundle_id in p]
    (v2_pack,) = [p for p in packs() if v2.bundle_id in p]
    v1_size = listing()[v1_pack]

    # Within the grace period the young packs are not touched (v1's manifest goes all the same).
    young = prune(later=False)
    assert [d.bundle_id for d in young.removed] == [v1.bundle_id]
    assert young.chunks.packs_removed == [] and young.chunks.bytes_reclaimed == 0
    assert packs() == sorted([v1_pack, v2_pack])
    assert {p.pack for p in ChunkIndex.load(opened()).every()} == {v1_pack, v2_pack}

    before = listing()
    monkeypatch.setenv("AIBACKUP_NOW", (clock.now() + LATER).isoformat())
    dry = ok(cli("prune", "--keep-last", "1", "--dry-run", "--json")).json()
    assert listing() == before  # a dry run changes nothing
    assert dry["chunks"] | {"chunks_live": 0} == {
        "packs_removed": [v1_pack],
        "packs_repacked": [],
        "packs_written": [],
        "bytes_reclaimed": v1_size,
        "chunks_live": 0,
        "chunks_removed": v1.datasets[0].config["stored"]["new_chunks"],
    }
    text = ok(cli("prune", "--keep-last", "1"))
    assert f"chunk store: 1 pack(s) removed, 0 repacked, {v1_size} bytes reclaimed" in text.out
    assert packs() == [v2_pack]
    (index,) = index_files()  # consolidated: one index file lists what remains
    assert index != f"{v1.bundle_id}.parquet" and index != f"{v2.bundle_id}.parquet"
    assert {p.pack for p in ChunkIndex.load(opened()).every()} == {v2_pack}

    restores_identical(src, tmp_path, v2.bundle_id)
    verified = run_verify(REPO, read_data=True)
    assert verified.ok, verified.to_json()
    assert ok(cli("prune", "--keep-last", "1", "--json")).json()["chunks"]["packs_removed"] == []  # nothing left


def test_prune_removes_the_folders_its_removed_packs_emptied(tmp_path: Path) -> None:
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(256, 1)})
    v1 = backup(src)
    write_model(src / "model.safetensors", {"b": weights(256, 2)})
    backup(src)
    assert prune().chunks.packs_removed
    assert not (Path(REPO) / "data" / v1.bundle_id).exists()


def test_prune_repacks_a_pack_mostly_unneeded(tmp_path: Path) -> None:
    src = tmp_path / "model"
    write_model(src / "a.safetensors", {"a": weights(256, 1)})  # 1 MiB, kept
    write_model(src / "b.safetensors", {"b": weights(1280, 2)})  # 5 MiB, only v1 has it
    v1 = backup(src)
    (src / "b.safetensors").unlink()
    v2 = backup(src)
    assert v2.datasets[0].config["stored"]["new_chunks"] == 0  # a.safetensors: every chunk in v1's pack
    (v1_pack,) = packs()
    live = set(file_chunks(REPO, v2.bundle_id)["a.safetensors"])

    result = prune()
    chunks = result.chunks
    assert chunks.packs_repacked == [v1_pack] and chunks.packs_removed == []
    assert len(chunks.packs_written) == 1 and packs() == chunks.packs_written
    assert chunks.chunks_live == len(live)
    assert chunks.chunks_removed == v1.datasets[0].config["stored"]["new_chunks"] - len(live)
    index = ChunkIndex.load(opened())
    assert set(index.places) == live and {p.pack for p in index.every()} == set(chunks.packs_written)
    assert len(index_files()) == 1
    restores_identical(src, tmp_path, v2.bundle_id)
    assert run_verify(REPO, read_data=True).ok


def test_a_repack_reports_the_bytes_it_really_reclaims(tmp_path: Path) -> None:
    src = tmp_path / "model"
    write_model(src / "a.safetensors", {"a": weights(256, 1)})
    write_model(src / "b.safetensors", {"b": weights(1280, 2)})
    backup(src)
    (src / "b.safetensors").unlink()
    backup(src)
    dry = prune(dry_run=True).chunks
    before = listing()
    result = prune().chunks
    after = listing()
    freed = sum(before[p] for p in result.packs_repacked) - sum(after[p] for p in result.packs_written)
    assert abs(result.bytes_reclaimed - freed) < 64 * 1024, (result.bytes_reclaimed, freed)
    assert result.bytes_reclaimed == dry.bytes_reclaimed


def test_prune_counts_references_pack_by_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs closed at 1 MiB (instead of 64 MiB: the same rule on a few megabytes): v1 = A + B, v2 = A; the packs
    holding only B's chunks go, those holding A's stay (or are repacked), and v2 restores."""
    import aibackup.chunk_writer

    monkeypatch.setattr(aibackup.chunk_writer, "PACK_BYTES", MiB)
    src = tmp_path / "model"
    write_model(src / "a.safetensors", {"a": weights(768, 1)})
    # B is 8 MiB: the pack holding A's last chunk takes B's chunks only until it passes 1 MiB (at most
    # 1 MiB + one 4 MiB chunk), so some pack holds B alone whatever the repository's keyed boundaries are
    # (at 3 MiB, B could be one chunk sharing A's last pack: a run failed so).
    write_model(src / "b.safetensors", {"b": weights(2048, 2)})
    backup(src)
    v1_packs = packs()
    assert len(v1_packs) >= 3
    (src / "b.safetensors").unlink()
    v2 = backup(src)
    live = set(file_chunks(REPO, v2.bundle_id)["a.safetensors"])
    holding = {p: {c for c, place in ChunkIndex.load(opened()).places.items() if place.pack == p} for p in v1_packs}
    assert [p for p in v1_packs if holding[p] & live] and [p for p in v1_packs if not holding[p] & live]

    result = prune().chunks
    assert result.packs_removed == sorted(p for p in v1_packs if not holding[p] & live)
    assert set(result.packs_repacked) <= {p for p in v1_packs if holding[p] & live}
    assert set(packs()) == {p for p in v1_packs if holding[p] & live} - set(result.packs_repacked) | set(
        result.packs_written
    )
    # Every live chunk is indexed; an unused one stays only in a kept pack (less than half of it unused: with
    # keyed chunk boundaries, A's last chunks and B's first may share a pack).
    index = ChunkIndex.load(opened()).places
    assert live <= set(index)
    assert {index[c].pack for c in set(index) - live} <= set(packs()) - set(result.packs_written)
    restores_identical(src, tmp_path, v2.bundle_id)
    assert run_verify(REPO, read_data=True).ok


def test_an_orphan_pack_is_removed_only_after_the_grace_period(tmp_path: Path) -> None:
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(256, 1)})
    backup(src)
    (pack,) = packs()
    # A crashed backup's pack: in a writer folder of its own, listed by no index.
    orphan = Path(REPO) / "data" / "20260101T020000.000000Z-0badf00d" / "packs" / "pack-00000.parquet"
    orphan.parent.mkdir(parents=True)
    shutil.copyfile(Path(REPO) / pack, orphan)
    orphan_rel = orphan.relative_to(REPO).as_posix()

    waiting = prune(later=False)  # its file was written just now: maybe a backup still running
    assert orphan.exists() and waiting.chunks.packs_removed == []
    removed = prune()  # three days on
    assert removed.chunks.packs_removed == [orphan_rel]
    assert removed.chunks.bytes_reclaimed == (Path(REPO) / pack).stat().st_size
    assert not orphan.exists() and packs() == [pack]
    restores_identical(src, tmp_path)


def encrypted_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ApiRepository:
    monkeypatch.setenv("AIBACKUP_KEY", "passphrase")
    return ApiRepository.open(str(tmp_path / "enc"), create=True, key="passphrase")


def test_after_a_key_rotation_chunks_are_stored_again_and_old_bundles_still_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = encrypted_repo(tmp_path, monkeypatch)
    src = tmp_path / "model"
    path = write_model(src / "model.safetensors", {"a": weights(512, 1)})
    v1 = repo.backup(f"model:{src}")
    repo.rotate_key()
    v2 = repo.backup(f"model:{src}")
    # Chunks in packs under the old key are stored again (under the new one), so that the old key can go.
    stored = v2.datasets[0].config["stored"]
    assert stored["new_chunks"] == stored["chunks"] > 0
    assert len(packs(str(tmp_path / "enc"))) == 2
    for bundle in (v1, v2):
        out = tmp_path / f"out-{bundle.bundle_id}"
        assert run_restore(repo, bundle.bundle_id, f"model:{out}").ok
        assert (out / "model.safetensors").read_bytes() == path.read_bytes()
    young = repo.prune(keep_last=1)  # v1 goes; its pack is young: it stays, and so does the key it needs
    assert [d.bundle_id for d in young.removed] == [v1.bundle_id]
    assert young.chunks.packs_removed == [] and len(packs(str(tmp_path / "enc"))) == 2
    assert [g["id"] for g in repo.keys()["generations"]] == [1, 2]


def test_prune_after_a_key_rotation_keeps_the_new_copy_and_retires_the_old_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = encrypted_repo(tmp_path, monkeypatch)
    src = tmp_path / "model"
    write_model(src / "model.safetensors", {"a": weights(512, 1)})
    v1 = repo.backup(f"model:{src}")
    repo.rotate_key()
    v2 = repo.backup(f"model:{src}")
    monkeypatch.setenv("AIBACKUP_NOW", (clock.now() + LATER).isoformat())
    later = repo.prune(keep_last=1)
    assert [d.bundle_id for d in later.removed] == [v1.bundle_id]
    assert [p for p in packs(str(tmp_path / "enc")) if v2.bundle_id in p]  # the copy under the current key
    assert later.chunks.packs_removed and all(v1.bundle_id in p for p in later.chunks.packs_removed)
    assert any("master key generation(s) [1] retired" in n for n in later.notes), later.notes
