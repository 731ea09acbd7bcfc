"""aibackup.yaml: the example and every extension load, relative paths follow the file, every kind of mistake is
one line naming file:line and the key, ${VAR} interpolation never leaks a value, durations, where the file is
found."""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import textwrap
from pathlib import Path

import pytest

import aibackup.config
from aibackup.config import (
    Config,
    RetentionPolicy,
    TargetConfig,
    find_config_path,
    load_config,
    parse_duration,
)
from aibackup.errors import ConfigError

EXAMPLE = """\
repository: s3://backups/ai            # or a path
sources:
  kb:      {uri: "chroma:./data/chroma", rpo: 24h, rto: 1h}
  logs:    {uri: "conversations:./logs", rpo: 1h}
targets:
  scratch: {uri: "qdrant:./restore-test/qdrant"}
retention: {keep_last: 3, keep_daily: 7, keep_weekly: 4, keep_monthly: 12}
restore_test: {target: scratch}
"""
SECRET = "s3cr3t-Value-9f8e7d"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs beside its aibackup.yaml (as a user would), so messages read `aibackup.yaml:LINE:`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIBACKUP_CONFIG", raising=False)


def write(text: str, name: str = "aibackup.yaml") -> str:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    Path(name).write_text(textwrap.dedent(text), encoding="utf-8")
    return name


def load(text: str) -> Config:
    return load_config(write(text))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_the_example_loads_with_the_right_values(tmp_path: Path) -> None:
    config = load(EXAMPLE)
    here = str(tmp_path)
    assert config.path == os.path.join(here, "aibackup.yaml")
    assert config.repository == "s3://backups/ai"
    assert list(config.sources) == ["kb", "logs"]  # file order
    kb, logs = config.sources["kb"], config.sources["logs"]
    assert kb.name == "kb" and kb.uri == f"chroma:{here}/data/chroma"
    assert (kb.rpo, kb.rto) == (dt.timedelta(hours=24), dt.timedelta(hours=1))
    assert kb.collections == () and kb.on_bad_line == "fail" and kb.retention is None and not kb.restore_test_skip
    assert logs.uri == f"conversations:{here}/logs" and logs.rpo == dt.timedelta(hours=1) and logs.rto is None
    assert config.targets == {"scratch": TargetConfig("scratch", f"qdrant:{here}/restore-test/qdrant")}
    assert config.retention == RetentionPolicy(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=12)
    assert config.retention_for("kb") == config.retention
    assert config.restore_test.target == "scratch"
    assert (config.restore_test.min_recall, config.restore_test.queries) == (None, None)
    assert config.restore_test.report is None
    assert config.restore_test.recall_tolerance == 0.05
    assert config.key_file is None and config.metrics_file is None
    assert config.lock_stale_after == dt.timedelta(minutes=10)
    assert config.source("logs") is logs


def test_every_extension(tmp_path: Path) -> None:
    here = str(tmp_path)
    config = load(
        """\
        repository: ./repo
        key_file: secrets/aibackup.key
        metrics_file: /var/lib/node_exporter/aibackup.prom
        lock: {stale_after: 15m}
        sources:
          kb:
            uri: chroma:./data/chroma
            collections: [docs, faq]
            retention: {keep_daily: 14, keep_weekly: 0, keep_within: 2d}
            golden_queries: golden/kb.jsonl
            restore_test: {target: scratch}
          logs: {uri: "conversations:./logs", on_bad_line: skip, restore_test: {skip: true}}
          ft: {uri: "finetune:./data/ft", job_config: ./data/ft/job.yaml}
          deploy: {uri: "config:./deploy", redact_secrets: true}
          remote: "qdrant+http://qdrant:6333"
        targets:
          scratch: {uri: "qdrant:./restore-test/qdrant"}
          folder: "conversations:./restored"
        retention: {keep_last: 3, keep_daily: 7, keep_weekly: 4, keep_monthly: 12, keep_yearly: 2, keep_hourly: 24}
        restore_test: {target: scratch, min_recall: 1, queries: 0, report: reports/drill}
        """
    )
    assert config.repository == f"{here}/repo"
    assert config.key_file == f"{here}/secrets/aibackup.key"
    assert config.metrics_file == "/var/lib/node_exporter/aibackup.prom"
    assert config.lock_stale_after == dt.timedelta(minutes=15)
    kb = config.source("kb")
    assert kb.collections == ("docs", "faq")
    assert kb.retention == RetentionPolicy(keep_daily=14, keep_weekly=0, keep_within=dt.timedelta(days=2))
    assert kb.golden_queries == f"{here}/golden/kb.jsonl"
    assert kb.restore_test_target == "scratch" and not kb.restore_test_skip
    assert config.retention_for("kb") == RetentionPolicy(
        keep_last=3, keep_hourly=24, keep_daily=14, keep_weekly=0, keep_monthly=12, keep_yearly=2,
        keep_within=dt.timedelta(days=2),
    )  # fmt: skip
    assert config.retention_for("logs") == config.retention
    logs = config.source("logs")
    assert logs.on_bad_line == "skip" and logs.restore_test_skip and logs.restore_test_target is None
    assert config.source("ft").job_config == f"{here}/data/ft/job.yaml"
    assert config.source("deploy").redact_secrets is True
    assert config.source("remote").uri == "qdrant+http://qdrant:6333"
    assert config.targets["folder"].uri == f"conversations:{here}/restored"
    assert config.restore_test.min_recall == 1.0 and isinstance(config.restore_test.min_recall, float)
    assert config.restore_test.queries == 0 and config.restore_test.report == f"{here}/reports/drill"


