"""The keys of an encrypted repository: random master keys in a keyring, wrapped once per key slot.

A repository created by ``aibackup init --encrypt`` (0.5 and later; marker ``encryption.scheme`` =
:data:`SCHEME`) holds no key in plaintext. Its **keyring** is:

- **generations**: random 32-byte master keys, each with the first bundle id it encrypts. A bundle, its parts
  and its manifest use the generation whose ``first_bundle`` is the greatest one at or before the bundle's
  id (:meth:`Keyring.for_bundle`), so old bundles stay readable after ``key rotate`` without being
  rewritten, and the generation of a bundle follows from its id alone;
- the **seal key**: 64 random bytes for the inner layer (config secret values, manifest MACs: see
  :class:`aibackup.crypto.RepositoryKey`). It is never rotated: whatever it protects lies inside parts and
  manifests that the generations encrypt.

The keyring is stored in the marker only wrapped, once per **slot** (restic's keys, LUKS's key slots):

- ``passphrase``: scrypt(passphrase, salt) gives the private half of an X25519 key pair; the marker keeps
  the public half, and the keyring is sealed to it (an ephemeral X25519 exchange, HKDF-SHA256, AES-256-GCM).
  Sealing needs only the public key, so ``key rotate`` and ``prune`` re-wrap the keyring for every slot
  without anyone typing every slot's passphrase;
- ``kms``: a random 32-byte slot key encrypted by AWS KMS (see :mod:`aibackup.kms`), the keyring sealed
  under it with AES-256-GCM.

Every seal binds the repository id and the slot id (associated data), so a slot copied into another
repository's marker, or moved to another slot, does not open. Every slot also carries a MAC of its public
fields under a key derived from the seal key: the marker is writable by whoever can write the bucket, and
a slot planted there (an attacker's public key or KMS key) would otherwise be handed the keyring by the
next rotation; :func:`wrap` refuses a slot without a valid MAC.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aibackup import clock
from aibackup.crypto import scrypt_params
from aibackup.errors import ConfigError, IntegrityError, UnavailableError, UsageError

SCHEME = "keyslots-1"
CIPHER = "AES-256-GCM"
#: scrypt's cost, as restic's order of magnitude: about 0.1 s and 32 MiB on this class of machine.
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MIN_PASSPHRASE = 8
_WRAP_INFO = b"aibackup keyring v1"


def _aesgcm(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def hkdf(key: bytes, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 of `key` for one purpose (`info`)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: object, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (ValueError, TypeError):
        raise IntegrityError(f"damaged repository marker: bad {what}") from None


# --- the keyring ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """One master key and the first bundle id it encrypts ("" for the repository's first key)."""

    id: int
    first_bundle: str
    key: bytes
    created_at: str


@dataclass(frozen=True)
class Keyring:
    """Every master key of one repository (oldest first) and its seal key."""

    repository_id: str
    generations: tuple[Generation, ...]
    seal_key: bytes

    @classmethod
    def new(cls, repository_id: str, now: str) -> Keyring:
        return cls(repository_id, (Generation(1, "", secrets.token_bytes(32), now),), secrets.token_bytes(64))

    @property
    def current(self) -> Generation:
        return self.generations[-1]

    def by_id(self, generation: int) -> Generation:
        for g in self.generations:
            if g.id == generation:
                return g
        raise IntegrityError(
            f"encrypted with key generation {generation}, which this repository's keyring no longer holds "
            "(retired by prune, or written by another repository)"
        )

    def for_bundle(self, bundle_id: str) -> Generation:
        """The generation that encrypts bundle `bundle_id` (its parts and manifest)."""
        found = self.generations[0]
        for g in self.generations:
            if g.first_bundle <= bundle_id:
                found = g
        return found

    def rotated(self, first_bundle: str, now: str) -> Keyring:
        """A keyring with a new master key for the bundles from `first_bundle` on."""
        new = Generation(self.current.id + 1, first_bundle, secrets.token_bytes(32), now)
        return replace(self, generations=(*self.generations, new))

    def without(self, retired: Sequence[int]) -> Keyring:
        """The keyring less the generations `retired` (never the current one)."""
        keep = tuple(g for g in self.generations if g.id not in retired or g is self.current)
        return replace(self, generations=keep)

    def to_bytes(self) -> bytes:
        doc = {
            "repository_id": self.repository_id,
            "seal_key": b64(self.seal_key),
            "generations": [
                {"id": g.id, "first_bundle": g.first_bundle, "key": b64(g.key), "created_at": g.created_at}
                for g in self.generations
            ],
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, repository_id: str) -> Keyring:
        try:
            doc = json.loads(data)
            generations = tuple(
                Generation(int(g["id"]), str(g["first_bundle"]), unb64(g["key"], "key"), str(g["created_at"]))
                for g in doc["generations"]
            )
            keyring = cls(str(doc["repository_id"]), generations, unb64(doc["seal_key"], "seal key"))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError("damaged repository keyring") from None
        if keyring.repository_id != repository_id or not generations or len(keyring.seal_key) != 64:
            raise IntegrityError("damaged repository keyring (another repository's, or empty)")
        return keyring


# --- slots ---------------------------------------------------------------------------------------------


def _slot_aad(repository_id: str, slot_id: str) -> bytes:
    return _WRAP_INFO + b"\x00" + repository_id.encode() + b"\x00" + slot_id.encode()


def _passphrase_private(passphrase: bytes, salt: bytes, params: Mapping[str, Any]) -> Any:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(_scrypt(passphrase, salt, *scrypt_params(params)))


@functools.lru_cache(maxsize=8)
def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    """scrypt, remembered for the life of the process: a program that runs many verbs (the API in a
    scheduler's worker, the test suite) pays the 0.1 s once per passphrase and slot, as the Repository
    object holding the opened key already does within one verb."""
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw: bytes = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw


def _seal_to(public: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """`plaintext` sealed to an X25519 public key: ephemeral public key || nonce || AES-GCM ciphertext."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    ephemeral = X25519PrivateKey.generate()
    eph_public = _raw_public(ephemeral.public_key())
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
    key = hkdf(shared, _WRAP_INFO, salt=eph_public + public)
    nonce = secrets.token_bytes(12)
    return eph_public + nonce + _aesgcm(key).encrypt(nonce, plaintext, aad)


def _open_sealed(private: Any, public: bytes, sealed: bytes, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    eph_public, nonce, body = sealed[:32], sealed[32:44], sealed[44:]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_public))
        key = hkdf(shared, _WRAP_INFO, salt=eph_public + public)
        plaintext: bytes = _aesgcm(key).decrypt(nonce, body, aad)
    except (InvalidTag, ValueError):
        raise IntegrityError("damaged repository marker: a key slot does not open with its own key") from None
    return plaintext


def _now() -> str:
    return clock.now().astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def passphrase_slot(passphrase: bytes, keyring: Keyring) -> dict[str, Any]:
    """A new passphrase slot holding `keyring`."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(f"a repository passphrase must be at least {MIN_PASSPHRASE} characters long")
    salt = secrets.token_bytes(16)
    public = _raw_public(_passphrase_private(passphrase, salt, SCRYPT).public_key())
    slot: dict[str, Any] = {
        "id": secrets.token_hex(4),
        "type": "passphrase",
        "created_at": _now(),
        "kdf": "scrypt",
        "kdf_params": dict(SCRYPT),
        "salt": b64(salt),
        "public_key": b64(public),
    }
    return wrap(slot, keyring, new=True)


def kms_slot(kms_key_id: str, keyring: Keyring) -> dict[str, Any]:
    """A new AWS KMS slot holding `keyring` (calls KMS Encrypt)."""
    if not kms_key_id.strip():
        raise UsageError("--kms-key-id is empty: give a KMS key ARN, key id or alias/NAME")
    slot: dict[str, Any] = {"id": secrets.token_hex(4), "type": "kms", "created_at": _now(), "kms_key_id": kms_key_id}
    return wrap(slot, keyring, new=True)


#: What a slot's MAC covers: everything a wrap uses (so no one without the key can add a slot, or point
#: one at their own public key or KMS key, and have the next rotation wrap the keyring for them).
_SLOT_FIELDS = ("id", "type", "created_at", "kdf", "kdf_params", "salt", "public_key", "kms_key_id")


def slot_mac(slot: Mapping[str, Any], keyring: Keyring) -> str:
    """HMAC-SHA256, under a key derived from the keyring's seal key, of a slot's public fields."""
    fields = {k: slot[k] for k in _SLOT_FIELDS if k in slot}
    key = hkdf(keyring.seal_key, b"aibackup slot mac v1")
    return hmac.new(key, json.dumps(fields, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def authentic(slot: Mapping[str, Any], keyring: Keyring) -> bool:
    return hmac.compare_digest(str(slot.get("mac", "")), slot_mac(slot, keyring))


#: What a slot's ``wrapped_mac`` covers: the keyring as the slot holds it (``mac`` covers what a wrap uses,
#: written before the wrap; a damaged ``wrapped`` only shows when that slot's passphrase fails to open).
_WRAPPED_FIELDS = ("id", "wrapped", "wrapped_key")


def wrapped_mac(slot: Mapping[str, Any], keyring: Keyring) -> str:
    """HMAC-SHA256, under another key derived from the keyring's seal key, of the slot's wrapped keyring."""
    fields = {k: slot[k] for k in _WRAPPED_FIELDS if k in slot}
    key = hkdf(keyring.seal_key, b"aibackup slot wrapped mac v1")
    return hmac.new(key, json.dumps(fields, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def slot_problem(slot: Mapping[str, Any], keyring: Keyring) -> str | None:
    """What is wrong with a slot, checked with the keyring another slot opened: not made by a holder of
    the key, or its wrapped keyring changed (that slot's passphrase or KMS key no longer opens the
    repository). A slot an older aibackup wrote has no ``wrapped_mac``: only the first can be checked."""
    if not authentic(slot, keyring):
        return "not authenticated by the repository's key (added or changed by someone without it)"
    made = slot.get("wrapped_mac")
    if made is not None and not hmac.compare_digest(str(made), wrapped_mac(slot, keyring)):
        return (
            "its wrapped keyring is damaged: this slot no longer opens the repository (the next `key add`, "
            "`key remove` or `key rotate` wraps it afresh)"
        )
    return None


def wrap(slot: Mapping[str, Any], keyring: Keyring, *, new: bool = False) -> dict[str, Any]:
    """`slot` holding `keyring` (a fresh wrap: new ephemeral key, or a new KMS slot key). An existing slot
    must carry the MAC that only a holder of the keyring could have made (IntegrityError otherwise): the
    marker is writable by whoever can write the bucket, and a wrap hands the keyring to the slot's owner."""
    if not new and not authentic(slot, keyring):
        raise IntegrityError(
            f"damaged repository marker: key slot {slot.get('id')} is not authenticated by the repository's key "
            "(added or changed by someone without it); remove it from aibackup.json after checking who made it"
        )
    out = dict(slot)
    out["mac"] = slot_mac(slot, keyring)
    aad = _slot_aad(keyring.repository_id, str(slot["id"]))
    if slot["type"] == "passphrase":
        out["wrapped"] = b64(_seal_to(unb64(slot["public_key"], "public key"), keyring.to_bytes(), aad))
    else:
        from aibackup import kms

        slot_key = secrets.token_bytes(32)
        out["wrapped_key"] = b64(kms.encrypt(str(slot["kms_key_id"]), slot_key, keyring.repository_id))
        nonce = secrets.token_bytes(12)
        out["wrapped"] = b64(nonce + _aesgcm(slot_key).encrypt(nonce, keyring.to_bytes(), aad))
    out["wrapped_mac"] = wrapped_mac(out, keyring)
    return out


def slots_of(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    slots = entry.get("slots")
    if not isinstance(slots, list) or not all(isinstance(s, dict) and s.get("type") in SLOT_TYPES for s in slots):
        raise IntegrityError("damaged repository marker: bad key slots")
    if not slots:  # no verb removes the last slot: the marker was damaged, the key is not wrong
        raise IntegrityError("damaged repository marker: it has no key slot")
    return slots


SLOT_TYPES = ("passphrase", "kms")


def open_keyring(
    entry: Mapping[str, Any], repository_id: str, passphrase: bytes | None, where: str, how: str
) -> tuple[Keyring, str]:
    """The keyring and the id of the slot that opened it.

    With a passphrase: the passphrase slot it opens (UsageError when none does: a wrong key). Without one:
    the KMS slots in turn (the first that opens). `how` says how a user gives a passphrase (for messages).
    """
    slots = slots_of(entry)
    if passphrase is not None:
        for slot in (s for s in slots if s["type"] == "passphrase"):
            salt = unb64(slot.get("salt"), "salt")
            public = unb64(slot.get("public_key"), "public key")
            private = _passphrase_private(passphrase, salt, slot.get("kdf_params") or {})
            if _raw_public(private.public_key()) == public:
                sealed = unb64(slot.get("wrapped"), "key slot")
                data = _open_sealed(private, public, sealed, _slot_aad(repository_id, str(slot["id"])))
                return Keyring.from_bytes(data, repository_id), str(slot["id"])
        raise UsageError(f"wrong key for the repository at {where}: it opens none of its key slots")
    kms_slots = [s for s in slots if s["type"] == "kms"]
    if not kms_slots:
        raise ConfigError(f"the repository at {where} is encrypted: {how}")
    failure: Exception | None = None
    for slot in kms_slots:
        try:
            return _open_kms(slot, repository_id), str(slot["id"])
        except (ConfigError, IntegrityError, UnavailableError) as exc:
            failure = exc
    assert failure is not None
    raise type(failure)(f"{failure} (or give a passphrase: {how})") from None


def _open_kms(slot: Mapping[str, Any], repository_id: str) -> Keyring:
    from cryptography.exceptions import InvalidTag

    from aibackup import kms

    slot_key = kms.decrypt(str(slot["kms_key_id"]), unb64(slot.get("wrapped_key"), "KMS slot"), repository_id)
    sealed = unb64(slot.get("wrapped"), "key slot")
    try:
        data = _aesgcm(slot_key).decrypt(sealed[:12], sealed[12:], _slot_aad(repository_id, str(slot["id"])))
    except (InvalidTag, ValueError):
        raise IntegrityError("damaged repository marker: the KMS key slot does not open") from None
    return Keyring.from_bytes(data, repository_id)


def new_entry(slots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The marker's ``encryption`` entry."""
    return {"scheme": SCHEME, "cipher": CIPHER, "slots": [dict(s) for s in slots]}


def describe_slot(slot: Mapping[str, Any], keyring: Keyring | None = None) -> dict[str, Any]:
    """What `key list` shows of a slot: never a key, salt or wrapped bytes; with the keyring, whether the
    slot is authentic (made by a holder of the key) and what is wrong with it (:func:`slot_problem`)."""
    shown = {k: slot.get(k) for k in ("id", "type", "created_at")}
    if keyring is not None:
        shown["authentic"] = authentic(slot, keyring)
        shown["problem"] = slot_problem(slot, keyring)
    if slot.get("type") == "kms":
        shown["kms_key_id"] = slot.get("kms_key_id")
    return shown
