"""Proving a restore: the restored target is compared with the bundle, record by record.

Checks, in the order reported (each one a pass/fail line; any failure fails the restore with exit 1):

``bundle``   the bundle's records read back give the manifest's dataset digest (the expected side is sound).
``rows``     the target holds as many records as the bundle (at least as many in merge mode).
``ids``      the set of ids matches (through each connector's id mapping, which export undoes).
``content``  every record's digest matches; vector columns the target changes by design (see
             ``ImportPlan.tolerances``) are compared separately: each component may differ by at most
             ``TOLERANCE`` × the vector's norm (about 8 float32 ulps of its largest component), after
             normalising both sides where the target may store unit vectors (Qdrant cosine).
(extra)      a connector's own checks of what it wrote (``extra_checks``), say every restored file's
             sha256 against the manifest.
``search``   vectors only: the target answers nearest-neighbour queries as well as the source did at
             backup (the bundle's search baseline), or, for a bundle without one, reaches an absolute
             recall; see aibackup.search_check.

The expected side is the bundle after ``plan.transform`` (the documented lossy mapping, identity when
nothing is lost). Memory stays bounded for any size: each side is split into buckets by a hash of the id,
spilled to temporary Parquet files when large, and compared bucket by bucket.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aibackup.bundle_reader import BundleReader
from aibackup.connectors import layouts
from aibackup.connectors.base import Connector, DatasetDescription, ImportPlan, VectorConnector
from aibackup.errors import AibackupError
from aibackup.manifests.digest import DIGEST_ALGORITHM, DatasetDigest, record_digests
from aibackup.manifests.model import DatasetManifest
from aibackup.proof import Check
from aibackup.recall_rule import CheckOptions
from aibackup.search_check import SearchSpread, search_checks

TOLERANCE = 1e-6
#: Bytes of (id, digest, tolerated vectors) per bucket; above one bucket each side spills to Parquet runs.
BUCKET_BYTES = 256 * 1024 * 1024
EXAMPLES = 3


def prove(
    connector: Connector,
    plan: ImportPlan,
    reader: BundleReader,
    dataset: DatasetManifest,
    options: CheckOptions | None = None,
    layout: layouts.Applied | None = None,
    spread: Spread | None = None,
) -> list[Check]:
    """Run every check of a restored dataset; returns them in report order (never raises for a mismatch).
    With an application `layout` written, a ``layout`` check reads both sides as the framework does. With
    `spread` (a partitioned restore), the record comparison takes its two sides from the cluster's workers
    and the search check its queries and exact pass (see :class:`Spread`); a layout check, and a search
    check without a baseline, still read the bundle here."""
    options = options or CheckOptions()
    merge = plan.mode == "merge"
    # One pass over the bundle also recomputes its own digest and counts the records the target should
    # hold after the plan's mapping (a lossy mapping may drop some, say a symlink that points out).
    bundle_digest = DatasetDigest(algorithm=dataset.digest_algorithm)
    wanted = [0]
    exclude = sorted(plan.tolerances)

    def expected(digest: DatasetDigest | None = None) -> Iterator[pa.RecordBatch]:
        for batch in reader.batches(dataset):
            mapped = plan.transform(batch)
            if digest is not None:
                digest.add_batch(batch)
                wanted[0] += mapped.num_rows
            yield mapped

    def expected_slim(side_schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """The bundle's side of the comparison, each record hashed once where the bundle's digest and the
        comparison's are the same hash of the same record (nothing mapped, nothing tolerated)."""
        for batch in reader.batches(dataset):
            mapped = plan.transform(batch)
            digests = bundle_digest.add_batch(batch)
            wanted[0] += mapped.num_rows
            same = mapped is batch and not exclude and dataset.digest_algorithm == DIGEST_ALGORITHM
            yield slim(mapped, exclude, side_schema, digests if same else None)

    def drain() -> None:
        for _ in expected(bundle_digest):
            pass

    def finish(checks: list[Check], target_rows: int | None, problem: str | None = None) -> list[Check]:
        if spread is not None:
            # The workers' digests were added up and matched the manifest before the collection was published.
            bundle = Check("bundle", True, f"{spread.records} records read by the workers, digest matches the manifest")
            wanted[0] = spread.wanted
        else:
            ok = (bundle_digest.hexdigest, bundle_digest.rows) == (dataset.digest, dataset.rows)
            verdict = "matches" if ok else "DIFFERS from"
            bundle = Check("bundle", ok, f"{bundle_digest.rows} records read, digest {verdict} the manifest")
        if target_rows is None:
            return [bundle, Check("rows", False, f"cannot read the target back: {problem}"), *checks]
        dropped = dataset.rows - wanted[0]
        detail = f"target holds {target_rows}, bundle {dataset.rows}"
        detail += f" ({dropped} left out by the lossy mapping)" if dropped else ""
        detail += " (merge: others may exist)" if merge else ""
        rows_ok = target_rows >= wanted[0] if merge else target_rows == wanted[0]
        return [bundle, Check("rows", rows_ok, detail), *checks]

    try:
        target = connector.describe([plan.target.name])[0]
    except AibackupError as exc:
        if spread is None:
            drain()
        return finish([], None, str(exc))
    if not target.schema.equals(plan.target.schema):
        if spread is None:
            drain()
        detail = f"target columns {target.schema.names} differ from the expected {plan.target.schema.names}"
        return finish([Check("content", False, detail)], target.rows)
    with Comparison(max(dataset.rows, target.rows), target.schema, plan.tolerances) as comparison:
        if spread is None:
            for batch in expected_slim(comparison.schema):
                comparison.expected.put(batch)
        else:
            spread.expected(comparison)
        if spread is None or not spread.actual(target, comparison):
            for batch in connector.export(target):
                comparison.actual.put(slim(batch, exclude, comparison.schema))
        checks = comparison.checks(merge)
    checks += [Check(name, ok, detail) for name, ok, detail in connector.extra_checks(plan)]
    if layout is not None and layout.source == layout.target and not plan.dropped:
        # One kind of store: the records are written as they were, so the content check is the proof.
        content = next(c for c in checks if c.name == "content")
        detail = f"{layout.framework}'s layout on {layout.target}, the records as they were ({content.name} check)"
        checks.append(Check("layout", content.ok, detail))
    elif layout is not None:
        checks.append(_layout_check(layout, plan, reader, dataset, connector.export(target), target.rows, merge))
    if isinstance(connector, VectorConnector):
        if merge:
            checks.append(Check("search", True, "skipped: in merge mode the target holds records outside the bundle"))
        else:
            checks += search_checks(connector, plan, target, expected, dataset.baseline, options, spread)
    return finish(checks, target.rows)