def test_no_retention_keeps_everything_and_merging_rules() -> None:
    config = load("repository: r\nsources: {kb: 'chroma:./x'}\n")
    assert config.retention is None and config.retention_for("kb") is None
    base = RetentionPolicy(keep_last=3, keep_daily=7)
    assert base.merged(None) is base
    assert base.merged(RetentionPolicy(keep_daily=1)) == RetentionPolicy(keep_last=3, keep_daily=1)
    assert RetentionPolicy().is_empty() and not RetentionPolicy(keep_weekly=0).is_empty()
    config = load("repository: r\nsources: {kb: {uri: 'chroma:./x', retention: {keep_last: 2}}}\n")
    assert config.retention_for("kb") == RetentionPolicy(keep_last=2)


def test_relative_paths_follow_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(
        """\
        repository: ../repo
        key_file: ~/aibackup.key
        sources:
          a: "chroma:../data/chroma"
          b: "conversations+sqlite:./logs.db?table=chat"
          c: "conversations:./logs/*.jsonl"
          d: "config:/etc/app"
          e: "chroma+https://chroma.example.com:8443?tenant=t"
          f: "finetune:~/ft"
        targets:
          bare: qdrant
          server: "qdrant+http://qdrant:6333"
        """,
        "etc/aibackup.yaml",
    )
    config = load_config(path)
    here, etc = str(tmp_path), str(tmp_path / "etc")
    assert config.path == f"{etc}/aibackup.yaml"
    assert config.repository == f"{here}/repo"
    assert config.key_file == f"{here}/home/aibackup.key"
    uris = {name: s.uri for name, s in config.sources.items()}
    assert uris == {
        "a": f"chroma:{here}/data/chroma",
        "b": f"conversations+sqlite:{etc}/logs.db?table=chat",
        "c": f"conversations:{etc}/logs/*.jsonl",
        "d": "config:/etc/app",
        "e": "chroma+https://chroma.example.com:8443?tenant=t",
        "f": f"finetune:{here}/home/ft",
    }
    assert config.targets["bare"].uri == f"qdrant:{etc}/aibackup-restore/qdrant"
    assert config.targets["server"].uri == "qdrant+http://qdrant:6333"
    assert load("repository: s3://b/p\nsources: {a: 'chroma:x'}\n").repository == "s3://b/p"


