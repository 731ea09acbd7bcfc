"""`aibackup copy`: the bundles a second repository lacks, copied byte for byte and verified on the way
(issue 20's first part). Every test runs against plain and (second CI pass) encrypted repositories."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from aibackup import keys, reports
from aibackup.chunkprune import referenced_chunks
from aibackup.errors import UnavailableError
from aibackup.repository import Repository
from tests.helpers import (
    Cli,
    flip_byte_in_chunk,
    flip_middle_byte,
    legacy_encrypted_repository,
    ok,
    one_line_error,
    repository_url,
)


def conversations(folder: Path, lines: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "app.jsonl").open("a") as f:
        for n in range(start, start + lines):
            f.write(json.dumps({"user_id": f"u{n}", "input": f"question {n}", "output": f"answer {n}"}) + "\n")
    return folder


def model(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((512, 1024)).astype(np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def three_bundles(cli: Cli, tmp_path: Path, repo: str) -> list[str]:
    """An incremental chain of conversation logs (the second and third bundles list the first's part) and a
    model bundle (its bytes in chunk packs)."""
    logs = conversations(tmp_path / "logs", 50)
    ok(cli("backup", f"conversations:{logs}", "--repo", repo))
    conversations(logs, 10, start=50)
    ok(cli("backup", f"conversations:{logs}", "--repo", repo))
    ok(cli("backup", f"model:{model(tmp_path / 'llm', 1)}", "--repo", repo))
    return Repository.open(repo).bundle_ids()


@pytest.mark.parametrize(
    ("source_where", "dest_where"), [("local", "local"), pytest.param("local", "s3", marks=pytest.mark.s3)]
)
def test_copy_brings_every_bundle_and_a_second_run_nothing(
    cli: Cli, tmp_path: Path, request: pytest.FixtureRequest, source_where: str, dest_where: str
) -> None:
    source = str(tmp_path / "repo")
    ids = three_bundles(cli, tmp_path, source)
    dest = repository_url(dest_where, tmp_path, request) + ("-copy" if dest_where == "local" else "")
    first = json.loads(ok(cli("copy", "--repo", source, "--to-repo", dest, "--json")).out)
    assert first["ok"] and first["copied"] == ids and first["skipped"] == [] and first["bytes"] > 0
    again = json.loads(ok(cli("copy", "--repo", source, "--to-repo", dest, "--json")).out)
    assert again["copied"] == [] and again["skipped"] == ids and again["bytes"] == 0
    assert Repository.open(dest).bundle_ids() == ids
    ok(cli("verify", "--repo", dest, "--read-data"))
    # The copy restores like the source: the chain's newest bundle, and the model byte for byte.
    ok(cli("restore", ids[1], "--repo", dest, "--to", f"conversations:{tmp_path / 'logs-back'}"))
    assert (tmp_path / "logs-back" / "app.jsonl").read_bytes() == (tmp_path / "logs" / "app.jsonl").read_bytes()
    ok(cli("restore", "latest", "--repo", dest, "--to", f"model:{tmp_path / 'llm-back'}"))
    assert files_of(tmp_path / "llm-back") == files_of(tmp_path / "llm")


@pytest.mark.s3
def test_copy_from_s3_to_s3_and_back_to_local(cli: Cli, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = repository_url("s3", tmp_path, request)
    ids = three_bundles(cli, tmp_path, url)
    other = url.rsplit("/", 1)[0] + "/second-region"
    ok(cli("copy", "--repo", url, "--to-repo", other))
    local = str(tmp_path / "third")
    ok(cli("copy", "--repo", other, "--to-repo", local))
    assert Repository.open(local).bundle_ids() == ids
    ok(cli("verify", "--repo", local, "--read-data"))


def test_copy_of_one_bundle_brings_the_chain_it_needs(cli: Cli, tmp_path: Path) -> None:
    source = str(tmp_path / "repo")
    ids = three_bundles(cli, tmp_path, source)
    dest = str(tmp_path / "copy")
    out = json.loads(ok(cli("copy", ids[1], "--repo", source, "--to-repo", dest, "--json")).out)
    assert out["copied"] == [ids[1]]
    ok(cli("restore", ids[1], "--repo", dest, "--to", f"conversations:{tmp_path / 'back'}"))
    assert (tmp_path / "back" / "app.jsonl").read_bytes() == (tmp_path / "logs" / "app.jsonl").read_bytes()
    # The first bundle's part came with it (the chain lists it); copying that bundle later adds its manifest.
    out = json.loads(ok(cli("copy", "--repo", source, "--to-repo", dest, "--json")).out)
    assert out["copied"] == [ids[0], ids[2]]


def test_a_damaged_source_part_fails_its_bundle_only(cli: Cli, tmp_path: Path) -> None:
    source = str(tmp_path / "repo")
    logs = conversations(tmp_path / "logs", 50)
    ok(cli("backup", f"conversations:{logs}", "--repo", source, "--full"))
    ok(cli("backup", f"model:{model(tmp_path / 'llm', 1)}", "--repo", source))
    first, second = Repository.open(source).bundle_ids()
    shutil.copytree(tmp_path / "repo", tmp_path / "repo-before")
    part = next((tmp_path / "repo" / "data" / first).rglob("part-*.parquet"))
    flip_middle_byte(part)
    dest = str(tmp_path / "copy")
    result = cli("copy", "--repo", source, "--to-repo", dest, "--json")
    assert result.code == 1
    out = json.loads(result.out)
    assert out["copied"] == [second] and [f["bundle_id"] for f in out["failed"]] == [first]
    assert part.name in out["failed"][0]["problem"] and "sha256" in out["failed"][0]["problem"]
    assert Repository.open(dest).bundle_ids() == [second]  # no partial bundle
    assert not list((tmp_path / "copy" / "data").glob(f"{first}/**/*.parquet"))
    # The source remembers what its copy found, as after a verify: a copy back from a sound repository
    # repairs it (before: "ok", nothing repaired, until a verify --read-data had run).
    rel = part.relative_to(tmp_path / "repo").as_posix()
    assert reports.damaged_parts(Repository.open(source)) == {rel}
    assert first not in reports.verified_bundles(Repository.open(source))
    sound = str(tmp_path / "sound")
    shutil.copytree(tmp_path / "repo", sound)
    shutil.copyfile(tmp_path / "repo-before" / rel, Path(sound) / rel)
    back = ok(cli("copy", "--repo", sound, "--to-repo", source, "--json")).json()
    assert back["repaired"] == [rel] and ok(cli("verify", "--repo", source, "--read-data")).code == 0


def test_an_interrupted_copy_is_completed_by_a_rerun(cli: Cli, tmp_path: Path) -> None:
    source = str(tmp_path / "repo")
    ids = three_bundles(cli, tmp_path, source)
    dest = tmp_path / "copy"
    ok(cli("copy", ids[0], "--repo", source, "--to-repo", str(dest)))
    # As a crash leaves it: a part of the next bundle half-written, its manifest never written.
    part = next((tmp_path / "repo" / "data" / ids[1]).rglob("part-*.parquet"))
    half = dest / part.relative_to(tmp_path / "repo")
    half.parent.mkdir(parents=True, exist_ok=True)
    half.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    assert Repository.open(str(dest)).bundle_ids() == [ids[0]]
    out = json.loads(ok(cli("copy", "--repo", source, "--to-repo", str(dest), "--json")).out)
    assert out["copied"] == ids[1:] and out["skipped"] == [ids[0]]
    ok(cli("verify", "--repo", str(dest), "--read-data"))


def test_a_damaged_chunk_pack_is_not_copied(cli: Cli, tmp_path: Path) -> None:
    source = str(tmp_path / "repo")
    ok(cli("backup", f"model:{model(tmp_path / 'llm', 1)}", "--repo", source))
    pack = next((tmp_path / "repo" / "data").rglob("packs/*.parquet"))
    flip_middle_byte(pack)
    result = cli("copy", "--repo", source, "--to-repo", str(tmp_path / "copy"), "--json")
    assert result.code == 1
    (failed,) = json.loads(result.out)["failed"]
    assert "damaged chunk pack" in failed["problem"] and pack.name in failed["problem"]
    assert not list((tmp_path / "copy").rglob("packs/*.parquet"))


def test_prune_on_the_copy_keeps_what_its_bundles_need(cli: Cli, tmp_path: Path) -> None:
    source = str(tmp_path / "repo")
    ok(cli("backup", f"model:{model(tmp_path / 'llm', 1)}", "--repo", source))
    model(tmp_path / "llm", 2)
    ok(cli("backup", f"model:{tmp_path / 'llm'}", "--repo", source))
    dest = str(tmp_path / "copy")
    ok(cli("copy", "--repo", source, "--to-repo", dest))
    ok(cli("prune", "--repo", dest, "--keep-last", "1", "--grace", "0s"))
    assert len(Repository.open(dest).bundle_ids()) == 1
    assert len(Repository.open(source).bundle_ids()) == 2  # its own retention: the source is untouched
    ok(cli("verify", "--repo", dest, "--read-data"))
    ok(cli("restore", "latest", "--repo", dest, "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(tmp_path / "llm")


def test_copying_between_encrypted_and_plain_repositories_is_refused(cli: Cli, tmp_path: Path) -> None:
    source = str(tmp_path / "repo")
    ok(cli("backup", f"conversations:{conversations(tmp_path / 'logs', 5)}", "--repo", source))
    encrypted = Repository.open(source).encrypted
    other = tmp_path / "other"
    Repository.init(str(other), passphrase=None if encrypted else b"another passphrase")
    # Each side as it is (it said "the source repository is not encrypted and OTHER is not" of an encrypted one).
    theirs = "not encrypted" if encrypted else "encrypted"
    ours = "encrypted" if encrypted else "not encrypted"
    refused = cli("copy", "--repo", source, "--to-repo", str(other))
    one_line_error(refused, 2, f"the source repository is {ours} and {other} is {theirs}:")
    assert Repository.open(str(other)).bundle_ids() == []


def test_a_copy_with_a_key_of_its_own_gets_a_slot_for_it(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configured copy with a `key_file` of its own (operations.md: "a key slot of its own"): the first
    night's copy was refused as a wrong key, as was every later one, and the copy never existed while the
    backups went on. Now the new copy gets a passphrase slot for that key beside the source's slots; into an
    existing copy a key that opens none of its slots is still refused, and nothing is written there."""
    monkeypatch.setenv("AIBACKUP_KEY", "the source's passphrase")
    own = tmp_path / "copy.key"
    own.write_text("the copy's own passphrase\n")
    logs = conversations(tmp_path / "logs", 10)
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\n"
        f"sources:\n  logs: {{uri: 'conversations:{logs}', rpo: 24h}}\n"
        f"copies: [{{repository: ./copy, key_file: {own}}}]\n"
    )
    night = ok(cli("backup", "--json")).json()
    (copied,) = night["copies"]
    assert copied["ok"] and len(copied["copied"]) == 1, copied
    copy = str(tmp_path / "copy")
    assert ok(cli("status")).code == 0
    for key in (["--key-file", str(own)], []):  # its own key, and the source's (AIBACKUP_KEY)
        slots = ok(cli("key", "list", "--repo", copy, "--json", *key)).json()["slots"]
        assert len(slots) == 2 and sum(s["opened"] for s in slots) == 1, slots
        ok(cli("verify", "--read-data", "--repo", copy, *key))
    ok(cli("restore", "latest", "--repo", copy, "--key-file", str(own), "--to", f"conversations:{tmp_path / 'b'}"))
    assert (tmp_path / "b" / "app.jsonl").read_bytes() == (logs / "app.jsonl").read_bytes()
    # The source's key rotated: the nightly copy takes the new key and says so.
    ok(cli("key", "rotate", "--repo", str(tmp_path / "repo")))
    conversations(logs, 3, start=100)
    assert ok(cli("backup", "--json")).json()["copies"][0]["generations_added"] == [2]
    ok(cli("key", "rotate", "--repo", str(tmp_path / "repo")))
    conversations(logs, 3, start=200)
    assert f"copy to {copy}: master key(s) 3 " in ok(cli("backup")).out

    # From the command line, into a new location: the slot is named. Into an existing copy: refused.
    other = tmp_path / "other"
    text = ok(cli("copy", "--repo", str(tmp_path / "repo"), "--to-repo", str(other), "--to-key-file", str(own))).out
    assert "added key slot" in text and str(own) in text, text
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not the passphrase of any slot\n")
    conversations(logs, 5, start=10)
    ok(cli("backup", f"conversations:{logs}", "--repo", str(tmp_path / "repo")))
    marker = (other / "aibackup.json").read_bytes()
    refused = cli("copy", "--repo", str(tmp_path / "repo"), "--to-repo", str(other), "--to-key-file", str(wrong))
    one_line_error(refused, 2, "key")
    assert (other / "aibackup.json").read_bytes() == marker and len(Repository.open(str(other)).bundle_ids()) == 3


