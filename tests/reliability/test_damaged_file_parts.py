"""A part or chunk pack of a fine-tuning, config or model bundle found damaged (a bad disk: size kept, other
bytes) is not reused by the next backup: the files it holds are stored again, so the new bundle restores.
The next backup referenced the damaged part (or reused the pack's chunks), exit 0, and every later bundle
failed to restore while the source was healthy. Conversation logs and vectors: test_damaged_chain.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.helpers import Cli, flip_middle_byte, manifest_json, ok
from tests.reliability.test_damaged_chunk_packs import model


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def finetune(folder: Path) -> Path:
    folder.mkdir()
    for n in range(3):
        lines = [
            {"messages": [{"role": "user", "content": f"q{n}-{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(200)
        ]
        (folder / f"f{n}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def damage_first_part(cli: Cli, repo: Path) -> str:
    """Flip a byte of the newest bundle's first part and let `verify --read-data` record it; its path."""
    (dataset,) = manifest_json(repo)["datasets"]
    damaged: str = dataset["parts"][0]["path"]
    flip_middle_byte(repo / damaged)
    assert cli("verify", "--read-data", "--repo", str(repo)).code == 1
    return damaged


def test_a_fine_tuning_part_found_damaged_is_written_again(cli: Cli, tmp_path: Path) -> None:
    source, repo = finetune(tmp_path / "ft"), tmp_path / "repo"
    ok(cli("backup", f"finetune:{source}", "--repo", str(repo)))
    damaged = damage_first_part(cli, repo)
    with (source / "f2.jsonl").open("a") as f:
        f.write('{"new": 1}\n')
    result = ok(cli("backup", f"finetune:{source}", "--repo", str(repo), "--json")).json()
    assert any("found damaged written again" in n and damaged in n for n in result["notes"]), result["notes"]
    (written,) = manifest_json(repo, result["bundle_id"])["datasets"]
    assert damaged not in [p["path"] for p in written["parts"]]
    ok(cli("restore", "latest", "--repo", str(repo), "--to", f"finetune:{tmp_path / 'back'}"))
    assert tree(tmp_path / "back") == tree(source)


def test_a_config_part_found_damaged_is_written_again(cli: Cli, tmp_path: Path) -> None:
    source, repo = tmp_path / "conf", tmp_path / "repo"
    source.mkdir()
    for n in range(20):
        (source / f"c{n}.yaml").write_text(f"setting_{n}: {'x' * 100_000}\n")  # parts past the repack size
    ok(cli("backup", f"config:{source}", "--repo", str(repo)))
    damaged = damage_first_part(cli, repo)
    result = ok(cli("backup", f"config:{source}", "--repo", str(repo), "--json")).json()  # nothing changed
    assert any("found damaged written again" in n for n in result["notes"]), result["notes"]
    (written,) = manifest_json(repo, result["bundle_id"])["datasets"]
    assert damaged not in [p["path"] for p in written["parts"]]
    ok(cli("restore", "latest", "--repo", str(repo), "--to", f"config:{tmp_path / 'back'}"))
    assert tree(tmp_path / "back") == tree(source)


def test_a_chunk_pack_found_damaged_is_not_reused(cli: Cli, tmp_path: Path) -> None:
    source, repo = model(tmp_path / "m", 300), tmp_path / "repo"
    first = ok(cli("backup", f"model:{source}", "--repo", str(repo), "--json")).json()["bundle_id"]
    (pack,) = repo.glob(f"data/{first}/packs/*.parquet")
    flip_middle_byte(pack)
    assert cli("verify", "--read-data", "--repo", str(repo)).code == 1
    second = ok(cli("backup", f"model:{source}", "--repo", str(repo), "--json")).json()["bundle_id"]
    assert list(repo.glob(f"data/{second}/packs/*.parquet"))  # the chunks stored again
    ok(cli("restore", second, "--repo", str(repo), "--to", f"model:{tmp_path / 'back'}"))
    assert tree(tmp_path / "back") == tree(source)
    # The index gives the newer copy of each chunk: the first bundle restores again too.
    ok(cli("restore", first, "--repo", str(repo), "--to", f"model:{tmp_path / 'first'}"))
    assert tree(tmp_path / "first") == tree(source)


def test_a_model_bundle_whose_chunk_pack_is_missing_is_neither_newest_nor_kept_in_its_place(
    cli: Cli, tmp_path: Path
) -> None:
    """`status` and `prune` looked only at a bundle's parts: a model version whose own pack was lost was the
    source's newest intact bundle (ok, exit 0), and `prune --keep-last 1` kept it and removed the version
    before it, the only one that restored. Now it is damaged for both, as a bundle with a part missing."""
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\nsources:\n  llm: {uri: 'model:./m', rpo: 24h}\n", encoding="utf-8"
    )
    source = model(tmp_path / "m", 300)
    first = ok(cli("backup", "--json")).json()["sources"][0]["bundle_id"]
    (source / "more.safetensors").write_bytes((source / "model.safetensors").read_bytes()[::-1])  # new chunks
    second = ok(cli("backup", "--json")).json()["sources"][0]["bundle_id"]
    (pack,) = (tmp_path / "repo").glob(f"data/{second}/packs/*.parquet")
    pack.unlink()

    status = cli("status", "--json").json()
    assert status["sources"][0]["newest_bundle"] == first, status

    pruned = ok(cli("prune", "--keep-last", "1", "--json")).json()
    kept = {d["bundle_id"]: d["reasons"] for d in pruned["kept"]}
    assert kept[first] == ["last 1"] and kept[second][0].startswith("damaged: 1 part(s) missing"), pruned
    ok(cli("restore", first, "--to", f"model:{tmp_path / 'back'}"))


def test_a_log_part_found_damaged_makes_the_next_backup_full_and_says_why(cli: Cli, tmp_path: Path) -> None:
    """The next backup of the logs was full, as it must be, but said "no earlier bundle of this dataset"
    beside its parent, and printed no note."""
    logs, repo = tmp_path / "logs", tmp_path / "repo"
    logs.mkdir()
    (logs / "a.jsonl").write_text("".join(f'{{"user_id": "u", "input": "q{i}"}}\n' for i in range(50)))
    ok(cli("backup", f"conversations:{logs}", "--repo", str(repo), "--json"))
    with (logs / "a.jsonl").open("a") as f:
        f.write('{"user_id": "u", "input": "next night"}\n')
    night = ok(cli("backup", f"conversations:{logs}", "--repo", str(repo), "--json")).json()
    assert night["datasets"][0]["incremental"] and night["notes"] == [], night  # a healthy chain says nothing
    first = night["bundle_id"]
    damaged = damage_first_part(cli, repo)
    with (logs / "a.jsonl").open("a") as f:
        f.write('{"user_id": "u", "input": "new"}\n')
    result = ok(cli("backup", f"conversations:{logs}", "--repo", str(repo), "--json")).json()
    (written,) = result["datasets"]
    assert not written["incremental"], written
    reason = written["full_reason"]
    assert reason.startswith(f"a part of bundle {first} is damaged (") and damaged in reason, reason
    assert any("full backup, not incremental" in n and damaged in n for n in result["notes"]), result["notes"]
    ok(cli("restore", "latest", "--repo", str(repo), "--to", f"conversations:{tmp_path / 'back'}"))
    assert tree(tmp_path / "back") == tree(logs)
