"""Realistic conversation logs and fine-tuning data for the connector tests, plus round-trip helpers.

Records carry unicode and emoji, nested tool calls, every timestamp form the connector reads, and the odd
field a real log has; files come plain, gzip (multi-member when appended) or zstd (multi-frame when
appended), with CRLF or without a final newline when asked.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import zstandard

from aibackup.connectors.base import Connector, DatasetDescription, ExportState, ImportPlan
from aibackup.connectors.registry import open_connector
from aibackup.manifests.digest import DatasetDigest, record_digests

TEXTS = [
    "Bonjour, où est la gare ? 🚉",
    "日本語のテキストと絵文字 🎌🍣",
    "Ünïcödé ✓ — “quotes” and ‘single’ «guillemets»",
    "emoji family 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    'JSON inside: {"a": [1, 2, {"b": null}]}',
    "tabs\tand\nnewlines\r\nin a string",
    "Zero width\u200bjoiner and \u0000 NUL",
    "مرحبا بالعالم",
]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-70b"]


def tool_call_messages(i: int) -> list[dict[str, Any]]:
    """An OpenAI-style conversation with a nested tool call and its result."""
    return [
        {"role": "system", "content": "You are a helpful assistant. 🤖"},
        {"role": "user", "content": [{"type": "text", "text": TEXTS[i % len(TEXTS)]}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "arguments": json.dumps({"query": TEXTS[(i + 1) % len(TEXTS)], "filters": {"k": [1, 2.5]}}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"results": [{"id": i, "score": 0.9}]})},
        {"role": "assistant", "content": f"Here you go #{i} ✨"},
    ]


def exchange(i: int, rng: random.Random) -> dict[str, Any]:
    """One logged exchange: typed fields in every accepted form, plus fields kept in `extra`."""
    forms = [
        f"2026-11-{1 + i % 28:02d}T02:{i % 60:02d}:00Z",
        f"2026-11-{1 + i % 28:02d}T03:00:00.123456+02:00",
        f"2026-11-{1 + i % 28:02d} 04:00:00",  # naive: UTC
        1_790_000_000 + i,  # epoch seconds
        1_790_000_000_000 + i,  # epoch milliseconds
        1_790_000_000.25 + i,
    ]
    record: dict[str, Any] = {
        "user_id": f"user-{rng.randrange(100)}",
        "session_id": f"s-{i // 3}",
        "timestamp": forms[i % len(forms)],
        "model": MODELS[i % len(MODELS)],
        "cost": [0.0012, 3, 1e-9, 0.5][i % 4],
        "input": TEXTS[i % len(TEXTS)],
        "output": TEXTS[(i + 3) % len(TEXTS)],
        "tokens": {"in": rng.randrange(1000), "out": rng.randrange(1000)},
        "tags": ["prod", "eu"] if i % 2 else [],
        "big_int": 2**70 + i,
    }
    if i % 5 == 0:
        record["messages"] = tool_call_messages(i)
    return record


def line(record: Any) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def lines_of(records: Iterable[Any], newline: bytes = b"\n", final: bool = True) -> bytes:
    parts = [line(r) for r in records]
    if not parts:
        return b""
    return newline.join(parts) + (newline if final else b"")


def write(path: Path, data: bytes, *, append: bool = False) -> None:
    """Write `data` (decompressed content) to `path`, compressed by its suffix; appending to a .gz adds a
    gzip member and to a .zst a zstd frame, as log shippers do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        blob = gzip.compress(data)
    elif path.name.endswith(".zst"):
        blob = zstandard.ZstdCompressor().compress(data) if data else b""
    else:
        blob = data
    with open(path, "ab" if append else "wb") as fh:
        fh.write(blob)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- round trips ------------------------------------------------------------------------------------------


def export_all(conn: Connector, since: Any = None) -> tuple[DatasetDescription, list[pa.RecordBatch], ExportState]:
    """Describe and export the connector's one dataset; the description carries the export's config (as
    the manifest does)."""
    [desc] = conn.describe()
    batches = list(conn.export(desc, since))
    state = conn.export_state(desc.name)
    assert state is not None
    rows = sum(b.num_rows for b in batches)
    return replace(desc, config=dict(state.config or desc.config), rows=rows), batches, state


def rows_of(batches: Iterable[pa.RecordBatch]) -> list[dict[str, Any]]:
    return [row for b in batches for row in b.to_pylist()]


def digest_of(batches: Iterable[pa.RecordBatch]) -> tuple[str, int]:
    d = DatasetDigest()
    for b in batches:
        d.add_batch(b)
    return d.hexdigest, d.rows


def by_id(batches: Iterable[pa.RecordBatch]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for b in batches:
        for rid, digest in zip(b.column("id").to_pylist(), record_digests(b), strict=True):
            out[rid] = digest
    return out


def restore(
    uri: str, source: DatasetDescription, batches: Sequence[pa.RecordBatch], mode: str = "create"
) -> tuple[Connector, ImportPlan]:
    """plan_import -> validate_records -> import_, as the restore verb does."""
    conn = open_connector(uri, target=True)
    plan = conn.plan_import(source, source.name, mode=mode, allow_lossy=False)
    assert conn.validate_records(plan, batches) == sum(b.num_rows for b in batches)
    assert conn.import_(plan, batches) == sum(b.num_rows for b in batches)
    return conn, plan


def prove(conn: Connector, plan: ImportPlan, batches: Sequence[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """The restore proof: the target read back through describe/export gives the bundle's records after
    plan.transform, record by record, and every extra check passes. Returns the target's batches."""
    [target] = conn.describe([plan.target.name])
    assert target.schema.equals(plan.target.schema)
    actual = list(conn.export(target))
    expected = [plan.transform(b) for b in batches]
    assert target.rows == sum(b.num_rows for b in batches)
    exp, act = by_id(expected), by_id(actual)
    assert sorted(exp) == sorted(act)
    changed = [i for i in exp if exp[i] != act[i]]
    assert not changed, changed[:5]
    assert digest_of(expected) == digest_of(actual)
    for name, ok, detail in conn.extra_checks(plan):
        assert ok, (name, detail)
    return actual
