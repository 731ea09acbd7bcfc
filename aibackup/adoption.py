"""What a repository must change before it takes master key generations from another copy of itself
(``aibackup copy``: the source's ``key rotate`` reaches the copy, :func:`aibackup.keys.adopt_generations`).

The key of a part or chunk pack follows from the id of its ``data/<id>/`` folder
(:meth:`aibackup.keyring.Keyring.for_bundle`): a generation added with first bundle ``T`` takes over every
folder dated ``T`` or later. What this repository wrote there itself before it took that generation was
sealed under the key it had, and would be read with the new one (and never open again):

- **chunk packs its own prune repacked** (``prune --repo COPY`` run between the source's rotation and the
  next copy): their chunks are written into packs of a folder dated just before ``T``, which maps to the
  same key under both keyrings, indexed in an index file sorting after every one, and the old packs then
  removed. Every step leaves each chunk readable under the keyring before and after the adoption, so an
  interruption loses nothing, and the adoption (a marker write) comes last;
- **bundles backed up into it directly** (a copy written to on its own after the rotation): refused, as a key
  rotated in each on its own is (a bundle's id cannot move).
"""

from __future__ import annotations

import datetime as dt

from aibackup.chunk_writer import PackWriter
from aibackup.chunks import INDEX, ChunkIds, index_bytes, is_pack, last_index_name, pack_chunks, pack_folder
from aibackup.errors import UsageError
from aibackup.keyring import Keyring
from aibackup.repository import DATA, Repository, id_time, new_bundle_id
from aibackup.vault import generation_of


def keep_readable(repo: Repository, before: Keyring, after: Keyring) -> list[str]:
    """Make what `repo` (opened under `before`) wrote itself readable under `after` too, before `after` is
    stored (see the module docstring); returns the packs moved. UsageError, with nothing changed, for a
    bundle written under `before` that `after` would read with another key. The caller holds the exclusive
    lock."""
    # Where the earliest generation added takes over. This repository writes only at or after its current
    # key's first bundle, so a generation added before all of its own (the first, whose first bundle is "",
    # taken back after this copy's prune retired it) takes over nothing it wrote.
    held = {g.id for g in before.generations}
    start = min((g.first_bundle for g in after.generations if g.id not in held and id_time(g.first_bundle)), default="")
    start_time = id_time(start)
    if start_time is None:
        return []

    def changes_key(folder: str) -> bool:
        """Whether the part folder or bundle id `folder` is one this repository may have written under `before`
        that `after` reads with another generation."""
        return (
            folder >= start
            and id_time(folder) is not None
            and before.for_bundle(folder).id != after.for_bundle(folder).id
        )

    written = [b for b in repo.bundle_ids() if changes_key(b)]
    for bundle_id in written:
        if generation_of(repo.stored_manifest(bundle_id)) != after.for_bundle(bundle_id).id:
            raise UsageError(
                f"the repository at {repo.storage.display()} cannot take the source's keys: bundle {bundle_id} "
                "was backed up into it after the source's key rotation, under its own key (a key rotated in "
                "each on its own): copy into a new location"
            )
    packs = [
        f"{pack_folder(folder)}/{name}"
        for folder in repo.storage.list_names(DATA)
        if changes_key(folder)
        for name in repo.storage.list_names(pack_folder(folder))
    ]
    packs = [p for p in packs if is_pack(p)]
    if not packs:
        return []
    # Dated just before `start`: the same key under both keyrings.
    writer = PackWriter(repo, new_bundle_id(start_time - dt.timedelta(microseconds=1)), ChunkIds(repo.key()))
    moved: list[str] = []
    try:
        for pack in packs:
            try:
                raw = repo.storage.read_stored(pack)
            except FileNotFoundError:
                continue
            found, _problem = pack_chunks(raw, writer.ids, repo.part_decryption(pack), take=writer.add)
            if found:  # sealed under `before`; one that does not open is the source's, or damaged already
                moved.append(pack)
        writer.finish()
    except BaseException:
        writer.discard()
        raise
    if writer.entries:
        files = [f"{INDEX}/{name}" for name in repo.storage.list_names(INDEX)]
        repo.storage.write_exclusive(f"{INDEX}/{last_index_name(repo, files)}.parquet", index_bytes(writer.entries))
    for pack in moved:
        repo.storage.remove(pack)
    repo.storage.remove_emptied_folders(moved, DATA)
    return moved