def test_the_destination_is_not_the_source(tmp_path: Path, cli: Cli) -> None:
    source = str(tmp_path / "repo")
    ok(cli("backup", f"conversations:{conversations(tmp_path / 'logs', 5)}", "--repo", source))
    (tmp_path / "link").symlink_to(tmp_path / "repo")
    # However it is spelled: a copy "into itself" had copied nothing and said the bundles were already there.
    for same in (source, f"{source}/.", f"{source}/", str(tmp_path / "link")):
        one_line_error(cli("copy", "--repo", source, "--to-repo", same), 2, "the source repository itself")


def copied_then_rotated(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, passphrase: str
) -> tuple[str, str, Path]:
    """An encrypted repository tmp_path/repo with one bundle of conversation logs, copied into tmp_path/copy,
    then its key rotated: (the repository, the copy, the logs' folder)."""
    monkeypatch.setenv("AIBACKUP_KEY", passphrase)
    source, copy = str(tmp_path / "repo"), str(tmp_path / "copy")
    logs = conversations(tmp_path / "logs", 10)
    ok(cli("init", "--repo", source, "--encrypt"))
    ok(cli("backup", f"conversations:{logs}", "--repo", source))
    ok(cli("copy", "--repo", source, "--to-repo", copy))
    ok(cli("key", "rotate", "--repo", source))
    return source, copy, logs


def test_a_key_rotated_in_the_source_reaches_the_copy(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `key rotate` on the source, the next copy adds the new master key to the copy's own slots (the
    copy was refused for good, asking for a new location), and the copy reads every bundle."""
    source, copy, logs = copied_then_rotated(cli, tmp_path, monkeypatch, "the source's passphrase")
    conversations(logs, 5, start=10)
    ok(cli("backup", f"conversations:{logs}", "--repo", source))
    result = ok(cli("copy", "--repo", source, "--to-repo", copy, "--json")).json()
    assert result["generations_added"] == [2] and len(result["copied"]) == 1, result
    assert Repository.open(copy).bundle_ids() == Repository.open(source).bundle_ids()
    ok(cli("verify", "--repo", copy, "--read-data"))
    keys = ok(cli("key", "list", "--repo", copy, "--json")).json()
    assert [g["id"] for g in keys["generations"]] == [1, 2]
    ok(cli("restore", "latest", "--repo", copy, "--to", f"conversations:{tmp_path / 'back'}"))
    assert (tmp_path / "back" / "app.jsonl").read_bytes() == (logs / "app.jsonl").read_bytes()
    # A copy whose key was rotated on its own would read the source's next bundles with its own key: refused.
    ok(cli("key", "rotate", "--repo", copy))
    conversations(logs, 5, start=15)
    ok(cli("backup", f"conversations:{logs}", "--repo", source))
    one_line_error(cli("copy", "--repo", source, "--to-repo", copy), 2, "another master key", "new location")
    assert len(Repository.open(copy).bundle_ids()) == 2


def test_a_repository_of_aibackup_0_4_copies_with_its_key_file(cli: Cli, tmp_path: Path) -> None:
    """--key-file opens a 0.4 repository for copy as for every other verb (it asked for AIBACKUP_KEY)."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    legacy_encrypted_repository(source, "the legacy passphrase")
    key = tmp_path / "key.txt"
    key.write_text("the legacy passphrase\n")
    ok(
        cli(
            "backup",
            f"conversations:{conversations(tmp_path / 'logs', 5)}",
            "--repo",
            str(source),
            "--key-file",
            str(key),
        )
    )
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--key-file", str(key)))
    ok(cli("verify", "--repo", str(copy), "--read-data", "--key-file", str(key)))


def test_the_nightly_backup_copies_its_new_bundles_into_every_configured_copy(cli: Cli, tmp_path: Path) -> None:
    logs = conversations(tmp_path / "logs", 20)
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\n"
        f"sources:\n  logs: {{uri: 'conversations:{logs}', rpo: 1h}}\n  llm: 'model:{model(tmp_path / 'llm', 1)}'\n"
        "copies:\n  - {repository: ./copy-eu}\n  - repository: ./copy-us\n"
    )
    out = json.loads(ok(cli("backup", "--json")).out)
    new = sorted(r["bundle_id"] for r in out["sources"])
    assert [c["repository"].rsplit("/", 1)[-1] for c in out["copies"]] == ["copy-eu", "copy-us"]
    assert all(c["ok"] and sorted(c["copied"]) == new for c in out["copies"]), out["copies"]
    for copy in ("copy-eu", "copy-us"):
        assert Repository.open(str(tmp_path / copy)).bundle_ids() == new
        ok(cli("verify", "--repo", str(tmp_path / copy), "--read-data"))
    # The next night copies only what is new.
    conversations(logs, 5, start=20)
    again = json.loads(ok(cli("backup", "--json")).out)
    assert all(len(c["copied"]) == 2 for c in again["copies"])


def test_a_night_whose_copy_failed_is_caught_up_and_the_copys_own_prune_stands(cli: Cli, tmp_path: Path) -> None:
    logs = conversations(tmp_path / "logs", 20)
    copy = tmp_path / "copy-eu"
    copy.mkdir()
    (copy / "something.txt").write_text("not ours\n")  # the copy cannot be made tonight
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: 'conversations:{logs}'\ncopies:\n  - {{repository: ./copy-eu}}\n"
    )
    assert cli("backup").code == 2
    (copy / "something.txt").unlink()
    # A night whose source fails still copies what is missing.
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\nsources:\n  logs: 'conversations:./gone'\ncopies:\n  - {repository: ./copy-eu}\n"
    )
    out = json.loads(cli("backup", "--json").out)
    assert not out["sources"][0]["ok"] and out["copies"][0]["ok"] and len(out["copies"][0]["copied"]) == 1
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: 'conversations:{logs}'\ncopies:\n  - {{repository: ./copy-eu}}\n"
    )
    conversations(logs, 5, start=20)
    ok(cli("backup"))
    assert Repository.open(str(copy)).bundle_ids() == Repository.open(str(tmp_path / "repo")).bundle_ids()
    # The copy keeps fewer bundles than the source: the next night does not bring them back.
    ok(cli("prune", "--repo", str(copy), "--keep-last", "1"))
    conversations(logs, 5, start=25)
    out = json.loads(ok(cli("backup", "--json")).out)
    assert len(out["copies"][0]["copied"]) == 1 and len(Repository.open(str(copy)).bundle_ids()) == 2


