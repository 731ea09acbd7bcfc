"""Incremental vector backups (aibackup.incremental, aibackup.chains): what a link writes, when a backup is
full instead and why, and what a restore, verify and prune do with a chain, against embedded Chroma."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from aibackup import api
from aibackup.chains import Removed
from aibackup.errors import IntegrityError
from aibackup.incremental import ParentIndex
from aibackup.manifests.model import BundleManifest
from tests.helpers import Cli, chroma_client, chroma_contents, ok, one_line_error, repo_doc, seed_chroma

DIM = 16


@pytest.fixture
def store(tmp_path: Path) -> Path:
    seed_chroma(tmp_path / "chroma", "docs", n=400, dim=DIM)
    return tmp_path / "chroma"


def change(store: Path, *, update: list[str] = (), add: list[str] = (), delete: list[str] = (), seed: int = 0) -> None:  # type: ignore[assignment]
    """Upsert new vectors (and documents) for `update` and `add`, delete `delete`."""
    collection = chroma_client(store).get_collection("docs")
    ids = [*update, *add]
    if ids:
        vectors = np.random.default_rng(seed).standard_normal((len(ids), DIM)).astype(np.float32)
        collection.upsert(ids=ids, embeddings=vectors, documents=[f"new text of {i}" for i in ids])
    if delete:
        collection.delete(ids=list(delete))


def docs(result: api.BackupResult) -> dict[str, Any]:
    return next(d for d in result.to_json()["datasets"] if d["name"] == "docs")  # type: ignore[union-attr]


def manifest(repo: Path, bundle_id: str) -> BundleManifest:
    return BundleManifest.from_bytes(repo_doc(repo, f"bundles/{bundle_id}.json"))


def restored(tmp_path: Path, repo: Path, bundle_id: str) -> dict[str, tuple[Any, ...]]:
    target = tmp_path / f"restored-{bundle_id[-8:]}"
    result = api.Repository.open(str(repo)).restore(bundle_id, to=f"chroma:{target}")
    assert result.ok, [(c.name, c.detail) for d in result.datasets for c in d.checks if not c.ok]
    return chroma_contents(target, "docs")


def test_a_link_writes_only_the_change_and_restores_exactly(tmp_path: Path, store: Path) -> None:
    repo = tmp_path / "repo"
    full = api.backup(str(repo), f"chroma:{store}")
    before = chroma_contents(store, "docs")
    assert docs(full)["incremental"] is False and docs(full)["full_reason"] == "no earlier bundle of this collection"
    assert manifest(repo, full.bundle_id).format_version == 1  # a full bundle: readable by 0.3.x

    change(store, update=["doc-00001", "doc-00002"], add=["new-1", "new-2", "new-3"], delete=["doc-00010"])
    link = api.backup(str(repo), f"chroma:{store}")
    after = chroma_contents(store, "docs")
    got = docs(link)
    assert got["incremental"] is True and got["full_reason"] is None and link.notes == ()
    assert (got["rows"], got["new_rows"], got["deleted"]) == (402, 5, 1)
    assert 0 < got["new_bytes"] < docs(full)["new_bytes"] / 5  # 5 records of 402, and three Parquet footers
    dataset = manifest(repo, link.bundle_id).dataset("docs")
    assert manifest(repo, link.bundle_id).format_version == 2
    assert dataset.extends == full.bundle_id and [x.bundle for x in dataset.chain] == [full.bundle_id, link.bundle_id]
    assert (dataset.chain[1].added, dataset.chain[1].changed, dataset.chain[1].deleted) == (3, 2, 1)

    quiet = api.backup(str(repo), f"chroma:{store}")  # nothing changed: an empty link
    assert (docs(quiet)["new_rows"], docs(quiet)["new_bytes"], docs(quiet)["incremental"]) == (0, 0, True)

    assert restored(tmp_path, repo, full.bundle_id) == before
    assert restored(tmp_path, repo, link.bundle_id) == after
    assert restored(tmp_path, repo, quiet.bundle_id) == after
    assert api.Repository.open(str(repo)).verify(read_data=True).ok


def test_a_deleted_id_added_again_comes_back(tmp_path: Path, store: Path) -> None:
    repo = tmp_path / "repo"
    api.backup(str(repo), f"chroma:{store}")
    change(store, delete=["doc-00005", "doc-00006"])
    api.backup(str(repo), f"chroma:{store}")
    change(store, add=["doc-00005"], seed=3)
    again = api.backup(str(repo), f"chroma:{store}")
    assert (docs(again)["new_rows"], docs(again)["deleted"], docs(again)["rows"]) == (1, 0, 399)
    assert restored(tmp_path, repo, again.bundle_id) == chroma_contents(store, "docs")


def test_full_backups_say_why(tmp_path: Path, store: Path, cli: Cli) -> None:
    repo = tmp_path / "repo"
    source = f"chroma:{store}"
    api.backup(str(repo), source)
    forced = api.backup(str(repo), source, full=True)
    assert docs(forced)["incremental"] is False and docs(forced)["full_reason"] == "--full was given"
    assert forced.notes == ("docs: full backup: --full was given",)

    # full_every 1: one incremental link after a full backup, then a full one again.
    assert docs(api.backup(str(repo), source, full_every=1))["incremental"] is True
    every = api.backup(str(repo), source, full_every=1)
    assert "full_every (1 incremental links" in docs(every)["full_reason"]

    # More than half the records changed: the first read finds it out, the second writes everything.
    change(store, update=[f"doc-{i:05d}" for i in range(0, 400, 2)], add=["x-1", "x-2"], seed=5)
    churn = ok(cli("backup", source, "--repo", str(repo), "--json")).json()["datasets"][0]
    assert churn["incremental"] is False and "more than half the records changed" in churn["full_reason"]
    assert churn["new_rows"] == churn["rows"] == 402
    # The first attempt's parts are gone: nothing is left that no manifest references.
    orphans = ok(cli("prune", "--keep-last", "99", "--grace", "0s", "--dry-run", "--repo", str(repo), "--json")).json()
    assert orphans["orphans_removed"] == [] and orphans["orphans_waiting"] == []

    # The vectors changed shape: the collection was recreated with another dimension.
    client = chroma_client(store)
    client.delete_collection("docs")
    seed_chroma(store, "docs", n=50, dim=8)
    text = ok(cli("backup", source, "--repo", str(repo))).out
    assert "note: docs: full backup: the collection's vectors changed (vector names or sizes)" in text
    assert "DELETED" in text and "WRITTEN" in text


def test_a_chain_holding_too_many_dead_records_is_followed_by_a_full_backup(tmp_path: Path, store: Path) -> None:
    repo, source = str(tmp_path / "repo"), f"chroma:{store}"
    api.backup(repo, source)
    change(store, update=[f"doc-{i:05d}" for i in range(30)], delete=[f"doc-{i:05d}" for i in range(30, 40)], seed=1)
    first = docs(api.backup(repo, source))  # 40 old versions and deleted records: 10% of the 390 live ones
    assert first["incremental"] and first["deleted"] == 10
    change(store, update=[f"doc-{i:05d}" for i in range(100, 130)], seed=2)
    second = api.backup(repo, source)  # the parent's 10% < 15%: still a link; now 70 dead, 18%
    assert docs(second)["incremental"]
    third = docs(api.backup(repo, source))  # nothing changed tonight, but the chain reads 18% more than it holds
    assert third["incremental"] is False and third["new_rows"] == 390
    assert third["full_reason"] == (
        "the chain holds 70 records that are no longer live, 18% of the 390 live ones "
        "(a restore reads them too; at 15% a backup is full)"
    )
    assert docs(api.backup(repo, source))["incremental"]  # the new chain starts clean
    assert restored(tmp_path, Path(repo), second.bundle_id) == chroma_contents(store, "docs")


def test_the_full_every_flag_and_config_key(tmp_path: Path, store: Path, cli: Cli) -> None:
    config = tmp_path / "aibackup.yaml"
    config.write_text(f"repository: {tmp_path / 'repo'}\nsources:\n  kb: {{uri: 'chroma:{store}', full_every: 0}}\n")
    runs = [ok(cli("backup", "--config", str(config), "--json")).json() for _ in range(2)]
    assert [r["sources"][0]["new_rows"] for r in runs] == [400, 400]  # full_every 0: every backup full
    flagged = ok(cli("backup", "--config", str(config), "--full-every", "3", "--json")).json()
    assert flagged["sources"][0]["new_rows"] == 0 and flagged["sources"][0]["new_bytes"] == 0
    config.write_text(config.read_text().replace("full_every: 0", "full_every: -1"))
    one_line_error(cli("backup", "--config", str(config)), 2, "full_every")
    logs = tmp_path / "logs"
    logs.mkdir()
    config.write_text(
        f"repository: {tmp_path / 'repo'}\nsources:\n  l: {{uri: 'conversations:{logs}', full_every: 2}}\n"
    )
    one_line_error(cli("backup", "--config", str(config)), 2, "full_every", "only for vectors")


def test_a_damaged_index_makes_the_next_backup_full(tmp_path: Path, store: Path) -> None:
    repo = tmp_path / "repo"
    full = api.backup(str(repo), f"chroma:{store}")
    index = manifest(repo, full.bundle_id).dataset("docs").chain[0].index[0]
    path = repo / index.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    change(store, update=["doc-00001"])
    again = api.backup(str(repo), f"chroma:{store}")
    reason = docs(again)["full_reason"]
    assert docs(again)["incremental"] is False and f"link {full.bundle_id} of the chain is damaged" in reason
    assert "sha256 mismatch" in reason and again.notes == (f"docs: full backup: {reason}",)
    assert restored(tmp_path, repo, again.bundle_id) == chroma_contents(store, "docs")


def test_a_broken_chain_is_refused_and_reported(tmp_path: Path, store: Path, cli: Cli) -> None:
    repo = tmp_path / "repo"
    full = api.backup(str(repo), f"chroma:{store}")
    change(store, update=["doc-00003"], delete=["doc-00004"])
    link = api.backup(str(repo), f"chroma:{store}")
    # Someone deletes the first bundle's folder by hand: the link needs its records.
    shutil.rmtree(repo / "data" / full.bundle_id)
    target = tmp_path / "target"
    line = one_line_error(
        cli("restore", link.bundle_id, "--repo", str(repo), "--to", f"chroma:{target}"),
        1,
        "broken chain",
        f"bundle {link.bundle_id} needs link {full.bundle_id}",
        "missing part",
        "nothing was written",
    )
    assert "docs" in line and not target.exists()
    verified = cli("verify", "--repo", str(repo), "--json")
    assert verified.code == 1
    problems = verified.json()["problems"]
    by_bundle = {p["bundle_id"] for p in problems}
    assert by_bundle == {full.bundle_id, link.bundle_id}
    assert all("broken chain" in p["problem"] for p in problems if p["bundle_id"] == link.bundle_id)
    # The next backup cannot follow the chain: it is full, and says so.
    again = api.backup(str(repo), f"chroma:{store}")
    assert docs(again)["incremental"] is False and "missing part" in docs(again)["full_reason"]


def test_at_and_ids_restore_any_link(tmp_path: Path, store: Path, cli: Cli) -> None:
    repo = tmp_path / "repo"
    api.backup(str(repo), f"chroma:{store}")
    change(store, add=["a-1"])
    first = api.backup(str(repo), f"chroma:{store}")
    at_first = chroma_contents(store, "docs")
    change(store, delete=["a-1", "doc-00000"])
    api.backup(str(repo), f"chroma:{store}")
    when = manifest(repo, first.bundle_id).created_at
    target = tmp_path / "at"
    ok(cli("restore", "--at", when, "--repo", str(repo), "--to", f"chroma:{target}"))
    assert chroma_contents(target, "docs") == at_first


def test_prune_keeps_what_a_kept_chain_reads(tmp_path: Path, store: Path, cli: Cli) -> None:
    repo = tmp_path / "repo"
    full = api.backup(str(repo), f"chroma:{store}")
    links = []
    for n in range(2):
        change(store, update=[f"doc-{n:05d}"], add=[f"n-{n}"], seed=n)
        links.append(api.backup(str(repo), f"chroma:{store}"))
    plan = ok(cli("prune", "--keep-last", "1", "--repo", str(repo), "--dry-run")).out
    assert "part(s) of these bundles kept: the chains of kept bundles still read them" in plan
    pruned = ok(cli("prune", "--keep-last", "1", "--repo", str(repo), "--json")).json()
    assert {b["bundle_id"] for b in pruned["removed"]} == {full.bundle_id, links[0].bundle_id}
    assert pruned["parts_removed"] == [] and pruned["parts_kept_for_chains"]
    assert all(
        p.startswith((f"data/{full.bundle_id}/", f"data/{links[0].bundle_id}/"))
        for p in pruned["parts_kept_for_chains"]
    )
    assert ok(cli("verify", "--read-data", "--repo", str(repo), "--json")).json()["ok"]
    assert restored(tmp_path, repo, links[1].bundle_id) == chroma_contents(store, "docs")
    # A full backup starts a new chain: the old chain's parts go once no kept bundle reads them.
    fresh = api.backup(str(repo), f"chroma:{store}", full=True)
    pruned = ok(cli("prune", "--keep-last", "1", "--repo", str(repo), "--json")).json()
    assert [b["bundle_id"] for b in pruned["removed"]] == [links[1].bundle_id]
    assert pruned["parts_removed"] and pruned["parts_kept_for_chains"] == []
    assert sorted(p.name for p in (repo / "data").iterdir()) == [fresh.bundle_id]


def test_the_parent_index_finds_digests_that_share_their_first_half() -> None:
    hi = np.array([5, 7, 7, 7, 9], dtype=np.uint64)
    lo = np.array([1, 3, 1, 2, 0], dtype=np.uint64)
    order = np.argsort(hi, kind="stable")
    index = ParentIndex(hi[order], lo[order], np.arange(5, dtype=np.uint32)[order])
    asked = np.array([[7, 2], [7, 1], [7, 3], [7, 4], [5, 1], [9, 1], [1, 1], [10, 0]], dtype=np.uint64)
    assert index.find(asked).tolist() == [3, 2, 1, -1, 0, -1, -1, -1]
    assert (
        ParentIndex(np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint32)).find(asked).tolist()
        == [-1] * 8
    )


def test_tombstones_that_do_not_fit_the_chain_are_damage(tmp_path: Path, store: Path) -> None:
    repo = tmp_path / "repo"
    api.backup(str(repo), f"chroma:{store}")
    change(store, update=["doc-00001"], delete=["doc-00002"])
    link = api.backup(str(repo), f"chroma:{store}")
    dataset = manifest(repo, link.bundle_id).dataset("docs")

    def tombstones(part: list[int], row: list[int], deleted: list[bool]) -> pa.Table:
        return pa.table({"part": pa.array(part, pa.int32()), "row": pa.array(row, pa.int32()), "deleted": deleted})

    assert Removed.of(dataset, [(1, tombstones([0, 0], [1, 2], [False, True]))]).keep(0, 4).tolist() == [
        True,
        False,
        False,
        True,
    ]
    with pytest.raises(IntegrityError, match="outside the links before it"):
        Removed.of(dataset, [(1, tombstones([1, 0], [0, 2], [False, True]))])
    with pytest.raises(IntegrityError, match="past the end of its part"):
        Removed.of(dataset, [(1, tombstones([0, 0], [1, 400], [False, True]))])
    with pytest.raises(IntegrityError, match="removed twice"):
        Removed.of(dataset, [(1, tombstones([0, 0], [1, 1], [False, True]))])
    with pytest.raises(IntegrityError, match="do not match its manifest"):
        Removed.of(dataset, [(1, tombstones([0], [1], [False]))])


def test_backup_json_reports_the_change(tmp_path: Path, store: Path, cli: Cli) -> None:
    repo = tmp_path / "repo"
    ok(cli("backup", f"chroma:{store}", "--repo", str(repo)))
    change(store, delete=["doc-00007"])
    doc = json.loads(ok(cli("backup", f"chroma:{store}", "--repo", str(repo), "--json")).out)
    entry = doc["datasets"][0]
    assert {k: entry[k] for k in ("rows", "new_rows", "deleted", "incremental", "full_reason")} == {
        "rows": 399,
        "new_rows": 0,
        "deleted": 1,
        "incremental": True,
        "full_reason": None,
    }
    assert entry["new_bytes"] == sum(p.stat().st_size for p in (repo / "data" / doc["bundle_id"]).rglob("*.parquet"))
