"""The `aibackup` command line: thin click commands that call the Python API (aibackup.api) and render
text or JSON. This module holds the group, `init` and the entry point; the commands live beside it
(cli_backup, cli_bundles, cli_ops).

Errors reach the user as one line on stderr (a JSON object under ``--json``) and the exit code of the
README's table; a traceback is shown only with ``AIBACKUP_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

from aibackup import __version__
from aibackup.cli_common import (
    config_option,
    emit_json,
    json_option,
    key_file_option,
    repo_option,
    resolve,
)
from aibackup.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    AibackupError,
    ConfigError,
    Interrupted,
    UsageError,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="aibackup")
def cli() -> None:
    """Back up and restore the state of AI systems: vector stores into versioned, checksummed Parquet
    bundles; restore into the same or another backend, proven by integrity checks."""


@cli.command()
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt every byte written (AES-256-GCM) under a random master key, kept in key slots: a "
    "passphrase slot ($AIBACKUP_KEY or --key-file) and/or an AWS KMS slot (--kms-key-id).",
)
@click.option(
    "--kms-key-id",
    metavar="ARN|ALIAS",
    default=None,
    help="With --encrypt: also (or only) wrap the master key with this AWS KMS key, so that jobs with AWS "
    "credentials need no passphrase.",
)
@key_file_option
@repo_option
@config_option
@json_option
def init(
    encrypt: bool,
    kms_key_id: str | None,
    key_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Create an empty repository at --repo."""
    repo, config = resolve(repo, config_path)
    from aibackup.crypto import KEY_ENV, passphrase_from
    from aibackup.repository import Repository

    passphrase = None
    kms_key_id = kms_key_id or (config.kms_key_id if config is not None else None)
    if kms_key_id and not encrypt:
        raise UsageError("--kms-key-id wraps the key of an encrypted repository: add --encrypt")
    if key_file and not encrypt:  # it would make a repository without encryption, and say nothing
        raise UsageError("--key-file holds the passphrase of an encrypted repository: add --encrypt")
    if config is not None and config.key_file and not encrypt:  # its next backup would refuse the key file
        raise UsageError(f"{config.path} names a key_file: add --encrypt (or remove key_file from the config)")
    if encrypt:
        passphrase = passphrase_from(key_file or (config.key_file if config is not None else None))
        if passphrase is None and not kms_key_id:
            raise ConfigError(f"--encrypt needs a key: set {KEY_ENV}, pass --key-file, or give --kms-key-id")
    created = Repository.init(repo, passphrase=passphrase, kms_key_id=kms_key_id)
    if as_json:
        emit_json({"repository": created.storage.display(), "created": True, "encrypted": created.encrypted})
    else:
        kind = "encrypted repository" if created.encrypted else "repository"
        click.echo(f"created {kind} at {created.storage.display()}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every error into one line and a documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    if not args:  # no command: the help, on stdout, as a success (not an error line)
        click.echo(cli.get_help(click.Context(cli, info_name="aibackup")))
        sys.exit(EXIT_OK)
    try:
        # make_context/invoke rather than cli.main: main() prints a blank line to stderr on Ctrl-C.
        with cli.make_context("aibackup", list(args)) as ctx:
            cli.invoke(ctx)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(as_json, "usage", exc.format_message(), EXIT_USAGE)
    except BrokenPipeError:
        # The reader of our output went away (`aibackup list --json | head`): nothing is wrong here.
        # Point stdout at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
    except (KeyboardInterrupt, click.exceptions.Abort) as exc:
        # Interrupted says what the interruption left (a restore half-way into a collection).
        _fail(
            as_json,
            "interrupted",
            f"interrupted: {exc}" if isinstance(exc, Interrupted) else "interrupted",
            EXIT_INTERRUPTED,
        )
    except AibackupError as exc:
        _fail(as_json, exc.code, str(exc), exc.exit_code)
    except Exception as exc:  # a bug: still one line, unless the user asks for the traceback
        if os.environ.get("AIBACKUP_DEBUG"):
            traceback.print_exc()
        # The type and where, not the message: a library's message may quote the data it choked on (a
        # config file's secret, a log line), and this line goes to terminals and cron mails.
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
        _fail(
            as_json,
            "internal",
            f"internal error: {type(exc).__name__}{where} (a bug; AIBACKUP_DEBUG=1 shows the details)",
            EXIT_INTERNAL,
        )
    sys.exit(EXIT_OK)


def _fail(as_json: bool, code: str, message: str, exit_code: int) -> None:
    message = " ".join(message.split())  # one line, whatever the underlying library said
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "message": message, "exit_code": exit_code}}), err=True)
    else:
        click.echo(f"aibackup: error: {message}", err=True)
    sys.exit(exit_code)


def _register() -> None:
    from aibackup import cli_backup, cli_bundles, cli_keys, cli_ops

    for module in (cli_backup, cli_bundles, cli_keys, cli_ops):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()
