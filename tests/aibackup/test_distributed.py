"""Partitioned backups (issue 21): a pgvector table written by the workers of a local Dask cluster, each
one block range of the snapshot the backup exported, gives the bundle a single-process backup gives (rows,
dataset digest, records), restores and proves the same; a partition that fails leaves nothing behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import WorkerPlugin

from aibackup.connectors.pgvector import reading
from tests.conftest import Postgres
from tests.helpers import Cli, manifest_json, ok, one_line_error

pytestmark = pytest.mark.postgres

ROWS = 3000


def exact_answers(repo: Path, baseline: dict[str, Any]) -> list[list[str]]:
    """The exact top k of the baseline's queries over the latest bundle's records, in one pass here."""
    import pyarrow as pa

    from aibackup.bundle_reader import BundleReader
    from aibackup.manifests.vectors import dense_column
    from aibackup.nearest import ExactTopK, vector_matrix
    from aibackup.repository import Repository

    repository = Repository.open(str(repo))
    repository.use_key(repository.key())
    (dataset,) = repository.resolve(None).datasets
    table = pa.Table.from_batches(list(BundleReader(repository).batches(dataset)))
    rows = {rid: n for n, rid in enumerate(table.column("id").to_pylist())}
    column = table.column(dense_column(baseline["vector"])).combine_chunks()
    queries = vector_matrix(column)[[rows[q] for q in baseline["queries"]]]
    search = ExactTopK(queries, len(baseline["answers"][0]), baseline["distance"])
    search.add(table.column("id").combine_chunks(), column)
    return [list(answers) for answers in search.top()]


def seeded(server: Postgres, tmp_path: Path, what: str, *, bad: bool = False) -> str:
    db = server.database(f"dist_{what}_{abs(hash(str(tmp_path))) % 10**8}")
    rng = np.random.default_rng(7)
    with server.connect(db) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector, body text, n int)")
        with conn.cursor() as cur, cur.copy("COPY items (id, embedding, body, n) FROM STDIN") as copy:
            for i in range(ROWS):
                size = 4 if bad and i == ROWS - 10 else 8  # a vector of another dimension, in a late block
                vector = "[" + ",".join(f"{x:.6f}" for x in rng.standard_normal(size)) + "]"
                copy.write_row((i, vector, f"body {i} ✓", i % 7))
    return db


def test_a_partitioned_backup_is_the_single_process_one(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aibackup import exact_tasks

    monkeypatch.setattr(reading, "PAGE_BYTES", 64 * 1024)  # several block ranges for a small table
    db = seeded(postgres, tmp_path, "same")
    one, many = tmp_path / "one", tmp_path / "many"
    ok(cli("backup", postgres.uri(db), "--repo", str(one)))
    spread_passes = []
    exact_on = exact_tasks.exact_on

    def counted(*args: object, **kwargs: object) -> int:
        spread_passes.append(exact_on(*args, **kwargs))  # type: ignore[arg-type]
        return spread_passes[-1]

    monkeypatch.setattr(exact_tasks, "exact_on", counted)
    result = ok(cli("backup", postgres.uri(db), "--repo", str(many), "--workers", "2", "--json")).json()
    assert any("partitioned:" in n and "2 Dask worker(s)" in n for n in result["notes"]), result["notes"]
    (single,) = manifest_json(one)["datasets"]
    (spread,) = manifest_json(many)["datasets"]
    assert (spread["rows"], spread["digest"]) == (single["rows"], single["digest"]) == (ROWS, single["digest"])
    names = {Path(p["path"]).name.split("-")[1] for p in spread["parts"]}
    assert len(names) >= 2 and all(n.startswith("p") for n in names)  # parts of several partitions
    assert spread["id_types"] == single["id_types"]
    # The workers sampled the search baseline's queries on the way (no second read of the parts), and its
    # exact pass ran as tasks too (the source has no index: its answers are that pass's top 10).
    assert len(spread["baseline"]["vectors"][0]["queries"]) == len(single["baseline"]["vectors"][0]["queries"]) == 100
    assert spread_passes and spread_passes[0] >= 2
    assert exact_answers(many, spread["baseline"]["vectors"][0]) == spread["baseline"]["vectors"][0]["answers"]
    assert len(spread["chain"]) == 1 and spread["chain"][0]["rows"] == ROWS  # a chain root, like a full backup
    listed = {p.name for p in (many / "data").rglob("*.parquet")}
    assert listed == {Path(p["path"]).name for p in spread["parts"]} | {
        Path(p["path"]).name for p in spread["chain"][0]["index"]
    }
    restored = ok(
        cli("restore", "latest", "--repo", str(many), "--to", postgres.uri(postgres.database("dist_r")), "--json")
    )
    assert restored.json()["ok"]
    # The next backup of the source follows the partitioned one's chain, in one process.
    with postgres.connect(db) as conn:
        conn.execute("UPDATE items SET body = 'changed' WHERE id = 5")
    again = ok(cli("backup", postgres.uri(db), "--repo", str(many), "--json")).json()
    assert again["datasets"][0]["incremental"] and again["datasets"][0]["new_rows"] == 1


def test_an_incremental_backup_is_partitioned_too(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nightly link after a partitioned backup: each worker writes the new and changed records of its
    block range (the parent's digests broadcast to it), this process the tombstones; the chain holds what a
    one-process backup of the same state holds, and restores to the table."""
    monkeypatch.setattr(reading, "PAGE_BYTES", 64 * 1024)
    db = seeded(postgres, tmp_path, "incr")
    many, one = tmp_path / "many", tmp_path / "one"
    ok(cli("backup", postgres.uri(db), "--repo", str(many), "--workers", "2"))
    with postgres.connect(db) as conn:
        conn.execute("UPDATE items SET body = 'changed' WHERE id IN (5, 1500, 2990)")  # early and late blocks
        conn.execute("DELETE FROM items WHERE id IN (7, 2000)")
        conn.execute("INSERT INTO items SELECT i, embedding, 'new', 0 FROM items, generate_series(3000, 3009) i "
                     "WHERE id = 1")  # fmt: skip
    result = ok(cli("backup", postgres.uri(db), "--repo", str(many), "--workers", "2", "--json")).json()
    (entry,) = result["datasets"]
    assert entry["incremental"] and entry["full_reason"] is None, result["notes"]
    assert (entry["rows"], entry["new_rows"], entry["deleted"]) == (ROWS + 8, 13, 2)
    assert any("partitioned:" in n and "2 Dask worker(s)" in n for n in result["notes"]), result["notes"]
    (spread,) = manifest_json(many)["datasets"]
    link = spread["chain"][-1]
    assert (link["added"], link["changed"], link["deleted"]) == (10, 3, 2)
    own = [p for p in spread["parts"] if f"/{result['bundle_id']}/" in p["path"]]
    # written by the workers (PostgreSQL puts changed rows at the table's end: one partition may hold all)
    assert own and all(Path(p["path"]).name.split("-")[1].startswith("p") for p in own)
    ok(cli("backup", postgres.uri(db), "--repo", str(one)))  # the same state, in one process, in full
    (single,) = manifest_json(one)["datasets"]
    assert (spread["rows"], spread["digest"], spread["id_types"]) == (
        single["rows"],
        single["digest"],
        single["id_types"],
    )
    target = postgres.database("dist_incr_r")
    restored = ok(cli("restore", "latest", "--repo", str(many), "--to", postgres.uri(target), "--json")).json()
    assert restored["ok"]
    with postgres.connect(target) as conn:
        rows = dict(conn.execute("SELECT id, body FROM items WHERE id IN (5, 7, 2000, 3009)").fetchall())
    assert rows == {5: "changed", 3009: "new"}
    # More than half changed: found by the workers, and the collection is written in full, still partitioned.
    with postgres.connect(db) as conn:
        conn.execute("UPDATE items SET n = n + 100")
    result = ok(cli("backup", postgres.uri(db), "--repo", str(many), "--workers", "2", "--json")).json()
    (entry,) = result["datasets"]
    assert not entry["incremental"] and "more than half" in entry["full_reason"], result["notes"]
    assert any("partitioned:" in n for n in result["notes"]), result["notes"]
    bundle = result["bundle_id"]
    folder = [p for p in (many / "data" / bundle).rglob("*.parquet")]
    (latest,) = manifest_json(many)["datasets"]
    assert {p.name for p in folder} == {Path(p["path"]).name for p in latest["parts"]} | {
        Path(p["path"]).name for p in latest["chain"][0]["index"]
    }  # nothing of the abandoned link stays
    assert latest["rows"] == ROWS + 8 and len(latest["chain"]) == 1


