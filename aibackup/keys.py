"""The key verbs of an encrypted repository: list, add and remove key slots, rotate the master key, and
retire master keys no bundle uses any more (run by ``prune``).

Every change rewrites only the repository marker (atomically), under the repository's exclusive lock, so
no backup is writing while a rotation moves the key new bundles use. A change needs a working key: the
keyring is opened first, and every slot of the new marker is a fresh wrap of the new keyring (passphrase
slots through their public keys, KMS slots through KMS Encrypt), so nothing that was removed keeps working
for what comes later.

Rotation writes no data: bundles keep the generation their id falls in (:meth:`Keyring.for_bundle`).
Old generations stay in the keyring while any bundle or part uses them; ``prune`` retires them once the
bundles are gone, resealing the reports and pins still sealed under them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

from aibackup import adoption, clock
from aibackup import keyring as keyslots
from aibackup.chunks import ChunkIndex
from aibackup.errors import AibackupError, IntegrityError, UsageError
from aibackup.keyring import Keyring
from aibackup.repository import Repository, iso
from aibackup.vault import Vault, bundle_of_part, generation_of
from aibackup.verify import DOCUMENT_FOLDERS


def _require_slots(repo: Repository) -> None:
    if not repo.encrypted:
        raise UsageError(f"the repository at {repo.storage.display()} is not encrypted: it has no keys")
    if not repo.fully_encrypted:
        raise UsageError(
            f"the repository at {repo.storage.display()} was encrypted by aibackup 0.4 (config secrets only) and "
            "has no key slots: create a new one with `aibackup init --encrypt` and back up into it"
        )


def describe(repo: Repository, key_file: str | None = None) -> dict[str, Any]:
    """`key list`: the slots (never a key), the master key generations, and the slot opened."""
    _require_slots(repo)
    vault = repo.vault(key_file)
    return {
        "slots": [
            {**keyslots.describe_slot(s, vault.keyring), "opened": s["id"] == vault.slot_id}
            for s in keyslots.slots_of(_entry(repo))
        ],
        "generations": [
            {
                "id": g.id,
                "first_bundle": g.first_bundle or None,
                "created_at": g.created_at,
                "current": g is vault.keyring.current,
            }
            for g in vault.keyring.generations
        ],
    }


def _entry(repo: Repository) -> Mapping[str, Any]:
    entry: Mapping[str, Any] = repo.marker["encryption"]
    return entry


def _store(repo: Repository, keyring: Keyring, slots: list[dict[str, Any]], slot_id: str) -> None:
    """Write the marker with `slots`, each re-wrapping `keyring`; nothing is written when one fails."""
    wrapped = [keyslots.wrap(slot, keyring) for slot in slots]
    marker = dict(repo.marker)
    marker["encryption"] = {**_entry(repo), "slots": wrapped}
    repo.write_marker(marker)
    repo.adopt(Vault(keyring, slot_id))


def add(
    repo: Repository, *, passphrase: bytes | None = None, kms_key_id: str | None = None, key_file: str | None = None
) -> dict[str, Any]:
    """Add a passphrase slot or a KMS slot (one of them) holding the keyring; returns the new slot."""
    _require_slots(repo)
    if (passphrase is None) == (kms_key_id is None):
        raise UsageError("key add needs one new key: a new passphrase (--new-key-file) or --kms-key-id")
    vault = repo.vault(key_file)
    if passphrase is not None:
        slot = keyslots.passphrase_slot(passphrase, vault.keyring)
    else:
        assert kms_key_id is not None
        slot = keyslots.kms_slot(kms_key_id, vault.keyring)
    slots = [*keyslots.slots_of(_entry(repo)), slot]
    _store(repo, vault.keyring, slots, vault.slot_id)
    return keyslots.describe_slot(slot)


def remove(repo: Repository, slot_id: str, key_file: str | None = None) -> dict[str, Any]:
    """Remove a slot: never the last one, nor the one that opened the repository now (as restic: whoever
    removes a key proves they hold another)."""
    _require_slots(repo)
    vault = repo.vault(key_file)
    slots = keyslots.slots_of(_entry(repo))
    matches = [s for s in slots if str(s["id"]).startswith(slot_id)] if slot_id else []
    if len(matches) != 1:
        known = ", ".join(str(s["id"]) for s in slots)
        what = "matches several slots" if matches else "is not a key slot here"
        raise UsageError(f"{slot_id!r} {what} (slots: {known}; see `aibackup key list`)")
    (gone,) = matches
    if len(slots) == 1:
        raise UsageError("cannot remove the repository's last key slot: add another first")
    if gone["id"] == vault.slot_id:
        raise UsageError(
            f"slot {gone['id']} is the one this command opened the repository with: open it with another key "
            "to remove this one"
        )
    _store(repo, vault.keyring, [s for s in slots if s is not gone], vault.slot_id)
    return keyslots.describe_slot(gone)


def rotate(repo: Repository, key_file: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """A new master key for the bundles from now on; returns its generation."""
    _require_slots(repo)
    vault = repo.vault(key_file)
    moment = now or clock.now()
    keyring = vault.keyring.rotated(repo.next_bundle_id(moment), iso(moment))
    _store(repo, keyring, keyslots.slots_of(_entry(repo)), vault.slot_id)
    g = keyring.current
    return {"id": g.id, "first_bundle": g.first_bundle, "created_at": g.created_at}


def adopt_generations(repo: Repository, theirs: Keyring, key_file: str | None = None) -> list[int]:
    """Add to `repo`'s keyring the master key generations of `theirs` that it lacks, every slot re-wrapped as
    :func:`rotate` does; returns the ids added. `theirs` is the keyring of the same repository as another copy
    holds it (``aibackup copy``'s source, rotated since the copy was made). UsageError when the two are not one
    lineage: another seal key, a generation id holding another key (each copy rotated on its own), or
    generations whose first bundles would not follow their order. The caller holds the exclusive lock."""
    _require_slots(repo)
    vault = repo.vault(key_file)
    ours = vault.keyring
    mine = {g.id: g for g in ours.generations}
    clash = sorted(g.id for g in theirs.generations if g.id in mine and g != mine[g.id])
    added = [g for g in theirs.generations if g.id not in mine]
    merged = sorted((*ours.generations, *added), key=lambda g: g.id)
    if theirs.seal_key != ours.seal_key or clash or any(a.first_bundle > b.first_bundle for a, b in pairwise(merged)):
        what = f"master key generation(s) {clash} differ" if clash else "their keyrings differ"
        raise UsageError(
            f"the repository at {repo.storage.display()} cannot take the source's keys: {what} (a key rotated in "
            "each on its own): copy into a new location"
        )
    if added:
        keyring = replace(ours, generations=tuple(merged))
        adoption.keep_readable(repo, ours, keyring)  # what this copy sealed itself where the new keys take over
        _store(repo, keyring, keyslots.slots_of(_entry(repo)), vault.slot_id)
    return [g.id for g in added]


@dataclass(frozen=True)
class Retired:
    """What :func:`retire` did: the generations removed, documents resealed, or why it could not."""

    generations: list[int]
    resealed: int
    problem: str | None = None


def retire(repo: Repository, dry_run: bool = False) -> Retired:
    """Drop the master keys no remaining bundle or part uses (never the current one), after resealing
    the reports and pins still sealed under them. Called by prune under its lock. A failure (say, KMS
    unreachable for re-wrapping a KMS slot) changes nothing and is reported, not raised: the old key
    stays, and the next prune tries again."""
    if not repo.fully_encrypted:
        return Retired([], 0)
    vault = repo.vault()
    keyring = vault.keyring
    if len(keyring.generations) == 1:
        return Retired([], 0)
    used = {keyring.current.id}
    manifests, damaged = repo.scan()
    for bundle_id in [m.bundle_id for m in manifests] + [d.bundle_id for d in damaged]:
        used.add(keyring.for_bundle(bundle_id).id)
    for manifest in manifests:
        for dataset in manifest.datasets:
            for part in dataset.all_parts():
                used.add(keyring.for_bundle(bundle_of_part(part.path)).id)
    # Chunk packs (model files) are listed by the chunk index, not by manifests.
    for pack in {place.pack for place in ChunkIndex.load(repo).every()}:
        used.add(keyring.for_bundle(bundle_of_part(pack)).id)
    unused = [g.id for g in keyring.generations if g.id not in used]
    if not unused or dry_run:
        return Retired(unused, 0)
    resealed = 0
    try:
        # Manifests keep their bundle's key; locks live minutes.
        for folder in DOCUMENT_FOLDERS:
            for name in repo.storage.list_names(folder):
                rel = f"{folder}/{name}"
                raw = repo.storage.read_stored(rel)
                if generation_of(raw) not in unused:
                    continue
                try:
                    data = vault.open(rel, raw, repo.storage.display(rel))
                except IntegrityError:
                    continue  # damaged already: `verify` names it; it was lost history either way
                repo.storage.replace(rel, data)  # sealed again, under the current key
                resealed += 1
        _store(repo, keyring.without(unused), keyslots.slots_of(_entry(repo)), vault.slot_id)
    except (AibackupError, FileNotFoundError) as exc:
        return Retired([], resealed, f"old keys {unused} not retired: {exc}")
    return Retired(unused, resealed)
