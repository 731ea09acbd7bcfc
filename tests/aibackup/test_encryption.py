"""An encrypted repository: every byte it stores is encrypted and authenticated, keys live in slots.

The planted-secret scan backs up every kind of source (a Chroma collection, conversation logs, a
fine-tuning set, a config folder with secrets), runs every command that writes (backup, restore-test,
verify, prune, pin, key verbs), then reads every object of the repository: its raw bytes, the bytes
decompressed (zstd, gzip), the parts decoded as Parquet without the key (which must fail), and every
object's name. None may hold any planted document text, conversation content, user id, file name,
collection name or secret.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from aibackup.api import Repository
from tests.conftest import Server
from tests.helpers import Cli, legacy_encrypted_repository, ok, one_line_error, repository_url

PASSPHRASE = "correct horse battery staple"
PLANTED = {
    "document": "PLANTED-DOC-zebra-quokka",
    "collection": "plantedcollection",
    "conversation": "PLANTED-CONV-my-bank-pin",
    "user": "planted-user-4711",
    "finetune": "PLANTED-FT-answer-lemur",
    "ft_file": "plantedtrainset",
    "config_file": "plantedsettings",
    "secret": "sk-PLANTEDsecretvalue0123456789abcdef",
}


def _sources(root: Path) -> Path:
    """Every kind of source, each holding planted values; returns the config file naming them."""
    import chromadb

    client = chromadb.PersistentClient(str(root / "chroma"))
    col = client.create_collection(PLANTED["collection"])
    col.add(
        ids=[f"id-{i}" for i in range(60)],
        embeddings=[[float((i * 7 + j) % 11) for j in range(8)] for i in range(60)],
        documents=[f"{PLANTED['document']} number {i}" for i in range(60)],
        metadatas=[{"n": i, "owner": PLANTED["user"]} for i in range(60)],
    )
    del client
    logs = root / "logs"
    logs.mkdir()
    lines = [{"user_id": PLANTED["user"], "input": PLANTED["conversation"], "output": f"ok {i}"} for i in range(20)]
    (logs / "chat.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ft = root / "ft"
    ft.mkdir()
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": PLANTED["finetune"]}]}
    (ft / f"{PLANTED['ft_file']}.jsonl").write_text(json.dumps(chat) + "\n")
    cfg = root / "cfg"
    cfg.mkdir()
    (cfg / f"{PLANTED['config_file']}.yaml").write_text(f"service: chat\napi_key: {PLANTED['secret']}\n")
    config = root / "aibackup.yaml"
    config.write_text(
        "repository: ./repo\n"
        "sources:\n"
        "  kb: {uri: 'chroma:./chroma'}\n"
        "  logs: {uri: 'conversations:./logs'}\n"
        "  ft: {uri: 'finetune:./ft'}\n"
        "  deploy: {uri: 'config:./cfg'}\n"
        "targets: {scratch: 'qdrant:./scratch'}\n"
        "restore_test: {target: scratch}\n"
    )
    return config


@pytest.fixture
def encrypted_kb(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every kind of source (see _sources), an encrypted repository ./repo under PASSPHRASE (set in
    AIBACKUP_KEY) and one backup of the `kb` source in it; returns the config file."""
    config = _sources(tmp_path)
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    ok(cli("init", "--encrypt", "--config", str(config)))
    ok(cli("backup", "--config", str(config), "--source", "kb"))
    return config


def _decoded(data: bytes) -> list[bytes]:
    """The bytes of an object as stored, and whatever a reader without the key could decompress."""
    out = [data]
    with contextlib.suppress(zstandard.ZstdError):
        out.append(zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 26))
    with contextlib.suppress(OSError, EOFError):
        out.append(gzip.decompress(data))
    return out


