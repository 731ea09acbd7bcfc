"""Fine-tuning and config datasets: a later backup references its parent's parts for unchanged files.

Every bundle must still restore exactly the files of its own time, verify, and survive prune of the bundle
whose parts it references; a missing referenced part makes the next backup write everything again.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aibackup import backup as backup_module
from aibackup import filereuse
from aibackup.bundle_reader import BundleReader
from aibackup.connectors.files import configfiles
from aibackup.parquet_parts import WriteOptions
from aibackup.repository import Repository
from tests.helpers import Cli, dataset_folder_number, ok, one_line_error


def _write_jsonl(path: Path, tag: str, lines: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(lines):
            messages = [{"role": "user", "content": f"{tag} {i}"}, {"role": "assistant", "content": "ok"}]
            f.write(json.dumps({"messages": messages}) + "\n")
        f.write("{not json\n")  # an invalid line: its note must survive being referenced


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _backup(cli: Cli, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = ok(cli("backup", *args, "--json")).json()
    return result


def test_unchanged_fine_tuning_files_are_referenced_and_every_bundle_restores_its_own_files(
    tmp_path: Path, cli: Cli
) -> None:
    data, repo = tmp_path / "train", str(tmp_path / "repo")
    for n in range(3):
        _write_jsonl(data / f"part{n}.jsonl", f"v0-{n}", 300)
    first = _backup(cli, f"finetune:{data}", "--repo", repo)
    snapshots = {first["bundle_id"]: _files(data)}
    assert first["datasets"][0]["full_reason"] == "no earlier bundle of this dataset"

    _write_jsonl(data / "part1.jsonl", "v1", 310)  # one file changed
    second = _backup(cli, f"finetune:{data}", "--repo", repo)
    snapshots[second["bundle_id"]] = _files(data)
    (d,) = second["datasets"]
    assert d["incremental"] and d["full_reason"] is None
    assert (d["rows"], d["new_rows"]) == (301 + 311 + 301, 311)
    assert any("2 of 3 file(s) referenced" in note for note in second["notes"])
    assert sum("invalid line(s)" in note and "part0.jsonl:301" in note for note in second["notes"]) == 1

    (data / "part2.jsonl").unlink()  # one file gone, one new, one unchanged since the first bundle
    _write_jsonl(data / "sub" / "new.jsonl", "new", 50)
    third = _backup(cli, f"finetune:{data}", "--repo", repo)
    snapshots[third["bundle_id"]] = _files(data)
    (d,) = third["datasets"]
    assert (d["rows"], d["new_rows"]) == (301 + 311 + 51, 51)

    unchanged = _backup(cli, f"finetune:{data}", "--repo", repo)
    snapshots[unchanged["bundle_id"]] = _files(data)
    assert (unchanged["datasets"][0]["new_rows"], unchanged["datasets"][0]["new_bytes"]) == (0, 0)

    full = _backup(cli, f"finetune:{data}", "--repo", repo, "--full")
    assert full["datasets"][0]["full_reason"] == "--full was given"
    assert full["datasets"][0]["new_rows"] == full["datasets"][0]["rows"]

    assert ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()["ok"]
    for bundle_id, expected in snapshots.items():
        target = tmp_path / f"out-{bundle_id}"
        restored = ok(cli("restore", bundle_id, "--to", f"finetune:{target}", "--repo", repo, "--json")).json()
        assert restored["ok"]
        assert _files(target) == expected, bundle_id
    shown = ok(cli("show", third["bundle_id"], "--repo", repo)).out
    assert f"referenced from bundle(s) {first['bundle_id']}, {second['bundle_id']}" in shown


def test_prune_keeps_the_parts_a_kept_bundle_references(tmp_path: Path, cli: Cli) -> None:
    data, repo = tmp_path / "train", str(tmp_path / "repo")
    _write_jsonl(data / "a.jsonl", "a", 100)
    _write_jsonl(data / "b.jsonl", "b", 100)
    first = _backup(cli, f"finetune:{data}", "--repo", repo)
    _write_jsonl(data / "b.jsonl", "b2", 100)
    second = _backup(cli, f"finetune:{data}", "--repo", repo)
    pruned = ok(cli("prune", "--keep-last", "1", "--grace", "0s", "--repo", repo, "--json")).json()
    assert [r["bundle_id"] for r in pruned["removed"]] == [first["bundle_id"]]
    assert [dataset_folder_number(p) for p in pruned["parts_removed"]] == ["000"]  # b's old part
    referenced = [p.path for p in Repository.open(repo).load(second["bundle_id"]).datasets[0].parts]
    assert pruned["parts_kept_for_chains"] == [p for p in referenced if first["bundle_id"] in p]  # a's part
    assert len(pruned["parts_kept_for_chains"]) == 1
    assert ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()["ok"]
    target = tmp_path / "out"
    ok(cli("restore", second["bundle_id"], "--to", f"finetune:{target}", "--repo", repo))
    assert _files(target) == _files(data)


def test_a_missing_referenced_part_is_detected_and_the_next_backup_writes_everything(tmp_path: Path, cli: Cli) -> None:
    data, repo = tmp_path / "train", tmp_path / "repo"
    _write_jsonl(data / "a.jsonl", "a", 100)
    _write_jsonl(data / "b.jsonl", "b", 100)
    first = _backup(cli, f"finetune:{data}", "--repo", str(repo))
    _write_jsonl(data / "b.jsonl", "b2", 100)
    second = _backup(cli, f"finetune:{data}", "--repo", str(repo))
    referenced = next(
        p
        for p in Repository.open(str(repo)).load(second["bundle_id"]).datasets[0].parts
        if p.bundle != second["bundle_id"]
    )
    (repo / referenced.path).unlink()  # the first bundle's part of a.jsonl, which the second references

    one_line_error(
        cli("restore", second["bundle_id"], "--to", f"finetune:{tmp_path / 'out'}", "--repo", str(repo)),
        1,
        referenced.path,
    )
    verified = cli("verify", "--repo", str(repo), "--json")
    assert verified.code == 1 and not verified.json()["ok"]
    third = _backup(cli, f"finetune:{data}", "--repo", str(repo))
    (d,) = third["datasets"]
    assert d["new_rows"] == d["rows"] == 202 and not d["incremental"]
    assert first["bundle_id"] in d["full_reason"] or "cannot be referenced" in d["full_reason"]
    target = tmp_path / "out3"
    ok(cli("restore", third["bundle_id"], "--to", f"finetune:{target}", "--repo", str(repo)))
    assert _files(target) == _files(data)


def test_config_parts_with_only_unchanged_files_are_referenced(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf, repo = tmp_path / "conf", str(tmp_path / "repo")
    for n in range(40):
        (conf / f"d{n % 4}").mkdir(parents=True, exist_ok=True)
        (conf / f"d{n % 4}" / f"f{n:02d}.ini").write_bytes(f"[s]\nvalue = {n}\n".encode() + bytes(2000))
    (conf / "latest").symlink_to("d0/f00.ini")
    monkeypatch.setattr(filereuse, "SMALL_PART", 0)  # tiny parts count as big here: each one is referenced
    monkeypatch.setattr(configfiles, "BATCH_ROWS", 10)  # batches, and so parts, of ten files
    small = WriteOptions(part_bytes=20000, row_group_bytes=20000)
    writer = backup_module.BundleWriter
    monkeypatch.setattr(
        backup_module, "BundleWriter", lambda repo, bundle_id, _options=None, **kw: writer(repo, bundle_id, small, **kw)
    )
    first = _backup(cli, f"config:{conf}", "--repo", repo)
    parts = len(Repository.open(repo).load(first["bundle_id"]).datasets[0].parts)
    assert parts >= 4, parts

    same = _backup(cli, f"config:{conf}", "--repo", repo)
    assert (same["datasets"][0]["new_rows"], same["datasets"][0]["new_bytes"]) == (0, 0)
    (conf / "d1" / "f05.ini").write_bytes(b"[s]\nvalue = changed\n")
    (conf / "d2" / "f06.ini").chmod(0o600)  # a mode change is a change
    changed = _backup(cli, f"config:{conf}", "--repo", repo)
    (d,) = changed["datasets"]
    assert d["incremental"] and 0 < d["new_rows"] < d["rows"] == 41
    assert ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()["ok"]
    target = tmp_path / "out"
    restored = ok(cli("restore", changed["bundle_id"], "--to", f"config:{target}", "--repo", repo, "--json")).json()
    assert restored["ok"]
    assert _files(target) == _files(conf)
    assert (target / "d2" / "f06.ini").stat().st_mode & 0o777 == 0o600
    assert (target / "latest").is_symlink()


def test_small_config_parts_are_packed_again_with_the_changes(tmp_path: Path, cli: Cli) -> None:
    conf, repo = tmp_path / "conf", str(tmp_path / "repo")
    conf.mkdir()
    for n in range(5):
        (conf / f"f{n}.yaml").write_text(f"n: {n}\n")
    _backup(cli, f"config:{conf}", "--repo", repo)
    assert _backup(cli, f"config:{conf}", "--repo", repo)["datasets"][0]["new_rows"] == 0
    (conf / "f3.yaml").write_text("n: three\n")
    (d,) = _backup(cli, f"config:{conf}", "--repo", repo)["datasets"]
    assert d["new_rows"] == d["rows"] == 5  # one small part: written again whole, not one part per night
    assert (
        d["full_reason"]
        == "every part of the previous bundle holds a changed file or is small (written again with the changes)"
    )


def test_a_bundle_without_part_contents_is_not_referenced(tmp_path: Path, cli: Cli) -> None:
    data, repo = tmp_path / "train", str(tmp_path / "repo")
    _write_jsonl(data / "a.jsonl", "a", 10)
    first = _backup(cli, f"finetune:{data}", "--repo", repo)
    repository = Repository.open(repo)
    dataset = repository.load(first["bundle_id"]).datasets[0]
    older = replace(dataset, state={k: v for k, v in (dataset.state or {}).items() if k != "parts"})
    kind = filereuse.FILE_KINDS["finetune"]
    offer, why = filereuse.offer(BundleReader(repository), kind, first["bundle_id"], older, full=False)
    assert offer is None and "written before aibackup 0.4.0" in why
    wrong = dict(dataset.state or {})
    wrong["parts"] = [dict(wrong["parts"][0], digest="0" * 32)]
    offer, why = filereuse.offer(
        BundleReader(repository), kind, first["bundle_id"], replace(dataset, state=wrong), full=False
    )
    assert offer is None and "do not add up" in why
    offer, _ = filereuse.offer(BundleReader(repository), kind, first["bundle_id"], dataset, full=False)
    assert offer is not None and [u.files for u in offer.units] == [{"a.jsonl": 11}]
