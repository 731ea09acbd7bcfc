"""The repository key: AES-256-GCM for secret values, HMAC-SHA256 for hashes of secret-bearing bytes.

Since 0.5 its 64 bytes are the keyring's seal key (:mod:`aibackup.keyring`), and everything else of an
encrypted repository is encrypted too (:mod:`aibackup.vault`). Repositories encrypted by 0.4 (the
*legacy* scheme, read as before) keep in the marker a random salt, the scrypt parameters and a key
check (an HMAC of a fixed text); never the key. The key comes from ``AIBACKUP_KEY`` (a passphrase) or a key
file (``--key-file`` / ``AIBACKUP_KEY_FILE``), and scrypt derives 64 bytes from it and the salt: the first
32 are the AES-256-GCM key, the last 32 the HMAC key. A wrong key is caught by the key check before
anything is read or written.

Sealed values are ``0x01 || 12-byte random nonce || ciphertext || 16-byte tag``, with the repository id and
the caller's `aad` (say the dataset and file path) authenticated, so a sealed value moved to another file
or another repository does not open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aibackup.errors import ConfigError, ConnectorNotInstalledError, IntegrityError, UsageError

KEY_ENV = "AIBACKUP_KEY"
KEY_FILE_ENV = "AIBACKUP_KEY_FILE"
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_CHECK_TEXT = b"aibackup repository key check v1"
_SEALED_VERSION = b"\x01"


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - a core dependency
        raise ConnectorNotInstalledError(
            "encryption needs the cryptography package: pip install cryptography"
        ) from None
    return AESGCM(key)


def derive(passphrase: bytes, salt: bytes, params: Mapping[str, int]) -> bytes:
    """64 key bytes from a passphrase (scrypt)."""
    n, r, p = scrypt_params(params)
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=64)


def scrypt_params(params: Any, where: str = "") -> tuple[int, int, int]:
    """scrypt's n, r and p from a marker's ``kdf_params``; IntegrityError (a damaged marker, at `where`) for
    missing ones, and for values scrypt refuses (n a power of 2 above 1; r, p at least 1) or that would ask
    for gigabytes or minutes: a marker is damaged then, not obeyed."""
    at = f" {where}" if where else ""
    try:
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"damaged repository marker{at}: bad scrypt parameters") from None
    if not (1 < n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise IntegrityError(f"damaged repository marker{at}: scrypt parameters out of range")
    return n, r, p


class RepositoryKey:
    """The key of one repository (implements aibackup.connectors.base.SecretBox)."""

    def __init__(self, material: bytes, repository_id: str) -> None:
        if len(material) != 64:
            raise ValueError("key material must be 64 bytes")
        self._aead = _aesgcm(material[:32])
        self._mac_key = material[32:]
        self._context = repository_id.encode("utf-8") + b"\x00"

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return _SEALED_VERSION + nonce + self._aead.encrypt(nonce, plaintext, self._context + aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if len(sealed) < 29 or sealed[:1] != _SEALED_VERSION:
            raise IntegrityError("a sealed secret is damaged (bad header)")
        try:
            plaintext: bytes = self._aead.decrypt(sealed[1:13], sealed[13:], self._context + aad)
        except InvalidTag:
            raise IntegrityError("a sealed secret does not open: damaged, moved, or sealed under another key") from None
        return plaintext

    def keyed_hash(self, data: bytes) -> str:
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()

    def check_value(self) -> str:
        return self.keyed_hash(_CHECK_TEXT)


def passphrase_from(key_file: str | None = None) -> bytes | None:
    """The key the user gave: a key file (argument or AIBACKUP_KEY_FILE) or AIBACKUP_KEY; None if neither."""
    path = key_file or os.environ.get(KEY_FILE_ENV)
    if path:
        try:
            data = Path(os.path.expanduser(path)).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
        data = data.rstrip(b"\r\n")
        if not data:
            raise ConfigError(f"the key file {path} is empty")
        return data
    value = os.environ.get(KEY_ENV)
    # fsencode gives back the variable's exact bytes (Python decodes the environment with surrogateescape), so a
    # passphrase that is not UTF-8 works as it does from a key file.
    return os.fsencode(value) if value else None


def new_encryption(passphrase: bytes, repository_id: str) -> dict[str, Any]:
    """The marker's ``encryption`` entry of the 0.4 scheme (salt, parameters, key check): no longer made by
    ``init``; kept so that the tests can make such a repository and prove it still opens."""
    if len(passphrase) < 8:
        raise UsageError("the repository key must be at least 8 characters long")
    salt = secrets.token_bytes(16)
    key = RepositoryKey(derive(passphrase, salt, SCRYPT), repository_id)
    return {
        "cipher": "AES-256-GCM",
        "kdf": "scrypt",
        "kdf_params": dict(SCRYPT),
        "salt": base64.b64encode(salt).decode(),
        "key_check": key.check_value(),
    }


def open_key(encryption: Mapping[str, Any], passphrase: bytes, repository_id: str, where: str) -> RepositoryKey:
    """The repository key from its marker entry and the user's passphrase; UsageError for a wrong key."""
    try:
        salt = base64.b64decode(str(encryption["salt"]), validate=True)
        params = encryption["kdf_params"]
        check = str(encryption["key_check"])
    except (KeyError, ValueError, TypeError):
        raise IntegrityError(f"damaged repository marker {where}: bad encryption parameters") from None
    scrypt_params(params, where)
    key = RepositoryKey(derive(passphrase, salt, params), repository_id)
    if not hmac.compare_digest(key.check_value(), check):
        raise UsageError(f"wrong key for the repository at {where} (from ${KEY_ENV} or the key file)")
    return key
