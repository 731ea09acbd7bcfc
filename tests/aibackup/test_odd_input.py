"""Odd input that once ended in "internal error" (exit 70), or was quietly ignored, now gets one line and a
documented exit code: S3 endpoints and regions botocore refuses, ``~nouser`` paths, Dask addresses Dask cannot
parse, ``AIBACKUP_NOW`` at the end of the calendar, YAML nested a thousand deep, a repository path below a
file, an empty bundle reference, a key file for a repository without encryption, ``--metrics-file`` without
a config, and a folder where a manifest belongs. (Found by probing the CLI; see docs/reliability.md.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Cli, ok, one_line_error, seed_chroma

# Reached before any request: no S3 server is needed to refuse these.
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("s3://bucket/repo?endpoint=http://", ("endpoint 'http://'", "host")),
        ("s3://bucket/repo?endpoint=http://a b", ("endpoint 'http://a b'",)),
        ("s3://bucket/repo?endpoint=http://[::1", ("endpoint", "not a URL")),
        ("s3://bucket/repo?endpoint=http://host:99999", ("endpoint", "not a URL")),
        ("s3://bucket/repo?region=bad_region!", ("region 'bad_region!'", "not a region name")),
    ],
)
def test_s3_repository_options_botocore_refuses_are_usage_errors(
    aws: pytest.MonkeyPatch, cli: Cli, url: str, needles: tuple[str, ...]
) -> None:
    one_line_error(cli("list", "--repo", url), 2, "bad repository", *needles)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AWS_ENDPOINT_URL", "notaurl"), ("AWS_ENDPOINT_URL_S3", "http://"), ("AWS_REGION", "bad region!")],
)
def test_aws_variables_botocore_refuses_are_config_errors_naming_the_variable(
    aws: pytest.MonkeyPatch, cli: Cli, variable: str, value: str
) -> None:
    aws.setenv(variable, value)
    one_line_error(cli("list", "--repo", "s3://bucket/repo"), 2, f"{variable}={value!r}")


def test_a_tilde_of_no_user_stays_as_written_like_a_shell_would(tmp_path: Path, cli: Cli) -> None:
    one_line_error(cli("backup", "chroma:~nouser-aibackup/x", "--repo", "r"), 2, "~nouser-aibackup/x")
    one_line_error(cli("list", "--repo", "~nouser-aibackup/r"), 2, "~nouser-aibackup/r")


def test_a_dask_address_dask_cannot_parse_is_a_usage_error(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    source = f"chroma:{tmp_path / 'chroma'}"
    for address in ("notanaddress", "tcp://", "http://x:y"):
        one_line_error(cli("backup", source, "--dask", address), 2, f"bad Dask scheduler address {address!r}")
    assert not (tmp_path / "aibackup-repo").exists()


def test_aibackup_now_at_the_end_of_the_calendar_is_a_config_error(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    monkeypatch.setenv("AIBACKUP_NOW", "9999-12-31T23:59:59")
    one_line_error(cli("backup", f"chroma:{tmp_path / 'chroma'}"), 2, "AIBACKUP_NOW", "outside")


def test_yaml_nested_a_thousand_deep_is_a_config_error(tmp_path: Path, cli: Cli) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("x-a: " + "[" * 1000 + "]" * 1000 + "\n")
    one_line_error(cli("list", "--config", str(deep)), 2, "deep.yaml", "nested too deeply")


def test_a_folder_given_as_the_config_file_is_named_as_a_folder(tmp_path: Path, cli: Cli) -> None:
    one_line_error(cli("list", "--config", str(tmp_path)), 2, f"{tmp_path} is a folder, not a config file")


def test_a_missing_config_file_says_where_its_name_came_from(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_line_error(cli("list", "--config", "missing.yaml"), 2, "missing.yaml: no such config file (from --config)")
    monkeypatch.setenv("AIBACKUP_CONFIG", "gone.yaml")
    one_line_error(cli("list"), 2, "gone.yaml: no such config file (from $AIBACKUP_CONFIG)")


def test_a_repository_path_below_a_file_names_the_file(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "afile").write_text("not a folder")
    below = str(tmp_path / "afile" / "sub" / "repo")
    for args in (("list",), ("init",), ("verify",)):
        one_line_error(cli(*args, "--repo", below), 2, f"{tmp_path / 'afile'} is a file")


def test_an_empty_bundle_reference_names_no_bundle(tmp_path: Path, cli: Cli) -> None:
    """An empty ``$VAR`` in a script must not silently pick the newest bundle to show, restore or pin."""
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    for args in (("show", ""), ("pin", ""), ("diff", "", "latest"), ("restore", "", "--to", "qdrant:q")):
        one_line_error(cli(*args), 2, "no bundle ''")
    assert not (tmp_path / "q").exists()
    assert ok(cli("verify", "latest", "latest", "--json")).json()["bundles"] == 1  # a bundle named twice is one


def test_a_key_file_for_a_repository_without_encryption_is_refused_by_every_verb(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/stores.md: a key given for an unencrypted repository is an error, not silently ignored. A key in
    the environment (meant for the encrypted ones) only gets a note from a backup into it."""
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)  # the encrypted suite run's key would encrypt the repository
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    source = f"chroma:{tmp_path / 'chroma'}"
    made = ok(cli("backup", source, "--json")).json()["bundle_id"]
    key = tmp_path / "key"
    key.write_text("a passphrase of some length")
    for args in (
        ("backup", source),
        ("verify", "--read-data"),
        ("restore", "latest", "--to", "qdrant:q"),
        ("diff", made, "latest"),
        ("copy", "--to-repo", str(tmp_path / "copy")),
    ):
        one_line_error(cli(*args, "--key-file", str(key)), 2, f"key file {key} given", "not encrypted")
    one_line_error(cli("copy", "--to-repo", str(tmp_path / "copy"), "--to-key-file", str(key)), 2, "not encrypted")
    assert not (tmp_path / "q").exists() and not (tmp_path / "copy").exists()
    monkeypatch.setenv("AIBACKUP_KEY", "a passphrase of some length")
    notes = ok(cli("backup", source, "--json")).json()["notes"]
    assert any("$AIBACKUP_KEY or $AIBACKUP_KEY_FILE is set" in n and "not encrypted" in n for n in notes), notes


