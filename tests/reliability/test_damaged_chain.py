"""A chain link damaged with its size kept (a bad disk): the nightly backup stops extending the chain once a
verify or a restore has seen it, and `diff` refuses to compare from a damaged index or tombstone part (it
answered wrong, exit 0, or with exit 3 / 70). Both repositories (plain and, in CI's second pass, encrypted)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import Cli, chroma_client, flip_middle_byte, manifest_json, ok, one_line_error, seed_chroma


def three_links(cli: Cli, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A full backup of 200 records and two links: an update and an addition, then a deletion."""
    store, repo = tmp_path / "chroma", tmp_path / "repo"
    seed_chroma(store, "docs", n=200, dim=8)
    collection = chroma_client(store).get_collection("docs")
    ids = []
    for change in (
        lambda: collection.upsert(ids=["doc-1", "new-1"], embeddings=np.ones((2, 8), np.float32), documents=["u", "n"]),
        lambda: collection.delete(ids=["doc-2", "doc-3"]),
        None,
    ):
        ok(cli("backup", f"chroma:{store}", "--repo", str(repo), "--queries", "0"))
        ids.append(manifest_json(repo)["bundle_id"])
        if change is not None:
            change()
    return store, repo, ids


def own_parts(repo: Path, bundle_id: str) -> list[str]:
    (dataset,) = manifest_json(repo, bundle_id)["datasets"]
    every = [p["path"] for p in dataset["parts"]]
    every += [p["path"] for link in dataset.get("chain") or [] for key in ("index", "tombstones") for p in link[key]]
    return sorted({p for p in every if p.startswith(f"data/{bundle_id}/")})


def test_a_record_part_found_damaged_by_verify_makes_the_next_backup_full(cli: Cli, tmp_path: Path) -> None:
    store, repo, (_, middle, last) = three_links(cli, tmp_path)
    (record,) = [p for p in own_parts(repo, middle) if "part-" in p.rsplit("/", 1)[-1]]
    flip_middle_byte(repo / record)
    assert cli("verify", "--read-data", "--repo", str(repo)).code == 1
    chroma_client(store).get_collection("docs").upsert(ids=["new-2"], embeddings=np.ones((1, 8), np.float32))
    result = ok(cli("backup", f"chroma:{store}", "--repo", str(repo), "--queries", "0", "--json")).json()
    (dataset,) = result["datasets"]
    assert (
        not dataset["incremental"]
        and "found damaged by an earlier verify --read-data or restore" in dataset["full_reason"]
    ), dataset
    # The new bundle restores: it no longer reads the damaged link.
    ok(cli("restore", result["bundle_id"], "--repo", str(repo), "--to", f"chroma:{tmp_path / 'back'}"))
    one_line_error(cli("restore", last, "--repo", str(repo), "--to", f"chroma:{tmp_path / 'old'}"), 1, record)


def test_damage_found_before_the_repository_moved_still_counts(cli: Cli, tmp_path: Path) -> None:
    """Reports name parts as they were shown (an absolute path here): the repository moved, or mounted
    elsewhere on another host, must not forget the damage and extend the chain that reads it."""
    store, repo, (_, middle, _) = three_links(cli, tmp_path)
    (record,) = [p for p in own_parts(repo, middle) if "part-" in p.rsplit("/", 1)[-1]]
    flip_middle_byte(repo / record)
    assert cli("verify", "--read-data", "--repo", str(repo)).code == 1
    moved = repo.rename(tmp_path / "moved")
    chroma_client(store).get_collection("docs").upsert(ids=["new-2"], embeddings=np.ones((1, 8), np.float32))
    result = ok(cli("backup", f"chroma:{store}", "--repo", str(moved), "--queries", "0", "--json")).json()
    (dataset,) = result["datasets"]
    assert not dataset["incremental"], dataset
    assert "found damaged by an earlier verify --read-data or restore" in dataset["full_reason"], dataset


def test_a_record_part_a_restore_found_damaged_makes_the_next_backup_full(cli: Cli, tmp_path: Path) -> None:
    """The damage a restore refuses is remembered as a failed verify's is: at 2 AM nobody runs verify
    first, and the next night must not extend the chain that reads the damaged part."""
    from aibackup import reports
    from aibackup.repository import Repository

    store, repo, (_, middle, last) = three_links(cli, tmp_path)
    (record,) = [p for p in own_parts(repo, middle) if "part-" in p.rsplit("/", 1)[-1]]
    flip_middle_byte(repo / record)
    one_line_error(cli("restore", last, "--repo", str(repo), "--to", f"chroma:{tmp_path / 'old'}"), 1, record)
    opened = Repository.open(str(repo))
    assert record in reports.damaged_parts(opened)
    assert last not in reports.verified_bundles(opened)
    chroma_client(store).get_collection("docs").upsert(ids=["new-2"], embeddings=np.ones((1, 8), np.float32))
    result = ok(cli("backup", f"chroma:{store}", "--repo", str(repo), "--queries", "0", "--json")).json()
    (dataset,) = result["datasets"]
    assert not dataset["incremental"], dataset
    assert "found damaged by an earlier verify --read-data or restore" in dataset["full_reason"], dataset
    ok(cli("restore", result["bundle_id"], "--repo", str(repo), "--to", f"chroma:{tmp_path / 'back'}"))


