"""``aibackup repair index``: a damaged or lost chunk index file made whole again from the packs, with no
copy to bring it back from."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aibackup.chunks import Stored, index_bytes, read_index
from aibackup.errors import IntegrityError
from aibackup.repository import Repository
from tests.aibackup.test_copy import files_of, model
from tests.helpers import Cli, flip_middle_byte, ok, one_line_error


def two_models(cli: Cli, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Two models backed up into tmp_path/repo, each with an index file of its own: (the first model's
    folder, the first backup's index file, both bundle ids)."""
    repo = tmp_path / "repo"
    first = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{first}", "--repo", str(repo)))
    (index,) = (repo / "index").iterdir()
    ok(cli("backup", f"model:{model(tmp_path / 'tuned', 2)}", "--repo", str(repo)))
    return first, index, Repository.open(str(repo)).bundle_ids()


@pytest.mark.parametrize("loss", ["rotted", "lost"])
def test_a_damaged_or_lost_index_file_is_rebuilt_from_the_packs(cli: Cli, tmp_path: Path, loss: str) -> None:
    """Without a copy, a damaged index file stayed for good: verify failed every night, the bundle whose
    chunks only it placed could not be restored, and prune never freed anything of the chunk store; a lost
    one (deleted) the same, unnamed. `repair index` reads the packs no intact index file lists, checks every
    chunk against its id, indexes them in a new file and removes the damaged one; a dry run changes nothing."""
    repo = tmp_path / "repo"
    first, index, (older, _newer) = two_models(cli, tmp_path)
    if loss == "rotted":
        index.write_bytes(os.urandom(index.stat().st_size))
    else:
        index.unlink()
    verified = cli("verify", "--repo", str(repo))
    assert verified.code == 1 and "repair index" in verified.out, verified.out  # the way out
    if loss == "lost":  # no damaged file to name: said once, not on each chunk's line
        assert verified.out.count("repair index") == 1 and "note: chunks no index file places" in verified.out
    refused = cli("restore", older, "--repo", str(repo), "--to", f"model:{tmp_path / 'x'}")
    one_line_error(refused, 1, "in no pack", "repair index")  # the way out, also where no file says it was lost
    before = sorted(p.name for p in (repo / "index").iterdir())

    dry = cli("repair", "index", "--repo", str(repo), "--dry-run", "--json").json()
    assert dry["ok"] and dry["dry_run"] and dry["chunks_indexed"] > 0 and dry["index_written"] is None, dry
    assert sorted(p.name for p in (repo / "index").iterdir()) == before  # nothing written, nothing removed
    assert cli("verify", "--repo", str(repo)).code == 1

    done = ok(cli("repair", "index", "--repo", str(repo), "--json")).json()
    assert done["chunks_indexed"] == dry["chunks_indexed"] and done["packs_read"] == dry["packs_read"], done
    assert [f["path"] for f in done["damaged_index_files"]] == ([f"index/{index.name}"] if loss == "rotted" else [])
    assert not index.exists() and (repo / done["index_written"]).is_file()
    assert all(p.startswith(f"data/{older}/packs/") for p in done["packs_read"])  # only what nothing listed
    assert ok(cli("verify", "--read-data", "--repo", str(repo), "--json")).json()["ok"]
    ok(cli("restore", older, "--repo", str(repo), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(first)
    pruned = ok(cli("prune", "--repo", str(repo), "--keep-last", "9", "--json")).json()
    assert not [note for note in pruned["notes"] if "index" in note], pruned["notes"]

    again = ok(cli("repair", "index", "--repo", str(repo)))
    assert "whole" in again.out and "read" not in again.out


def test_damaged_chunks_are_never_indexed_and_the_bundles_needing_them_are_named(cli: Cli, tmp_path: Path) -> None:
    """A pack damaged as well as its index file: its sound chunks are indexed, its damaged ones are not
    (nothing is ever built on damage), the pack is named, and the bundle that needs them is named as still
    unrestorable (exit 1); the pack is remembered as damaged, so a copy that holds the bundle writes it again.
    (A damaged pack of the size the copy's was counted as held: the copy back left it, and the bundle.)"""
    repo, copy = tmp_path / "repo", tmp_path / "copy"
    first, index, (older, newer) = two_models(cli, tmp_path)
    ok(cli("copy", "--repo", str(repo), "--to-repo", str(copy)))
    index.write_bytes(os.urandom(index.stat().st_size))
    packs = sorted((repo / "data" / older / "packs").iterdir())
    flip_middle_byte(packs[0])

    failed = cli("repair", "index", "--repo", str(repo), "--json")
    assert failed.code == 1, failed.out
    doc = failed.json()
    assert doc["unrestorable"] == [older] and not doc["ok"], doc
    assert [p["path"] for p in doc["damaged_packs"]] == [str(packs[0].relative_to(repo))], doc
    assert not index.exists()  # its packs were read: nothing more is to be learnt from it
    text = cli("repair", "index", "--repo", str(repo))
    assert text.code == 1 and older in text.out and "copy" in text.out, text.out
    ok(cli("restore", newer, "--repo", str(repo), "--to", f"model:{tmp_path / 'new'}"))
    one_line_error(cli("restore", older, "--repo", str(repo), "--to", f"model:{tmp_path / 'old'}"), 1)

    # The damaged pack is remembered as damaged: a copy holding the bundle writes it again, proven.
    back = ok(cli("copy", "--repo", str(copy), "--to-repo", str(repo), "--json")).json()
    assert str(packs[0].relative_to(repo)) in back["repaired"], back
    assert ok(cli("verify", "--read-data", "--repo", str(repo), "--json")).json()["ok"]
    ok(cli("restore", older, "--repo", str(repo), "--to", f"model:{tmp_path / 'old'}"))
    assert files_of(tmp_path / "old") == files_of(first)


def test_repair_of_no_repository_is_one_line(cli: Cli, tmp_path: Path) -> None:
    one_line_error(cli("repair", "index", "--repo", str(tmp_path / "nothing")), 2, "nothing")


def test_a_chunk_stored_twice_is_found_where_its_pack_still_is(cli: Cli, tmp_path: Path) -> None:
    """A chunk an intact index file places in a pack since lost, and a damaged one placed in a pack still
    stored: the repair indexes the stored copy, and its proof must count that one (it kept the lost place
    and named both bundles as lacking their chunks, exit 1; the next run then said all was well)."""
    repo = tmp_path / "repo"
    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    (index,) = (repo / "index").iterdir()
    index.write_bytes(os.urandom(index.stat().st_size))
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))  # stores every chunk again, in packs of its own
    newer = Repository.open(str(repo)).bundle_ids()[-1]
    for pack in (repo / "data" / newer / "packs").iterdir():
        pack.unlink()

    done = ok(cli("repair", "index", "--repo", str(repo), "--json")).json()
    assert done["ok"] and not done["unrestorable"] and done["chunks_indexed"] > 0, done
    for bundle_id in Repository.open(str(repo)).bundle_ids():
        ok(cli("restore", bundle_id, "--repo", str(repo), "--to", f"model:{tmp_path / bundle_id}"))
        assert files_of(tmp_path / bundle_id) == files_of(llm)


