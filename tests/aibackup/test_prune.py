"""Prune on real repositories built with the real tool: what goes, what stays and why, and what never goes.

Nights are simulated with ``now=`` (and AIBACKUP_NOW); nothing sleeps. Orphan parts are aged either by
the simulated time of their bundle id or by setting their modification time (os.utime), since the files
themselves are written on the real clock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from aibackup.backup import SourceOptions, run_backup
from aibackup.config import RetentionPolicy
from aibackup.errors import BundleNotFoundError, UsageError
from aibackup.manifests.model import BundleManifest
from aibackup.prune import PruneResult, pin, pinned, run_prune, unpin
from aibackup.repository import Repository
from aibackup.restore import run_restore
from tests.helpers import repo_json, write_repo_doc

UTC = dt.UTC
REPO = "aibackup-repo"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def every(policy: RetentionPolicy | None) -> Any:
    """One policy for every source."""
    return lambda _source: policy


def finetune_source(tmp_path: Path, name: str = "ft") -> str:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "train.jsonl").write_text(
        json.dumps({"prompt": f"what is {name}?", "completion": "a folder 🙂"}) + "\n", encoding="utf-8"
    )
    return f"finetune:{folder}"


def backup(source: str, moment: dt.datetime, *, full: bool = True) -> str:
    """A backup at `moment`; `full` (the default here: these tests reason about bundles whose parts are their
    own) writes every file, none referenced from the previous bundle (aibackup.filereuse)."""
    return run_backup(REPO, source, now=moment, source_options=SourceOptions(full=full)).manifest.bundle_id


def conversation_night(logs: Path, n: int, moment: dt.datetime) -> str:
    """Append night `n`'s exchanges to the log and back it up (incrementally after the first night)."""
    logs.mkdir(exist_ok=True)
    with (logs / "app.jsonl").open("a", encoding="utf-8") as f:
        for i in range(3):
            record = {"user_id": f"u{i}", "session_id": f"s{n}", "timestamp": moment.isoformat(), "input": f"n{n} ✓"}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return backup(f"conversations:{logs}", moment)


def manifest(bundle_id: str) -> BundleManifest:
    return Repository.open(REPO).load(bundle_id)


def part_paths(bundle_id: str) -> set[str]:
    return {p.path for d in manifest(bundle_id).datasets for p in d.parts}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def repo_path() -> Path:
    return Path(REPO).resolve()


def stored_parts() -> set[str]:
    root = repo_path()
    return {str(p.relative_to(root)) for p in (root / "data").rglob("*") if p.is_file()}


def ids(decisions: Any) -> list[str]:
    return [d.bundle_id for d in decisions]


def prune(policies: Any, **kwargs: Any) -> PruneResult:
    return run_prune(Repository.open(REPO), policies, **kwargs)


DAILY = ["2026-01-31", "2026-01-30", "2026-01-29", "2026-01-28", "2026-01-27", "2026-01-26", "2026-01-25"]
WEEKLY = ["2026-01-18", "2026-01-11"]  # ISO weeks 2026-W03 and W02 (W05 and W04 end on the 31st and the 25th)
NIGHTLY = {
    # Every night of a year and a month: the exact restic (0.17) set: monthly 12 stops at February 2025,
    # and yearly 3 has a slot left over (two years hold bundles), so the oldest bundle stays too.
    "year": (
        "2025-01-01",
        12,
        [*DAILY, *WEEKLY, "2025-12-31", "2025-11-30", "2025-10-31", "2025-09-30", "2025-08-31", "2025-07-31",
         "2025-06-30", "2025-05-31", "2025-04-30", "2025-03-31", "2025-02-28", "2025-01-01"],
        ("monthly 2025-12", "yearly 2025"),
    ),
    # Three months across a new year (the quick variant): only the yearly rule keeps the 2025 bundle,
    # and its slot left over keeps the oldest bundle.
    "season": ("2025-11-01", 1, [*DAILY, *WEEKLY, "2025-12-31", "2025-11-01"], ("yearly 2025",)),
}  # fmt: skip


@pytest.mark.parametrize("span", [pytest.param("year", marks=pytest.mark.slow), "season"])
def test_nightly_backups_keep_exactly_the_restic_set(tmp_path: Path, span: str) -> None:
    start, monthly, expected, new_years_eve = NIGHTLY[span]
    source = finetune_source(tmp_path)
    first, last = at(f"{start}T02:00:00"), at("2026-01-31T02:00:00")
    nights = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    bundles = {f"{n:%Y-%m-%d}": backup(source, n) for n in nights}
    parts = {day: part_paths(b) for day, b in bundles.items()}
    sizes = {p.path: p.bytes for b in bundles.values() for d in manifest(b).datasets for p in d.parts}

    policy = RetentionPolicy(keep_last=3, keep_daily=7, keep_weekly=4, keep_yearly=3, keep_monthly=monthly)
    result = prune(every(policy), now=at("2026-01-31T12:00:00"))

    assert ids(result.kept) == [bundles[d] for d in expected]
    assert ids(result.removed) == sorted((b for d, b in bundles.items() if d not in expected), reverse=True)
    assert all(d.reasons == () for d in result.removed)
    reasons = {d.bundle_id: d.reasons for d in result.kept}
    assert reasons[bundles["2026-01-31"]] == (
        "last 3",
        "daily 2026-01-31",
        "weekly 2026-W05",
        "monthly 2026-01",
        "yearly 2026",
    )
    assert reasons[bundles["2026-01-25"]] == ("daily 2026-01-25", "weekly 2026-W04")
    assert reasons[bundles["2025-12-31"]] == new_years_eve
    # Full backups: every part of a removed bundle goes, every part of a kept one stays.
    assert Repository.open(REPO).bundle_ids() == sorted(bundles[d] for d in expected)
    assert set(result.parts_removed) == {p for d in bundles if d not in expected for p in parts[d]}
    assert stored_parts() == {p for d in expected for p in parts[d]}
    assert result.bytes_removed == sum(sizes[p] for p in result.parts_removed)
    assert not result.orphans_removed and not result.orphans_waiting and not result.notes
    assert not any((repo_path() / "data" / bundles[d]).exists() for d in bundles if d not in expected)

    # A second prune with the same policy finds nothing more to do.
    again = prune(every(policy), now=at("2026-01-31T12:00:00"))
    assert not again.removed and not again.parts_removed and len(again.kept) == len(expected)


def test_bytes_removed_and_json(tmp_path: Path) -> None:
    source = finetune_source(tmp_path)
    bundles = [backup(source, at(f"2026-11-{d}T02:00:00")) for d in (20, 21, 22)]
    sizes = {p.path: p.bytes for b in bundles[:2] for d in manifest(b).datasets for p in d.parts}
    result = prune(every(RetentionPolicy(keep_last=1)), now=at("2026-11-22T03:00:00"))
    assert result.bytes_removed == sum(sizes.values()) > 0
    doc = json.loads(json.dumps(result.to_json()))
    assert doc == {
        "dry_run": False,
        "kept": [{"bundle_id": bundles[2], "reasons": ["last 1"]}],
        "removed": [{"bundle_id": b, "reasons": []} for b in reversed(bundles[:2])],
        "parts_removed": sorted(sizes),
        "parts_kept_for_chains": [],
        "orphans_removed": [],
        "orphans_waiting": [],
        "bytes_removed": sum(sizes.values()),
        "chunks": {
            "packs_removed": [],
            "packs_repacked": [],
            "packs_written": [],
            "bytes_reclaimed": 0,
            "chunks_live": 0,
            "chunks_removed": 0,
        },
        "reports_removed": [],
        "uploads_aborted": [],
        "notes": [],
    }


def test_several_bundles_a_day_the_newest_is_the_daily_one(tmp_path: Path) -> None:
    source = finetune_source(tmp_path)
    times = ["2026-11-23T22:00:00", "2026-11-24T01:00:00", "2026-11-24T09:00:00", "2026-11-24T23:30:00"]
    bundles = [backup(source, at(t)) for t in times]
    result = prune(every(RetentionPolicy(keep_daily=2)), now=at("2026-11-25T00:00:00"))
    assert [(d.bundle_id, d.reasons) for d in result.kept] == [
        (bundles[3], ("daily 2026-11-24",)),
        (bundles[0], ("daily 2026-11-23",)),
    ]
    assert ids(result.removed) == [bundles[2], bundles[1]]


