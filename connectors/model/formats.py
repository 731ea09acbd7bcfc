"""What a model file is, from its header alone, in bounded memory.

A backup reads each file once, streaming; before chunking it asks :func:`inspect` what the file is, handing
it the file's name, size and a ``read_head(n)`` that returns the first ``min(n, size)`` bytes (the caller
buffers them). :func:`inspect` asks for the first 64 KiB, then for as much as the header needs, never more
than :data:`MAX_HEAD` (64 MiB): a header that runs past it is reported as not inspected (valid None, and a
problem saying so), not as damage. Content never raises: a truncated or malformed file is ``valid=False``
with a one-line problem and a summary of what could be read; only bugs (and the caller's own I/O errors from
``read_head``) raise.

Detection, by magic bytes first, then by name (case-insensitive):

- ``GGUF`` magic, or a ``.gguf`` name: ``gguf`` (:mod:`~aibackup.connectors.model.gguf_format`);
- ``.safetensors``: ``safetensors`` (:mod:`~aibackup.connectors.model.safetensors_format`);
- ``*.safetensors.index.json``: ``safetensors-index`` (valid: JSON with a ``weight_map`` object of file names);
- ``adapter_config.json``: ``peft-adapter-config`` (valid None; False when not a JSON object); in these two
  summaries a string holding a lone UTF-16 surrogate (a ``\\u`` escape json.loads keeps, which is not text)
  shows the escape's six characters instead;
- other ``.json``: ``json`` (valid: whether it parses); JSON files over :data:`MAX_JSON` are not parsed;
- ``.bin``/``.pt``/``.pth``/``.ckpt``: ``pytorch``, summary ``{"container": "zip"|"pickle"|"unknown"}``;
- ``.onnx``: ``onnx``;
- anything else whose head looks like a safetensors header: ``safetensors``; else ``other``.

:func:`tensors_at` names the tensors a byte range touches (for reporting a damaged chunk);
:func:`load_check` proves a restored safetensors file loads and matches the header recorded at backup.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aibackup.connectors.model.formatinfo import (
    MAX_HEAD,
    FormatInfo,
    Head,
    HeadTooLarge,
    ReadHead,
    Tensor,
    Truncated,
    escaped,
)
from aibackup.connectors.model.gguf_format import MAGIC as GGUF_MAGIC
from aibackup.connectors.model.gguf_format import inspect_gguf
from aibackup.connectors.model.safetensors_format import inspect_safetensors, looks_like_safetensors
from aibackup.errors import ConnectorNotInstalledError, first_line

__all__ = ["MAX_HEAD", "MAX_JSON", "FormatInfo", "Tensor", "inspect", "load_check", "tensors_at"]

#: JSON files larger than this are not parsed (valid None): configs and indexes are far smaller.
MAX_JSON = 16 << 20
PYTORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: The safetensors dtypes numpy can load (the others, BF16 and the F8/F6/F4 kinds, are checked by header only).
NUMPY_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "F16": "float16",
    "U32": "uint32",
    "I32": "int32",
    "F32": "float32",
    "U64": "uint64",
    "I64": "int64",
    "F64": "float64",
    "C64": "complex64",
}


def inspect(name: str, size: int, read_head: ReadHead) -> FormatInfo:
    """What the file `name` (its relative path) of `size` bytes is, from its head (see the module docstring).
    Never raises for content; `read_head` is called with growing n, each at most ``min(size, MAX_HEAD)``."""
    head = Head(size, read_head)
    lowered = name.replace("\\", "/").lower()
    base = lowered.rsplit("/", 1)[-1]
    if head.data[:4] == GGUF_MAGIC or base.endswith(".gguf"):
        return inspect_gguf(head)
    if base.endswith(".safetensors"):
        return inspect_safetensors(head)
    if base.endswith(".json"):
        return _inspect_json(base, head)
    if base.endswith(PYTORCH_SUFFIXES):
        return FormatInfo("pytorch", None, None, {"container": _container(head.data)}, (), size)
    if base.endswith(".onnx"):
        return FormatInfo("onnx", None, None, {}, (), size)
    if looks_like_safetensors(head.data, size):
        return inspect_safetensors(head)
    return FormatInfo("other", None, None, {}, (), size)


def _container(data: bytes) -> str:
    """torch.save's container: a zip archive (since PyTorch 1.6) or a bare pickle (protocol 2+ opens with
    the PROTO opcode 0x80)."""
    if data[:4] == b"PK\x03\x04":
        return "zip"
    return "pickle" if data[:1] == b"\x80" else "unknown"


def _inspect_json(base: str, head: Head) -> FormatInfo:
    if base.endswith(".safetensors.index.json"):
        kind = "safetensors-index"
    elif base == "adapter_config.json":
        kind = "peft-adapter-config"
    else:
        kind = "json"
    if head.size > MAX_JSON:
        return FormatInfo(kind, None, f"JSON of {head.size} bytes, larger than 16 MiB: not parsed", {}, (), head.size)
    document, problem = _read_json(head)
    if problem is not None:
        return FormatInfo(kind, False, problem, {}, (), head.size)
    if kind == "safetensors-index":
        return _index(escaped(document), head.size)
    if kind == "peft-adapter-config":
        return _adapter_config(escaped(document), head.size)
    return FormatInfo(kind, True, None, {}, (), head.size)


def _read_json(head: Head) -> tuple[Any, str | None]:
    """The whole file as JSON (it is at most MAX_JSON), or None and why not."""
    try:
        head.need(head.size, exact=True)
    except (Truncated, HeadTooLarge):  # the file shrank while being read
        return None, f"the file is shorter than its size ({head.size} bytes)"
    try:
        return json.loads(head.data), None  # bytes: json detects UTF-8/16/32 itself
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except UnicodeDecodeError:
        return None, "not JSON: not UTF-8 text"
    except ValueError:  # an integer of more than 4300 digits (Python's int limit), which json does not wrap
        return None, "not JSON: a number too long"
    except RecursionError:
        return None, "not JSON: nested too deeply"


def _index(document: Any, size: int) -> FormatInfo:
    """A sharded checkpoint's index: ``{"metadata": {"total_size": n}, "weight_map": {tensor: shard file}}``."""
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict):
        return FormatInfo("safetensors-index", False, "no weight_map object", {}, (), size)
    metadata = document.get("metadata")
    summary = {
        "total_size": metadata.get("total_size") if isinstance(metadata, dict) else None,
        "shards": sorted({v for v in weight_map.values() if isinstance(v, str)}),
        "tensors": len(weight_map),
    }
    bad = next((k for k, v in weight_map.items() if not isinstance(v, str)), None)
    problem = None if bad is None else f"weight_map entry {bad!r} is not a file name"
    return FormatInfo("safetensors-index", problem is None, problem, summary, (), size)


