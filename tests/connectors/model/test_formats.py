"""Model file inspection against real files: safetensors written by the safetensors library, GGUF written by
gguf's GGUFWriter and read back by its GGUFReader as the reference, and damaged variants of both (cut, rewritten
headers, patched tables). Every file is tiny: the whole module runs in about a second."""

from __future__ import annotations

import json
import pickle
import random
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import safetensors
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from safetensors import TensorSpec, safe_open
from safetensors.numpy import save_file

from aibackup.connectors.model.formats import MAX_HEAD, FormatInfo, inspect, load_check, tensors_at
from aibackup.connectors.model.gguf_format import GGML_TYPES
from aibackup.errors import ConnectorNotInstalledError

# --- helpers --------------------------------------------------------------------------------------------------


def inspect_bytes(data: bytes, name: str, calls: list[int] | None = None) -> FormatInfo:
    """inspect() over `data` as the file `name`, recording every read_head size in `calls`."""

    def read_head(n: int) -> bytes:
        if calls is not None:
            calls.append(n)
        assert 0 <= n <= MAX_HEAD
        return data[:n]

    return inspect(name, len(data), read_head)


def inspect_file(path: Path, name: str | None = None) -> FormatInfo:
    return inspect_bytes(path.read_bytes(), name or path.name)


ARRAYS: dict[str, np.ndarray[Any, Any]] = {
    "embed.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "positions": np.arange(4, dtype=np.int64),
    "norm.weight": np.ones(3, dtype=np.float16),
    "mask": np.array([True, False]),
    "lm_head.weight": np.arange(10, dtype=np.uint8).reshape(5, 2),
}
METADATA = {"format": "np", "note": "tiny"}


@pytest.fixture()
def st_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file(ARRAYS, str(path), metadata=METADATA)
    return path