def test_yaml_anchors_merge_keys_and_x_keys() -> None:
    config = load(
        """\
        x-nightly: &nightly {rpo: 24h, rto: 2h}
        repository: r
        sources:
          kb: {<<: *nightly, uri: "chroma:./kb", rto: 30m}
        """
    )
    kb = config.source("kb")
    assert (kb.rpo, kb.rto) == (dt.timedelta(hours=24), dt.timedelta(minutes=30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "repository: r\nsources:\n  kb:\n    uri: chroma:./x\n    rpo: 24x\n",
            'aibackup.yaml:5: sources.kb.rpo: "24x" is not a duration (use 30m, 24h, 7d)',
        ),
        (
            "repository: r\nsources:\n  kb: {uri: 'chroma:./x', rop: 1h}\n",
            'aibackup.yaml:3: sources.kb.rop: unknown key; did you mean "rpo"?',
        ),
        ("repository: r\nsourcs: {}\n", 'aibackup.yaml:2: sourcs: unknown key; did you mean "sources"?'),
        ("repository: r\nzzz: 1\nsources: {}\n", "aibackup.yaml:2: zzz: unknown key; expected one of "),
        (
            "repository: r\nsources:\n  kb: {uri: 'chroma:./x', rpo: 1h}\n  kb: {uri: 'chroma:./y'}\n",
            'aibackup.yaml:4: sources: duplicate key "kb" (first at line 3)',
        ),
        (
            "repository: r\nrepository: s\nsources: {}\n",
            'aibackup.yaml:2: duplicate key "repository" (first at line 1)',
        ),
        (
            "repository: r\nsources:\n  kb: {uri: 'chroma:./x'}\nretention:\n  keep_last: three\n",
            'aibackup.yaml:5: retention.keep_last: expected a whole number, got text "three"',
        ),
        (
            "repository: r\nsources:\n  kb: {uri: 'chroma:./x'}\nretention:\n  keep_daily: -1\n",
            'aibackup.yaml:5: retention.keep_daily: "-1" is below 0',
        ),
        (
            "repository: r\nsources:\n  kb: {uri: 'chroma:./x', retention: {keep_last: 0}}\n",
            "aibackup.yaml:3: sources.kb.retention: keeps no bundle of kb at all: set a rule above 0",
        ),
        (
            "repository: r\nsources: {kb: 'chroma:x'}\nretention:\n  keep_daily: 0\n",
            "aibackup.yaml:4: retention: keeps no bundle of kb at all",
        ),
        ("repository: r\nsources: {}\n", "aibackup.yaml:2: sources: no sources"),
        ("repository: r\nsources:\n", "aibackup.yaml:2: sources: no sources"),
        ("repository: r\n", "aibackup.yaml:1: sources: missing"),
        ("sources: {kb: 'chroma:x'}\n", "aibackup.yaml:1: repository: missing"),
        ("- a\n- b\n", "aibackup.yaml:1: expected a mapping, got a list"),
        (
            "repository: r\nsources: {kb: 'chroma:./x'}\ntargets: {t: qdrant}\nrestore_test:\n  target: scratch\n",
            'aibackup.yaml:5: restore_test.target: "scratch" is not a target (targets: t)',
        ),
        (
            "repository: r\nsources:\n  kb:\n    uri: chroma:./x\n    restore_test: {target: nope}\n",
            'aibackup.yaml:5: sources.kb.restore_test.target: "nope" is not a target (targets: none)',
        ),
        (
            "repository: r\ntargets: {t: 'qdrant:./q'}\nsources:\n  logs:\n    uri: conversations:./l\n"
            "    restore_test:\n      target: t\n",
            "aibackup.yaml:7: sources.logs.restore_test.target: 't' holds vectors; this source holds conversations",
        ),
        ("repository: r\nsources:\n  kb: {uri: 'chromadb:./x'}\n", "aibackup.yaml:3: sources.kb.uri: unknown store"),
        ("repository: r\nsources:\n  kb: 'chroma'\n", 'aibackup.yaml:3: sources.kb: unknown store "chroma"'),
        ("repository: r\nsources:\n  kb: {uri: 'qdrant+http://'}\n", "aibackup.yaml:3: sources.kb.uri: bad store"),
        (
            "repository: r\nsources: {kb: 'chroma:x'}\ntargets:\n  t: 'qdrant+ftp://q'\n",
            "aibackup.yaml:4: targets.t: unknown store \"qdrant+ftp://q\": after 'qdrant+' comes http or https",
        ),
        ("repository: r\nsources:\n  kb: {rpo: 1h}\n", "aibackup.yaml:3: sources.kb.uri: missing"),
        ("repository: r\nsources:\n  'k b': 'chroma:x'\n", "aibackup.yaml:3: sources.k b: a name is letters"),
        (
            "repository: r\nsources:\n  kb: {uri: 'chroma:x', collections: docs}\n",
            "aibackup.yaml:3: sources.kb.collections: expected a list of names, got text",
        ),
        (
            "repository: r\nsources:\n  kb:\n    uri: chroma:x\n    collections:\n      - a\n      - a\n",
            'aibackup.yaml:7: sources.kb.collections[1]: "a" is listed twice',
        ),
        (
            "repository: r\nsources:\n  kb: {uri: 'chroma:x', job_config: j.yaml}\n",
            "aibackup.yaml:3: sources.kb.job_config: only for finetune sources, not chroma",
        ),
        (
            "repository: r\nsources:\n  l: {uri: 'conversations:x', golden_queries: g.json}\n",
            "aibackup.yaml:3: sources.l.golden_queries: only for vectors sources, not conversations",
        ),
        (
            "repository: r\nsources:\n  l: {uri: 'conversations:x', on_bad_line: ignore}\n",
            'aibackup.yaml:3: sources.l.on_bad_line: "ignore" is not one of fail, skip',
        ),
        (
            "repository: r\nsources:\n  d: {uri: 'config:x', redact_secrets: 1}\n",
            'aibackup.yaml:3: sources.d.redact_secrets: expected true or false, got "1"',
        ),
        (
            "repository: r\nsources: {kb: 'chroma:x'}\nrestore_test: {min_recall: 1.5}\n",
            'aibackup.yaml:3: restore_test.min_recall: expected a number from 0 to 1, got "1.5"',
        ),
        (
            "repository: r\nsources: {kb: 'chroma:x'}\nlock: {stale_after: 0s}\n",
            'aibackup.yaml:3: lock.stale_after: "0s": a duration must be longer than 0',
        ),
        (
            "repository: ftp://host/x\nsources: {kb: 'chroma:x'}\n",
            'aibackup.yaml:1: repository: "ftp://host/x" is not a repository location',
        ),
        ("repository: s3://\nsources: {kb: 'chroma:x'}\n", 'aibackup.yaml:1: repository: "s3://" names no bucket'),
        ("repository:\nsources: {kb: 'chroma:x'}\n", "aibackup.yaml:1: repository: has no value"),
        ("repository: [a]\nsources: {kb: 'chroma:x'}\n", "aibackup.yaml:1: repository: expected a single value"),
        ("repository: r\nsources: {kb: 'chroma:x'}\nqueries: 3\n", "aibackup.yaml:3: queries: unknown key"),
        (
            "repository: r\nsources: {kb: {uri: 'chroma:x', rpo: !!python/name:os.system }}\n",
            "aibackup.yaml:2: sources.kb.rpo: cannot be read as a YAML value",
        ),
        ("repository: r\nsources:\n  kb: {uri: 'chroma:x'\n", "aibackup.yaml:4: not valid YAML: expected ',' or '}'"),
        ("repository: r\nsources:\n\tkb: x\n", "aibackup.yaml:3: not valid YAML: found character '\\t'"),
        ("", "aibackup.yaml: the config file is empty"),
        (
            "repository: r\nsources: {kb: 'chroma:x'}\nlock: {stale_after: 2m}\n",
            'aibackup.yaml:3: lock.stale_after: "2m" is shorter than 3 lock heartbeats (180s)',
        ),
    ],
)
def test_errors_name_file_line_and_key(text: str, expected: str) -> None:
    message = error(text)
    assert message.startswith(expected), message


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError, match=r"^missing\.yaml: cannot read the config file \(No such file"):
        load_config("missing.yaml")
    Path("bad.yaml").write_bytes(b"repository: \xff\n")
    with pytest.raises(ConfigError, match=r"^bad\.yaml: cannot read the config file"):
        load_config("bad.yaml")