class Spread(SearchSpread, Protocol):
    """The proof of a partitioned restore (aibackup.partitioned_restore) on its cluster: the workers that
    loaded the collection brought the bundle's side of the record comparison (each record mapped, then
    reduced by :func:`slim`) and the baseline's query records; the cluster reads the target's side too,
    where the restored collection splits, and runs the search check's exact pass over the bundle."""

    @property
    def records(self) -> int:
        """The bundle's records the workers read (their digests added up to the manifest's before publishing)."""
        ...

    @property
    def wanted(self) -> int:
        """The records the target should hold after the plan's mapping."""
        ...

    def expected(self, comparison: Comparison) -> None:
        """Put the bundle's side into `comparison` (``comparison.expected``)."""

    def actual(self, target: DatasetDescription, comparison: Comparison) -> bool:
        """Put the target's side, read by the cluster's workers, into `comparison` (``comparison.actual``);
        False, having put nothing, when the restored collection does not split (the driver reads it)."""
        ...


def _layout_check(
    layout: layouts.Applied,
    plan: ImportPlan,
    reader: BundleReader,
    dataset: DatasetManifest,
    restored: Iterable[pa.RecordBatch],
    target_rows: int,
    merge: bool,
) -> Check:
    """Every record read by the framework on the target as it was read on the source: the same text and
    the same metadata (LangChain) or node (LlamaIndex), by id, record by record in bounded memory. After a
    lossy mapping (--allow-lossy) the source's side is the bundle after that mapping."""
    framework = layout.framework
    if plan.dropped:
        expected = (
            layouts.views(framework, layout.target, plan.transform(b), layout.target_keys)
            for b in reader.batches(dataset)
        )
    else:
        expected = (layouts.views(framework, layout.source, b, layout.keys) for b in reader.batches(dataset))
    actual = (layouts.views(framework, layout.target, b, layout.target_keys) for b in restored)
    with Comparison(max(dataset.rows, target_rows), pa.schema([]), {}) as comparison:
        for side, batches in ((comparison.expected, expected), (comparison.actual, actual)):
            for batch in batches:
                side.put(slim(batch, [], comparison.schema))
        ids, same = comparison.checks(merge)
    if not ids.ok:
        return Check("layout", False, f"as {framework} reads them: {ids.detail}")
    if not same.ok:
        return Check("layout", False, f"as {framework} reads them: {same.detail}")
    what = "metadata" if framework == layouts.LANGCHAIN else "node"
    after = " (after the lossy mapping)" if plan.dropped else ""
    detail = f"{framework} reads every record on {layout.target} as on {layout.source}{after}: the same text and {what}"
    return Check("layout", True, detail)