def test_a_bundle_whose_copy_failed_while_another_sources_later_one_landed_is_caught_up(
    cli: Cli, tmp_path: Path
) -> None:
    """By the copy's newest bundle of all, a bundle older than another source's copied one was never copied
    again; by the newest of its own series it is, while what the copy's prune removed stays removed."""
    logs, chats, tools = (conversations(tmp_path / name, 20) for name in ("logs", "chats", "tools"))
    sources = f"sources:\n  logs: 'conversations:{logs}'\n  chats: 'conversations:{chats}'\n"
    config = tmp_path / "aibackup.yaml"
    config.write_text(f"repository: ./repo\n{sources}copies:\n  - {{repository: ./copy-eu}}\n")
    ok(cli("backup"))
    # The second night, the copy of the logs' bundle fails and the chats' one, started after it, lands; a
    # new source's first bundle does not land either.
    conversations(logs, 5, start=20)
    conversations(chats, 5, start=20)
    sources += f"  tools: 'conversations:{tools}'\n"
    config.write_text(f"repository: ./repo\n{sources}")
    night = {r["source"]: r["bundle_id"] for r in json.loads(ok(cli("backup", "--json")).out)["sources"]}
    assert night["logs"] < night["chats"] < night["tools"]
    ok(cli("copy", night["chats"], "--repo", "./repo", "--to-repo", "./copy-eu"))
    # The third night (the chats alone) catches both up.
    config.write_text(f"repository: ./repo\n{sources}copies:\n  - {{repository: ./copy-eu}}\n")
    out = json.loads(ok(cli("backup", "--source", "chats", "--json")).out)
    tonight = out["sources"][0]["bundle_id"]
    assert out["copies"][0]["copied"] == [night["logs"], night["tools"], tonight], out["copies"]
    repo, copy = Repository.open(str(tmp_path / "repo")), Repository.open(str(tmp_path / "copy-eu"))
    assert copy.bundle_ids() == repo.bundle_ids()
    ok(cli("verify", "--repo", str(tmp_path / "copy-eu"), "--read-data"))
    # The copy keeps the newest of each series only: the next night brings back none of the others.
    ok(cli("prune", "--repo", str(tmp_path / "copy-eu"), "--keep-last", "1"))
    held = copy.bundle_ids()
    assert held == sorted([night["logs"], night["tools"], tonight])
    out = json.loads(ok(cli("backup", "--source", "logs", "--json")).out)
    assert out["copies"][0]["copied"] == [out["sources"][0]["bundle_id"]]
    assert copy.bundle_ids() == sorted([*held, out["sources"][0]["bundle_id"]])


def test_the_nightly_copy_goes_by_the_copys_newest_of_each_series_whatever_either_side_pruned(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle the copy's prune removed stays removed also once the source's prune removed the copy's newer
    one of its series; a series the copy holds nothing of comes whole, also when its first bundle is older
    than everything the copy's prune left."""
    folders = {name: conversations(tmp_path / name, 5) for name in ("u", "s", "t", "new")}
    sources = "sources:\n" + "".join(f"  {name}: 'conversations:{path}'\n" for name, path in folders.items())
    config = tmp_path / "aibackup.yaml"
    with_copy = f"repository: ./repo\n{sources}copies:\n  - {{repository: ./copy}}\n"

    def at(moment: str, *args: str) -> dict[str, Any]:
        monkeypatch.setenv("AIBACKUP_NOW", f"2026-01-{moment}:00Z")
        return json.loads(ok(cli(*args, "--json")).out)

    config.write_text(with_copy)
    ids = {
        name: at(f"01T0{n}:00", "backup", "--source", name)["sources"][0]["bundle_id"] for n, name in enumerate("ust")
    }
    conversations(folders["s"], 3, start=5)
    s2 = at("02T10:00", "backup", "--source", "s")["sources"][0]["bundle_id"]
    at("02T10:30", "prune", "--repo", "./copy", "--keep-last", "1")  # the copy's own: s's first bundle goes
    # A night whose copy failed: s's third bundle and the first of a new source stay in the source alone.
    config.write_text(f"repository: ./repo\n{sources}")
    conversations(folders["s"], 2, start=8)
    s3 = at("02T11:00", "backup", "--source", "s")["sources"][0]["bundle_id"]
    first_new = at("02T11:10", "backup", "--source", "new")["sources"][0]["bundle_id"]
    at("02T11:30", "prune", "--repo", "./repo", "--keep-daily", "2")  # the source's: s's second goes, not its first
    assert ids["s"] in Repository.open(str(tmp_path / "repo")).bundle_ids()
    at("02T11:40", "prune", "--repo", "./copy", "--keep-last", "1")  # nothing older than s2 stays in the copy
    config.write_text(with_copy)
    conversations(folders["t"], 2, start=5)
    out = at("02T12:00", "backup", "--source", "t")
    assert out["copies"][0]["copied"] == [s3, first_new, out["sources"][0]["bundle_id"]], (ids, out["copies"])
    assert ids["s"] not in Repository.open(str(tmp_path / "copy")).bundle_ids()
    assert s2 in Repository.open(str(tmp_path / "copy")).bundle_ids()


def test_a_copy_that_cannot_be_made_fails_the_run_but_keeps_the_backups(cli: Cli, tmp_path: Path) -> None:
    logs = conversations(tmp_path / "logs", 20)
    (tmp_path / "not-a-repo").mkdir()
    (tmp_path / "not-a-repo" / "something.txt").write_text("not ours\n")
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: 'conversations:{logs}'\ncopies:\n  - {{repository: ./not-a-repo}}\n"
    )
    result = cli("backup", "--json")
    assert result.code == 2, (result.out, result.err)
    out = json.loads(result.out)
    assert out["sources"][0]["ok"] and not out["copies"][0]["ok"] and "not-a-repo" in out["copies"][0]["error"]
    assert len(Repository.open(str(tmp_path / "repo")).bundle_ids()) == 1


def test_a_run_into_another_repository_than_the_configs_makes_no_copy(cli: Cli, tmp_path: Path) -> None:
    """`backup --repo COPY` on a night the primary's region is down failed "the destination is the source
    repository itself" (exit 2) after every backup, and a test run into a scratch repository pushed its
    bundle into the production copy. The config's copies are copies of its repository: another one makes
    none, saying so."""
    logs = conversations(tmp_path / "logs", 10)
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: 'conversations:{logs}'\ncopies:\n  - {{repository: ./copy}}\n"
        "restore_test: {repository: ./copy}\n"
    )
    first = ok(cli("backup", "--json")).json()
    assert first["copies"][0]["copied"] == [first["sources"][0]["bundle_id"]], first
    conversations(logs, 5, start=10)
    outage = ok(cli("backup", "--repo", "./copy", "--json"))
    assert outage.json()["copies"] == [] and "its copies are not made" in outage.err, outage
    scratch = ok(cli("backup", "--repo", "./scratch"))
    assert "its copies are not made" in scratch.err and "copy to" not in scratch.out, scratch
    held = Repository.open(str(tmp_path / "copy")).bundle_ids()
    assert len(held) == 2 and not set(held) & set(Repository.open(str(tmp_path / "scratch")).bundle_ids())
    assert ok(cli("status", "--repo", "./copy", "--json")).json()["sources"][0]["copies"] == []
    # The drill of --repo's repository is of that repository, not of the config's copy (it drilled the copy).
    (drilled,) = ok(cli("restore-test", "--repo", "./scratch", "--json")).json()["sources"]
    assert drilled["repository"] is None, drilled
    assert drilled["bundle_id"] == Repository.open(str(tmp_path / "scratch")).bundle_ids()[-1], drilled