def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join_safetensors(header: dict[str, Any] | bytes, body: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


def rewritten(path: Path, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The file with its header JSON changed by `change` (the tensor bytes kept)."""
    header, body = split_safetensors(path.read_bytes())
    change(header)
    return join_safetensors(header, body)


def bf16_file(path: Path) -> Path:
    """BF16 and F8 tensors (numpy has neither dtype: written from raw bytes through TensorSpec)."""
    x = np.array([0x3F80, 0x4000, 0, 1], dtype=np.uint16)
    y = np.array([1, 2, 3], dtype=np.uint8)
    specs = {
        "x": TensorSpec(dtype="bfloat16", shape=[2, 2], data_ptr=x.ctypes.data, data_len=x.nbytes),
        "y": TensorSpec(dtype="float8_e4m3fn", shape=[3], data_ptr=y.ctypes.data, data_len=y.nbytes),
    }
    path.write_bytes(safetensors.serialize(specs, metadata=None))
    return path


def write_gguf(path: Path, *, alignment: int | None = None, endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE) -> Path:
    writer = GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_name("tiny")
    if alignment:
        writer.add_custom_alignment(alignment)
    writer.add_context_length(128)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "ü", ""])
    writer.add_array("tokenizer.ggml.scores", [0.1, 0.2, 0.3, 0.4])
    writer.add_tensor("token_embd.weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    writer.add_tensor("output_norm.weight", np.ones(5, dtype=np.float16))
    quantized = gguf.quants.quantize(
        np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64), GGMLQuantizationType.Q8_0
    )
    writer.add_tensor("output.weight", quantized, raw_shape=quantized.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture()
def gguf_file(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "tiny.gguf")


def table_entry_offset(path: Path, index: int) -> int:
    """Where the tensor table entry `index` starts, from the reference reader."""
    return int(GGUFReader(str(path)).tensors[index].field.offset)


def type_field_offset(path: Path, index: int) -> int:
    """Where entry `index`'s u32 ggml type sits: after the name (u64 length + bytes) and the dimensions."""
    tensor = GGUFReader(str(path)).tensors[index]
    return int(tensor.field.offset) + 8 + len(tensor.name.encode()) + 4 + 8 * len(tensor.shape)


def patched(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


# --- safetensors ----------------------------------------------------------------------------------------------


def test_safetensors_summary_tensors_and_cuts(st_file: Path) -> None:
    data = st_file.read_bytes()
    info = inspect_file(st_file)
    n = int.from_bytes(data[:8], "little")
    assert (info.format, info.valid, info.problem) == ("safetensors", True, None)
    assert info.summary == {
        "tensors": 5,
        "dtypes": {"BOOL": 1, "F16": 1, "F32": 1, "I64": 1, "U8": 1},
        "parameters": 6 + 4 + 3 + 2 + 10,
        "metadata": METADATA,
        "header_bytes": n,
    }
    # Absolute offsets: each tensor's bytes are exactly the array's bytes, and the tensors tile the data.
    for t in info.tensors:
        assert data[t.start : t.end] == ARRAYS[t.name].tobytes()
        assert t.shape == ARRAYS[t.name].shape
    assert [t.start for t in info.tensors] == sorted(t.start for t in info.tensors)
    assert info.tensors[0].start == 8 + n and info.tensors[-1].end == len(data)
    with safe_open(str(st_file), framework="numpy") as reader:
        names = reader.keys()
        assert {t.name: t.dtype for t in info.tensors} == {k: reader.get_slice(k).get_dtype() for k in names}
    expected_cuts = sorted({8 + n} | {t.start for t in info.tensors} | {t.end for t in info.tensors} - {len(data)})
    assert info.cuts() == expected_cuts


def test_safetensors_bf16_and_f8(tmp_path: Path) -> None:
    info = inspect_file(bf16_file(tmp_path / "b.safetensors"))
    assert info.valid is True
    assert info.summary["dtypes"] == {"BF16": 1, "F8_E4M3": 1}
    assert info.summary["metadata"] == {}
    assert [(t.name, t.shape, t.end - t.start) for t in info.tensors] == [("x", (2, 2), 8), ("y", (3,), 3)]
    assert load_check(tmp_path / "b.safetensors", info) == []


def test_safetensors_truncated_names_the_cut_tensor(st_file: Path) -> None:
    data = st_file.read_bytes()
    info = inspect_bytes(data[:-3], "model.safetensors")
    last = max(info.tensors, key=lambda t: t.end)
    assert info.valid is False
    assert info.problem == f"tensor {last.name!r} ends at {len(data)} but the file is {len(data) - 3} bytes"
    assert info.summary["tensors"] == 5 and info.cuts() == []


@pytest.mark.parametrize(
    ("header_length", "problem"),
    [(10**6, "header length 1000000 runs past the end of the file"), (10**8 + 1, "exceeds the format's limit")],
)
def test_safetensors_header_length(st_file: Path, header_length: int, problem: str) -> None:
    data = patched(st_file.read_bytes(), 0, header_length.to_bytes(8, "little"))
    info = inspect_bytes(data, "model.safetensors")
    assert info.valid is False and problem in (info.problem or "")
    assert info.summary == {"header_bytes": header_length}


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"{not json at all", "header is not JSON"),
        (b"[1, 2, 3]", "header is not a JSON object"),
        (b'{"a": "\xff\xfe"}', "header is not UTF-8 text"),
    ],
)
def test_safetensors_header_garbage(header: bytes, problem: str) -> None:
    info = inspect_bytes(join_safetensors(header, b""), "model.safetensors")
    assert info.valid is False and (info.problem or "").startswith(problem)


def test_safetensors_too_short() -> None:
    info = inspect_bytes(b"\x01\x02", "x.safetensors")
    assert info.valid is False and "shorter than the 8-byte header length" in (info.problem or "")


def _shift_begin(name: str, by: int) -> Callable[[dict[str, Any]], None]:
    def change(header: dict[str, Any]) -> None:
        header[name]["data_offsets"][0] += by

    return change


