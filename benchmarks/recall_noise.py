"""How often the search check's baseline rule fails a perfect restore, and how often it catches a worse index.

Not a speed benchmark: the measurement behind :data:`aibackup.recall_rule.NOISE_Z` and the confirmation of
a short ``--queries`` failure (docs/proving.md). Two builds of the same HNSW index answer single queries
differently, so a perfect Chroma -> Chroma restore measures a recall a little off the source's at backup.

It builds ``--builds`` Chroma collections of the hard data (10,000 x 384 random normal, the data of
tests/aibackup/test_search_baseline.py, Chroma's default HNSW) per distance, measures each build's recall@10
on 1,000 query records against an exact search, and judges every ordered pair of builds (one the source at
backup, the other the restored target) on random subsets of the queries, as a restore would. Then the same
against builds with a smaller ``ef_search`` (an index that really answers worse). Takes ~4 s a build here.

    python -m benchmarks.recall_noise [--builds 40] [--worse-builds 6] [--subsets 150]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import chromadb
import numpy as np

from aibackup.recall_rule import DEFAULT_TOLERANCE

ROWS, DIM, K, QUERIES = 10_000, 384, 10, 1_000
ZS = (3.0, 3.5, 4.0, 4.5)


def per_query_recalls(space: str, builds: int, hnsw: dict[str, Any]) -> np.ndarray:
    """builds x QUERIES: each build's recall@10 of each query record (an answer tying the 10th counts)."""
    vectors = np.random.default_rng(13).standard_normal((ROWS, DIM)).astype(np.float32)
    ids = [f"doc-{i:05d}" for i in range(ROWS)]
    queries = np.random.default_rng(7).choice(ROWS, QUERIES, replace=False)
    if space == "l2":
        q = vectors[queries]
        dist = (q**2).sum(1)[:, None] - 2 * q @ vectors.T + (vectors**2).sum(1)[None, :]
    else:
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        dist = 1 - unit[queries] @ unit.T
    tenth = np.sort(dist, axis=1)[:, K - 1 : K]
    out = np.zeros((builds, QUERIES))
    for b in range(builds):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            collection = chromadb.PersistentClient(folder).create_collection(
                "kbase", configuration={"hnsw": {"space": space, **hnsw}}, embedding_function=None
            )
            for start in range(0, ROWS, 2500):  # as the test's source is written
                collection.add(ids=ids[start : start + 2500], embeddings=vectors[start : start + 2500])
            answers = collection.query(query_embeddings=vectors[queries], n_results=K, include=[])["ids"]
        for n, row in enumerate(answers):
            found = [int(rid.split("-")[1]) for rid in row]
            out[b, n] = min(K, int((dist[n, found] <= tenth[n, 0] + 1e-6).sum())) / K
        took = time.perf_counter() - started
        print(f"  {space} {hnsw or 'default'} build {b}: recall {out[b].mean():.4f} ({took:.1f} s)", flush=True)
    return out


def fails(source: np.ndarray, target: np.ndarray, subsets: list[np.ndarray], z: float) -> tuple[int, int]:
    """(failed, judged) over every pair of a source build and another target build, per query subset, by
    the rule of aibackup.recall_rule.judge: target < source - max(tolerance, z standard errors)."""
    failed = judged = 0
    same = source is target
    for subset in subsets:
        diff = target[None, :, subset] - source[:, None, subset]  # [source build, target build, query]
        mean = diff.mean(2)
        error = diff.std(2, ddof=1) / np.sqrt(len(subset))
        bad = mean + 1e-9 < -np.maximum(DEFAULT_TOLERANCE, z * error)
        pairs = ~np.eye(len(source), dtype=bool) if same else np.ones_like(bad)
        failed += int((bad & pairs).sum())
        judged += int(pairs.sum())
    return failed, judged


def confirmed_fails(source: np.ndarray, target: np.ndarray, subsets: list[np.ndarray], first: int, z: float) -> int:
    """Pairs failed over the first `first` queries of a subset and again over all of it (a confirmed failure)."""
    count = 0
    same = source is target
    for subset in subsets:
        verdicts = []
        for part in (subset[:first], subset):
            diff = target[None, :, part] - source[:, None, part]
            error = diff.std(2, ddof=1) / np.sqrt(len(part))
            verdicts.append(diff.mean(2) + 1e-9 < -np.maximum(DEFAULT_TOLERANCE, z * error))
        pairs = ~np.eye(len(source), dtype=bool) if same else np.ones_like(verdicts[0])
        count += int((verdicts[0] & verdicts[1] & pairs).sum())
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=40)
    parser.add_argument("--worse-builds", type=int, default=6)
    parser.add_argument("--subsets", type=int, default=150)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    lines = []
    for space in ("l2", "cosine"):
        perfect = per_query_recalls(space, args.builds, {})
        lines.append(
            f"{space}: {args.builds} builds, recall {perfect.mean():.3f}, spread of a build's recall over "
            f"{QUERIES} queries {perfect.mean(1).std(ddof=1):.4f}"
        )
        for n in (20, 30, 50, 100):
            subsets = [rng.choice(QUERIES, n, replace=False) for _ in range(args.subsets)]
            counted = {z: fails(perfect, perfect, subsets, z) for z in ZS}
            judged = counted[ZS[0]][1]
            words = ", ".join(f"z {z:g}: {f} ({f / judged:.1e})" for z, (f, _) in counted.items())
            lines.append(f"  perfect restores failed, {n} queries, {judged} pairs: {words}")
        subsets = [rng.choice(QUERIES, 100, replace=False) for _ in range(args.subsets)]
        for z in ZS:
            f = confirmed_fails(perfect, perfect, subsets, 30, z)
            lines.append(f"  perfect restores failed at 30 queries and again over 100, z {z:g}: {f}")
        for ef in (40, 25):
            worse = per_query_recalls(space, args.worse_builds, {"ef_search": ef})
            drop = perfect.mean() - worse.mean()
            words = ", ".join(f"z {z:g}: {f / j:.0%}" for z in ZS for f, j in [fails(perfect, worse, subsets, z)])
            lines.append(f"  ef_search {ef} (recall {drop:.3f} lower) caught at 100 queries: {words}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
