"""Encryption of every byte an encrypted repository stores (but the marker's public parameters).

Two forms, both AES-256-GCM under keys derived (HKDF-SHA256) from the master key of a generation
(:mod:`aibackup.keyring`), both bound to the repository and to the object's path:

- **Documents** (manifests, reports, pins, locks: whatever goes through ``Storage.read_bytes`` and
  ``write_exclusive``) are one envelope: ``MAGIC || version || generation (uint32 BE) || nonce || ciphertext
  || tag``, with the header, the repository id and the path as associated data. A manifest copied under
  another bundle's name, or a report moved, does not open; neither does one from another repository.
- **Parts** stay Parquet files: Parquet Modular Encryption (``PARE``: every page, the footer with the schema
  and the statistics, AES-GCM with its module AADs) under a key of their own, derived from the generation's
  master key and the part's path, with the repository id and the path as the AAD prefix (not stored: the
  reader supplies it). Swapping two parts, or moving one, fails its footer's authentication.
  Any PME-aware reader opens a part given its key and AAD prefix (:meth:`Vault.part_key`).

The generation of a bundle's parts and manifest follows from its id (:meth:`Keyring.for_bundle`); other
documents use the current generation and name it in their header.
"""

from __future__ import annotations

import secrets
import struct
from typing import Any

from aibackup.crypto import RepositoryKey
from aibackup.errors import IntegrityError
from aibackup.keyring import Generation, Keyring, hkdf

MAGIC = b"aibk"
_VERSION = b"\x01"
_HEADER = len(MAGIC) + 1 + 4
_NONCE = 12
_DOCS_INFO = b"aibackup documents v1"
_PART_INFO = b"aibackup part v1\x00"


def generation_of(raw: bytes) -> int | None:
    """The key generation a sealed document's header names; None when `raw` is not a sealed document."""
    if len(raw) < _HEADER or raw[: len(MAGIC) + 1] != MAGIC + _VERSION:
        return None
    generation: int = struct.unpack(">I", raw[len(MAGIC) + 1 : _HEADER])[0]
    return generation


def bundle_of_part(path: str) -> str:
    """The id of the bundle that wrote the part at `path` (``data/<bundle-id>/...``)."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "data":
        raise IntegrityError(f"a part outside data/<bundle-id>/: {path}")
    return parts[1]


class Vault:
    """The opened keyring of one repository: seals and opens documents, gives part encryption settings."""

    def __init__(self, keyring: Keyring, slot_id: str) -> None:
        self.keyring = keyring
        self.slot_id = slot_id
        self._context = keyring.repository_id.encode() + b"\x00"
        self._doc_ciphers: dict[int, Any] = {}
        self.secrets = RepositoryKey(keyring.seal_key, keyring.repository_id)

    def _doc_cipher(self, generation: Generation) -> Any:
        cipher = self._doc_ciphers.get(generation.id)
        if cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            cipher = self._doc_ciphers[generation.id] = AESGCM(hkdf(generation.key, _DOCS_INFO))
        return cipher

    # --- documents -----------------------------------------------------------------------------------

    def seal(self, path: str, data: bytes) -> bytes:
        """`data` sealed for `path`: a manifest under its bundle's generation, anything else the current."""
        generation = self.keyring.current
        if path.startswith("bundles/") and path.endswith(".json"):
            generation = self.keyring.for_bundle(path[len("bundles/") : -len(".json")])
        header = MAGIC + _VERSION + struct.pack(">I", generation.id)
        nonce = secrets.token_bytes(_NONCE)
        sealed: bytes = self._doc_cipher(generation).encrypt(nonce, data, header + self._context + path.encode())
        return header + nonce + sealed

    def open(self, path: str, raw: bytes, where: str) -> bytes:
        """The plaintext of a document sealed for `path`; IntegrityError naming `where` if it is damaged,
        moved, not encrypted, or sealed by another repository."""
        from cryptography.exceptions import InvalidTag

        generation_id = generation_of(raw)
        if generation_id is None or len(raw) < _HEADER + _NONCE + 16:
            raise IntegrityError(f"damaged {where}: not an encrypted document of this repository")
        header = raw[:_HEADER]
        try:
            generation = self.keyring.by_id(generation_id)
        except IntegrityError as exc:
            raise IntegrityError(f"damaged {where}: {exc}") from None
        nonce = raw[_HEADER : _HEADER + _NONCE]
        try:
            data: bytes = self._doc_cipher(generation).decrypt(
                nonce, raw[_HEADER + _NONCE :], header + self._context + path.encode()
            )
        except InvalidTag:
            raise IntegrityError(
                f"damaged {where}: it does not authenticate (changed, moved from another name, or not written "
                "by this repository)"
            ) from None
        return data

    # --- parts -----------------------------------------------------------------------------------------

    def part_key(self, path: str) -> tuple[bytes, bytes]:
        """The AES-256 key and the AAD prefix of the part at `path` (for PME readers and writers)."""
        generation = self.keyring.for_bundle(bundle_of_part(path))
        return hkdf(generation.key, _PART_INFO + path.encode()), self._context + path.encode()

    def part_encryption(self, path: str) -> Any:
        """pyarrow FileEncryptionProperties for writing the part at `path` (footer and every column
        encrypted with the part's key; the AAD prefix is not stored)."""
        import pyarrow.parquet.encryption as pe

        key, aad = self.part_key(path)
        return pe.create_encryption_properties(key, aad_prefix=aad, store_aad_prefix=False, plaintext_footer=False)

    def part_decryption(self, path: str) -> Any:
        import pyarrow.parquet.encryption as pe

        key, aad = self.part_key(path)
        return pe.create_decryption_properties(key, aad_prefix=aad)