def _stored(url: str) -> list[tuple[str, bytes]]:
    """(name under the repository root, bytes) of every object: files of a local one, objects of an S3 one."""
    if not url.startswith("s3://"):
        repo = Path(url)
        return [(str(p.relative_to(repo)), p.read_bytes()) for p in sorted(repo.rglob("*")) if p.is_file()]
    bucket, prefix = url[len("s3://") :].split("/", 1)
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    return [(k[len(prefix) + 1 :], s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in sorted(keys)]


def _leaks(names_and_bytes: list[tuple[str, bytes]]) -> list[str]:
    found = []
    for name, data in names_and_bytes:
        for what, value in PLANTED.items():
            if value.lower() in name.lower():
                found.append(f"{what} in the name {name}")
            if any(value.encode() in blob for blob in _decoded(data)):
                found.append(f"{what} in {name}")
    return found


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_no_planted_value_in_any_byte_or_name_of_an_encrypted_repository(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, where: str
) -> None:
    config = _sources(tmp_path)
    url = repository_url(where, tmp_path, request)
    config.write_text(config.read_text().replace("repository: ./repo", f"repository: {url}"))
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    printed: list[str] = []

    def run(*args: str) -> None:
        result = ok(cli(*args))
        printed.extend([result.out, result.err])

    run("init", "--encrypt", "--config", str(config))
    run("backup", "--config", str(config))
    (tmp_path / "logs" / "chat.jsonl").open("a").write(json.dumps({"user_id": "u", "input": "x", "output": "y"}) + "\n")
    run("backup", "--config", str(config))  # incremental: links, indexes, tombstones, referenced files
    run("restore-test", "--config", str(config))
    run("verify", "--read-data", "--config", str(config))
    run("pin", "latest", "--config", str(config))
    run("key", "rotate", "--config", str(config))
    run("backup", "--config", str(config), "--source", "kb")
    before_prune = _stored(url)
    assert _leaks(before_prune) == []
    assert len([name for name, _ in before_prune if name.endswith(".parquet")]) >= 8
    run("prune", "--keep-last", "1", "--config", str(config))
    run("restore", "latest", "--config", str(config), "--to", f"chroma:{tmp_path / 'back'}")  # kb's: the newest

    stored = _stored(url)
    kinds = {name.split("/")[0] for name, _ in stored}
    assert {"bundles", "data", "reports", "pins", "aibackup.json"} <= kinds, kinds
    assert _leaks(stored) == []
    parts = [data for name, data in stored if name.endswith(".parquet")]
    assert len(parts) >= 5
    for part in parts:
        assert part[:4] == b"PARE"  # Parquet Modular Encryption, encrypted footer
        with pytest.raises(OSError, match=r"(?i)encrypted|decrypt"):
            pq.read_table(pa.BufferReader(part))
    for name, data in stored:
        if name != "aibackup.json" and not name.endswith(".parquet"):
            assert data[:4] == b"aibk", name  # a sealed document
    assert PLANTED["secret"] not in "".join(printed)  # names print (the user holds the key); secrets never
    # The restore from the encrypted repository gave the collection back whole.
    import chromadb

    back = chromadb.PersistentClient(str(tmp_path / "back")).get_collection(PLANTED["collection"])
    assert back.count() == 60


def test_tampering_is_detected_and_restore_refuses_before_writing(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, encrypted_kb: Path
) -> None:
    config = encrypted_kb
    ok(cli("verify", "--read-data", "--config", str(config)))
    repo = tmp_path / "repo"
    (bundle,) = [p.stem for p in (repo / "bundles").glob("*.json")]
    part = next((repo / "data" / bundle).rglob("part-*.parquet"))
    original = part.read_bytes()

    # One flipped bit anywhere in a part: verify names the part, restore refuses before writing (exit 1).
    for offset in (len(original) // 2, len(original) - 40):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        part.write_bytes(bytes(damaged))
        found = cli("verify", "--read-data", "--config", str(config), "--json")
        assert found.code == 1 and part.name in found.out, found.out
        refused = cli("restore", "--config", str(config), "--to", f"chroma:{tmp_path / 'out'}")
        assert refused.code == 1, refused.err
        assert not (tmp_path / "out").exists()
    part.write_bytes(original)

    # A part moved to another part's name (same bundle): its AAD and key are its own path's.
    index = next((repo / "data" / bundle).rglob("index-*.parquet"))
    moved = tmp_path / "moved.parquet"
    shutil.copy(part, moved)
    shutil.copy(index, part)
    refused = cli("restore", "--config", str(config), "--to", f"chroma:{tmp_path / 'out'}")
    assert refused.code == 1 and part.name in refused.err, refused.err
    shutil.copy(moved, part)

    # A manifest flipped, or replayed under a newer bundle id: refused, named.
    manifest = repo / "bundles" / f"{bundle}.json"
    good = manifest.read_bytes()
    flipped = bytearray(good)
    flipped[60] ^= 0x01
    manifest.write_bytes(bytes(flipped))
    damaged_manifest = cli("verify", "--config", str(config), "--json")
    assert damaged_manifest.code == 1 and bundle in damaged_manifest.out
    manifest.write_bytes(good)
    newer = repo / "bundles" / f"{bundle[:-8]}ffffffff.json"
    shutil.copy(manifest, newer)
    replayed = cli("verify", "--config", str(config), "--json")
    assert replayed.code == 1 and newer.stem in replayed.out and "authenticate" in replayed.out
    newer.unlink()

    # A report with a flipped bit: verify names it.
    report = next((repo / "reports").rglob("*.json"))
    data = bytearray(report.read_bytes())
    data[-3] ^= 0x01
    report.write_bytes(bytes(data))
    named = cli("verify", "--config", str(config), "--json")
    assert named.code == 1 and report.name in named.out, named.out


def test_wrong_or_missing_key_exits_2_before_anything_is_read_or_written(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, encrypted_kb: Path
) -> None:
    config = encrypted_kb
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "repo").rglob("*"))
    for key in ("a wrong passphrase", None):
        if key is None:
            monkeypatch.delenv("AIBACKUP_KEY")
        else:
            monkeypatch.setenv("AIBACKUP_KEY", key)
        for args in (
            ("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(tmp_path / "repo")),
            ("restore", "--config", str(config), "--to", f"chroma:{tmp_path / 'out'}"),
            ("list", "--config", str(config)),
            ("verify", "--read-data", "--config", str(config)),
            ("prune", "--keep-last", "1", "--config", str(config)),
            ("key", "list", "--config", str(config)),
        ):
            line = one_line_error(cli(*args), 2, "wrong key" if key else "AIBACKUP_KEY")
            assert PASSPHRASE not in line
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "repo").rglob("*")) == before
    assert not (tmp_path / "out").exists()


