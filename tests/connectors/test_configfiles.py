"""The config connector on real folders with real crypto (RepositoryKey): export, restore, proof, refusals.

The planted secrets below must never appear in any byte the connector hands over (batches serialized with
Arrow IPC, export notes and config, error messages); restores must give byte-identical files and modes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from aibackup import crypto
from aibackup.connectors.base import DatasetDescription, ImportPlan
from aibackup.connectors.files.configfiles import ConfigConnector
from aibackup.connectors.files.configfiles_restore import SafeFolder
from aibackup.connectors.files.secrets import PLACEHOLDER
from aibackup.connectors.registry import open_connector
from aibackup.errors import (
    AibackupError,
    ConfigError,
    DatasetNotFoundError,
    IntegrityError,
    SourceDataError,
    TargetNotEmptyError,
    UnsupportedFeatureError,
    UsageError,
)
from aibackup.manifests.digest import record_digests
from aibackup.manifests.records import CONFIG

OPENAI = "sk-proj-PLANTED1openaiQ3kVb8XwZt1mNc5Lp9"
ENV_TOKEN = "planted-env-token-77a1"
DB_PASSWORD = "planted-db-pässword-42"
TOML_PASSWORD = "planted-toml-secret-9"
AWS_ID = "AKIAPLANTEDAWS000001"
PEM_BODY = "MIIEplantedPEMbodyQ29uZmlnS2V5"
PROMPT_KEY = "sk-ant-PLANTEDpromptKEY0123456789abc"
SECRETS = [OPENAI, ENV_TOKEN, DB_PASSWORD, TOML_PASSWORD, AWS_ID, PEM_BODY, PROMPT_KEY]


@pytest.fixture(scope="module")
def box() -> crypto.RepositoryKey:
    return crypto.RepositoryKey(crypto.derive(b"passphrase", b"salt-16-bytes...", crypto.SCRYPT), "repo-id")


@pytest.fixture(scope="module")
def wrong_box() -> crypto.RepositoryKey:
    return crypto.RepositoryKey(crypto.derive(b"another passphrase", b"salt-16-bytes...", crypto.SCRYPT), "repo-id")


def write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A realistic config folder: nested folders, secrets in every format, symlinks, unicode names, modes."""
    root = tmp_path / "cfg"
    write(root / "app.yaml", f'openai: {{api_key: {OPENAI}, model: gpt-4o}}\ndb:\n  password: "{DB_PASSWORD}"\n', 0o600)
    write(root / ".env", f"# local\nexport API_TOKEN={ENV_TOKEN}\nDEBUG=\n", 0o600)
    write(root / "settings.json", '{"max_tokens": 512, "model": "gpt-4o", "bos_token": "<s>"}\n')
    write(root / "prompts" / "system.txt", "Never reveal the password to the user.\n{context}\n")
    write(root / "prompts" / "tool.txt", f"Call the lookup tool with key {PROMPT_KEY} only.\n")
    write(root / "scripts" / "run.sh", "#!/bin/sh\nexec python -m app\n", 0o755)
    write(root / "empty.txt", b"")
    write(root / "ünïcode" / "配置.toml", f'[db]\npassword = "{TOML_PASSWORD}"\nport = 5432\n', 0o640)
    write(root / "certs" / "key.pem", f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n", 0o600)
    write(root / "bin" / "blob.dat", b"\x00\x01" + AWS_ID.encode() + b"\x00\xff\xfe")
    (root / "current.yaml").symlink_to("app.yaml")
    (root / "prompts-link").symlink_to("prompts")
    (root / "emptydir").mkdir()
    return root


def source(path: Path, **options: Any) -> ConfigConnector:
    conn = open_connector(f"config:{path}", options=options)
    assert isinstance(conn, ConfigConnector)
    return conn


def export_all(conn: ConfigConnector) -> tuple[list[pa.RecordBatch], DatasetDescription]:
    (desc,) = conn.describe()
    batches = list(conn.export(desc))
    state = conn.export_state(desc.name)
    assert state is not None and state.config is not None
    rows = sum(b.num_rows for b in batches)
    return batches, DatasetDescription(name=desc.name, config=dict(state.config), rows=rows, kind="config")


def ipc_bytes(batches: Iterable[pa.RecordBatch]) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, CONFIG) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


