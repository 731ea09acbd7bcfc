"""The search baseline's manifest entry: strict parsing, and absent (not null) where there is none."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aibackup.manifests.baseline import GoldenBaseline, SearchBaseline, VectorBaseline
from aibackup.manifests.model import ManifestError

GOOD: dict[str, Any] = {
    "seed": 7,
    "k": 10,
    "vectors": [
        {
            "vector": "",
            "distance": "l2",
            "queries": ["a", "b"],
            "answers": [["a", "c"], ["b", "a"]],
            "recall": 0.95,
            "index": {"store": "chroma", "exact": False, "m": 16},
        }
    ],
    "golden": {"sha256": "ab" * 32, "queries": 3, "recall": 1},
    "notes": ["vector 'img': the source could not be searched: timeout"],
}


def test_a_baseline_round_trips() -> None:
    baseline = SearchBaseline.from_json(GOOD, "b")
    assert baseline.to_json() == {**GOOD, "golden": {**GOOD["golden"], "recall": 1.0}}
    assert baseline.vector("") == VectorBaseline(
        "", "l2", ("a", "b"), (("a", "c"), ("b", "a")), 0.95, {"store": "chroma", "exact": False, "m": 16}
    )
    assert baseline.vector("other") is None and not baseline.vectors[0].exact
    assert baseline.golden == GoldenBaseline("ab" * 32, 3, 1.0)
    assert baseline.note_for("img") == "the source could not be searched: timeout" and baseline.note_for("") is None


def test_golden_recalls_of_each_query_round_trip_and_stay_absent_in_older_manifests() -> None:
    older = SearchBaseline.from_json(GOOD, "b")
    assert older.golden is not None and older.golden.recalls is None
    assert "recalls" not in older.to_json()["golden"]  # an older manifest reads back as it was written
    doc = {**GOOD, "golden": {**GOOD["golden"], "recalls": [1, 0.5, 0.25]}}
    newer = SearchBaseline.from_json(doc, "b")
    assert newer.golden == GoldenBaseline("ab" * 32, 3, 1.0, (1.0, 0.5, 0.25))
    assert newer.to_json()["golden"]["recalls"] == [1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("seed"), "b: missing field 'seed'"),
        (lambda d: d.update(k=0), "b.k: must be positive"),
        (lambda d: d["vectors"][0].update(distance="hamming"), "unknown distance 'hamming'"),
        (lambda d: d["vectors"][0].update(recall=1.5), "recall: expected a number from 0 to 1"),
        (lambda d: d["vectors"][0].update(recall=True), "recall: expected a number from 0 to 1"),
        (lambda d: d["vectors"][0]["answers"].pop(), "1 answers for 2 queries"),
        (lambda d: d["vectors"][0].update(queries=["a", 3]), "queries: expected a list of strings"),
        (lambda d: d["vectors"].append(copy.deepcopy(d["vectors"][0])), "a vector is named twice"),
        (lambda d: d["golden"].update(sha256="xyz"), "sha256: expected 64 lowercase hex digits"),
        (lambda d: d["golden"].update(recalls=[1, 1]), "golden.recalls: 2 recalls for 3 queries"),
        (lambda d: d["golden"].update(recalls=[1, 1, 2]), "recalls: expected a number from 0 to 1"),
        (lambda d: d["golden"].update(recalls="1"), "recalls: expected list"),
        (lambda d: d.update(notes="no"), "notes: expected list"),
    ],
)
def test_a_malformed_baseline_is_refused_naming_the_field(change: Any, message: str) -> None:
    doc = copy.deepcopy(GOOD)
    change(doc)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchBaseline.from_json(doc, "b")