def test_pins_keep_a_bundle_outside_every_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = finetune_source(tmp_path)
    bundles = [backup(source, at(f"2026-10-{d:02d}T02:00:00")) for d in range(1, 6)]
    repo = Repository.open(REPO)
    monkeypatch.setenv("AIBACKUP_NOW", "2026-10-05T12:00:00Z")
    pin(repo, bundles[0][:20])  # a unique prefix names the bundle
    monkeypatch.setenv("AIBACKUP_NOW", "2026-10-05T13:00:00Z")
    pin(repo, bundles[0])  # pinning twice is fine and keeps the first time
    assert pinned(repo) == {bundles[0]}
    pin_doc = repo_json(repo_path(), f"pins/{bundles[0]}")
    assert pin_doc == {"bundle_id": bundles[0], "pinned_at": "2026-10-05T12:00:00.000000Z"}
    with pytest.raises(BundleNotFoundError):
        pin(repo, "20991231T000000.000000Z-00000000")

    result = run_prune(repo, every(RetentionPolicy(keep_last=1)))  # now from AIBACKUP_NOW
    assert [(d.bundle_id, d.reasons) for d in result.kept] == [(bundles[4], ("last 1",)), (bundles[0], ("pinned",))]
    assert ids(result.removed) == [bundles[3], bundles[2], bundles[1]]
    assert repo.bundle_ids() == [bundles[0], bundles[4]]
    assert part_paths(bundles[0]) <= stored_parts()

    unpin(repo, bundles[0])
    unpin(repo, bundles[0])  # not pinned any more: fine
    assert pinned(repo) == set()
    with pytest.raises(BundleNotFoundError):
        unpin(repo, "nothing-like-this")
    assert ids(run_prune(repo, every(RetentionPolicy(keep_last=1))).removed) == [bundles[0]]
    assert repo.bundle_ids() == [bundles[4]]


def test_keep_within(tmp_path: Path) -> None:
    source = finetune_source(tmp_path)
    bundles = [backup(source, at(f"2026-11-{d:02d}T02:00:00")) for d in range(1, 11)]
    result = prune(every(RetentionPolicy(keep_within=dt.timedelta(days=3))), now=at("2026-11-10T12:00:00"))
    assert [(d.bundle_id, d.reasons) for d in result.kept] == [(b, ("within 3d",)) for b in reversed(bundles[6:])]
    # Backups stopped: a month later the same rule still keeps the last three days of bundles.
    later = prune(every(RetentionPolicy(keep_within=dt.timedelta(days=3))), now=at("2026-12-10T12:00:00"))
    assert ids(later.kept) == list(reversed(bundles[6:])) and not later.removed


def test_each_source_has_its_own_policy(tmp_path: Path) -> None:
    ft, other, logs = finetune_source(tmp_path, "ft"), finetune_source(tmp_path, "other"), tmp_path / "logs"
    days = [at(f"2026-11-{d:02d}T02:00:00") for d in range(1, 5)]
    a, b, c = [], [], []
    for n, day in enumerate(days):
        a.append(backup(ft, day))
        b.append(backup(other, day + dt.timedelta(hours=1)))
        c.append(conversation_night(logs, n, day + dt.timedelta(hours=2)))
    seen: list[Mapping[str, object]] = []

    def policies(source: Mapping[str, object]) -> RetentionPolicy | None:
        seen.append(source)
        uri = str(source["uri"])
        if uri.endswith("/ft"):
            return RetentionPolicy(keep_last=1)
        if uri.endswith("/other"):
            return RetentionPolicy(keep_last=3)
        return None  # no retention: every bundle of the conversation logs stays

    result = prune(policies, now=at("2026-11-05T00:00:00"))
    assert sorted(str(s["kind"]) for s in seen) == ["conversations", "finetune", "finetune"]
    assert set(ids(result.removed)) == {*a[:3], b[0]}
    assert ids(result.kept) == sorted([a[3], *b[1:], *c], reverse=True)
    assert {d.reasons for d in result.kept if d.bundle_id in c} == {("no retention policy for this source",)}
    assert Repository.open(REPO).bundle_ids() == sorted([a[3], *b[1:], *c])


def crash(source: str, moment: dt.datetime) -> tuple[str, set[str]]:
    """A backup whose manifest never got written: its parts are orphans."""
    bundle_id = backup(source, moment)
    parts = part_paths(bundle_id)
    (repo_path() / "bundles" / f"{bundle_id}.json").unlink()
    return bundle_id, parts


