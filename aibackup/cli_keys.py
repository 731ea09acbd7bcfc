"""``aibackup key list | add | remove | rotate``: the key slots and master keys of an encrypted repository."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from aibackup.cli_common import config_option, emit_json, json_option, key_file_option, repo_option, resolve, table
from aibackup.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from aibackup.api import Repository

NEW_KEY_ENV = "AIBACKUP_NEW_KEY"


@click.group()
def key() -> None:
    """Key slots and master keys of an encrypted repository (every verb needs a working key)."""


def _opened(repo: str | None, config_path: str | None, key_file: str | None) -> tuple[Repository, str | None]:
    from aibackup.api import Repository

    url, config = resolve(repo, config_path)
    opened = Repository.open(url)
    return opened, key_file or (config.key_file if config is not None else None)


@key.command(name="list")
@key_file_option
@repo_option
@config_option
@json_option
def list_(key_file: str | None, repo: str | None, config_path: str | None, as_json: bool) -> None:
    """The key slots (never a key) and the master key generations."""
    opened, key_file = _opened(repo, config_path, key_file)
    found = opened.keys(key_file=key_file)
    if as_json:
        emit_json(found)
        return
    table(
        ["SLOT", "TYPE", "CREATED", "KMS KEY", ""],
        [[s["id"], s["type"], s["created_at"], s.get("kms_key_id") or "-", _state(s)] for s in found["slots"]],
    )
    click.echo("")
    table(
        ["KEY", "CREATED", "ENCRYPTS BUNDLES FROM", ""],
        [
            [str(g["id"]), g["created_at"], g["first_bundle"] or "the first", "current" if g["current"] else ""]
            for g in found["generations"]
        ],
    )


def _state(slot: dict[str, object]) -> str:
    if not slot.get("authentic", True):
        return "NOT AUTHENTIC: not made with this repository's key (check who added it, then remove it)"
    if slot.get("problem"):
        return f"DAMAGED: {slot['problem']}"
    return "opened now" if slot["opened"] else ""


@key.command()
@click.option(
    "--new-key-file",
    metavar="PATH",
    default=None,
    help=f"File holding the new passphrase (default: ${NEW_KEY_ENV}).",
)
@click.option("--kms-key-id", metavar="ARN|ALIAS", default=None, help="Add an AWS KMS slot wrapping with this key.")
@key_file_option
@repo_option
@config_option
@json_option
def add(
    new_key_file: str | None,
    kms_key_id: str | None,
    key_file: str | None,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Add a key slot: a new passphrase (--new-key-file or $AIBACKUP_NEW_KEY) or an AWS KMS key."""
    from aibackup.crypto import passphrase_from

    passphrase = None
    if kms_key_id is not None and (new_key_file or os.environ.get(NEW_KEY_ENV)):
        given = "--new-key-file" if new_key_file else f"${NEW_KEY_ENV}"
        raise UsageError(f"key add adds one slot: give {given} or --kms-key-id, not both (run it twice for two)")
    if kms_key_id is None:
        if new_key_file:
            passphrase = passphrase_from(new_key_file)
        elif os.environ.get(NEW_KEY_ENV):
            passphrase = os.fsencode(os.environ[NEW_KEY_ENV])  # its exact bytes, as a key file gives them
        else:
            raise ConfigError(f"key add needs the new key: --new-key-file PATH, ${NEW_KEY_ENV}, or --kms-key-id")
    opened, key_file = _opened(repo, config_path, key_file)
    slot = opened.add_key(
        passphrase=passphrase.decode("utf-8", "surrogateescape") if passphrase is not None else None,
        kms_key_id=kms_key_id,
        key_file=key_file,
    )
    if as_json:
        emit_json({"added": slot})
    else:
        click.echo(f"added {slot['type']} key slot {slot['id']}")


@key.command()
@click.argument("slot")
@key_file_option
@repo_option
@config_option
@json_option
def remove(slot: str, key_file: str | None, repo: str | None, config_path: str | None, as_json: bool) -> None:
    """Remove key slot SLOT (an id from `key list`): not the last one, nor the one opening the repository."""
    opened, key_file = _opened(repo, config_path, key_file)
    gone = opened.remove_key(slot, key_file=key_file)
    if as_json:
        emit_json({"removed": gone})
    else:
        click.echo(f"removed {gone['type']} key slot {gone['id']}")


@key.command()
@key_file_option
@repo_option
@config_option
@json_option
def rotate(key_file: str | None, repo: str | None, config_path: str | None, as_json: bool) -> None:
    """A new master key for the bundles backed up from now on; older bundles keep theirs (prune retires
    an old key once no bundle uses it). Remove a slot, then rotate: what the removed key could open ends
    with the bundles already written."""
    opened, key_file = _opened(repo, config_path, key_file)
    generation = opened.rotate_key(key_file=key_file)
    if as_json:
        emit_json({"rotated": generation})
    else:
        click.echo(f"master key {generation['id']} encrypts the bundles from {generation['first_bundle']} on")


COMMANDS = [key]
