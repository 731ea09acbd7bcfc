"""Backup of an embedded Chroma collection vs the bare `collection.get` paging loop, in one run.

Measures, each step in a fresh child process (so peak RSS is that step's own):

- bare read: the simplest client loop, ``collection.get(include=[embeddings, documents, metadatas, uris],
  limit=P, offset=...)``, at a few page sizes P; the best one is the baseline;
- ``aibackup backup`` of the same collection into a fresh local repository (wall time, peak RSS);
- the same backups from Chroma's own server (`chroma run`) at both sizes: there the backing-up process
  holds only aibackup's memory, which must stay flat as rows grow (embedded Chroma loads the whole
  collection's vectors into the process that reads it, bare loop included, so embedded RSS is reported
  beside the bare loop's for reference);
- bundle bytes vs the raw float32 bytes of the vectors.

Embeddings are seeded, normalised and correlated through a low-rank mixture (like real text embeddings,
unlike uniform noise). Seeded collections are cached under ``benchmarks/.cache`` because Chroma embedded
ingests only ~900 records/s.

    python -m benchmarks --rows 100000 --small-rows 20000 --dim 384
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
COLLECTION = "bench"


def embeddings(n: int, dim: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((32, dim))
    mix = rng.standard_normal((n, 32)) * rng.gamma(2.0, 1.0, size=(n, 1))
    v = (mix @ basis + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def seeded_store(rows: int, dim: int) -> Path:
    """An embedded Chroma store holding `rows` records (built once, then reused)."""
    path = CACHE / f"chroma-{rows}x{dim}"
    done = path / ".complete"
    if done.exists():
        return path
    import chromadb
    from chromadb.config import Settings

    shutil.rmtree(path, ignore_errors=True)
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection(COLLECTION, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    vectors = embeddings(rows, dim)
    step = min(5000, client.get_max_batch_size())
    started = time.perf_counter()
    for start in range(0, rows, step):
        end = min(rows, start + step)
        col.add(
            ids=[f"doc-{i:08d}" for i in range(start, end)],
            embeddings=vectors[start:end],
            documents=[f"document number {i} about topic {i % 97}" for i in range(start, end)],
            metadatas=[{"topic": i % 97, "score": i / 7, "lang": "en" if i % 3 else "de"} for i in range(start, end)],
        )
        print(
            f"  seeding {path.name}: {end}/{rows} ({end / (time.perf_counter() - started):.0f} rec/s)",
            file=sys.stderr,
            flush=True,
        )
    done.write_text("ok")
    return path


# --- child processes: each reports {"seconds", "max_rss_mb", ...} as JSON on stdout -------------------


# Both children import chromadb before their clock starts and both clocks include opening the store, so
# the two measure the same job: open, read every record, (for aibackup) write and commit the bundle.


def child_bare(path: str, page: int) -> dict[str, Any]:
    import chromadb
    from chromadb.config import Settings

    started = time.perf_counter()
    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    col = client.get_collection(COLLECTION, embedding_function=None)
    total = col.count()
    rows = 0
    for offset in range(0, total, page):
        got = col.get(include=["embeddings", "documents", "metadatas", "uris"], limit=page, offset=offset)
        rows += len(got["ids"])
    return {"seconds": time.perf_counter() - started, "rows": rows}


def child_backup(path: str, repo: str) -> dict[str, Any]:
    import chromadb  # noqa: F401 - imported before the clock starts, as in child_bare

    from aibackup.backup import run_backup

    started = time.perf_counter()
    result = run_backup(repo, path if "://" in path else f"chroma:{path}")
    seconds = time.perf_counter() - started
    dataset = result.manifest.datasets[0]
    return {"seconds": seconds, "rows": dataset.rows, "bundle_bytes": sum(p.bytes for p in dataset.parts)}


class ChromaServer:
    """`chroma run` over a seeded store, for measuring the backup process apart from the store's memory."""

    def __init__(self, path: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        exe = Path(sys.executable).parent / "chroma"
        self.proc = subprocess.Popen(
            [str(exe), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import urllib.request

        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("chroma run did not start")

    @property
    def uri(self) -> str:
        return f"chroma+http://127.0.0.1:{self.port}"

    def __enter__(self) -> ChromaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run_child(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.backup_chroma", "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=HERE.parent,
    )
    if proc.returncode:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(rows: int, small_rows: int, dim: int, pages: list[int], repeats: int) -> dict[str, Any]:
    big = seeded_store(rows, dim)
    small = seeded_store(small_rows, dim)
    bare = {p: run_child("bare", str(big), str(p)) for p in pages}
    best_page = min(bare, key=lambda p: bare[p]["seconds"])
    # The machine is shared and noisy: bare loop and backup alternate `repeats` times and the fastest run of
    # each is compared (noise only ever adds time).
    bare_runs, backup_runs = [bare[best_page]], []
    with tempfile.TemporaryDirectory(prefix="aibackup-bench-") as tmp:
        for i in range(repeats):
            backup_runs.append(run_child("backup", str(big), f"{tmp}/repo-big-{i}"))
            if i:
                bare_runs.append(run_child("bare", str(big), str(best_page)))
        backup_small = run_child("backup", str(small), f"{tmp}/repo-small")
        bare_small = run_child("bare", str(small), str(best_page))
        # Embedded Chroma loads the collection's vectors into the backing-up process itself, so its RSS
        # grows with the collection whatever the reader does. From a server, the process holds only what
        # aibackup holds: that is where "memory must not grow with the collection" is measured.
        server_rss = {}
        for label, store in (("big", big), ("small", small)):
            with ChromaServer(store) as server:
                server_rss[label] = run_child("backup", server.uri, f"{tmp}/repo-server-{label}")
    baseline = min(r["seconds"] for r in bare_runs)
    backup = min(backup_runs, key=lambda r: r["seconds"])
    peak = max(r["max_rss_mb"] for r in backup_runs)
    raw_vector_bytes = rows * dim * 4
    return {
        "rows": rows,
        "small_rows": small_rows,
        "dim": dim,
        "repeats": repeats,
        "bare_read_seconds_by_page": {str(p): round(bare[p]["seconds"], 3) for p in pages},
        "bare_read_best_page": best_page,
        "bare_read_seconds": round(baseline, 3),
        "bare_read_runs": [round(r["seconds"], 3) for r in bare_runs],
        "backup_seconds": round(backup["seconds"], 3),
        "backup_runs": [round(r["seconds"], 3) for r in backup_runs],
        "backup_vs_bare": round(backup["seconds"] / baseline, 3),
        "backup_rows": backup["rows"],
        "bare_read_max_rss_mb": max(r["max_rss_mb"] for r in bare_runs),
        "bare_read_small_max_rss_mb": bare_small["max_rss_mb"],
        "peak_rss_mb": peak,
        "peak_rss_small_mb": backup_small["max_rss_mb"],
        "peak_rss_ratio": round(peak / backup_small["max_rss_mb"], 3),
        "server_peak_rss_mb": server_rss["big"]["max_rss_mb"],
        "server_peak_rss_small_mb": server_rss["small"]["max_rss_mb"],
        "server_peak_rss_ratio": round(server_rss["big"]["max_rss_mb"] / server_rss["small"]["max_rss_mb"], 3),
        "server_backup_seconds": round(server_rss["big"]["seconds"], 3),
        "bundle_bytes": backup["bundle_bytes"],
        "raw_vector_bytes": raw_vector_bytes,
        "bundle_vs_raw_vectors": round(backup["bundle_bytes"] / raw_vector_bytes, 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def markdown(r: dict[str, Any]) -> str:
    mib = 2**20
    return "\n".join(
        [
            f"Backup of a Chroma collection, {r['rows']:,}×{r['dim']} ({r['machine']}, {r['date']}; "
            f"fastest of {r['repeats']} alternating runs each):",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| bare `collection.get` loop, embedded (best page {r['bare_read_best_page']}) "
            f"| {r['bare_read_seconds']:.1f} s | |",
            f"| `aibackup backup`, embedded | {r['backup_seconds']:.1f} s | |",
            f"| backup / bare read | **{r['backup_vs_bare']:.2f}×** | ≤ 1.2× |",
            f"| peak RSS of the backup process, source `chroma run`: {r['rows']:,} / {r['small_rows']:,} rows "
            f"| {r['server_peak_rss_mb']:.0f} / {r['server_peak_rss_small_mb']:.0f} MB = "
            f"**{r['server_peak_rss_ratio']:.2f}×** | ≤ 1.25× |",
            f"| peak RSS, embedded source (Chroma loads the vectors into the process): {r['rows']:,} / "
            f"{r['small_rows']:,} rows | {r['peak_rss_mb']:.0f} / {r['peak_rss_small_mb']:.0f} MB "
            f"(bare loop alone: {r['bare_read_max_rss_mb']:.0f} / {r['bare_read_small_max_rss_mb']:.0f} MB) | |",
            f"| bundle / raw float32 vector bytes | {r['bundle_bytes'] / mib:.1f} / "
            f"{r['raw_vector_bytes'] / mib:.1f} MiB = **{r['bundle_vs_raw_vectors']:.3f}×** | ≤ 0.9× |",
        ]
    )


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--child":
        kind, *rest = argv[1:]
        out = child_bare(rest[0], int(rest[1])) if kind == "bare" else child_backup(rest[0], rest[1])
        out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small-rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--pages", default="1000,2500,5000,10000", help="bare-loop page sizes to try")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of bare loop and backup")
    args = parser.parse_args(argv)
    result = measure(args.rows, args.small_rows, args.dim, [int(p) for p in args.pages.split(",")], args.repeats)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"backup-chroma-{args.rows}x{args.dim}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"backup-chroma-{args.rows}x{args.dim}.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    print(f"\n(results written to {out.relative_to(HERE.parent)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
