"""Model files whose content is odd but legal to hold: a backup keeps them as they are and never crashes, the
structure check follows the safetensors library (what it refuses is recorded invalid at backup, so that a
byte-identical restore's ``--load-check`` passes), and the chunk store's reports say where the bytes were.

Each safetensors header here is written by hand (the library would not write it) and judged by the library
itself in the same test: the reference decides what is valid."""

from __future__ import annotations

import itertools
import json
import os
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from aibackup.connectors.model import formats
from aibackup.connectors.model.formatinfo import FormatInfo
from tests.helpers import Cli, manifest_json, ok, one_line_error

REPO = "aibackup-repo"
#: One tensor of four U8 bytes, for headers that differ elsewhere.
U8 = '"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}'


def write_safetensors(path: Path, header: str, data: bytes = b"") -> Path:
    """A safetensors file with this header text (JSON escapes as written), padded as the library pads."""
    raw = header.encode("ascii")
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def library_opens(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="numpy") as reader:
            list(reader.keys())
    except Exception:  # SafetensorError, or a plain error for a header it cannot deserialize
        return False
    return True


def inspected(path: Path) -> FormatInfo:
    data = path.read_bytes()
    return formats.inspect(path.name, len(data), lambda n: data[:n])


def recorded(bundle_files: list[dict[str, Any]], path: str) -> dict[str, Any]:
    (entry,) = [f for f in bundle_files if f["path"] == path]
    return entry


def manifest_files() -> list[dict[str, Any]]:
    (dataset,) = manifest_json(REPO)["datasets"]
    files: list[dict[str, Any]] = dataset["config"]["files"]
    return files


# --- what the safetensors library refuses is invalid at backup --------------------------------------------------

HEADERS = {
    # Lone surrogate escapes (serde_json refuses them wherever they are, even in a field it ignores).
    "metadata-value": ('{"__metadata__":{"k":"\\ud800"},' + U8 + "}", b"abcd"),
    "metadata-key": ('{"__metadata__":{"\\udfff":"v"},' + U8 + "}", b"abcd"),
    "tensor-name": ('{"\\udc80":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', b"abcd"),
    "ignored-field": ('{"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"x":"\\ud800"}}', b"abcd"),
    "replaced-duplicate": ('{"__metadata__":{"k":"\\ud800"},"__metadata__":{"k":"v"},' + U8 + "}", b"abcd"),
    # usize: a shape value or offset of 2**64 is a float to serde_json.
    "shape-2**64": ('{"t":{"dtype":"U8","shape":[0,18446744073709551616],"data_offsets":[0,0]}}', b""),
    "offset-2**64": (
        '{"t":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551616,18446744073709551616]}}',
        b"",
    ),
    # The element count is folded with checked_mul, dimension by dimension: it overflows before the 0.
    "elements-overflow": ('{"t":{"dtype":"U8","shape":[1099511627776,1099511627776,0],"data_offsets":[0,0]}}', b""),
    # ... and so does the bit count.
    "bits-overflow": ('{"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}', b""),
}
FINE = {
    "surrogate-pair": ('{"__metadata__":{"k":"\\ud83d\\ude00"},' + U8 + "}", b"abcd"),
    "shape-2**64-1": ('{"t":{"dtype":"U8","shape":[18446744073709551615,0],"data_offsets":[0,0]}}', b""),
    "elements-to-0": ('{"t":{"dtype":"F32","shape":[4611686018427387904,0],"data_offsets":[0,0]}}', b""),
}


@pytest.mark.parametrize("case", [*HEADERS, *FINE])
def test_a_safetensors_header_is_valid_exactly_when_the_safetensors_library_opens_it(tmp_path: Path, case: str) -> None:
    header, data = {**HEADERS, **FINE}[case]
    path = write_safetensors(tmp_path / "model.safetensors", header, data)
    opens = library_opens(path)
    assert opens is (case in FINE)  # the library's own verdict: the cases say what they claim
    info = inspected(path)
    assert info.valid is opens, (info.problem, info.summary)
    json.dumps(info.summary, ensure_ascii=False).encode("utf-8")  # the summary is text, whatever the header held