def test_safetensors_overlap_and_hole(st_file: Path) -> None:
    header, _ = split_safetensors(st_file.read_bytes())
    second = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")[1][1]
    overlap = inspect_bytes(rewritten(st_file, _shift_begin(second, -4)), "model.safetensors")
    assert overlap.valid is False
    assert (overlap.problem or "").startswith(f"tensor {second!r} starts at byte") and "inside tensor" in (
        overlap.problem or ""
    )
    hole = inspect_bytes(rewritten(st_file, _shift_begin(second, 4)), "model.safetensors")
    assert hole.valid is False and "belong to no tensor" in (hole.problem or "")


def test_safetensors_wrong_byte_size_for_shape(st_file: Path) -> None:
    def change(header: dict[str, Any]) -> None:
        header["embed.weight"]["shape"] = [3, 3]

    info = inspect_bytes(rewritten(st_file, change), "model.safetensors")
    assert info.valid is False
    assert info.problem == "tensor 'embed.weight' holds 24 bytes but shape [3, 3] of F32 needs 36"
    assert info.summary["parameters"] == 9 + 4 + 3 + 2 + 10  # what the header says, read anyway


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda h: h["mask"].update(dtype="Q9"), "tensor 'mask': unknown dtype 'Q9'"),
        (lambda h: h["mask"].update(shape=[-2]), "tensor 'mask': shape [-2] is not a list of non-negative integers"),
        (lambda h: h["mask"].update(data_offsets=[1]), "tensor 'mask': data_offsets [1] are not two"),
        (lambda h: h.update(__metadata__={"k": 1}), "__metadata__ value 'k' is not a string"),
        (lambda h: h["mask"].update(dtype="F6_E2M3"), "tensor 'mask': 2 elements of F6_E2M3 do not fill whole bytes"),
    ],
)
def test_safetensors_bad_entries(st_file: Path, change: Callable[[dict[str, Any]], None], problem: str) -> None:
    info = inspect_bytes(rewritten(st_file, change), "model.safetensors")
    assert info.valid is False and (info.problem or "").startswith(problem)


def test_safetensors_bytes_after_the_last_tensor(st_file: Path) -> None:
    info = inspect_bytes(st_file.read_bytes() + b"\0" * 4, "model.safetensors")
    assert info.valid is False and "4 bytes after the last tensor's end" in (info.problem or "")


def test_safetensors_long_metadata_is_cut_in_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    save_file({"a": np.zeros(1, np.float32)}, str(path), metadata={"ss_tag_frequency": "x" * 5000})
    value = inspect_file(path).summary["metadata"]["ss_tag_frequency"]
    assert value.startswith("x" * 1000) and value.endswith("… (5000 characters)") and len(value) < 1100


def test_safetensors_reads_exactly_the_header(tmp_path: Path) -> None:
    path = tmp_path / "many.safetensors"
    save_file({f"layer.{i}.weight": np.zeros(1, np.float32) for i in range(2000)}, str(path))
    calls: list[int] = []
    data = path.read_bytes()
    info = inspect_bytes(data, path.name, calls)
    n = int.from_bytes(data[:8], "little")
    assert info.valid is True and info.summary["tensors"] == 2000
    assert n > 64 << 10 and calls == [64 << 10, 8 + n]


def test_header_past_max_head_is_not_inspected() -> None:
    n = 70 << 20  # within the format's limit, past what inspect reads
    head = n.to_bytes(8, "little") + b'{"a":{}}'
    calls: list[int] = []
    size = 8 + n + 100

    def read_head(k: int) -> bytes:
        calls.append(k)
        return head[:k]

    info = inspect("big.safetensors", size, read_head)
    assert (info.valid, info.problem) == (None, f"header of {n} bytes is larger than 64 MiB: not inspected")
    assert max(calls) <= MAX_HEAD and info.cuts() == []


