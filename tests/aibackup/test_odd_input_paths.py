"""Odd paths and locations that once ended in "internal error" (exit 70) or gave a wrong result: a symlink
loop as a source, target or repository; a server URI with an unclosed IPv6 ``[``; a source folder whose own
name is not UTF-8; a SQLite or Milvus Lite target below a file; a ``**`` glob over a symlink back up; an
empty ``--repo`` or ``file://``; ``--config`` naming a device; report and metrics files that cannot be
written. (Found by probing the CLI; see tests/aibackup/test_odd_input.py for the earlier ones.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import Cli, ok, one_line_error, seed_chroma

LINE = '{"user_id": "u", "input": "hi", "output": "hello"}\n'


def _logs(folder: Path) -> Path:
    folder.mkdir()
    (folder / "a.jsonl").write_text(LINE)
    return folder


def test_a_symlink_loop_as_a_source_target_or_repository_is_a_usage_error(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "loop").symlink_to("loop")
    for source in ("conversations:./loop", "config:./loop", "chroma:./loop", "model:./loop/x"):
        one_line_error(cli("backup", source, "--repo", "r"), 2, f"bad store {source!r}", "symlink loop")
    one_line_error(cli("list", "--repo", "./loop"), 2, "bad repository './loop'", "symlink loop")
    _logs(tmp_path / "logs")
    ok(cli("backup", "conversations:./logs", "--repo", "r"))
    for target in ("conversations:./loop", "conversations+sqlite:./loop?table=t"):
        one_line_error(cli("restore", "latest", "--to", target, "--repo", "r"), 2, "symlink loop")


@pytest.mark.parametrize(
    "uri", ["qdrant+http://[::1", "chroma+http://[::1:8000", "pgvector://[::1/db", "milvus+https://[fe80::1"]
)
def test_an_unclosed_ipv6_host_in_a_store_uri_is_a_usage_error_naming_it(tmp_path: Path, cli: Cli, uri: str) -> None:
    one_line_error(cli("backup", uri, "--repo", "r"), 2, f"bad store {uri!r}", "not a URL", "IPv6")
    assert not (tmp_path / "r").exists()
    _logs(tmp_path / "logs")
    ok(cli("backup", "conversations:./logs", "--repo", "r"))
    one_line_error(cli("restore", "latest", "--to", uri, "--repo", "r"), 2, f"bad store {uri!r}", "not a URL")


def test_an_unclosed_ipv6_host_in_the_config_names_the_config_line(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "aibackup.yaml").write_text("repository: ./r\nsources:\n  kb: {uri: 'qdrant+http://[::1:6333'}\n")
    one_line_error(cli("status"), 2, "aibackup.yaml:3", "not a URL")


def test_a_source_folder_whose_own_name_is_not_utf8_is_refused_like_a_name_below_it(tmp_path: Path, cli: Cli) -> None:
    logs = _logs(tmp_path / "logs\udcff")
    (tmp_path / "cfg\udcff").mkdir()
    (tmp_path / "cfg\udcff" / "app.yaml").write_text("a: 1\n")
    for source in (f"conversations:./{logs.name}", "config:./cfg\udcff"):
        for extra in ((), ("--json",)):
            result = cli("backup", source, "--repo", "r", *extra)
            one_line_error(result, 2, "a name that is not UTF-8 cannot be backed up")
    assert not (tmp_path / "r").exists()


def test_a_sqlite_or_milvus_lite_target_below_a_file_is_one_line(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "afile").write_text("not a folder")
    _logs(tmp_path / "logs")
    ok(cli("backup", "conversations:./logs", "--repo", "r"))
    target = "conversations+sqlite:./afile/x.db?table=t"
    for extra in ((), ("--json",)):
        result = cli("restore", "latest", "--to", target, "--repo", "r", *extra)
        one_line_error(result, 2, "cannot create the folder afile of afile/x.db")
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    ok(cli("backup", "chroma:./chroma", "--repo", "v"))
    one_line_error(
        cli("restore", "latest", "--to", "milvus:./afile/m.db", "--repo", "v"),
        2,
        "cannot create the Milvus Lite folder",
        "Not a directory",
    )


def test_a_double_star_glob_does_not_follow_a_symlinked_folder(tmp_path: Path, cli: Cli) -> None:
    """As a folder source does not: a link back up once backed up every file ~40 times (until ELOOP)."""
    logs = _logs(tmp_path / "logs")
    (logs / "again").symlink_to(".")
    (logs / "sub").mkdir()
    (logs / "sub" / "b.jsonl").write_text(LINE)
    done = ok(cli("backup", "conversations:./logs/**/*.jsonl", "--repo", "r", "--json")).json()
    assert done["datasets"][0]["rows"] == 2, done  # a.jsonl and sub/b.jsonl, each once


def test_an_empty_repo_option_is_refused_not_taken_as_none(tmp_path: Path, cli: Cli) -> None:
    """``--repo "$REPO"`` with REPO unset must not back up into ./aibackup-repo (or the config's repository)."""
    _logs(tmp_path / "logs")
    for args in (("backup", "conversations:./logs"), ("list",), ("restore", "latest", "--to", "conversations:o")):
        one_line_error(cli(*args, "--repo", ""), 2, "--repo is empty")
    assert not (tmp_path / "aibackup-repo").exists() and not (tmp_path / "o").exists()


def test_a_file_url_without_a_path_is_refused_not_taken_as_the_current_folder(tmp_path: Path, cli: Cli) -> None:
    """``--repo "file://$DIR"`` with DIR unset must not make the current folder a repository."""
    _logs(tmp_path / "logs")
    for url in ("file://", "local://", "file:// "):
        one_line_error(cli("init", "--repo", url), 2, f"bad repository {url!r}", "///PATH")
        one_line_error(cli("backup", "conversations:./logs", "--repo", url), 2, f"bad repository {url!r}")
    assert not (tmp_path / "aibackup.json").exists()
    ok(cli("backup", "conversations:./logs", "--repo", f"file://{tmp_path / 'r'}"))
    assert (tmp_path / "r" / "aibackup.json").exists()


def test_a_config_that_is_not_a_regular_file_says_so(cli: Cli) -> None:
    one_line_error(cli("list", "--config", "/dev/null"), 2, "/dev/null is not a regular file", "(from --config)")


def _configured_logs(tmp_path: Path, extra: str = "") -> None:
    _logs(tmp_path / "logs")
    (tmp_path / "aibackup.yaml").write_text(
        f"repository: ./r\nsources:\n  logs: {{uri: 'conversations:./logs'{extra}}}\n"
    )


@pytest.mark.parametrize(("rto", "code"), [("", 3), (", rto: 0.001s", 1)])
def test_an_unwritable_drill_report_comes_after_the_drill_result_and_keeps_a_failure_exit(
    tmp_path: Path, cli: Cli, rto: str, code: int
) -> None:
    """As for --metrics-file: the drill ran and was recorded, so its result is shown; then the report's
    error line; exit 1 when the drill failed (the worse news), else 3."""
    _configured_logs(tmp_path, rto)
    ok(cli("backup"))
    (tmp_path / "afile").write_text("not a folder")
    text = cli("restore-test", "--report", "afile/sub/report")
    one_line_error(text, code, "cannot write the report afile/sub/report")
    assert "logs" in text.out and ("FAILED" in text.out) == (code == 1), text.out
    as_json = cli("restore-test", "--report", "afile/sub/report", "--json")
    one_line_error(as_json, code, "cannot write the report")
    assert as_json.json()["ok"] is (code == 3), as_json.out
    assert json.loads(as_json.err)["error"]["exit_code"] == 3


def test_a_metrics_file_that_is_a_folder_leaves_no_temporary_file(tmp_path: Path, cli: Cli) -> None:
    _configured_logs(tmp_path)
    ok(cli("backup"))
    (tmp_path / "m.prom").mkdir()
    one_line_error(cli("status", "--metrics-file", "m.prom"), 3, "cannot write the metrics file m.prom")
    assert not list(tmp_path.glob(".m.prom.*"))


def test_two_collections_into_one_destination_are_named(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=5)
    ok(cli("backup", "chroma:./chroma", "--repo", "r", "--queries", "0"))
    restore = ("restore", "latest", "--repo", "r", "--to", "chroma:./back")
    one_line_error(cli(*restore, "--collection", "docs=faq", "--collection", "faq"), 2, "'docs' and 'faq'", "'faq'")
    one_line_error(cli(*restore, "--collection", "docs", "--collection", "docs"), 2, "'docs' twice")
    assert not (tmp_path / "back").exists()


def test_a_restore_target_inside_the_repository_is_refused(tmp_path: Path, cli: Cli) -> None:
    """`--to chroma:./repo` wrote a Chroma store among the bundles' files and said all checks passed."""
    seed_chroma(tmp_path / "chroma", "docs", n=5)
    ok(cli("backup", "chroma:./chroma", "--repo", "r", "--queries", "0"))
    before = sorted(p for p in (tmp_path / "r").rglob("*"))
    for target in ("chroma:./r", "qdrant:./r/store", f"chroma:{tmp_path / 'r' / 'data'}"):
        one_line_error(cli("restore", "latest", "--repo", "r", "--to", target), 2, "inside the repository")
    assert sorted(p for p in (tmp_path / "r").rglob("*")) == before
    ok(cli("restore", "latest", "--repo", "r", "--to", "chroma:./rr"))  # a sibling named alike is fine


# Rewrites the first and last 8 bytes of a file, as fast as it can, until it is killed.
REWRITING = """
import os, sys
path = sys.argv[1]
size, n = os.path.getsize(path), 0
with open(path, "r+b") as f:
    print("ready", flush=True)
    while True:
        n += 1
        f.seek(0); f.write(n.to_bytes(8, "big")); f.seek(size - 8); f.write(n.to_bytes(8, "big")); f.flush()
"""


@pytest.mark.parametrize("kind", ["config", "finetune"])
def test_a_file_written_while_it_is_backed_up_is_refused_not_stored_torn(tmp_path: Path, cli: Cli, kind: str) -> None:
    """A config or fine-tuning file rewritten during the backup was stored half old, half new, and restored
    "exactly" (a model source refused it already): refused now, as the model source does (exit 2)."""
    import subprocess
    import sys

    source = tmp_path / "src"
    source.mkdir()
    big = source / ("big.dat" if kind == "config" else "train.jsonl")
    line = b'{"prompt": "' + b"x" * 80 + b'", "completion": "y"}\n'
    big.write_bytes(line * 200_000)  # ~20 MB: its read spans many of the writer's rewrites
    writer = subprocess.Popen([sys.executable, "-c", REWRITING, str(big)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        result = cli("backup", f"{kind}:{source}", "--repo", "r", "--queries", "0")
    finally:
        writer.kill()
        writer.wait()
    one_line_error(result, 2, big.name, "changed while it was being backed up")
    assert not list((tmp_path / "r" / "bundles").glob("*.json"))
    ok(cli("backup", f"{kind}:{source}", "--repo", "r", "--queries", "0"))  # left alone: it backs up


def test_a_config_symlink_leading_out_of_the_folder_is_noted_at_backup(tmp_path: Path, cli: Cli) -> None:
    """Kept as it is, but refused by a restore (and so by the monthly drill): the backup says so at once."""
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.yaml").write_text("a: 1\n")
    (folder / "host").symlink_to("/etc/hostname")
    (folder / "sub" / "up").symlink_to("../../elsewhere")
    (folder / "sub" / "in").symlink_to("../a.yaml")  # stays inside: not noted
    done = ok(cli("backup", "config:./d", "--repo", "r", "--json")).json()
    (note,) = [n for n in done["notes"] if "lead out of the folder" in n]
    assert note.startswith("d: 2 symlink(s) lead out") and "host -> /etc/hostname" in note and "up ->" in note, note
    assert "in ->" not in note
    one_line_error(cli("restore", "latest", "--repo", "r", "--to", "config:./back"), 2, "host")


@pytest.mark.parametrize("kind", ["conversations", "finetune"])
def test_a_folder_target_below_a_file_is_refused_naming_it(tmp_path: Path, cli: Cli, kind: str) -> None:
    """A log or fine-tuning restore into ``./afile/sub`` ended with exit 3 and "which may now hold part of
    the bundle (run it again with --mode overwrite)": nothing was written, and no mode could help. Refused as
    the model target refuses it (exit 2, naming the file)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    ok(cli("backup", f"{kind}:./src", "--repo", "r"))
    (tmp_path / "afile").write_text("a file")
    line = one_line_error(cli("restore", "latest", "--repo", "r", "--to", f"{kind}:./afile/sub"), 2, "afile")
    assert "is not a folder" in line and "--mode overwrite" not in line


@pytest.mark.parametrize("kind", ["conversations", "finetune"])
def test_a_restore_into_the_source_folder_replaces_its_compressed_files(tmp_path: Path, cli: Cli, kind: str) -> None:
    """A compressed file comes back decompressed: restored over the source's own folder, ``b.jsonl`` was
    written beside ``b.jsonl.gz`` and the folder's next backup refused the two names (exit 2, every night).
    Create mode refuses the folder; overwrite replaces the compressed file by its decompressed form."""
    import gzip

    source = tmp_path / "src"
    source.mkdir()
    line = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    (source / "a.jsonl").write_bytes(line)
    (source / "b.jsonl.gz").write_bytes(gzip.compress(line * 3))
    ok(cli("backup", f"{kind}:./src", "--repo", "r"))
    one_line_error(cli("restore", "latest", "--repo", "r", "--to", f"{kind}:./src"), 2, "already exist")
    done = ok(cli("restore", "latest", "--repo", "r", "--to", f"{kind}:./src", "--mode", "overwrite", "--json"))
    notes = done.json()["datasets"][0]["notes"]
    assert "1 compressed file(s) in the folder replaced by their decompressed form (b.jsonl.gz by b.jsonl)" in notes
    assert sorted(p.name for p in source.iterdir()) == ["a.jsonl", "b.jsonl"]
    assert (source / "b.jsonl").read_bytes() == line * 3
    ok(cli("backup", f"{kind}:./src", "--repo", "r"))  # the folder backs up again
    # Into another folder nothing is replaced, and nothing is said.
    other = ok(cli("restore", "latest", "--repo", "r", "--to", f"{kind}:./elsewhere", "--json")).json()
    assert not any("replaced" in n for n in other["datasets"][0]["notes"])
