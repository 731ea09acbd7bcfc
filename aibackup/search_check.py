"""The ``search`` check of a restore: the restored store must answer nearest-neighbour queries as the
source store did.

For each single dense vector of the target (multivectors are proved by their record digests):

- **baseline** (the bundle recorded one, :mod:`aibackup.manifests.baseline`): the baseline's query records are
  searched in the target; its recall@k and the source's recorded answers are both measured against an
  exact search over the bundle, in the same pass. It passes when the target's recall is at least the
  source's minus ``recall_tolerance`` (and ``min_recall`` when the user gives one). Where the source
  scanned every record exactly (Qdrant local mode) and the target answers through an approximate index,
  an exact scan sets no bar such an index is built to reach: the target must reach ``min_recall``, else
  :data:`APPROXIMATE_FLOOR`.
- **absolute** (no baseline: a bundle written by 0.2.x, a backup run with ``--queries 0``, a vector the
  backup could not search, or a target that changed the vector's distance): today's rule, `queries`
  records sampled by position with a fixed seed, recall@k at least ``min_recall`` (default 0.9).

An answer outside the exact top-k counts when its exact distance ties the k-th. The detail says which rule
applied, both recalls, how many of the target's answers the source gave too, and both sides' index
settings where they differ; the check's ``measures`` hold the same as numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.base import DatasetDescription, ImportPlan, VectorConnector
from aibackup.errors import AibackupError
from aibackup.manifests.baseline import SearchBaseline, VectorBaseline
from aibackup.manifests.model import DenseVectorSpec
from aibackup.manifests.vectors import ID, dense_column
from aibackup.nearest import ExactTopK, vector_matrix
from aibackup.proof import Check
from aibackup.recall_rule import (
    ABSOLUTE_QUERIES,
    CheckOptions,
    judge,
)

#: Why a zero query vector of a cosine vector is not asked.
UNDEFINED = "cosine has no nearest records for them"


@dataclass
class _Probe:
    """One dense vector of the target on its way through the check."""

    spec: DenseVectorSpec
    name: str  # of the check
    baseline: VectorBaseline | None
    why_absolute: str = ""  # why the absolute rule applies
    ids: list[str] = field(default_factory=list)  # baseline: the query ids wanted
    positions: set[int] = field(default_factory=set)  # absolute: the query positions wanted
    found: dict[str, np.ndarray] = field(default_factory=dict)  # query id -> its vector in the bundle
    queries: list[str] = field(default_factory=list)  # the query ids searched, in order
    answers: list[list[str]] = field(default_factory=list)  # the target's
    search: ExactTopK | None = None
    failed: str | None = None
    #: queries not asked: zero vectors of a cosine vector, whose nearest records are undefined
    undefined: int = 0


class SearchSpread(Protocol):
    """The bundle's side of the search checks read by a partitioned restore's cluster: the query records,
    and the exact pass over every record."""

    def query_records(self) -> Iterator[pa.RecordBatch]:
        """The bundle's records (after the plan's mapping) whose ids are the baseline's queries."""
        ...

    def exact(self, searches: Sequence[ExactTopK], columns: Sequence[str]) -> list[ExactTopK]:
        """`searches` (one per vector column of `columns`, nothing added yet) filled with every record of
        the bundle after the plan's mapping."""
        ...


def search_checks(
    connector: VectorConnector,
    plan: ImportPlan,
    target: DatasetDescription,
    expected: Callable[[], Iterator[pa.RecordBatch]],
    baseline: SearchBaseline | None,
    options: CheckOptions,
    spread: SearchSpread | None = None,
) -> list[Check]:
    """The search checks of a restored collection (see the module docstring); `expected` streams the
    bundle after the plan's mapping. Two passes over it whatever the number of vectors, or none here
    with `spread` where every vector has a baseline (its queries are found by their ids).

    A vector that fails over the first ``options.queries`` of its baseline's queries (fewer than the
    baseline holds) is measured again over all of them, and that verdict stands: a few queries cannot
    tell a worse index from two HNSW builds' noise as well as the whole baseline can, and a false alarm
    costs an on-call engineer a night. Two more passes over the bundle, on that path only."""
    dense = plan.target.config.dense
    single = len(dense) == 1
    out = [Check(_name(d, single), True, "skipped: multivector (digests cover it)") for d in dense if d.multivector]
    specs = plan.target.config.single_vectors()
    if not specs:
        return out
    if options.queries == 0:
        return out + [Check(_name(s, single), True, "skipped (--queries 0)") for s in specs]
    probes = [_probe(spec, _name(spec, single), baseline, plan, options) for spec in specs]
    checks = _measure(connector, plan, target, probes, expected, options, spread)
    short = [n for n, (p, c) in enumerate(zip(probes, checks, strict=True)) if not c.ok and _partial(p)]
    if short:
        whole = replace(options, queries=None)
        again = [_probe(probes[n].spec, probes[n].name, baseline, plan, whole) for n in short]
        confirmed = _measure(connector, plan, target, again, expected, whole, spread)
        for n, check in zip(short, confirmed, strict=True):
            checks[n] = _confirmed(checks[n], check, options.k)
    return out + checks