def _adapter_config(document: Any, size: int) -> FormatInfo:
    """A PEFT adapter's config: no structure rule (PEFT types differ), only the fields worth a summary."""
    if not isinstance(document, dict):
        return FormatInfo("peft-adapter-config", False, "not a JSON object", {}, (), size)
    summary = {
        key: document[key]
        for key in ("peft_type", "r", "lora_alpha", "base_model_name_or_path", "target_modules")
        if key in document
    }
    if isinstance(summary.get("target_modules"), list):
        summary["target_modules"] = sorted(summary["target_modules"], key=str)
    return FormatInfo("peft-adapter-config", None, None, summary, (), size)


def tensors_at(info: FormatInfo, start: int, end: int) -> list[str]:
    """Names of the tensors whose bytes overlap ``[start, end)``, by start offset (for reporting a damaged
    chunk). Empty for files without tensors and for ranges inside a header."""
    return [t.name for t in info.tensors if t.start < end and start < t.end and t.start < t.end]


def load_check(path: str | os.PathLike[str], info: FormatInfo) -> list[str]:
    """Prove a (restored) safetensors file loads and matches `info`, the header recorded at backup: the same
    tensor names, shapes and dtypes, and every tensor of a dtype numpy supports read whole (one at a time:
    memory is the largest such tensor). Problems, one line each naming the file and tensor; empty when fine
    and for any other format. Only a header that was valid at backup is checked: a file recorded as invalid
    (or not inspected) did not load then either, and failing the restore for it would be a false alarm.
    Raises ConnectorNotInstalledError without the safetensors library."""
    if info.format != "safetensors" or info.valid is not True:
        return []
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise ConnectorNotInstalledError(
            "checking safetensors files needs safetensors: pip install 'aibackup[models]'"
        ) from None
    where = os.fspath(path)
    expected = {t.name: t for t in info.tensors}
    problems: list[str] = []
    try:
        with safe_open(where, framework="numpy") as reader:
            names = set(reader.keys())
            problems += [f"{where}: tensor {n!r} is missing" for n in sorted(expected.keys() - names)]
            problems += [f"{where}: tensor {n!r} was not in the backup" for n in sorted(names - expected.keys())]
            for name in sorted(names & expected.keys()):
                try:
                    problems += _check_tensor(reader, where, expected[name])
                except (SafetensorError, OSError) as exc:  # this tensor's bytes: the others may still be fine
                    problems.append(f"{where}: tensor {name!r} cannot be read: {first_line(exc)}")
    except (SafetensorError, OSError) as exc:
        problems.append(f"{where}: safetensors cannot read it: {first_line(exc)}")
    return problems


def _check_tensor(reader: Any, where: str, tensor: Tensor) -> list[str]:
    """One tensor against the recorded header; loaded through numpy where numpy has its dtype."""
    view = reader.get_slice(tensor.name)
    shape, dtype = tuple(view.get_shape()), view.get_dtype()
    if shape != tensor.shape or dtype != tensor.dtype:
        return [
            f"{where}: tensor {tensor.name!r} is {dtype} {list(shape)}, "
            f"the backup recorded {tensor.dtype} {list(tensor.shape)}"
        ]
    if dtype not in NUMPY_DTYPES:
        return []
    array = reader.get_tensor(tensor.name)
    if tuple(array.shape) != shape or str(array.dtype) != NUMPY_DTYPES[dtype]:
        return [f"{where}: tensor {tensor.name!r} loaded as {array.dtype} {list(array.shape)}"]
    return []
