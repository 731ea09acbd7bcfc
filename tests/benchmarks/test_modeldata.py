"""The model folders the model-artifact benchmarks back up (benchmarks.modeldata): deterministic, valid
safetensors byte for byte as the reference serializer writes them, and each later version changing exactly
what it says."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks import modeldata

safetensors = pytest.importorskip("safetensors")

SIZE = 4 << 20
SHARD = 1 << 20
TORCH_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    modeldata.make_model(tmp_path / "model", SIZE, seed=0, shard_bytes=SHARD)
    return tmp_path / "model"


def tensor_bytes(folder: Path) -> dict[str, bytes]:
    """Every tensor's stored bytes, by name, over the model's shards."""
    out = {}
    for path in modeldata.shards(folder):
        raw = path.read_bytes()
        out |= {s.name: raw[s.start : s.end] for s in modeldata.stored_tensors(path)}
    return out


def reference_bytes(path: Path) -> bytes:
    """The file as safetensors' own serializer writes the same tensors and metadata."""
    _, header = modeldata.read_header(path)
    raw = path.read_bytes()
    keep, specs = [], {}
    for s in modeldata.stored_tensors(path):
        data = np.frombuffer(raw[s.start : s.end], np.uint8)
        keep.append(data)
        specs[s.name] = safetensors.TensorSpec(
            dtype=TORCH_NAMES[s.dtype], shape=list(s.shape), data_ptr=data.ctypes.data, data_len=data.nbytes
        )
    return bytes(safetensors.serialize(specs, header.get("__metadata__")))


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path, model: Path) -> None:
    again = modeldata.make_model(tmp_path / "again", SIZE, seed=0, shard_bytes=SHARD)
    other = modeldata.make_model(tmp_path / "other", SIZE, seed=1, shard_bytes=SHARD)
    assert modeldata.tree_digests(model) == modeldata.tree_digests(tmp_path / "again")
    first, second = modeldata.tree_digests(model), modeldata.tree_digests(tmp_path / "other")
    assert all(first[p.name] != second[p.name] for p in modeldata.shards(model))
    assert again["shards"] == 4 and again["layers"] >= 4
    assert set(again["tensor_bytes_by_dtype"]) == {"BF16", "F16"}
    assert again["tensor_bytes"] <= SIZE
    assert other["tensor_bytes"] == again["tensor_bytes"]


def test_shards_are_exact_safetensors_and_match_the_index(model: Path) -> None:
    index = json.loads((model / "model.safetensors.index.json").read_text())
    shards = modeldata.shards(model)
    assert [p.name for p in shards] == [f"model-0000{n}-of-00004.safetensors" for n in range(1, 5)]
    seen: dict[str, str] = {}
    for n, path in enumerate(shards):
        assert path.read_bytes() == reference_bytes(path)
        with safetensors.safe_open(str(path), "np") as f:
            assert f.metadata() == {"format": "pt"}
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                seen[name] = path.name
                assert f.get_slice(name).get_dtype() == ("F16" if n == 1 else "BF16")
    assert seen == index["weight_map"]
    assert index["metadata"]["total_size"] == sum(len(b) for b in tensor_bytes(model).values())
    config = json.loads((model / "config.json").read_text())
    assert sum(".q_proj." in name for name in seen) == config["num_hidden_layers"]
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == config["vocab_size"]


def test_values_look_like_weights(model: Path) -> None:
    path = modeldata.shards(model)[1]  # fp16
    with safetensors.safe_open(str(path), "np") as f:
        weights = [f.get_tensor(n) for n in f.keys() if n.endswith("proj.weight")]  # noqa: SIM118
        norms = [f.get_tensor(n) for n in f.keys() if n.endswith("norm.weight")]  # noqa: SIM118
    values = np.concatenate([w.ravel() for w in weights]).astype(np.float64)
    assert abs(values.mean()) < 1e-3 and values.std() == pytest.approx(0.02, rel=0.02)
    assert np.concatenate(norms).astype(np.float64).mean() == pytest.approx(1.0, abs=0.01)
    bf16 = modeldata.stored_tensors(modeldata.shards(model)[0])[0]
    raw = modeldata.shards(model)[0].read_bytes()[bf16.start : bf16.end]
    decoded = modeldata.decode(np.frombuffer(raw, np.uint16), "BF16").astype(np.float64)
    assert decoded.std() == pytest.approx(0.02, rel=0.02)


