"""Deterministic, realistic model folders for the model-artifact benchmarks (issue 19).

:func:`make_model` writes what ``huggingface_hub.snapshot_download`` leaves for a small Llama-shaped model
(TinyLlama's shape at 2 GiB: hidden 2048, intermediate 5632, vocabulary 32000, 32 heads of 64, 4 key/value
heads, as many layers as fit): sharded safetensors named ``model-0000N-of-0000M.safetensors`` (~512 MiB
each, cut in the order of the state dict the way ``transformers`` shards), ``model.safetensors.index.json``,
``config.json``, ``generation_config.json``, ``tokenizer_config.json`` and a BPE ``tokenizer.json`` of
realistic size (~1.5 MB at a 32000 vocabulary). Small budgets scale the shape down by powers of two.

**Dtypes**: every shard is bf16 except the second (``model-00002-of-…``), which is fp16, as in checkpoints
re-saved or merged part by part; a one-shard model is all bf16. Both dtypes are then in every model, which
the zstd measure needs (bf16 compresses, fp16 hardly does).

**Values**: weights ~ normal(0, 0.02), layer norms ~ normal(1, 0.05), drawn through a table of 2^20
equal-probability normal quantiles already rounded to the tensor's dtype (round to nearest even for bf16):
a gather per value instead of a normal draw and a rounding pass, ~5× faster, and the same distribution of
stored values (entropy and zstd ratio within 0.1% of true normal draws). Each tensor has its own generator,
seeded from the seed and the tensor's name: the same seed gives the same bytes, in any order of writing.

Files are written streaming, a block of 4M values at a time, with the safetensors header written here, so
memory stays bounded whatever the size. The header is byte for byte what the reference serializer
(``safetensors.serialize``) writes: ``__metadata__`` first, tensors in data order (dtype descending in the
reference's dtype order, then name), compact JSON padded with spaces to a multiple of 8.

The versions a benchmark backs up after the first: :func:`change_tensors` (some tensors fine-tuned, in
place), :func:`rewrite_metadata` (headers only: every tensor moves), :func:`add_lora` (an adapter beside the
base), :func:`full_finetune` (every tensor perturbed). :func:`bare_copy` is the baseline a backup and a
restore are compared with.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aibackup.connectors.model.formatinfo import Tensor as Stored  # a tensor as a file holds it: bytes [start, end)

MIB = 1 << 20
GIB = 1 << 30
SHARD_BYTES = 512 * MIB
#: Values generated (or perturbed) per block: 8 MiB of bf16, 16 MiB of table indices.
BLOCK = 1 << 22
COPY_BLOCK = 8 * MIB
TABLE_BITS = 20
HEAD_DIM = 64
DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2}
#: The reference serializer's dtype order (its Dtype enum: … F16 < BF16 < … < F32); data is laid out in
#: descending order of it, then by name.
DTYPE_RANK = {"F16": 0, "BF16": 1, "F32": 2}
STORAGE = {"F32": np.float32, "BF16": np.uint16, "F16": np.float16}
WEIGHT_STD = 0.02
NORM_MEAN, NORM_STD = 1.0, 0.05
#: Perturbation of a fine-tune step (std of the noise added): about 8 bf16 ulps of a typical weight and
#: 1.3 of a norm, so nearly every stored value changes.
NUDGE_WEIGHT, NUDGE_NORM = 0.001, 0.01
#: Generator streams per purpose: the same name and seed give unrelated values for each.
VALUES, CHANGE, FINETUNE, LORA, PICK, TOKENS = range(6)


@dataclass(frozen=True)
class Tensor:
    """A tensor to write: name, safetensors dtype, shape and the normal its values are drawn from."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    mean: float = 0.0
    std: float = WEIGHT_STD

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class Architecture:
    """A Llama-style decoder (TinyLlama 1.1B's shape by default; heads of HEAD_DIM)."""

    hidden: int = 2048
    intermediate: int = 5632
    vocab: int = 32000
    kv_heads: int = 4

    def scaled(self, factor: int) -> Architecture:
        """Every size divided by `factor` (a power of two): the same model, smaller."""
        hidden = self.hidden // factor
        heads = max(1, hidden // HEAD_DIM)
        return Architecture(hidden, self.intermediate // factor, self.vocab // factor, max(1, heads // 8))

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * HEAD_DIM

    def layer(self, i: int, dtype: str) -> list[Tensor]:
        """Layer `i`'s tensors in state-dict order."""
        h, m, p = self.hidden, self.intermediate, f"model.layers.{i}."
        return [
            Tensor(p + "self_attn.q_proj.weight", dtype, (h, h)),
            Tensor(p + "self_attn.k_proj.weight", dtype, (self.kv_dim, h)),
            Tensor(p + "self_attn.v_proj.weight", dtype, (self.kv_dim, h)),
            Tensor(p + "self_attn.o_proj.weight", dtype, (h, h)),
            Tensor(p + "mlp.gate_proj.weight", dtype, (m, h)),
            Tensor(p + "mlp.up_proj.weight", dtype, (m, h)),
            Tensor(p + "mlp.down_proj.weight", dtype, (h, m)),
            Tensor(p + "input_layernorm.weight", dtype, (h,), NORM_MEAN, NORM_STD),
            Tensor(p + "post_attention_layernorm.weight", dtype, (h,), NORM_MEAN, NORM_STD),
        ]

    def tensors(self, layers: int, dtype: str = "BF16") -> list[Tensor]:
        """Every tensor of a `layers`-layer model, in state-dict order (the order shards are cut in)."""
        out = [Tensor("model.embed_tokens.weight", dtype, (self.vocab, self.hidden))]
        for i in range(layers):
            out += self.layer(i, dtype)
        out.append(Tensor("model.norm.weight", dtype, (self.hidden,), NORM_MEAN, NORM_STD))
        out.append(Tensor("lm_head.weight", dtype, (self.vocab, self.hidden)))
        return out

    def layers_for(self, total_bytes: int) -> int:
        """How many 2-byte layers fit `total_bytes` of tensors beside the embeddings (at least one)."""
        fixed = sum(t.nbytes for t in self.tensors(0))
        per_layer = sum(t.nbytes for t in self.layer(0, "BF16"))
        return max(1, (total_bytes - fixed) // per_layer)


def architecture_for(total_bytes: int) -> Architecture:
    """TinyLlama's shape, halved until its embeddings take at most a quarter of `total_bytes`."""
    factor = 1
    while sum(t.nbytes for t in Architecture().scaled(factor).tensors(0)) > total_bytes / 4 and factor < 32:
        factor *= 2
    return Architecture().scaled(factor)


# --- values --------------------------------------------------------------------------------------------------


@functools.cache
def _quantiles() -> np.ndarray:
    """The 2^TABLE_BITS standard normal quantiles at the midpoints of equal-probability bins (symmetric)."""
    n = 1 << TABLE_BITS
    inv = statistics.NormalDist().inv_cdf
    low = np.array([inv((i + 0.5) / n) for i in range(n // 2)])
    return np.concatenate([low, -low[::-1]])


def encode(values: np.ndarray, dtype: str) -> np.ndarray:
    """`values` (float32 or float64) as `dtype`'s stored little-endian values (bf16: uint16, rounded to
    nearest even from float32)."""
    if dtype != "BF16":
        return values.astype(STORAGE[dtype])
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    out = bits >> 16
    out &= 1
    out += 0x7FFF
    out += bits
    out >>= 16
    return out.astype(np.uint16)


def decode(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values (see :func:`encode`) as float32."""
    if dtype == "BF16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return stored.astype(np.float32)


@functools.cache
def _table(dtype: str, mean: float, std: float) -> np.ndarray:
    return encode(_quantiles() * std + mean, dtype)


def _rng(seed: int, name: str, purpose: int) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, purpose, key])


def _draw(rng: np.random.Generator, table: np.ndarray, n: int) -> np.ndarray:
    return table[rng.integers(0, len(table), n, dtype=np.uint32)]


def _values(tensor: Tensor, seed: int) -> Iterator[np.ndarray]:
    """The tensor's stored values, BLOCK at a time."""
    rng = _rng(seed, tensor.name, VALUES)
    table = _table(tensor.dtype, tensor.mean, tensor.std)
    for start in range(0, tensor.count, BLOCK):
        yield _draw(rng, table, min(BLOCK, tensor.count - start))


# --- the safetensors format ---------------------------------------------------------------------------------


def data_order(tensors: list[Tensor]) -> list[Tensor]:
    """The order the reference serializer lays tensors out in: dtype descending, then name."""
    return sorted(tensors, key=lambda t: (-DTYPE_RANK[t.dtype], t.name.encode()))


def _header(entries: dict[str, Any]) -> bytes:
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def header_bytes(tensors: list[Tensor], metadata: dict[str, str] | None) -> bytes:
    """The 8-byte length and the JSON header of a file holding `tensors` (see :func:`data_order`)."""
    entries: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for t in data_order(tensors):
        entries[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    return _header(entries)


def write_safetensors(
    path: Path,
    tensors: list[Tensor],
    values: Callable[[Tensor], Iterator[np.ndarray]],
    metadata: dict[str, str] | None = None,
) -> int:
    """Write `tensors` to `path` in the safetensors format, each tensor's stored values streamed from
    `values` (arrays of its storage dtype, :data:`STORAGE`, `count` values in all); returns the file's bytes."""
    metadata = {"format": "pt"} if metadata is None else metadata
    with open(path, "wb") as f:
        f.write(header_bytes(tensors, metadata))
        for t in data_order(tensors):
            written = 0
            for block in values(t):
                written += f.write(block.astype(block.dtype.newbyteorder("<"), copy=False))
            if written != t.nbytes:
                raise ValueError(f"{t.name}: {written} bytes written for {t.nbytes}")
        return f.tell()


def read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """The offset of `path`'s first data byte and its JSON header (in file order)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return 8 + n, json.loads(f.read(n))


def stored_tensors(path: Path) -> list[Stored]:
    """Every tensor of a safetensors file with its absolute byte range, in data order."""
    start, header = read_header(path)
    out = [
        Stored(name, e["dtype"], tuple(e["shape"]), start + e["data_offsets"][0], start + e["data_offsets"][1])
        for name, e in header.items()
        if name != "__metadata__"
    ]
    return sorted(out, key=lambda s: s.start)


def shards(folder: Path) -> list[Path]:
    """The model's own safetensors files (not those of adapters in subfolders), sorted."""
    return sorted(Path(folder).glob("*.safetensors"))


# --- folders ------------------------------------------------------------------------------------------------


def plan_shards(tensors: list[Tensor], shard_bytes: int) -> list[list[Tensor]]:
    """`tensors` cut into shards greedily in order (a new shard when the next tensor would overflow this
    one), the second shard fp16 and the others bf16 (see the module docstring)."""
    out: list[list[Tensor]] = [[]]
    size = 0
    for t in tensors:
        if out[-1] and size + t.nbytes > shard_bytes:
            out.append([])
            size = 0
        out[-1].append(t)
        size += t.nbytes
    return [[replace(t, dtype="F16" if n == 1 else "BF16") for t in shard] for n, shard in enumerate(out)]


def make_model(
    folder: Path,
    total_bytes: int = 2 * GIB,
    seed: int = 0,
    *,
    shard_bytes: int = SHARD_BYTES,
    arch: Architecture | None = None,
) -> dict[str, Any]:
    """Write a model of about `total_bytes` of tensors (never more, at least one layer) into `folder`
    (created; files there of the same names are replaced). The same arguments give the same bytes.
    Returns what was written: files, shards, layers, shape, tensor and file bytes per dtype, seconds."""
    started = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arch = arch or architecture_for(total_bytes)
    layers = arch.layers_for(total_bytes)
    planned = plan_shards(arch.tensors(layers), shard_bytes)
    names = [f"model-{n + 1:05d}-of-{len(planned):05d}.safetensors" for n in range(len(planned))]
    by_dtype: dict[str, int] = {}
    for name, shard in zip(names, planned, strict=True):
        write_safetensors(folder / name, shard, lambda t: _values(t, seed))
        for t in shard:
            by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
    tensor_bytes = sum(by_dtype.values())
    weight_map = {t.name: name for name, shard in zip(names, planned, strict=True) for t in shard}
    index = {"metadata": {"total_size": tensor_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(folder / "model.safetensors.index.json", index)
    _write_json(folder / "config.json", _config(arch, layers))
    _write_json(folder / "generation_config.json", GENERATION_CONFIG)
    _write_json(folder / "tokenizer_config.json", TOKENIZER_CONFIG)
    _write_json(folder / "tokenizer.json", _tokenizer(arch.vocab, seed))
    return {
        "folder": str(folder),
        "files": len(names) + 5,
        "shards": len(names),
        "layers": layers,
        "shape": {"hidden": arch.hidden, "intermediate": arch.intermediate, "vocab": arch.vocab},
        "tensors": len(weight_map),
        "tensor_bytes": tensor_bytes,
        "tensor_bytes_by_dtype": by_dtype,
        "bytes": tree_bytes(folder),
        "seconds": time.perf_counter() - started,
    }


def make_big_file(path: Path, total_bytes: int, seed: int = 0) -> dict[str, Any]:
    """One consolidated ``model.safetensors`` of about `total_bytes` (TinyLlama's shape, bf16, generated
    values: neither sparse nor zero, so a backup's throughput on it means something too), written streaming
    in bounded memory. Returns its bytes, layers and seconds."""
    started = time.perf_counter()
    arch = architecture_for(total_bytes)
    layers = arch.layers_for(total_bytes)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    size = write_safetensors(Path(path), arch.tensors(layers), lambda t: _values(t, seed))
    return {"path": str(path), "bytes": size, "layers": layers, "seconds": time.perf_counter() - started}


def add_lora(folder: Path, name: str = "adapter", rank: int = 16, seed: int = 3, dtype: str = "F32") -> dict[str, Any]:
    """A PEFT LoRA adapter for the model in `folder` (its ``config.json``), in ``folder/name``: lora_A
    (rank × in) and lora_B (out × rank) of q_proj and v_proj in every layer, `dtype` (PEFT saves fp32), and
    ``adapter_config.json``. Returns the adapter folder and its bytes."""
    config = json.loads((Path(folder) / "config.json").read_text())
    hidden, kv = config["hidden_size"], config["num_key_value_heads"] * HEAD_DIM
    tensors = []
    for i in range(config["num_hidden_layers"]):
        for module, out in (("q_proj", hidden), ("v_proj", kv)):
            p = f"base_model.model.model.layers.{i}.self_attn.{module}."
            tensors.append(Tensor(p + "lora_A.weight", dtype, (rank, hidden), 0.0, 1 / math.sqrt(hidden)))
            tensors.append(Tensor(p + "lora_B.weight", dtype, (out, rank), 0.0, 0.002))
    target = Path(folder) / name
    target.mkdir(parents=True, exist_ok=True)
    write_safetensors(target / "adapter_model.safetensors", tensors, lambda t: _values(t, seed + LORA))
    _write_json(
        target / "adapter_config.json",
        {
            "base_model_name_or_path": config.get("_name_or_path", Path(folder).name),
            "bias": "none",
            "fan_in_fan_out": False,
            "inference_mode": True,
            "init_lora_weights": True,
            "lora_alpha": 2 * rank,
            "lora_dropout": 0.05,
            "modules_to_save": None,
            "peft_type": "LORA",
            "r": rank,
            "target_modules": ["q_proj", "v_proj"],
            "task_type": "CAUSAL_LM",
        },
    )
    return {"folder": str(target), "tensors": len(tensors), "bytes": tree_bytes(target)}


def _kind(name: str) -> str:
    return re.sub(r"\.\d+\.", ".*.", name)


def change_tensors(folder: Path, fraction: float = 0.10, seed: int = 1) -> dict[str, Any]:
    """Version 2: fine-tune about `fraction` of the tensors, in place (same names, shapes, dtypes and
    layout). Chosen per kind of tensor (q_proj, up_proj, …: round(fraction × layers) of each, at random
    from `seed`), so the changed bytes are about `fraction` of the layers' and spread over the shards; a
    kind with one tensor (embeddings, final norm, lm_head) changes only if rounding picks it. Returns the
    names changed and their bytes against every tensor's."""
    tensors = {s.name: (path, s) for path in shards(folder) for s in stored_tensors(path)}
    kinds: dict[str, list[str]] = {}
    for name in sorted(tensors):
        kinds.setdefault(_kind(name), []).append(name)
    chosen: set[str] = set()
    for kind, names in sorted(kinds.items()):
        picks = _rng(seed, kind, PICK).choice(len(names), round(len(names) * fraction), replace=False)
        chosen.update(names[i] for i in picks)
    for path in shards(folder):
        _perturb(path, [s for n, (p, s) in tensors.items() if p == path and n in chosen], seed, CHANGE)
    total = sum(s.end - s.start for _, s in tensors.values())
    changed = sum(tensors[n][1].end - tensors[n][1].start for n in chosen)
    return {
        "changed": sorted(chosen),
        "tensors": len(tensors),
        "changed_bytes": changed,
        "tensor_bytes": total,
        "changed_fraction": changed / total,
    }


def full_finetune(folder: Path, seed: int = 2) -> dict[str, Any]:
    """Every tensor of the model perturbed slightly, in place (what a full fine-tune does to a checkpoint):
    nearly every stored value changes, so chunk-level dedup can find almost nothing."""
    total = 0
    for path in shards(folder):
        tensors = stored_tensors(path)
        _perturb(path, tensors, seed, FINETUNE)
        total += sum(s.end - s.start for s in tensors)
    return {"tensor_bytes": total}


def _perturb(path: Path, tensors: list[Stored], seed: int, purpose: int) -> None:
    """Add small normal noise to every value of `tensors` in the file, in place, a block at a time."""
    noise = _table("F32", 0.0, 1.0)
    with open(path, "r+b") as f:
        for s in tensors:
            rng = _rng(seed, s.name, purpose)
            scale = np.float32(NUDGE_NORM if "norm" in s.name else NUDGE_WEIGHT)
            width = DTYPE_BYTES[s.dtype]
            for offset in range(s.start, s.end, BLOCK * width):
                f.seek(offset)
                raw = np.frombuffer(f.read(min(BLOCK * width, s.end - offset)), STORAGE[s.dtype])
                values = decode(raw, s.dtype)
                values += _draw(rng, noise, len(values)) * scale
                f.seek(offset)
                f.write(encode(values, s.dtype))


def rewrite_metadata(folder: Path, note: str = "re-saved by the aibackup benchmarks") -> dict[str, Any]:
    """A metadata-only change: every shard's header gets ``__metadata__["note"] = note`` (grown until the
    padded header's length changes), so every tensor's absolute offset shifts while its bytes stay. Each
    file is rewritten whole (a temporary beside it, then renamed over it). Returns each file's shift."""
    shifts = {}
    for path in shards(folder):
        start, header = read_header(path)
        metadata = {**header.pop("__metadata__", {}), "note": note}
        new = _header({"__metadata__": metadata, **header})
        while len(new) == start:
            metadata["note"] += "."
            new = _header({"__metadata__": metadata, **header})
        tmp = path.with_name(path.name + ".tmp")
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            dst.write(new)
            src.seek(start)
            shutil.copyfileobj(src, dst, COPY_BLOCK)
        os.replace(tmp, path)
        shifts[path.name] = len(new) - start
    return {"files": len(shifts), "shift_bytes": shifts}


def bare_copy(src: Path, dst: Path) -> float:
    """The baseline of a backup and a restore: every file under `src` read in 8 MiB blocks, hashed
    (sha256), written to the same relative path under `dst` and fsynced, its mode copied; symbolic links
    recreated as links; each folder fsynced once its entries exist. Returns the seconds it took."""
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    buf = bytearray(COPY_BLOCK)
    view = memoryview(buf)
    for root, dirs, files in os.walk(src):
        here = Path(root)
        out = dst / here.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in sorted(dirs + files):
            source, target = here / name, out / name
            if source.is_symlink():
                os.symlink(os.readlink(source), target)
            elif name in files:
                digest = hashlib.sha256()
                with open(source, "rb", buffering=0) as fin, open(target, "wb", buffering=0) as fout:
                    while n := fin.readinto(buf):
                        digest.update(view[:n])
                        fout.write(view[:n])
                    os.fsync(fout.fileno())
                shutil.copymode(source, target)
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - started


def tree_bytes(folder: Path) -> int:
    """Bytes of every regular file under `folder`."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def tree_digests(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under `folder` (by relative path), and each link's target."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            digest = hashlib.sha256()
            with open(p, "rb") as f:
                while block := f.read(COPY_BLOCK):
                    digest.update(block)
            out[rel] = digest.hexdigest()
    return out


# --- the small files ----------------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


GENERATION_CONFIG = {"bos_token_id": 1, "eos_token_id": 2, "max_length": 2048, "pad_token_id": 0}
TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "legacy": False,
    "model_max_length": 2048,
    "pad_token": None,
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": "<unk>",
}


def _config(arch: Architecture, layers: int) -> dict[str, Any]:
    return {
        "_name_or_path": "aibackup-bench/tinyllama-shaped",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": arch.hidden,
        "initializer_range": WEIGHT_STD,
        "intermediate_size": arch.intermediate,
        "max_position_embeddings": 2048,
        "model_type": "llama",
        "num_attention_heads": arch.hidden // HEAD_DIM,
        "num_hidden_layers": layers,
        "num_key_value_heads": arch.kv_heads,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0",
        "use_cache": True,
        "vocab_size": arch.vocab,
    }


LETTERS = "etaoinshrdlcumwfgypbvkjxqz"


def _tokenizer(vocab: int, seed: int) -> dict[str, Any]:
    """A byte-fallback BPE tokenizer.json in the layout of Llama's: specials, 256 byte tokens, then
    seeded word pieces (letters by English frequency, two in three starting a word with ``▁``) and a
    merge for each piece."""
    rng = _rng(seed, "tokenizer.json", TOKENS)
    specials = ["<unk>", "<s>", "</s>"]
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)]
    seen = set(tokens)
    weights = 1 / np.arange(1, len(LETTERS) + 1)
    while len(tokens) < vocab:
        lengths = rng.integers(2, 10, vocab)
        letters = rng.choice(len(LETTERS), int(lengths.sum()), p=weights / weights.sum())
        starts = rng.random(vocab) < 2 / 3
        text = "".join(LETTERS[i] for i in letters)
        end = 0
        for length, start in zip(lengths.tolist(), starts.tolist(), strict=True):
            piece = ("▁" if start else "") + text[end : end + length]
            end += length
            if piece not in seen and len(tokens) < vocab:
                seen.add(piece)
                tokens.append(piece)
    splits = rng.integers(1, 1 << 30, len(tokens))
    merges = []
    for token, split in zip(tokens[len(specials) + 256 :], splits.tolist(), strict=False):
        at = 1 + split % (len(token) - 1)
        merges.append(f"{token[:at]} {token[at:]}")
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    added = [{"id": i, "content": t, **flags} for i, t in enumerate(specials)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<s>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }
