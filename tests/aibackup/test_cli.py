"""The CLI end to end, as an on-call engineer runs it: real embedded Chroma and Qdrant, real repositories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.helpers import (
    chroma_client,
    chroma_contents,
    ok,
    one_line_error,
    repo_doc,
    repo_json,
    resigned_manifest,
    seed_chroma,
    write_repo_doc,
)
from tests.vectordata import chroma_records

Cli = Any


def contract(datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fields the JSON contract promises (outputs may add more)."""
    return [{k: d[k] for k in ("name", "kind", "rows")} for d in datasets]


def test_round_trip_chroma_qdrant_chroma_gives_back_identical_records(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=300, dim=16, space="l2")
    original = chroma_contents(tmp_path / "chroma", "docs")

    first = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--json")).json()
    assert contract(first["datasets"]) == [{"name": "docs", "kind": "vectors", "rows": 300}]
    restored = ok(cli("restore", first["bundle_id"], "--to", f"qdrant:{tmp_path / 'qdrant'}", "--json")).json()
    assert restored["ok"] is True
    assert [c["name"] for c in restored["datasets"][0]["checks"]] == [
        "bundle",
        "rows",
        "ids",
        "content",
        "search",
    ]

    second = ok(cli("backup", f"qdrant:{tmp_path / 'qdrant'}", "--json")).json()
    ok(cli("restore", second["bundle_id"], "--to", f"chroma:{tmp_path / 'chroma2'}"))
    assert chroma_contents(tmp_path / "chroma2", "docs") == original
    # The bundles of both backends hold the same records: the digests agree.
    shown = [ok(cli("show", b["bundle_id"], "--json")).json() for b in (first, second)]
    assert shown[0]["datasets"][0]["digest"] == shown[1]["datasets"][0]["digest"]
    assert shown[1]["parent"] is None and shown[0]["source"]["kind"] == "chroma"


def test_cosine_collection_into_qdrant_is_proven_within_tolerance(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "notes", n=200, dim=32, space="cosine")
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    result = ok(cli("restore", "--to", "qdrant"))
    assert "all checks passed" in result.out
    assert "tolerated vectors within" in result.out
    assert (tmp_path / "aibackup-restore" / "qdrant").is_dir()  # the bare `qdrant` target


def test_json_contracts(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "alpha", n=20)
    seed_chroma(tmp_path / "chroma", "beta", n=30)
    backup = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--collection", "beta", "--json")).json()
    assert set(backup) >= {"bundle_id", "datasets"}
    assert contract(backup["datasets"]) == [{"name": "beta", "kind": "vectors", "rows": 30}]
    later = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--json")).json()
    listed = ok(cli("list", "--json")).json()
    assert [b["bundle_id"] for b in listed] == [later["bundle_id"], backup["bundle_id"]]  # newest first
    assert listed[0]["datasets"] == [
        {"name": "alpha", "kind": "vectors", "rows": 20},
        {"name": "beta", "kind": "vectors", "rows": 30},
    ]
    assert isinstance(listed[0]["created_at"], str)
    verified = ok(cli("verify", "--read-data", "--json")).json()
    assert verified["ok"] is True and verified["problems"] == []
    restored = ok(
        cli(
            "restore",
            "latest",
            "--to",
            f"chroma:{tmp_path / 'out'}",
            "--collection",
            "alpha=renamed",
            "--json",
        )
    ).json()
    assert restored["bundle_id"] == later["bundle_id"]
    (dataset,) = restored["datasets"]
    assert (dataset["name"], dataset["rows"], dataset["target"]) == ("alpha", 20, "renamed")
    assert all(set(c) >= {"name", "ok", "detail"} and c["ok"] for c in dataset["checks"])


def test_s3_repository_through_moto(tmp_path: Path, cli: Cli, s3_env: Any) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="backups")
    seed_chroma(tmp_path / "chroma", "docs", n=120)
    repo = "s3://backups/ai/prod"
    backup = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", repo, "--json")).json()
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="backups")["Contents"]}
    assert f"ai/prod/bundles/{backup['bundle_id']}.json" in keys
    assert any(k.startswith(f"ai/prod/data/{backup['bundle_id']}/") and k.endswith(".parquet") for k in keys)
    assert ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()["ok"] is True
    restored = ok(cli("restore", "latest", "--repo", repo, "--to", f"qdrant:{tmp_path / 'q'}", "--json")).json()
    assert restored["ok"]
    # The repository from the environment variable, as cron jobs set it.
    import os

    os.environ["AIBACKUP_REPO"] = repo
    try:
        assert ok(cli("list", "--json")).json()[0]["bundle_id"] == backup["bundle_id"]
    finally:
        del os.environ["AIBACKUP_REPO"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "manifest"])