def test_a_failing_partition_commits_nothing_and_leaves_no_part(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "PAGE_BYTES", 64 * 1024)
    db = seeded(postgres, tmp_path, "bad", bad=True)
    repo = tmp_path / "repo"
    ok(cli("init", "--repo", str(repo)))
    line = one_line_error(cli("backup", postgres.uri(db), "--repo", str(repo), "--workers", "2"), 2, "dimension")
    assert "items" in line
    assert not list((repo / "bundles").glob("*.json"))
    assert not list((repo / "data").rglob("*.parquet"))


def test_workers_and_a_scheduler_are_one_or_the_other(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    db = seeded(postgres, tmp_path, "args")
    args = ("backup", postgres.uri(db), "--repo", str(tmp_path / "repo"))
    one_line_error(cli(*args, "--workers", "2", "--dask", "tcp://127.0.0.1:1"), 2, "--workers")
    one_line_error(cli(*args, "--dask", "tcp://127.0.0.1:1"), 3, "Dask scheduler")


class KillOnce(WorkerPlugin):
    """A Dask worker plugin (the test's, run in the workers): the first worker to start a `task` (a task
    function's name) dies there, once (a marker file says it happened), as a machine lost mid-backup
    would; with `finished`, as the task finishes instead, before the scheduler has its result (Dask then
    runs it again elsewhere, over what it wrote)."""

    name = "kill-once"

    def __init__(self, marker: str, task: str = "write_partition", *, finished: bool = False) -> None:
        self.marker = marker
        self.task = task
        self.finished = finished

    def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
        import os

        moment = start == "executing" if self.finished else finish == "executing"
        if moment and self.task in str(key):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)