def test_a_new_location_another_copy_made_a_repository_meanwhile_is_exit_3(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies started at once into a new location, each adding a key slot of its own: the one whose marker
    came second said "…/aibackup.json already exists", exit 2 (bad usage); a location another run holds is
    exit 3, try again."""
    from aibackup import copy as copy_module

    logs = conversations(tmp_path / "logs", 5)
    ok(cli("backup", f"conversations:{logs}", "--repo", "./repo"))
    made = copy_module.Repository.with_marker.__func__  # type: ignore[attr-defined]
    raced: list[bool] = []

    def the_other_copy_first(cls: Any, storage: Any, marker: bytes) -> Any:
        if storage.display() == str(tmp_path / "copy") and not raced:
            # The other run's marker lands in between: other bytes (its own key slot for --to-key-file; the
            # same bytes would be the same write, and the lock orders the two copies).
            storage.write_exclusive("aibackup.json", marker + b"\n")
            raced.append(True)
        return made(cls, storage, marker)

    monkeypatch.setattr(copy_module.Repository, "with_marker", classmethod(the_other_copy_first))
    one_line_error(cli("copy", "--repo", "./repo", "--to-repo", "./copy"), 3, "another run", "try again")
    copied = ok(cli("copy", "--repo", "./repo", "--to-repo", "./copy", "--json")).json()
    assert len(copied["copied"]) == 1, copied


def test_copies_in_the_config_are_checked(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\nsources:\n  logs: 'conversations:./logs'\ncopies:\n  - {key_file: ./k}\n"
    )
    one_line_error(cli("list"), 2, "copies[0].repository", "missing")
    # The same copy however spelled, and a bad option of an S3 URL (it was an RPO alarm, exit 1, or a failed
    # copy after every backup had run): refused as the config is read, naming the key.
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\nsources:\n  logs: 'conversations:./logs'\n"
        f"copies:\n  - {{repository: ./copy}}\n  - {{repository: 'file://{tmp_path}/copy'}}\n"
    )
    one_line_error(cli("list"), 2, "aibackup.yaml:6: copies[1].repository", "listed twice")
    for option in ("bogus=1", "endpoint=ftp://x", "region=eu_bad", "sse=AES256&sse=aws:kms"):
        (tmp_path / "aibackup.yaml").write_text(
            "repository: ./repo\nsources:\n  logs: 'conversations:./logs'\n"
            f"copies:\n  - {{repository: 's3://copies/ai?{option}'}}\n"
        )
        one_line_error(cli("status"), 2, "aibackup.yaml:5: copies[0].repository", "bad repository")
    # A URL from the environment is named as written (its value may carry credentials).
    monkeypatch.setenv("COPY_URL", "s3://copies/ai?regoin=SECRET-VALUE")
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\nsources:\n  logs: 'conversations:./logs'\ncopies:\n  - {repository: '${COPY_URL}'}\n"
    )
    line = one_line_error(cli("status"), 2, "copies[0].repository", "${COPY_URL}", "unknown option")
    assert "SECRET" not in line, line


def test_status_shows_each_copy_and_a_copy_falling_behind_breaches_the_rpo(cli: Cli, tmp_path: Path) -> None:
    import shutil

    logs = conversations(tmp_path / "logs", 20)
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: {{uri: 'conversations:{logs}', rpo: 1h}}\n"
        "copies:\n  - {repository: ./copy-eu}\n"
    )
    newest = json.loads(ok(cli("backup", "--json")).out)["sources"][0]["bundle_id"]
    status = json.loads(ok(cli("status", "--json")).out)
    (copy,) = status["sources"][0]["copies"]
    assert status["ok"] and copy["newest_bundle"] == newest and not copy["rpo_breached"] and copy["error"] is None
    assert "copy-eu" in ok(cli("status")).out
    ok(cli("status", "--metrics-file", str(tmp_path / "aibackup.prom")))
    metrics = (tmp_path / "aibackup.prom").read_text()
    label = f'{{source="logs",copy="{tmp_path / "copy-eu"}"}}'
    assert f"aibackup_copy_rpo_breached{label} 0" in metrics and f"aibackup_copy_bundle_age_seconds{label}" in metrics
    shutil.rmtree(tmp_path / "copy-eu")  # the second region is gone
    result = cli("status", "--json")
    assert result.code == 1
    (copy,) = json.loads(result.out)["sources"][0]["copies"]
    assert copy["rpo_breached"] and copy["newest_bundle"] is None and "copy-eu" in copy["error"]
    cli("status", "--metrics-file", str(tmp_path / "aibackup.prom"))
    assert f"aibackup_copy_rpo_breached{label} 1" in (tmp_path / "aibackup.prom").read_text()


def test_the_drill_can_test_a_copy(cli: Cli, tmp_path: Path) -> None:
    logs = conversations(tmp_path / "logs", 20)
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: {{uri: 'conversations:{logs}', rto: 1h}}\n"
        "copies:\n  - {repository: ./copy-eu}\nrestore_test: {repository: ./copy-eu}\n"
    )
    bundle = json.loads(ok(cli("backup", "--json")).out)["sources"][0]["bundle_id"]
    drill = json.loads(ok(cli("restore-test", "--json")).out)
    (source,) = drill["sources"]
    assert source["ok"] and source["bundle_id"] == bundle, source
    assert source["repository"] == str(tmp_path / "copy-eu") and source["note"] is None
    # A copy behind the repository (a bundle not copied yet): the drill proves the copy's newest, saying so
    # (it passed without a word, and status showed the drill of an older bundle as the last one).
    conversations(logs, 5, start=20)
    newer = ok(cli("backup", f"conversations:{logs}", "--repo", str(tmp_path / "repo"))).out
    (behind,) = ok(cli("restore-test", "--json")).json()["sources"]
    assert behind["bundle_id"] == bundle and "the copy is behind" in behind["note"], behind
    assert Repository.open(str(tmp_path / "repo")).bundle_ids()[-1] in behind["note"], newer
    assert "Note: the copy is behind" in ok(cli("restore-test")).out
    # Tested from the copy: with the copy gone the drill fails, the repository itself untouched.
    import shutil

    shutil.rmtree(tmp_path / "copy-eu")
    # The copy gone (its region down): the drill of each source fails, naming it, and is recorded: status and
    # the metrics stop showing the drill before as the last (it was one error line, nothing recorded).
    gone = cli("restore-test", "--json")
    assert gone.code == 1, (gone.out, gone.err)
    (failed,) = json.loads(gone.out)["sources"]
    assert not failed["ok"] and "cannot open the copy" in failed["error"] and "copy-eu" in failed["error"], failed
    last = json.loads(cli("status", "--json").out)["sources"][0]["last_restore_test"]
    assert last is not None and not last["ok"], last
    assert Repository.open(str(tmp_path / "repo")).bundle_ids()[0] == bundle


def test_the_drill_of_a_copy_runs_while_the_repository_is_out_of_reach(cli: Cli, tmp_path: Path) -> None:
    """The drill of a copy is the proof that the second region restores: with the repository's region down
    it was one error line (exit 3), nothing drilled. Now it restores and proves from the copy, shows the
    result, then says in one line that it could not be recorded in the repository (exit 3). status likewise
    shows what the copies hold before its error line."""
    logs = conversations(tmp_path / "logs", 20)
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nmetrics_file: ./m.prom\nsources:\n  logs: {{uri: 'conversations:{logs}', rto: 1h}}\n"
        "copies:\n  - {repository: ./copy-eu}\nrestore_test: {repository: ./copy-eu}\n"
    )
    bundle = ok(cli("backup", "--json")).json()["sources"][0]["bundle_id"]
    (tmp_path / "repo").rename(tmp_path / "repo-away")  # lost, or out of reach
    drill = cli("restore-test", "--json")
    assert drill.code == 3, (drill.out, drill.err)
    (source,) = json.loads(drill.out)["sources"]
    assert source["ok"] and source["bundle_id"] == bundle and source["repository"] == str(tmp_path / "copy-eu")
    # One line (the metrics file says the repository cannot be read; it was a second error line), and not
    # the missing repository's advice to init one where the real one is only out of reach.
    line = one_line_error(drill, 3, f"not recorded in {tmp_path / 'repo'} ", "no repository there")
    assert "init" not in line
    assert 'aibackup_rpo_breached{source="logs"} 1' in (tmp_path / "m.prom").read_text()
    # status shows what the copy holds (it was one error line, the copies unseen), then the repository's
    # error with its own exit code (2 here: no repository there; 3 for a region out of reach).
    seen = cli("status", "--json")
    assert seen.code == 2, (seen.out, seen.err)
    (shown,) = json.loads(seen.out)["sources"]
    assert shown["newest_bundle"] is None and shown["rpo_breached"]
    assert [c["newest_bundle"] for c in shown["copies"]] == [bundle]
    one_line_error(seen, 2, "no repository at")
    text = cli("status")
    assert bundle in text.out and "copy-eu" in text.out and text.code == 2
    # Without a copy to drill, the repository out of reach is the command's one error line, as before.
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: {{uri: 'conversations:{logs}', rto: 1h}}\n"
    )
    one_line_error(cli("restore-test"), 2, "no repository at")


def test_a_drill_whose_result_cannot_be_recorded_says_so(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill of a copy run with the copy's own key only (the primary's key elsewhere, as in the second
    region): it passed, exit 0, and its result was silently not recorded in the primary, where `status`
    reads it (status went on showing the drill before). Now the result is printed, then one error line
    saying it was not recorded, exit 3."""
    monkeypatch.setenv("AIBACKUP_KEY", "the primary's passphrase")
    own = tmp_path / "copy.key"
    own.write_text("the copy's own passphrase\n")
    logs = conversations(tmp_path / "logs", 10)
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: {{uri: 'conversations:{logs}', rto: 1h}}\n"
        f"copies:\n  - {{repository: ./copy, key_file: {own}}}\nrestore_test: {{repository: ./copy}}\n"
    )
    ok(cli("init", "--encrypt"))
    ok(cli("backup"))
    monkeypatch.delenv("AIBACKUP_KEY")
    drill = cli("restore-test", "--json")
    assert drill.code == 3 and json.loads(drill.out)["ok"], drill
    assert "not recorded" in json.loads(drill.err)["error"]["message"], drill.err
    monkeypatch.setenv("AIBACKUP_KEY", "the primary's passphrase")
    assert json.loads(ok(cli("status", "--json")).out)["sources"][0]["last_restore_test"] is None
    ok(cli("restore-test"))  # with the primary's key at hand, recorded
    assert json.loads(ok(cli("status", "--json")).out)["sources"][0]["last_restore_test"]["ok"]
    # The copy named otherwise by restore_test (a file:// URL): still the copy, opened with its own key file
    # (it was matched by the written string: the drill used the primary's key and failed, exit 2).
    config = (tmp_path / "aibackup.yaml").read_text()
    (tmp_path / "aibackup.yaml").write_text(
        config.replace("restore_test: {repository: ./copy}", f"restore_test: {{repository: 'file://{tmp_path}/copy'}}")
    )
    monkeypatch.delenv("AIBACKUP_KEY")
    drill = cli("restore-test", "--json")
    assert drill.code == 3 and json.loads(drill.out)["ok"], drill