def test_safetensors_sniffed_without_the_suffix(st_file: Path) -> None:
    assert inspect_file(st_file, "weights/model.sft").format == "safetensors"


# --- GGUF -----------------------------------------------------------------------------------------------------


def assert_matches_reference(path: Path, info: FormatInfo) -> None:
    reader = GGUFReader(str(path))
    ours = {t.name: (t.dtype, t.shape, t.start, t.end - t.start) for t in info.tensors}
    theirs = {
        t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.data_offset), int(t.n_bytes))
        for t in reader.tensors
    }
    assert ours == theirs
    assert info.summary["data_offset"] == reader.data_offset
    assert info.summary["alignment"] == reader.alignment
    assert info.summary["kv"] == len([k for k in reader.fields if not k.startswith("GGUF.")])


def test_gguf_matches_gguf_reader(gguf_file: Path) -> None:
    info = inspect_file(gguf_file)
    assert (info.format, info.valid, info.problem) == ("gguf", True, None)
    assert_matches_reference(gguf_file, info)
    assert info.summary == {
        "version": 3,
        "architecture": "llama",
        "name": "tiny",
        "tensors": 3,
        "kv": 6,
        "alignment": 32,
        "data_offset": info.data_start,
        "parameters": 6 + 5 + 128,
        "dtypes": {"F16": 1, "F32": 1, "Q8_0": 1},
    }
    size = gguf_file.stat().st_size
    points = {info.data_start} | {t.start for t in info.tensors} | {t.end for t in info.tensors}
    assert info.cuts() == sorted(p for p in points if p is not None and 0 < p < size)


@pytest.mark.parametrize(
    ("alignment", "endian"), [(64, gguf.GGUFEndian.LITTLE), (None, gguf.GGUFEndian.BIG)], ids=["align64", "big"]
)
def test_gguf_alignment_and_byte_order(tmp_path: Path, alignment: int | None, endian: gguf.GGUFEndian) -> None:
    path = write_gguf(tmp_path / "x.gguf", alignment=alignment, endian=endian)
    info = inspect_file(path)
    assert info.valid is True, info.problem
    assert_matches_reference(path, info)
    assert all(t.start % (alignment or 32) == 0 for t in info.tensors)


