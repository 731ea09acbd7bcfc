"""Partitioned backups and restores of LanceDB (issue 21): a table's fragments of one version read by the
workers of a Dask cluster give the single-process bundle; a partitioned restore's workers write fragment
files that the driver commits as one version, the table as a one-process restore makes it (schema with its
metadata, values, indexes), and a failure leaves no table behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from lancedb.index import BTree, IvfPq

from tests.connectors.test_lancedb import database, rich_table, rows_by_id
from tests.helpers import Cli, flip_middle_byte, manifest_json, ok, one_line_error, partitioned_restore

ROWS = 900


def rows(table: pa.Table, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) as arrays of their own (``take`` copies; LanceDB 0.40 panics on some slices of
    nested arrays)."""
    return table.take(pa.array(range(start, stop)))


def fragmented(path: Path, *, repeat: bool = False) -> Any:
    """A table of three fragments (one per write), with a vector and a scalar index; `repeat`: the last
    fragment holds an id of the first one again."""
    full = rich_table(ROWS)
    table = database(path).create_table("docs", rows(full, 0, 300))
    table.add(rows(full, 300, 600))
    last = rows(full, 600, 900)
    if repeat:
        ids = last.column("id").to_pylist()
        ids[-1] = 0
        last = last.set_column(0, "id", pa.array(ids, type=last.schema.field("id").type))
    table.add(last)
    table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=4, num_sub_vectors=4))
    table.create_index("i8", config=BTree())
    assert len(table.to_lance().get_fragments()) == 3
    return table


def test_a_partitioned_backup_and_restore_of_lancedb_are_the_one_process_ones(tmp_path: Path, cli: Cli) -> None:
    table = fragmented(tmp_path / "source")
    source = f"lancedb:{tmp_path / 'source'}"
    one, many = tmp_path / "one", tmp_path / "many"
    ok(cli("backup", source, "--repo", str(one)))
    result = ok(cli("backup", source, "--repo", str(many), "--workers", "2", "--json")).json()
    assert any("partitioned: 3 groups of the fragments of version" in n for n in result["notes"]), result["notes"]
    (single,) = manifest_json(one)["datasets"]
    (spread,) = manifest_json(many)["datasets"]
    assert (spread["rows"], spread["digest"]) == (single["rows"], single["digest"])
    assert spread["rows"] == ROWS and len(spread["parts"]) >= 2

    # The partitioned bundle (several parts) restored by two workers: one commit, the table as it was.
    target = tmp_path / "target"
    args = ("restore", "latest", "--repo", str(many), "--to", f"lancedb:{target}")
    # The restored table's fragments read back by the workers for the proof.
    dataset = partitioned_restore(cli, *args, read_back="fragments")
    checks = {c["name"]: c for c in dataset["checks"]}
    assert "2 rebuilt" in checks["indexes"]["detail"]
    assert checks["content"]["ok"] and checks["ids"]["detail"] == f"all {ROWS} ids match"
    back = database(target).open_table("docs")
    assert back.schema.equals(table.schema, check_metadata=True)
    assert rows_by_id(back).equals(rows_by_id(table))
    data_version = [v for v in back.list_versions()]
    assert len(data_version) == 3  # the one commit of every fragment, then the two indexes

    # overwrite replaces it in one version; merge is a one-process restore, and says so.
    ok(cli(*args, "--workers", "2", "--mode", "overwrite"))
    assert rows_by_id(database(target).open_table("docs")).equals(rows_by_id(table))
    merged = ok(cli(*args, "--workers", "1", "--mode", "merge", "--json")).json()
    assert any(
        "restored in one process: a lancedb target takes a partitioned restore in mode" in n
        for n in merged["datasets"][0]["notes"]
    )

    # The next night's link is written by the workers too: a fragment each, the parent's digests looked up.
    table.delete("id IN (3, 450)")
    table.update(where="id = 800", values={"i8": 7})
    table.add(rows(rich_table(ROWS + 5), ROWS, ROWS + 5))
    nightly = ok(cli("backup", source, "--repo", str(many), "--workers", "2", "--json")).json()
    (entry,) = nightly["datasets"]
    assert entry["incremental"] and (entry["new_rows"], entry["deleted"]) == (6, 2), nightly["notes"]
    assert any("partitioned:" in n for n in nightly["notes"]), nightly["notes"]
    ok(cli("backup", source, "--repo", str(one), "--full"))
    assert manifest_json(many)["datasets"][0]["digest"] == manifest_json(one)["datasets"][0]["digest"]
    ok(cli(*args, "--workers", "2", "--mode", "overwrite"))
    assert rows_by_id(database(target).open_table("docs")).equals(rows_by_id(table))


def test_ids_repeated_across_fragments_are_refused_before_the_workers_start(tmp_path: Path, cli: Cli) -> None:
    fragmented(tmp_path / "source", repeat=True)
    repo = tmp_path / "repo"
    line = one_line_error(
        cli("backup", f"lancedb:{tmp_path / 'source'}", "--repo", str(repo), "--workers", "2"), 2, "not unique"
    )
    assert "docs" in line
    assert not list(repo.glob("bundles/*.json"))


def test_a_failed_partitioned_restore_leaves_no_table(tmp_path: Path, cli: Cli) -> None:
    fragmented(tmp_path / "source")
    repo = tmp_path / "repo"
    ok(cli("backup", f"lancedb:{tmp_path / 'source'}", "--repo", str(repo), "--workers", "2"))
    (dataset,) = manifest_json(repo)["datasets"]
    damaged = repo / dataset["parts"][-1]["path"]
    flip_middle_byte(damaged)
    target = tmp_path / "target"
    one_line_error(
        cli("restore", "latest", "--repo", str(repo), "--to", f"lancedb:{target}", "--workers", "2"), 1, "sha256"
    )
    assert not (target / "docs.lance").exists()


def test_a_partitioned_backup_counts_nan_and_infinity_across_its_partitions(tmp_path: Path, cli: Cli) -> None:
    """Each worker counts what its partition holds and the driver's note adds them up (the note came only
    from one-process backups, so a partitioned one said nothing until the restore was refused)."""
    import lance

    def batch(ids: list[str], bad: float) -> pa.Table:
        values = [[bad if i % 2 == 0 else 1.0, 0.5] for i in range(len(ids))]
        return pa.table({"id": ids, "vector": pa.array(values, pa.list_(pa.float32(), 2))})

    path = str(tmp_path / "db" / "odd.lance")
    lance.write_dataset(batch(["a", "b", "c"], float("nan")), path)  # a and c
    lance.write_dataset(batch(["d", "e"], float("inf")), path, mode="append")  # d
    lance.write_dataset(batch(["f"], 2.0), path, mode="append")  # finite
    assert len(lance.dataset(path).get_fragments()) == 3
    done = ok(cli("backup", "lancedb:./db", "--repo", "r", "--queries", "0", "--workers", "2", "--json")).json()
    assert any("partitioned:" in n for n in done["notes"]), done["notes"]
    assert [n for n in done["notes"] if "NaN or Infinity" in n] == [
        "odd: 3 record(s) hold NaN or Infinity in 'vector': backed up as they are, but no vector store takes "
        "such a vector back, so a restore of this collection is refused"
    ], done["notes"]