def assert_no_secret(blob: bytes | str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in SECRETS:
        assert secret.encode() not in data, secret


def rows_of(batches: Iterable[pa.RecordBatch]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for b in batches for r in b.to_pylist()}


def restore(
    batches: list[pa.RecordBatch],
    desc: DatasetDescription,
    dest: Path,
    box: Any = None,
    mode: str = "create",
    lossy: bool = False,
) -> tuple[ConfigConnector, ImportPlan]:
    target = open_connector(f"config:{dest}", target=True, options={"secrets": box} if box else {})
    assert isinstance(target, ConfigConnector)
    plan = target.plan_import(desc, desc.name, mode=mode, allow_lossy=lossy)
    target.validate_records(plan, batches)
    target.import_(plan, batches)
    return target, plan


def digests(batches: Iterable[pa.RecordBatch], exclude: tuple[str, ...] = ()) -> Counter[tuple[str, bytes]]:
    out: Counter[tuple[str, bytes]] = Counter()
    for batch in batches:
        out.update(zip(batch.column("id").to_pylist(), record_digests(batch, exclude), strict=True))
    return out


def tree(root: Path) -> dict[str, tuple[str, str, int]]:
    """rel -> (kind, sha256 or link target, mode) of every file and symlink under root."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(path), st.st_mode & 0o7777)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode & 0o7777)
    return out


def test_describe_and_missing_sources(cfg: Path, tmp_path: Path) -> None:
    conn = source(cfg)
    (desc,) = conn.describe()
    assert (desc.name, desc.rows, desc.kind) == ("cfg", 12, "config")
    assert desc.config["symlinks"] == 2
    assert conn.describe(["cfg"])[0].rows == 12
    with pytest.raises(DatasetNotFoundError, match="'other'"):
        conn.describe(["other"])
    with pytest.raises(DatasetNotFoundError, match="typo"):
        source(tmp_path / "typo")


def test_encrypted_round_trip_is_byte_identical_and_proves(cfg: Path, tmp_path: Path, box: Any) -> None:
    conn = source(cfg, secrets=box)
    batches, desc = export_all(conn)
    state = conn.export_state("cfg")
    assert state is not None
    # Not one planted secret in any byte the connector hands over.
    assert_no_secret(ipc_bytes(batches))
    assert_no_secret(json.dumps([dict(state.config or {}), list(state.notes)]))
    rows = rows_of(batches)
    assert list(rows) == sorted(rows)
    assert state.config == {
        "files": 10,
        "symlinks": 2,
        "bytes": desc.config["bytes"],
        "secret_files": 6,
        "redacted_files": 0,
    }
    assert any("empty folder" in n and "emptydir" in n for n in state.notes)
    sealed = {p for p, r in rows.items() if r["secrets"] is not None}
    assert sealed == {".env", "app.yaml", "bin/blob.dat", "certs/key.pem", "prompts/tool.txt", "ünïcode/配置.toml"}
    for path in sealed:
        assert rows[path]["sha256"].startswith("hmac-sha256:")
    assert (
        rows["settings.json"]["sha256"] == "sha256:" + hashlib.sha256((cfg / "settings.json").read_bytes()).hexdigest()
    )
    assert rows["prompts/system.txt"]["secrets"] is None  # "password" in prose is not a secret
    assert rows["current.yaml"] == {
        "id": "current.yaml",
        "path": "current.yaml",
        "type": "symlink",
        "mode": os.lstat(cfg / "current.yaml").st_mode & 0o7777,
        "content": None,
        "link": "app.yaml",
        "secrets": None,
        "redacted": 0,
        "sha256": "sha256:" + hashlib.sha256(b"app.yaml").hexdigest(),
    }
    assert rows["app.yaml"]["content"] == b'openai: {api_key: , model: gpt-4o}\ndb:\n  password: ""\n'

    dest = tmp_path / "restored"
    target, plan = restore(batches, desc, dest, box)
    assert tree(dest) == {k: v for k, v in tree(cfg).items() if k != "emptydir"}
    assert (dest / "ünïcode" / "配置.toml").stat().st_mode & 0o7777 == 0o640
    assert os.readlink(dest / "prompts-link") == "prompts"
    assert plan.tolerances == {"secrets": "covered"}
    ((name, ok, detail),) = target.extra_checks(plan)
    assert (name, ok) == ("files", True)
    assert detail == "10 files match the manifest (6 with encrypted secrets); 2 symlink(s) recreated"
    # The proof: the target exported again gives the same records, but for the freshly sealed secrets.
    (again_desc,) = target.describe(["cfg"])
    assert again_desc.rows == desc.rows
    again = list(target.export(again_desc))
    assert digests(again, ("secrets",)) == digests(batches, ("secrets",))
    assert digests(again) != digests(batches)  # a fresh nonce each time: hence the "covered" tolerance


def test_redacted_round_trip_restores_placeholders_and_reexports_equal(cfg: Path, tmp_path: Path, box: Any) -> None:
    conn = source(cfg, redact_secrets=True)
    batches, desc = export_all(conn)
    assert_no_secret(ipc_bytes(batches))
    state = conn.export_state("cfg")
    assert state is not None and state.config is not None
    assert state.config["redacted_files"] == 6 and state.config["secret_files"] == 0
    assert "2 secret value(s) redacted in cfg/app.yaml" in state.notes
    rows = rows_of(batches)
    app = rows["app.yaml"]
    assert app["secrets"] is None and app["redacted"] == 2
    assert (
        app["content"]
        == b'openai: {api_key: REDACTED-BY-AIBACKUP, model: gpt-4o}\ndb:\n  password: "REDACTED-BY-AIBACKUP"\n'
    )
    assert app["sha256"] == "sha256:" + hashlib.sha256(app["content"]).hexdigest()

    dest = tmp_path / "restored"
    target, plan = restore(batches, desc, dest)
    assert (dest / "app.yaml").read_bytes() == app["content"]
    assert PLACEHOLDER in (dest / "certs" / "key.pem").read_bytes()
    assert any("REDACTED-BY-AIBACKUP" in n for n in plan.notes)
    ((_, ok, detail),) = target.extra_checks(plan)
    assert ok and "6 redacted" in detail
    again = list(target.export(target.describe(["cfg"])[0]))
    assert digests(again) == digests(batches)  # every column, secrets included (all null)
    # A backup of the restored folder, even into an encrypted repository, gives the same rows again.
    again_sealed, _ = export_all(source(dest, secrets=box))
    assert digests(again_sealed) == digests(batches)


def test_secrets_without_key_or_redaction_refuse_naming_file_and_line(cfg: Path) -> None:
    conn = source(cfg)
    (desc,) = conn.describe()
    with pytest.raises(ConfigError) as err:
        conn.export(desc)
    message = str(err.value)
    assert message.startswith("cfg/.env:2 holds a secret (key 'API_TOKEN'): back up into an encrypted repository")
    assert "--redact-secrets" in message and "(5 more files hold secrets)" in message
    assert err.value.exit_code == 2
    assert_no_secret(message)


def test_a_folder_without_secrets_needs_no_key(tmp_path: Path) -> None:
    write(tmp_path / "plain" / "a.yaml", "model: gpt-4o\nmax_tokens: 100\n")
    batches, desc = export_all(source(tmp_path / "plain"))
    dest = tmp_path / "out"
    restore(batches, desc, dest)
    assert (dest / "a.yaml").read_text() == "model: gpt-4o\nmax_tokens: 100\n"


def test_single_file_source(tmp_path: Path, box: Any) -> None:
    write(tmp_path / "app.env", f"OPENAI_API_KEY={OPENAI}\n", 0o600)
    batches, desc = export_all(source(tmp_path / "app.env", secrets=box))
    assert desc.name == "app.env" and list(rows_of(batches)) == ["app.env"]
    restore(batches, desc, tmp_path / "out", box)
    assert (tmp_path / "out" / "app.env").read_bytes() == (tmp_path / "app.env").read_bytes()


def test_restore_without_key_or_with_a_wrong_key_writes_nothing(
    cfg: Path, tmp_path: Path, box: Any, wrong_box: Any
) -> None:
    batches, desc = export_all(source(cfg, secrets=box))
    dest = tmp_path / "restored"
    with pytest.raises(UsageError, match="AIBACKUP_KEY") as err:
        restore(batches, desc, dest)
    assert err.value.exit_code == 2
    # Even when the manifest's config does not say so, the first sealed record stops it.
    bare = DatasetDescription(name="cfg", config={}, rows=desc.rows, kind="config")
    with pytest.raises(UsageError, match="AIBACKUP_KEY"):
        restore(batches, bare, dest)
    with pytest.raises(IntegrityError) as err2:
        restore(batches, desc, dest, wrong_box)
    assert "does not open" in str(err2.value) and err2.value.exit_code == 1
    assert_no_secret(str(err2.value))
    assert not dest.exists() or not any(dest.iterdir())


def file_row(path: str, content: bytes = b"x", **extra: Any) -> dict[str, Any]:
    row = {"id": path, "path": path, "type": "file", "mode": 0o644, "content": content, "link": None}
    row |= {"secrets": None, "redacted": 0, "sha256": "sha256:" + hashlib.sha256(content).hexdigest()}
    return row | extra


def link_row(path: str, link: str) -> dict[str, Any]:
    sha = "sha256:" + hashlib.sha256(link.encode()).hexdigest()
    return {"id": path, "path": path, "type": "symlink", "mode": 0o777, "content": None, "link": link} | {
        "secrets": None,
        "redacted": 0,
        "sha256": sha,
    }


def bundle(*rows: dict[str, Any]) -> tuple[list[pa.RecordBatch], DatasetDescription]:
    batch = pa.RecordBatch.from_pylist(list(rows), schema=CONFIG)
    return [batch], DatasetDescription(name="cfg", config={}, rows=len(rows), kind="config")


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", "a/./b", "a//b", "", "a\\..\\b", "x\x00y", "a/"])
def test_path_traversal_is_refused_before_writing(tmp_path: Path, bad: str) -> None:
    batches, desc = bundle(file_row("ok.txt"), file_row(bad))
    dest = tmp_path / "deep" / "restored"
    with pytest.raises(UnsupportedFeatureError, match="refusing bundle entry") as err:
        restore(batches, desc, dest)
    assert repr(bad) in str(err.value) and err.value.exit_code == 2
    assert not dest.exists()
    # import_ alone (without the validation pass) refuses it too, and nothing lands outside DIR.
    target = open_connector(f"config:{dest}", target=True)
    plan = target.plan_import(desc, "cfg", mode="create", allow_lossy=False)
    with pytest.raises(UnsupportedFeatureError):
        target.import_(plan, batches)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "ok.txt", "restored"]


def test_symlinks_already_in_the_target_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "restored"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    (dest / "app.yaml").symlink_to(outside / "app.yaml")
    batches, desc = bundle(file_row("sub/evil.txt"))
    with pytest.raises(UnsupportedFeatureError, match="'sub' in the target is a symlink"):
        restore(batches, desc, dest, mode="overwrite")
    batches, desc = bundle(file_row("app.yaml"))
    with pytest.raises(UnsupportedFeatureError, match="holds a symlink there"):
        restore(batches, desc, dest, mode="merge")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "links",
    [
        [("evil", "/etc/passwd")],
        [("a/evil", "../../outside")],
        # Lexically inside ("p/q/d/../../.." is "."), but d is a symlink to a shallower place: outside.
        [("p/q/d", "../../s"), ("x", "p/q/d/../../..")],
        [("loop1", "loop2"), ("loop2", "loop1/x")],
    ],
)
def test_symlink_entries_leaving_the_target(tmp_path: Path, links: list[tuple[str, str]]) -> None:
    rows = [file_row("keep.txt"), file_row("s"), *(link_row(p, t) for p, t in links)]
    batches, desc = bundle(*rows)
    dest = tmp_path / "restored"
    with pytest.raises(UnsupportedFeatureError, match="--allow-lossy would skip it"):
        restore(batches, desc, dest)
    assert not dest.exists()
    target, plan = restore(batches, desc, dest, lossy=True)
    assert plan.dropped and "symlink" in plan.dropped[0]
    bad = links[-1][0]
    assert not os.path.lexists(dest / bad) and (dest / "keep.txt").read_bytes() == b"x"
    ((_, ok, detail),) = target.extra_checks(plan)
    assert ok and f"{bad} -> {links[-1][1]}" in detail
    kept = plan.transform(batches[0]).column("id").to_pylist()
    assert bad not in kept and "keep.txt" in kept


def test_symlinks_that_stay_inside_are_restored(tmp_path: Path) -> None:
    batches, desc = bundle(file_row("a/b/file"), link_row("a/up", "../a/b/file"), link_row("dangling", "nowhere"))
    dest = tmp_path / "restored"
    restore(batches, desc, dest)
    assert (dest / "a" / "up").read_bytes() == b"x" and os.readlink(dest / "dangling") == "nowhere"


def test_hand_made_conflicts_are_refused(tmp_path: Path) -> None:
    for rows, needle in [
        ((file_row("a"), file_row("a")), "second record"),
        ((file_row("a"), file_row("a/b")), "its folder is a file"),
        ((file_row("a/b"), file_row("a")), "second record"),
        ((link_row("d", "sub"), file_row("d/x")), "its folder is a file"),
        ((file_row("x", id="y"),), "differs from its path"),
        ((file_row("x", mode=0o10000),), "bad mode"),
        ((file_row("x", content=b"changed", sha256=file_row("x")["sha256"]),), "does not match"),
    ]:
        batches, desc = bundle(*rows)
        with pytest.raises(AibackupError, match=needle):
            restore(batches, desc, tmp_path / "restored")
        assert not (tmp_path / "restored").exists()


def test_modes_create_overwrite_merge(cfg: Path, tmp_path: Path, box: Any) -> None:
    batches, desc = export_all(source(cfg, secrets=box))
    dest = tmp_path / "restored"
    write(dest / "app.yaml", "old\n")
    write(dest / "local-only.txt", "mine\n")
    with pytest.raises(TargetNotEmptyError, match=r"'app\.yaml' already exists"):
        restore(batches, desc, dest, box)
    assert (dest / "app.yaml").read_text() == "old\n"
    # merge replaces the bundle's files and keeps the others; the proof covers the restored files only.
    target, plan = restore(batches, desc, dest, box, mode="merge")
    assert (dest / "local-only.txt").read_text() == "mine\n"
    assert (dest / "app.yaml").read_bytes() == (cfg / "app.yaml").read_bytes()
    assert target.describe(["cfg"])[0].rows == desc.rows
    # overwrite replaces the bundle's files too, and never removes what the folder holds beyond them.
    write(dest / "app.yaml", "changed again\n")
    target, plan = restore(batches, desc, dest, box, mode="overwrite")
    assert (dest / "local-only.txt").read_text() == "mine\n"
    ((_, ok, _detail),) = target.extra_checks(plan)
    assert ok
    restored = tree(dest)
    del restored["local-only.txt"]
    assert restored == {k: v for k, v in tree(cfg).items() if k != "emptydir"}


def test_extra_checks_find_a_changed_file(cfg: Path, tmp_path: Path, box: Any) -> None:
    batches, desc = export_all(source(cfg, secrets=box))
    dest = tmp_path / "restored"
    target, plan = restore(batches, desc, dest, box)
    (dest / ".env").write_text("API_TOKEN=other\n")
    (dest / "scripts" / "run.sh").chmod(0o644)
    ((name, ok, detail),) = target.extra_checks(plan)
    assert (name, ok) == ("files", False)
    assert ".env: content differs" in detail and "scripts/run.sh: mode 0644, expected 0755" in detail


def test_special_files_are_skipped_with_a_note_and_odd_names_refused(tmp_path: Path) -> None:
    root = tmp_path / "cfg"
    write(root / "a.yaml", "x: 1\n")
    os.mkfifo(root / "pipe")
    conn = source(root)
    batches, _ = export_all(conn)
    assert list(rows_of(batches)) == ["a.yaml"]
    state = conn.export_state("cfg")
    assert state is not None and any("pipe" in n for n in state.notes)
    os.unlink(root / "pipe")
    write(Path(os.fsdecode(bytes(root) + b"/bad-\xff.yaml")), "x: 1\n")
    with pytest.raises(SourceDataError, match="not UTF-8"):
        export_all(source(root))


def test_a_symlink_swapped_in_after_validation_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "restored"
    (dest / "sub").mkdir(parents=True)
    batches, desc = bundle(file_row("sub/x.txt"))
    target = open_connector(f"config:{dest}", target=True)
    plan = target.plan_import(desc, "cfg", mode="overwrite", allow_lossy=False)
    target.validate_records(plan, batches)
    (dest / "sub").rmdir()
    (dest / "sub").symlink_to(outside)  # the race: a folder becomes a symlink between the checks and the write
    with pytest.raises(UnsupportedFeatureError, match="symlink"):
        target.import_(plan, batches)
    # Below the checks, every folder is opened with O_NOFOLLOW: the write itself would refuse it too.
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(UnsupportedFeatureError, match=r"'sub' in .* is a symlink or a file"):
            SafeFolder(dest).write(root_fd, "sub/x.txt", b"x", 0o644, "overwrite", link=None)
    finally:
        os.close(root_fd)
    assert list(outside.iterdir()) == []