def test_unknown_source_names_the_configured_ones() -> None:
    config = load(EXAMPLE)
    with pytest.raises(ConfigError, match=r"no source 'kbb' \(configured: kb, logs\)"):
        config.source("kbb")
    with pytest.raises(ConfigError, match="no source"):
        config.retention_for("nope")


# --- ${VAR} ----------------------------------------------------------------------------------------------


def test_variables_with_and_without_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUCKET", "prod-backups")
    monkeypatch.setenv("KEEP", "5")
    monkeypatch.setenv("EMPTY", "")
    monkeypatch.setenv("RPO", "6h")
    monkeypatch.delenv("UNSET", raising=False)
    config = load(
        """\
        repository: s3://${BUCKET}/ai
        sources:
          kb:
            uri: chroma:${UNSET:-./data}/chroma
            rpo: ${RPO}
            rto: ${UNSET:-1h}
            collections: ["${EMPTY:-docs}", "cost$$"]
            retention: {keep_daily: "${KEEP:-9}"}
          logs: {uri: "conversations:./logs", on_bad_line: "${UNSET:-skip}"}
        retention:
          keep_last: ${KEEP}
          keep_daily: ${UNSET:-7}
        """
    )
    assert config.repository == "s3://prod-backups/ai"
    kb = config.source("kb")
    assert kb.uri == f"chroma:{tmp_path}/data/chroma"
    assert (kb.rpo, kb.rto) == (dt.timedelta(hours=6), dt.timedelta(hours=1))
    assert kb.collections == ("docs", "cost$")
    assert config.retention == RetentionPolicy(keep_last=5, keep_daily=7)
    assert kb.retention == RetentionPolicy(keep_daily=5)
    assert config.source("logs").on_bad_line == "skip"


