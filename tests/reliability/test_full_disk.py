"""A full disk under a local repository: the backup fails in one line (exit 3), commits nothing, leaves no
part behind, and everything already backed up still verifies; once there is room, the next backup works.

The disk fills for the backing-up process only: it runs with ``RLIMIT_FSIZE`` lowered (``SIGXFSZ``
ignored), so its writes past the limit fail as writes to a full disk do, through the same code path
(``EFBIG`` here, ``ENOSPC``/``EDQUOT`` on a real full disk or quota; mounting a small filesystem would need
root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import Cli, ok, seed_chroma

FULL_DISK = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from aibackup.cli import main
main(sys.argv[2:])
"""


def test_a_full_disk_fails_the_backup_cleanly(tmp_path: Path, cli: Cli) -> None:
    store, repo = tmp_path / "chroma", tmp_path / "repo"
    seed_chroma(store, "docs", n=2000, dim=64)
    ok(cli("backup", f"chroma:{store}", "--repo", str(repo)))
    before = sorted(p.relative_to(repo) for p in repo.rglob("*") if p.is_file())
    full = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(100_000), "backup", f"chroma:{store}", "--full", "--repo", str(repo)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 3, (full.returncode, full.stderr)
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "no room to write" in lines[0] and "part-00000.parquet" in lines[0], lines
    # Nothing committed, nothing left behind (its own parts removed), the earlier bundle intact.
    after = sorted(p.relative_to(repo) for p in repo.rglob("*") if p.is_file())
    assert [p for p in after if p.parts[0] != "reports"] == [p for p in before if p.parts[0] != "reports"]
    assert len(ok(cli("list", "--repo", str(repo), "--json")).json()) == 1
    assert ok(cli("verify", "--read-data", "--repo", str(repo), "--json")).json()["ok"]
    ok(cli("backup", f"chroma:{store}", "--repo", str(repo)))
    assert len(ok(cli("list", "--repo", str(repo), "--json")).json()) == 2


