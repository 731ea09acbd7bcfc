"""The diff verb: which records changed between two bundles of one source, collection by collection.

For every collection in either bundle (or the named ones): the ids **added** (in B, not in A), **changed**
(in both, with another record digest) and **deleted** (in A, not in B). The record digest covers the id and
the whole record (vectors, document, metadata, …), so "changed" means any byte of the canonical record.

Nothing but ids and digests is compared. A chained dataset (aibackup.manifests.chain) gives them from its
record index, so no record part is read; older bundles and other kinds are digested from their records.
Counts are exact; the id lists hold the first `limit` ids of each kind in sorted order.

Memory stays bounded for any size: both sides are split into buckets by a hash of the id (spilled to
temporary Parquet files when large, as the restore checks do: aibackup.checks), then joined bucket by
bucket in Arrow. Two collections with the same dataset digest and row count hold the same records (the
digest is the sum of every record digest) and are not read at all.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibackup.bundle_reader import BundleReader
from aibackup.checks import BucketedSide, bucket_count
from aibackup.errors import DatasetNotFoundError, IntegrityError, UsageError
from aibackup.manifests.chain import INDEX_SCHEMA
from aibackup.manifests.digest import DIGEST_ALGORITHM, record_digests
from aibackup.manifests.model import BundleManifest, DatasetManifest
from aibackup.pipeline import use_arrow_allocator
from aibackup.repository import Repository, Where

DEFAULT_LIMIT = 1000
#: Columns left out of the record digests compared, by kind: config's sealed secrets are encrypted again
#: with a fresh nonce at every backup, and its ``sha256`` column (a keyed hash of the plaintext) covers them.
UNSTABLE = {"config": ("secrets",)}
KINDS_OF_CHANGE = ("added", "changed", "deleted")


@dataclass(frozen=True)
class DatasetDiff:
    """One collection's differences from bundle A to bundle B: exact counts, and per kind of change
    (added, changed, deleted) the first ids in sorted order."""

    name: str
    added: int
    changed: int
    deleted: int
    ids: Mapping[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS_OF_CHANGE})
    #: the collection's settings that differ (keys of its manifest config: vectors and distances, hnsw, a job
    #: config, ...): a restore of A and of B makes different collections even where every record is equal
    settings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.added + self.changed + self.deleted

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "added": self.added,
            "changed": self.changed,
            "deleted": self.deleted,
            "ids": {kind: list(self.ids.get(kind, [])) for kind in KINDS_OF_CHANGE},
            "settings_changed": list(self.settings),
        }


@dataclass(frozen=True)
class DiffResult:
    a: str  # bundle ids
    b: str
    source: Mapping[str, Any]
    datasets: list[DatasetDiff]

    @property
    def total(self) -> int:
        return sum(d.total for d in self.datasets)

    @property
    def same(self) -> bool:
        """No record and no setting differs."""
        return not self.total and not any(d.settings for d in self.datasets)

    def to_json(self) -> dict[str, Any]:
        """The `diff --json` contract: a, b, source, datasets [{name, added, changed, deleted, ids,
        settings_changed}]."""
        return {
            "a": self.a,
            "b": self.b,
            "source": dict(self.source),
            "datasets": [d.to_json() for d in self.datasets],
        }


def run_diff(
    repository: Where | Repository,
    a: str,
    b: str,
    collections: Sequence[str] = (),
    *,
    limit: int = DEFAULT_LIMIT,
    key_file: str | None = None,
) -> DiffResult:
    """Compare bundle `a` with bundle `b` (ids, unique prefixes or latest) of one source.

    `collections` restricts the comparison to those names (each must be in at least one of the bundles:
    DatasetNotFoundError otherwise); `limit` caps each list of ids (0: counts only). UsageError when the
    bundles are of different sources. In an encrypted repository the key is needed, as for a restore:
    every manifest read must be authenticated by it."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise UsageError(f"bad --limit {limit!r}: expected 0 or more")
    use_arrow_allocator()
    repo = repository if isinstance(repository, Repository) else Repository.open(repository)
    repo.use_key(repo.key(key_file))
    first, second = repo.resolve(a), repo.resolve(b)
    _same_source(first, second)
    old = {d.name: d for d in first.datasets}
    new = {d.name: d for d in second.datasets}
    names = sorted(old.keys() | new.keys())
    if collections:
        unknown = [c for c in dict.fromkeys(collections) if c not in old and c not in new]
        if unknown:
            raise DatasetNotFoundError(
                f"no collection{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in bundle "
                f"{first.bundle_id} or {second.bundle_id} (they hold: {', '.join(map(repr, names)) or 'none'})"
            )
        names = [n for n in names if n in collections]
    # A spool on S3: the parts re-hashed before they are read are read from it, not downloaded twice.
    with BundleReader(repo, spool=True) as reader:
        datasets = [_diff_dataset(reader, name, old.get(name), new.get(name), limit) for name in names]
    return DiffResult(first.bundle_id, second.bundle_id, dict(second.source), datasets)


