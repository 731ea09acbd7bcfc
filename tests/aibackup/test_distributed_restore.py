"""Partitioned restores (issue 21): the parts of a collection re-hashed, validated and loaded by the workers
of a Dask cluster into a copy of the table in pgvector's load schema, published once and proven like a
one-process restore; a
damaged part, a worker that dies after its partition committed, and Ctrl-C leave the target as it was."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from aibackup.connectors.pgvector import reading
from tests.aibackup import test_distributed
from tests.aibackup.test_distributed import HoldAll, KillOnce, seeded
from tests.conftest import Postgres
from tests.helpers import Cli, flip_middle_byte, manifest_json, ok, one_line_error, resigned_manifest, write_repo_doc

pytestmark = pytest.mark.postgres

ROWS = 3000


@pytest.fixture
def bundle(postgres: Postgres, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository holding a backup of `seeded`'s table in several parts (a partitioned backup writes
    one part or more per partition)."""
    monkeypatch.setattr(reading, "PAGE_BYTES", 64 * 1024)
    db = seeded(postgres, tmp_path, "rsrc")
    repo = tmp_path / "repo"
    ok(cli("backup", postgres.uri(db), "--repo", str(repo), "--workers", "2"))
    (dataset,) = manifest_json(repo)["datasets"]
    assert len(dataset["parts"]) >= 2
    return repo


def table_state(server: Postgres, db: str, table: str = "items") -> tuple[int, str, list[str]]:
    """Rows, an md5 of every row in key order, and the load schemas left in the database."""
    with server.connect(db) as conn:
        rows, digest = conn.execute(
            f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t"
        ).fetchone()
        left = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'aibackup_load_%'")]
    return rows, digest, left


def missing(server: Postgres, db: str, table: str = "items") -> bool:
    with server.connect(db) as conn:
        gone = conn.execute("SELECT to_regclass(%s) IS NULL", [table]).fetchone()[0]
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'aibackup_load_%'").fetchone()[0]
    return bool(gone) and left == 0


def test_a_partitioned_restore_is_the_one_process_restore(postgres: Postgres, bundle: Path, cli: Cli) -> None:
    one, many = postgres.database("rone"), postgres.database("rmany")
    alone = ok(cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(one), "--json"))
    result = ok(cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(many), "--workers", "2", "--json"))
    (dataset,) = result.json()["datasets"]
    assert dataset["ok"] and dataset["rows"] == ROWS
    assert any(n.startswith("partitioned:") and "2 Dask worker(s)" in n for n in dataset["notes"]), dataset["notes"]
    # The proof's record comparison was spread too: the bundle's side from the load tasks, the table's read
    # back by tasks of block ranges.
    assert any(n.startswith("proof: the target read back by") and "block range" in n for n in dataset["notes"])
    checks = {c["name"]: c for c in dataset["checks"]}
    assert checks.keys() >= {"content", "definition"}
    assert "records read by the workers" in checks["bundle"]["detail"]
    assert checks["content"]["detail"].startswith(f"all {ROWS} records identical")
    # The search check's exact pass over the bundle ran on the workers, and judged the source's recorded
    # answers as the one-process restore's pass did (the targets' own answers may differ: two HNSW builds).
    assert any("the search check's exact pass over the bundle by" in n for n in dataset["notes"])
    (single_search,) = [c for c in alone.json()["datasets"][0]["checks"] if c["name"] == "search"]
    assert checks["search"]["ok"] and checks["search"]["measures"]["rule"] == single_search["measures"]["rule"]
    assert checks["search"]["measures"]["source_recall"] == single_search["measures"]["source_recall"]
    assert checks["search"]["measures"]["queries"] == single_search["measures"]["queries"] > 0
    single, spread = table_state(postgres, one), table_state(postgres, many)
    assert spread == single and spread[0] == ROWS and spread[2] == []
    # The recorded indexes and keys were made once, after the rows: the definition check compared them.
    # merge: the workers load a copy, the publishing transaction upserts it into the table on its primary
    # key (the rows it changed are the bundle's again, the row it lacks stays); overwrite replaces the table.
    with postgres.connect(many) as conn:
        conn.execute("UPDATE items SET body = 'changed' WHERE id < 10")
        conn.execute(
            "INSERT INTO items (id, embedding, body, n) VALUES (99999, %s, 'extra', 1)",
            ["[" + ",".join(["0.5"] * 8) + "]"],
        )
    args = ("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(many), "--workers", "2")
    merged = ok(cli(*args, "--mode", "merge", "--json")).json()
    (dataset,) = merged["datasets"]
    assert any(n.startswith("partitioned:") for n in dataset["notes"]), dataset["notes"]
    checks = {c["name"]: c for c in dataset["checks"]}
    assert dataset["ok"] and checks["ids"]["detail"] == f"all {ROWS} bundle ids present; 1 other records kept (merge)"
    assert checks["content"]["detail"].startswith(f"all {ROWS} records identical")
    rows, _, left = table_state(postgres, many)
    assert rows == ROWS + 1 and not left
    with postgres.connect(many) as conn:
        assert conn.execute("SELECT count(*) FROM items WHERE body = 'changed'").fetchone()[0] == 0
    ok(cli(*args, "--mode", "overwrite"))
    assert table_state(postgres, many) == single


@pytest.mark.parametrize(
    ("damage", "check", "says"),
    [
        ("UPDATE items SET body = 'changed' WHERE id = 7", "content", "1 of 3000 records differ (e.g. '7')"),
        ("DELETE FROM items WHERE id = 11", "ids", "1 missing (e.g. '11')"),
        ("INSERT INTO items SELECT 99999, embedding, body, n FROM items WHERE id = 3", "ids", "1 unexpected"),
    ],
)
def test_the_spread_proof_finds_a_record_changed_after_publishing(
    postgres: Postgres, bundle: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, damage: str, check: str, says: str
) -> None:
    """The table changed between publishing and the proof (as a damaging load would leave it): the
    workers' comparison fails the restore (exit 1), naming the record."""
    from aibackup import partitioned_restore

    db = postgres.database("rdamage")
    publish = partitioned_restore.Load.publish

    def damaging(self: partitioned_restore.Load, connector: object) -> int:
        rows = publish(self, connector)  # type: ignore[arg-type]
        with postgres.connect(db) as conn:
            conn.execute(damage)
        return rows

    monkeypatch.setattr(partitioned_restore.Load, "publish", damaging)
    result = cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(db), "--workers", "2", "--json")
    assert result.code == 1, result.err
    (dataset,) = result.json()["datasets"]
    assert any(n.startswith("proof: the target read back by") for n in dataset["notes"])
    failed = {c["name"]: c["detail"] for c in dataset["checks"] if not c["ok"]}
    assert check in failed and says in failed[check], failed