def _partial(probe: _Probe) -> bool:
    """Whether the probe asked fewer of its baseline's queries than the baseline holds."""
    return probe.baseline is not None and not probe.failed and len(probe.ids) < len(probe.baseline.queries)


def _confirmed(first: Check, whole: Check, k: int) -> Check:
    """The verdict over the whole baseline, saying what the first queries measured."""
    m = first.measures
    detail = (
        f"{whole.detail}; measured over every baseline query because the first {m['queries']} fell short "
        f"(recall@{k} {m['recall']:.3f} against the source's {m['source_recall']:.3f}, needed {m['needs']:.3f})"
    )
    measures = {**whole.measures, "first": {key: m[key] for key in ("queries", "recall", "source_recall", "needs")}}
    return Check(whole.name, whole.ok, detail, measures)


def _measure(
    connector: VectorConnector,
    plan: ImportPlan,
    target: DatasetDescription,
    probes: list[_Probe],
    expected: Callable[[], Iterator[pa.RecordBatch]],
    options: CheckOptions,
    spread: SearchSpread | None,
) -> list[Check]:
    """Each probe's check: its queries found in the bundle, asked of the target, judged by an exact pass."""
    # Sampled queries are found by their position in the bundle: only a pass over all of it finds them.
    spread = spread if all(p.baseline is not None for p in probes) else None
    _find_queries(probes, expected if spread is None else spread.query_records)
    for probe in probes:
        _search_target(connector, plan.target.name, probe, options.k)
    live = [p for p in probes if p.search is not None]
    searches = [p.search for p in live if p.search is not None]
    if live and spread is not None:
        filled = spread.exact(searches, [dense_column(p.spec.name) for p in live])
        for probe, search in zip(live, filled, strict=True):
            probe.search = search
    elif live:
        for batch in expected():
            for probe in live:
                assert probe.search is not None
                probe.search.add(batch.column(ID), batch.column(dense_column(probe.spec.name)))
    return [_result(connector, target, probe, options) for probe in probes]


def _name(spec: DenseVectorSpec, single: bool) -> str:
    return "search" if single else f"search[{spec.name}]"


def _probe(
    spec: DenseVectorSpec, name: str, baseline: SearchBaseline | None, plan: ImportPlan, options: CheckOptions
) -> _Probe:
    recorded = baseline.vector(spec.name) if baseline else None
    if recorded is not None and recorded.distance == spec.distance:
        ids = list(recorded.queries if options.queries is None else recorded.queries[: options.queries])
        return _Probe(spec, name, recorded, ids=ids)
    if recorded is not None:
        why = f"the target searches by {spec.distance}, the baseline's answers are by {recorded.distance}"
    elif baseline is None:
        why = "the bundle has no search baseline (written before aibackup 0.3.0, or with --queries 0)"
    else:
        why = f"the backup recorded no baseline for this vector ({baseline.note_for(spec.name) or 'no record held it'})"
    count = ABSOLUTE_QUERIES if options.queries is None else options.queries
    total = plan.source.rows
    rng = np.random.default_rng(options.seed)
    positions = set(rng.choice(total, size=min(count, total), replace=False).tolist()) if total else set()
    return _Probe(spec, name, None, why_absolute=why, positions=positions)


def _find_queries(probes: Sequence[_Probe], expected: Callable[[], Iterator[pa.RecordBatch]]) -> None:
    """One pass over the bundle: the vectors of every probe's query records (by id or by position)."""
    offset = 0
    wanted = [pa.array(p.ids, pa.string()) for p in probes]
    for batch in expected():
        ids = batch.column(ID)
        for probe, value_set in zip(probes, wanted, strict=True):
            column = batch.column(dense_column(probe.spec.name))
            if probe.baseline is not None:
                rows = np.flatnonzero(pc.is_in(ids, value_set=value_set).to_numpy(zero_copy_only=False))
            else:
                rows = np.asarray(sorted(p - offset for p in probe.positions if offset <= p < offset + len(ids)))
            for n in rows.tolist():
                if column[n].is_valid:
                    probe.found[ids[n].as_py()] = vector_matrix(column.slice(n, 1))[0]
        offset += batch.num_rows