# --- record-by-record comparison ------------------------------------------------------------------------


class BucketedSide:
    """One side of the comparison, split into buckets by a hash of the id (spilled to Parquet if large)."""

    def __init__(self, name: str, buckets: int, folder: Path | None, vector_types: Mapping[str, pa.DataType]):
        self.name = name
        self.buckets = buckets
        self.folder = folder
        self.schema = slim_schema(vector_types)
        self.memory: list[pa.RecordBatch] = []
        self.writers: list[pq.ParquetWriter | None] = [None] * buckets

    def put(self, slim: pa.RecordBatch) -> None:
        """Add records already in this side's schema (id, digest, tolerated vectors) to their buckets."""
        if self.buckets == 1:
            self.memory.append(slim)
            return
        ids = slim.column(0)
        bucket_of = np.fromiter((_bucket(i, self.buckets) for i in ids.to_pylist()), dtype=np.int64, count=len(ids))
        for b in np.unique(bucket_of):
            part = slim.filter(pa.array(bucket_of == b))
            self._write(int(b), part)

    def _write(self, b: int, part: pa.RecordBatch) -> None:
        assert self.folder is not None
        writer = self.writers[b]
        if writer is None:
            writer = pq.ParquetWriter(str(self.folder / f"{self.name}-{b:05d}.parquet"), self.schema)
            self.writers[b] = writer
        writer.write_batch(part)

    def bucket(self, b: int) -> pa.Table:
        if self.buckets == 1:
            return pa.Table.from_batches(self.memory, schema=self.schema)
        writer = self.writers[b]
        if writer is None:
            return self.schema.empty_table()
        writer.close()
        assert self.folder is not None
        return pq.read_table(str(self.folder / f"{self.name}-{b:05d}.parquet"))


def tolerated(schema: pa.Schema, tolerances: Mapping[str, str]) -> dict[str, pa.DataType]:
    """The columns of `schema` compared with a tolerance, by name (sorted), with their types."""
    return {c: schema.field(c).type for c in sorted(tolerances)}


def slim_schema(vector_types: Mapping[str, pa.DataType]) -> pa.Schema:
    """The comparison's record: its id, its digest (vector columns in `vector_types` left out), those columns."""
    return pa.schema([("id", pa.string()), ("digest", pa.binary(16))] + [(c, t) for c, t in vector_types.items()])


def slim(
    batch: pa.RecordBatch, exclude: Sequence[str], schema: pa.Schema, digests: Sequence[bytes] | None = None
) -> pa.RecordBatch:
    """`batch` (canonical) as the comparison's records of `schema` (:func:`slim_schema`): each record's
    digest with the `exclude` columns left out, and those columns as they are. `digests`: the records'
    digests already computed (``record_digests(batch, exclude)``)."""
    if digests is None:
        digests = record_digests(batch, exclude)
    columns = [batch.column("id"), pa.array(digests, pa.binary(16))] + [batch.column(c) for c in exclude]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _bucket(record_id: str, buckets: int) -> int:
    h = hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") % buckets


def bucket_count(rows: int, vector_types: Mapping[str, pa.DataType]) -> int:
    per_row = 64 + sum(_row_bytes(t) for t in vector_types.values())
    return max(1, math.ceil(rows * per_row / BUCKET_BYTES))