def test_a_restored_table_that_does_not_split_is_read_back_by_the_restore(
    postgres: Postgres, bundle: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target opened as a source cannot split the restored table: the restore's process reads it back
    and compares it with the bundle's side the load tasks brought, and says so."""
    from aibackup.connectors.pgvector.connector import PgvectorConnector

    monkeypatch.setattr(PgvectorConnector, "partition", lambda self, dataset, wanted: None)
    db = postgres.database("rnosplit")
    result = ok(cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(db), "--workers", "2", "--json"))
    (dataset,) = result.json()["datasets"]
    assert "proof: the target read back in this process (the restored collection does not split)" in "".join(
        dataset["notes"]
    )
    checks = {c["name"]: c["detail"] for c in dataset["checks"]}
    assert checks["content"].startswith(f"all {ROWS} records identical") and "by the workers" in checks["bundle"]


def test_an_empty_table_of_the_same_columns_is_kept_and_filled(postgres: Postgres, bundle: Path, cli: Cli) -> None:
    """create mode writes into an empty table of the same columns (the application's own, with its
    comment), not a table of its own."""
    db = postgres.database("rempty")
    with postgres.connect(db) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector, body text, n int)")
        conn.execute("COMMENT ON TABLE items IS 'the application''s'")
    ok(cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(db), "--workers", "2"))
    rows, _, left = table_state(postgres, db)
    assert rows == ROWS and not left
    with postgres.connect(db) as conn:
        assert conn.execute("SELECT obj_description('items'::regclass)").fetchone()[0] == "the application's"


def test_a_damaged_part_is_refused_and_the_target_stays_as_it_was(postgres: Postgres, bundle: Path, cli: Cli) -> None:
    (dataset,) = manifest_json(bundle)["datasets"]
    damaged = bundle / dataset["parts"][-1]["path"]
    flip_middle_byte(damaged)
    db = postgres.database("rdamaged")
    line = one_line_error(
        cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(db), "--workers", "2"), 1, "sha256"
    )
    assert Path(dataset["parts"][-1]["path"]).name in line and "nothing was written" in line
    assert missing(postgres, db)
    # The worker that found the damage recorded it, as a restore on one machine does (the next backup must
    # not extend a chain that reads the part).
    from aibackup import reports
    from aibackup.repository import Repository

    repo = Repository.open(str(bundle))
    assert dataset["parts"][-1]["path"] in reports.damaged_parts(repo)


