"""connectors/files/lines.py: what a PATH names, and reading lines exactly as they are in plain, gzip and zstd files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import zstandard

from aibackup.connectors.files import lines
from aibackup.errors import DatasetNotFoundError, SourceDataError, UnavailableError
from tests.logdata import sha, write

CONTENT = "first ✓\r\nsecond 🎉\n\n".encode() + b"x" * 1_000_000 + b"\nlast without newline"


def read_all(f: lines.SourceFile, start: int = 0, first: int = 1) -> list[tuple[int, int, bytes]]:
    return list(lines.iter_lines(f, start, first))


def test_folder_walk_is_recursive_sorted_and_takes_only_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    for name in [
        "b.jsonl",
        "a.jsonl.gz",
        "sub/c.jsonl.zst",
        "sub/deeper/d.jsonl",
        "notes.json",
        "x.txt",
        "e.jsonl.bak",
    ]:
        write(root / name, b"{}\n")
    (root / "folder.jsonl").mkdir()  # a folder with the suffix is no file
    os.symlink(root / "sub", root / "zlink")  # symlinked folders are not followed
    os.symlink(root / "b.jsonl", root / "linked.jsonl")  # symlinked files are
    files = lines.expand(str(root))
    assert [f.name for f in files] == [
        "a.jsonl.gz",
        "b.jsonl",
        "linked.jsonl",
        "sub/c.jsonl.zst",
        "sub/deeper/d.jsonl",
    ]
    assert all(os.path.isabs(f.path) for f in files)
    assert [f.compression for f in files] == ["gzip", None, None, "zstd", None]
    assert lines.dataset_name(str(root)) == "logs"


def test_file_glob_and_names(tmp_path: Path) -> None:
    write(tmp_path / "app.jsonl.gz", b"{}\n")
    write(tmp_path / "logs" / "2026" / "11" / "day1.log", b"{}\n")
    write(tmp_path / "logs" / "2026" / "12" / "day2.log", b"{}\n")
    write(tmp_path / "logs" / "other.jsonl", b"{}\n")
    [single] = lines.expand(str(tmp_path / "app.jsonl.gz"))
    assert single.name == "app.jsonl.gz"
    assert lines.dataset_name(str(tmp_path / "app.jsonl.gz")) == "app"
    pattern = str(tmp_path / "logs" / "2026" / "**" / "*.log")
    assert [f.name for f in lines.expand(pattern)] == ["11/day1.log", "12/day2.log"]
    assert lines.dataset_name(pattern) == "2026"
    assert lines.dataset_name(str(tmp_path / "logs" / "*.jsonl")) == "logs"
    # An empty folder is an empty dataset; a glob matching nothing and a missing path are errors.
    (tmp_path / "empty").mkdir()
    assert lines.expand(str(tmp_path / "empty")) == []
    with pytest.raises(DatasetNotFoundError, match="no file matches"):
        lines.expand(str(tmp_path / "logs" / "*.nothing"))
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        lines.expand(str(tmp_path / "missing"))


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_lines_are_exact_with_offsets_and_resume(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    write(path, CONTENT[:30])
    write(path, CONTENT[30:], append=True)  # a second gzip member / zstd frame
    [f] = lines.expand(str(path))
    got = read_all(f)
    assert b"".join(raw for _, _, raw in got) == CONTENT
    assert [raw for _, _, raw in got][:3] == ["first ✓\r\n".encode(), "second 🎉\n".encode(), b"\n"]
    assert got[3][2] == b"x" * 1_000_000 + b"\n"  # a 1 MB line, whole
    assert got[-1][2] == b"last without newline"
    assert [n for _, n, _ in got] == list(range(1, len(got) + 1))
    assert all(CONTENT[off : off + len(raw)] == raw for off, _, raw in got)
    # Resume after the third line: the same lines and offsets as a full read.
    start = got[3][0]
    assert read_all(f, start, 4) == got[3:]
    assert lines.count_lines(f) == (len(CONTENT), 5)
    digest, more = lines.hash_prefix(f, start)
    assert digest is not None and digest.hexdigest() == sha(CONTENT[:start]) and more
    assert lines.hash_prefix(f, len(CONTENT))[1] is False
    assert lines.hash_prefix(f, len(CONTENT) + 1) == (None, False)


def test_empty_files(tmp_path: Path) -> None:
    for name in ["e.jsonl", "e.jsonl.gz", "e.jsonl.zst"]:
        write(tmp_path / name, b"")
    for f in lines.expand(str(tmp_path)):
        assert read_all(f) == []
        assert lines.count_lines(f) == (0, 0)


def test_damaged_compressed_files_are_named(tmp_path: Path) -> None:
    good = zstandard.ZstdCompressor().compress(b'{"a": 1}\n' * 1000)
    (tmp_path / "cut.jsonl.zst").write_bytes(good[:-8])
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-12])
    (tmp_path / "junk.jsonl.gz").write_bytes(b"not gzip at all")
    (tmp_path / "junk.jsonl.zst").write_bytes(b"not zstd at all")
    for f in lines.expand(str(tmp_path)):
        with pytest.raises(SourceDataError, match=rf"{f.name}: damaged"):
            read_all(f)


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    path = tmp_path / "secret.jsonl"
    path.write_bytes(b"{}\n")
    path.chmod(0)
    [f] = lines.expand(str(path))
    with pytest.raises(UnavailableError, match="permission denied"):
        read_all(f)


def test_start_past_the_end_is_refused(tmp_path: Path) -> None:
    for name in ["s.jsonl", "s.jsonl.gz"]:
        write(tmp_path / name, b"{}\n")
    for f in lines.expand(str(tmp_path)):
        with pytest.raises(SourceDataError, match="shrank"):
            read_all(f, 100)