def test_values_from_the_environment_are_read_as_their_key_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUM", "2024")
    monkeypatch.setenv("YES", "true")
    monkeypatch.setenv("R", "0.75")
    config = load(
        """\
        repository: r
        sources:
          kb: {uri: "chroma:x", collections: ["${NUM}"], retention: {keep_last: "${NUM}"}}
          d: {uri: "config:x", redact_secrets: "${YES}"}
        restore_test: {queries: "${NUM}", min_recall: "${R}"}
        """
    )
    kb = config.source("kb")
    assert kb.collections == ("2024",) and kb.retention == RetentionPolicy(keep_last=2024)
    assert config.source("d").redact_secrets is True
    assert (config.restore_test.queries, config.restore_test.min_recall) == (2024, 0.75)
    message = error('repository: r\nsources: {kb: "chroma:x"}\nretention: {keep_last: "${YES}"}\n')
    assert message == (
        'aibackup.yaml:3: retention.keep_last: expected a whole number, got true/false "${YES}" (from the environment)'
    )


def test_missing_variable_names_the_variable_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUCKET", SECRET)
    monkeypatch.delenv("NOPE", raising=False)
    message = error("repository: s3://${BUCKET}/ai\nsources:\n  kb: {uri: 'chroma:${NOPE}/x'}\n")
    assert message == "aibackup.yaml:3: sources.kb.uri: ${NOPE} is not set (for a default write ${NOPE:-default})"
    assert SECRET not in message


@pytest.mark.parametrize("text", ["${1X}", "${X", "${}", "${X:default}"])
def test_bad_references(text: str) -> None:
    message = error(f"repository: 'r{text}'\nsources: {{kb: 'chroma:x'}}\n")
    assert message.startswith("aibackup.yaml:1: repository: bad ${...} reference"), message