def test_key_slots_add_remove_rotate_and_prune_retires_old_keys(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, encrypted_kb: Path
) -> None:
    config = encrypted_kb
    monkeypatch.setenv("AIBACKUP_NEW_KEY", "second passphrase here")
    added = ok(cli("key", "add", "--config", str(config), "--json")).json()["added"]
    listed = ok(cli("key", "list", "--config", str(config), "--json")).json()
    assert [s["type"] for s in listed["slots"]] == ["passphrase", "passphrase"]
    assert "salt" not in json.dumps(listed) and "wrapped" not in json.dumps(listed)
    first = next(s["id"] for s in listed["slots"] if s["opened"])
    one_line_error(cli("key", "remove", first, "--config", str(config)), 2, "opened")

    # The second passphrase removes the first one's slot: the first no longer opens anything.
    monkeypatch.setenv("AIBACKUP_KEY", "second passphrase here")
    ok(cli("key", "remove", first, "--config", str(config)))
    one_line_error(cli("key", "remove", added["id"], "--config", str(config)), 2, "last key slot")
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    one_line_error(cli("list", "--config", str(config)), 2, "wrong key")
    monkeypatch.setenv("AIBACKUP_KEY", "second passphrase here")

    # A drill's report, sealed under key 1, is one prune keeps (the source's newest restore test).
    ok(cli("restore-test", "--config", str(config), "--source", "kb"))
    # Rotation: new bundles use key 2 and are full; old ones stay readable; prune retires key 1.
    rotated = ok(cli("key", "rotate", "--config", str(config), "--json")).json()["rotated"]
    assert rotated["id"] == 2
    after = ok(cli("backup", "--config", str(config), "--source", "kb", "--json")).json()
    assert "rotated" in json.dumps(after)  # a full backup, saying why
    ok(cli("restore", "--config", str(config), "latest", "--to", f"chroma:{tmp_path / 'new'}"))
    oldest = ok(cli("list", "--config", str(config), "--json")).json()[-1]["bundle_id"]
    ok(cli("restore", "--config", str(config), oldest, "--to", f"chroma:{tmp_path / 'old'}"))
    assert [g["id"] for g in ok(cli("key", "list", "--config", str(config), "--json")).json()["generations"]] == [1, 2]
    pruned = ok(cli("prune", "--keep-last", "1", "--config", str(config), "--json")).json()
    assert any("retired" in note for note in pruned["notes"]), pruned["notes"]
    keys = ok(cli("key", "list", "--config", str(config), "--json")).json()
    assert [g["id"] for g in keys["generations"]] == [2]
    ok(cli("verify", "--read-data", "--config", str(config)))
    # Every report, resealed under key 2, still reads (the first backup's went with its bundle).
    from aibackup.reports import BACKUPS, RESTORE_TESTS, read_all

    assert [p.split("/")[1] for p in pruned["reports_removed"]] == ["backups"]
    opened = Repository.open(str(tmp_path / "repo"), key="second passphrase here")
    assert len(list(read_all(opened, BACKUPS))) == len(list((tmp_path / "repo" / BACKUPS).iterdir())) == 1
    assert len(list(read_all(opened, RESTORE_TESTS))) == len(list((tmp_path / "repo" / RESTORE_TESTS).iterdir())) == 1
    ok(cli("restore", "--config", str(config), "latest", "--to", f"chroma:{tmp_path / 'again'}"))