def _row_bytes(typ: pa.DataType) -> int:
    if pa.types.is_fixed_size_list(typ):
        return 4 * int(typ.list_size)
    if pa.types.is_list(typ) and pa.types.is_fixed_size_list(typ.value_type):
        return 4 * int(typ.value_type.list_size) * 8  # a guess at vectors per record
    return 64


class Comparison:
    """Both sides of one record comparison, bucketed by id (spilled to a temporary folder when large), for
    `rows` records at most per side, `tolerances` naming the columns compared with a tolerance (their types
    from `schema`). Put each side's :func:`slim` records, then :meth:`checks`; a context manager (the
    folder is removed on exit)."""

    def __init__(self, rows: int, schema: pa.Schema, tolerances: Mapping[str, str]) -> None:
        self.tolerances = dict(tolerances)
        self.exclude = sorted(tolerances)
        vector_types = tolerated(schema, tolerances)
        self.schema = slim_schema(vector_types)
        self.buckets = bucket_count(rows, vector_types)
        self._tmp = tempfile.TemporaryDirectory(prefix="aibackup-check-") if self.buckets > 1 else None
        folder = Path(self._tmp.name) if self._tmp is not None else None
        self.expected = BucketedSide("expected", self.buckets, folder, vector_types)
        self.actual = BucketedSide("actual", self.buckets, folder, vector_types)

    def checks(self, merge: bool) -> list[Check]:
        """The ``ids`` and ``content`` checks, bucket by bucket."""
        tally = _Tally()
        for b in range(self.buckets):
            tally.compare(self.expected.bucket(b), self.actual.bucket(b), self.tolerances)
        return tally.checks(merge)

    def __enter__(self) -> Comparison:
        return self

    def __exit__(self, *exc: object) -> None:
        for side in (self.expected, self.actual):
            for writer in side.writers:
                if writer is not None:
                    with contextlib.suppress(Exception):
                        writer.close()
        if self._tmp is not None:
            self._tmp.cleanup()


class _Tally:
    """Counts of matched, missing, unexpected, duplicated and changed records over all buckets."""

    def __init__(self) -> None:
        self.matched = 0
        self.missing: list[str] = []
        self.extra: list[str] = []
        self.changed: list[str] = []
        self.duplicates: list[str] = []
        self.n_missing = self.n_extra = self.n_changed = self.n_dup = 0
        self.worst = 0.0  # largest deviation / norm seen among tolerated vectors
        self.tolerated = False
        self.covered: set[str] = set()  # columns proved by another column (say sealed secrets by a keyed hash)

    def compare(self, exp: pa.Table, act: pa.Table, tolerances: Mapping[str, str]) -> None:
        exp_ids = exp.column("id").to_pylist()
        act_ids = act.column("id").to_pylist()
        exp_index = {i: n for n, i in enumerate(exp_ids)}
        act_index = {i: n for n, i in enumerate(act_ids)}
        for ids, index in ((exp_ids, exp_index), (act_ids, act_index)):
            if len(index) != len(ids):
                seen: set[str] = set()
                for i in ids:
                    if i in seen:
                        self.n_dup += 1
                        _note(self.duplicates, i)
                    seen.add(i)
        for i in exp_index.keys() - act_index.keys():
            self.n_missing += 1
            _note(self.missing, i)
        for i in act_index.keys() - exp_index.keys():
            self.n_extra += 1
            _note(self.extra, i)
        common = [i for i in exp_index if i in act_index]
        if not common:
            return
        e_idx = np.fromiter((exp_index[i] for i in common), dtype=np.int64, count=len(common))
        a_idx = np.fromiter((act_index[i] for i in common), dtype=np.int64, count=len(common))
        exp_digests = np.asarray(exp.column("digest").to_pylist(), dtype="S16")
        act_digests = np.asarray(act.column("digest").to_pylist(), dtype="S16")
        same = exp_digests[e_idx] == act_digests[a_idx]
        for column, rule in tolerances.items():
            if rule == "covered":
                self.covered.add(column)
                continue
            deviation = _deviations(exp.column(column), act.column(column), e_idx, a_idx, rule)
            within = deviation <= TOLERANCE
            same &= within
            if within.any():
                self.worst = max(self.worst, float(deviation[within].max()))
            self.tolerated = True
        self.matched += int(same.sum())
        for n in np.flatnonzero(~same):
            self.n_changed += 1
            _note(self.changed, common[n])

    def checks(self, merge: bool) -> list[Check]:
        ids_ok = self.n_missing == 0 and self.n_dup == 0 and (merge or self.n_extra == 0)
        problems = []
        if self.n_missing:
            problems.append(f"{self.n_missing} missing (e.g. {', '.join(self.missing)})")
        if self.n_extra and not merge:
            problems.append(f"{self.n_extra} unexpected (e.g. {', '.join(self.extra)})")
        if self.n_dup:
            problems.append(f"{self.n_dup} duplicated (e.g. {', '.join(self.duplicates)})")
        common = self.matched + self.n_changed
        ids_detail = "; ".join(problems) if problems else f"all {common} ids match"
        if merge and self.n_extra and ids_ok:
            ids_detail = f"all {common} bundle ids present; {self.n_extra} other records kept (merge)"
        if self.n_changed:
            detail = f"{self.n_changed} of {common} records differ (e.g. {', '.join(self.changed)})"
            content = Check("content", False, detail)
        else:
            tol = f"; tolerated vectors within {self.worst:.1e} × norm" if self.tolerated else ""
            if self.covered:
                tol += f"; {', '.join(sorted(self.covered))} compared through a hash of the content"
            content = Check("content", True, f"all {common} records identical{tol}")
        return [Check("ids", ids_ok, ids_detail), content]