@pytest.mark.parametrize("case", ["metadata-value", "tensor-name", "shape-2**64"])
def test_a_header_the_library_refuses_is_backed_up_invalid_and_its_load_checked_restore_passes(
    tmp_path: Path, cli: Cli, case: str
) -> None:
    header, data = HEADERS[case]
    source = tmp_path / "llm"
    write_safetensors(source / "model.safetensors", header, data)
    (source / "config.json").write_text('{"name": "\\ud800"}')  # a lone surrogate in a plain JSON file: kept
    ok(cli("backup", f"model:{source}"))
    entry = recorded(manifest_files(), "model.safetensors")
    assert entry["format"]["valid"] is False and entry["format"]["problem"]
    if case == "metadata-value":
        assert "lone UTF-16 surrogate" in entry["format"]["problem"]
        assert entry["format"]["summary"]["metadata"] == {"k": "\\ud800"}  # the escape's six characters

    out = tmp_path / "restored"
    restored = ok(cli("restore", "--to", f"model:{out}", "--load-check", "--json")).json()
    assert (out / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    (dataset,) = restored["datasets"]
    found = {c["name"]: c for c in dataset["checks"]}
    assert found["structure"]["ok"] and "1 invalid as at backup" in found["structure"]["detail"]
    assert found["load"]["ok"], found["load"]


def test_lone_surrogates_in_an_adapter_config_and_a_shard_index_are_kept_and_summarised_as_text(
    tmp_path: Path, cli: Cli
) -> None:
    source = tmp_path / "adapter"
    source.mkdir()
    (source / "adapter_config.json").write_text(
        '{"peft_type": "LORA", "base_model_name_or_path": "\\ud800", "target_modules": ["q", "\\udfff"]}'
    )
    (source / "model.safetensors.index.json").write_text(
        '{"metadata": {"total_size": 4}, "weight_map": {"a": "\\udfff.safetensors", "\\ud800": "b.safetensors"}}'
    )
    ok(cli("backup", f"model:{source}"))
    files = manifest_files()
    config = recorded(files, "adapter_config.json")["format"]
    assert config["summary"]["base_model_name_or_path"] == "\\ud800"
    assert config["summary"]["target_modules"] == ["\\udfff", "q"]
    index = recorded(files, "model.safetensors.index.json")["format"]
    assert index["valid"] is True and index["summary"]["shards"] == ["\\udfff.safetensors", "b.safetensors"]

    out = tmp_path / "restored"
    ok(cli("restore", "--to", f"model:{out}"))
    for name in ("adapter_config.json", "model.safetensors.index.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes()


@pytest.mark.parametrize("lossy", [False, True])
def test_a_symlink_whose_target_is_not_utf8_is_refused_in_one_line(tmp_path: Path, cli: Cli, lossy: bool) -> None:
    source = tmp_path / "llm"
    source.mkdir()
    (source / "real").write_text("x")
    os.symlink(b"real\xff", bytes(source / "link"))
    # As a name that is not UTF-8: no record can hold it, and --allow-lossy does not skip it either.
    args = ("backup", f"model:{source}", *(["--allow-lossy"] if lossy else []))
    one_line_error(cli(*args), 2, "llm/link", "not UTF-8")
    assert not any(p.is_file() for p in Path(REPO).rglob("*"))  # nothing committed, no pack left


# --- the chunk store's reports and the restore target ------------------------------------------------------------


def test_verify_of_a_missing_pack_names_each_chunks_real_byte_range(tmp_path: Path, cli: Cli) -> None:
    source = tmp_path / "llm"
    source.mkdir()
    (source / "a.bin").write_bytes(random.Random(7).randbytes(5 << 20))  # over the 4 MiB most a chunk holds
    ok(cli("backup", f"model:{source}"))
    (pack,) = Path(REPO).glob("data/*/packs/*.parquet")
    pack.unlink()
    failed = cli("verify", "--json")
    assert failed.code == 1, failed
    ranges = []
    for problem in failed.json()["problems"]:
        assert "missing chunk pack" in problem["problem"], problem
        start, end = problem["problem"].rsplit("(a.bin bytes ", 1)[1].rstrip(")").split("-")
        ranges.append((int(start), int(end)))
    assert len(ranges) > 1 and ranges[0][0] == 0 and ranges[-1][1] == 5 << 20
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(ranges)), ranges


def test_a_restore_target_below_a_file_is_bad_input(tmp_path: Path, cli: Cli) -> None:
    source = tmp_path / "llm"
    source.mkdir()
    (source / "a.txt").write_text("x")
    ok(cli("backup", f"model:{source}"))
    afile = tmp_path / "afile"
    afile.write_text("in the way")
    one_line_error(cli("restore", "--to", f"model:{afile / 'sub' / 'deeper'}"), 2, "is not a folder", str(afile))
    assert afile.read_text() == "in the way"