def _search_target(connector: VectorConnector, collection: str, probe: _Probe, k: int) -> None:
    """Ask the target the probe's queries (in baseline order; a query the mapping left out is skipped)."""
    order = probe.ids if probe.baseline is not None else list(probe.found)
    probe.queries = [i for i in order if i in probe.found]
    if probe.spec.distance == "cosine":
        # A zero vector has no direction: every record is as near as any other, and stores answer it as
        # they please (LanceDB: nothing at all). Such a query judges nothing.
        asked = [i for i in probe.queries if np.any(probe.found[i])]
        probe.undefined, probe.queries = len(probe.queries) - len(asked), asked
    if not probe.queries:
        return
    q = np.stack([probe.found[i] for i in probe.queries])
    try:
        probe.answers = connector.search(collection, probe.spec.name, q, k)
    except AibackupError as exc:
        probe.failed = f"search failed: {exc}"
        return
    watch = {rid for row in probe.answers for rid in row}
    if probe.baseline is not None:
        source_answers = _source_answers(probe)
        watch |= {rid for qid in probe.queries for rid in source_answers[qid]}
    probe.search = ExactTopK(q, k, probe.spec.distance, watch)


def _source_answers(probe: _Probe) -> dict[str, tuple[str, ...]]:
    assert probe.baseline is not None
    return dict(zip(probe.baseline.queries, probe.baseline.answers, strict=True))


def _result(connector: VectorConnector, target: DatasetDescription, probe: _Probe, options: CheckOptions) -> Check:
    if probe.failed:
        return Check(probe.name, False, probe.failed)
    if probe.search is None and probe.undefined:
        return Check(probe.name, True, f"skipped: every query vector is zero ({UNDEFINED})")
    if probe.search is None:
        return Check(probe.name, True, "skipped: no records with this vector")
    n = len(probe.queries)
    k = options.k
    mine = probe.search.recalls(probe.answers)
    got = float(np.mean(mine))
    left_out = f"; {probe.undefined} zero query vector(s) not asked ({UNDEFINED})" if probe.undefined else ""
    if probe.baseline is None:
        verdict = judge(got, None, options)
        detail = f"recall@{k} {got:.3f} over {n} sampled queries ({verdict.words}); {probe.why_absolute}{left_out}"
        measures = {"rule": verdict.rule, "recall": round(got, 6), "needs": verdict.needs, "queries": n}
        return Check(probe.name, verdict.ok, detail, measures)
    target_index = dict(connector.search_index(target, probe.spec.name))
    source_answers = _source_answers(probe)
    theirs = [list(source_answers[q]) for q in probe.queries]
    per_query = probe.search.recalls(theirs)
    source = float(np.mean(per_query))
    overlap = float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(probe.answers, theirs, strict=True)]))
    # The same queries on both sides: the standard error of the mean paired difference is the noise.
    noise = float(np.std(mine - per_query, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    exact = {"source_exact": probe.baseline.exact, "target_exact": bool(target_index.get("exact"))}
    verdict = judge(got, source, options, noise=noise, **exact)
    detail = (
        f"recall@{k} {got:.3f}, the source's {source:.3f} at backup, over {n} baseline queries ({verdict.words}); "
        f"{overlap:.0%} of the answers are the source's"
    )
    differs = _index_difference(probe.baseline.index, target_index)
    if differs:
        detail += f"; index: {differs}"
    detail += left_out
    measures = {
        "rule": verdict.rule,
        "recall": round(got, 6),
        "source_recall": round(source, 6),
        "needs": verdict.needs,
        "tolerance": options.recall_tolerance,
        "standard_error": round(noise, 6),
        "overlap": round(overlap, 6),
        "queries": n,
        "source_index": dict(probe.baseline.index),
        "target_index": target_index,
    }
    return Check(probe.name, verdict.ok, detail, measures)


def _index_difference(source: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    """Both sides' index settings where they differ ("" when they are the same)."""
    if dict(source) == dict(target):
        return ""
    return f"source {_index_words(source)}, target {_index_words(target)}"


def _index_words(index: Mapping[str, Any]) -> str:
    settings = ", ".join(f"{k} {v}" for k, v in sorted(index.items()) if k not in ("store", "exact"))
    how = "exact scan" if index.get("exact") else "approximate"
    return f"{index.get('store', '?')} ({how}{', ' + settings if settings else ''})"
