"""Odd values that once ended in "internal error" (exit 70) or gave a wrong result: a passphrase in the
environment that is not UTF-8, a job config or model JSON with a number over Python's digit limit or nested
too deep, a golden queries file nested too deep, ``keep_within`` longer than the calendar, ``--at`` before
the year 1000, and duration flags whose errors did not name them."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from aibackup.connectors.model.formats import inspect
from tests.helpers import Cli, ok, one_line_error, seed_chroma

LINE = '{"user_id": "u", "input": "hi", "output": "hello"}\n'
BIG = "1" * 5000  # over Python's 4300-digit limit for int(str)


def _logs(folder: Path) -> Path:
    folder.mkdir()
    (folder / "a.jsonl").write_text(LINE)
    return folder


def test_a_passphrase_in_the_environment_that_is_not_utf8_works_as_in_a_key_file(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python holds the variable's \\xff as a lone surrogate; its bytes are the key, as a key file's are."""
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)
    (tmp_path / "k").write_bytes(b"pass\xffphrase-long")
    (tmp_path / "k2").write_bytes(b"other\xffphrase-long")
    monkeypatch.setenv("AIBACKUP_KEY", "pass\udcffphrase-long")
    ok(cli("init", "--encrypt", "--repo", "r"))
    monkeypatch.delenv("AIBACKUP_KEY")
    ok(cli("key", "list", "--repo", "r", "--key-file", "k"))
    monkeypatch.setenv("AIBACKUP_NEW_KEY", "other\udcffphrase-long")
    ok(cli("key", "add", "--repo", "r", "--key-file", "k"))
    ok(cli("key", "list", "--repo", "r", "--key-file", "k2"))


@pytest.mark.parametrize(
    ("name", "text"),
    [("deep.yaml", "a: " + "[" * 1000 + "]" * 1000), ("big.yaml", f"lr: {BIG}"), ("job", f"lr: {BIG}")],
)
def test_a_job_config_yaml_too_deep_or_with_a_huge_number_is_a_config_error(
    tmp_path: Path, cli: Cli, name: str, text: str
) -> None:
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (tmp_path / name).write_text(text + "\n")
    result = cli("backup", "finetune:./ft", "--job-config", name, "--repo", "r")
    one_line_error(result, 2, f"job config {name} is neither valid YAML nor JSON")


def test_model_json_with_a_huge_number_is_backed_up_and_recorded_invalid(tmp_path: Path, cli: Cli) -> None:
    """formats.inspect never raises for content: a number json cannot hold is a format problem."""
    config = f'{{"vocab_size": {BIG}}}'.encode()
    header = f'{{"w": {{"dtype": "F32", "shape": [{BIG}], "data_offsets": [0, 4]}}}}'.encode()
    weights = struct.pack("<Q", len(header)) + header + b"\0\0\0\0"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_bytes(config)
    (tmp_path / "m" / "model.safetensors").write_bytes(weights)
    ok(cli("backup", "model:./m", "--repo", "r"))
    for name, data, problem in (
        ("config.json", config, "not JSON: a number too long"),
        ("model.safetensors", weights, "header is not JSON: a number too long"),
    ):
        info = inspect(name, len(data), lambda n, data=data: data[:n])  # type: ignore[misc]
        assert info.valid is False and info.problem == problem, info


def test_golden_queries_nested_too_deep_are_a_note_not_a_crash(tmp_path: Path, cli: Cli) -> None:
    """An unreadable golden file is a note on the bundle (backup.py: _golden), the backup goes on."""
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    (tmp_path / "golden.json").write_text("[" * 100000 + "]" * 100000)
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./r\nsources:\n  kb: {uri: 'chroma:./chroma', golden_queries: ./golden.json}\n"
    )
    notes = ok(cli("backup", "--json")).json()
    assert "nested too deeply" in str(notes), notes


def test_keep_within_longer_than_the_calendar_keeps_everything(tmp_path: Path, cli: Cli) -> None:
    _logs(tmp_path / "logs")
    ok(cli("backup", "conversations:./logs", "--repo", "r"))
    pruned = ok(cli("prune", "--keep-within", "99999999d", "--repo", "r", "--dry-run", "--json")).json()
    assert pruned["removed"] == [] and len(pruned["kept"]) == 1, pruned
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./r\nsources:\n  logs: {uri: 'conversations:./logs'}\nretention: {keep_within: 1000000d}\n"
    )
    ok(cli("prune"))
    assert len(ok(cli("list", "--json")).json()) == 1