def test_records_that_do_not_add_up_to_the_digest_are_refused_and_recorded(
    postgres: Postgres, bundle: Path, cli: Cli
) -> None:
    """Every part intact, but the workers' digests do not add up to the manifest's (a writer's bug, a
    manifest rewritten by someone holding the key): the driver refuses, nothing is written, and the bundle
    is remembered as damaged, as a restore on one machine remembers it."""
    from aibackup import reports
    from aibackup.repository import Repository

    doc = manifest_json(bundle)
    (dataset,) = doc["datasets"]
    digest = dataset["digest"]
    digest["value"] = f"{(int(digest['value'], 16) + 1) % 2**128:032x}"
    write_repo_doc(bundle, f"bundles/{doc['bundle_id']}.json", resigned_manifest(bundle, doc))
    db = postgres.database("rdigest")
    result = cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(db), "--workers", "2")
    line = one_line_error(result, 1, "do not match its manifest's digest")
    assert "nothing was written" in line and missing(postgres, db)
    repo = Repository.open(str(bundle))
    (found,) = [d for d in reports.read_all(repo, reports.VERIFY) if d.get("kind") == "restore"]
    assert found["ok"] is False and found["bundles"] == [doc["bundle_id"]]
    assert "the records do not give the manifest's digest" in found["problems"][0]["problem"]


def test_a_table_of_other_columns_in_the_way_is_refused_and_kept(
    postgres: Postgres, tmp_path: Path, bundle: Path, cli: Cli
) -> None:
    """An empty table of other columns where create mode would write: refused when the rows are
    published (the workers loaded them out of sight), the table kept as it was, no load schema left."""
    db = postgres.database("rother")
    with postgres.connect(db) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(3), body text, n int)")
    result = cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(db), "--workers", "2")
    one_line_error(result, 2, "other columns")
    rows, _, left = table_state(postgres, db)
    assert rows == 0 and not left
    with postgres.connect(db) as conn:
        kept = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass"
        assert conn.execute(kept + " AND attnum = 2").fetchone()[0] == "vector(3)"


def test_a_task_run_again_after_its_worker_died_loads_its_rows_once(
    postgres: Postgres, tmp_path: Path, bundle: Path, cli: Cli
) -> None:
    import cloudpickle
    from dask.distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(test_distributed)  # its worker plugins travel by value
    marker = tmp_path / "killed"
    db = postgres.database("rkill")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(KillOnce(str(marker), "load_partition", finished=True))
        result = ok(
            cli(
                "restore",
                "latest",
                "--repo",
                str(bundle),
                "--to",
                postgres.uri(db),
                "--dask",
                cluster.scheduler_address,
                "--json",
            )
        )
    assert marker.exists()  # a worker died after its partition's COPY committed
    assert result.json()["ok"]
    rows, _, left = table_state(postgres, db)
    assert rows == ROWS and not left