def _note(examples: list[str], record_id: str) -> None:
    if len(examples) < EXAMPLES:
        examples.append(repr(record_id))


def _deviations(
    exp: pa.ChunkedArray, act: pa.ChunkedArray, e_idx: np.ndarray, a_idx: np.ndarray, rule: str
) -> np.ndarray:
    """Per matched record: largest component deviation / vector norm (0 if both null, inf if they disagree).

    With rule "normalize" both sides are compared as unit vectors (the target may store those).
    """
    e_arr, a_arr = exp.combine_chunks(), act.combine_chunks()
    if pa.types.is_fixed_size_list(e_arr.type) and pa.types.is_fixed_size_list(a_arr.type):
        e_valid, e_mat = _matrix(e_arr)
        a_valid, a_mat = _matrix(a_arr)
        ev, av = e_valid[e_idx], a_valid[a_idx]
        out = np.where(ev == av, 0.0, np.inf)
        both = ev & av
        if both.any() and e_mat.shape[1] == a_mat.shape[1]:
            out[both] = _relative_deviation(e_mat[e_idx[both]], a_mat[a_idx[both]], rule)
        elif both.any():
            out[both] = np.inf
        return out
    # Multivectors: a list of vectors per record; rare enough for a per-record loop.
    e_rows, a_rows = e_arr.to_pylist(), a_arr.to_pylist()
    out = np.zeros(len(e_idx))
    for n, (e, a) in enumerate(zip(e_idx, a_idx, strict=True)):
        ev, av = e_rows[e], a_rows[a]
        if ev is None or av is None:
            out[n] = 0.0 if ev is None and av is None else np.inf
            continue
        em, am = np.asarray(ev, dtype=np.float64), np.asarray(av, dtype=np.float64)
        if em.shape != am.shape:
            out[n] = np.inf
        elif em.size:
            out[n] = float(_relative_deviation(em, am, rule).max())
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=vectors.copy(), where=norms > np.finfo(np.float32).eps)


def _matrix(array: pa.FixedSizeListArray) -> tuple[np.ndarray, np.ndarray]:
    """(validity mask, float64 matrix with one row per record) of a fixed-size float list column."""
    size = array.type.list_size
    flat = array.values.slice(array.offset * size, len(array) * size).to_numpy(zero_copy_only=False)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    return valid, flat.astype(np.float64).reshape(len(array), size)


def _relative_deviation(expected: np.ndarray, actual: np.ndarray, rule: str) -> np.ndarray:
    if rule == "normalize":
        # Both sides: a target may hand back the unit vector it stored or (Qdrant local mode, reopened)
        # the original; for a cosine collection the two mean the same. Vectors with a norm at or below
        # float32 epsilon are left as they are, as Qdrant does.
        expected, actual = _unit(expected), _unit(actual)
    scale = np.maximum(np.linalg.norm(expected, axis=1), np.finfo(np.float32).tiny)
    return np.abs(expected - actual).max(axis=1) / scale