def test_kms_slot_opens_without_a_passphrase_and_a_passphrase_slot_recovers(
    tmp_path: Path, cli: Cli, s3_env: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    kms = boto3.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/aibackup-test", TargetKeyId=key_id)
    config = _sources(tmp_path)
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)
    ok(cli("init", "--encrypt", "--kms-key-id", "alias/aibackup-test", "--config", str(config)))
    marker = (tmp_path / "repo" / "aibackup.json").read_text()
    assert '"kms"' in marker and "alias/aibackup-test" in marker
    ok(cli("backup", "--config", str(config), "--source", "kb"))
    monkeypatch.setenv("AIBACKUP_NEW_KEY", "recovery passphrase")
    ok(cli("key", "add", "--config", str(config)))

    # KMS unreachable: without a passphrase, exit 3 saying how to recover; with the recovery passphrase, ok.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    one_line_error(cli("list", "--config", str(config)), 3, "KMS", "passphrase")
    monkeypatch.setenv("AIBACKUP_KEY", "recovery passphrase")
    ok(cli("restore", "--config", str(config), "--to", f"chroma:{tmp_path / 'out'}"))

    # Another KMS key cannot stand in: a slot made for key A does not open with key B's alias.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.url)
    monkeypatch.delenv("AIBACKUP_KEY")
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    one_line_error(cli("init", "--encrypt", "--kms-key-id", "alias/nope", "--repo", str(tmp_path / "r2")), 2, "KMS")
    ok(cli("init", "--encrypt", "--kms-key-id", other, "--repo", str(tmp_path / "r2")))
    assert Repository.open(str(tmp_path / "r2")).keys()["slots"][0]["kms_key_id"] == other


@pytest.mark.s3
@pytest.mark.parametrize("sse", ["AES256", "aws:kms"])
def test_s3_server_side_encryption_is_sent_on_every_object(
    tmp_path: Path, cli: Cli, request: pytest.FixtureRequest, sse: str
) -> None:
    url = repository_url("s3", tmp_path, request)
    bucket = url.split("/")[2]
    config = _sources(tmp_path)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", f"{url}?sse={sse}"))
    ok(cli("backup", f"config:{tmp_path / 'cfg'}", "--repo", f"{url}?sse={sse}", "--redact-secrets"))
    ok(cli("verify", "--read-data", "--repo", f"{url}?sse={sse}"))
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith(".parquet") for k in keys) and any("/bundles/" in k for k in keys)
    for key in keys:
        assert s3.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption") == sse, key
    # The config file's keys do the same; a bad value is refused with one line.
    config.write_text(config.read_text().replace("repository: ./repo", f"repository: {url}\nsse: {sse}"))
    ok(cli("backup", "--config", str(config), "--source", "kb"))
    one_line_error(cli("list", "--repo", f"{url}?sse=rot13"), 2, "sse")