def test_a_bundle_that_cannot_be_read_is_named_unchecked_not_lacking_chunks(cli: Cli, tmp_path: Path) -> None:
    """A model bundle whose file table does not read: its chunks cannot be listed, which is not the same as
    chunks nowhere to be found (it was named as lacking chunks, beside "the chunk index is whole")."""
    repo = tmp_path / "repo"
    _, _, (_older, newer) = two_models(cli, tmp_path)
    (table,) = [p for p in (repo / "data" / newer).rglob("*.parquet") if "packs" not in p.parts]
    table.write_bytes(os.urandom(table.stat().st_size))
    failed = cli("repair", "index", "--repo", str(repo), "--json")
    assert failed.code == 1, failed.out
    doc = failed.json()
    assert doc["unchecked"] == [newer] and doc["unrestorable"] == [] and not doc["packs_read"], doc
    text = cli("repair", "index", "--repo", str(repo))
    assert text.code == 1 and newer in text.out and "still need" not in text.out and "whole" not in text.out


def test_a_crashed_runs_unfinished_pack_is_not_damage_and_not_read_again(cli: Cli, tmp_path: Path) -> None:
    """A backup killed while writing leaves a pack cut short in a folder of no bundle: it is no damage (it was
    named DAMAGED and recorded so, against a bundle that never existed, on every run), and once the index is
    whole a repair reads nothing (it read the crashed run's packs again each time)."""
    repo = tmp_path / "repo"
    first, index, (older, _) = two_models(cli, tmp_path)
    crashed = repo / "data" / "20261201T000000.000000Z-0badc0de" / "packs"
    crashed.mkdir(parents=True)
    real = next((repo / "data" / older / "packs").iterdir())
    (crashed / "pack-00000.parquet").write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    index.unlink()
    reports_before = sorted((repo / "reports").rglob("*.json"))

    done = ok(cli("repair", "index", "--repo", str(repo), "--json")).json()
    assert done["unfinished_packs"] == [str((crashed / "pack-00000.parquet").relative_to(repo))], done
    assert not done["damaged_packs"] and done["ok"], done
    assert sorted((repo / "reports").rglob("*.json")) == reports_before  # nothing recorded as damage
    again = ok(cli("repair", "index", "--repo", str(repo), "--json")).json()
    assert not again["packs_read"] and not again["unfinished_packs"] and again["ok"], again
    ok(cli("restore", older, "--repo", str(repo), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(first)


def test_a_needed_pack_that_does_not_decode_outside_a_bundles_folder_is_damage(cli: Cli, tmp_path: Path) -> None:
    """A forgotten bundle's pack that a kept bundle still needs, its footer rotted, the index lost: it was
    taken for a crashed run's unfinished write (not remembered as damage), so the copy back the message
    pointed to left it as it was. Now it is damage while a bundle lacks chunks, and the copy back replaces it."""
    repo, copy = tmp_path / "repo", tmp_path / "copy"
    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    forgotten = Repository.open(str(repo)).bundle_ids()[0]
    (llm / "config.json").write_text('{"model_type": "mistral"}\n')
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    ok(cli("prune", "--repo", str(repo), "--keep-last", "1"))
    (pack,) = (repo / "data" / forgotten / "packs").iterdir()  # kept: the newest bundle's weights are in it
    ok(cli("copy", "--repo", str(repo), "--to-repo", str(copy)))
    raw = bytearray(pack.read_bytes())
    raw[-20] ^= 0xFF  # the footer
    pack.write_bytes(bytes(raw))
    for index in (repo / "index").iterdir():
        index.unlink()

    failed = cli("repair", "index", "--repo", str(repo), "--json")
    assert failed.code == 1, failed.out
    doc = failed.json()
    rel = str(pack.relative_to(repo))
    assert [p["path"] for p in doc["damaged_packs"]] == [rel] and not doc["unfinished_packs"], doc
    back = ok(cli("copy", "--repo", str(copy), "--to-repo", str(repo), "--json")).json()
    assert rel in back["repaired"], back
    assert ok(cli("verify", "--read-data", "--repo", str(repo), "--json")).json()["ok"]
    ok(cli("restore", "latest", "--repo", str(repo), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(llm)


def test_a_chunk_whose_newest_place_was_lost_is_indexed_where_another_pack_holds_it(cli: Cli, tmp_path: Path) -> None:
    """A chunk stored twice, the pack of its newest place lost: readers looked only there, and the repair
    named the bundles as lacking chunks a stored pack holds (pointing to a copy). Now it indexes them there,
    once that pack is read and each row proven."""
    repo = tmp_path / "repo"
    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    first = Repository.open(str(repo)).bundle_ids()[0]
    (index,) = (repo / "index").iterdir()
    index.write_bytes(os.urandom(index.stat().st_size))
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))  # stores every chunk again
    ok(cli("repair", "index", "--repo", str(repo)))  # the first bundle's packs indexed again, newest
    for pack in (repo / "data" / first / "packs").iterdir():
        pack.unlink()
    one_line_error(cli("restore", first, "--repo", str(repo), "--to", f"model:{tmp_path / 'x'}"), 1)

    done = ok(cli("repair", "index", "--repo", str(repo), "--json")).json()
    second = Repository.open(str(repo)).bundle_ids()[-1]
    assert done["ok"] and done["chunks_indexed"] > 0, done
    assert all(p.startswith(f"data/{second}/packs/") for p in done["packs_read"]), done  # read to prove the rows
    for bundle_id in Repository.open(str(repo)).bundle_ids():
        ok(cli("restore", bundle_id, "--repo", str(repo), "--to", f"model:{tmp_path / bundle_id}"))
        assert files_of(tmp_path / bundle_id) == files_of(llm)


def test_a_copy_in_a_pack_found_damaged_before_is_not_taken(cli: Cli, tmp_path: Path) -> None:
    """A chunk's newest pack lost, its other copy in a pack a verify had found damaged: the repair pointed
    the index at that copy unread, said all was well (exit 0, and verify too), every restore failed on it,
    and the copy back could no longer mend the repository. Now the chunk stays lacking (exit 1), and the
    copy back brings the lost pack, after which everything restores."""
    repo, copy = tmp_path / "repo", tmp_path / "copy"
    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    first = Repository.open(str(repo)).bundle_ids()[0]
    (damaged,) = (repo / "data" / first / "packs").iterdir()
    flip_middle_byte(damaged)
    assert cli("verify", "--read-data", "--repo", str(repo)).code == 1  # remembered as damaged
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))  # every chunk stored again, in a sound pack
    ok(cli("copy", "--repo", str(repo), "--to-repo", str(copy)))
    second = Repository.open(str(repo)).bundle_ids()[-1]
    for pack in (repo / "data" / second / "packs").iterdir():
        pack.unlink()

    failed = cli("repair", "index", "--repo", str(repo), "--json")
    assert failed.code == 1 and sorted(failed.json()["unrestorable"]) == [first, second], failed.out
    assert cli("verify", "--repo", str(repo)).code == 1
    back = ok(cli("copy", "--repo", str(copy), "--to-repo", str(repo), "--json")).json()
    assert back["repaired"], back
    for bundle_id in (first, second):
        ok(cli("restore", bundle_id, "--repo", str(repo), "--to", f"model:{tmp_path / bundle_id}"))
        assert files_of(tmp_path / bundle_id) == files_of(llm)


