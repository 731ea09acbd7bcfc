"""Partitioned restores (issue 21): the parts of a collection re-hashed, validated and loaded by the workers
of a Dask cluster into a copy of the table in pgvector's load schema, published once and proven like a
one-process restore; a
damaged part, a worker that dies after its partition committed, and Ctrl-C leave the target as it was."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aibackup.connectors.pgvector import reading
from tests.aibackup import test_distributed
from tests.aibackup.test_distributed import HoldAll, KillOnce, seeded
from tests.conftest import Postgres
from tests.helpers import Cli, manifest_json, ok, one_line_error

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
    ok(cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(one)))
    result = ok(cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(many), "--workers", "2", "--json"))
    (dataset,) = result.json()["datasets"]
    assert dataset["ok"] and dataset["rows"] == ROWS
    assert any(n.startswith("partitioned:") and "2 Dask worker(s)" in n for n in dataset["notes"]), dataset["notes"]
    assert {c["name"] for c in dataset["checks"]} >= {"content", "definition"}
    single, spread = table_state(postgres, one), table_state(postgres, many)
    assert spread == single and spread[0] == ROWS and spread[2] == []
    # The recorded indexes and keys were made once, after the rows: the definition check compared them.
    # overwrite replaces the table in one transaction; merge (an upsert) runs in one process, and says so.
    with postgres.connect(many) as conn:
        conn.execute("UPDATE items SET body = 'changed' WHERE id < 10")
        conn.execute(
            "INSERT INTO items (id, embedding, body, n) VALUES (99999, %s, 'extra', 1)",
            ["[" + ",".join(["0.5"] * 8) + "]"],
        )
    args = ("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(many), "--workers", "2")
    merged = ok(cli(*args, "--mode", "merge", "--json")).json()
    notes = merged["datasets"][0]["notes"]
    assert any("restored in one process: a pgvector target takes a partitioned restore in mode" in n for n in notes)
    rows, _, left = table_state(postgres, many)
    assert rows == ROWS + 1 and not left
    ok(cli(*args, "--mode", "overwrite"))
    assert table_state(postgres, many) == single


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
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    db = postgres.database("rdamaged")
    line = one_line_error(
        cli("restore", "latest", "--repo", str(bundle), "--to", postgres.uri(db), "--workers", "2"), 1, "sha256"
    )
    assert Path(dataset["parts"][-1]["path"]).name in line and "nothing was written" in line
    assert missing(postgres, db)


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
    from dask.distributed import Client, LocalCluster

    from aibackup import api

    cloudpickle.register_pickle_by_value(test_distributed)  # its worker plugins travel by value
    flags = tmp_path / "flags"
    flags.mkdir()
    db = postgres.database("rctrlc")
    gather = Client.gather

    def interrupted(self: Client, futures: object, *args: object, **kwargs: object) -> object:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (flags / "held").exists():
            time.sleep(0.05)
        assert (flags / "held").exists(), "no load task started"
        raise KeyboardInterrupt

    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with local as cluster, Client(cluster) as client:
            client.register_plugin(HoldAll(str(flags), "load_partition"))
            monkeypatch.setattr(Client, "gather", interrupted)
            with pytest.raises(KeyboardInterrupt):
                api.Repository.open(str(bundle)).restore(to=postgres.uri(db), dask=cluster.scheduler_address)
            monkeypatch.setattr(Client, "gather", gather)
            assert missing(postgres, db)
            (flags / "release").touch()
    finally:
        (flags / "release").touch()


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
