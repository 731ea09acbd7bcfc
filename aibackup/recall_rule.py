"""The rules a restore's search check is judged by (aibackup.search_check measures; this decides).

Kept apart from the measuring (numpy, pyarrow) so the command line can show the defaults without
importing them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Query records sampled per dense vector. 20 (the restore check's old count) let the relative check fail
#: 1-5% of perfect Chroma -> Chroma restores of hard data by noise alone (two HNSW builds answer a query
#: differently); at 100 the spread of the difference is 0.010-0.015, a fifth to a third of the tolerance.
DEFAULT_QUERIES = 100
#: The most query records a backup samples or a restore asks for (the command line's range).
MAX_QUERIES = 10_000
#: The rule of bundles without a baseline (and the default of their `--queries`/`--min-recall`).
ABSOLUTE_MIN_RECALL = 0.9
ABSOLUTE_QUERIES = 20
DEFAULT_TOLERANCE = 0.05
#: The floor of an approximate target restored from an exact-scan source. Measured on the hardest data
#: here (10,000 x 384 random normal): Chroma's default HNSW answers at 0.77 (cosine) to 0.88 (l2); a
#: degenerate one (M 2-8, ef 1-20) at 0.01-0.22.
APPROXIMATE_FLOOR = 0.5
#: Standard errors of the measured difference a shortfall must exceed before it fails: two perfect restores
#: differ by noise (two HNSW builds answer a query differently), and a check must not cry wolf because it
#: measured too little. Measured by benchmarks/recall_noise.py (40 Chroma builds of 10,000 x 384 random
#: normal, every ordered pair on random subsets of 100 queries; docs/proving.md): 3 failed 8 in 10,000
#: perfect cosine restores, 4 failed 1 in 10,000, 4.5 fail 2 in 100,000; an index 0.12 worse fails every
#: time at any of them (one at the tolerance's edge, 0.05-0.065 worse, 10-28% of the time).
NOISE_Z = 4.5


@dataclass(frozen=True)
class CheckOptions:
    """How the search check runs. ``queries``: how many queries (None: every query of the baseline, else
    :data:`ABSOLUTE_QUERIES`; 0 skips the check); ``min_recall``: an absolute floor the user adds (None:
    none with a baseline, :data:`ABSOLUTE_MIN_RECALL` without)."""

    queries: int | None = None
    k: int = 10
    min_recall: float | None = None
    recall_tolerance: float = DEFAULT_TOLERANCE
    seed: int = 0

    def __post_init__(self) -> None:
        """UsageError for a value the command line refuses too (the Python API passes them as given: a
        negative count sliced the baseline, and the check ran over fewer queries than it said)."""
        from aibackup.errors import UsageError

        if self.queries is not None and not (
            isinstance(self.queries, int) and not isinstance(self.queries, bool) and 0 <= self.queries <= MAX_QUERIES
        ):
            raise UsageError(f"queries must be a whole number from 0 to {MAX_QUERIES}, not {self.queries!r}")
        for name, value in (("min_recall", self.min_recall), ("recall_tolerance", self.recall_tolerance)):
            if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise UsageError(f"{name} must be a number between 0 and 1, not {value!r}")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rule: str  # "baseline", "approximate-target" or "absolute"
    needs: float  # the recall the target had to reach
    words: str  # the rule applied, as the detail says it


def judge(
    target: float,
    source: float | None,
    options: CheckOptions,
    *,
    source_exact: bool = False,
    target_exact: bool = False,
    noise: float = 0.0,
) -> Verdict:
    """Whether a target recall passes against the source's (None: no baseline), and the rule applied.

    `noise` is the standard error of the mean per-query difference between the target's and the
    source's recall (0 when unknown): the allowance below the source is the tolerance, or
    :data:`NOISE_Z` standard errors where the measurement cannot resolve the tolerance."""
    slack = 1e-9  # recalls are multiples of 1/(queries * k): compare them without float round-off
    if source is None:
        floor = ABSOLUTE_MIN_RECALL if options.min_recall is None else options.min_recall
        return Verdict(target + slack >= floor, "absolute", floor, f"needs {floor:.2f}")
    if source_exact and not target_exact:
        floor = APPROXIMATE_FLOOR if options.min_recall is None else options.min_recall
        words = f"needs {floor:.2f}: the source scanned every record, the target answers through an approximate index"
        return Verdict(target + slack >= floor, "approximate-target", floor, words)
    allowance = max(options.recall_tolerance, NOISE_Z * noise)
    bar = source - allowance
    words = f"needs {bar:.3f}: the source's - {options.recall_tolerance:.2f}"
    if allowance > options.recall_tolerance:
        words = f"needs {bar:.3f}: the source's - {allowance:.3f}, {NOISE_Z:g} standard errors of this measurement"
    if options.min_recall is not None and options.min_recall > bar:
        bar = options.min_recall
        words = f"needs {bar:.3f}: --min-recall"
    return Verdict(target + slack >= bar, "baseline", round(bar, 6), words)