def test_an_index_file_whose_rows_decode_to_other_values_is_damaged(cli: Cli, tmp_path: Path) -> None:
    """An unencrypted index file had no protection of its own: one flipped bit in five still decoded, to
    another row number, size or pack, and repair and verify said all was well while restores failed (and
    recorded the sound pack as damaged). Now its pages carry checksums and its footer the digest of its
    entries: every flipped byte that changes what it says is damage, and repair rebuilds it."""
    repo = tmp_path / "repo"
    first, index, (older, _) = two_models(cli, tmp_path)
    raw = index.read_bytes()
    caught = len(raw) // 2  # a sealed index file (an encrypted repository) fails authentication on any flip
    if not Repository.open(str(repo)).encrypted:
        entries = read_index(raw, "index")
        changed, damage = 0, []
        for n in range(len(raw)):
            flipped = bytearray(raw)
            flipped[n] ^= 0x10
            try:
                changed += read_index(bytes(flipped), "index") != entries
            except IntegrityError:
                damage.append(n)
        assert changed == 0 and damage
        caught = damage[len(damage) // 2]
    flipped = bytearray(raw)
    flipped[caught] ^= 0x10
    index.write_bytes(bytes(flipped))
    assert cli("verify", "--repo", str(repo)).code == 1
    done = ok(cli("repair", "index", "--repo", str(repo), "--json")).json()
    assert [f["path"] for f in done["damaged_index_files"]] == [f"index/{index.name}"], done
    ok(cli("restore", older, "--repo", str(repo), "--to", f"model:{tmp_path / 'back'}"))
    assert files_of(tmp_path / "back") == files_of(first)


def test_read_all_packs_replaces_an_index_file_whose_damage_still_decodes(cli: Cli, tmp_path: Path) -> None:
    """An index file written before index files carried their entries' digest, rotted so that it still
    decodes (here: an entry pointing at another row): nothing tells it damaged, so the plain repair finds
    the index whole; --read-all-packs reads every pack and replaces every index file, after which every
    bundle restores. A dry run changes nothing, and a second plain run reads nothing."""
    from aibackup.chunks import INDEX_DIGEST

    repo = tmp_path / "repo"
    first, index, (older, newer) = two_models(cli, tmp_path)
    opened = Repository.open(str(repo))
    rel = f"index/{index.name}"
    entries = read_index(opened.storage.read_bytes(rel), rel)
    (chunk, place), *rest = entries
    wrong = [(chunk, type(place)(place.pack, place.row + 1, place.size, place.stored)), *rest]
    raw = index_bytes(wrong)
    table = pq.read_table(pa.BufferReader(raw))
    old_style = io.BytesIO()  # as aibackup wrote it before 2026-12-07: no digest, no page checksums
    pq.write_table(table.replace_schema_metadata({}), old_style, compression="zstd")
    assert INDEX_DIGEST not in (pq.read_schema(pa.BufferReader(old_style.getvalue())).metadata or {})
    index.unlink()
    opened.storage.write_exclusive(rel, old_style.getvalue())
    one_line_error(cli("restore", older, "--repo", str(repo), "--to", f"model:{tmp_path / 'x'}"), 1)
    assert ok(cli("repair", "index", "--repo", str(repo), "--json")).json()["chunks_indexed"] == 0

    before = sorted(p.name for p in (repo / "index").iterdir())
    dry = ok(cli("repair", "index", "--read-all-packs", "--dry-run", "--repo", str(repo), "--json")).json()
    assert sorted(p.name for p in (repo / "index").iterdir()) == before and dry["index_written"] is None, dry
    done = ok(cli("repair", "index", "--read-all-packs", "--repo", str(repo), "--json")).json()
    assert sorted(done["index_files_replaced"]) == [f"index/{n}" for n in before], done
    assert [p.name for p in (repo / "index").iterdir()] == [done["index_written"].split("/")[1]]
    for bundle_id, folder in ((older, first), (newer, tmp_path / "tuned")):
        ok(cli("restore", bundle_id, "--repo", str(repo), "--to", f"model:{tmp_path / bundle_id}"))
        assert files_of(tmp_path / bundle_id) == files_of(folder)
    assert not ok(cli("repair", "index", "--repo", str(repo), "--json")).json()["packs_read"]


def old_style_index(entries: list[tuple[bytes, Stored]]) -> bytes:
    """An index file as aibackup wrote it before 2026-12-07: no page checksums, no digest of its entries."""
    table = pq.read_table(pa.BufferReader(index_bytes(entries))).replace_schema_metadata({})
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


def backed_up_again(cli: Cli, repo: Path, llm: Path) -> tuple[str, list[tuple[bytes, Stored]]]:
    """Rot the repository's index files and back `llm` up again (every chunk stored again, in packs of its
    own); the rotted files are then removed. Returns the new bundle and what the rotted files had said."""
    opened = Repository.open(str(repo))
    said = [
        e
        for f in sorted((repo / "index").iterdir())
        for e in read_index(opened.storage.read_bytes(f"index/{f.name}"), f.name)
    ]
    for f in (repo / "index").iterdir():
        f.write_bytes(os.urandom(f.stat().st_size))
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    for f in (repo / "index").iterdir():
        with contextlib.suppress(IntegrityError):
            read_index(opened.storage.read_bytes(f"index/{f.name}"), f.name)
            continue
        f.unlink()
    return Repository.open(str(repo)).bundle_ids()[-1], said


def test_a_chunks_other_copy_is_indexed_with_what_its_pack_says(cli: Cli, tmp_path: Path) -> None:
    """The other copy of a chunk whose newest pack was lost, listed by an older index file (no digest) whose
    size for it rotted and still decoded: the repair took the file's size with the proven row, said all was
    well (exit 0), and every restore failed on the size. Now the size and stored size are those read."""
    repo = tmp_path / "repo"
    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    newer, said = backed_up_again(cli, repo, llm)
    (chunk, place), *rest = said
    wrong = [(chunk, Stored(place.pack, place.row, place.size + 1, place.stored)), *rest]
    Repository.open(str(repo)).storage.write_exclusive("index/0-old.parquet", old_style_index(wrong))
    for pack in (repo / "data" / newer / "packs").iterdir():
        pack.unlink()

    ok(cli("repair", "index", "--repo", str(repo)))
    for bundle_id in Repository.open(str(repo)).bundle_ids():
        ok(cli("restore", bundle_id, "--repo", str(repo), "--to", f"model:{tmp_path / bundle_id}"))
        assert files_of(tmp_path / bundle_id) == files_of(llm)


def test_the_newest_other_copy_that_proves_is_taken(cli: Cli, tmp_path: Path) -> None:
    """A chunk stored three times, the newest pack lost, the oldest copy damaged unnoticed: only the oldest
    copy was tried, and the repair named every bundle as lacking chunks a sound pack holds. Now the copies
    are tried newest first until one proves."""
    repo = tmp_path / "repo"
    llm = model(tmp_path / "llm", 1)
    ok(cli("backup", f"model:{llm}", "--repo", str(repo)))
    oldest = Repository.open(str(repo)).bundle_ids()[0]
    middle, said_first = backed_up_again(cli, repo, llm)
    newest, said_middle = backed_up_again(cli, repo, llm)
    opened = Repository.open(str(repo))
    opened.storage.write_exclusive("index/0-first.parquet", index_bytes(said_first))
    opened.storage.write_exclusive(
        "index/1-middle.parquet", index_bytes([e for e in said_middle if middle in e[1].pack])
    )
    for pack in (repo / "data" / newest / "packs").iterdir():
        pack.unlink()
    flip_middle_byte(next((repo / "data" / oldest / "packs").iterdir()))

    done = ok(cli("repair", "index", "--repo", str(repo), "--json")).json()
    assert done["ok"] and not done["unrestorable"], done
    for bundle_id in Repository.open(str(repo)).bundle_ids():
        ok(cli("restore", bundle_id, "--repo", str(repo), "--to", f"model:{tmp_path / bundle_id}"))
        assert files_of(tmp_path / bundle_id) == files_of(llm)