def test_at_before_the_year_1000_selects_no_bundle(tmp_path: Path, cli: Cli) -> None:
    """Once compared as text with a %Y that glibc does not zero-pad: '9990101T…' sorted after every id."""
    _logs(tmp_path / "logs")
    ok(cli("backup", "conversations:./logs", "--repo", "r"))
    for at in ("0001-01-01", "0100-01-01", "0999-01-01", "0999-12-31T23:59:59+00:00"):
        one_line_error(
            cli("restore", "latest", "--at", at, "--to", "conversations:./out", "--repo", "r"), 2, "or earlier"
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--keep-within", "7x"), '--keep-within: "7x" is not a duration'),
        (("--keep-within", "0"), "--keep-within: a duration must be longer than 0"),
        (("--keep-last", "1", "--grace", "-1h"), '--grace: "-1h" is not a duration'),
    ],
)
def test_prune_duration_errors_name_the_flag(tmp_path: Path, cli: Cli, args: tuple[str, ...], needle: str) -> None:
    _logs(tmp_path / "logs")
    ok(cli("backup", "conversations:./logs", "--repo", "r"))
    one_line_error(cli("prune", *args, "--dry-run", "--repo", "r"), 2, needle)


def test_vectors_holding_nan_or_infinity_are_backed_up_with_a_note(tmp_path: Path, cli: Cli) -> None:
    """A store that holds them is backed up as it is, but no store takes them back: the backup says so at
    once (it said nothing, and the restore was refused on the night it was needed)."""
    import lance
    import pyarrow as pa

    vectors = pa.array([[float("nan"), 0.25], [1.0, 2.0], [float("inf"), 1.0]], pa.list_(pa.float32(), 2))
    lance.write_dataset(pa.table({"id": ["a", "b", "c"], "vector": vectors}), str(tmp_path / "db" / "odd.lance"))
    lance.write_dataset(
        pa.table({"id": ["d"], "vector": pa.array([[1.0, 1.0]], pa.list_(pa.float32(), 2))}),
        str(tmp_path / "db" / "fine.lance"),
    )
    done = ok(cli("backup", "lancedb:./db", "--repo", "r", "--queries", "0", "--json")).json()
    assert [n for n in done["notes"] if "NaN or Infinity" in n] == [
        "odd: 2 record(s) hold NaN or Infinity in 'vector': backed up as they are, but no vector store takes "
        "such a vector back, so a restore of this collection is refused"
    ], done["notes"]
    one_line_error(cli("restore", "latest", "--repo", "r", "--to", "lancedb:./o", "--collection", "odd"), 2)
    ok(cli("restore", "latest", "--repo", "r", "--to", "lancedb:./o", "--collection", "fine"))


@pytest.mark.parametrize("kind", ["conversations", "finetune"])
def test_file_names_up_to_the_longest_a_folder_takes_are_restored(tmp_path: Path, cli: Cli, kind: str) -> None:
    """A log or fine-tuning file named with 233 to 255 bytes backed up fine, and its restore stopped with an
    internal error (exit 70): the temporary file beside it, ``.NAME.<random>.aibackup-tmp``, was longer than
    a file name may be."""
    source = tmp_path / "src"
    source.mkdir()
    names = ["L" * 249 + ".jsonl", "é" * 121 + "x.jsonl", "short.jsonl"]  # 255 bytes, 249 bytes, short
    for name in names:
        (source / name).write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    ok(cli("backup", f"{kind}:./src", "--repo", "r"))
    ok(cli("restore", "latest", "--repo", "r", "--to", f"{kind}:./back"))
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == sorted(names)
    assert all((tmp_path / "back" / n).read_bytes() == (source / n).read_bytes() for n in names)


@pytest.mark.parametrize("kind", ["conversations", "finetune"])
def test_files_a_log_or_fine_tuning_folder_leaves_out_are_named(tmp_path: Path, cli: Cli, kind: str) -> None:
    """Only JSONL files are backed up from these folders: a CSV training set, a pipe or a broken link named
    ``*.jsonl`` were left out without a word, and the restore lacked them."""
    import os

    source = tmp_path / "src"
    source.mkdir()
    (source / "a.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (source / "data.csv").write_text("prompt,completion\n")
    os.mkfifo(source / "p.jsonl")
    (source / "d.jsonl").symlink_to("nowhere")
    notes = ok(cli("backup", f"{kind}:./src", "--repo", "r", "--json")).json()["notes"]
    assert "src: 1 file(s) of the folder left out, not JSONL (*.jsonl, *.jsonl.gz, *.jsonl.zst): 'data.csv'" in notes
    assert (
        "src: 2 JSONL name(s) left out, not regular files (a pipe, a socket, a broken link): 'd.jsonl', 'p.jsonl'"
        in notes
    ), notes
