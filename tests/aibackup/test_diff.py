"""`aibackup diff A B`: the records added, changed and deleted between two bundles of one source, from real
embedded Chroma backups (incremental links, full backups in between, older digest formats, config secrets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aibackup
import aibackup.bundle
import aibackup.checks
from aibackup.diff import DiffResult
from aibackup.errors import DatasetNotFoundError, UsageError
from tests.helpers import Cli, chroma_client, ok, one_line_error, seed_chroma

ADDED = [f"new-{i:03d}" for i in range(15)]
CHANGED = [f"doc-{i:05d}" for i in range(1, 11)] + ["doc-00020"]
DELETED = [f"doc-{i:05d}" for i in range(100, 105)]


def change_docs(store: Path, seeded: dict[str, Any]) -> None:
    """Upsert new vectors for CHANGED (and a metadata edit), add ADDED, delete DELETED, and upsert one record
    exactly as it was (no change: its digest is the same)."""
    docs = chroma_client(store).get_collection("docs")
    rng = np.random.default_rng(7)
    docs.upsert(ids=CHANGED[:-1], embeddings=rng.standard_normal((len(CHANGED) - 1, 16)).astype(np.float32))
    docs.update(ids=["doc-00020"], metadatas=[{"n": 20, "edited": True}])
    docs.add(
        ids=ADDED,
        embeddings=rng.standard_normal((len(ADDED), 16)).astype(np.float32),
        documents=[f"new document {i}" for i in range(len(ADDED))],
    )
    docs.delete(ids=DELETED)
    n = seeded["ids"].index("doc-00200")
    docs.upsert(
        ids=["doc-00200"],
        embeddings=seeded["embeddings"][n : n + 1],
        documents=[seeded["documents"][n]],
        metadatas=[seeded["metadatas"][n]],
        uris=[seeded["uris"][n]],
    )


@pytest.fixture
def history(tmp_path: Path) -> tuple[aibackup.Repository, str, str]:
    """A repository with two bundles of ./chroma (collections docs, 300 records, and notes, 40): a full
    backup, then the changes of :func:`change_docs` as an incremental link. Returns (repo, A, B)."""
    store = tmp_path / "chroma"
    seeded = seed_chroma(store, "docs", n=300, dim=16)
    seed_chroma(store, "notes", n=40, dim=16)
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    first = repo.backup(f"chroma:{store}", queries=0)
    change_docs(store, seeded)
    second = repo.backup(f"chroma:{store}", queries=0)
    assert {d["name"]: d["incremental"] for d in second.to_json()["datasets"]} == {"docs": True, "notes": True}
    return repo, first.bundle_id, second.bundle_id


def by_name(result: DiffResult) -> dict[str, tuple[int, int, int, list[str], list[str], list[str]]]:
    return {
        d.name: (d.added, d.changed, d.deleted, d.ids["added"], d.ids["changed"], d.ids["deleted"])
        for d in result.datasets
    }


EXPECTED = {
    "docs": (len(ADDED), len(CHANGED), len(DELETED), ADDED, CHANGED, DELETED),
    "notes": (0, 0, 0, [], [], []),
}


def test_added_changed_and_deleted_ids_are_exact_through_an_incremental_link(
    history: tuple[aibackup.Repository, str, str], cli: Cli
) -> None:
    repo, a, b = history
    result = repo.diff(a, b)
    assert (result.a, result.b) == (a, b)
    assert by_name(result) == EXPECTED
    assert result.source["kind"] == "chroma"
    # The CLI prints exactly the API's result; refs are ids, unique prefixes or latest.
    by_cli = ok(cli("diff", a[:-3], "latest", "--repo", repo.storage.url, "--json")).json()
    assert by_cli == result.to_json()
    docs = by_cli["datasets"][0]
    assert docs == {
        "name": "docs",
        "added": 15,
        "changed": 11,
        "deleted": 5,
        "ids": {"added": ADDED, "changed": CHANGED, "deleted": DELETED},
        "settings_changed": [],
    }
    # Backwards, everything turns around.
    back = by_name(repo.diff(b, a))["docs"]
    assert back == (len(DELETED), len(CHANGED), len(ADDED), DELETED, CHANGED, ADDED)


def test_text_output_is_a_table_of_counts_then_the_ids(history: tuple[aibackup.Repository, str, str], cli: Cli) -> None:
    repo, a, b = history
    out = ok(cli("diff", a, b, "--repo", repo.storage.url)).out
    lines = out.splitlines()
    assert lines[0] == f"from {a} to {b} (chroma chroma:{Path(repo.storage.url).parent / 'chroma'})"
    header = lines.index("COLLECTION  ADDED  CHANGED  DELETED")
    assert lines[header + 1].split() == ["docs", "15", "11", "5"]
    assert lines[header + 2].split() == ["notes", "0", "0", "0"]
    start = lines.index("collection 'docs':")
    assert start > header + 2
    expected = [f"+ {i}" for i in ADDED] + [f"~ {i}" for i in CHANGED] + [f"- {i}" for i in DELETED]
    assert lines[start + 1 : start + 1 + len(expected)] == expected
    assert "collection 'notes':" not in out  # nothing to list there
    assert "…" not in out and "no differences" not in out


def test_limit_caps_the_ids_and_keeps_the_counts_exact(history: tuple[aibackup.Repository, str, str], cli: Cli) -> None:
    repo, a, b = history
    assert by_name(repo.diff(a, b, limit=3))["docs"] == (15, 11, 5, ADDED[:3], CHANGED[:3], DELETED[:3])
    out = ok(cli("diff", a, b, "--limit", "3", "--repo", repo.storage.url)).out
    assert "+ new-002\n… and 12 more added\n~ doc-00001" in out
    assert "~ doc-00003\n… and 8 more changed\n- doc-00100" in out
    assert out.rstrip().endswith("- doc-00102\n… and 2 more deleted")

    counts_only = ok(cli("diff", a, b, "--limit", "0", "--repo", repo.storage.url, "--json")).json()
    assert [(d["added"], d["changed"], d["deleted"]) for d in counts_only["datasets"]] == [(15, 11, 5), (0, 0, 0)]
    assert all(d["ids"] == {"added": [], "changed": [], "deleted": []} for d in counts_only["datasets"])
    text = ok(cli("diff", a, b, "--limit", "0", "--repo", repo.storage.url)).out
    assert "docs" in text and "+ " not in text and "collection 'docs'" not in text

    one_line_error(cli("diff", a, b, "--limit", "-1", "--repo", repo.storage.url), 2, "--limit")
    with pytest.raises(UsageError):
        repo.diff(a, b, limit=-1)


def test_collection_restricts_the_diff_and_an_unknown_one_is_refused(
    history: tuple[aibackup.Repository, str, str], cli: Cli
) -> None:
    repo, a, b = history
    assert by_name(repo.diff(a, b, ["notes"])) == {"notes": EXPECTED["notes"]}
    only = ok(cli("diff", a, b, "--collection", "docs", "--repo", repo.storage.url, "--json")).json()
    assert [d["name"] for d in only["datasets"]] == ["docs"]
    with pytest.raises(DatasetNotFoundError) as raised:
        repo.diff(a, b, ["ghost"])
    assert raised.value.exit_code == 2
    line = one_line_error(
        cli("diff", a, b, "--collection", "ghost", "--collection", "docs", "--repo", repo.storage.url),
        2,
        "'ghost'",
        "'docs', 'notes'",
    )
    assert str(raised.value) in line


def test_a_collection_in_one_bundle_only_is_all_added_or_all_deleted(tmp_path: Path) -> None:
    store = tmp_path / "chroma"
    seed_chroma(store, "docs", n=30, dim=8)
    seed_chroma(store, "notes", n=12, dim=8)
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    a = repo.backup(f"chroma:{store}", queries=0).bundle_id
    chroma_client(store).delete_collection("notes")
    seed_chroma(store, "fresh", n=7, dim=8)
    b = repo.backup(f"chroma:{store}", queries=0).bundle_id
    result = by_name(repo.diff(a, b, limit=5))
    notes = [f"doc-{i:05d}" for i in range(5)]
    assert result == {
        "docs": (0, 0, 0, [], [], []),
        "fresh": (7, 0, 0, notes, [], []),
        "notes": (0, 0, 12, [], [], notes),
    }


def test_a_full_backup_in_between_changes_nothing_in_the_answer(tmp_path: Path) -> None:
    store = tmp_path / "chroma"
    seeded = seed_chroma(store, "docs", n=300, dim=16)
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    a = repo.backup(f"chroma:{store}", queries=0).bundle_id
    change_docs(store, seeded)
    middle = repo.backup(f"chroma:{store}", queries=0, full=True)
    assert middle.to_json()["datasets"][0]["incremental"] is False
    docs = chroma_client(store).get_collection("docs")
    docs.delete(ids=["doc-00299"])
    docs.add(ids=["late"], embeddings=np.ones((1, 16), dtype=np.float32))
    last = repo.backup(f"chroma:{store}", queries=0)
    assert last.to_json()["datasets"][0]["incremental"] is True  # a link after the full backup

    across = by_name(repo.diff(a, last.bundle_id))["docs"]
    assert across == (16, 11, 6, ["late", *ADDED], CHANGED, [*DELETED, "doc-00299"])
    assert by_name(repo.diff(a, middle.bundle_id))["docs"] == EXPECTED["docs"]
    assert by_name(repo.diff(middle.bundle_id, last.bundle_id))["docs"] == (1, 0, 1, ["late"], [], ["doc-00299"])


def test_the_same_bundle_has_no_differences(history: tuple[aibackup.Repository, str, str], cli: Cli) -> None:
    repo, _, b = history
    result = repo.diff(b, "latest")
    assert by_name(result) == {name: (0, 0, 0, [], [], []) for name in ("docs", "notes")}
    out = ok(cli("diff", "latest", b, "--repo", repo.storage.url)).out
    assert out.rstrip().endswith("no differences") and "+ " not in out


def test_bundles_of_different_sources_are_refused(history: tuple[aibackup.Repository, str, str], cli: Cli) -> None:
    repo, a, _ = history
    other = Path(repo.storage.url).parent / "other"
    seed_chroma(other, "docs", n=10, dim=8)
    c = repo.backup(f"chroma:{other}", queries=0).bundle_id
    with pytest.raises(UsageError):
        repo.diff(a, c)
    line = one_line_error(cli("diff", a, c, "--repo", repo.storage.url), 2, a, c, "different sources")
    assert f"chroma:{other}" in line and f"chroma:{Path(repo.storage.url).parent / 'chroma'}" in line
    err = cli("diff", a, c, "--repo", repo.storage.url, "--json")
    assert err.code == 2 and err.out == "" and '"code": "usage"' in err.err


def test_an_unknown_bundle_is_one_line_and_exit_2(history: tuple[aibackup.Repository, str, str], cli: Cli) -> None:
    repo, a, _ = history
    one_line_error(cli("diff", a, "20200101T000000", "--repo", repo.storage.url), 2, "no bundle '20200101T000000'")
    one_line_error(cli("diff", "nope", "latest", "--repo", repo.storage.url), 2, "no bundle 'nope'")
    one_line_error(cli("diff", "latest", "--repo", repo.storage.url), 2)  # B missing: click's usage line


def test_large_datasets_are_compared_bucket_by_bucket_through_spilled_files(
    history: tuple[aibackup.Repository, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, a, b = history
    # About 40 records a bucket: the 310 of docs are split into 8 buckets, spilled to Parquet files.
    monkeypatch.setattr(aibackup.checks, "BUCKET_BYTES", 64 * 40)
    assert aibackup.checks.bucket_count(310, {}) == 8
    spilled: list[int] = []
    write = aibackup.checks.BucketedSide._write

    def counting(side: aibackup.checks.BucketedSide, bucket: int, part: Any) -> None:
        spilled.append(bucket)
        write(side, bucket, part)

    monkeypatch.setattr(aibackup.checks.BucketedSide, "_write", counting)
    assert by_name(repo.diff(a, b)) == EXPECTED
    assert len(set(spilled)) == 8
    # The first ids of each kind are the smallest over every bucket, not the first buckets' ones.
    assert by_name(repo.diff(a, b, ["docs"], limit=4))["docs"] == (15, 11, 5, ADDED[:4], CHANGED[:4], DELETED[:4])


def test_a_bundle_of_the_older_digest_format_is_compared_record_by_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bundles written before 0.2.0 digest records with BLAKE2b: against a newer bundle their records are
    digested again under the current algorithm, so nothing is reported changed that is not."""
    store = tmp_path / "chroma"
    seeded = seed_chroma(store, "docs", n=300, dim=16)
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True)
    with monkeypatch.context() as m:
        m.setattr(aibackup.bundle, "DIGEST_ALGORITHM", "blake2b128-sum-v1")
        a = repo.backup(f"chroma:{store}", queries=0).bundle_id
    assert repo.show(a).datasets[0].digest_algorithm == "blake2b128-sum-v1"
    unchanged = repo.backup(f"chroma:{store}", queries=0).bundle_id
    assert repo.show(unchanged).datasets[0].digest_algorithm == "sha256-128-sum-v1"
    assert by_name(repo.diff(a, unchanged))["docs"] == (0, 0, 0, [], [], [])
    change_docs(store, seeded)
    b = repo.backup(f"chroma:{store}", queries=0).bundle_id
    assert by_name(repo.diff(a, b))["docs"] == EXPECTED["docs"]