@pytest.mark.parametrize(
    "text",
    [
        "repository: '${S}://x'\nsources: {kb: 'chroma:x'}\n",
        "repository: r\nsources: {kb: '${S}'}\n",
        "repository: r\nsources: {kb: 'chroma+http://${S}@host:1'}\n",
        "repository: r\nsources: {kb: 'chroma+http://host:${S}'}\n",
        "repository: r\nsources: {kb: {uri: 'chroma:x', rpo: '${S}'}}\n",
        "repository: r\nsources: {kb: {uri: 'chroma:x', rto: '${S}'}}\n",
        "repository: r\nsources: {kb: {uri: 'chroma:x', collections: ['${S}', '${S}']}}\n",
        "repository: r\nsources: {kb: {uri: 'chroma:x', restore_test: {target: '${S}'}}}\n",
        "repository: r\nsources: {l: {uri: 'conversations:x', on_bad_line: '${S}'}}\n",
        "repository: r\nsources: {d: {uri: 'config:x', redact_secrets: '${S}'}}\n",
        "repository: r\nsources: {kb: 'chroma:x'}\nretention: {keep_last: '${S}'}\n",
        "repository: r\nsources: {kb: 'chroma:x'}\nrestore_test: {min_recall: '${S}'}\n",
        "repository: r\nsources: {kb: 'chroma:x'}\nlock: {stale_after: '${S}'}\n",
        "repository: r\nsources: {'${S}': 'chroma:x'}\n",
        "repository: ${EMPTY}\nsources: {kb: 'chroma:x'}\n",
        "repository: r\nsources: {kb: 'chroma:x'}\nretention:\n  keep_last: ${S}\n",
        "repository: r\nsources:\n  kb:\n    uri: chroma:x\n    rpo: ${S}\n",
    ],
)
def test_secret_values_never_appear_in_errors(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S", SECRET)
    monkeypatch.setenv("EMPTY", "")
    message = error(text)
    assert SECRET not in message and "9f8e7d" not in message, message


def test_secret_values_never_appear_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S", SECRET)
    monkeypatch.setenv("N", "987654")
    monkeypatch.setenv("D", "54321s")
    monkeypatch.setenv("R", "0.8765")
    monkeypatch.setenv("B", "true")
    config = load(
        """\
        repository: s3://bucket/${S}
        key_file: /keys/${S}
        lock: {stale_after: "${D}"}
        sources:
          kb:
            uri: chroma:./${S}
            collections: ["${S}"]
            rpo: ${D}
            retention: {keep_last: "${N}", keep_within: "${D}"}
            restore_test: {target: t, skip: "${B}"}
          d: {uri: "config:./x", redact_secrets: "${B}"}
        targets: {t: "qdrant:./scratch/${S}"}
        retention:
          keep_daily: ${N}
        restore_test: {target: t, queries: "${N}", min_recall: "${R}", report: "${S}"}
        """
    )
    kb = config.source("kb")
    assert config.repository == f"s3://bucket/{SECRET}" and str(kb.uri).endswith(SECRET)  # the values are usable
    assert kb.retention is not None and kb.retention.keep_last == 987654 and kb.rpo == dt.timedelta(seconds=54321)
    everything = [config, kb, config.retention_for("kb"), config.restore_test, config.targets, kb.collections]
    for text in [repr(x) for x in everything] + [f"{config.repository!r}", repr(copy.deepcopy(kb))]:
        for leaked in (SECRET, "987654", "54321", "8765"):
            assert leaked not in text, text
    assert "'s3://bucket/${S}'" in repr(config) and "<from the environment>" in repr(kb)


# --- durations -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("24h", 86400),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("1d 2h", 93600),
        ("1.5h", 5400),
        ("90", 90),
        (" 45 ", 45),
        (90, 90),
        (0.5, 0.5),
        ("0s", 0),
    ],
)
def test_durations(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["24x", "", "h", "-1h", -5, "1h-", "nan", "inf", "1 hour", "1H", float("nan")])
def test_bad_durations(text: str | int | float) -> None:
    with pytest.raises(ConfigError, match=r"is not a duration \(use 30m, 24h, 7d\)"):
        parse_duration(text)


def test_bool_and_huge_durations() -> None:
    with pytest.raises(ConfigError):
        parse_duration(True)
    with pytest.raises(ConfigError, match="too long"):
        parse_duration("99999999999w")


# --- finding the file ------------------------------------------------------------------------------------


def test_find_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_config_path(None) is None
    write(EXAMPLE)
    assert find_config_path(None) == "aibackup.yaml"
    other = write(EXAMPLE, "env/other.yaml")
    monkeypatch.setenv("AIBACKUP_CONFIG", other)
    assert find_config_path(None) == other
    explicit = write(EXAMPLE, "explicit.yaml")
    assert find_config_path(explicit) == explicit
    monkeypatch.setenv("AIBACKUP_CONFIG", "")
    assert find_config_path(None) == "aibackup.yaml"


def test_find_config_path_refuses_a_named_file_that_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    write(EXAMPLE)
    with pytest.raises(ConfigError, match=r"^nope\.yaml: no such config file \(from --config\)$"):
        find_config_path("nope.yaml")
    monkeypatch.setenv("AIBACKUP_CONFIG", "gone.yaml")
    with pytest.raises(ConfigError, match=r"^gone\.yaml: no such config file \(from \$AIBACKUP_CONFIG\)$"):
        find_config_path(None)


def test_the_documented_example_loads() -> None:
    """The module docstring's example (copied into docs/operations.md) is a valid config with every key."""
    doc = aibackup.config.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    config = load(textwrap.dedent(block))
    assert list(config.sources) == ["kb", "logs", "ft", "deploy", "docs"]
    kb = config.source("kb")
    assert kb.collections == ("docs", "faq") and kb.restore_test_target == "scratch" and kb.golden_queries
    assert config.restore_test.report and config.key_file and config.metrics_file