def test_a_full_disk_under_a_large_part_or_a_copy_is_exit_3_not_an_internal_error(tmp_path: Path, cli: Cli) -> None:
    """A part longer than the writer's queue fails in the middle of a write (not at close): the same one line
    and exit 3, for a backup and for a copy into a full disk; the copy publishes no bundle there."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    # Past two 8 MiB blocks, incompressible. Every byte has its high bit set: random ASCII can spell what the
    # config connector's secret scan refuses (it once read a token in a URL at byte 79102, exit 2).
    noise = np.frombuffer(os.urandom(24 * 1024 * 1024), dtype=np.uint8) | 0x80
    (cfg / "blob.bin").write_bytes(noise.tobytes())
    (cfg / "app.yaml").write_text("a: 1\n")
    repo, copy = tmp_path / "repo", tmp_path / "copy"
    limit = str(10 * 1024 * 1024)
    for args, where in (
        (["backup", f"config:{cfg}", "--repo", str(repo)], str(repo)),
        (["copy", "--repo", str(repo), "--to-repo", str(copy)], str(copy)),
    ):
        if args[0] == "copy":
            ok(cli("backup", f"config:{cfg}", "--repo", str(repo)))
        full = subprocess.run(
            [sys.executable, "-c", FULL_DISK, limit, *args], capture_output=True, text=True, timeout=300
        )
        assert full.returncode == 3, (args[0], full.returncode, full.stderr)
        lines = full.stderr.strip().splitlines()
        assert len(lines) == 1 and "no room to write" in lines[0] and where in lines[0], lines
    assert not list(copy.glob("bundles/*.json"))
    ok(cli("copy", "--repo", str(repo), "--to-repo", str(copy)))
    ok(cli("verify", "--repo", str(copy), "--read-data"))


def test_a_copy_stopped_by_a_full_disk_says_which_bundles_landed(tmp_path: Path, cli: Cli) -> None:
    """A copy whose destination fills after some bundles: it said only the error (exit 3), and the nightly
    run's copies[].copied was [] although the copy held the bundles that did land. Now those are listed,
    then the one error line, exit 3; the rerun with room copies the rest."""
    logs, cfg = tmp_path / "logs", tmp_path / "cfg"
    logs.mkdir()
    (logs / "a.jsonl").write_text('{"role": "user", "content": "hi"}\n')
    cfg.mkdir()
    noise = np.frombuffer(os.urandom(12 * 1024 * 1024), dtype=np.uint8) | 0x80  # see above
    (cfg / "blob.bin").write_bytes(noise.tobytes())
    repo, copy = tmp_path / "repo", tmp_path / "copy"
    ok(cli("backup", f"conversations:{logs}", "--repo", str(repo)))
    ok(cli("backup", f"config:{cfg}", "--repo", str(repo)))
    first, second = ok(cli("list", "--repo", str(repo), "--json")).json()[::-1]
    args = ["copy", "--repo", str(repo), "--to-repo", str(copy), "--json"]
    full = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(4 * 1024 * 1024), *args], capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 3, (full.returncode, full.stderr)
    doc = json.loads(full.stdout)
    assert doc["copied"] == [first["bundle_id"]] and not doc["ok"] and "no room to write" in doc["error"], doc
    assert "no room to write" in json.loads(full.stderr)["error"]["message"], full.stderr
    again = ok(cli(*args)).json()
    assert again["copied"] == [second["bundle_id"]] and again["skipped"] == [first["bundle_id"]], again
    ok(cli("verify", "--repo", str(copy), "--read-data"))


def test_a_chunk_pack_a_full_disk_cut_short_in_a_copy_is_not_left_behind(tmp_path: Path, cli: Cli) -> None:
    """A copy's chunk pack cut short by a full disk was left in place (a part's was removed): it held the
    room the rerun needed, and the rerun failed again."""
    from safetensors.numpy import save_file

    llm = tmp_path / "llm"
    llm.mkdir()
    save_file(
        {"w": np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)}, str(llm / "m.safetensors")
    )
    repo, copy = tmp_path / "repo", tmp_path / "copy"
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    args = ["copy", "--repo", str(repo), "--to-repo", str(copy)]
    full = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(1024 * 1024), *args], capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 3 and "no room to write" in full.stderr, (full.returncode, full.stderr)
    assert list(copy.rglob("packs/*")) == []
    ok(cli(*args))
    ok(cli("verify", "--repo", str(copy), "--read-data"))


def test_a_full_disk_under_a_restored_folder_is_exit_3_naming_the_file(tmp_path: Path, cli: Cli) -> None:
    """Conversation logs and fine-tuning sets restored onto a full disk: one line naming the file (it was an
    internal error, exit 70), no temporary file left, and the restore runs once there is room."""
    line = '{"user_id": "u", "input": "%s", "output": "ok"}\n'
    for kind, name in (("conversations", "app.jsonl"), ("finetune", "train.jsonl")):
        source = tmp_path / kind
        source.mkdir()
        row = '{"prompt": "%s", "completion": "ok"}\n' if kind == "finetune" else line
        (source / name).write_text("".join(row % f"{i:06d} {'x' * 200}" for i in range(8000)))  # ~1.8 MB
        repo, target = tmp_path / f"{kind}-repo", tmp_path / f"{kind}-back"
        ok(cli("backup", f"{kind}:{source}", "--repo", str(repo), "--queries", "0"))
        args = ["restore", "latest", "--repo", str(repo), "--to", f"{kind}:{target}"]
        full = subprocess.run(
            [sys.executable, "-c", FULL_DISK, str(1_000_000), *args], capture_output=True, text=True, timeout=300
        )
        assert full.returncode == 3, (kind, full.returncode, full.stderr)
        lines = full.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cannot write {target.name}/{name}: File too large" in lines[0], lines
        assert "nothing of it was left" in lines[0], lines  # not "may now hold part of the bundle"
        assert not [p for p in target.rglob("*") if p.is_file()]  # no half-written file, no temporary file
        ok(cli(*args))
        assert (target / name).read_bytes() == (source / name).read_bytes()


def test_a_full_disk_under_a_chroma_target_is_exit_3(tmp_path: Path, cli: Cli) -> None:
    """An embedded Chroma whose disk refuses the restore's writes: the storage's failure (exit 3), as for a
    Qdrant target, not a bad request (exit 2)."""
    store, repo = tmp_path / "chroma", tmp_path / "repo"
    seed_chroma(store, "docs", n=3000, dim=64)
    ok(cli("backup", f"chroma:{store}", "--repo", str(repo), "--queries", "0"))
    args = ["restore", "latest", "--repo", str(repo), "--to", f"chroma:{tmp_path / 'back'}"]
    full = subprocess.run([sys.executable, "-c", FULL_DISK, str(400_000), *args], capture_output=True, text=True)
    assert full.returncode == 3, (full.returncode, full.stderr)
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "Chroma could not" in lines[0] and "is its disk full?" in lines[0], lines