def test_config_files_with_sealed_secrets_are_not_reported_changed(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config bundle seals secret values with a fresh nonce at every backup: an unchanged file must not
    be reported changed (its keyed hash of the plaintext is compared instead); an edited one is."""
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)  # the repository's key is given only where said
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / ".env").write_text("export API_TOKEN=planted-env-token-77a1\nDEBUG=\n")
    (deploy / "app.yaml").write_text("model: tiny\n")
    key = "correct horse battery staple"
    repo = aibackup.Repository.open(str(tmp_path / "repo"), create=True, key=key)
    a = repo.backup(f"config:{deploy}").bundle_id
    b = repo.backup(f"config:{deploy}").bundle_id
    (deploy / ".env").write_text("export API_TOKEN=another-planted-token-88\nDEBUG=\n")
    (deploy / "app.yaml").write_text("model: larger\n")
    (deploy / "new.yaml").write_text("x: 1\n")
    c = repo.backup(f"config:{deploy}").bundle_id
    ((name, same),) = by_name(repo.diff(a, b)).items()
    assert same == (0, 0, 0, [], [], [])
    assert by_name(repo.diff(b, c))[name] == (1, 2, 0, ["new.yaml"], [".env", "app.yaml"], [])
    # The key is needed, as for a restore: without it the manifests cannot be authenticated.
    keyfile = tmp_path / "key"
    keyfile.write_text(key)
    one_line_error(cli("diff", a, b, "--repo", str(tmp_path / "repo")), 2, "encrypted")
    ok(cli("diff", a, b, "--repo", str(tmp_path / "repo"), "--key-file", str(keyfile)))


def test_the_same_records_under_other_settings_are_not_no_differences(tmp_path: Path, cli: Cli) -> None:
    """A collection made again with another distance and the very same records: the two bundles restore
    different collections, so diff names the settings (it said "no differences")."""
    store, repo = tmp_path / "chroma", str(tmp_path / "repo")
    records = seed_chroma(store, "docs", n=40, dim=8, space="l2")
    ok(cli("backup", f"chroma:{store}", "--repo", repo, "--queries", "0"))
    client = chroma_client(store)
    client.delete_collection("docs")
    client.create_collection("docs", metadata={"hnsw:space": "ip", "team": "search ✓"}, embedding_function=None).add(
        **records
    )
    ok(cli("backup", f"chroma:{store}", "--repo", repo, "--queries", "0"))
    first = aibackup.Repository.open(repo).bundle_ids()[0]
    (docs,) = ok(cli("diff", first, "latest", "--repo", repo, "--json")).json()["datasets"]
    assert (docs["added"], docs["changed"], docs["deleted"]) == (0, 0, 0) and docs["settings_changed"], docs
    text = ok(cli("diff", first, "latest", "--repo", repo)).out
    assert "settings changed" in text and "no differences" not in text, text


@pytest.mark.parametrize("kind", ["config", "finetune", "conversations"])
def test_an_edited_file_is_a_changed_record_not_a_changed_setting(tmp_path: Path, cli: Cli, kind: str) -> None:
    """The file kinds' configs summarise their content (bytes, per-file summaries): an edit read "settings
    changed: bytes" (or files) beside the changed record, though no setting changed."""
    folder = tmp_path / "src"
    folder.mkdir()
    line = {"finetune": '{"prompt": "%s", "completion": "y"}\n', "conversations": '{"user_id": "u", "input": "%s"}\n'}
    name = "a.yaml" if kind == "config" else "a.jsonl"
    text = "a: %s\n" if kind == "config" else line[kind]
    (folder / name).write_text(text % "first")
    repo = str(tmp_path / "repo")
    ok(cli("backup", f"{kind}:{folder}", "--repo", repo))
    (folder / name).write_text(text % "second, longer")
    ok(cli("backup", f"{kind}:{folder}", "--repo", repo))
    first = aibackup.Repository.open(repo).bundle_ids()[0]
    (dataset,) = ok(cli("diff", first, "latest", "--repo", repo, "--json")).json()["datasets"]
    assert dataset["settings_changed"] == [] and dataset["added"] + dataset["changed"] >= 1, dataset
    assert "settings changed" not in ok(cli("diff", first, "latest", "--repo", repo)).out
