"""What every benchmark section shares: the data, the seeded stores, `chroma run`, and child processes.

Every timed step runs in a fresh child process (``python -m benchmarks.<section> --child KIND ARGS``) that
prints one JSON object; :func:`child_main` adds the child's peak RSS, so each step's memory is its own.
Seeded stores are cached under ``benchmarks/.cache``: Chroma embedded ingests ~2000 records/s and Qdrant
local mode ~1000 points/s on this machine, so seeding is paid once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
COLLECTION = "bench"

Child = Callable[..., dict[str, Any]]


class Stopwatch:
    """Wall seconds and CPU seconds (every thread of this process, user + system) since it was made: the
    CPU side shows how much of the machine's two cores a step needs, which bounds what overlap can win."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu}


#: A CPU-bound neighbour for the other core (zlib in a loop), to measure what a busy second core costs.
BUSY_LOOP = "import os, zlib\ndata = os.urandom(1 << 24)\nwhile True:\n    zlib.compress(data, 1)"


def embeddings(n: int, dim: int, seed: int = 7) -> np.ndarray:
    """`n` seeded, normalised float32 embeddings, correlated through a low-rank mixture (like real text
    embeddings, unlike uniform noise, which compresses differently)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((32, dim))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in slices: 1M x 384 in float64 at once would take 6 GB
        end = min(n, start + 100_000)
        mix = rng.standard_normal((end - start, 32)) * rng.gamma(2.0, 1.0, size=(end - start, 1))
        v = (mix @ basis + 0.5 * rng.standard_normal((end - start, dim))).astype(np.float32)
        out[start:end] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def record_id(i: int) -> str:
    return f"doc-{i:08d}"


def document(i: int) -> str:
    return f"document number {i} about topic {i % 97}"


def metadata(i: int) -> dict[str, Any]:
    return {"topic": i % 97, "score": i / 7, "lang": "en" if i % 3 else "de"}


def _seed(path: Path, rows: int, dim: int, add: Callable[[int, int, np.ndarray], None], step: int) -> None:
    vectors = embeddings(rows, dim)
    started = time.perf_counter()
    for start in range(0, rows, step):
        end = min(rows, start + step)
        add(start, end, vectors[start:end])
        rate = end / (time.perf_counter() - started)
        print(f"  seeding {path.name}: {end}/{rows} ({rate:.0f}/s)", file=sys.stderr, flush=True)


def _built_once(path: Path, build: Callable[[Path], object]) -> Path:
    """`path`, built by `build` unless an earlier build completed (a ``.complete`` marker, written last, so
    an interrupted build is started over from an empty folder)."""
    if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        build(path)
        (path / ".complete").write_text("ok")
    return path


def seeded_chroma(rows: int, dim: int) -> Path:
    """An embedded Chroma store (cosine space) holding `rows` records (built once, then reused)."""
    return _built_once(CACHE / f"chroma-{rows}x{dim}", lambda path: _seed_chroma(path, rows, dim))


def _seed_chroma(path: Path, rows: int, dim: int) -> None:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection(COLLECTION, metadata={"hnsw:space": "cosine"}, embedding_function=None)

    def add(start: int, end: int, vectors: np.ndarray) -> None:
        col.add(
            ids=[record_id(i) for i in range(start, end)],
            embeddings=vectors,
            documents=[document(i) for i in range(start, end)],
            metadatas=[metadata(i) for i in range(start, end)],
        )

    _seed(path, rows, dim, add, min(5000, client.get_max_batch_size()))


def seeded_qdrant(rows: int, dim: int) -> Path:
    """A Qdrant local-mode store (cosine) holding `rows` points with integer ids (built once, reused)."""
    return _built_once(CACHE / f"qdrant-{rows}x{dim}", lambda path: _seed_qdrant(path, rows, dim))


def _seed_qdrant(path: Path, rows: int, dim: int) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    client.create_collection(COLLECTION, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))

    def add(start: int, end: int, vectors: np.ndarray) -> None:
        payloads = [{**metadata(i), "document": document(i)} for i in range(start, end)]
        batch = models.Batch(ids=list(range(start, end)), vectors=vectors.tolist(), payloads=payloads)
        client.upsert(COLLECTION, points=batch, wait=True)

    _seed(path, rows, dim, add, 1000)
    client.close()


def bundled(rows: int, dim: int) -> Path:
    """A local repository holding one bundle of :func:`seeded_chroma` (made once per aibackup version, then
    reused: a restore must read the bundle format of the version being measured)."""
    from aibackup import __version__

    def back_up(path: Path) -> None:
        from aibackup.backup import run_backup

        run_backup(str(path), f"chroma:{seeded_chroma(rows, dim)}")

    return _built_once(CACHE / f"repo-chroma-{rows}x{dim}-{__version__}", back_up)


def disk_bytes(path: Path) -> int:
    """Bytes of every file under `path` (what the store takes on disk)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class ChromaServer:
    """`chroma run` over a store: the backing-up process then holds only aibackup's memory."""

    def __init__(self, path: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        exe = Path(sys.executable).parent / "chroma"
        self.proc = subprocess.Popen(
            [str(exe), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        self.proc.terminate()
        raise RuntimeError("chroma run did not start")

    @property
    def uri(self) -> str:
        return f"chroma+http://127.0.0.1:{self.port}"

    def __enter__(self) -> ChromaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def run_child(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m <module> --child ARGS`` and return the JSON object it printed last.

    Dirty pages are written back first (``os.sync``): otherwise a child that wrote without fsync (raw
    pyarrow) leaves its write-back to run during the next child, which it slows (the writer runs after raw
    measured 0.68–0.70 s in three of five runs, 0.57–0.61 s in the other two)."""
    os.sync()
    proc = subprocess.run(
        [sys.executable, "-m", module, "--child", *args], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if proc.returncode:
        raise RuntimeError(f"{module} child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(children: dict[str, Child], argv: list[str]) -> int:
    """The child side of :func:`run_child`: run ``children[KIND](*ARGS)``, print its result and peak RSS."""
    kind, *args = argv[1:]
    out = children[kind](*args)
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))
    return 0


def fastest(runs: list[dict[str, Any]], key: str = "seconds") -> dict[str, Any]:
    """The fastest run: the machine is shared and noisy, and noise only ever adds time."""
    return min(runs, key=lambda r: r[key])


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def backup_summary(result: Any) -> dict[str, Any]:
    """Rows, bundle bytes and the source's baseline recall of a one-dataset ``run_backup`` result."""
    dataset = result.manifest.datasets[0]
    recall = [v.recall for v in dataset.baseline.vectors] if dataset.baseline else []
    return {
        "rows": dataset.rows,
        "bundle_bytes": sum(p.bytes for p in dataset.parts),
        "source_recall": recall[0] if recall else None,
    }


def timed_restore(repo: str, target: str) -> dict[str, Any]:
    """Restore the latest bundle of `repo` into `target` on the clock (checks included); RuntimeError naming
    the failed checks, else the seconds and the restore's own split: validation, load, checks."""
    from aibackup.restore import run_restore

    clock = Stopwatch()
    result = run_restore(repo, None, target)
    out = clock.read()
    failed = [c.name for d in result.datasets for c in d.checks if not c.ok]
    if failed:
        raise RuntimeError(f"restore checks failed: {failed}")
    dataset = result.datasets[0]
    return {
        **out,
        "rows": dataset.rows,
        "validate_seconds": result.validate_seconds,
        "load_seconds": dataset.load_seconds,
        "check_seconds": dataset.check_seconds,
        "checks": [c.name for c in dataset.checks],
    }


def restore_read_side(repo_url: str, bundle_id: str) -> dict[str, Any]:
    """The read side of a restore of the bundle's first dataset into a target that discards, as
    ``run_restore`` reads: re-hash every part the dataset needs (fetched ahead; a remote repository's parts
    are downloaded once, into the spool) and recompute the digest (a full dataset's part by part, two at a
    time, each once its hash is proven, while the next ones download; a chain's after every part is
    proven), then stream the records again (the import). Seconds of each step: ``hash_seconds`` (with a full
    dataset's digest), ``validate_seconds`` (a chain's digest), ``stream_seconds``; ``close_seconds``:
    removing the spool. Within ``hash_seconds`` of a full dataset: ``first_part_seconds``, until the first
    record part is proven (no record can be digested before it), and ``after_parts_seconds``, from the last
    record part proven to the digest's end (no part left to download or hash)."""
    from aibackup.bundle_reader import BundleReader
    from aibackup.manifests.digest import DatasetDigest
    from aibackup.pipeline import prefetch
    from aibackup.repository import Repository

    repo = Repository.open(repo_url)
    dataset = repo.load(bundle_id).datasets[0]
    clock = Stopwatch()
    with BundleReader(repo, spool=True) as reader:
        reader.fetch_ahead(dataset.all_parts())

        proven: list[float] = []  # when each record part was proven (digest threads: list.append is atomic)

        def check(part: Any) -> None:
            if problem := reader.check_part(part, read_data=True):
                raise RuntimeError(problem)
            if part in dataset.parts:
                proven.append(time.perf_counter())

        if dataset.chained:  # timed apart: every part re-hashed, then the chain's records digested
            for part in dataset.all_parts():
                check(part)
            digest = DatasetDigest(algorithm=dataset.digest_algorithm)
        else:
            digest = reader.dataset_digest(dataset, before=check)
        hashed = time.perf_counter()
        if dataset.chained:
            for batch in prefetch(reader.batches(dataset)):
                digest.add_batch(batch)
        if (digest.rows, digest.hexdigest) != (dataset.rows, dataset.digest):
            raise RuntimeError("the records do not give the manifest's digest")
        validated = time.perf_counter()
        rows = sum(batch.num_rows for batch in prefetch(reader.batches(dataset)))
        streamed = time.perf_counter()
    out = clock.read()
    return {
        **out,
        "rows": rows,
        "hash_seconds": hashed - clock.wall,
        "validate_seconds": validated - hashed,
        "stream_seconds": streamed - validated,
        "close_seconds": out["seconds"] - (streamed - clock.wall),
        "first_part_seconds": min(proven) - clock.wall if proven else 0.0,
        "after_parts_seconds": hashed - max(proven) if proven else 0.0,
    }


def section_main(
    argv: list[str], children: dict[str, Child], measure: Callable[..., dict[str, Any]], *, rows: int, **extra: int
) -> int:
    """``python -m benchmarks.<section> [--rows N] [--dim D] [--repeats R] [--<extra> N]``: the section
    alone, its JSON printed; ``--child KIND ARGS`` runs one of its children (:func:`run_child`)."""
    if argv[:1] == ["--child"]:
        return child_main(children, argv)
    parser = argparse.ArgumentParser(prog=f"python -m {measure.__module__}")
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    for name, default in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    args = vars(parser.parse_args(argv))
    print(json.dumps(measure(args.pop("rows"), args.pop("dim"), args.pop("repeats"), **args), indent=2))
    return 0