def test_dry_run_removes_nothing_and_says_the_same(tmp_path: Path) -> None:
    source = finetune_source(tmp_path)
    real_now = dt.datetime.now(UTC)
    for d in range(6, 1, -1):
        backup(source, real_now - dt.timedelta(days=d))
    crash(source, real_now - dt.timedelta(days=1))
    before = files(repo_path())
    policy = every(RetentionPolicy(keep_last=2))
    dry = prune(policy, dry_run=True, now=real_now + dt.timedelta(days=2))
    assert files(repo_path()) == before
    assert dry.dry_run and len(dry.removed) == 3 and dry.parts_removed and dry.orphans_removed
    real = prune(policy, now=real_now + dt.timedelta(days=2))
    assert not real.dry_run
    assert (real.kept, real.removed, real.parts_removed, real.orphans_removed, real.bytes_removed) == (
        dry.kept,
        dry.removed,
        dry.parts_removed,
        dry.orphans_removed,
        dry.bytes_removed,
    )
    assert files(repo_path()) != before


def test_an_incremental_chain_stays_restorable(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    nights = [conversation_night(logs, n, at(f"2026-11-{20 + n}T02:00:00")) for n in range(3)]
    newest = manifest(nights[2]).datasets[0]
    assert newest.extends == nights[1]
    needed = part_paths(nights[2])
    assert any(p.startswith(f"data/{nights[0]}/") for p in needed)
    assert any(p.startswith(f"data/{nights[1]}/") for p in needed)

    repo = Repository.open(REPO)
    pin(repo, nights[0])
    result = run_prune(repo, every(RetentionPolicy(keep_last=1)), now=at("2026-11-23T00:00:00"))
    assert ids(result.removed) == [nights[1]]  # the middle of the chain
    assert result.parts_removed == [] and result.bytes_removed == 0  # the newest bundle lists them all
    assert needed <= stored_parts()

    restored = run_restore(REPO, "latest", f"conversations:{tmp_path / 'restored'}")
    assert restored.ok and restored.bundle_id == nights[2]
    assert (tmp_path / "restored" / "app.jsonl").read_bytes() == (logs / "app.jsonl").read_bytes()

    # The first bundle goes too: still nothing of the chain is removed, and the next night still chains.
    unpin(repo, nights[0])
    assert ids(run_prune(repo, every(RetentionPolicy(keep_last=1)), now=at("2026-11-23T00:00:00")).removed) == [
        nights[0]
    ]
    assert needed <= stored_parts()
    fourth = conversation_night(logs, 3, at("2026-11-23T02:00:00"))
    assert manifest(fourth).datasets[0].extends == nights[2]
    run_restore(REPO, "latest", f"conversations:{tmp_path / 'restored2'}")
    assert (tmp_path / "restored2" / "app.jsonl").read_bytes() == (logs / "app.jsonl").read_bytes()
    # The newest bundle lists the whole chain: removing every older manifest frees no part.
    result = prune(every(RetentionPolicy(keep_last=1)), now=at("2026-11-24T00:00:00"))
    assert ids(result.removed) == [nights[2]] and result.parts_removed == []
    assert part_paths(fourth) == stored_parts()


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_bundle_with_a_part_missing_takes_no_keep_rules_place(tmp_path: Path, damage: str) -> None:
    """--keep-last 1 after the newest nightly link lost a part (or had it cut short): that link cannot be
    restored; it kept the one place and the bundle before it, the last one that restores, was removed.
    Now the damaged link is kept outside the rules (verify says what is wrong) and the night before stays."""
    logs = tmp_path / "logs"
    nights = [conversation_night(logs, n, at(f"2026-11-{20 + n}T02:00:00")) for n in range(3)]
    (own,) = sorted(p for p in part_paths(nights[2]) if p.startswith(f"data/{nights[2]}/"))
    path = repo_path() / own
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-1])
    result = prune(every(RetentionPolicy(keep_last=1)), now=at("2026-11-23T00:00:00"))
    assert ids(result.removed) == [nights[0]]
    kept = {d.bundle_id: d.reasons for d in result.kept}
    assert kept[nights[1]] == ("last 1",) and kept[nights[2]][0].startswith("damaged: 1 part(s) missing")
    assert run_restore(REPO, nights[1], f"conversations:{tmp_path / 'restored'}").ok


