"""The search baseline of a vector dataset: how the source store answered, recorded at backup.

A restore's ``search`` check compares the restored store with the *source*, not with an absolute number an
approximate index may never reach on hard data: the backup samples query records, asks the source store for
their top-k through its own search, and records the query ids, the source's answers and the source's
recall@k against an exact search over the records written. The restore asks the target the same queries
and passes when it answers as well as the source did (within a tolerance).

It is a small entry of its own in the dataset's manifest (``"baseline"``), so a later bundle (an
incremental one) can carry a fresh one without touching anything else. A dataset without it (written by
0.2.x, or a source that could not be sampled) is checked by the older absolute rule.

Document::

    "baseline": {
      "seed": 1234,                        # of the sampling (a bottom-k of seeded random keys per record)
      "k": 10,
      "vectors": [{
        "vector": "",                      # dense vector name ("" = the default vector)
        "distance": "l2",                  # the distance the answers and the exact search used
        "queries": ["id-1", ...],          # query record ids (their vectors are the bundle's)
        "answers": [["id-7", ...], ...],   # the source's top-k per query, nearest first
        "recall": 0.888,                   # the source's mean recall@k against the exact search
        "index": {"store": "chroma", "exact": false, "m": 16, "ef_search": 100}
      }],
      "golden": {"sha256": "…", "queries": 12, "recall": 0.95,    # the config's golden queries, if any
                 "recalls": [1.0, 0.8, ...]},                      # each one's (absent in older bundles)
      "notes": ["vector 'img': the source could not be searched: …"]
    }
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aibackup.manifests import fields
from aibackup.manifests.fields import DISTANCES, ManifestError


@dataclass(frozen=True)
class VectorBaseline:
    """How the source answered the sampled queries of one dense vector."""

    vector: str
    distance: str
    queries: tuple[str, ...]
    answers: tuple[tuple[str, ...], ...]
    #: The source's recall@k against an exact search over the records; None where it was not measured (an
    #: incremental backup skips that pass over the whole chain: a restore measures the source's answers
    #: against an exact search over what it restored in any case).
    recall: float | None
    #: How the source searched: ``store`` (its kind), ``exact`` (True: it scans every record, so its
    #: answers are an exact search's), and the index parameters it reported (neutral names).
    index: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return bool(self.index.get("exact", False))

    def to_json(self) -> dict[str, Any]:
        return {
            "vector": self.vector,
            "distance": self.distance,
            "queries": list(self.queries),
            "answers": [list(a) for a in self.answers],
            "recall": self.recall,
            "index": dict(self.index),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> VectorBaseline:
        distance = fields.get(doc, "distance", str, where)
        if distance not in DISTANCES:
            raise ManifestError(f"{where}.distance: unknown distance {distance!r}")
        queries = _strings(fields.get(doc, "queries", list, where), f"{where}.queries")
        answers = fields.get(doc, "answers", list, where)
        if len(answers) != len(queries):
            raise ManifestError(f"{where}: {len(answers)} answers for {len(queries)} queries")
        return cls(
            vector=fields.get(doc, "vector", str, where),
            distance=distance,
            queries=queries,
            answers=tuple(_strings(a, f"{where}.answers[{i}]") for i, a in enumerate(answers)),
            recall=None if doc.get("recall", 0) is None else _fraction(doc, "recall", where),
            index=fields.opt(doc, "index", dict, where, {}),
        )


@dataclass(frozen=True)
class GoldenBaseline:
    """How the source answered the config's golden queries of this collection (recall of their expected
    ids), and which file they came from (a drill uses the baseline only while the file is unchanged).

    ``recalls`` holds each query's recall in the file's order, so a drill can measure the noise of its
    comparison from the per-query differences (two HNSW builds answer a query differently); None in
    bundles written before it was recorded."""

    sha256: str
    queries: int
    recall: float
    recalls: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"sha256": self.sha256, "queries": self.queries, "recall": self.recall}
        if self.recalls is not None:  # absent, not null, so that older manifests read back byte for byte
            doc["recalls"] = list(self.recalls)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> GoldenBaseline:
        queries = fields.count(doc, "queries", where)
        recalls = None
        if "recalls" in doc:
            values = fields.get(doc, "recalls", list, where)
            recalls = tuple(_fraction({"recalls": v}, "recalls", where) for v in values)
            if len(recalls) != queries:
                raise ManifestError(f"{where}.recalls: {len(recalls)} recalls for {queries} queries")
        return cls(
            sha256=fields.hex_digits(doc, "sha256", where, 64),
            queries=queries,
            recall=_fraction(doc, "recall", where),
            recalls=recalls,
        )


@dataclass(frozen=True)
class SearchBaseline:
    """The dataset's search baseline (see the module docstring)."""

    seed: int
    k: int
    vectors: tuple[VectorBaseline, ...] = ()
    golden: GoldenBaseline | None = None
    #: Why a dense vector has no entry (the source's search failed, say), for the restore's detail.
    notes: tuple[str, ...] = ()

    def vector(self, name: str) -> VectorBaseline | None:
        return next((v for v in self.vectors if v.vector == name), None)

    def note_for(self, name: str) -> str | None:
        prefix = f"vector {name!r}: "
        return next((n[len(prefix) :] for n in self.notes if n.startswith(prefix)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "k": self.k,
            "vectors": [v.to_json() for v in self.vectors],
            "golden": None if self.golden is None else self.golden.to_json(),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> SearchBaseline:
        k = fields.count(doc, "k", where)
        if k == 0:
            raise ManifestError(f"{where}.k: must be positive")
        vectors = tuple(
            VectorBaseline.from_json(fields.obj(v, f"{where}.vectors[{i}]"), f"{where}.vectors[{i}]")
            for i, v in enumerate(fields.get(doc, "vectors", list, where))
        )
        if len({v.vector for v in vectors}) != len(vectors):
            raise ManifestError(f"{where}.vectors: a vector is named twice")
        golden = doc.get("golden")
        return cls(
            seed=fields.count(doc, "seed", where),
            k=k,
            vectors=vectors,
            golden=None
            if golden is None
            else GoldenBaseline.from_json(fields.obj(golden, f"{where}.golden"), f"{where}.golden"),
            notes=_strings(fields.opt(doc, "notes", list, where, []), f"{where}.notes"),
        )


def _strings(values: Sequence[Any], where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ManifestError(f"{where}: expected a list of strings")
    return tuple(values)


def _fraction(doc: Mapping[str, Any], key: str, where: str) -> float:
    value = fields.get(doc, key, (int, float), where)
    if isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ManifestError(f"{where}.{key}: expected a number from 0 to 1")
    return float(value)
