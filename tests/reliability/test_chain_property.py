"""Incremental chains, night after night: every bundle of a chain restores exactly what the store held.

A seeded model plans each night's changes to a real store (embedded Chroma, Qdrant local mode): changed
records (new content, a revert to an earlier version of the same id, a delete and re-add in one night),
deleted ids, new ids, ids deleted on an earlier night added again (with their old content or new), and
upserts that change nothing. A backup follows every night, and that night's store contents are recorded
as the store's own client returns them. The schedule also holds a night with no change, a night where
exactly half the records change (still incremental), a night where more than half changes through
upserts and one where deletions take it over half (both full, with their reason), and the full backup
that ``full_every`` forces.

Each night's backup report must say what the model did (incremental or full and why, rows, ``new_rows``
= added + changed, ``deleted`` = ids deleted). At the end every night's bundle is restored into a fresh
store of the same kind: its checks pass and the target holds exactly that night's contents (vectors as
float32 bytes, metadata as JSON text so an int never equals a float). Distances are l2/euclid: exact.

Failures print the seed; ``AIBACKUP_CHAIN_SEED=N`` replays another schedule.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest

from aibackup import api
from aibackup.manifests.model import DatasetManifest
from tests.helpers import chroma_client

SEED = int(os.environ.get("AIBACKUP_CHAIN_SEED", "20261205"))
NAME = "docs"
DIM = 8

#: A record of the model: (float32 vector bytes, document, metadata, uri).
Record = tuple[bytes, str | None, dict[str, Any] | None, str | None]
#: A store's contents, strictly comparable: native id -> a tuple of bytes and text.
Contents = dict[Any, tuple[Any, ...]]

WORDS = ["alpha", "βeta", "gamma", "дельта", "ζήτα", "naïve", "🙂", "日本語", "kappa"]


@dataclass
class Plan:
    """One night's mutation: ids to delete (first), then records to upsert (an id may be in both)."""

    kind: str
    deletes: list[int] = field(default_factory=list)
    upserts: dict[int, Record] = field(default_factory=dict)
    #: Upserts of live ids whose new record drops a metadata key, a document, metadata or a uri: a store
    #: that merges an upsert into the record (Chroma) deletes these first (set by Model.apply).
    replaced: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Counts:
    added: int
    changed: int
    deleted: int

    @property
    def total(self) -> int:
        return self.added + self.changed + self.deleted


def same(a: Record, b: Record) -> bool:
    """Equal content as a record digest sees it (1 and 1.0 differ: canonical JSON tells them apart)."""
    return (a[0], a[1], _json(a[2]), a[3]) == (b[0], b[1], _json(b[2]), b[3])