def test_orphan_parts_wait_for_the_grace_period(tmp_path: Path) -> None:
    source = finetune_source(tmp_path)
    real_now = dt.datetime.now(UTC)
    kept = backup(source, real_now - dt.timedelta(hours=2))
    crashed, orphans = crash(source, real_now - dt.timedelta(hours=1))
    policy = every(RetentionPolicy(keep_last=1))

    sizes = {p: (repo_path() / p).stat().st_size for p in orphans}
    inside = prune(policy, now=real_now)
    assert inside.orphans_waiting == sorted(orphans) and not inside.orphans_removed
    assert orphans <= stored_parts()
    shorter = prune(policy, now=real_now, grace=dt.timedelta(hours=48))
    assert shorter.orphans_waiting == sorted(orphans)

    after = prune(policy, now=real_now + dt.timedelta(hours=25))
    assert after.orphans_removed == sorted(orphans) and not after.orphans_waiting
    assert after.bytes_removed == sum(sizes.values()) > 0
    assert stored_parts() == part_paths(kept)
    assert not (repo_path() / "data" / crashed).exists()
    assert ids(after.kept) == [kept] and not after.removed


def test_a_backup_still_writing_keeps_its_parts_however_old_its_id(tmp_path: Path) -> None:
    source = finetune_source(tmp_path)
    real_now = dt.datetime.now(UTC)
    # Started three days ago (a very long backup), last wrote a part just now: its parts stay.
    crashed, orphans = crash(source, real_now - dt.timedelta(days=3))
    result = prune(every(RetentionPolicy(keep_last=1)), now=real_now)
    assert result.orphans_waiting == sorted(orphans)
    # The same folder, silent for two days: the parts go.
    two_days_ago = (real_now - dt.timedelta(days=2)).timestamp()
    for path in (repo_path() / "data" / crashed).rglob("*"):
        os.utime(path, (two_days_ago, two_days_ago))
    result = prune(every(RetentionPolicy(keep_last=1)), now=real_now)
    assert result.orphans_removed == sorted(orphans)
    # A stranger's file under data/ outside any bundle folder is left alone.
    (repo_path() / "data" / "README").write_text("not ours")
    result = prune(every(RetentionPolicy(keep_last=1)), now=real_now + dt.timedelta(days=9))
    assert not result.orphans_removed and (repo_path() / "data" / "README").exists()
    assert any("left alone" in note for note in result.notes)


def damage(bundle_id: str, how: str) -> None:
    path = repo_path() / "bundles" / f"{bundle_id}.json"
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:  # a manifest written by a newer aibackup
        doc = repo_json(repo_path(), path)
        doc["format_version"] = 99
        write_repo_doc(repo_path(), path, json.dumps(doc).encode())


@pytest.mark.parametrize("how", ["flip", "newer"])
def test_an_unreadable_manifest_is_never_removed_and_no_part_goes(tmp_path: Path, how: str) -> None:
    logs = tmp_path / "logs"
    real_now = dt.datetime.now(UTC)
    ft = finetune_source(tmp_path)
    nights, full = [], []
    for n in range(4):
        nights.append(conversation_night(logs, n, real_now - dt.timedelta(days=5 - n)))
        if n < 3:
            full.append(backup(ft, real_now - dt.timedelta(days=5 - n, hours=-1)))
    _, orphans = crash(ft, real_now - dt.timedelta(hours=1))
    chain = part_paths(nights[2])  # the damaged manifest's chain: nights 0..2
    freed = part_paths(full[0]) | part_paths(full[1])
    damage(nights[2], how)
    before = stored_parts()

    later = real_now + dt.timedelta(days=3)  # every orphan is past the grace period
    result = prune(every(RetentionPolicy(keep_last=1)), now=later)
    assert nights[2] in ids(result.kept)
    reasons = dict(zip(ids(result.kept), [d.reasons for d in result.kept], strict=True))[nights[2]]
    assert reasons[0].startswith("unreadable: ")
    assert set(ids(result.removed)) == {nights[0], nights[1], full[0], full[1]}  # manifests still go
    assert result.parts_removed == [] and result.orphans_removed == [] and result.bytes_removed == 0
    assert stored_parts() == before  # not one part: the unreadable one may reference any of them
    assert chain <= stored_parts()
    assert any(nights[2] in note and "no part removed" in note for note in result.notes)
    assert (repo_path() / "bundles" / f"{nights[2]}.json").exists()

    # Once the manifest is dealt with (here: moved away by hand), the held parts go as orphans.
    (repo_path() / "bundles" / f"{nights[2]}.json").rename(tmp_path / "moved-away.json")
    result = prune(every(RetentionPolicy(keep_last=1)), now=later)
    assert set(result.orphans_removed) == freed | orphans  # the chain stays: the newest bundle lists it
    assert stored_parts() == part_paths(nights[3]) | part_paths(full[2])
    assert not result.notes
    restored = run_restore(REPO, nights[3], f"conversations:{tmp_path / 'restored'}")
    assert restored.ok
    assert (tmp_path / "restored" / "app.jsonl").read_bytes() == (logs / "app.jsonl").read_bytes()