def test_ggml_type_table_matches_gguf() -> None:
    theirs = {int(t): (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType}
    assert theirs == GGML_TYPES


def test_gguf_truncated_inside_the_tensor_table(gguf_file: Path) -> None:
    data = gguf_file.read_bytes()
    info = inspect_bytes(data[: table_entry_offset(gguf_file, 1) + 5], "tiny.gguf")
    assert info.valid is False
    assert info.problem == "the file ends inside the GGUF header (tensor table entry 2 of 3)"
    assert info.summary["architecture"] == "llama" and info.summary["tensors"] == 3 and info.tensors == ()


def test_gguf_truncated_inside_the_key_values(gguf_file: Path) -> None:
    data = gguf_file.read_bytes()
    info = inspect_bytes(data[: table_entry_offset(gguf_file, 0) - 4], "tiny.gguf")
    assert info.problem == "the file ends inside the GGUF header (key-value pair 6 of 6 ('tokenizer.ggml.scores'))"
    early = inspect_bytes(data[:40], "tiny.gguf")
    assert early.problem == "the header declares 6 key-value pairs and 3 tensors, more than a file of 40 bytes can hold"


def test_gguf_tensor_beyond_the_end(gguf_file: Path) -> None:
    info = inspect_file(gguf_file)
    last = info.tensors[-1]
    cut = inspect_bytes(gguf_file.read_bytes()[: last.start + 10], "tiny.gguf")
    assert cut.valid is False
    assert cut.problem == f"tensor {last.name!r} ends at {last.end} but the file is {last.start + 10} bytes"
    assert cut.tensors == info.tensors  # the header was whole: the table is known


def test_gguf_unknown_type_and_misplaced_offset(gguf_file: Path) -> None:
    data = gguf_file.read_bytes()
    at = type_field_offset(gguf_file, 1)
    unknown = inspect_bytes(patched(data, at, struct.pack("<I", 99)), "tiny.gguf")
    assert (unknown.valid, unknown.problem) == (False, "tensor 'output_norm.weight' has unknown ggml type 99")
    offset = struct.unpack_from("<Q", data, at + 4)[0]
    moved = inspect_bytes(patched(data, at + 4, struct.pack("<Q", offset + 32)), "tiny.gguf")
    assert moved.valid is False and (moved.problem or "").startswith(
        f"tensor 'output_norm.weight' starts at offset {offset + 32} of the data section, expected {offset}"
    )
    odd = inspect_bytes(patched(data, at + 4, struct.pack("<Q", offset + 1)), "tiny.gguf")
    assert odd.problem == f"tensor 'output_norm.weight' offset {offset + 1} is not a multiple of the alignment 32"


def test_gguf_version_and_magic(gguf_file: Path) -> None:
    data = gguf_file.read_bytes()
    v1 = inspect_bytes(patched(data, 4, struct.pack("<I", 1)), "tiny.gguf")
    assert (v1.valid, v1.problem) == (False, "GGUF version 1 is not supported (only 2 and 3)")
    assert v1.summary["version"] == 1
    no_magic = inspect_bytes(b"GGML" + data[4:], "tiny.gguf")
    assert (no_magic.format, no_magic.valid) == ("gguf", False)
    assert inspect_bytes(data, "weights.bin").format == "gguf"  # the magic wins over the name


def test_gguf_big_header_read_by_doubling(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_array("tokenizer.ggml.tokens", [f"token-{i}" for i in range(20000)])
    writer.add_tensor("w", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    calls: list[int] = []
    info = inspect_bytes(path.read_bytes(), path.name, calls)
    assert info.valid is True and info.summary["data_offset"] > 64 << 10
    assert calls[0] == 64 << 10 and calls == sorted(calls) and len(calls) <= 4


# --- never raises ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetensors", "gguf"])
def test_damage_never_raises(st_file: Path, gguf_file: Path, kind: str) -> None:
    path = st_file if kind == "safetensors" else gguf_file
    data = path.read_bytes()
    whole = inspect_bytes(data, path.name)
    end = max(t.end for t in whole.tensors)  # GGUF: the padding after the last tensor may go
    for length in range(end):
        assert inspect_bytes(data[:length], path.name).valid is False
    rng = random.Random(7)
    for _ in range(300):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(data))] = rng.randrange(256)
        assert inspect_bytes(bytes(flipped), path.name).valid in (True, False, None)


# --- other formats --------------------------------------------------------------------------------------------


def test_safetensors_index() -> None:
    index = {
        "metadata": {"total_size": 1234},
        "weight_map": {
            "a": "model-00002-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors",
        },
    }
    info = inspect_bytes(json.dumps(index).encode(), "sub/model.safetensors.index.json")
    assert (info.format, info.valid) == ("safetensors-index", True)
    assert info.summary == {
        "total_size": 1234,
        "shards": ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
        "tensors": 3,
    }
    assert inspect_bytes(b'{"metadata": {}}', "model.safetensors.index.json").problem == "no weight_map object"
    broken = inspect_bytes(b'{"weight_map": ', "model.safetensors.index.json")
    assert broken.valid is False and (broken.problem or "").startswith("not JSON")


def test_peft_adapter_config() -> None:
    config = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "base_model_name_or_path": "meta-llama/Llama-3.2-1B",
        "target_modules": ["v_proj", "q_proj"],
        "lora_dropout": 0.05,
    }
    info = inspect_bytes(json.dumps(config).encode(), "adapters/adapter_config.json")
    assert (info.format, info.valid, info.problem) == ("peft-adapter-config", None, None)
    assert info.summary == {
        **{k: v for k, v in config.items() if k != "lora_dropout"},
        "target_modules": ["q_proj", "v_proj"],
    }
    assert inspect_bytes(b"nope", "adapter_config.json").valid is False