def test_change_tensors_changes_about_a_tenth_of_the_tensors_and_nothing_else(model: Path) -> None:
    before, digests, sizes = tensor_bytes(model), modeldata.tree_digests(model), modeldata.tree_bytes(model)
    heads = {p.name: modeldata.read_header(p) for p in modeldata.shards(model)}
    change = modeldata.change_tensors(model, 0.10, seed=1)
    after = tensor_bytes(model)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == set(change["changed"])
    assert 0.05 <= len(changed) / len(before) <= 0.15
    assert 0.05 <= change["changed_fraction"] <= 0.15
    assert {p.name: modeldata.read_header(p) for p in modeldata.shards(model)} == heads
    assert modeldata.tree_bytes(model) == sizes
    now = modeldata.tree_digests(model)
    assert {k for k in digests if digests[k] != now[k]} <= {p.name for p in modeldata.shards(model)}
    # every changed tensor changed nearly everywhere (a fine-tune step), in more than one shard
    for name in changed:
        a, b = np.frombuffer(before[name], np.uint16), np.frombuffer(after[name], np.uint16)
        assert (a != b).mean() > 0.5
    holders = {p.name for p in modeldata.shards(model) for s in modeldata.stored_tensors(p) if s.name in changed}
    assert len(holders) >= 2


def test_rewrite_metadata_moves_every_tensor_and_keeps_its_bytes(model: Path) -> None:
    before = tensor_bytes(model)
    starts = {s.name: s.start for p in modeldata.shards(model) for s in modeldata.stored_tensors(p)}
    result = modeldata.rewrite_metadata(model)
    assert tensor_bytes(model) == before
    for path in modeldata.shards(model):
        shift = result["shift_bytes"][path.name]
        assert shift != 0
        assert all(s.start == starts[s.name] + shift for s in modeldata.stored_tensors(path))
        with safetensors.safe_open(str(path), "np") as f:  # (the reference orders metadata keys at random)
            assert f.metadata() == {"format": "pt", "note": "re-saved by the aibackup benchmarks"}
            assert sorted(f.keys()) == sorted(s.name for s in modeldata.stored_tensors(path))
    assert not list(model.glob("*.tmp"))


def test_full_finetune_changes_every_tensor(model: Path) -> None:
    before = tensor_bytes(model)
    modeldata.full_finetune(model, seed=2)
    after = tensor_bytes(model)
    assert all(before[name] != after[name] for name in before)
    assert all(path.read_bytes() == reference_bytes(path) for path in modeldata.shards(model))


def test_add_lora_writes_a_peft_adapter(model: Path) -> None:
    result = modeldata.add_lora(model, rank=4)
    folder = model / "adapter"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["target_modules"] == ["q_proj", "v_proj"]
    layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    with safetensors.safe_open(str(folder / "adapter_model.safetensors"), "np") as f:
        names = list(f.keys())
        a = f.get_tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
    assert len(names) == 4 * layers == result["tensors"]
    assert a.dtype == np.float32 and a.shape[0] == 4
    assert modeldata.shards(model) == sorted(model.glob("model-*.safetensors"))  # not one of the model's


def test_make_big_file_is_one_valid_file(tmp_path: Path) -> None:
    result = modeldata.make_big_file(tmp_path / "big" / "model.safetensors", 3 << 20)
    path = Path(result["path"])
    assert path.stat().st_size == result["bytes"] <= (3 << 20) + 65536
    assert path.read_bytes() == reference_bytes(path)


def test_bare_copy_copies_byte_identically(tmp_path: Path, model: Path) -> None:
    modeldata.add_lora(model, rank=2)
    os.symlink("model-00001-of-00004.safetensors", model / "link.safetensors")
    (model / "adapter" / "run.sh").write_text("#!/bin/sh\n")
    (model / "adapter" / "run.sh").chmod(0o755)
    seconds = modeldata.bare_copy(model, tmp_path / "copy")
    assert seconds > 0
    assert modeldata.tree_digests(tmp_path / "copy") == modeldata.tree_digests(model)
    assert (tmp_path / "copy" / "link.safetensors").is_symlink()
    assert os.stat(tmp_path / "copy" / "adapter" / "run.sh").st_mode & 0o777 == 0o755