def test_a_repository_encrypted_by_0_4_keeps_working_as_it_did(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sources(tmp_path)
    repo = tmp_path / "old"
    legacy_encrypted_repository(repo, PASSPHRASE)
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    ok(cli("backup", f"config:{tmp_path / 'cfg'}", "--repo", str(repo)))
    (manifest,) = (repo / "bundles").glob("*.json")
    doc = json.loads(manifest.read_bytes())  # 0.4's scheme: plaintext, authenticated, secrets sealed
    assert doc["authentication"] and PLANTED["secret"] not in manifest.read_text()
    ok(cli("restore", "--repo", str(repo), "--to", f"config:{tmp_path / 'out'}"))
    assert PLANTED["secret"] in next((tmp_path / "out").iterdir()).read_text()
    ok(cli("verify", "--read-data", "--repo", str(repo)))
    one_line_error(cli("key", "list", "--repo", str(repo)), 2, "0.4")
    monkeypatch.setenv("AIBACKUP_KEY", "not the passphrase")
    one_line_error(cli("restore", "--repo", str(repo), "--to", f"config:{tmp_path / 'o2'}"), 2, "wrong key")


def test_an_encrypted_repository_is_format_2_and_a_newer_scheme_is_refused(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    ok(cli("init", "--encrypt", "--repo", str(tmp_path / "enc")))
    ok(cli("init", "--repo", str(tmp_path / "plain")))
    marker = json.loads((tmp_path / "enc" / "aibackup.json").read_text())
    assert marker["version"] == 2 and marker["encryption"]["scheme"] == "keyslots-1"  # aibackup 0.4 refuses it
    assert json.loads((tmp_path / "plain" / "aibackup.json").read_text())["version"] == 1
    marker["encryption"]["scheme"] = "keyslots-9"
    (tmp_path / "enc" / "aibackup.json").write_text(json.dumps(marker))
    one_line_error(cli("list", "--repo", str(tmp_path / "enc")), 2, "keyslots-9", "upgrade")


def test_a_slot_planted_in_the_marker_is_never_handed_the_keyring(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write the bucket can edit aibackup.json: a slot they add (their own public key) must not
    receive the keyring at the next rotation; `key list` marks it, rotate and add refuse, naming it."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    repo = tmp_path / "repo"
    ok(cli("init", "--encrypt", "--repo", str(repo)))
    marker = json.loads((repo / "aibackup.json").read_text())
    genuine = dict(marker["encryption"]["slots"][0])
    attacker = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    planted = {**genuine, "id": "0badc0de", "public_key": base64.b64encode(attacker).decode()}
    marker["encryption"]["slots"].append(planted)
    (repo / "aibackup.json").write_text(json.dumps(marker))
    before = (repo / "aibackup.json").read_bytes()
    listed = ok(cli("key", "list", "--repo", str(repo), "--json")).json()["slots"]
    assert [s["authentic"] for s in listed] == [True, False]
    one_line_error(cli("key", "rotate", "--repo", str(repo)), 1, "0badc0de", "not authenticated")
    monkeypatch.setenv("AIBACKUP_NEW_KEY", "yet another passphrase")
    one_line_error(cli("key", "add", "--repo", str(repo)), 1, "0badc0de")
    assert (repo / "aibackup.json").read_bytes() == before  # nothing re-wrapped for the planted slot


def test_a_marker_stripped_of_its_encryption_never_gets_plaintext_written_beside_sealed_bundles(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sources(tmp_path)
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    repo = tmp_path / "repo"
    ok(cli("init", "--encrypt", "--repo", str(repo)))
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    marker = json.loads((repo / "aibackup.json").read_text())
    del marker["encryption"]
    marker["version"] = 1
    (repo / "aibackup.json").write_text(json.dumps(marker))
    before = sorted(str(p) for p in repo.rglob("*"))
    for key in (PASSPHRASE, None):
        if key is None:
            monkeypatch.delenv("AIBACKUP_KEY")
        one_line_error(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)), 1, "marker", "plaintext")
    assert sorted(str(p) for p in repo.rglob("*")) == before
    # verify blames the marker, not the sealed manifests ("not valid JSON")
    (problem,) = cli("verify", "--repo", str(repo), "--json").json()["problems"]
    assert "damaged repository marker" in problem["problem"] and "sealed" in problem["problem"]


@pytest.mark.parametrize("params", [{"n": 0}, {"n": 3}, {"r": 0}, {"p": -1}, {"n": 2**30}])
def test_scrypt_parameters_scrypt_refuses_are_a_damaged_marker(
    params: dict[str, int], tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot's kdf_params that scrypt itself refuses (n not a power of 2 above 1, r or p below 1) was an
    internal error (exit 70); like parameters that would ask for gigabytes, they are a damaged marker."""
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    repo = tmp_path / "repo"
    ok(cli("init", "--encrypt", "--repo", str(repo)))
    _sources(tmp_path)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(repo)))
    marker = json.loads((repo / "aibackup.json").read_text())
    marker["encryption"]["slots"][0]["kdf_params"].update(params)
    (repo / "aibackup.json").write_text(json.dumps(marker))
    for verb in (("verify",), ("list",), ("key", "list"), ("restore", "latest", "--to", f"chroma:{tmp_path / 'to'}")):
        result = cli(*verb, "--repo", str(repo))
        assert result.code == 1 and "Traceback" not in result.err, (verb, result)
        assert "damaged repository marker: scrypt parameters out of range" in result.out + result.err, (verb, result)
    assert not (tmp_path / "to").exists()


def test_a_slot_whose_wrapped_keyring_is_damaged_is_found_by_verify_with_another_slot(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two passphrases; the first one's wrapped keyring damaged in the marker. Opened with the second, verify
    said ok and `key list` showed both slots fine, while the first passphrase no longer opened anything: the
    slot's MAC covers what a wrap uses, not the wrapped bytes. Each wrap now also MACs what it wrapped."""
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    repo = tmp_path / "repo"
    ok(cli("init", "--encrypt", "--repo", str(repo)))
    monkeypatch.setenv("AIBACKUP_NEW_KEY", "second passphrase here")
    ok(cli("key", "add", "--repo", str(repo)))
    assert ok(cli("verify", "--repo", str(repo), "--json")).json()["ok"]
    marker = json.loads((repo / "aibackup.json").read_text())
    first = marker["encryption"]["slots"][0]
    wrapped = bytearray(base64.b64decode(first["wrapped"]))
    wrapped[len(wrapped) // 2] ^= 0x01
    first["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    (repo / "aibackup.json").write_text(json.dumps(marker))
    monkeypatch.setenv("AIBACKUP_KEY", "second passphrase here")
    result = cli("verify", "--repo", str(repo), "--json")
    assert result.code == 1, result
    (problem,) = result.json()["problems"]
    assert problem["path"].endswith("aibackup.json") and f"key slot {first['id']}" in problem["problem"]
    assert "no longer opens" in problem["problem"]
    listed = ok(cli("key", "list", "--repo", str(repo), "--json")).json()["slots"]
    assert [bool(s["problem"]) for s in listed] == [True, False]
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)  # what verify warned of
    assert cli("key", "list", "--repo", str(repo)).code != 0
    # Any re-wrap (here: adding a third key) wraps every slot afresh: the first passphrase opens again.
    monkeypatch.setenv("AIBACKUP_KEY", "second passphrase here")
    monkeypatch.setenv("AIBACKUP_NEW_KEY", "a third passphrase")
    ok(cli("key", "add", "--repo", str(repo)))
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    assert ok(cli("verify", "--repo", str(repo), "--json")).json()["ok"]


def test_a_marker_without_key_slots_is_damaged_not_a_wrong_key(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    repo = tmp_path / "repo"
    ok(cli("init", "--encrypt", "--repo", str(repo)))
    marker = json.loads((repo / "aibackup.json").read_text())
    marker["encryption"]["slots"] = []
    (repo / "aibackup.json").write_text(json.dumps(marker))
    one_line_error(cli("key", "list", "--repo", str(repo)), 1, "damaged repository marker", "no key slot")


def _key_verb_before_the_lock(monkeypatch: pytest.MonkeyPatch, verb: Any) -> None:
    """Run `verb(repository)` (a key verb, on a handle of its own) once, while the next backup has opened
    the repository but not yet taken its lock: where a slow source (Qdrant local mode loading its store)
    holds a backup for minutes."""
    from aibackup import backup as backup_module
    from aibackup.lock import RepositoryLock

    real = RepositoryLock.acquire
    done: list[bool] = []

    def acquire(self: RepositoryLock) -> RepositoryLock:
        if not done:
            done.append(True)
            verb(Repository.open(str(self.repo.storage.url)))
        return real(self)

    monkeypatch.setattr(backup_module.RepositoryLock, "acquire", acquire)


def test_a_backup_that_opened_the_repository_before_a_rotation_uses_the_new_key(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It read the keyring before its lock and wrote its bundle with the old master key, under an id its
    readers open with the new one (another backup had committed after the rotation): unreadable, exit 0;
    or, with a clock behind the rotation's, under the key the rotation was meant to retire."""
    from aibackup import keys

    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    repo = str(tmp_path / "repo")
    ok(cli("init", "--encrypt", "--repo", repo))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text('{"user_id": "u", "input": "hi"}\n')
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.yaml").write_text("a: 1\n")

    def rotate_then_another_backup(opened: Repository) -> None:
        keys.rotate(opened)
        opened.backup(f"config:{tmp_path / 'conf'}")

    _key_verb_before_the_lock(monkeypatch, rotate_then_another_backup)
    ok(cli("backup", f"conversations:{logs}", "--repo", repo))
    ok(cli("verify", "--read-data", "--repo", repo))
    ok(cli("restore", "latest", "--repo", repo, "--to", f"conversations:{tmp_path / 'back'}"))

    # A backup whose clock is behind the rotation's still takes the key the rotation made.
    monkeypatch.undo()
    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    ok(cli("key", "rotate", "--repo", repo))
    behind = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    monkeypatch.setenv("AIBACKUP_NOW", behind.isoformat().replace("+00:00", "Z"))
    dated = ok(cli("backup", f"conversations:{logs}", "--repo", repo, "--json")).json()["bundle_id"]
    monkeypatch.delenv("AIBACKUP_NOW")
    keyring = Repository.open(repo).vault().keyring
    assert keyring.for_bundle(dated).id == keyring.current.id == 3
    ok(cli("verify", "--read-data", "--repo", repo))


def test_a_backup_whose_key_slot_was_removed_before_its_lock_is_refused(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key of someone whose slot was removed (and the master key rotated) went on writing bundles the
    removed passphrase opens."""
    from aibackup import keys

    monkeypatch.setenv("AIBACKUP_KEY", PASSPHRASE)
    repo = str(tmp_path / "repo")
    ok(cli("init", "--encrypt", "--repo", repo))
    monkeypatch.setenv("AIBACKUP_NEW_KEY", "the other passphrase")
    ok(cli("key", "add", "--repo", repo))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text('{"user_id": "u", "input": "hi"}\n')

    def revoke(opened: Repository) -> None:
        opened.passphrase = b"the other passphrase"
        mine = next(s["id"] for s in keys.describe(opened)["slots"] if not s["opened"])
        keys.remove(opened, mine)
        keys.rotate(opened)

    _key_verb_before_the_lock(monkeypatch, revoke)
    line = one_line_error(cli("backup", f"conversations:{logs}", "--repo", repo), 2, "keys changed", "wrong key")
    assert "while this backup was starting" in line
    assert not list((tmp_path / "repo").glob("bundles/*.json"))


def test_every_verb_that_reads_the_repository_takes_key_file(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, encrypted_kb: Path
) -> None:
    """The error without a key says "or pass --key-file", and list, show, status, pin, unpin, prune and
    restore-test answered "No such option: --key-file"."""
    config = encrypted_kb
    key_file = tmp_path / "key"
    key_file.write_text(PASSPHRASE + "\n")
    monkeypatch.delenv("AIBACKUP_KEY")
    one_line_error(cli("list", "--config", str(config)), 2, "--key-file")
    given = ("--config", str(config), "--key-file", str(key_file))
    bundle = ok(cli("list", *given, "--json")).json()[0]["bundle_id"]
    ok(cli("show", bundle, *given))
    status = cli("status", *given, "--json")  # exit 1: the config's other sources have no bundle yet
    assert status.code == 1 and status.json()["sources"][0]["newest_bundle"] == bundle, status.err
    ok(cli("pin", bundle, *given))
    ok(cli("unpin", bundle, *given))
    ok(cli("prune", "--keep-last", "1", "--dry-run", *given))
    ok(cli("restore-test", "--source", "kb", *given))