def _same_source(first: BundleManifest, second: BundleManifest) -> None:
    """UsageError unless both bundles are of one source (its kind and its URI, credentials redacted)."""

    def where(m: BundleManifest) -> str:
        return f"{m.source.get('kind')} {m.source.get('uri')}"

    if (first.source.get("kind"), first.source.get("uri")) != (second.source.get("kind"), second.source.get("uri")):
        raise UsageError(
            f"bundles {first.bundle_id} ({where(first)}) and {second.bundle_id} ({where(second)}) are of "
            "different sources: diff compares two bundles of one source"
        )


#: Manifest config keys not compared: a model's chunk store figures describe the backup run, and `native`
#: (the backend's whole description) moves with the records (Chroma's schema of metadata keys); the canonical
#: keys (vectors and distances, hnsw, metadata, payload indexes, layout, a job config) say what a restore makes.
NOT_COMPARED = ("stored", "native")


#: Config keys of the file kinds that summarise their content (counts, per-file summaries): the records say
#: what changed there; reported as settings, every edited file read "settings changed: bytes".
CONTENT_SUMMARIES = {
    "config": ("files", "symlinks", "bytes", "secret_files", "redacted_files"),
    "finetune": ("files",),
    "conversations": ("files",),
}


def _settings(old: DatasetManifest | None, new: DatasetManifest | None) -> list[str]:
    """The config keys whose values differ, when the collection is in both bundles."""
    if old is None or new is None:
        return []
    keys = (old.config.keys() | new.config.keys()) - set(NOT_COMPARED) - set(CONTENT_SUMMARIES.get(new.kind, ()))
    return sorted(k for k in keys if old.config.get(k) != new.config.get(k))


def _diff_dataset(
    reader: BundleReader, name: str, old: DatasetManifest | None, new: DatasetManifest | None, limit: int
) -> DatasetDiff:
    records = _records(reader, name, old, new, limit)
    return replace(records, settings=_settings(old, new))


def _records(
    reader: BundleReader, name: str, old: DatasetManifest | None, new: DatasetManifest | None, limit: int
) -> DatasetDiff:
    if old is not None and new is not None and _identical(old, new):
        return DatasetDiff(name, 0, 0, 0)
    # One algorithm for both sides: a bundle written before 0.2.0 (BLAKE2b) against a newer one is
    # digested again from its records under the current algorithm.
    algorithms = {d.digest_algorithm for d in (old, new) if d is not None}
    algorithm = algorithms.pop() if len(algorithms) == 1 else DIGEST_ALGORITHM
    rows = max(old.rows if old else 0, new.rows if new else 0)
    buckets = bucket_count(rows, {})
    tally = _Tally(limit)
    with tempfile.TemporaryDirectory(prefix="aibackup-diff-") as tmp:
        folder = Path(tmp) if buckets > 1 else None
        sides = BucketedSide("a", buckets, folder, {}), BucketedSide("b", buckets, folder, {})
        for side, dataset in zip(sides, (old, new), strict=True):
            if dataset is not None:
                _check_parts(reader, dataset, algorithm)
                for batch in _id_digests(reader, dataset, algorithm):
                    side.put(pa.RecordBatch.from_arrays(batch.columns[:2], schema=side.schema))
        for bucket in range(buckets):
            tally.compare(sides[0].bucket(bucket), sides[1].bucket(bucket))
    return tally.result(name)


