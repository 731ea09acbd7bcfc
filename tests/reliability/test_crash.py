"""Crash consistency: a backup killed with SIGKILL at any storage step leaves the repository sound.

A child process runs ``aibackup backup`` with every storage step counted (part created, part data written,
part completed, small object written exclusively: lock, manifest, report; object removed), before and
after each, and SIGKILLs itself at the step numbered ``CRASH_AT``. A probe run without a kill counts the
steps; the points are a seeded sample of them (all of them with ``-m slow``), on a local repository and on
S3 (moto's server, where parts are uploads). After every kill:

- ``verify --read-data`` is clean and ``list`` shows only committed bundles (the killed run's bundle
  exists only if its manifest was written before the kill, and then it verifies too);
- the next backup succeeds (taking the dead run's lock over once it is stale);
- at the end, ``prune --grace 0s`` removes every orphan part, and the repository still verifies.

The first suite kills full backups (``--full``); the second kills incremental ones, whose steps also write
record-index parts and tombstones (see its comment below).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import Cli, chroma_client, chroma_contents, ok, repository_url, seed_chroma

SEED = 20261125
#: Kill points per repository kind in CI (local + S3 >= 20); `-m slow` kills at every step.
CI_POINTS = 12

CHILD = r"""
import json, os, signal, sys, threading
from aibackup import hashing_writer, incremental, storage

incremental.MAX_DEAD = float("inf")  # the incremental suite's chain switches between two states for ever

crash_at = int(os.environ["CRASH_AT"])
count = 0
trace = []  # what each step is: "before create data/<bundle>/000-docs/index-00000.parquet"
guard = threading.Lock()

def step(what):
    global count
    with guard:
        count += 1
        trace.append(what)
        if count == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

def counted(cls, name):
    original = getattr(cls, name)
    def wrapper(*args, **kwargs):
        where = next((a for a in args[1:] if isinstance(a, str)), "")
        step(f"before {name} {where}")
        result = original(*args, **kwargs)
        step(f"after {name} {where}")
        return result
    setattr(cls, name, wrapper)

for name in ("write_exclusive", "create", "close_part", "remove"):
    counted(storage.Storage, name)
counted(hashing_writer.HashingWriter, "write")

from aibackup.cli import main
try:
    main(sys.argv[1:])
finally:
    print(json.dumps({"steps": count, "trace": trace}), file=sys.stderr)
"""


def _child(args: list[str], crash_at: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {}), "CRASH_AT": str(crash_at)},
    )


def _steps(proc: subprocess.CompletedProcess[str]) -> int:
    return len(_trace(proc))


def _trace(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """What each storage step of a run that was not killed was, in order (step n is item n - 1)."""
    assert proc.returncode == 0, proc.stderr
    counted = json.loads(proc.stderr.strip().splitlines()[-1])
    assert len(counted["trace"]) == counted["steps"]
    return list(counted["trace"])


def _later(minutes: int) -> dict[str, str]:
    """AIBACKUP_NOW `minutes` ahead: a killed run's lock (10 minutes to stale) can then be taken over."""
    return {"AIBACKUP_NOW": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).isoformat()}