def test_ctrl_c_cancels_the_loads_and_removes_the_load_schema(
    postgres: Postgres, tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudpickle
    from dask.distributed import Client, LocalCluster, as_completed

    from aibackup import api

    cloudpickle.register_pickle_by_value(test_distributed)  # its worker plugins travel by value
    flags = tmp_path / "flags"
    flags.mkdir()
    db = postgres.database("rctrlc")
    waiting = as_completed.__next__

    def interrupted(self: as_completed) -> object:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (flags / "held").exists():
            time.sleep(0.05)
        assert (flags / "held").exists(), "no load task started"
        raise KeyboardInterrupt

    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with local as cluster, Client(cluster) as client:
            client.register_plugin(HoldAll(str(flags), "load_partition"))
            # Raised where the restore waits for its load tasks' results.
            monkeypatch.setattr(as_completed, "__next__", interrupted)
            with pytest.raises(KeyboardInterrupt):
                api.Repository.open(str(bundle)).restore(to=postgres.uri(db), dask=cluster.scheduler_address)
            monkeypatch.setattr(as_completed, "__next__", waiting)
            assert missing(postgres, db)
            (flags / "release").touch()
    finally:
        (flags / "release").touch()


def test_an_incremental_chain_is_restored_partitioned(postgres: Postgres, tmp_path: Path, cli: Cli) -> None:
    """A nightly bundle is a chain (a full backup, then links): its record parts are spread over the workers,
    each task given the records of its parts that later links' tombstones remove; the result is the
    one-process restore. A damaged tombstone part (re-hashed by the restore's process) is refused with
    nothing written."""
    db = seeded(postgres, tmp_path, "rchain")
    repo = tmp_path / "repo"
    ok(cli("backup", postgres.uri(db), "--repo", str(repo)))
    with postgres.connect(db) as conn:
        conn.execute("UPDATE items SET body = 'changed' WHERE id < 5")
        conn.execute("DELETE FROM items WHERE id BETWEEN 100 AND 102")
        conn.execute("INSERT INTO items SELECT id + 10000, embedding, body, n FROM items WHERE id < 2")
    link = ok(cli("backup", postgres.uri(db), "--repo", str(repo), "--json")).json()
    assert link["datasets"][0]["incremental"]
    (dataset,) = manifest_json(repo)["datasets"]
    assert len(dataset["chain"]) == 2 and len(dataset["parts"]) >= 2

    one, many = postgres.database("rchain_one"), postgres.database("rchain_many")
    ok(cli("restore", "latest", "--repo", str(repo), "--to", postgres.uri(one)))
    result = ok(cli("restore", "latest", "--repo", str(repo), "--to", postgres.uri(many), "--workers", "2", "--json"))
    (restored,) = result.json()["datasets"]
    assert any(n.startswith("partitioned:") for n in restored["notes"]), restored["notes"]
    assert restored["ok"] and restored["rows"] == ROWS - 3 + 2
    assert table_state(postgres, many) == table_state(postgres, one)
    assert table_state(postgres, many)[0] == ROWS - 3 + 2

    (tombstones,) = dataset["chain"][1]["tombstones"]
    damaged = repo / tombstones["path"]
    flip_middle_byte(damaged)
    target = postgres.database("rchain_damaged")
    line = one_line_error(
        cli("restore", "latest", "--repo", str(repo), "--to", postgres.uri(target), "--workers", "2"), 1, "sha256"
    )
    assert Path(tombstones["path"]).name in line and "nothing was written" in line
    assert missing(postgres, target)


def test_a_search_check_failing_over_a_few_queries_is_confirmed_on_the_cluster(
    postgres: Postgres, bundle: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--queries 10` where the target answers those 10 queries worse: the partitioned restore measures the
    check again over the whole baseline (the query records from the load tasks, the exact pass as tasks
    again), and the verdict over all of them stands."""
    from aibackup.connectors.pgvector.connector import PgvectorConnector

    search = PgvectorConnector.search

    def worse_first_answers(self: PgvectorConnector, name: str, vector: str, queries: Any, k: int) -> list[list[str]]:
        answers = search(self, name, vector, queries, k)
        return [row[:7] + answers[(n + 5) % len(answers)][:3] if n < 10 else row for n, row in enumerate(answers)]

    monkeypatch.setattr(PgvectorConnector, "search", worse_first_answers)
    target = postgres.uri(postgres.database("rconfirm"))
    args = ("restore", "latest", "--repo", str(bundle), "--to", target, "--workers", "2", "--queries", "10", "--json")
    (dataset,) = ok(cli(*args)).json()["datasets"]
    (check,) = [c for c in dataset["checks"] if c["name"] == "search"]
    m = check["measures"]
    assert check["ok"] and m["queries"] == 100 and m["first"]["queries"] == 10
    assert m["first"]["recall"] < m["first"]["needs"] and m["recall"] >= m["needs"]
    assert "measured over every baseline query because the first 10 fell short" in check["detail"]
    (said,) = [n for n in dataset["notes"] if "the search check's exact pass over the bundle by" in n]
    assert said.count("exact pass") == 1  # run twice, said once


def test_what_cannot_be_split_is_restored_in_one_process_and_said(
    postgres: Postgres, tmp_path: Path, bundle: Path, cli: Cli
) -> None:
    """An embedded Chroma store (one process's) takes no partitioned restore: the restore runs in this
    process, with a note."""
    result = ok(
        cli(
            "restore",
            "latest",
            "--repo",
            str(bundle),
            "--to",
            f"chroma:{tmp_path / 'chroma'}",
            "--workers",
            "1",
            "--json",
        )
    )
    (dataset,) = result.json()["datasets"]
    assert dataset["ok"] and dataset["rows"] == ROWS
    assert any("restored in one process: " in n and "takes no partitioned restore" in n for n in dataset["notes"])
    assert json.dumps(result.json())  # the report is JSON as usual


def test_the_drill_restores_on_the_configured_cluster(
    postgres: Postgres, tmp_path: Path, bundle: Path, cli: Cli
) -> None:
    """aibackup.yaml's ``dask:`` also carries the restore-test drill: timed as an incident restore on the
    cluster would run, proven the same."""
    from dask.distributed import Client, LocalCluster, get_task_stream

    scratch = postgres.database("rdrill")
    source = manifest_json(bundle)["source"]["uri"]
    config = tmp_path / "aibackup.yaml"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        config.write_text(
            f"repository: {bundle}\ndask: {cluster.scheduler_address}\n"
            f"sources:\n  items: {{uri: '{source}'}}\n"
            f"targets:\n  scratch: {{uri: '{postgres.uri(scratch)}'}}\n"
            "restore_test: {target: scratch}\n"
        )
        with get_task_stream(client) as stream:  # every client's tasks, the drill's too
            result = ok(cli("restore-test", "--config", str(config), "--json")).json()
    tasks = [t for t in stream.data if "load_partition" in str(t.get("key"))]
    assert result["ok"], result
    assert len(tasks) >= 2, stream.data[:3]  # the drill's collection was loaded by the workers