def _identical(old: DatasetManifest, new: DatasetManifest) -> bool:
    """The same records on both sides, from the manifests alone: the same parts, or the same dataset
    digest (the sum of every record digest) over as many records under the same algorithm."""
    if old.kind != new.kind or old.digest_algorithm != new.digest_algorithm:
        return False
    if old.all_parts() == new.all_parts():
        return True
    return (old.digest, old.rows) == (new.digest, new.rows)


def _from_index(dataset: DatasetManifest, algorithm: str) -> bool:
    """Whether `dataset`'s (id, digest) pairs come from its record index (no record part read)."""
    return bool(dataset.chain) and dataset.digest_algorithm == algorithm and not UNSTABLE.get(dataset.kind)


def _check_parts(reader: BundleReader, dataset: DatasetManifest, algorithm: str) -> None:
    """Re-hash every part of `dataset` the diff is about to read (its index and tombstones, or its records):
    IntegrityError naming the first damaged one. Parquet's page checksums cover neither page headers nor
    footers: a damaged index part could otherwise give a wrong answer with exit 0, or a decode error."""
    records = set() if not _from_index(dataset, algorithm) else {p.path for p in dataset.parts}
    for part in dataset.all_parts():
        if part.path in records:
            continue
        problem = reader.check_part(part, read_data=True)
        if problem:
            raise IntegrityError(f"damaged part {reader.repo.storage.display(part.path)}: {problem}")


def _id_digests(reader: BundleReader, dataset: DatasetManifest, algorithm: str) -> Iterator[pa.RecordBatch]:
    """(id, digest) of every live record of `dataset` under `algorithm`, leaving out its kind's unstable
    columns: from its record index where it can (reader.id_digests), else from its records."""
    exclude = UNSTABLE.get(dataset.kind, ())
    if dataset.digest_algorithm == algorithm and not exclude:
        yield from reader.id_digests(dataset)
        return
    for batch in reader.batches(dataset, 65536):
        digests = pa.array(record_digests(batch, exclude, algorithm), pa.binary(16))
        yield pa.RecordBatch.from_arrays([batch.column("id"), digests], schema=INDEX_SCHEMA)


class _Tally:
    """Exact counts of each kind of change over all buckets, and the `limit` smallest ids of each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts = dict.fromkeys(KINDS_OF_CHANGE, 0)
        self.kept: dict[str, pa.Array] = {kind: pa.array([], pa.string()) for kind in KINDS_OF_CHANGE}

    def compare(self, a: pa.Table, b: pa.Table) -> None:
        if a.num_rows == 0 and b.num_rows == 0:
            return
        a = a.rename_columns(["id", "digest_a"])
        b = b.rename_columns(["id", "digest_b"])
        joined = a.join(b, keys="id", join_type="full outer", coalesce_keys=True)
        in_a, in_b = pc.is_valid(joined["digest_a"]), pc.is_valid(joined["digest_b"])
        masks = {
            "added": pc.invert(in_a),
            "changed": pc.and_(pc.and_(in_a, in_b), pc.not_equal(joined["digest_a"], joined["digest_b"])),
            "deleted": pc.invert(in_b),
        }
        for kind, mask in masks.items():
            ids = joined["id"].filter(mask)
            self.counts[kind] += len(ids)
            if self.limit and len(ids):
                self._keep(kind, ids.combine_chunks())

    def _keep(self, kind: str, ids: pa.Array) -> None:
        both = pa.concat_arrays([self.kept[kind], ids])
        order = pc.sort_indices(both)[: self.limit]
        self.kept[kind] = both.take(order)

    def result(self, name: str) -> DatasetDiff:
        ids = {kind: self.kept[kind].to_pylist() for kind in KINDS_OF_CHANGE}
        return DatasetDiff(name, self.counts["added"], self.counts["changed"], self.counts["deleted"], ids)