def _crash_suite(tmp_path: Path, cli: Cli, repo: str, points: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "chroma"
    seed_chroma(store, "docs", n=400)
    seed_chroma(store, "more", n=150, dim=8)
    source = f"chroma:{store}"
    # --full: an unchanged source's incremental backup writes nothing but its manifest (the suite below
    # kills incremental ones).
    args = ["backup", source, "--repo", repo, "--full"]
    ok(cli(*args))  # the repository exists; the crashes hit later backups
    total = _steps(_child(args, 0))  # the probe: a whole backup, counted
    committed = 2
    chosen = range(1, total + 1) if points is None else sorted(random.Random(SEED).sample(range(1, total + 1), points))
    minutes = 0
    for n in chosen:
        minutes += 11  # each kill leaves a lock that turns stale 10 minutes later
        killed = _child(args, n, _later(minutes))
        assert killed.returncode == -9, (n, killed.returncode, killed.stderr)
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        listed = ok(cli("list", "--repo", repo, "--json")).json()
        assert len(listed) in (committed, committed + 1), (n, len(listed))
        committed = len(listed)
        verified = ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()
        assert verified["ok"] and verified["bundles"] == committed, (n, verified)
        minutes += 11
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        ok(cli(*args))  # the next backup succeeds
        committed += 1
    pruned = ok(cli("prune", "--repo", repo, "--keep-last", "1000", "--grace", "0s", "--json")).json()
    assert pruned["removed"] == [] and pruned["parts_removed"] == []  # only orphans go
    after = ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()
    assert after["ok"] and after["bundles"] == committed
    orphans = _orphan_parts(cli, repo)
    assert orphans == [], (orphans, pruned)


def _orphan_parts(cli: Cli, repo: str) -> list[str]:
    """Parts no committed bundle references (a dry-run prune with grace 0 lists what it would remove)."""
    plan: Any = ok(cli("prune", "--repo", repo, "--keep-last", "1000", "--grace", "0s", "--dry-run", "--json")).json()
    return list(plan["orphans_removed"]) + list(plan["orphans_waiting"])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_killed_backup_leaves_the_repository_sound(
    where: str, tmp_path: Path, cli: Cli, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_suite(tmp_path, cli, repository_url(where, tmp_path, request), CI_POINTS, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_backup_killed_at_every_step_leaves_the_repository_sound(
    where: str, tmp_path: Path, cli: Cli, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_suite(tmp_path, cli, repository_url(where, tmp_path, request), None, monkeypatch)


# --- incremental backups -----------------------------------------------------------------------------------
#
# A full backup of state A, then the source moves between two states, A and B, and each incremental backup
# from one to the other is killed at a storage step: its record parts, record-index parts and tombstones,
# the manifest, the lock. A -> B changes, deletes and adds records in "docs" and only deletes in "more" (a
# link of tombstones alone); B -> A brings back the deleted records (their old digests, dead in the chain),
# reverts the changed ones and deletes the added ones ("more": records and index, no tombstones). After
# each kill, besides the checks above, the next backup must continue the chain from the newest committed
# bundle (the killed one when its manifest landed) and restore to exactly what the source holds.

#: Records each direction changes: (collection, deleted in B, changed in B, added in B).
INCREMENTAL_CHANGES = (("docs", range(0, 10), range(10, 40), 5), ("more", range(0, 8), range(0), 0))
#: Kill points per direction in CI: one in each kind of step (the lock taken or released, a record part, a
#: chunk written, a record-index part, tombstones, the manifest); on S3 (slower) those that differ there:
#: uploads completed at close, the manifest's conditional write. Encoders run in parallel, so step n of a
#: killed run is only about what step n of the probe was.
CATEGORIES = ("locks/", "/part-", "write ", "/index-", "/tombstones-", "bundles/")
S3_CATEGORIES = ("/part-", "/tombstones-", "bundles/")
#: A record's fields in chromadb's add(), and the chroma_records keys they come from.
_FIELDS = {"embedding": "embeddings", "document": "documents", "metadata": "metadatas", "uri": "uris"}


def _states() -> dict[str, dict[str, dict[str, Any]]]:
    """The records of state A and B of the store's collections: collection -> id -> chromadb fields."""
    from tests.vectordata import chroma_records

    states: dict[str, dict[str, dict[str, Any]]] = {"A": {}, "B": {}}
    for name, deleted, changed, added in INCREMENTAL_CHANGES:
        n, dim = (400, 16) if name == "docs" else (150, 8)
        seeded = chroma_records(n, dim, seed=len(name))
        a = {
            rid: {field: seeded[plural][i] for field, plural in _FIELDS.items()} for i, rid in enumerate(seeded["ids"])
        }
        b = {rid: rec for i, (rid, rec) in enumerate(a.items()) if i not in deleted}
        rng = np.random.default_rng(SEED)
        for i in changed:
            rid = seeded["ids"][i]
            b[rid] = {**a[rid], "embedding": rng.standard_normal(dim).astype(np.float32), "document": f"changed {i}"}
        for i in range(added):
            b[f"new-{i:03d}"] = {
                "embedding": rng.standard_normal(dim).astype(np.float32),
                "document": f"added {i} ✓",
                "metadata": {"added": i},
                "uri": None,
            }
        states["A"][name], states["B"][name] = a, b
    return states


def _switch(store: Path, states: dict[str, dict[str, dict[str, Any]]], to: str) -> None:
    """Move the store to state `to` (delete, then add: Chroma's upsert would merge metadata)."""
    client = chroma_client(store)
    for name, want in states[to].items():
        other = states["B" if to == "A" else "A"][name]
        collection = client.get_collection(name)
        differ = sorted(rid for rid in want.keys() | other.keys() if _key(want.get(rid)) != _key(other.get(rid)))
        present = set(collection.get(ids=differ, include=[])["ids"])
        if present:
            collection.delete(ids=sorted(present))
        adds = [rid for rid in differ if rid in want]
        if adds:
            collection.add(
                ids=adds,
                embeddings=np.stack([want[rid]["embedding"] for rid in adds]),
                documents=[want[rid]["document"] for rid in adds],
                metadatas=[want[rid]["metadata"] for rid in adds],
                uris=[want[rid]["uri"] for rid in adds],
            )


def _key(record: dict[str, Any] | None) -> object:
    if record is None:
        return None
    return (np.asarray(record["embedding"], np.float32).tobytes(), record["document"], repr(record["metadata"]))


def _kill_points(trace: list[str], categories: Sequence[str] | None, direction: int) -> list[int]:
    """Every step (categories None), or one step of each kind in `categories` (seeded): the manifest's is
    the step before its write in one direction, after it in the other (then the killed bundle exists)."""
    if categories is None:
        return list(range(1, len(trace) + 1))
    rng = random.Random(SEED + direction)
    chosen = []
    for category in categories:
        steps = [n for n, what in enumerate(trace, 1) if category in what]
        assert steps, (category, trace)
        if category == "bundles/":
            steps = [n for n in steps if trace[n - 1].startswith("before" if direction == 0 else "after")]
        chosen.append(rng.choice(steps))
    return sorted(chosen)


def _incremental_crash_suite(
    tmp_path: Path, cli: Cli, repo: str, categories: Sequence[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aibackup import api, incremental

    # The store switches between two states a dozen times: its chain's dead records would pass MAX_DEAD (a
    # full backup) after the third switch. The children turn the rule off too.
    monkeypatch.setattr(incremental, "MAX_DEAD", float("inf"))
    store = tmp_path / "chroma"
    seed_chroma(store, "docs", n=400)
    seed_chroma(store, "more", n=150, dim=8)
    states = _states()
    source = f"chroma:{store}"
    args = ["backup", source, "--repo", repo, "--full-every", "1000"]
    ok(cli(*args))  # state A, in full
    repository = api.Repository.open(repo)
    # The probes: one incremental backup each way, counted and committed.
    traces = []
    for state in ("B", "A"):
        _switch(store, states, state)
        traces.append(_trace(_child(args, 0)))
    for trace in traces:
        for category in CATEGORIES:
            assert any(category in what for what in trace), (category, trace)
    # The kill points, the two directions taking turns.
    plan = [
        (d, n)
        for pair in itertools.zip_longest(*(_kill_points(t, categories, d) for d, t in enumerate(traces)))
        for d, n in enumerate(pair)
        if n is not None
    ]
    committed, current = 3, "A"  # bundles, and the state of the newest
    minutes = 0
    for i, (direction, n) in enumerate(plan):
        start, end = ("A", "B") if direction == 0 else ("B", "A")
        at = (i, f"{start} -> {end}", n, traces[direction][n - 1])
        if current != start:  # two kills the same way in a row: back to where this one starts from
            _switch(store, states, start)
            ok(cli(*args))
            committed, current = committed + 1, start
        newest = ok(cli("list", "--repo", repo, "--json")).json()[0]["bundle_id"]
        _switch(store, states, end)
        minutes += 11  # each kill leaves a lock that turns stale 10 minutes later
        killed = _child(args, n, _later(minutes))
        assert killed.returncode == -9, (at, killed.returncode, killed.stderr)
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        listed = ok(cli("list", "--repo", repo, "--json")).json()
        assert len(listed) in (committed, committed + 1), (at, len(listed))
        if len(listed) == committed + 1:  # the killed run's manifest landed: its bundle is the newest
            newest = listed[0]["bundle_id"]
        committed = len(listed)
        verified = ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()
        assert verified["ok"] and verified["bundles"] == committed, (at, verified)
        minutes += 11
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        backed = ok(cli(*args, "--json")).json()  # the next backup succeeds, and continues the chain
        committed, current = committed + 1, end
        assert backed["parent"] == newest, (at, backed["parent"], newest)
        for dataset in backed["datasets"]:
            assert dataset["incremental"] and dataset["full_reason"] is None, (at, dataset)
        for dataset in repository.show(backed["bundle_id"]).datasets:
            assert dataset.extends == newest, (at, dataset.name, dataset.extends)
        target = tmp_path / f"restored-{i:03d}"
        restored = ok(cli("restore", backed["bundle_id"], "--to", f"chroma:{target}", "--repo", repo, "--json"))
        assert restored.json()["ok"], (at, restored.out)
        for name in ("docs", "more"):
            assert chroma_contents(target, name) == chroma_contents(store, name), (at, name)
    pruned = ok(cli("prune", "--repo", repo, "--keep-last", "1000", "--grace", "0s", "--json")).json()
    assert pruned["removed"] == [] and pruned["parts_removed"] == []  # only orphans go
    after = ok(cli("verify", "--read-data", "--repo", repo, "--json")).json()
    assert after["ok"] and after["bundles"] == committed
    orphans = _orphan_parts(cli, repo)
    assert orphans == [], (orphans, pruned)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_killed_incremental_backup_leaves_the_chain_sound(
    where: str, tmp_path: Path, cli: Cli, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    categories = CATEGORIES if where == "local" else S3_CATEGORIES
    _incremental_crash_suite(tmp_path, cli, repository_url(where, tmp_path, request), categories, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_incremental_backup_killed_at_every_step_leaves_the_chain_sound(
    where: str, tmp_path: Path, cli: Cli, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _incremental_crash_suite(tmp_path, cli, repository_url(where, tmp_path, request), None, monkeypatch)