def test_diff_refuses_a_damaged_index_or_tombstone_part(cli: Cli, tmp_path: Path) -> None:
    _, repo, (first, middle, last) = three_links(cli, tmp_path)
    ok(cli("diff", first, last, "--repo", str(repo)))
    small = [p for p in own_parts(repo, middle) if "part-" not in p.rsplit("/", 1)[-1]]
    assert small, own_parts(repo, middle)
    for path in small:
        original = (repo / path).read_bytes()
        for offset in (4, 5, len(original) // 2, len(original) - 12):  # page header, data, footer
            damaged = bytearray(original)
            damaged[offset] ^= 0xFF
            (repo / path).write_bytes(bytes(damaged))
            one_line_error(cli("diff", first, last, "--repo", str(repo)), 1, "damaged part", path)
        (repo / path).write_bytes(original)


def test_a_refused_restore_names_the_newest_bundle_that_does_not_read_the_damaged_part(
    cli: Cli, tmp_path: Path
) -> None:
    """At 2 AM the next question is which bundle to restore instead: the one before the newest reads the
    same damaged link here, so the line names the newest one that does not, and it restores."""
    _, repo, (first, middle, last) = three_links(cli, tmp_path)
    (record,) = [p for p in own_parts(repo, middle) if "part-" in p.rsplit("/", 1)[-1]]
    flip_middle_byte(repo / record)
    hint = f"the newest earlier bundle of this source that does not read it: {first}"
    one_line_error(cli("restore", last, "--repo", str(repo), "--to", f"chroma:{tmp_path / 'a'}"), 1, record, hint)
    ok(cli("restore", first, "--repo", str(repo), "--to", f"chroma:{tmp_path / 'b'}"))
    # The full backup itself damaged: nothing older to name, and the line says no more than the damage.
    (full,) = [p for p in own_parts(repo, first) if "part-" in p.rsplit("/", 1)[-1]]
    flip_middle_byte(repo / full)
    line = one_line_error(cli("restore", first, "--repo", str(repo), "--to", f"chroma:{tmp_path / 'c'}"), 1, full)
    assert "does not read it" not in line


def test_the_bundle_named_instead_reads_no_part_found_damaged_before(cli: Cli, tmp_path: Path) -> None:
    """The bundle named instead must restore: one whose chain reads a part an earlier verify found damaged
    was named, and its restore failed too."""
    store, repo, (first, middle, _) = three_links(cli, tmp_path)
    (earlier,) = [p for p in own_parts(repo, middle) if "part-" in p.rsplit("/", 1)[-1]]
    flip_middle_byte(repo / earlier)
    assert cli("verify", "--read-data", "--repo", str(repo)).code == 1  # recorded: the next backup is full
    chroma_client(store).get_collection("docs").upsert(ids=["new-2"], embeddings=np.ones((1, 8), np.float32))
    ok(cli("backup", f"chroma:{store}", "--repo", str(repo), "--queries", "0"))
    fourth = manifest_json(repo)["bundle_id"]
    (newest,) = [p for p in own_parts(repo, fourth) if "part-" in p.rsplit("/", 1)[-1]]
    flip_middle_byte(repo / newest)
    # The third bundle does not read that part, but its chain reads the damaged part of the second.
    hint = f"the newest earlier bundle of this source that does not read it: {first}"
    one_line_error(cli("restore", fourth, "--repo", str(repo), "--to", f"chroma:{tmp_path / 'a'}"), 1, newest, hint)


def test_the_bundle_named_instead_holds_the_collection_being_restored(cli: Cli, tmp_path: Path) -> None:
    """A `--collection faq` backup in between holds no docs: naming it for a damaged docs link sent the
    on-call to a bundle that cannot restore docs (exit 2)."""
    store, repo = tmp_path / "chroma", tmp_path / "repo"
    seed_chroma(store, "docs", n=50, dim=8)
    seed_chroma(store, "faq", n=20, dim=8)
    bundles = []
    for args in ((), ("--collection", "faq"), ()):
        ok(cli("backup", f"chroma:{store}", "--repo", str(repo), "--queries", "0", *args))
        bundles.append(manifest_json(repo)["bundle_id"])
        chroma_client(store).get_collection("docs").upsert(ids=[f"n{len(bundles)}"], embeddings=[[1.0] * 8])
    first, faq_only, last = bundles
    (docs,) = [d for d in manifest_json(repo, last)["datasets"] if d["name"] == "docs"]
    (record,) = [p["path"] for p in docs["parts"] if p["path"].startswith(f"data/{first}/") and "part-" in p["path"]]
    flip_middle_byte(repo / record)
    target = f"chroma:{tmp_path / 'out'}"
    line = one_line_error(cli("restore", last, "--collection", "docs", "--repo", str(repo), "--to", target), 1)
    assert faq_only not in line and "does not read it" not in line, line  # no bundle before holds docs intact