def test_damage_is_caught_by_verify_and_refused_by_restore(tmp_path: Path, cli: Cli, damage: str) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=100)
    backup = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--json")).json()
    repo = tmp_path / "aibackup-repo"
    part = next(repo.joinpath("data").rglob("*.parquet"))
    manifest = repo / "bundles" / f"{backup['bundle_id']}.json"
    if damage == "flip":
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0x01
        part.write_bytes(bytes(data))
        damaged = part
    elif damage == "truncate":
        part.write_bytes(part.read_bytes()[:-100])
        damaged = part
    elif damage == "missing":
        part.unlink()
        damaged = part
    else:
        plain = repo_doc(repo, manifest)
        assert b'"rows":100' in plain
        write_repo_doc(repo, manifest, plain.replace(b'"rows":100', b'"rows":101', 1))
        damaged = manifest
    verified = cli("verify", "--read-data", "--json")
    assert verified.code == 1
    problems = verified.json()["problems"]
    assert [p["path"] for p in problems] == [str(damaged)]
    text = cli("verify", "--read-data")
    assert text.code == 1 and str(damaged) in text.out
    refused = cli("restore", "latest", "--to", f"qdrant:{tmp_path / 'q'}")
    line = one_line_error(refused, 1)
    assert damaged.name in line or "damaged manifest" in line
    assert not (tmp_path / "q" / "collection").exists()  # nothing was written


