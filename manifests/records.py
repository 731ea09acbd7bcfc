"""Canonical Arrow schemas of the record kinds that are not vectors: conversations, finetune, config, model.

Every schema starts with ``id`` (string, not null, unique within the dataset): the record's stable name,
which the restore checks match records by. Record digests (:mod:`aibackup.manifests.digest`) cover every column.

conversations — one row per logged exchange or message line
    ``id`` ``"<source>#<line>"``; ``source`` the file's path relative to the backed-up root (or
    ``table:<name>`` for SQL); ``line`` 1-based line number (SQL: the rowid); ``offset`` byte offset of the
    line in the decompressed file (SQL: null); typed fields where the record has them: ``timestamp``
    (UTC, microseconds), ``session_id``, ``user_id``, ``model``, ``cost``, ``input``, ``output``,
    ``messages`` (canonical JSON of an OpenAI-style list); ``extra`` canonical JSON of every other field;
    ``raw`` the line's exact bytes including its terminator (SQL: canonical JSON of the row);
    ``valid`` false for a line that is not a JSON object (kept raw only, under ``--on-bad-line skip``).

finetune — one row per line of a fine-tuning JSONL file
    ``id`` ``"<file>#<line>"``; ``file``, ``line``, ``offset`` as above; ``raw`` exact bytes;
    ``format`` "chat" | "preference" | "plain" | "blank" | "invalid"; ``messages`` canonical JSON of the
    example's messages (chat; preference: the input messages) or null; ``valid``; ``problem`` why not.

config — one row per file (or symlink) under a configuration folder
    ``id`` and ``path`` the '/'-separated relative path; ``type`` "file" | "symlink"; ``mode`` permission
    bits; ``content`` the bytes with every secret value cut out (null for a symlink); ``link`` a
    symlink's target; ``secrets`` the cut-out values and their offsets (canonical JSON), sealed with
    AES-256-GCM under the repository key with ``config:<path>`` as associated data (null when the file
    holds none); ``redacted`` how many ``REDACTED-BY-AIBACKUP`` placeholders the content holds (under
    ``--redact-secrets`` every secret value is replaced by one, and a restore writes them back as they
    are); ``sha256`` always names its hash: ``sha256:<hex>`` of the bytes a restore writes (for a
    symlink, of its target text), or for a file holding sealed secrets ``hmac-sha256:<hex>`` keyed by the
    repository key (a plain hash would let weak secrets be guessed offline).

model — one row per file (or symlink) under a model folder; the bytes live in the repository's chunk store
    ``id`` and ``path`` the '/'-separated relative path; ``type`` "file" | "symlink"; ``mode`` permission
    bits; ``size`` the file's bytes (0 for a symlink); ``sha256`` ``sha256:<hex>`` of the file's bytes (the
    same as a Hugging Face LFS object id; for a symlink, of its target text); ``link`` a symlink's target;
    ``chunks`` the ids of the file's content-defined chunks in file order, 32 bytes each, concatenated
    (null for a symlink; a chunk's id is the sha256 of its bytes, or in an encrypted repository their
    HMAC-SHA256 under a key derived from the repository key); ``format`` canonical JSON of what the file
    is (``{"format", "valid", "problem", "summary"}``: safetensors, GGUF, ...; null for a symlink).
"""

from __future__ import annotations

import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")

CONVERSATIONS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("offset", pa.int64()),
        pa.field("timestamp", UTC_MICROS),
        pa.field("session_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("cost", pa.float64()),
        pa.field("input", pa.string()),
        pa.field("output", pa.string()),
        pa.field("messages", pa.string()),
        pa.field("extra", pa.string()),
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("valid", pa.bool_(), nullable=False),
    ]
)

FINETUNE = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("messages", pa.string()),
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("problem", pa.string()),
    ]
)

CONFIG = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("mode", pa.int64(), nullable=False),
        pa.field("content", pa.binary()),
        pa.field("link", pa.string()),
        pa.field("secrets", pa.binary()),
        pa.field("redacted", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)

MODEL = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("mode", pa.int64(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("link", pa.string()),
        pa.field("chunks", pa.binary()),
        pa.field("format", pa.string()),
    ]
)

SCHEMAS = {"conversations": CONVERSATIONS, "finetune": FINETUNE, "config": CONFIG, "model": MODEL}
