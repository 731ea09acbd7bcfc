"""Real model folders for the end-to-end tests of ``model:PATH``: safetensors written by the safetensors library,
GGUF by gguf's GGUFWriter, the rest plain files, symlinks and modes as a checkout of a model repository holds
them. Tensors are random float32 (incompressible, as trained weights are): sizes are what the chunk store sees."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFWriter
from safetensors.numpy import save_file

MiB = 1 << 20


def weights(rows: int, cols: int = 1024, seed: int = 0, dtype: Any = np.float32) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(dtype)


def write_safetensors(
    path: Path, tensors: dict[str, np.ndarray[Any, Any]], metadata: dict[str, str] | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_gguf(path: Path) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(128)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", weights(64, 64, seed=7))
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_model_folder(root: Path) -> Path:
    """A Hugging Face style checkout (about 5 MB): sharded safetensors with their index, a GGUF export, a
    PyTorch ``.bin``, config and tokenizer JSON, a PEFT adapter, an executable script, relative symlinks (one
    in a nested folder pointing up, one to a folder), an empty file: 13 files and 3 symlinks."""
    shard1 = {"model.embed_tokens.weight": weights(512, seed=1), "model.layers.0.mlp.weight": weights(256, seed=2)}
    shard2 = {"model.norm.weight": np.ones(1024, dtype=np.float16), "lm_head.weight": weights(256, seed=3)}
    write_safetensors(root / "model-00001-of-00002.safetensors", shard1, {"format": "pt"})
    write_safetensors(root / "model-00002-of-00002.safetensors", shard2, {"format": "pt"})
    weight_map = {name: "model-00001-of-00002.safetensors" for name in shard1}
    weight_map |= {name: "model-00002-of-00002.safetensors" for name in shard2}
    total = sum(t.nbytes for t in (*shard1.values(), *shard2.values()))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    write_gguf(root / "tiny-llama.gguf")
    (root / "pytorch_model.bin").write_bytes(np.random.default_rng(4).bytes(300_000))
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 1024}))
    (root / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {f"tok{i}": i for i in range(2000)}}}))
    (root / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "name": "naïve ✓"}))
    adapter = root / "adapters" / "support-v2"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q"]}))
    lora = {"base_model.q.lora_A.weight": weights(8, 1024, seed=5), "base_model.q.lora_B.weight": weights(1024, 8)}
    write_safetensors(adapter / "adapter_model.safetensors", lora)
    script = root / "scripts" / "convert.sh"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\nexec python convert.py "$@"\n')
    script.chmod(0o755)
    (root / "eval" / "results").mkdir(parents=True)
    (root / "eval" / "results" / "metrics.json").write_text('{"mmlu": 0.41}')
    (root / "eval" / "results" / "empty.log").write_bytes(b"")
    os.symlink("model-00001-of-00002.safetensors", root / "latest.safetensors")
    os.symlink("../../config.json", root / "eval" / "results" / "config.json")
    os.symlink("support-v2", root / "adapters" / "current")  # a symlink to a folder: kept as a symlink
    return root


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file and symlink under `root` (symlinks not followed): ("file", bytes, mode) or ("link", target)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            else:
                out[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o7777)
    return dict(sorted(out.items()))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model_folder(tmp_path / "llama-tiny")