def test_ctrl_c_half_way_into_a_collection_says_which_and_what_to_do(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a restore writes a collection leaves part of it in a store without transactions: the
    line says which collection and how to finish (it said only "interrupted", and the rerun then met "already
    holds N records" as if they were the user's own); the rerun it names completes the restore."""
    from aibackup.connectors.chroma.connector import ChromaConnector

    seed_chroma(tmp_path / "chroma", "docs", n=300)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--queries", "0"))
    real = ChromaConnector.import_

    def ctrl_c_after_a_batch(self: ChromaConnector, plan: Any, batches: Any) -> int:
        def first_then_ctrl_c() -> Any:
            yield next(iter(batches)).slice(0, 100)
            raise KeyboardInterrupt  # what SIGINT raises in the main thread, between two writes

        return real(self, plan, first_then_ctrl_c())

    target = f"chroma:{tmp_path / 'back'}"
    with monkeypatch.context() as patch:
        patch.setattr(ChromaConnector, "import_", ctrl_c_after_a_batch)
        for args in ((), ("--json",)):
            result = cli("restore", "latest", "--to", target, "--mode", "overwrite", *args)
            assert result.code == 130
            line = json.loads(result.err)["error"]["message"] if args else one_line_error(result, 130)
            assert "interrupted: restore stopped in collection 'docs'" in line, line
            assert "may now hold part of the bundle (run it again)" in line, line
    assert chroma_client(tmp_path / "back").get_collection("docs").count() == 100  # what it left
    assert ok(cli("restore", "latest", "--to", target, "--mode", "overwrite", "--json")).json()["ok"]
    assert chroma_client(tmp_path / "back").get_collection("docs").count() == 300


def test_ctrl_c_during_the_proof_says_the_collection_was_written_but_not_proven(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the proof, once the target was written, said "nothing of it was written" of a store that
    writes in one transaction (pgvector: an overwrite had already replaced the table) and "may now hold part
    of the bundle" of the others: it holds all of it, unproven."""
    import aibackup.restore as restore_module

    seed_chroma(tmp_path / "chroma", "docs", n=50)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--queries", "0"))

    def ctrl_c(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    target = f"lancedb:{tmp_path / 'back'}"
    with monkeypatch.context() as patch:
        patch.setattr(restore_module, "prove", ctrl_c)
        line = one_line_error(cli("restore", "latest", "--to", target), 130)
    assert "restore stopped in collection 'docs', which now holds the bundle's records but was not proven" in line
    assert "(run it again with --mode overwrite to prove it)" in line and "nothing of it" not in line, line
    assert ok(cli("restore", "latest", "--to", target, "--mode", "overwrite", "--json")).json()["ok"]


def test_crash_between_parts_and_manifest_leaves_no_bundle(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aibackup.repository import Repository

    seed_chroma(tmp_path / "chroma", "docs", n=50)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    first = sorted((tmp_path / "aibackup-repo" / "data").rglob("*.parquet"))  # records and record index

    def crash(self: Repository, manifest: object) -> None:
        raise KeyboardInterrupt  # the process dies after writing its parts, before the manifest

    with monkeypatch.context() as patch:
        patch.setattr(Repository, "commit", crash)
        one_line_error(cli("backup", f"chroma:{tmp_path / 'chroma'}"), 130, "interrupted")
    # Interrupted: no bundle, and the parts it wrote are removed again.
    assert sorted((tmp_path / "aibackup-repo" / "data").rglob("*.parquet")) == first
    assert len(ok(cli("list", "--json")).json()) == 1

    # Killed (SIGKILL) between its parts and its manifest: nothing runs after, so the parts stay behind.
    import subprocess
    import sys

    script = (
        "import os, signal, sys\n"
        "from aibackup.repository import Repository\n"
        "Repository.commit = lambda self, manifest: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from aibackup.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "backup", f"chroma:{tmp_path / 'chroma'}"], capture_output=True, timeout=120
    )
    assert proc.returncode == -9
    assert len(list((tmp_path / "aibackup-repo" / "data").rglob("*.parquet"))) == 2  # the orphan is there ...
    assert len(ok(cli("list", "--json")).json()) == 1  # ... but no bundle references it
    assert ok(cli("verify", "--read-data", "--json")).json()["ok"]
    # Its lock stays behind, but its process is gone on this machine: the next backup takes it over at
    # once, saying so (no hand unlock, no waiting for the heartbeat to age).
    taken = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--json")).json()
    assert any("whose process is gone" in note for note in taken["notes"])


def test_a_commit_that_fails_after_its_manifest_landed_keeps_the_parts(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest was written but the commit still failed (say the connection dropped on the answer): the
    run reports the failure, and the bundle it may have published stays whole."""
    from aibackup.errors import UnavailableError
    from aibackup.repository import Repository

    seed_chroma(tmp_path / "chroma", "docs", n=50)
    commit = Repository.commit

    def landed_then_failed(self: Repository, manifest: Any) -> None:
        commit(self, manifest)
        raise UnavailableError("the connection dropped before the answer")

    with monkeypatch.context() as patch:
        patch.setattr(Repository, "commit", landed_then_failed)
        one_line_error(cli("backup", f"chroma:{tmp_path / 'chroma'}"), 3, "connection dropped")
    assert len(ok(cli("list", "--json")).json()) == 1
    assert ok(cli("verify", "--read-data", "--json")).json()["ok"]


def test_non_empty_target_needs_a_mode(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=40)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    target = f"qdrant:{tmp_path / 'q'}"
    ok(cli("restore", "--to", target))
    one_line_error(cli("restore", "--to", target), 2, "docs", "--mode")
    assert ok(cli("restore", "--to", target, "--mode", "overwrite", "--json")).json()["ok"]
    merged = ok(cli("restore", "--to", target, "--mode", "merge", "--json")).json()
    assert merged["ok"]


def test_named_vectors_into_chroma_are_refused_unless_lossy(tmp_path: Path, cli: Cli) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection(
        "multi",
        vectors_config={
            "text": models.VectorParams(size=4, distance=models.Distance.EUCLID),
            "image": models.VectorParams(size=3, distance=models.Distance.DOT),
        },
        sparse_vectors_config={"bm25": models.SparseVectorParams()},
    )
    client.upsert(
        "multi",
        points=[
            models.PointStruct(
                id=i,
                vector={
                    "text": [i, 1.0, 2.0, 3.0],
                    "image": [1.0, i, 0.5],
                    "bm25": models.SparseVector(indices=[1, 5], values=[0.5, i]),
                },
                payload={"n": i, "tags": ["a", "b"]},
            )
            for i in range(1, 21)
        ],
    )
    client.close()
    ok(cli("backup", f"qdrant:{tmp_path / 'q'}"))
    target = f"chroma:{tmp_path / 'c'}"
    refused = cli("restore", "--to", target)
    one_line_error(refused, 2, "multi")
    lossy = ok(cli("restore", "--to", target, "--allow-lossy", "--json")).json()
    assert lossy["ok"]
    dropped = " ".join(lossy["datasets"][0]["dropped"])
    assert "image" in dropped and "bm25" in dropped
    # What was really lost, counted: every point had a text vector, a sparse vector and a list of tags
    # (Chroma holds lists of one type: the tags stay, so no metadata is rewritten).
    assert lossy["datasets"][0]["lost"] == [
        "column 'sparse:bm25': 20 values dropped",
        "column 'vector:text': 20 values dropped",  # 'image' is kept: the first by name
    ]


def test_latest_naming_a_backup_of_some_collections_says_so(tmp_path: Path, cli: Cli) -> None:
    """`latest` is the newest bundle, also one that `backup --collection` limited: list marks it, and a
    restore of it names the collections it left out and the bundle that holds them (it restored one
    collection of two, proven, and said nothing of the other)."""
    store = f"chroma:{tmp_path / 'chroma'}"
    seed_chroma(tmp_path / "chroma", "alpha", n=20)
    seed_chroma(tmp_path / "chroma", "beta", n=30)
    whole = ok(cli("backup", store, "--json")).json()["bundle_id"]
    some = ok(cli("backup", store, "--collection", "beta", "--json")).json()["bundle_id"]
    listed = ok(cli("list")).out.splitlines()
    assert [line for line in listed if "[--collection: only these]" in line] == [
        line for line in listed if line.startswith(some)
    ]
    restored = ok(cli("restore", "latest", "--to", f"chroma:{tmp_path / 'out'}", "--json")).json()
    assert restored["bundle_id"] == some
    (dataset,) = restored["datasets"]
    assert dataset["notes"][0] == (
        f"the latest bundle {some} holds only what `backup --collection` named ('beta'), not the source's "
        f"other collections; the newest bundle of all of them is {whole}: restore it by id (or give --collection)"
    )
    named = ok(cli("restore", "latest", "--to", f"chroma:{tmp_path / 'out2'}", "--collection", "beta", "--json"))
    assert not any("backup --collection" in n for n in named.json()["datasets"][0]["notes"])


def test_bad_input_gives_one_line_and_the_documented_exit_code(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=10)
    one_line_error(cli("backup", "mongodb://x"), 2, "unknown store")
    one_line_error(cli("backup", f"chroma:{tmp_path / 'nowhere'}"), 2, "nowhere")
    one_line_error(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--collection", "nope"), 2, "nope")
    one_line_error(cli("backup", f"chroma+http://127.0.0.1:{free_port()}"), 3, "127.0.0.1")
    one_line_error(cli("backup", f"qdrant+http://127.0.0.1:{free_port()}"), 3, "127.0.0.1")
    one_line_error(cli("list"), 2, "no repository")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file.txt").write_text("not a repo")
    one_line_error(cli("list", "--repo", str(tmp_path / "stuff")), 2, "not an aibackup repository")
    one_line_error(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(tmp_path / "stuff")), 2)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    one_line_error(
        cli("restore", "20200101T000000.000000Z-deadbeef", "--to", "qdrant"), 2, "20200101T000000.000000Z-deadbeef"
    )
    one_line_error(cli("restore", "--to", "mysql:x"), 2, "unknown store")
    one_line_error(cli("restore", "--to", "qdrant", "--collection", "ghost"), 2, "ghost")
    one_line_error(cli("restore", "--to", "qdrant", "--mode", "replace"), 2, "replace")
    one_line_error(cli("restore", "--to", "qdrant", "--recall-tolerance", "nan"), 2, "--recall-tolerance")
    one_line_error(cli("restore", "--to", "qdrant", "--recall-tolerance", "2"), 2, "--recall-tolerance")
    one_line_error(cli("restore", "--to", "qdrant", "--min-recall", "nan"), 2, "--min-recall")
    one_line_error(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--queries", "-1"), 2, "--queries")
    err = cli("restore", "--to", "mysql:x", "--json")
    assert err.code == 2 and json.loads(err.err)["error"]["exit_code"] == 2


def test_newer_manifest_version_is_refused_clearly(tmp_path: Path, cli: Cli) -> None:
    from aibackup.manifests.model import FORMAT_VERSION

    seed_chroma(tmp_path / "chroma", "docs", n=10)
    bundle = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--json")).json()["bundle_id"]
    repo = tmp_path / "aibackup-repo"
    path = f"bundles/{bundle}.json"
    doc = repo_json(repo, path)
    doc["format_version"] = FORMAT_VERSION + 1
    write_repo_doc(repo, path, resigned_manifest(repo, doc))  # as a newer aibackup would write it
    one_line_error(cli("restore", "--to", "qdrant"), 2, "newer", "upgrade")
    one_line_error(cli("show", bundle), 2, "newer")


def test_console_script_shows_no_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "aibackup"
    proc = subprocess.run(
        [str(exe), "restore", "--to", "qdrant", "--repo", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.chroma_server
def test_chroma_server_as_source_and_target(tmp_path: Path, cli: Cli, chroma_server: Any) -> None:
    import chromadb

    client = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port)
    collection = client.create_collection("served-docs", metadata={"hnsw:space": "ip"}, embedding_function=None)
    collection.add(**chroma_records(150, 12, seed=3))
    uri = f"chroma+http://{chroma_server.host}:{chroma_server.port}"
    backup = ok(cli("backup", uri, "--collection", "served-docs", "--json")).json()
    assert backup["datasets"][0]["rows"] == 150
    restored = ok(cli("restore", "--to", uri, "--collection", "served-docs=served-copy", "--json")).json()
    assert restored["ok"] and restored["target"] == uri
    copy = client.get_collection("served-copy", embedding_function=None)
    assert copy.count() == 150 and copy.metadata == collection.metadata
    one_line_error(cli("restore", "--to", uri, "--collection", "served-docs=served-copy"), 2, "served-copy")
    one_line_error(cli("restore", "--to", f"chroma+http://127.0.0.1:{free_port()}"), 3, "127.0.0.1")


def test_search_check_can_be_skipped(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=30)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}"))
    restored = ok(cli("restore", "--to", "qdrant", "--queries", "0", "--json")).json()
    search = restored["datasets"][0]["checks"][-1]
    assert search == {"name": "search", "ok": True, "detail": "skipped (--queries 0)"}


def test_point_in_time_restore_with_at(tmp_path: Path, cli: Cli) -> None:
    import datetime as dt

    from aibackup.backup import run_backup

    seed_chroma(tmp_path / "chroma", "docs", n=10)
    nights = [dt.datetime(2026, 11, day, 2, 0, tzinfo=dt.UTC) for day in (20, 21, 22)]
    ids = [
        run_backup("aibackup-repo", f"chroma:{tmp_path / 'chroma'}", now=night).manifest.bundle_id for night in nights
    ]
    at = ok(cli("restore", "--at", "2026-11-21T12:00", "--to", "qdrant", "--json")).json()
    assert at["bundle_id"] == ids[1]
    zoned = ok(cli("restore", "--at", "2026-11-22T03:30+02:00", "--to", "chroma", "--json")).json()
    assert zoned["bundle_id"] == ids[1]  # 01:30 UTC, before the third night's 02:00
    one_line_error(cli("restore", "--at", "2026-11-19T00:00", "--to", "qdrant"), 2, "no bundle", "2026-11-19")
    one_line_error(cli("restore", "--at", "yesterday", "--to", "qdrant"), 2, "bad time 'yesterday'")
    one_line_error(cli("restore", ids[0], "--at", "2026-11-21", "--to", "qdrant"), 2, "either")


def test_a_broken_repository_layout_is_named_never_a_traceback(tmp_path: Path, cli: Cli) -> None:
    seed_chroma(tmp_path / "chroma", "docs", n=10)
    source = f"chroma:{tmp_path / 'chroma'}"
    first = ok(cli("backup", source, "--json")).json()["bundle_id"]
    second = ok(cli("backup", source, "--json")).json()["bundle_id"]
    repo = tmp_path / "aibackup-repo"
    # A stray name that looks like a bundle but is not a time is ignored, not fatal for the nightly run.
    (repo / "bundles" / "20261125T999999.000000Z-deadbeef.json").write_text("{}")
    ok(cli("backup", source))
    # A manifest dated far in the future is named instead of silently reordering every later bundle.
    (repo / "bundles" / "29991231T000000.000000Z-00000000.json").write_text("{}")
    one_line_error(cli("backup", source), 2, "29991231T000000.000000Z-00000000", "clock")
    (repo / "bundles" / "29991231T000000.000000Z-00000000.json").unlink()
    # A damaged newest manifest: restore latest refuses and names the bundle before it.
    newest = ok(cli("list", "--json")).json()[0]["bundle_id"]
    (repo / "bundles" / f"{newest}.json").write_text("{}")
    line = one_line_error(cli("restore", "--to", "qdrant"), 1, newest)
    assert second in line
    listed = cli("list", "--json")
    assert listed.code == 1 and listed.json()[0]["problem"]
    # A folder where a part should be is a named problem; the repository root being a file is not a repository.
    part = next((repo / "data" / first).rglob("*.parquet"))
    part.unlink()
    part.mkdir()
    verified = cli("verify", first, "--read-data", "--json")
    assert verified.code == 1 and str(part) in verified.json()["problems"][0]["path"]
    one_line_error(cli("list", "--repo", str(tmp_path / "chroma" / "chroma.sqlite3")), 2, "is a file")
    one_line_error(cli("backup", source, "--repo", "/proc/aibackup-cannot-be-here"), 3, "cannot write")


def test_a_manifest_rewritten_with_a_valid_checksum_is_still_caught(tmp_path: Path, cli: Cli) -> None:
    """A digest or a dataset kind changed and the checksum recomputed (and, in an encrypted repository, the
    MAC: a writer holding the key): verify decodes, restore refuses."""
    seed_chroma(tmp_path / "chroma", "docs", n=30)
    bundle = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--json")).json()["bundle_id"]
    repo = tmp_path / "aibackup-repo"
    path = repo / "bundles" / f"{bundle}.json"
    original, plaintext = path.read_bytes(), repo_doc(repo, path)

    def rewrite(change: Any) -> None:
        doc = json.loads(plaintext)
        change(doc["datasets"][0])
        write_repo_doc(repo, path, resigned_manifest(repo, doc))

    rewrite(lambda d: d["digest"].update(value="0" * 32))
    verified = cli("verify", "--read-data", "--json")
    assert verified.code == 1 and "digest" in verified.json()["problems"][0]["problem"]
    assert ok(cli("verify", "--json")).json()["ok"]  # without --read-data only structure is checked
    one_line_error(cli("restore", "--to", f"qdrant:{tmp_path / 'q'}"), 1, "digest", "nothing was written")
    assert not (tmp_path / "q" / "collection").exists()
    rewrite(lambda d: d.update(kind="telemetry"))
    one_line_error(cli("restore", "--to", f"qdrant:{tmp_path / 'q'}"), 2, "'telemetry'", "upgrade")
    path.write_bytes(original)  # the forged manifests are not this version's output


def test_empty_collections_cross_backends(tmp_path: Path, cli: Cli) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("empty", vectors_config=models.VectorParams(size=3, distance=models.Distance.DOT))
    client.close()
    ok(cli("backup", f"qdrant:{tmp_path / 'q'}"))
    restored = ok(cli("restore", "--to", f"chroma:{tmp_path / 'c'}", "--json")).json()
    assert restored["ok"] and restored["datasets"][0]["rows"] == 0
    ok(cli("backup", f"chroma:{tmp_path / 'c'}"))
    again = ok(cli("restore", "--to", f"qdrant:{tmp_path / 'q2'}", "--json")).json()
    assert again["ok"] and again["datasets"][0]["rows"] == 0


def test_a_refused_latest_names_an_older_bundle_that_holds_the_collection(tmp_path: Path, cli: Cli) -> None:
    """`restore latest --collection logs` while the newest manifest (another source's) is damaged: the hint
    named the bundle just before it, which held no 'logs', and following it at 2 AM failed again (exit 2)."""
    logs, cfg, repo = tmp_path / "logs", tmp_path / "cfg", str(tmp_path / "repo")
    logs.mkdir()
    (logs / "logs.jsonl").write_text('{"role": "user", "content": "hi"}\n')
    cfg.mkdir()
    (cfg / "app.yaml").write_text("a: 1\n")
    ok(cli("backup", f"conversations:{logs}", "--repo", repo))
    ok(cli("backup", f"config:{cfg}", "--repo", repo))
    ok(cli("backup", f"config:{cfg}", "--repo", repo, "--full"))
    with_logs, _, newest = (b["bundle_id"] for b in reversed(ok(cli("list", "--repo", repo, "--json")).json()))
    manifest = tmp_path / "repo" / "bundles" / f"{newest}.json"
    manifest.write_bytes(manifest.read_bytes()[:-40])
    into = ["--collection", "logs", "--repo", repo, "--to", f"conversations:{tmp_path / 'o'}"]
    one_line_error(cli("restore", "latest", *into), 1, newest, f"holding 'logs': {with_logs}")
    ok(cli("restore", with_logs, *into))
    assert (tmp_path / "o" / "logs.jsonl").read_text() == (logs / "logs.jsonl").read_text()