def merges_into(old: Record, new: Record) -> bool:
    """Whether upserting `new` over `old` gives `new` where an upsert keeps what it does not name."""
    if (new[1] is None and old[1] is not None) or (new[3] is None and old[3] is not None):
        return False
    return old[2] is None or (new[2] is not None and set(old[2]) <= set(new[2]))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class Model:
    """The store as the test means it to be, and the seeded planner of each night's changes."""

    def __init__(self, seed: int, rows: int) -> None:
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.target = rows
        self.live: dict[int, Record] = {}
        self.gone: dict[int, Record] = {}  # deleted ids and their last content
        self.history: dict[int, list[Record]] = {}  # every version each id has had
        self.next_key = 0

    def record(self) -> Record:
        i = self.rng.randrange(10**6)
        vector = self.np.standard_normal(DIM).astype(np.float32).tobytes()
        document = None if i % 6 == 5 else f"{WORDS[i % len(WORDS)]} {i} 🚀"
        metadata: dict[str, Any] | None = None
        if i % 9 != 4:
            metadata = {"n": i, "score": round(self.rng.random(), 6), "even": i % 2 == 0, "word": WORDS[i % len(WORDS)]}
            if i % 4 == 1:
                metadata["whole"] = float(i % 10)  # a float that looks like an int
        # (Chroma keeps a uri in the metadata: a record with a uri and no metadata reads back with {}.)
        uri = f"s3://bucket/{i}.txt" if i % 5 == 2 and metadata is not None else None
        return (vector, document, metadata, uri)

    def new_key(self) -> int:
        self.next_key += 1
        return self.next_key

    def seed(self) -> Plan:
        return Plan("seed", upserts={self.new_key(): self.record() for _ in range(self.target)})

    def plan(self, kind: str) -> Plan:
        """A night of `kind`: quiet, re-add, half, over-half-upserts, over-half-deletes, random."""
        n = len(self.live)
        keys = sorted(self.live)
        plan = Plan(kind)
        if kind == "quiet":
            return plan
        if kind == "half":  # exactly half the records changed: not *more* than half, so incremental
            for key in self.rng.sample(keys, n // 2):
                plan.upserts[key] = self.record()
            return plan
        if kind == "over-half-upserts":
            for key in self.rng.sample(keys, n * 3 // 5):
                plan.upserts[key] = self.record()
            return plan
        if kind == "over-half-deletes":  # what is written stays under half; deletions take it over
            chosen = self.rng.sample(keys, n * 11 // 20)
            plan.deletes = chosen[: n * 9 // 20]
            for key in chosen[n * 9 // 20 :]:
                plan.upserts[key] = self.record()
            return plan
        # random (and re-add): a budget of distinct ids touched, under half of the live records
        budget = max(1, int(self.rng.uniform(0.02, 0.3) * n))
        if kind == "re-add":
            budget = max(budget, 4)
        untouched = list(keys)
        self.rng.shuffle(untouched)
        readd = sorted(self.gone)
        self.rng.shuffle(readd)
        # Sizes drift back towards the target: more adds when small, more deletes when large.
        grow = 0.5 + (self.target - n) / (2 * self.target)
        weights = {
            "change": 3,
            "revert": 1,
            "swap": 1,  # delete and upsert the same id in one night, with new content
            "delete": 3 * (1 - grow) + 0.2,
            "add": 3 * grow + 0.2,
            "readd": (4 if kind == "re-add" else 1) if readd else 0,
        }
        ops = self.rng.choices(list(weights), weights=list(weights.values()), k=budget)
        if kind == "re-add":
            ops[:2] = ["readd", "readd"]
        for op in ops:
            if op in ("change", "revert", "swap", "delete") and not untouched:
                op = "add"
            if op == "readd" and not readd:
                op = "add"
            if op == "change":
                plan.upserts[untouched.pop()] = self.record()
            elif op == "revert":
                key = untouched.pop()
                older = [r for r in self.history[key] if not same(r, self.live[key])]
                plan.upserts[key] = self.rng.choice(older) if older else self.record()
            elif op == "swap":
                key = untouched.pop()
                plan.deletes.append(key)
                plan.upserts[key] = self.record()
            elif op == "delete":
                plan.deletes.append(untouched.pop())
            elif op == "add":
                plan.upserts[self.new_key()] = self.record()
            else:  # readd: its old content back (same digest as a dead record) or new content
                key = readd.pop()
                plan.upserts[key] = self.gone[key] if self.rng.random() < 0.5 else self.record()
        # Upserts of unchanged records (and a delete + re-add with the same content): no change at all.
        for key in untouched[: self.rng.randint(0, 3)]:
            plan.upserts[key] = self.live[key]
        for key in untouched[3:4]:
            plan.deletes.append(key)
            plan.upserts[key] = self.live[key]
        return plan

    def apply(self, plan: Plan) -> Counts:
        """Apply `plan` to the model; what changed, as a record digest sees it."""
        before = dict(self.live)
        for key in plan.deletes:
            self.gone[key] = self.live.pop(key)
        for key, record in plan.upserts.items():
            if key in self.live and not merges_into(self.live[key], record):
                plan.replaced.add(key)
            self.live[key] = record
            self.gone.pop(key, None)
            self.history.setdefault(key, []).append(record)
        added = sum(1 for k in self.live if k not in before)
        changed = sum(1 for k in self.live if k in before and not same(before[k], self.live[k]))
        deleted = sum(1 for k in before if k not in self.live)
        return Counts(added, changed, deleted)


class Store(Protocol):
    kind: str

    def create(self, path: Path) -> None: ...
    def apply(self, path: Path, plan: Plan) -> None: ...
    def contents(self, path: Path) -> Contents: ...
    def native(self, model: dict[int, Record]) -> Contents: ...


class Chroma:
    """Embedded Chroma (l2: vectors come back exactly)."""

    kind = "chroma"

    @staticmethod
    def rid(key: int) -> str:
        return f"naïve-{key:04d}-🙂" if key % 7 == 3 else f"doc-{key:04d}"

    def create(self, path: Path) -> None:
        chroma_client(path).create_collection(NAME, metadata={"hnsw:space": "l2"}, embedding_function=None)

    def apply(self, path: Path, plan: Plan) -> None:
        collection = chroma_client(path).get_collection(NAME)
        gone = [*plan.deletes, *(plan.replaced - set(plan.deletes))]  # Chroma's upsert merges metadata
        if gone:
            collection.delete(ids=[self.rid(k) for k in gone])
        if plan.upserts:
            records = list(plan.upserts.values())
            collection.upsert(
                ids=[self.rid(k) for k in plan.upserts],
                embeddings=np.stack([np.frombuffer(r[0], dtype=np.float32) for r in records]),
                documents=[r[1] for r in records],  # type: ignore[misc]
                metadatas=[r[2] for r in records],  # type: ignore[misc]
                uris=[r[3] for r in records],  # type: ignore[misc]
            )

    def contents(self, path: Path) -> Contents:
        got = chroma_client(path).get_collection(NAME).get(include=["embeddings", "documents", "metadatas", "uris"])
        out: Contents = {}
        for i, rid in enumerate(got["ids"]):
            vector = np.asarray(got["embeddings"][i], dtype=np.float32).tobytes()  # type: ignore[index]
            metadata = got["metadatas"][i]  # type: ignore[index]
            out[rid] = (vector, got["documents"][i], _json(metadata), got["uris"][i])  # type: ignore[index]
        return out

    def native(self, model: dict[int, Record]) -> Contents:
        return {self.rid(k): (r[0], r[1], _json(r[2]), r[3]) for k, r in model.items()}


class Qdrant:
    """Qdrant local mode (euclid: vectors are kept as given; cosine would normalise them)."""

    kind = "qdrant"

    @staticmethod
    def payload(record: Record) -> dict[str, Any]:
        payload: dict[str, Any] = {"text": record[1], **(record[2] or {})}
        if record[3] is not None:
            payload["links"] = {"uri": record[3], "seen": [1, 2.5, "x"]}
        return payload

    @staticmethod
    @contextlib.contextmanager
    def client(path: Path) -> Iterator[Any]:
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(path))  # one client a folder: closed before the backup opens it
        try:
            yield client
        finally:
            client.close()

    def create(self, path: Path) -> None:
        from qdrant_client import models as m

        with self.client(path) as client:
            client.create_collection(NAME, vectors_config=m.VectorParams(size=DIM, distance=m.Distance.EUCLID))

    def apply(self, path: Path, plan: Plan) -> None:
        from qdrant_client import models as m

        with self.client(path) as client:
            if plan.deletes:
                client.delete(NAME, points_selector=m.PointIdsList(points=list(plan.deletes)))
            if plan.upserts:
                points = [
                    m.PointStruct(
                        id=key, vector=np.frombuffer(r[0], dtype=np.float32).tolist(), payload=self.payload(r)
                    )
                    for key, r in plan.upserts.items()
                ]
                client.upsert(NAME, points=points)

    def contents(self, path: Path) -> Contents:
        out: Contents = {}
        with self.client(path) as client:
            points, _ = client.scroll(NAME, limit=100_000, with_vectors=True, with_payload=True)
            for p in points:
                assert p.id not in out
                out[p.id] = (np.asarray(p.vector, dtype=np.float32).tobytes(), _json(p.payload))
        return out

    def native(self, model: dict[int, Record]) -> Contents:
        return {k: (r[0], _json(self.payload(r))) for k, r in model.items()}


def schedule(nights: int, special: Mapping[int, str]) -> list[str]:
    """Night 0 seeds the store; the `special` nights (number -> kind) among random ones."""
    kinds = ["seed"] + ["random"] * (nights - 1)
    for number, kind in special.items():
        kinds[number] = kind
    return kinds


@dataclass(frozen=True)
class Night:
    number: int
    kind: str
    bundle_id: str
    contents: Contents


def expected_reason(night: int, links: int, full_every: int, counts: Counts, parent_rows: int) -> str | None:
    """Why night `night` must be a full backup (a substring of the report's reason), or None."""
    if night == 0:
        return "no earlier bundle"
    if links > full_every:
        return "full_every"
    if counts.total > int(0.5 * parent_rows):
        return "more than half the records changed"
    return None


def run_chain(
    store: Store, tmp_path: Path, *, seed: int, nights: int, special: Mapping[int, str], rows: int, full_every: int
) -> list[DatasetManifest]:
    """Run the nights; the dataset each night's bundle wrote."""
    source = tmp_path / "source"
    repo = str(tmp_path / "repo")
    model = Model(seed, rows)
    store.create(source)
    history: list[Night] = []
    datasets: list[DatasetManifest] = []
    links = 0  # links of the current chain (the full backup is the first)
    parent: str | None = None
    reasons: set[str] = set()
    for number, kind in enumerate(schedule(nights, special)):
        at = f"seed {seed}, night {number} ({kind})"
        plan = model.seed() if kind == "seed" else model.plan(kind)
        parent_rows = len(model.live)
        readded = [k for k in plan.upserts if k in model.gone]
        counts = model.apply(plan)
        store.apply(source, plan)
        contents = store.contents(source)
        assert contents == store.native(model.live), f"{at}: the store does not hold what the model says"
        if kind == "quiet":
            assert counts.total == 0, at
        if kind == "re-add":
            assert readded, at

        result = api.backup(repo, f"{store.kind}:{source}", full_every=full_every)
        [report] = result.to_json()["datasets"]
        [dataset] = result.manifest.datasets
        reason = expected_reason(number, links, full_every, counts, parent_rows)
        intended = {"over-half-upserts": "more than half", "over-half-deletes": "more than half", "half": None}
        if kind in intended:  # the schedule puts no full_every night where it would hide the case
            assert (reason and reason[:14]) == intended[kind], (at, reason)
        assert report["rows"] == len(contents), (at, report)
        if reason is None:
            links += 1
            assert report["incremental"] is True and report["full_reason"] is None, (at, counts, report)
            assert report["new_rows"] == counts.added + counts.changed, (at, counts, report)
            assert report["deleted"] == counts.deleted, (at, counts, report)
            assert dataset.extends == parent, (at, dataset.extends, parent)
            assert dataset.chain[-1].added == counts.added and dataset.chain[-1].changed == counts.changed, at
        else:
            links = 1
            reasons.add(reason)
            assert report["incremental"] is False, (at, counts, report)
            assert reason in (report["full_reason"] or ""), (at, reason, report)
            assert report["new_rows"] == len(contents) and report["deleted"] == 0, (at, report)
        assert len(dataset.chain) == links, (at, len(dataset.chain), links)
        parent = result.bundle_id
        history.append(Night(number, kind, result.bundle_id, contents))
        datasets.append(dataset)

    # The schedule did what it says (a guard against a planner that quietly stopped exercising a case).
    assert {"no earlier bundle", "more than half the records changed"} <= reasons, (seed, reasons)
    if nights > full_every + 1:
        assert "full_every" in reasons, (seed, reasons)

    repository = api.Repository.open(repo)
    verified = repository.verify(read_data=True)
    assert verified.ok, (seed, verified.to_json())
    # Every part written is referenced (a fallback to full removes what the incremental attempt wrote).
    orphans = repository.prune(keep_last=1000, grace=dt.timedelta(0), dry_run=True)
    assert orphans.orphans_removed == orphans.orphans_waiting == [], (seed, orphans.to_json())
    for night in history:
        at = f"seed {seed}, night {night.number} ({night.kind}), bundle {night.bundle_id}"
        target = tmp_path / f"restore-{night.number:02d}"
        restored = repository.restore(night.bundle_id, to=f"{store.kind}:{target}")
        failed = [c.to_json() for d in restored.datasets for c in d.checks if not c.ok]
        assert restored.ok, (at, failed)
        got = store.contents(target)
        assert got.keys() == night.contents.keys(), (
            at,
            sorted(map(str, got.keys() - night.contents.keys())),
            sorted(map(str, night.contents.keys() - got.keys())),
        )
        wrong = sorted(str(k) for k in got if got[k] != night.contents[k])
        assert not wrong, (at, "records differ", wrong[:10])
    return datasets


STORES = [pytest.param(Chroma(), id="chroma"), pytest.param(Qdrant(), id="qdrant")]


@pytest.fixture(autouse=True)
def long_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    """No full backup for dead records (incremental.MAX_DEAD; its own test is in test_incremental): these
    nights change up to 30% each, so the rule would end nearly every chain after a night or two."""
    from aibackup import incremental

    monkeypatch.setattr(incremental, "MAX_DEAD", float("inf"))


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Links of several record parts and several record-index parts, so that tombstones and ordinals
    cross part boundaries: the stores are read in pages of 24 records, a row group is about a page and a
    part about two (index parts: 40 records a row group, about 150 a part)."""
    from aibackup import backup, bundle, parquet_parts
    from aibackup.connectors.chroma.connector import ChromaConnector
    from aibackup.connectors.qdrant.connector import QdrantConnector

    options = parquet_parts.WriteOptions(row_group_bytes=2048, part_bytes=4096)

    def writer(repo: Any, bundle_id: str, _options: Any = None, **kwargs: Any) -> bundle.BundleWriter:
        return bundle.BundleWriter(repo, bundle_id, options, **kwargs)

    monkeypatch.setattr(backup, "BundleWriter", writer)
    monkeypatch.setattr(bundle._IndexWriter, "GROUP_ROWS", 40)
    for cls in (ChromaConnector, QdrantConnector):
        init = cls.__init__

        def paged(self: Any, *args: Any, _init: Any = init, **kwargs: Any) -> None:
            _init(self, *args, **{"batch_rows": 24, **kwargs})

        monkeypatch.setattr(cls, "__init__", paged)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.usefixtures("small_parts")
def test_every_night_of_a_chain_restores_exactly(store: Store, tmp_path: Path) -> None:
    # 0 full; 1-5 incremental; 6 full (full_every); 7 full (over half); 8-11; 12 full (over half); 13-17;
    # 18 full (full_every); 19.
    special = {3: "quiet", 5: "re-add", 7: "over-half-upserts", 10: "half", 12: "over-half-deletes"}
    datasets = run_chain(store, tmp_path, seed=SEED, nights=20, special=special, rows=200, full_every=5)
    links = [link for d in datasets for link in d.chain]
    assert max(link.parts for link in links) >= 3 and max(len(link.index) for link in links) >= 2, SEED


@pytest.mark.slow
@pytest.mark.parametrize("seed", [SEED + 1, SEED + 2, SEED + 3])
@pytest.mark.parametrize("store", STORES)
def test_long_chains_restore_exactly(store: Store, seed: int, tmp_path: Path) -> None:
    special = {3: "quiet", 8: "re-add", 14: "half", 30: "over-half-upserts", 38: "over-half-deletes"}
    run_chain(store, tmp_path, seed=seed, nights=45, special=special, rows=300, full_every=20)