def test_key_file_given_on_the_command_line_opens_the_copies_the_drill_and_the_metrics(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An encrypted repository whose key comes only from --key-file (the config names none) and a copy the
    same passphrase opens: `status --key-file` showed the copy "unreadable ... pass --key-file", RPO breached,
    exit 1; the drill of the copy failed alike; and the metrics file, written after a healthy status, said
    the repository was unreadable, exit 2. --key-file replaces the config's key_file for every verb."""
    for var in ("AIBACKUP_KEY", "AIBACKUP_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    key = tmp_path / "primary.key"
    key.write_text("the primary's passphrase\n")
    logs = conversations(tmp_path / "logs", 10)
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: {{uri: 'conversations:{logs}', rpo: 1h, rto: 1h}}\n"
        "copies:\n  - {repository: ./copy}\nrestore_test: {repository: ./copy}\n"
    )
    ok(cli("init", "--encrypt", "--key-file", str(key)))
    bundle = ok(cli("backup", "--key-file", str(key), "--json")).json()["sources"][0]["bundle_id"]
    metrics = tmp_path / "aibackup.prom"
    status = ok(cli("status", "--key-file", str(key), "--json", "--metrics-file", str(metrics))).json()
    (copy,) = status["sources"][0]["copies"]
    assert copy["newest_bundle"] == bundle and copy["error"] is None and not copy["rpo_breached"], copy
    assert 'aibackup_rpo_breached{source="logs"} 0' in metrics.read_text()
    assert 'copy="' in metrics.read_text() and "aibackup_copy_rpo_breached" in metrics.read_text()
    (tested,) = ok(cli("restore-test", "--key-file", str(key), "--json")).json()["sources"]
    assert tested["ok"] and tested["bundle_id"] == bundle and tested["repository"] == str(tmp_path / "copy"), tested


def test_the_nightly_copy_takes_a_bundle_committed_after_a_newer_one_was_copied(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long backup of one source (its id taken when it started) commits after a short one of another
    source (the hourly logs) made and copied a newer bundle: the long run's copy took only bundles newer
    than the copy's newest, said "0 bundle(s) copied", exit 0, and no later night brought the bundle. Now a
    nightly copy always takes the bundles its own run made."""
    import subprocess
    import sys

    from aibackup.storage import Storage

    logs, big = conversations(tmp_path / "logs", 10), conversations(tmp_path / "big", 10)
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\n"
        f"sources:\n  logs: {{uri: 'conversations:{logs}', rpo: 24h}}\n"
        f"  big: {{uri: 'conversations:{big}', rpo: 24h}}\n"
        "copies: [{repository: ./copy}]\n"
    )
    ok(cli("backup", "--source", "logs"))
    commit = Storage.write_exclusive
    hourly: list[subprocess.CompletedProcess[str]] = []

    def hourly_run_meanwhile(self: Storage, rel: str, data: bytes, **kwargs: object) -> None:
        if rel.startswith("bundles/") and not hourly:  # the long run's commit, its id taken long before
            conversations(logs, 5, start=10)
            command = [sys.executable, "-m", "aibackup", "backup", "--source", "logs"]
            hourly.append(subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False))
        commit(self, rel, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Storage, "write_exclusive", hourly_run_meanwhile)
    night = json.loads(ok(cli("backup", "--source", "big", "--json")).out)
    assert hourly and hourly[0].returncode == 0, hourly
    (run,) = night["sources"]
    (copied,) = night["copies"]
    primary, copy = Repository.open(str(tmp_path / "repo")), Repository.open(str(tmp_path / "copy"))
    assert run["bundle_id"] < primary.bundle_ids()[-1]  # the hourly's bundle is newer, and was copied first
    assert copied["ok"] and copied["copied"] == [run["bundle_id"]], copied
    assert copy.bundle_ids() == primary.bundle_ids()


def test_a_part_the_copy_found_damaged_is_copied_again_not_built_on(cli: Cli, tmp_path: Path) -> None:
    """A chain link's part damaged in the copy, found by a verify of the copy: the next night's copy brought
    a bundle whose chain reads it and reused the damaged part (same size), so the copy's newest bundle could
    not be restored while status said all was well. Now a part the destination found damaged is copied
    again, proven by the source's sha256, and the repair recorded."""
    from aibackup import reports

    logs = conversations(tmp_path / "logs", 20)
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\n"
        f"sources:\n  logs: {{uri: 'conversations:{logs}', rpo: 24h}}\n"
        "copies: [{repository: ./copy}]\n"
    )
    for night in range(2):
        conversations(logs, 5, start=20 + 5 * night)
        ok(cli("backup"))
    copy = tmp_path / "copy"
    first = Repository.open(str(copy)).bundle_ids()[0]
    (link,) = [p.relative_to(copy) for p in (copy / "data" / first).rglob("part-*.parquet")]
    flip_middle_byte(copy / link)
    assert cli("verify", "--read-data", "--repo", str(copy)).code == 1
    assert str(link) in reports.damaged_parts(Repository.open(str(copy)))

    conversations(logs, 5, start=30)
    night = json.loads(ok(cli("backup", "--json")).out)
    (copied,) = night["copies"]
    assert copied["ok"] and copied["repaired"] == [str(link)], copied
    assert not reports.damaged_parts(Repository.open(str(copy)))
    assert json.loads(ok(cli("verify", "--read-data", "--repo", str(copy), "--json")).out)["ok"]
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"conversations:{tmp_path / 'back'}"))
    assert (tmp_path / "back" / "app.jsonl").read_bytes() == (logs / "app.jsonl").read_bytes()
    # The damage and its repair are history once a later verify decides every bundle: prune takes both.
    storage = Repository.open(str(copy)).storage  # its reports are sealed in an encrypted repository
    kinds = {
        p.name: json.loads(storage.read_bytes(f"reports/verify/{p.name}"))["kind"]
        for p in (copy / "reports" / "verify").iterdir()
    }
    pruned = json.loads(ok(cli("prune", "--repo", str(copy), "--keep-last", "9", "--json")).out)
    assert sorted(kinds[p.rsplit("/", 1)[-1]] for p in pruned["reports_removed"]) == ["copy", "verify"]
    assert not reports.damaged_parts(Repository.open(str(copy)))

    # The other way: the primary's part found damaged is repaired from the copy (bundles all there already),
    # and the next backup extends the chain again instead of starting a full one.
    primary = tmp_path / "repo"
    flip_middle_byte(primary / link)
    assert cli("verify", "--read-data", "--repo", str(primary)).code == 1
    back = json.loads(ok(cli("copy", "--repo", str(copy), "--to-repo", str(primary), "--json")).out)
    assert back["copied"] == [] and back["repaired"] == [str(link)] and len(back["skipped"]) == 3
    assert back["bytes"] == (primary / link).stat().st_size  # once, though every bundle lists it
    # The damage report still decides whether those bundles count as verified, so prune keeps it, and the
    # repair with it (without the repair, the damage would be the newest word on the part again).
    pruned = json.loads(ok(cli("prune", "--repo", str(primary), "--keep-last", "9", "--json")).out)
    assert not [p for p in pruned["reports_removed"] if "/verify/" in p], pruned
    conversations(logs, 5, start=35)
    (run,) = json.loads(ok(cli("backup", "--json")).out)["sources"]
    (dataset,) = Repository.open(str(primary)).load(run["bundle_id"]).datasets
    assert dataset.extends is not None and run["new_rows"] == 5, run  # built on the repaired parts again
    assert json.loads(ok(cli("verify", "--read-data", "--repo", str(primary), "--json")).out)["ok"]


def test_a_damaged_part_is_replaced_only_by_bytes_proven_good(cli: Cli, tmp_path: Path) -> None:
    """The same part damaged in both repositories: the copy that would repair it fails that bundle naming
    the source's part, and leaves the destination's damaged copy as it was (worth more than none)."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    three_bundles(cli, tmp_path, str(source))
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    first = Repository.open(str(copy)).bundle_ids()[0]
    (link,) = [p.relative_to(copy) for p in (copy / "data" / first).rglob("part-*.parquet")]
    flip_middle_byte(copy / link)
    damaged = (copy / link).read_bytes()
    assert cli("verify", "--read-data", "--repo", str(copy)).code == 1
    flip_middle_byte(source / link)
    result = cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["repaired"] == [] and {f["bundle_id"] for f in doc["failed"]} >= {first}, doc
    assert all(str(link) in f["problem"] for f in doc["failed"]), doc
    assert (copy / link).read_bytes() == damaged


def test_a_short_part_is_replaced_only_by_bytes_proven_good(cli: Cli, tmp_path: Path) -> None:
    """A part cut short in the copy (a full disk; no verify recorded it) while the source's has rotted: the
    copy removed the short one, then failed on the source's, and the copy held nothing of it."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    three_bundles(cli, tmp_path, str(source))
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    first = Repository.open(str(copy)).bundle_ids()[0]
    (link,) = [p.relative_to(copy) for p in (copy / "data" / first).rglob("part-*.parquet")]
    short = (copy / link).read_bytes()[:-100]
    (copy / link).write_bytes(short)
    flip_middle_byte(source / link)
    result = cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")
    assert result.code == 1 and str(link) in result.out, result.out
    assert (copy / link).read_bytes() == short