def test_a_worker_that_dies_is_replaced_and_the_backup_is_whole(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudpickle
    from dask.distributed import Client, LocalCluster

    monkeypatch.setattr(reading, "PAGE_BYTES", 64 * 1024)
    db = seeded(postgres, tmp_path, "kill")
    one = tmp_path / "one"
    ok(cli("backup", postgres.uri(db), "--repo", str(one)))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "killed"
    repo = tmp_path / "repo"
    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with local as cluster, Client(cluster) as client:
        client.register_plugin(KillOnce(str(marker)))
        result = ok(cli("backup", postgres.uri(db), "--repo", str(repo), "--dask", cluster.scheduler_address))
    assert marker.exists()  # a worker did die mid-backup
    (single,) = manifest_json(one)["datasets"]
    (spread,) = manifest_json(repo)["datasets"]
    assert (spread["rows"], spread["digest"]) == (single["rows"], single["digest"])
    listed = {p.name for p in (repo / "data").rglob("*") if p.is_file()}
    wanted = {Path(p["path"]).name for p in spread["parts"]} | {
        Path(p["path"]).name for p in spread["chain"][0]["index"]
    }
    assert listed == wanted, result.out  # nothing of the dead attempt stays


class HoldAll(WorkerPlugin):
    """A Dask worker plugin (the test's): every `task` (a task function's name: a partition) waits before
    it starts (leaving a "held" file) until a "release" file appears, so the backup or restore is still
    waiting for its tasks when the test interrupts it. (A task holding its worker's event loop also holds
    that worker's other tasks' results: letting one run first would not be reported in time.)"""

    name = "hold-all"

    def __init__(self, folder: str, task: str = "write_partition") -> None:
        self.folder = folder
        self.task = task

    def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
        import os
        import time

        if finish != "executing" or self.task not in str(key):
            return
        open(os.path.join(self.folder, "held"), "a").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(self.folder, "release")) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_ctrl_c_cancels_the_tasks_and_removes_what_they_wrote(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the partitions are written (raised where the backup waits for its tasks, the tasks held
    on their workers): the tasks are cancelled, nothing is committed, no part is left."""
    import time

    import cloudpickle
    from dask.distributed import Client, LocalCluster, as_completed

    from aibackup import api

    monkeypatch.setattr(reading, "PAGE_BYTES", 64 * 1024)
    db = seeded(postgres, tmp_path, "ctrlc")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    flags = tmp_path / "flags"
    flags.mkdir()
    repo = tmp_path / "repo"
    api.Repository.open(str(repo), create=True)
    following = as_completed.__next__

    def interrupted(self: as_completed) -> object:
        deadline = time.monotonic() + 60
        done = False
        while time.monotonic() < deadline and not done:
            done = (flags / "held").exists()
            time.sleep(0.05)
        assert done, "no partition task started"
        time.sleep(0.5)  # the other tasks reach their workers
        raise KeyboardInterrupt  # what Ctrl-C raises in the main thread, waiting here

    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with local as cluster, Client(cluster) as client:
            client.register_plugin(HoldAll(str(flags)))
            monkeypatch.setattr(as_completed, "__next__", interrupted)
            with pytest.raises(KeyboardInterrupt):
                api.backup(str(repo), postgres.uri(db), dask=cluster.scheduler_address)
            monkeypatch.setattr(as_completed, "__next__", following)
            # Checked while the held tasks still wait (they never start): what the backup left is what
            # its own cleanup left.
            assert not list((repo / "bundles").glob("*.json"))
            assert not [p for p in (repo / "data").rglob("*") if p.is_file()]
            (flags / "release").touch()  # (a task cancelled while it ran still ends; see commands.md)
    finally:
        (flags / "release").touch()


@pytest.mark.s3
def test_workers_write_into_s3_with_their_own_credentials(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """An S3 repository: the workers reach it with the AWS_* of their own environment (the local cluster's
    processes inherit this one's), and the bundle is the single-process one."""
    import boto3

    from aibackup.repository import Repository
    from tests.helpers import repository_url

    monkeypatch.setattr(reading, "PAGE_BYTES", 64 * 1024)
    db = seeded(postgres, tmp_path, "s3")
    url = repository_url("s3", tmp_path, request)
    one = tmp_path / "one"
    ok(cli("backup", postgres.uri(db), "--repo", str(one)))
    ok(cli("backup", postgres.uri(db), "--repo", url, "--workers", "2"))
    (single,) = manifest_json(one)["datasets"]
    (spread,) = Repository.open(url).load(Repository.open(url).bundle_ids()[-1]).to_json()["datasets"]
    assert (spread["rows"], spread["digest"]) == (single["rows"], single["digest"])
    bucket = url.split("/")[2]
    keys = {
        o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="repo/data/").get("Contents", [])
    }
    assert keys == {f"repo/{p['path']}" for p in spread["parts"]} | {
        f"repo/{p['path']}" for p in spread["chain"][0]["index"]
    }


def test_the_config_names_a_scheduler_for_every_source(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    """aibackup.yaml's ``dask:`` partitions the nightly backup of its sources; a scheduler that cannot be
    reached fails that source in one line (exit 3), the others are not at stake."""
    from dask.distributed import LocalCluster

    db = seeded(postgres, tmp_path, "config")
    config = tmp_path / "aibackup.yaml"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        config.write_text(
            f"repository: {tmp_path / 'repo'}\ndask: {cluster.scheduler_address}\n"
            f"sources:\n  items: {{uri: '{postgres.uri(db)}'}}\n"
        )
        result = ok(cli("backup", "--config", str(config), "--json")).json()
    (run,) = result["sources"]
    assert run["ok"] and any("partitioned:" in n and "1 Dask worker(s)" in n for n in run["notes"]), run
    config.write_text(config.read_text().replace(cluster.scheduler_address, "tcp://127.0.0.1:1"))
    failed = cli("backup", "--config", str(config), "--json")
    assert failed.code == 3 and "Dask scheduler" in failed.json()["sources"][0]["error"]


def test_the_workers_see_an_application_layout(
    postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """langchain-postgres's table backed up by two workers: their layout detectors merge into the one a
    single process records (LangChain, its collection named)."""
    monkeypatch.setattr(reading, "PAGE_BYTES", 64 * 1024)
    db = postgres.database(f"dist_lc_{abs(hash(str(tmp_path))) % 10**8}")
    rng = np.random.default_rng(3)
    with postgres.connect(db) as conn:
        conn.execute(
            "CREATE TABLE langchain_pg_collection (uuid uuid PRIMARY KEY, name varchar UNIQUE NOT NULL, "
            "cmetadata json);"
            "CREATE TABLE langchain_pg_embedding (id varchar PRIMARY KEY, collection_id uuid REFERENCES "
            "langchain_pg_collection (uuid) ON DELETE CASCADE, embedding vector, document varchar, cmetadata jsonb);"
            "INSERT INTO langchain_pg_collection VALUES ('6f1c2b7a-0d3e-4c5b-9a8f-1e2d3c4b5a69', 'kb', null)"
        )
        with conn.cursor() as cur, cur.copy("COPY langchain_pg_embedding FROM STDIN") as copy:
            for i in range(ROWS):
                vector = "[" + ",".join(f"{x:.6f}" for x in rng.standard_normal(8)) + "]"
                meta = json.dumps({"n": i})
                copy.write_row(
                    (f"doc-{i}", "6f1c2b7a-0d3e-4c5b-9a8f-1e2d3c4b5a69", vector, f"text {i} " + "x" * 200, meta)
                )
    repo = tmp_path / "repo"
    result = ok(cli("backup", postgres.uri(db), "--repo", str(repo), "--workers", "2", "--json")).json()
    assert any("partitioned:" in n for n in result["notes"])
    layout = manifest_json(repo)["datasets"][0]["config"]["layout"]
    assert (layout["framework"], layout["evidence"]["collection"], layout["evidence"]["records"]) == (
        "langchain",
        "kb",
        ROWS,
    )
