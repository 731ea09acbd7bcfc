"""Model artifacts end to end (``model:PATH`` into a repository, back into ``model:DIR``): real safetensors,
GGUF and plain files, the real chunk store, the real CLI. Every test runs against a plain repository and, under
AIBACKUP_TEST_ENCRYPTED=1, an encrypted one (HMAC chunk ids, a seeded chunker, encrypted packs)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from aibackup.backup import SourceOptions, run_backup
from aibackup.chunk_reader import ChunkReader
from aibackup.chunks import ChunkIndex
from aibackup.config import RetentionPolicy
from aibackup.connectors.model.chunking import MAX_SIZE, Chunker
from aibackup.connectors.registry import open_connector
from aibackup.errors import IntegrityError, SourceDataError, TargetNotEmptyError, UnsupportedFeatureError
from aibackup.manifests.records import MODEL
from aibackup.prune import run_prune
from aibackup.repository import Repository
from aibackup.restore import description_of, run_restore
from aibackup.verify import run_verify
from tests.connectors.model.conftest import MiB, tree, weights, write_safetensors
from tests.helpers import Cli, flip_byte_in_chunk, manifest_json, ok, one_line_error, read_part, repository_url

REPO = "aibackup-repo"


def backup(source: Path | str, repo: str = REPO, **options: Any) -> Any:
    return run_backup(repo, f"model:{source}", source_options=SourceOptions(**options))


def restore(target: Path, repo: str = REPO, ref: str | None = None, **kwargs: Any) -> Any:
    return run_restore(repo, ref, f"model:{target}", **kwargs)


def checks(result: Any) -> dict[str, tuple[bool, str]]:
    (dataset,) = result.datasets
    return {c.name: (c.ok, c.detail) for c in dataset.checks}


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def opened(repo: str = REPO) -> Repository:
    repository = Repository.open(repo)
    repository.use_key(repository.key())
    return repository


def packs(repo: str = REPO) -> list[Path]:
    return sorted(Path(repo).glob("data/*/packs/*.parquet"))


def no_repository_left(repo: str = REPO) -> bool:
    """Whether a failed first backup left no file of the repository it created (not a pack, not the marker)."""
    return not any(p.is_file() for p in Path(repo).rglob("*"))


def data_files(repo: str = REPO) -> set[str]:
    root = Path(repo)
    return {p.relative_to(root).as_posix() for p in (root / "data").rglob("*") if p.is_file()}


def file_rows(repo: str = REPO, bundle_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The model dataset's file table of a bundle (the newest when none is named), by path."""
    doc = manifest_json(repo, bundle_id)
    (dataset,) = doc["datasets"]
    rows: dict[str, dict[str, Any]] = {}
    for part in dataset["parts"]:
        for row in read_part(repo, Path(repo).resolve() / part["path"]).to_pylist():
            rows[row["path"]] = row
    return rows


def chunk_list(row: dict[str, Any]) -> list[bytes]:
    data = row["chunks"]
    return [data[n : n + 32] for n in range(0, len(data), 32)]


# --- round trips ------------------------------------------------------------------------------------------------


def test_a_model_folder_round_trips_byte_identical_with_modes_and_symlinks(model_dir: Path, tmp_path: Path) -> None:
    result = backup(model_dir)
    out = tmp_path / "restored"
    restored = restore(out)
    assert restored.ok, restored.to_json()
    assert tree(out) == tree(model_dir)
    assert tree(out)["scripts/convert.sh"][2] == 0o755
    assert os.readlink(out / "eval" / "results" / "config.json") == "../../config.json"
    assert (out / "adapters" / "current").is_symlink() and (
        out / "adapters" / "current" / "adapter_config.json"
    ).is_file()
    assert (out / "latest.safetensors").read_bytes() == (model_dir / "model-00001-of-00002.safetensors").read_bytes()
    found = checks(restored)
    assert found["files"][0] and "13 files match their sha256 and mode; 3 symlink(s) recreated" in found["files"][1]
    assert found["structure"] == (
        True,
        "1 gguf, 3 safetensors header(s) parse: offsets contiguous, sizes match shapes, files end with their data",
    )
    assert {"bundle", "rows", "ids", "content"} <= found.keys() and "load" not in found
    assert result.to_json()["datasets"][0] | {"new_bytes": 0} == {
        "name": "llama-tiny",
        "kind": "model",
        "rows": 16,
        "new_rows": 16,
        "incremental": False,
        "new_bytes": 0,
        "deleted": 0,
        "full_reason": "no earlier bundle of this dataset",
    }
    # new_bytes: the file table's part and the chunks stored (over 4 MiB of incompressible weights).
    assert result.to_json()["datasets"][0]["new_bytes"] > result.datasets[0].config["stored"]["new_bytes"] > 4 * MiB