@pytest.mark.parametrize(
    "policy",
    [RetentionPolicy(), RetentionPolicy(keep_last=0), RetentionPolicy(keep_daily=0, keep_weekly=0)],
    ids=["none", "zero", "zeros"],
)
def test_a_policy_without_a_rule_is_refused(tmp_path: Path, policy: RetentionPolicy) -> None:
    source = finetune_source(tmp_path)
    for d in range(1, 4):
        backup(source, at(f"2026-11-{d:02d}T02:00:00"))
    before = files(repo_path())
    with pytest.raises(UsageError, match=r"no keep rule: pass --keep-last N .* or set retention in the config"):
        prune(every(policy), now=at("2026-11-04T00:00:00"))
    assert files(repo_path()) == before
    # No policy at all for a source is not a refusal: it keeps everything.
    assert len(prune(every(None), now=at("2026-11-04T00:00:00")).kept) == 3
    with pytest.raises(UsageError, match="grace"):
        prune(every(RetentionPolicy(keep_last=1)), grace=dt.timedelta(hours=-1))


@pytest.mark.s3
def test_prune_on_s3(tmp_path: Path, s3_env: Any) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="prune")
    repo_url = "s3://prune/ai"
    source = finetune_source(tmp_path)
    real_now = dt.datetime.now(UTC)
    full = SourceOptions(full=True)
    bundles = [
        run_backup(repo_url, source, now=real_now - dt.timedelta(hours=3 - n), source_options=full).manifest
        for n in range(3)
    ]
    repo = Repository.open(repo_url)
    crashed = bundles[1].bundle_id
    repo.storage.remove(repo.manifest_path(crashed))
    pin(repo, bundles[0].bundle_id)
    assert pinned(repo) == {bundles[0].bundle_id}

    def keys() -> set[str]:
        listed = boto3.client("s3").list_objects_v2(Bucket="prune", Prefix="ai/data/")
        return {o["Key"].removeprefix("ai/") for o in listed.get("Contents", [])}

    orphans = sorted(p.path for d in bundles[1].datasets for p in d.parts)
    inside = run_prune(repo, every(RetentionPolicy(keep_last=1)), now=real_now)
    assert inside.orphans_waiting == orphans and set(orphans) <= keys()
    after = run_prune(repo, every(RetentionPolicy(keep_last=1)), now=real_now + dt.timedelta(days=2))
    assert after.orphans_removed == orphans
    assert keys() == {p.path for m in (bundles[0], bundles[2]) for d in m.datasets for p in d.parts}
    unpin(repo, bundles[0].bundle_id)
    gone = run_prune(repo, every(RetentionPolicy(keep_last=1)), now=real_now + dt.timedelta(days=2))
    assert ids(gone.removed) == [bundles[0].bundle_id]
    assert keys() == {p.path for d in bundles[2].datasets for p in d.parts}


def test_a_bundle_made_after_the_clock_stepped_back_is_still_the_newest(tmp_path: Path) -> None:
    """The second backup's clock reads 30 minutes earlier than the first's (NTP stepped it back, or a second
    host runs slow): its id is moved past the first's, so `latest` and status take it as the newest, and
    the keep rules must too (they ranked by created_at and removed it)."""
    source = finetune_source(tmp_path)
    first = backup(source, at("2026-01-02T02:00:00"))
    (tmp_path / "ft" / "train.jsonl").write_text('{"prompt": "new", "completion": "row"}\n', encoding="utf-8")
    second = backup(source, at("2026-01-02T01:30:00"))
    assert second > first and manifest(second).created_at < manifest(first).created_at
    for policy in (RetentionPolicy(keep_last=1), RetentionPolicy(keep_daily=1)):
        result = prune(every(policy), dry_run=True, now=at("2026-01-02T03:00:00"))
        assert ids(result.kept) == [second] and ids(result.removed) == [first], policy
    prune(every(RetentionPolicy(keep_last=1)), now=at("2026-01-02T03:00:00"))
    assert Repository.open(REPO).bundle_ids() == [second]
