"""Undecodable Parquet metadata (a flipped byte in a file's footer) is damage, found as damage: pyarrow reports
a footer whose thrift does not decode as a plain OSError, which had read as storage that cannot be read
(``verify --read-data`` stopped at a fine-tuning part with exit 3) or as a bug (a model bundle's chunk index:
exit 70 from verify, restore and prune, prune after it had removed a manifest)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from aibackup.repository import Repository
from tests.helpers import Cli, manifest_json, ok


def flip_footer_byte(path: Path) -> None:
    """Flip a byte in the middle of a Parquet file's footer (its thrift FileMetaData, or encrypted footer); in
    a sealed document (an encrypted repository's chunk index), the middle byte."""
    data = bytearray(path.read_bytes())
    if data[-4:] in (b"PAR1", b"PARE"):
        (length,) = struct.unpack("<I", data[-8:-4])
        data[len(data) - 8 - length // 2] ^= 0x10
    else:
        data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def conversations(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [{"user_id": f"u{n}", "input": f"question {n}", "output": f"answer {n}"} for n in range(20)]
    (folder / "app.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_fine_tuning_part_with_a_damaged_footer_is_damage_and_the_other_bundles_are_checked(
    tmp_path: Path, cli: Cli
) -> None:
    ft = tmp_path / "ft"
    ft.mkdir()
    turns = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(50)]
    (ft / "train.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in turns))
    repo = tmp_path / "repo"
    ok(cli("backup", f"finetune:{ft}", "--repo", str(repo)))
    ok(cli("backup", f"conversations:{conversations(tmp_path / 'logs')}", "--repo", str(repo)))
    first = Repository.open(str(repo)).bundle_ids()[0]
    (part,) = [repo / p["path"] for d in manifest_json(repo, first)["datasets"] for p in d["parts"]]
    flip_footer_byte(part)  # an encrypted repository's part has an encrypted footer: it does not decrypt then
    result = cli("verify", "--read-data", "--repo", str(repo), "--json")
    assert result.code == 1, (result.code, result.out, result.err)
    report = result.json()
    assert [p["path"] for p in report["problems"]] == [str(part)] and report["bundles"] == 2


def test_a_damaged_chunk_index_is_damage_to_verify_and_restore_and_prune_leaves_the_packs(
    tmp_path: Path, cli: Cli
) -> None:
    repo = tmp_path / "repo"
    model = tmp_path / "llm"
    model.mkdir()
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        save_file({"w": rng.standard_normal((256, 512)).astype(np.float32)}, str(model / "model.safetensors"))
        ok(cli("backup", f"model:{model}", "--repo", str(repo)))
    indexes = sorted((repo / "index").glob("*.parquet"))
    assert len(indexes) == 2
    for index in indexes:
        flip_footer_byte(index)
    packs = sorted(p for p in repo.rglob("*") if p.is_file() and "packs" in p.parts)
    assert packs
    names = {index.name for index in indexes}
    verified = cli("verify", "--read-data", "--repo", str(repo), "--json")
    assert verified.code == 1, verified
    problems = verified.json()["problems"]
    assert problems and all(Path(p["path"]).name in names for p in problems), problems  # the file, not ""
    restored = cli("restore", "latest", "--repo", str(repo), "--to", f"model:{tmp_path / 'out'}")
    assert restored.code == 1 and any(n in restored.err for n in names), restored
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    pruned = cli("prune", "--keep-last", "1", "--grace", "0s", "--repo", str(repo), "--json")
    assert pruned.code == 0 and "Traceback" not in pruned.err, pruned
    assert any("chunk store left as it is" in n for n in pruned.json()["notes"]), pruned.out
    assert sorted(p for p in repo.rglob("*") if p.is_file() and "packs" in p.parts) == packs