def test_metrics_file_without_a_config_is_refused_before_the_backup(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    for extra in ((), ("--json",)):
        one_line_error(
            cli("backup", f"chroma:{tmp_path / 'chroma'}", "--metrics-file", "m.prom", *extra), 2, "--metrics-file"
        )
    assert not (tmp_path / "aibackup-repo").exists() and not (tmp_path / "m.prom").exists()


def test_metrics_file_of_a_source_backed_up_by_uri_is_written_in_text_mode(tmp_path: Path, cli: Cli) -> None:
    """With a config, ``backup SOURCE --metrics-file`` writes the file whether or not the output is JSON."""
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    (tmp_path / "aibackup.yaml").write_text(
        "repository: ./repo\nsources:\n  docs:\n    uri: chroma:./chroma\n    rpo: 24h\n"
    )
    ok(cli("backup", "chroma:./chroma", "--metrics-file", "m.prom"))
    assert 'aibackup_last_success_timestamp_seconds{source="docs"}' in (tmp_path / "m.prom").read_text()


def test_a_flag_of_another_kind_of_source_is_refused_not_ignored(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    source = f"chroma:{tmp_path / 'chroma'}"
    one_line_error(cli("backup", source, "--job-config", "job.yaml"), 2, "--job-config is only for finetune sources")
    one_line_error(cli("backup", source, "--redact-secrets"), 2, "--redact-secrets is only for config sources")
    assert not (tmp_path / "aibackup-repo").exists()


def test_flags_of_backup_source_are_refused_with_the_configs_sources(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aibackup backup` (the config's sources) ignored --collection, --on-bad-line, --job-config,
    --redact-secrets (the config sets them per source) and --key-file (whose own error message said to pass
    it): the first four are refused naming the config key, --key-file is used as every other verb uses it."""
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.jsonl").write_text('{"user_id": "u", "input": "hi", "output": "hello"}\n')
    (tmp_path / "aibackup.yaml").write_text("repository: ./repo\nsources:\n  logs: {uri: 'conversations:./logs'}\n")
    for args, key in [
        (("--collection", "logs"), "sources.NAME.collections"),
        (("--on-bad-line", "fail"), "sources.NAME.on_bad_line"),  # the default value, given: still refused
        (("--job-config", "job.yaml"), "sources.NAME.job_config"),
        (("--redact-secrets",), "sources.NAME.redact_secrets"),
    ]:
        message = f"{args[0]} is for `backup SOURCE`; the config's sources take {key} instead"
        one_line_error(cli("backup", *args), 2, message)
    assert not (tmp_path / "repo").exists()
    one_line_error(cli("backup", "config:./aibackup.yaml", "--on-bad-line", "skip"), 2, "only for conversations")
    key = tmp_path / "repo.key"
    key.write_text("a passphrase long enough for the test\n")
    ok(cli("init", "--encrypt", "--key-file", str(key)))
    refused = cli("backup")
    assert refused.code == 2 and "or pass --key-file" in refused.out + refused.err
    ok(cli("backup", "--key-file", str(key)))
    ok(cli("verify", "--read-data", "--key-file", str(key)))


def test_a_folder_where_a_manifest_belongs_is_a_damaged_repository_for_a_backup(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup into a repository without encryption first reads its oldest and newest manifests (a marker
    whose encryption entry was removed must not get plaintext beside sealed bundles): a folder there is
    damage, exit 1, named."""
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)  # the encrypted suite run's key would encrypt the repository
    seed_chroma(tmp_path / "chroma", "docs", n=20)
    source = f"chroma:{tmp_path / 'chroma'}"
    ok(cli("backup", source))
    folder = tmp_path / "aibackup-repo" / "bundles" / "20991206T095159.951044Z-0b1ca759.json"
    folder.mkdir()
    one_line_error(cli("backup", source), 1, "damaged repository", folder.name)
    folder.rmdir()  # (the suite's check of every manifest written reads each *.json there)