def test_one_store_is_one_source_and_never_a_scratch_target(tmp_path: Path) -> None:
    """Bundles are told apart by their store: two sources of one store would prune each other's bundles,
    and a drill restoring into a source's own store would overwrite it."""
    path = tmp_path / "aibackup.yaml"
    path.write_text("repository: ./r\nsources:\n  a: {uri: 'chroma:./c', collections: [x]}\n  b: {uri: 'chroma:./c'}\n")
    with pytest.raises(ConfigError, match=r"aibackup.yaml:4: sources.b.uri: the same store as source 'a'"):
        load_config(str(path))
    path.write_text("repository: ./r\nsources:\n  a: {uri: 'chroma:./c'}\ntargets:\n  live: chroma:./c\n")
    with pytest.raises(ConfigError, match=r"aibackup.yaml:5: targets.live: is the store of source 'a'"):
        load_config(str(path))


def test_sse_keys_join_the_options_a_repository_url_already_has() -> None:
    config = load(
        """
        repository: s3://backups-eu/ai?region=eu-west-1
        sse: aws:kms
        sse_kms_key_id: alias/bucket-key
        sources: {kb: {uri: "chroma:./data"}}
        """
    )
    assert config.repository == "s3://backups-eu/ai?region=eu-west-1&sse=aws:kms&sse_kms_key_id=alias/bucket-key"


def test_sse_given_in_the_url_and_as_a_key_is_refused_where_it_is_written() -> None:
    """`sse` in both places made the URL carry it twice: the config loaded, then every command said "option
    'sse' given twice" of a URL nobody wrote (the key's value had won before)."""
    with pytest.raises(ConfigError, match=r"sse: the repository URL sets sse already: give it in one place"):
        load(
            """
            repository: s3://backups-eu/ai?sse=AES256
            sse: aws:kms
            sources: {kb: {uri: "chroma:./data"}}
            """
        )


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("conversations:./logs", "conversations:./logs/drill"),  # inside: the next backup takes the copy as logs
        ("conversations:./logs/*.jsonl", "conversations:./logs/drill"),  # a glob counts from its folder
        ("chroma:./data/chroma", "qdrant:./data"),  # holding the source's folder
        ("lancedb:./db", "lancedb:./db/scratch"),  # an embedded store's folder
    ],
)
def test_a_scratch_target_inside_a_source_or_holding_it_is_refused(tmp_path: Path, source: str, target: str) -> None:
    """The drill restores into its target: one inside a source's folder put a copy of the logs into the logs,
    and each month's backup and drill nested it one level deeper (every run exit 0)."""
    path = tmp_path / "aibackup.yaml"
    path.write_text(f"repository: ./r\nsources:\n  a: {{uri: '{source}'}}\ntargets:\n  scratch: '{target}'\n")
    with pytest.raises(ConfigError, match=r"targets.scratch: lies inside the store of source 'a' or holds it"):
        load_config(str(path))


def test_a_scratch_target_beside_a_source_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "aibackup.yaml"
    path.write_text(
        "repository: ./r\nsources:\n  a: {uri: 'conversations:./logs'}\n  b: 'qdrant+http://q:6333'\n"
        "targets:\n  scratch: 'conversations:./logs-drill'\n  q: 'qdrant+http://q:6334'\n"
    )
    assert set(load_config(str(path)).targets) == {"scratch", "q"}


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("copies: [{repository: ./r/.}]", "copies[0].repository"),
        ("copies: [{repository: ./c}, {repository: ./sub/../r}]", "copies[1].repository"),
        ("restore_test: {repository: ./r/}", "restore_test.repository"),
        ("copies: [{repository: 's3://b/p?region=eu-west-1'}]", "copies[0].repository"),
    ],
)
def test_a_copy_that_is_the_repository_itself_is_refused(tmp_path: Path, section: str, path: str) -> None:
    """A configured copy that is the repository (however spelled): every night's copy failed after the
    backups; as the drill's repository, the drill proved the repository itself and called it the copy."""
    repository = "s3://b/p" if "s3://" in section else "./r"
    config = tmp_path / "aibackup.yaml"
    config.write_text(f"repository: {repository}\nsources:\n  a: {{uri: 'conversations:./logs'}}\n{section}\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(path)}: '.*' is the repository itself"):
        load_config(str(config))
    config.write_text(f"repository: ./elsewhere\nsources:\n  a: {{uri: 'conversations:./logs'}}\n{section}\n")
    assert load_config(str(config)).repository.endswith("elsewhere")