@pytest.mark.parametrize("dest_where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_repair_cut_short_leaves_the_damaged_part_in_place(
    cli: Cli, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, dest_where: str
) -> None:
    """The proven part replaces the damaged one whole: interrupted in between (Ctrl-C, a lost connection),
    the destination still holds its damaged copy (it was removed before the new one streamed), and a rerun
    repairs it."""
    from aibackup.copy import run_copy
    from aibackup.storage import Storage

    source = tmp_path / "src"
    three_bundles(cli, tmp_path, str(source))
    dest = repository_url(dest_where, tmp_path, request) + ("-copy" if dest_where == "local" else "")
    ok(cli("copy", "--repo", str(source), "--to-repo", dest))
    first = Repository.open(str(source)).bundle_ids()[0]
    (link,) = [str(p.relative_to(source)) for p in (source / "data" / first).rglob("part-*.parquet")]
    target = Repository.open(dest).storage
    short = target.read_stored(link)[:-100]  # cut short (a full disk): another size than its manifest's
    target.replace(link, short, as_stored=True)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # every byte streamed, the upload not completed

    with monkeypatch.context() as patched:
        patched.setattr(Storage, "close_part", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_copy(Repository.open(str(source)), dest)
    assert target.read_stored(link) == short
    assert [n for n in target.list_names(str(Path(link).parent)) if n.startswith(".tmp-")] == []
    again = json.loads(ok(cli("copy", "--repo", str(source), "--to-repo", dest, "--json")).out)
    assert link in [r.split(dest.rstrip("/") + "/", 1)[-1] for r in again["repaired"]], again
    ok(cli("verify", "--repo", dest, "--read-data"))


def test_a_copy_of_every_bundle_makes_whole_what_the_destination_lost_unnoticed(cli: Cli, tmp_path: Path) -> None:
    """The copy lost a manifest's bytes, one part, the tail of another and a chunk pack, unseen by any
    verify: a second `copy` (every bundle) said "3 already there" and exit 0, and the copy held a bundle that
    lists as DAMAGED and two it could not restore. Now the bundles it holds are checked against the source's
    manifests (parts by their size, each manifest loaded) and made whole, each repair named."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    bundles = three_bundles(cli, tmp_path, str(source))
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    manifest = copy / "bundles" / f"{bundles[2]}.json"
    manifest.write_bytes(manifest.read_bytes()[:-40])
    first, second = (sorted((copy / "data" / b).rglob("part-*.parquet"))[0] for b in bundles[:2])
    first.unlink()
    second.write_bytes(second.read_bytes()[:-100])
    (pack, *_) = sorted((copy / "data" / bundles[2] / "packs").iterdir())
    pack.unlink()
    assert cli("verify", "--repo", str(copy)).code == 1

    doc = json.loads(ok(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")).out)
    lost = {str(p.relative_to(copy)) for p in (manifest, first, second, pack)}
    assert doc["copied"] == [] and sorted(doc["skipped"]) == sorted(bundles) and set(doc["repaired"]) == lost, doc
    assert json.loads(ok(cli("verify", "--read-data", "--repo", str(copy), "--json")).out)["ok"]
    assert manifest.read_bytes() == (source / "bundles" / f"{bundles[2]}.json").read_bytes()
    again = json.loads(ok(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")).out)
    assert again["repaired"] == [] and again["bytes"] == 0, again


def test_a_damaged_chunk_pack_a_restore_found_is_repaired_by_the_nightly_copy(cli: Cli, tmp_path: Path) -> None:
    """A copy's chunk pack found damaged by a restore from the copy (now recorded, as a damaged part is): the
    next night's model version shares that pack's chunks, and the nightly copy copies the pack again rather
    than build the new bundle on it."""
    from aibackup import reports

    llm = tmp_path / "llm"
    llm.mkdir()
    fixed = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)

    def version(seed: int) -> None:
        varying = np.random.default_rng(seed).standard_normal((64, 64)).astype(np.float32)
        save_file({"a": fixed, "b": varying}, str(llm / "model.safetensors"))

    version(1)
    (llm / "config.json").write_text('{"model_type": "llama"}\n')
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  llm: 'model:{llm}'\ncopies: [{{repository: ./copy}}]\n"
    )
    ok(cli("backup"))
    copy = tmp_path / "copy"
    (pack,) = [p.relative_to(copy) for p in (copy / "data").rglob("packs/*.parquet")]
    flip_middle_byte(copy / pack)
    refused = cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}")
    one_line_error(refused, 1, "damaged chunk")
    assert str(pack) in reports.damaged_parts(Repository.open(str(copy)))  # the restore recorded it

    version(2)
    night = json.loads(ok(cli("backup", "--json")).out)
    (copied,) = night["copies"]
    assert copied["ok"] and copied["repaired"] == [str(pack)], copied
    assert json.loads(ok(cli("verify", "--read-data", "--repo", str(copy), "--json")).out)["ok"]
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'again'}"))
    assert files_of(tmp_path / "again") == files_of(llm)


def two_model_versions(cli: Cli, tmp_path: Path, repo: Path) -> Path:
    """A model of two files backed up into `repo`, then again without the first (the second bundle's chunks
    share the first bundle's pack; a prune keeping the newest bundle repacks them). The model's folder."""
    llm = tmp_path / "llm"
    llm.mkdir()
    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal((1024, 1024)).astype(np.float32)}, str(llm / "a.safetensors"))
    save_file({"w": rng.standard_normal((256, 1024)).astype(np.float32)}, str(llm / "b.safetensors"))
    (llm / "config.json").write_text('{"model_type": "llama"}\n')
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    (llm / "a.safetensors").unlink()
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    return llm


def test_a_pack_of_another_size_in_the_copy_is_made_whole_by_the_next_copy(cli: Cli, tmp_path: Path) -> None:
    """A pack cut short in the copy without a reader noticing: documented as made whole, it was left (ok,
    0 bytes) until a failed restore had recorded it."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    llm = two_model_versions(cli, tmp_path, source)
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    (pack,) = [p for p in (copy / "data").rglob("packs/*.parquet")]
    pack.write_bytes(pack.read_bytes()[:1000])
    out = json.loads(ok(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")).out)
    assert str(pack.relative_to(copy)) in [r.split(f"{copy}/", 1)[-1] for r in out["repaired"]], out
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_chunks_a_copy_moves_are_indexed_after_an_index_file_dated_ahead(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index file of chunks a copy takes from another pack sorts after every index file, also one a
    prune on a host whose clock runs ahead wrote (it placed them in the lost pack and won)."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    llm = two_model_versions(cli, tmp_path, source)
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)).isoformat()
    with monkeypatch.context() as later:
        later.setenv("AIBACKUP_NOW", ahead)
        ok(cli("prune", "--repo", str(copy), "--keep-last", "1", "--grace", "0s"))  # repacked in the copy
    for pack in (copy / "data").rglob("packs/*.parquet"):
        pack.unlink()
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_a_pack_sealed_under_a_key_the_copy_rotated_away_is_refused(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy whose key was rotated on its own reads a pack the source's prune repacked after that rotation
    with its own key: taking it was "ok", "repaired", and the bundle never restored; now refused (exit 2)."""
    monkeypatch.setenv("AIBACKUP_KEY", "the passphrase")
    source, copy = tmp_path / "repo", tmp_path / "copy"
    ok(cli("init", "--repo", str(source), "--encrypt"))
    two_model_versions(cli, tmp_path, source)
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    ok(cli("key", "rotate", "--repo", str(copy)))
    ok(cli("prune", "--repo", str(source), "--keep-last", "1", "--grace", "0s"))
    for pack in (copy / "data").rglob("packs/*.parquet"):
        pack.unlink()
    one_line_error(cli("copy", "--repo", str(source), "--to-repo", str(copy)), 2, "another master key")
    assert list((copy / "data").rglob("packs/*.parquet")) == []


@pytest.mark.parametrize("harm", ["lost", "damaged"])
def test_a_pack_the_copy_lost_or_found_damaged_after_the_source_repacked_it_is_made_whole(
    cli: Cli, tmp_path: Path, harm: str
) -> None:
    """The source's prune repacked the chunks its newest bundle still needs (the pack the copy holds is gone
    from the source): a copy that lost, or found damaged, its pack of them takes them from the pack that
    holds them now (it reported "ok" with the bundle unrestorable, or failed naming the source's pack as
    missing, on every run)."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    llm = two_model_versions(cli, tmp_path, source)
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    ok(cli("prune", "--repo", str(source), "--keep-last", "1", "--grace", "0s"))
    (pack,) = [p.relative_to(copy) for p in (copy / "data").rglob("packs/*.parquet")]
    assert not (source / pack).exists()  # repacked under another name
    if harm == "lost":
        (copy / pack).unlink()
    else:
        flip_middle_byte(copy / pack)
        assert cli("verify", "--read-data", "--repo", str(copy)).code == 1  # recorded damaged
    newest = Repository.open(str(source)).bundle_ids()[-1]
    out = json.loads(ok(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")).out)
    assert out["skipped"] == [newest] and out["repaired"] and out["bytes"] > 0, out
    ok(cli("restore", newest, "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)
    again = json.loads(ok(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")).out)
    assert again["bytes"] == 0 and again["repaired"] == [], again
    # Only the older bundle, whose other chunks that pack alone held (the source no longer has them), is
    # still damaged there.
    checked = json.loads(cli("verify", "--read-data", "--repo", str(copy), "--json").out)
    assert {p["bundle_id"] for p in checked["problems"]} == set(Repository.open(str(copy)).bundle_ids()) - {newest}


def model_copied_then_index_rotted(cli: Cli, tmp_path: Path, rotted: Path) -> tuple[Path, Path]:
    """A model backed up into tmp_path/repo and copied into tmp_path/copy, then the one index file of the
    `rotted` repository overwritten with random bytes of its size: (the model's folder, that index file)."""
    import os

    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", str(tmp_path / "repo")))
    ok(cli("copy", "--repo", str(tmp_path / "repo"), "--to-repo", str(tmp_path / "copy")))
    (index,) = (rotted / "index").iterdir()
    index.write_bytes(os.urandom(index.stat().st_size))
    return llm, index


def test_a_damaged_chunk_index_stops_no_backup_and_a_copy_replaces_it(cli: Cli, tmp_path: Path) -> None:
    """One index file of the chunk store damaged (its bytes rotted): every model backup into the repository
    failed on it, `--full` too (exit 1 every night, no new backup at all), and a copy from an intact
    repository failed on it as well. Now a backup stores the chunks it listed again, saying so; the new
    bundle restores; an older one whose chunks only it placed is refused naming it; verify keeps naming it;
    a copy from the intact repository rewrites it (named as repaired) and every bundle restores again."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    llm, index = model_copied_then_index_rotted(cli, tmp_path, rotted=copy)
    assert cli("verify", "--repo", str(copy)).code == 1
    (older,) = Repository.open(str(copy)).bundle_ids()

    tuned = model(tmp_path / "tuned", 2)  # other weights: none of its chunks are the older bundle's
    night = ok(cli("backup", f"model:{tuned}", "--repo", str(copy), "--json")).json()
    assert any(str(index) in note and "stored again" in note for note in night["notes"]), night["notes"]
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'new'}"))
    assert files_of(tmp_path / "new") == files_of(tuned)
    refused = cli("restore", older, "--repo", str(copy), "--to", f"model:{tmp_path / 'old'}")
    one_line_error(refused, 1, "in no pack", str(index))
    assert cli("verify", "--repo", str(copy)).code == 1

    doc = ok(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")).json()
    assert doc["repaired"] == [str(index.relative_to(copy))], doc
    assert ok(cli("verify", "--read-data", "--repo", str(copy), "--json")).json()["ok"]
    ok(cli("restore", older, "--repo", str(copy), "--to", f"model:{tmp_path / 'old'}"))
    assert files_of(tmp_path / "old") == files_of(llm)


def test_the_nightly_copy_names_an_earlier_link_it_had_lost_as_repaired(cli: Cli, tmp_path: Path) -> None:
    """A chain link's part deleted from the copy (no verify noticed): the next night's copy brought it back
    with the new bundle that reads it, but reported nothing repaired, so the loss went unrecorded."""
    logs = conversations(tmp_path / "logs", 20)
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./repo\nsources:\n  logs: {{uri: 'conversations:{logs}', rpo: 24h}}\n"
        "copies: [{repository: ./copy}]\n"
    )
    ok(cli("backup"))
    copy = tmp_path / "copy"
    first = Repository.open(str(copy)).bundle_ids()[0]
    (link,) = [p.relative_to(copy) for p in (copy / "data" / first).rglob("part-*.parquet")]
    (copy / link).unlink()
    conversations(logs, 5, start=20)
    (copied,) = ok(cli("backup", "--json")).json()["copies"]
    assert copied["ok"] and len(copied["copied"]) == 1 and copied["repaired"] == [str(link)], copied
    assert ok(cli("verify", "--read-data", "--repo", str(copy), "--json")).json()["ok"]
    (copy / link).unlink()
    conversations(logs, 5, start=25)
    assert f"copy to {copy}: repaired {link} " in ok(cli("backup")).out  # the text says so too


def test_a_repositorys_own_damaged_chunk_index_is_replaced_from_a_copy_that_holds_every_bundle(
    cli: Cli, tmp_path: Path
) -> None:
    """The repository's own index file damaged (a backup's `index/<bundle>.parquet`, which a copy never
    writes): a copy back from its copy re-indexed nothing and removed nothing, so verify failed and prune
    freed nothing for good; and a copy from the damaged repository failed every model bundle, those whose
    chunks other index files place too. Now the copy from it brings the bundles that do not need the damaged
    file, and the copy back, once the copy holds every bundle, indexes the chunks again and removes it."""
    primary, copy = tmp_path / "repo", tmp_path / "copy"
    llm, index = model_copied_then_index_rotted(cli, tmp_path, rotted=primary)
    tuned = model(tmp_path / "tuned", 2)
    ok(cli("backup", f"model:{tuned}", "--repo", str(primary)))  # its chunks in an index file of its own

    brought = ok(cli("copy", "--repo", str(primary), "--to-repo", str(copy), "--json")).json()
    assert len(brought["copied"]) == 1 and len(brought["skipped"]) == 1, brought
    # The way back: the copy holds every bundle of the repository, so the damaged file goes.
    back = ok(cli("copy", "--repo", str(copy), "--to-repo", str(primary), "--json")).json()
    assert str(index.relative_to(primary)) in back["repaired"] and not index.exists(), back
    assert ok(cli("verify", "--read-data", "--repo", str(primary), "--json")).json()["ok"]
    first = Repository.open(str(primary)).bundle_ids()[0]
    ok(cli("restore", first, "--repo", str(primary), "--to", f"model:{tmp_path / 'old'}"))
    assert files_of(tmp_path / "old") == files_of(llm)
    pruned = ok(cli("prune", "--repo", str(primary), "--keep-last", "9", "--json")).json()
    assert not [note for note in pruned["notes"] if "index" in note], pruned["notes"]


def repacked_after_the_sources_rotation(cli: Cli, tmp_path: Path, copy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An encrypted repository tmp_path/repo of two model versions, copied into `copy`, then its key rotated,
    then the copy pruned (its chunks repacked, under the copy's key, in a folder dated after the rotation):
    the model's folder."""
    monkeypatch.setenv("AIBACKUP_KEY", "the passphrase")
    source = tmp_path / "repo"
    ok(cli("init", "--repo", str(source), "--encrypt"))
    llm = two_model_versions(cli, tmp_path, source)
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    ok(cli("key", "rotate", "--repo", str(source)))
    ok(cli("prune", "--repo", str(copy), "--keep-last", "1", "--grace", "0s"))
    return llm


def test_packs_the_copy_repacked_after_the_source_rotated_its_key_stay_readable(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's own prune repacked chunks after `key rotate` on the source but before the next copy: the
    pack went under the copy's key of the time, in a folder dated after the source's new key took over. Once
    the copy took that key, the pack was read with it: the copy's bundle no longer restored (and with the
    source lost, nothing did)."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    llm = repacked_after_the_sources_rotation(cli, tmp_path, copy, monkeypatch)
    (repacked,) = [p for p in (copy / "data").rglob("packs/*.parquet")]

    def cut(*_: object) -> None:
        raise UnavailableError("the marker could not be written")

    with monkeypatch.context() as interrupted:  # the chunks are moved, the keys not yet taken
        interrupted.setattr(keys, "_store", cut)
        one_line_error(cli("copy", "--repo", str(source), "--to-repo", str(copy)), 3, "marker")
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'between'}"))
    assert files_of(tmp_path / "between") == files_of(llm)
    out = ok(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")).json()
    assert out["generations_added"] == [2], out
    assert not repacked.exists()
    shutil.rmtree(source)  # the region lost
    ok(cli("verify", "--read-data", "--repo", str(copy)))
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_a_copy_backed_up_into_after_the_source_rotated_its_key_is_refused(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle written into the copy itself after the source's `key rotate` is sealed under the copy's key
    of the time, and its id would map to the source's new key: the copy refuses to take that key (exit 2)
    and changes nothing."""
    source, copy, _logs = copied_then_rotated(cli, tmp_path, monkeypatch, "the passphrase")
    ok(cli("backup", f"conversations:{conversations(tmp_path / 'other', 3)}", "--repo", copy))
    one_line_error(cli("copy", "--repo", source, "--to-repo", copy), 2, "backed up into it", "new location")
    assert [g["id"] for g in ok(cli("key", "list", "--repo", copy, "--json")).json()["generations"]] == [1]
    ok(cli("verify", "--read-data", "--repo", copy))


def test_a_damaged_chunk_in_a_source_pack_fails_only_the_bundles_that_need_it(cli: Cli, tmp_path: Path) -> None:
    """One chunk rotted in a source pack that the newer bundle's chunks share but that only the older bundle
    needs: the newer bundle is copied (its chunks into a pack of the copy's own) and restores from the copy;
    the older one fails naming the pack. It failed both, night after night, until a prune retired the chunk."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    llm = two_model_versions(cli, tmp_path, source)
    repo = Repository.open(str(source))
    repo.use_key(repo.key())
    older, newer = (referenced_chunks(repo, [repo.load(b)]) for b in repo.bundle_ids())
    pack = flip_byte_in_chunk(str(source), sorted(older - newer)[0])
    assert pack.parent.parent.name == repo.bundle_ids()[0]  # the newer bundle's chunks share it
    first = cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json")
    out = json.loads(first.out)
    assert first.code == 1 and out["copied"] == repo.bundle_ids()[1:], out
    ((failed, problem),) = [(f["bundle_id"], f["problem"]) for f in out["failed"]]
    assert failed == repo.bundle_ids()[0] and "damaged chunk pack" in problem and pack.name in problem, out
    ok(cli("verify", "--read-data", "--repo", str(copy)))
    again = json.loads(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json").out)
    assert again["skipped"] == repo.bundle_ids()[1:] and again["bytes"] == 0, again
    shutil.rmtree(source)
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_a_pack_damaged_in_the_copy_and_in_the_source_gives_back_what_the_newer_bundle_needs(
    cli: Cli, tmp_path: Path
) -> None:
    """The copy's pack found damaged, and the source's pack of that name holds a rotted chunk only the older
    bundle needs: the newer bundle's chunks are taken from it into a pack of the copy's own (the repair
    failed on the source's damage, leaving the newer bundle unrestorable in the copy)."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    llm = two_model_versions(cli, tmp_path, source)
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    repo = Repository.open(str(source))
    repo.use_key(repo.key())
    older, newer = (referenced_chunks(repo, [repo.load(b)]) for b in repo.bundle_ids())
    pack = flip_byte_in_chunk(str(source), sorted(older - newer)[0])
    flip_middle_byte(copy / pack.relative_to(source))
    assert cli("verify", "--read-data", "--repo", str(copy)).code == 1  # recorded damaged
    out = json.loads(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json").out)
    assert [f["bundle_id"] for f in out["failed"]] == repo.bundle_ids()[:1] and out["repaired"], out
    shutil.rmtree(source)
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_chunks_taken_from_a_damaged_source_pack_are_taken_once_into_a_new_copy(cli: Cli, tmp_path: Path) -> None:
    """Two later bundles need sound chunks of a source pack holding a rotted chunk: into a copy this run
    creates, the second found the first's new pack "lost" (nothing listed it), took the chunks again into
    a pack of its own and named that repaired."""
    source, copy = tmp_path / "repo", tmp_path / "copy"
    llm = two_model_versions(cli, tmp_path, source)
    save_file({"w": np.random.default_rng(7).standard_normal((256, 1024)).astype(np.float32)}, str(llm / "c.st"))
    ok(cli("backup", f"model:{llm}", "--repo", str(source)))
    repo = Repository.open(str(source))
    repo.use_key(repo.key())
    first, *later = (referenced_chunks(repo, [repo.load(b)]) for b in repo.bundle_ids())
    flip_byte_in_chunk(str(source), sorted(first - set().union(*later))[0])
    out = json.loads(cli("copy", "--repo", str(source), "--to-repo", str(copy), "--json").out)
    assert out["copied"] == repo.bundle_ids()[1:] and out["repaired"] == [], out
    taken = {p.relative_to(copy) for p in (copy / "data").rglob("packs/*.parquet")} - {
        p.relative_to(source) for p in (source / "data").rglob("packs/*.parquet")
    }
    assert len(taken) == 1, taken
    assert not (copy / "reports").exists() or not list((copy / "reports").rglob("*.json")), "a repair recorded"
    shutil.rmtree(source)
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def model_stored_again_after_rotation(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str, Path]:
    """An encrypted repository tmp_path/repo with a model bundle copied into tmp_path/copy, then its key rotated
    and the same model backed up again (its chunks stored again under key 2): (the repository, the copy, the
    model's folder)."""
    monkeypatch.setenv("AIBACKUP_KEY", "the passphrase")
    source, copy = str(tmp_path / "repo"), str(tmp_path / "copy")
    ok(cli("init", "--repo", source, "--encrypt"))
    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", source))
    ok(cli("copy", "--repo", source, "--to-repo", copy))
    ok(cli("key", "rotate", "--repo", source))
    ok(cli("backup", f"model:{llm}", "--repo", source))
    return source, copy, llm


def test_a_model_stored_again_after_the_sources_rotation_lets_the_copy_retire_the_old_key(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `key rotate` the source's next backup of an unchanged model stores its chunks again under the new
    key (so that its prune can retire the old one). The copy took only the manifest: it held every chunk
    already, in packs under the old key, so its new bundle went on needing them and its prune never retired
    the old key (nor did a primary repaired from the copy). Now those chunks come in the source's new packs."""
    source, copy, llm = model_stored_again_after_rotation(cli, tmp_path, monkeypatch)
    copied = ok(cli("copy", "--repo", source, "--to-repo", copy, "--json")).json()
    assert copied["generations_added"] == [2] and copied["repaired"] == [], copied
    assert copied["bytes"] > 512 * 1024 * 4 // 2, copied  # the packs came, not the manifest only
    for repo in (source, copy):
        pruned = ok(cli("prune", "--repo", repo, "--keep-last", "1", "--grace", "0s", "--json")).json()
        assert any("[1] retired" in n for n in pruned["notes"]), (repo, pruned)
        assert [g["id"] for g in ok(cli("key", "list", "--repo", repo, "--json")).json()["generations"]] == [2]
    ok(cli("verify", "--repo", copy, "--read-data"))
    ok(cli("restore", "latest", "--repo", copy, "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_a_damaged_pack_the_source_stored_again_after_its_rotation_leaves_the_copys_chunks_where_they_are(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's pack that stores a model again under its new key has a rotted chunk: the copy, which holds
    every chunk sound under the old key, copies the bundle all the same (taking that pack is only so that the
    old key can retire; it had failed the bundle, night after night), and restores it."""
    source, copy, llm = model_stored_again_after_rotation(cli, tmp_path, monkeypatch)
    repo = Repository.open(source)
    repo.use_key(repo.key())
    (chunk, *_) = sorted(referenced_chunks(repo, [repo.load(repo.bundle_ids()[-1])]))
    pack = flip_byte_in_chunk(source, chunk)
    assert Repository.open(source).bundle_ids()[-1] in str(pack)  # the new key's pack
    copied = ok(cli("copy", "--repo", source, "--to-repo", copy, "--json")).json()
    assert len(copied["copied"]) == 1 and copied["failed"] == [], copied
    ok(cli("restore", "latest", "--repo", copy, "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_the_first_key_taken_back_after_the_copys_prune_retired_it_moves_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's prune retired the first master key (no bundle of the copy used it); the source still has
    it, so the next copy takes it back. With a pack left in a folder dated before the rotation (an
    interrupted copy's), that copy failed as an internal error."""
    monkeypatch.setenv("AIBACKUP_KEY", "the passphrase")
    source, copy = tmp_path / "repo", tmp_path / "copy"
    ok(cli("init", "--repo", str(source), "--encrypt"))
    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", str(source)))
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    ok(cli("key", "rotate", "--repo", str(source)))
    model(llm, 2)
    ok(cli("backup", f"model:{llm}", "--repo", str(source)))
    ok(cli("copy", "--repo", str(source), "--to-repo", str(copy)))
    ok(cli("prune", "--repo", str(copy), "--keep-last", "1", "--grace", "0s"))
    assert [g["id"] for g in ok(cli("key", "list", "--repo", str(copy), "--json")).json()["generations"]] == [2]
    first = Repository.open(str(source)).bundle_ids()[0]
    (pack,) = (source / "data" / first / "packs").glob("*.parquet")
    (copy / "data" / first / "packs").mkdir(parents=True)
    shutil.copy(pack, copy / "data" / first / "packs" / pack.name)  # an interrupted copy's
    out = ok(cli("copy", "latest", "--repo", str(source), "--to-repo", str(copy), "--json")).json()
    assert out["generations_added"] == [1], out
    assert (copy / "data" / first / "packs" / pack.name).exists()
    ok(cli("restore", "latest", "--repo", str(copy), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_keys_taken_before_a_copy_stopped_on_a_lock_are_said(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy takes the source's new key, then finds the source locked by its prune (exit 3): the key it
    took is said with the error (it was said nowhere, on that night or later)."""
    from aibackup.lock import RepositoryLock

    source, copy, _logs = copied_then_rotated(cli, tmp_path, monkeypatch, "the passphrase")
    held = Repository.open(source)
    with RepositoryLock(held, "prune", "*"):
        stopped = cli("copy", "--repo", source, "--to-repo", copy, "--json")
    assert stopped.code == 3 and stopped.json()["generations_added"] == [2], (stopped.out, stopped.err)
    assert "locked" in json.loads(stopped.err)["error"]["message"]
    again = ok(cli("copy", "--repo", source, "--to-repo", copy, "--json")).json()
    assert again["generations_added"] == [] and again["ok"], again
