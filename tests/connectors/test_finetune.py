"""Fine-tuning datasets against real files: classification and per-file summaries, the job config (YAML or
JSON, refused when it holds a secret), and byte-identical restores proven by sha256."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from aibackup.connectors.base import DatasetDescription
from aibackup.connectors.files.finetune import FinetuneConnector, classify
from aibackup.connectors.registry import open_connector
from aibackup.errors import (
    ConfigError,
    DatasetNotFoundError,
    SourceDataError,
    TargetNotEmptyError,
    UnsupportedFeatureError,
)
from aibackup.manifests.records import FINETUNE
from tests.logdata import TEXTS, export_all, line, lines_of, prove, restore, rows_of, sha, tool_call_messages, write


def source(path: Path | str, **options: Any) -> FinetuneConnector:
    conn = open_connector(f"finetune:{path}", options=options)
    assert isinstance(conn, FinetuneConnector)
    return conn


def chat(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Réponds en français. 🇫🇷"},
            {"role": "user", "content": TEXTS[i % len(TEXTS)]},
            {"role": "assistant", "content": f"D'accord ✓ #{i}", "weight": 1},
        ]
    }


def preference(i: int) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": f"Question {i} 🤔"}], "tools": []},
        "preferred_output": [{"role": "assistant", "content": "Good answer"}],
        "non_preferred_output": [{"role": "assistant", "content": "Bad answer"}],
    }


INVALID = {
    b"not json at all\n": "not valid JSON",
    b"[1, 2, 3]\n": "not a JSON object",
    b"\xff\xfe\n": "not UTF-8 text",
    line({"messages": []}) + b"\n": "messages is empty",
    line({"messages": "hello"}) + b"\n": "messages is not a list",
    line({"messages": [{"content": "x"}]}) + b"\n": "messages[1] has no role",
    line({"messages": [{"role": "bot", "content": "x"}]}) + b"\n": "messages[1]: role is not one of",
    line({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]})
    + b"\n": "messages[1]: content must be a string or a list",
    line({"messages": [{"role": "user", "content": "only a question"}]}) + b"\n": "no assistant message",
    line({"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": []})
    + b"\n": "preferred_output is empty",
    line({"preferred_output": [], "non_preferred_output": []}) + b"\n": "input is not an object",
}


def test_classification_of_every_kind_of_line() -> None:
    fmt, messages, problem, roles = classify(line(chat(1)) + b"\n", True)
    assert (fmt, problem, roles) == ("chat", None, ["system", "user", "assistant"])
    assert json.loads(messages or "") == chat(1)["messages"]
    fmt, messages, problem, roles = classify(line({"messages": tool_call_messages(3)}) + b"\r\n", False)
    assert (fmt, problem) == ("chat", None) and roles == ["system", "user", "assistant", "tool", "assistant"]
    fmt, messages, problem, roles = classify(line(preference(2)), False)
    assert (fmt, problem, roles) == ("preference", None, ["user", "assistant", "assistant"])
    assert json.loads(messages or "") == preference(2)["input"]["messages"]
    assert classify(b'{"prompt": "a", "completion": "b"}\n', False)[:3] == ("plain", None, None)
    assert classify(b"  \r\n", False) == ("blank", None, "blank line", [])
    assert classify("\ufeff".encode() + line(chat(0)), True)[0] == "chat"  # a BOM on line 1
    for raw, why in INVALID.items():
        fmt, _, problem, _ = classify(raw, False)
        assert fmt == "invalid" and problem is not None and problem.startswith(why), (raw, problem)


def seed(root: Path) -> dict[str, bytes]:
    files = {
        "train.jsonl": lines_of([chat(i) for i in range(30)] + [{"messages": tool_call_messages(i)} for i in range(5)]),
        "prefs.jsonl.gz": lines_of([preference(i) for i in range(10)], newline=b"\r\n"),
        "mixed/valid.jsonl": b"".join(INVALID) + b"\n" + lines_of([{"prompt": "p", "completion": "c"}], final=False),
        "mixed/empty.jsonl": b"",
        "long.jsonl.zst": line(
            {"messages": [{"role": "user", "content": "x" * 1_000_000}, {"role": "assistant", "content": "🎉"}]}
        )
        + b"\n",
    }
    for name, data in files.items():
        write(root / name, data)
    return files


def test_export_summarises_each_file(tmp_path: Path) -> None:
    files = seed(tmp_path / "ft")
    desc, batches, state = export_all(source(tmp_path / "ft"))
    assert desc.name == "ft" and desc.kind == "finetune" and all(b.schema.equals(FINETUNE) for b in batches)
    rows = rows_of(batches)
    assert source(tmp_path / "ft").describe()[0].rows == len(rows) == 35 + 10 + len(INVALID) + 2 + 1
    summary = {f["name"]: f for f in desc.config["files"]}
    assert summary["train.jsonl"] == {
        "name": "train.jsonl",
        "bytes": len(files["train.jsonl"]),
        "lines": 35,
        "sha256": sha(files["train.jsonl"]),
        "compression": None,
        "examples": 35,
        "formats": {"chat": 35},
        "roles": {"assistant": 40, "system": 35, "tool": 5, "user": 35},
        "invalid": 0,
        "problems": [],
    }
    mixed = summary["mixed/valid.jsonl"]
    assert mixed["formats"] == {"plain": 1, "blank": 1, "invalid": len(INVALID)} and mixed["examples"] == 1
    assert mixed["problems"][0] == "line 1: not valid JSON (Expecting value at column 1)"
    assert mixed["problems"][3] == "line 4: messages is empty" and mixed["invalid"] == len(INVALID)
    assert summary["prefs.jsonl.gz"]["formats"] == {"preference": 10}
    assert summary["mixed/empty.jsonl"]["lines"] == 0 and summary["mixed/empty.jsonl"]["sha256"] == sha(b"")
    assert state.notes and state.notes[0].startswith(f"{len(INVALID)} invalid line(s)")
    assert desc.config["job_config"] is None
    for row in rows:
        assert row["valid"] == (row["format"] in ("chat", "preference", "plain"))
        assert (row["problem"] is None) == row["valid"]
    assert json.dumps(desc.config)  # the manifest keeps it as JSON


def test_restore_is_byte_identical_and_checked(tmp_path: Path) -> None:
    files = seed(tmp_path / "ft")
    (tmp_path / "job.yaml").write_text("base_model: gpt-4o-mini\nseed: 42\n", encoding="utf-8")
    desc, batches, _ = export_all(source(tmp_path / "ft", job_config=str(tmp_path / "job.yaml")))
    conn, plan = restore(f"finetune:{tmp_path / 'out'}", desc, batches)
    prove(conn, plan, batches)
    for name, data in files.items():
        assert (tmp_path / "out" / name.removesuffix(".gz").removesuffix(".zst")).read_bytes() == data, name
    assert (tmp_path / "out" / "job.yaml").read_bytes() == (tmp_path / "job.yaml").read_bytes()
    assert conn.extra_checks(plan) == [("files", True, "6 files (with the job config), sha256 match")]
    (tmp_path / "out" / "mixed" / "empty.jsonl").write_bytes(b"\n")
    assert conn.extra_checks(plan) == [("files", False, "mixed/empty.jsonl: sha256 differs")]
    with pytest.raises(TargetNotEmptyError, match="already exist"):
        restore(f"finetune:{tmp_path / 'out'}", desc, batches)
    conn, plan = restore(f"finetune:{tmp_path / 'out'}", desc, batches, mode="overwrite")
    prove(conn, plan, batches)
    with pytest.raises(UnsupportedFeatureError, match="merge is not supported"):
        restore(f"finetune:{tmp_path / 'out'}", desc, batches, mode="merge")


def test_job_config_yaml_and_json(tmp_path: Path) -> None:
    write(tmp_path / "ft" / "train.jsonl", lines_of([chat(0)]))
    yaml_text = (
        "# job for the support bot ✓\r\n"
        "base_model: gpt-4o-mini-2024-07-18\r\n"
        "hyperparameters:\r\n  n_epochs: 3\r\n  learning_rate_multiplier: 0.1\r\n"
        "seed: 1234\r\nprovider_job_id: ftjob-abc123\r\ncreated: 2026-11-25\r\n"
        "started: 2026-11-25T02:00:00Z\r\n1: numeric key\r\n"
    )
    (tmp_path / "job.yaml").write_bytes(yaml_text.encode())
    desc, _, _ = export_all(source(tmp_path / "ft", job_config=str(tmp_path / "job.yaml")))
    job = desc.config["job_config"]
    assert job["name"] == "job.yaml" and job["text"] == yaml_text
    assert job["parsed"] == {
        "base_model": "gpt-4o-mini-2024-07-18",
        "hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.1},
        "seed": 1234,
        "provider_job_id": "ftjob-abc123",
        "created": "2026-11-25",
        "started": "2026-11-25T02:00:00+00:00",
        "1": "numeric key",
    }
    (tmp_path / "job.json").write_text(json.dumps({"model": "m", "hyperparameters": {"batch_size": 8}}))
    desc, _, _ = export_all(source(tmp_path / "ft", job_config=str(tmp_path / "job.json")))
    assert desc.config["job_config"]["parsed"] == {"model": "m", "hyperparameters": {"batch_size": 8}}


@pytest.mark.parametrize(
    "name, text, error, needle",
    [
        ("missing.yaml", None, ConfigError, "does not exist"),
        ("bad.yaml", "a: [1, 2\nb: c", ConfigError, "neither valid YAML nor JSON"),
        ("bad.json", '{"a": ', ConfigError, "not valid JSON"),
        ("nan.yaml", "lr: .nan\n", ConfigError, "lr is not a finite number"),
        ("bin.yaml", "blob: !!binary aGVsbG8=\n", ConfigError, "blob is a bytes"),
    ],
)
def test_bad_job_configs_are_named(tmp_path: Path, name: str, text: str | None, error: type, needle: str) -> None:
    write(tmp_path / "train.jsonl", lines_of([chat(0)]))
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(error, match=needle) as err:
        source(tmp_path / "train.jsonl", job_config=str(tmp_path / name))
    assert name in str(err.value)


def test_a_job_config_holding_a_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", lines_of([chat(0)]))
    key = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2
    (tmp_path / "job.yaml").write_text(f"base_model: gpt-4o-mini\nseed: 1\napi_key: {key}\n")
    with pytest.raises(SourceDataError) as err:
        source(tmp_path / "train.jsonl", job_config=str(tmp_path / "job.yaml"))
    message = str(err.value)
    assert "job.yaml line 3" in message and "config:" in message and "encrypted" in message
    assert key not in message and key[:12] not in message


def test_job_config_name_colliding_with_a_data_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "ft" / "train.jsonl", lines_of([chat(0)]))
    desc, batches, _ = export_all(source(tmp_path / "ft"))
    config = dict(desc.config, job_config={"name": "train.jsonl", "text": "seed: 1\n", "parsed": {"seed": 1}})
    with pytest.raises(UnsupportedFeatureError, match="has the name of a data file"):
        restore(f"finetune:{tmp_path / 'out'}", DatasetDescription(desc.name, config, desc.rows, "finetune"), batches)


def test_path_traversal_in_a_hand_built_bundle_is_refused(tmp_path: Path) -> None:
    raw = line(chat(0)) + b"\n"
    batch = pa.RecordBatch.from_pylist(
        [
            {
                "id": "../evil.jsonl#1",
                "file": "../evil.jsonl",
                "line": 1,
                "offset": 0,
                "raw": raw,
                "format": "chat",
                "messages": None,
                "valid": True,
                "problem": None,
            }
        ],
        schema=FINETUNE,
    )
    listed = {"format": "jsonl", "files": [{"name": "../evil.jsonl", "sha256": sha(raw)}], "job_config": None}
    with pytest.raises(UnsupportedFeatureError, match=r"'\.\./evil\.jsonl': its name would leave the target folder"):
        restore(f"finetune:{tmp_path / 'out'}", DatasetDescription("ft", listed, 1, "finetune"), [batch])
    unlisted = {"format": "jsonl", "files": [{"name": "ok.jsonl", "sha256": sha(raw)}], "job_config": None}
    conn = open_connector(f"finetune:{tmp_path / 'out'}", target=True)
    plan = conn.plan_import(DatasetDescription("ft", unlisted, 1, "finetune"), "ft", mode="create", allow_lossy=False)
    with pytest.raises(UnsupportedFeatureError, match="leave the target folder"):
        conn.validate_records(plan, [batch])
    with pytest.raises(UnsupportedFeatureError, match="leave the target folder"):
        conn.import_(plan, [batch])
    assert not (tmp_path / "evil.jsonl").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing written, no temporary file left
    job = {"name": "../job.yaml", "text": "seed: 1\n", "parsed": {"seed": 1}}
    with pytest.raises(UnsupportedFeatureError, match="leave the target folder"):
        restore(
            f"finetune:{tmp_path / 'out'}", DatasetDescription("ft", dict(unlisted, job_config=job), 0, "finetune"), []
        )


def test_missing_sources_and_wrong_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        source(tmp_path / "nothing")
    write(tmp_path / "ft" / "a.jsonl", b"")
    with pytest.raises(DatasetNotFoundError, match="not 'other'"):
        source(tmp_path / "ft").describe(["other"])
    desc, batches, _ = export_all(source(tmp_path / "ft"))
    assert batches == [] and desc.rows == 0
    conn, plan = restore(f"finetune:{tmp_path / 'out'}", desc, batches)
    prove(conn, plan, batches)
    assert (tmp_path / "out" / "a.jsonl").read_bytes() == b""