def test_a_second_backup_of_the_model_is_reported_incremental(model_dir: Path) -> None:
    """Its chunks were stored already: incremental, no reason to give (it pointed at notes that did not exist)."""
    backup(model_dir)
    (again,) = backup(model_dir).to_json()["datasets"]
    assert again["incremental"] and again["full_reason"] is None, again


def test_the_manifest_describes_every_file(model_dir: Path) -> None:
    result = backup(model_dir)
    doc = manifest_json(REPO, result.bundle_id)
    assert doc["format_version"] == 3 and doc["source"] == {"kind": "model", "uri": f"model:{model_dir}"}
    (dataset,) = doc["datasets"]
    assert (dataset["kind"], dataset["name"], dataset["rows"]) == ("model", "llama-tiny", 16)
    config = dataset["config"]
    files = {f["path"]: f for f in config["files"]}
    on_disk = tree(model_dir)
    assert list(files) == list(on_disk)
    for path, entry in files.items():
        if on_disk[path][0] == "link":
            assert entry == {
                "path": path,
                "type": "symlink",
                "mode": 0o777,
                "size": 0,
                "sha256": "sha256:" + hashlib.sha256(on_disk[path][1].encode()).hexdigest(),
                "link": on_disk[path][1],
            }
            continue
        assert entry["type"] == "file" and entry["sha256"] == sha256_of(model_dir / path)
        assert (entry["size"], entry["mode"]) == ((model_dir / path).stat().st_size, on_disk[path][2])
        # Chunks of at most 4 MiB, forced cuts at tensor boundaries: never fewer than the bytes need.
        assert entry["chunks"] >= -(-entry["size"] // MAX_SIZE)
    assert files["eval/results/empty.log"]["chunks"] == 0 and files["eval/results/empty.log"]["size"] == 0

    shard1 = files["model-00001-of-00002.safetensors"]["format"]
    assert shard1["format"] == "safetensors" and shard1["valid"] is True and shard1["problem"] is None
    summary = shard1["summary"]
    assert (summary["tensors"], summary["dtypes"], summary["metadata"]) == (2, {"F32": 2}, {"format": "pt"})
    assert summary["parameters"] == 512 * 1024 + 256 * 1024
    shard2 = files["model-00002-of-00002.safetensors"]["format"]["summary"]
    assert shard2["dtypes"] == {"F16": 1, "F32": 1} and shard2["parameters"] == 1024 + 256 * 1024
    gguf = files["tiny-llama.gguf"]["format"]
    assert gguf["valid"] is True
    assert {k: gguf["summary"][k] for k in ("version", "architecture", "tensors", "name")} == {
        "version": 3,
        "architecture": "llama",
        "tensors": 2,
        "name": "tiny-llama",
    }
    assert files["model.safetensors.index.json"]["format"]["format"] == "safetensors-index"
    assert files["adapters/support-v2/adapter_config.json"]["format"]["format"] == "peft-adapter-config"
    assert files["pytorch_model.bin"]["format"]["format"] == "pytorch"
    assert config["formats"]["safetensors"] == 3 and config["formats"]["gguf"] == 1
    assert config["bytes"] == sum(f["size"] for f in files.values())
    assert config["chunker"]["algorithm"] == "fastcdc-2020"
    encrypted = opened().key() is not None
    assert config["chunk_ids"] == ("hmac-sha256" if encrypted else "sha256")
    stored = config["stored"]
    assert stored["chunks"] == sum(f.get("chunks", 0) for f in files.values())
    # latest.safetensors is a symlink: shard 1 is stored once; nothing is stored twice within one backup.
    assert 0 < stored["new_chunks"] <= stored["chunks"] and stored["raw_new_bytes"] <= config["bytes"]


def test_a_hugging_face_cache_keeps_its_symlinks_and_stores_each_blob_once(tmp_path: Path) -> None:
    cache = tmp_path / "hub" / "models--acme--tiny"
    blobs = cache / "blobs"
    blobs.mkdir(parents=True)
    weights_path = write_safetensors(tmp_path / "w.safetensors", {"w": weights(768, seed=11)})
    contents = {"config.json": b'{"model_type": "llama"}', "model.safetensors": weights_path.read_bytes()}
    names = {}
    for name, data in contents.items():
        names[name] = hashlib.sha256(data).hexdigest()
        (blobs / names[name]).write_bytes(data)
    for rev in ("0123abc", "4567def"):  # two revisions sharing both blobs
        snap = cache / "snapshots" / rev
        snap.mkdir(parents=True)
        for name in contents:
            os.symlink(f"../../blobs/{names[name]}", snap / name)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("4567def")

    result = backup(cache)
    config = result.datasets[0].config
    kinds = {f["path"]: f["type"] for f in config["files"]}
    assert [p for p, k in kinds.items() if k == "file"] == [
        *(f"blobs/{h}" for h in sorted(names.values())),
        "refs/main",
    ]
    assert sum(k == "symlink" for k in kinds.values()) == 4
    assert config["stored"]["raw_new_bytes"] == sum(len(d) for d in contents.values()) + len("4567def")
    out = tmp_path / "restored"
    assert restore(out).ok
    assert tree(out) == tree(cache)
    assert (out / "snapshots" / "0123abc" / "model.safetensors").is_symlink()
    assert (out / "snapshots" / "0123abc" / "model.safetensors").read_bytes() == contents["model.safetensors"]


def test_a_single_file_source(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "models" / "tiny.safetensors", {"w": weights(300, seed=3)}, {"k": "v"})
    result = backup(path)
    (dataset,) = result.datasets
    assert (dataset.name, dataset.rows) == ("tiny.safetensors", 1)
    assert [f["path"] for f in dataset.config["files"]] == ["tiny.safetensors"]
    out = tmp_path / "restored"
    restored = restore(out)
    assert restored.ok and checks(restored)["structure"][0]
    assert tree(out) == {"tiny.safetensors": ("file", path.read_bytes(), path.stat().st_mode & 0o7777)}


def test_a_single_file_named_through_a_symlink_keeps_the_name_it_was_given(tmp_path: Path) -> None:
    real = write_safetensors(tmp_path / "blobs" / "5f1d0c2a", {"w": weights(64, seed=9)})
    link = tmp_path / "snapshots" / "0123abc" / "model.safetensors"
    link.parent.mkdir(parents=True)
    os.symlink("../../blobs/5f1d0c2a", link)
    backup(link)
    out = tmp_path / "restored"
    assert restore(out).ok
    assert tree(out) == {"model.safetensors": ("file", real.read_bytes(), real.stat().st_mode & 0o7777)}


def test_restore_load_check_opens_every_safetensors_file(model_dir: Path, tmp_path: Path, cli: Cli) -> None:
    backup(model_dir)
    doc = ok(cli("restore", "--to", f"model:{tmp_path / 'out'}", "--load-check", "--json")).json()
    found = {c["name"]: c for c in doc["datasets"][0]["checks"]}
    assert found["load"]["ok"] is True
    assert found["load"]["detail"].startswith("3 safetensors file(s) opened with safetensors")


# --- dedup across versions -----------------------------------------------------------------------------------

LAYERS = {f"model.layers.{i}.weight": weights(256, seed=20 + i) for i in range(6)}  # 6 x 1 MiB


def test_a_new_version_stores_only_what_changed(tmp_path: Path) -> None:
    src = tmp_path / "model"
    path = write_safetensors(src / "model.safetensors", LAYERS, {"step": "1000"})
    size = path.stat().st_size
    v1 = backup(src)
    assert v1.datasets[0].config["stored"]["raw_new_bytes"] == size
    v1_bytes = path.read_bytes()

    # One tensor retrained: about its own megabyte (and the header's chunk) is new.
    changed = dict(LAYERS) | {"model.layers.3.weight": weights(256, seed=99)}
    write_safetensors(path, changed, {"step": "1000"})
    v2 = backup(src)
    stored = v2.datasets[0].config["stored"]
    assert MiB <= stored["new_bytes"] < 1.3 * MiB and stored["new_bytes"] < 0.25 * size, stored
    v2_bytes = path.read_bytes()

    # Only the header's metadata changed: every tensor moved (its offset in the file), none is stored again.
    write_safetensors(path, changed, {"step": "2000", "note": "a longer header shifts every offset"})
    assert path.stat().st_size != size
    v3 = backup(src)
    stored = v3.datasets[0].config["stored"]
    assert stored["new_chunks"] <= 2 and stored["raw_new_bytes"] < 64 * 1024, stored
    v3_bytes = path.read_bytes()

    # Nothing changed: nothing new at all.
    v4 = backup(src)
    assert v4.datasets[0].config["stored"] | {"chunks": 0} == {
        "chunks": 0,
        "new_chunks": 0,
        "new_bytes": 0,
        "raw_new_bytes": 0,
        "compressed_chunks": 0,
    }
    assert len(packs()) == 3  # v4 wrote no pack

    for bundle, expected in ((v1, v1_bytes), (v2, v2_bytes), (v3, v3_bytes)):
        out = tmp_path / f"out-{bundle.bundle_id}"
        assert restore(out, ref=bundle.bundle_id).ok
        assert (out / "model.safetensors").read_bytes() == expected


def test_chunk_boundaries_depend_on_the_content_not_on_how_it_was_read() -> None:
    data = np.random.default_rng(5).bytes(9 * MiB + 12345)
    cuts = [40, 3 * MiB + 17, 3 * MiB + 18, 8 * MiB]
    chunker = Chunker(seed=1234)
    whole = [bytes(c) for c in chunker.chunks([data], cuts)]
    assert b"".join(whole) == data and all(len(c) <= MAX_SIZE for c in whole)
    ends = set(np.cumsum([len(c) for c in whole]).tolist())
    assert set(cuts) <= ends
    for block in (4096, MiB - 1, MiB, 3 * MiB, 16 * MiB):  # MiB: a block ends exactly at the cut at 8 MiB
        blocks = [data[n : n + block] for n in range(0, len(data), block)]
        assert [bytes(c) for c in chunker.chunks(blocks, cuts)] == whole, block


def test_identical_files_in_one_backup_are_stored_once(tmp_path: Path) -> None:
    src = tmp_path / "model"
    path = write_safetensors(src / "model.safetensors", {"w": weights(512, seed=4)})
    (src / "backup").mkdir()
    shutil.copyfile(path, src / "backup" / "model.safetensors")
    stored = backup(src).datasets[0].config["stored"]
    assert stored["raw_new_bytes"] == path.stat().st_size and stored["chunks"] == 2 * stored["new_chunks"]
    out = tmp_path / "restored"
    assert restore(out).ok and tree(out) == tree(src)


def test_a_repository_inside_the_model_folder_is_never_backed_up_into_itself(model_dir: Path, tmp_path: Path) -> None:
    repo = str(model_dir / "aibackup-repo")
    backup(model_dir, repo=repo)
    backup(model_dir, repo=repo)  # the second run sees the repository the first one wrote
    (dataset,) = opened(repo).resolve(None).datasets
    assert not [f["path"] for f in dataset.config["files"] if f["path"].startswith("aibackup-repo")]
    assert dataset.config["stored"]["new_chunks"] == 0


# --- bad input ----------------------------------------------------------------------------------------------


def test_a_symlink_leading_out_of_the_folder_is_refused_or_skipped(model_dir: Path, tmp_path: Path, cli: Cli) -> None:
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not part of the model")
    os.symlink(secret, model_dir / "zz-outside.txt")
    line = one_line_error(cli("backup", f"model:{model_dir}"), 2, "llama-tiny/zz-outside.txt", "--allow-lossy")
    assert "outside the folder" in line
    assert no_repository_left()  # a first backup that failed leaves no repository (and no pack)

    done = ok(cli("backup", f"model:{model_dir}", "--allow-lossy", "--json")).json()
    assert any("zz-outside.txt" in n and "skipped" in n for n in done["notes"])
    out = tmp_path / "restored"
    assert restore(out).ok
    assert "zz-outside.txt" not in tree(out) and tree(out) == {
        k: v for k, v in tree(model_dir).items() if k != "zz-outside.txt"
    }


def test_a_failed_backup_into_an_existing_repository_leaves_no_pack(model_dir: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    write_safetensors(small / "a.safetensors", {"a": weights(16, seed=1)})
    backup(small)
    before = data_files()
    index_before = sorted(p.name for p in Path(REPO, "index").iterdir())
    os.symlink("/etc/passwd", model_dir / "zz-outside")  # sorted last: every weight was chunked before it
    with pytest.raises(SourceDataError, match="zz-outside"):
        backup(model_dir)
    assert data_files() == before
    assert sorted(p.name for p in Path(REPO, "index").iterdir()) == index_before
    assert len(opened().bundle_ids()) == 1


def _drop_read_override() -> list[str]:
    """A command prefix that runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (root then obeys file modes), or
    [] when this process is not root; skips when root cannot drop them here."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a file cannot be made unreadable")
    prefix = [setpriv, "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here")
    return prefix


def test_an_unreadable_file_is_refused_naming_it(model_dir: Path, cli: Cli) -> None:
    prefix = _drop_read_override()
    locked = model_dir / "tokenizer.json"
    locked.chmod(0)
    try:
        if prefix:  # root: the same command in a process that cannot override file modes
            run = subprocess.run(
                [*prefix, sys.executable, "-m", "aibackup", "backup", f"model:{model_dir}", "--repo", REPO],
                capture_output=True,
                text=True,
            )
            code, err = run.returncode, run.stderr
        else:
            result = cli("backup", f"model:{model_dir}")
            code, err = result.code, result.err
    finally:
        locked.chmod(0o644)
    assert code == 2, err
    assert "cannot read llama-tiny/tokenizer.json: Permission denied" in err and "Traceback" not in err
    assert no_repository_left()


def test_a_file_growing_during_the_backup_is_refused(tmp_path: Path) -> None:
    """A writer thread appends to a 40 MB file (three reads of 16 MiB) for as long as the backup runs: the file's
    size and times differ between its listing, its open and the end of its read, whichever the backup sees."""
    src = tmp_path / "model"
    src.mkdir()
    backup_first = write_safetensors(src / "a.safetensors", {"a": weights(64, seed=1)})
    growing = src / "b.bin"
    growing.write_bytes(np.random.default_rng(2).bytes(40 * MiB))
    stop = threading.Event()

    def grow() -> None:
        with growing.open("ab") as f:
            while not stop.wait(0.001):
                f.write(b"x" * 4096)
                f.flush()

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        with pytest.raises(SourceDataError, match=r"model/b\.bin changed while it was being backed up"):
            backup(src)
    finally:
        stop.set()
        writer.join()
    assert backup_first.exists() and no_repository_left()


def test_a_truncated_safetensors_is_kept_as_it_is_and_restores_as_it_was(model_dir: Path, tmp_path: Path) -> None:
    broken = model_dir / "model-00002-of-00002.safetensors"
    broken.write_bytes(broken.read_bytes()[:-1000])
    result = backup(model_dir)
    entry = next(f for f in result.datasets[0].config["files"] if f["path"] == broken.name)
    assert entry["format"]["format"] == "safetensors" and entry["format"]["valid"] is False
    assert entry["format"]["problem"]
    out = tmp_path / "restored"
    restored = restore(out, load_check=True)
    assert restored.ok, restored.to_json()
    assert (out / broken.name).read_bytes() == broken.read_bytes()
    ok_, detail = checks(restored)["structure"]
    assert ok_ and f"1 invalid as at backup, restored as they were: {broken.name}" in detail
    assert checks(restored)["load"][0]


# --- restore target safety ----------------------------------------------------------------------------------


def test_create_refuses_a_folder_holding_a_bundle_file_and_overwrite_replaces_it(
    model_dir: Path, tmp_path: Path, cli: Cli
) -> None:
    backup(model_dir)
    out = tmp_path / "restored"
    out.mkdir()
    (out / "config.json").write_text("mine")
    (out / "notes.txt").write_text("not in the bundle")
    one_line_error(cli("restore", "--to", f"model:{out}"), 2, "'config.json' already exists")
    assert sorted(p.name for p in out.rglob("*")) == ["config.json", "notes.txt"]  # nothing written
    with pytest.raises(TargetNotEmptyError):
        restore(out)

    assert restore(out, mode="overwrite").ok
    assert (out / "notes.txt").read_text() == "not in the bundle"  # nothing else in DIR is touched
    assert tree(out) == tree(model_dir) | {"notes.txt": ("file", b"not in the bundle", 0o644)}


@pytest.mark.parametrize("bad", ["../evil.bin", "/tmp/evil.bin", "a/../../evil.bin", "a//b"])
def test_a_record_path_leaving_the_target_is_refused_before_writing(model_dir: Path, tmp_path: Path, bad: str) -> None:
    backup(model_dir)
    repo = opened()
    (dataset,) = repo.resolve(None).datasets
    rows = [row | ({"id": bad, "path": bad} if row["path"] == "config.json" else {}) for row in file_rows().values()]
    batch = pa.RecordBatch.from_pylist(rows, schema=MODEL)
    out = tmp_path / "deep" / "restored"
    reader = ChunkReader(repo)
    try:
        with open_connector(f"model:{out}", target=True) as target:
            target.use_chunks(reader)
            plan = target.plan_import(description_of(dataset), dataset.name, mode="create", allow_lossy=False)
            with pytest.raises(UnsupportedFeatureError, match="refusing bundle entry") as err:
                target.validate_records(plan, [batch])
            assert repr(bad) in str(err.value) and err.value.exit_code == 2
            assert not out.exists()
            with pytest.raises(UnsupportedFeatureError):  # the import alone refuses it too
                target.import_(plan, [batch])
    finally:
        reader.close()
    assert not (tmp_path / "evil.bin").exists() and not Path("/tmp/evil.bin").exists()
    assert not any(p.name == "evil.bin" for p in tmp_path.rglob("*"))


# --- damage -------------------------------------------------------------------------------------------------


SHARD = "model-00001-of-00002.safetensors"  # model.embed_tokens.weight (2 MiB), then model.layers.0.mlp.weight


def chunks_of_tensor(model_dir: Path, path: str, tensor: str) -> list[bytes]:
    """The chunks of file `path` (in the newest bundle) that lie wholly inside `tensor`'s bytes, in file order."""
    raw = (model_dir / path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    begin, end = (8 + n + o for o in json.loads(raw[8 : 8 + n])[tensor]["data_offsets"])
    index = ChunkIndex.load(opened())
    found, offset = [], 0
    for chunk in chunk_list(file_rows()[path]):
        place = index.get(chunk)
        assert place is not None
        if begin <= offset and offset + place.size <= end:
            found.append(chunk)
        offset += place.size
    assert found, f"no chunk lies wholly inside {tensor}"
    return found


def test_a_damaged_chunk_is_named_by_verify_and_never_lands_in_the_target(
    model_dir: Path, tmp_path: Path, cli: Cli
) -> None:
    backup(model_dir)
    pack = flip_byte_in_chunk(REPO, chunks_of_tensor(model_dir, SHARD, "model.layers.0.mlp.weight")[-1])

    assert ok(cli("verify", "--json")).json()["ok"]  # without --read-data: every pack is there
    failed = cli("verify", "--read-data", "--json")
    assert failed.code == 1
    (problem,) = failed.json()["problems"]
    assert problem["path"].endswith(pack.relative_to(REPO).as_posix())
    assert f"({SHARD} bytes " in problem["problem"] and "tensor(s) model.layers.0.mlp.weight" in problem["problem"]
    assert "model.embed_tokens.weight" not in problem["problem"]

    out = tmp_path / "restored"
    line = one_line_error(cli("restore", "--to", f"model:{out}"), 1, f"refusing to write {SHARD!r}", "damaged")
    assert "model.layers.0.mlp.weight" in line and "nothing of it was left" in line
    # A new target: the files written before the damaged one (a config, a shard, folders) go again, and the
    # folder the restore made; no temp file is left behind.
    assert not out.exists()
    # Into a folder that holds something else: only what the restore wrote goes.
    out.mkdir()
    (out / "mine.txt").write_text("not the restore's")
    one_line_error(cli("restore", "--to", f"model:{out}"), 1, f"refusing to write {SHARD!r}")
    assert [p.name for p in out.rglob("*")] == ["mine.txt"]
    with pytest.raises(IntegrityError, match=SHARD):
        restore(tmp_path / "again")


def test_a_damaged_first_tensor_chunk_is_named_with_its_tensor(model_dir: Path, cli: Cli) -> None:
    backup(model_dir)
    flip_byte_in_chunk(REPO, chunks_of_tensor(model_dir, SHARD, "model.embed_tokens.weight")[0])
    failed = cli("verify", "--read-data", "--json")
    assert failed.code == 1
    (problem,) = failed.json()["problems"]
    assert "tensor(s) model.embed_tokens.weight" in problem["problem"], problem


def test_a_missing_pack_is_reported_by_verify(model_dir: Path, cli: Cli) -> None:
    backup(model_dir)
    (pack,) = packs()
    pack.unlink()
    failed = cli("verify", "--json")
    assert failed.code == 1
    problems = failed.json()["problems"]
    assert problems and all("missing chunk pack" in p["problem"] for p in problems)
    assert any(p["path"].endswith(pack.relative_to(REPO).as_posix()) for p in problems)  # named as the path


def test_a_missing_pack_fails_the_restore_naming_it(model_dir: Path, tmp_path: Path, cli: Cli) -> None:
    backup(model_dir)
    (pack,) = packs()
    pack.unlink()
    out = tmp_path / "restored"
    one_line_error(cli("restore", "--to", f"model:{out}"), 1, "missing chunk pack", pack.relative_to(REPO).as_posix())
    assert not [p for p in out.rglob("*") if not p.is_dir()]  # every file needs that pack: none was written


def test_a_missing_pack_of_a_later_version_refuses_before_anything_is_written(model_dir: Path, tmp_path: Path) -> None:
    backup(model_dir)
    write_safetensors(model_dir / "zz-new.safetensors", {"n": weights(256, seed=77)})
    v2 = backup(model_dir)
    (v2_pack,) = [p for p in packs() if v2.bundle_id in p.as_posix()]
    v2_pack.unlink()
    out = tmp_path / "restored"
    with pytest.raises(IntegrityError, match="missing chunk pack"):
        restore(out)
    assert not out.exists() or not any(out.iterdir())


# --- elsewhere: S3, the drill -------------------------------------------------------------------------------


@pytest.mark.s3
def test_a_model_round_trips_through_s3(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"  # the packs a restore or verify downloads whole, removed when it ends
    spool.mkdir()
    monkeypatch.setenv("AIBACKUP_SPOOL_DIR", str(spool))
    src = tmp_path / "model"
    write_safetensors(src / "model.safetensors", {"a": weights(512, seed=1), "b": weights(64, seed=2)})
    (src / "config.json").write_text('{"model_type": "llama"}')
    os.symlink("model.safetensors", src / "latest.safetensors")
    url = repository_url("s3", tmp_path, request)
    result = backup(src, repo=url)
    assert result.datasets[0].config["stored"]["new_chunks"] >= 2
    out = tmp_path / "restored"
    restored = restore(out, repo=url)
    assert restored.ok, restored.to_json()
    assert tree(out) == tree(src)
    verified = run_verify(url, read_data=True)
    assert verified.ok, verified.to_json()
    assert verified.bytes_read >= (src / "model.safetensors").stat().st_size
    assert not list(spool.iterdir())

    # A second version, then prune on S3: the first bundle's unshared chunks go, the second restores.
    write_safetensors(src / "model.safetensors", {"a": weights(512, seed=3), "b": weights(64, seed=2)})
    backup(src, repo=url)
    repo = Repository.open(url)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)  # past the grace period of every pack
    pruned = run_prune(repo, lambda _source: RetentionPolicy(keep_last=1), now=later)
    assert len(pruned.removed) == 1 and pruned.chunks.bytes_reclaimed > 0, pruned.to_json()
    assert run_verify(url, read_data=True).ok
    again = tmp_path / "restored-2"
    assert restore(again, repo=url).ok
    assert tree(again) == tree(src)
    assert not list(spool.iterdir())


def test_the_restore_test_drill_restores_and_proves_a_model(model_dir: Path, tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  llm: {{uri: 'model:{model_dir}', rto: 1h}}\n"
        "restore_test: {report: ./reports/drill}\n"
    )
    ok(cli("backup"))
    drill = ok(cli("restore-test", "--json")).json()
    (source,) = drill["sources"]
    assert drill["ok"] and source["ok"] and source["error"] is None, source
    found = {c["name"]: c for c in source["checks"]}
    assert found["files"]["ok"] and "13 files match their sha256 and mode" in found["files"]["detail"]
    assert found["structure"]["ok"] and "1 gguf, 3 safetensors" in found["structure"]["detail"]
    assert not list(Path("/tmp").glob("aibackup-drill-llm-*"))  # the scratch folder is removed
    assert "| files | ok |" in (tmp_path / "reports" / "drill.md").read_text()
    assert json.loads((tmp_path / "reports" / "drill.json").read_text())["ok"]