def test_json_and_large_json() -> None:
    assert inspect_bytes(b'{"a": 1}', "config.json").valid is True
    assert inspect_bytes(b'{"a": ', "config.json").valid is False
    info = inspect("huge.json", 20 << 20, lambda n: b"{" * n)
    assert (info.format, info.valid) == ("json", None) and "not parsed" in (info.problem or "")


def test_pytorch_onnx_other(tmp_path: Path) -> None:
    archive = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("archive/data.pkl", b"x")
    assert inspect_file(archive).summary == {"container": "zip"}
    legacy = inspect_bytes(pickle.dumps({"a": 1}, protocol=2), "model.pt")
    assert (legacy.format, legacy.valid, legacy.summary) == ("pytorch", None, {"container": "pickle"})
    assert inspect_bytes(b"hello", "model.pth").summary == {"container": "unknown"}
    assert inspect_bytes(b"\x08\x07", "model.onnx").format == "onnx"
    other = inspect_bytes(b"hello", "README.md")
    assert (other.format, other.valid, other.summary, other.tensors, other.cuts()) == ("other", None, {}, (), [])
    assert inspect_bytes(b"", "empty.bin").summary == {"container": "unknown"}


# --- tensors_at and load_check --------------------------------------------------------------------------------


def test_tensors_at(st_file: Path, gguf_file: Path) -> None:
    info = inspect_file(st_file)
    first, second = info.tensors[0], info.tensors[1]
    assert tensors_at(info, 0, first.start) == []  # the header
    assert tensors_at(info, first.start, first.end) == [first.name]
    assert tensors_at(info, first.end - 1, second.start + 1) == [first.name, second.name]
    assert tensors_at(info, 0, info.size) == [t.name for t in info.tensors]
    g = inspect_file(gguf_file)
    assert tensors_at(g, g.tensors[0].end, g.tensors[1].start) == []  # alignment padding
    assert tensors_at(inspect_bytes(b"{}", "config.json"), 0, 2) == []


def test_load_check_passes_on_the_file(st_file: Path) -> None:
    assert load_check(st_file, inspect_file(st_file)) == []


def test_load_check_reports_mismatches(tmp_path: Path, st_file: Path) -> None:
    other = tmp_path / "other.safetensors"
    changed = dict(ARRAYS, **{"embed.weight": np.zeros((3, 2), np.float64)})
    del changed["mask"]
    changed["extra"] = np.zeros(1, np.int8)
    save_file(changed, str(other))
    assert load_check(st_file, inspect_file(other)) == [
        f"{st_file}: tensor 'extra' is missing",
        f"{st_file}: tensor 'mask' was not in the backup",
        f"{st_file}: tensor 'embed.weight' is F32 [2, 3], the backup recorded F64 [3, 2]",
    ]


def test_load_check_unreadable_and_other_formats(tmp_path: Path, st_file: Path, gguf_file: Path) -> None:
    info = inspect_file(st_file)
    st_file.write_bytes(st_file.read_bytes()[:-1])
    (problem,) = load_check(st_file, info)
    assert problem.startswith(f"{st_file}: safetensors cannot read it:")
    assert load_check(gguf_file, inspect_file(gguf_file)) == []
    recorded_invalid = inspect_file(st_file)  # the cut file, as a backup of it would have recorded it
    assert recorded_invalid.valid is False and load_check(st_file, recorded_invalid) == []


def test_load_check_without_safetensors(st_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = inspect_file(st_file)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ConnectorNotInstalledError, match=r"pip install 'aibackup\[models\]'"):
        load_check(st_file, info)
