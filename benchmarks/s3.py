"""S3 at full speed (issue 20): aibackup against moto's S3 server on this machine, beside local disk and bare
boto3 loops, in one run, at 100k x 384 (the cached Chroma store).

moto's server (``moto_server``, the one the tests use) runs on a free loopback port for the section; the
children reach it through the standard AWS environment (``AWS_ENDPOINT_URL`` and test credentials). Each
measure alternates its variants, ``repeats`` times (the quick ones at least ``QUICK_REPEATS``), fastest
of each (noise only adds time):

- **backup**: ``run_backup`` of the Chroma collection into a new local repository vs into a new
  ``s3://aibackup-bench/backup-N`` one;
- **verify --read-data** of the S3 repository vs a bare loop: boto3 ``download_file`` (``TransferConfig``,
  10 threads) of exactly the bundle's part objects into a temporary file, each hashed (sha256) and checked
  against the manifest. The bare loop does not decode the records, which verify does (every record against
  the dataset digest): the same verify of the same bundle on local disk runs beside them, for that share;
- **restore read side** from the S3 repository vs from a local repository holding the same bundle (the S3
  one copied down): what ``run_restore`` reads into a target that discards: every part re-hashed, every
  record streamed recomputing the dataset digest (validation), streamed again (the import). It reads
  through ``BundleReader(repo, spool=True)``, its parts fetched ahead as ``run_restore`` does: a remote part
  is downloaded once, hashed on the way, and read again from the local spool;
- **copy**: ``run_copy`` of the local bundle into a new S3 repository vs bare ``upload_file`` of its part
  files and manifest; ``run_copy`` of the S3 bundle into a new local folder vs bare ``download_file`` of the
  same objects (``run_copy`` fsyncs each part; the bare loop's ``os.sync`` afterwards is timed apart);
- **moto alone**: PUT and GET of as many bytes as the bundle in 16 MiB objects (``put_object``,
  ``get_object``), from 1 and from 8 threads: moto's own ceiling on this machine, which bounds every S3
  figure above (moto is a Python server: it and the client share the machine's two cores). Every child's
  time is also measured in moto's process (CPU seconds from ``/proc``), to say how much of the machine
  moto took.

Imports (s3fs, boto3, chromadb) happen before each clock starts; the client's setup (an s3fs filesystem, a
boto3 client) is inside it on both sides.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Child,
    Stopwatch,
    fastest,
    restore_read_side,
    run_child,
    section_main,
    seeded_chroma,
)

MODULE = "benchmarks.s3"
BUCKET = "aibackup-bench"
#: Verify and the restore read side take about a second each and vary (this machine is shared): each alternates
#: this many times at least.
QUICK_REPEATS = 9
#: Threads of boto3's managed transfers in the bare loops (``TransferConfig(max_concurrency=...)``).
TRANSFER_THREADS = 10
#: moto alone: object size and the thread counts its PUT and GET are measured from.
MOTO_OBJECT_BYTES = 16 << 20
MOTO_THREADS = (1, 8)
#: The AWS environment the children inherit (besides AWS_ENDPOINT_URL); variables that would override it go.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
AWS_OVERRIDES = ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
#: Bytes per read of the bare loops' sha256 of a downloaded file.
HASH_BLOCK = 8 << 20


class MotoServer:
    """moto's S3 server on a free loopback port, as the tests start it (tests/conftest.py ``moto_s3``)."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        exe = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode} before answering")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU seconds moto's process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def aws_environment(endpoint: str) -> Iterator[None]:
    """The standard AWS variables pointing at `endpoint`, in ``os.environ`` (the children inherit them);
    the environment as it was afterwards."""
    saved = dict(os.environ)
    for name in AWS_OVERRIDES:
        os.environ.pop(name, None)
    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _split(url: str) -> tuple[str, str]:
    """(bucket, key prefix) of an ``s3://bucket/prefix`` URL."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _bundle_files(repo_url: str, bundle_id: str) -> tuple[list[Any], str]:
    """The bundle's parts (PartEntry, each once, as its datasets list them) and its manifest's path, both
    relative to the repository root."""
    from aibackup.repository import Repository

    repo = Repository.open(repo_url)
    parts = {p.path: p for d in repo.load(bundle_id).datasets for p in d.all_parts()}
    return list(parts.values()), repo.manifest_path(bundle_id)


def _sha256_file(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(max_concurrency=TRANSFER_THREADS)


def child_backup(source: str, repo: str) -> dict[str, Any]:
    """``run_backup`` of `source` into the new repository `repo` (a local path or an S3 URL)."""
    import chromadb  # noqa: F401 - imported before the clock starts
    import s3fs  # noqa: F401

    from aibackup.backup import run_backup

    clock = Stopwatch()
    result = run_backup(repo, source)
    out = clock.read()
    parts = {p.path: p.bytes for d in result.manifest.datasets for p in d.all_parts()}
    return {**out, "bundle_id": result.bundle_id, "bytes": sum(parts.values()), "parts": len(parts)}


def child_verify(url: str) -> dict[str, Any]:
    """``verify --read-data`` of the repository at `url` (it must find nothing wrong)."""
    import s3fs  # noqa: F401

    from aibackup.repository import Repository
    from aibackup.verify import run_verify

    clock = Stopwatch()
    result = run_verify(Repository.open(url), read_data=True)
    out = clock.read()
    if not result.ok:
        raise RuntimeError(f"verify found problems: {[p.to_json() for p in result.problems]}")
    return {**out, "bytes_read": result.bytes_read, "parts": result.parts}


def child_bare_get(url: str, bundle_id: str, folder: str) -> dict[str, Any]:
    """The bare loop beside verify: ``download_file`` of each part object of the bundle into a file of
    `folder`, then its sha256 (checked against the manifest, as verify does)."""
    import boto3

    bucket, prefix = _split(url)
    parts, _ = _bundle_files(url, bundle_id)
    file = Path(folder) / "part"
    clock = Stopwatch()
    client, config = boto3.client("s3"), _transfer_config()
    total = 0
    for part in parts:
        client.download_file(bucket, f"{prefix}/{part.path}", str(file), Config=config)
        if _sha256_file(file) != (part.sha256, part.bytes):
            raise RuntimeError(f"{part.path}: the downloaded bytes do not match the manifest")
        total += part.bytes
        file.unlink()
    return {**clock.read(), "bytes": total, "parts": len(parts)}


def child_read(url: str, bundle_id: str) -> dict[str, Any]:
    """The read side of a restore from `url` into a target that discards, through a spooling reader
    (:func:`benchmarks.common.restore_read_side`): a remote part is downloaded once, into the spool."""
    import s3fs  # noqa: F401 - imported before the clock starts

    return restore_read_side(url, bundle_id)


def child_copy(source: str, destination: str) -> dict[str, Any]:
    """``run_copy`` of every bundle of `source` into the new repository `destination` (exactly one)."""
    import s3fs  # noqa: F401

    from aibackup.copy import run_copy
    from aibackup.repository import Repository

    clock = Stopwatch()
    result = run_copy(Repository.open(source), destination)
    out = clock.read()
    if result.failed or len(result.copied) != 1:
        raise RuntimeError(f"the copy copied {result.copied}, failed {result.failed}")
    return {**out, "bytes": result.bytes}


def child_bare_up(repo: str, bundle_id: str, url: str) -> dict[str, Any]:
    """The bare loop beside a copy into S3: ``upload_file`` of the bundle's part files and manifest of the
    local repository `repo` under `url`."""
    import boto3

    bucket, prefix = _split(url)
    parts, manifest = _bundle_files(repo, bundle_id)
    names = [p.path for p in parts] + [manifest]
    clock = Stopwatch()
    client, config = boto3.client("s3"), _transfer_config()
    for rel in names:
        client.upload_file(str(Path(repo) / rel), bucket, f"{prefix}/{rel}", Config=config)
    out = clock.read()
    return {**out, "bytes": sum((Path(repo) / rel).stat().st_size for rel in names), "objects": len(names)}


def child_bare_down(url: str, bundle_id: str, folder: str) -> dict[str, Any]:
    """The bare loop beside a copy out of S3: ``download_file`` of the bundle's part objects and manifest
    under `url` into `folder`; then ``os.sync``, timed apart (a copy fsyncs every part it writes)."""
    import boto3

    bucket, prefix = _split(url)
    parts, manifest = _bundle_files(url, bundle_id)
    names = [p.path for p in parts] + [manifest]
    clock = Stopwatch()
    client, config = boto3.client("s3"), _transfer_config()
    for rel in names:
        target = Path(folder) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, f"{prefix}/{rel}", str(target), Config=config)
    out = clock.read()
    synced = time.perf_counter()
    os.sync()
    sync_seconds = time.perf_counter() - synced
    total = sum((Path(folder) / rel).stat().st_size for rel in names)
    return {**out, "sync_seconds": sync_seconds, "bytes": total, "objects": len(names)}


def child_moto(total: str) -> dict[str, Any]:
    """moto alone: `total` bytes (rounded up to whole objects) PUT then GET as 16 MiB objects with
    ``put_object`` and ``get_object``, from each of ``MOTO_THREADS`` threads; bytes per second of each."""
    import boto3

    client = boto3.client("s3")
    body = os.urandom(MOTO_OBJECT_BYTES)
    count = -(-int(total) // MOTO_OBJECT_BYTES)
    out: dict[str, Any] = {"bytes": count * MOTO_OBJECT_BYTES, "object_bytes": MOTO_OBJECT_BYTES}
    for threads in MOTO_THREADS:
        keys = [f"moto-alone/{threads}/{n:05d}" for n in range(count)]

        def put(key: str) -> None:
            client.put_object(Bucket=BUCKET, Key=key, Body=body)

        def get(key: str) -> None:
            if len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()) != MOTO_OBJECT_BYTES:
                raise RuntimeError(f"{key}: short read")

        with ThreadPoolExecutor(threads) as pool:
            for name, step in (("put", put), ("get", get)):
                clock = Stopwatch()
                list(pool.map(step, keys))
                timed = clock.read()
                out[f"{name}_{threads}_seconds"] = timed["seconds"]
                out[f"{name}_{threads}_cpu_seconds"] = timed["cpu_seconds"]
                out[f"{name}_{threads}_bytes_per_s"] = out["bytes"] / timed["seconds"]
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys]})
    return out


def child_gets(url: str, bundle_id: str, how: str) -> dict[str, Any]:
    """moto's cost of a bundle's reads: ``get_object`` of each part object of the bundle, `how` ``whole``
    (one GET each) or ``ranged`` (GETs of ``aibackup.s3io.BLOCK_SIZE`` bytes, as aibackup's reads and
    boto3's ``download_file`` ask), ``s3io.CONCURRENCY`` at once; the bytes are dropped."""
    import boto3

    from aibackup.s3io import BLOCK_SIZE, CONCURRENCY

    bucket, prefix = _split(url)
    parts, _ = _bundle_files(url, bundle_id)
    client = boto3.client("s3")
    wanted = [
        (f"{prefix}/{p.path}", f"bytes={start}-{min(start + BLOCK_SIZE, p.bytes) - 1}" if how == "ranged" else None)
        for p in parts
        for start in (range(0, p.bytes, BLOCK_SIZE) if how == "ranged" else [0])
    ]

    def get(key: str, asked: str | None) -> int:
        answer = client.get_object(Bucket=bucket, Key=key, **({"Range": asked} if asked else {}))
        return len(answer["Body"].read())

    clock = Stopwatch()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        total = sum(pool.map(lambda w: get(*w), wanted))
    if total != sum(p.bytes for p in parts):
        raise RuntimeError(f"{how} GETs read {total} bytes, the bundle's parts hold {sum(p.bytes for p in parts)}")
    return {**clock.read(), "bytes": total, "requests": len(wanted)}


CHILDREN: dict[str, Child] = {
    "backup": child_backup,
    "verify": child_verify,
    "bare-get": child_bare_get,
    "read": child_read,
    "copy": child_copy,
    "bare-up": child_bare_up,
    "bare-down": child_bare_down,
    "moto": child_moto,
    "gets": child_gets,
}


def _delete_prefix(prefix: str) -> None:
    """Remove every object under `prefix` of the bucket (moto holds them in memory)."""
    import boto3

    client = boto3.client("s3")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        if keys := [{"Key": o["Key"]} for o in page.get("Contents", [])]:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def _run(moto: MotoServer, *args: str) -> dict[str, Any]:
    """One child (:func:`run_child`), with the CPU seconds moto's process spent while it ran."""
    before = moto.cpu_seconds()
    out = run_child(MODULE, *args)
    return {**out, "moto_cpu_seconds": round(moto.cpu_seconds() - before, 3)}


def _best(runs: list[dict[str, Any]], *keys: str) -> dict[str, Any]:
    """The fastest run's seconds, CPU seconds, moto's CPU seconds and `keys`, and every run's seconds."""
    best = fastest(runs)
    picked = {k: round(best[k], 3) for k in ("seconds", "cpu_seconds", "moto_cpu_seconds", *keys)}
    return {**picked, "max_rss_mb": best["max_rss_mb"], "runs": [round(r["seconds"], 3) for r in runs]}


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return round(a["seconds"] / b["seconds"], 3)


def _measure_backups(moto: MotoServer, source: str, work: Path, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Backups into new local and S3 repositories, alternating; the first of each is kept (``local-0``,
    ``s3://aibackup-bench/backup-0``), the others removed."""
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
    for n in range(repeats):
        runs["local"].append(_run(moto, "backup", source, str(work / f"local-{n}")))
        runs["s3"].append(_run(moto, "backup", source, f"s3://{BUCKET}/backup-{n}"))
        if n:
            shutil.rmtree(work / f"local-{n}")
            _delete_prefix(f"backup-{n}")
        print(f"benchmarks: s3 backup round {n + 1} of {repeats}", file=sys.stderr, flush=True)
    return runs


def _measure_copies(moto: MotoServer, work: Path, ids: dict[str, str], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Copies local -> S3 and S3 -> local beside their bare loops, alternating; ``copy-down-0`` (the S3
    bundle, copied down) is kept for the restore read side."""
    local, remote = str(work / "local-0"), f"s3://{BUCKET}/backup-0"
    runs: dict[str, list[dict[str, Any]]] = {"up": [], "bare_up": [], "down": [], "bare_down": []}
    for n in range(repeats):
        runs["up"].append(_run(moto, "copy", local, f"s3://{BUCKET}/copy-up-{n}"))
        runs["bare_up"].append(_run(moto, "bare-up", local, ids["local"], f"s3://{BUCKET}/bare-up-{n}"))
        _delete_prefix(f"copy-up-{n}")
        _delete_prefix(f"bare-up-{n}")
        runs["down"].append(_run(moto, "copy", remote, str(work / f"copy-down-{n}")))
        runs["bare_down"].append(_run(moto, "bare-down", remote, ids["s3"], str(work / f"bare-down-{n}")))
        shutil.rmtree(work / f"bare-down-{n}")
        if n:
            shutil.rmtree(work / f"copy-down-{n}")
        print(f"benchmarks: s3 copy round {n + 1} of {repeats}", file=sys.stderr, flush=True)
    return runs


def _measure_moto(moto: MotoServer, total: int, repeats: int) -> dict[str, Any]:
    """moto alone, `repeats` times: the best rate of each step (MB/s, 10**6 bytes)."""
    runs = [_run(moto, "moto", str(total)) for _ in range(repeats)]
    out: dict[str, Any] = {"bytes": runs[0]["bytes"], "object_bytes": MOTO_OBJECT_BYTES}
    for threads in MOTO_THREADS:
        for step in ("put", "get"):
            best = max(runs, key=lambda r: r[f"{step}_{threads}_bytes_per_s"])
            out[f"{step}_{threads}_mb_per_s"] = round(best[f"{step}_{threads}_bytes_per_s"] / 1e6, 1)
            out[f"{step}_{threads}_cpu_seconds"] = round(best[f"{step}_{threads}_cpu_seconds"], 3)
    out["moto_cpu_seconds"] = [r["moto_cpu_seconds"] for r in runs]
    return out


def measure(rows: int, dim: int, repeats: int) -> dict[str, Any]:
    """Every figure of the module docstring; a JSON-able dict."""
    import boto3

    source = f"chroma:{seeded_chroma(rows, dim)}"
    quick = max(repeats, QUICK_REPEATS)
    work = Path(tempfile.mkdtemp(prefix="aibackup-bench-s3-"))
    remote = f"s3://{BUCKET}/backup-0"
    try:
        with MotoServer() as moto, aws_environment(moto.url):
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            backups = _measure_backups(moto, source, work, repeats)
            ids = {kind: runs[0]["bundle_id"] for kind, runs in backups.items()}
            copies = _measure_copies(moto, work, ids, repeats)
            down = str(work / "copy-down-0")  # the S3 bundle, copied down: the same bytes on local disk
            verify: dict[str, list[dict[str, Any]]] = {"s3": [], "bare": [], "local": []}
            reads: dict[str, list[dict[str, Any]]] = {"s3": [], "local": []}
            for _ in range(quick):
                verify["s3"].append(_run(moto, "verify", remote))
                verify["bare"].append(_run(moto, "bare-get", remote, ids["s3"], str(work)))
                verify["local"].append(_run(moto, "verify", down))
            print("benchmarks: s3 verify done", file=sys.stderr, flush=True)
            for _ in range(quick):
                reads["s3"].append(_run(moto, "read", remote, ids["s3"]))
                reads["local"].append(_run(moto, "read", down, ids["s3"]))
            print("benchmarks: s3 read done", file=sys.stderr, flush=True)
            gets: dict[str, list[dict[str, Any]]] = {"whole": [], "ranged": []}
            for _ in range(quick):
                for how, runs in gets.items():
                    runs.append(_run(moto, "gets", remote, ids["s3"], how))
            alone = _measure_moto(moto, backups["s3"][0]["bytes"], repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _summary(rows, dim, repeats, backups, verify, copies, reads, gets, alone)


def _summary(
    rows: int,
    dim: int,
    repeats: int,
    backups: dict[str, list[dict[str, Any]]],
    verify: dict[str, list[dict[str, Any]]],
    copies: dict[str, list[dict[str, Any]]],
    reads: dict[str, list[dict[str, Any]]],
    gets: dict[str, list[dict[str, Any]]],
    alone: dict[str, Any],
) -> dict[str, Any]:
    """The section's JSON: the fastest run of each variant, the ratios of the targets, moto's rates."""
    backup = {k: _best(v, "bytes") for k, v in backups.items()}
    checked = {k: _best(v, "bytes_read" if k != "bare" else "bytes") for k, v in verify.items()}
    split = (
        "hash_seconds",
        "validate_seconds",
        "stream_seconds",
        "close_seconds",
        "first_part_seconds",
        "after_parts_seconds",
    )
    read = {k: _best(v, *split) for k, v in reads.items()}
    copy = {
        "up": _best(copies["up"], "bytes"),
        "bare_up": _best(copies["bare_up"], "bytes"),
        "down": _best(copies["down"], "bytes"),
        "bare_down": _best(copies["bare_down"], "bytes", "sync_seconds"),
    }
    bare_down = copy["bare_down"]
    synced = {"seconds": bare_down["seconds"] + bare_down["sync_seconds"]}
    return {
        "rows": rows,
        "dim": dim,
        "repeats": repeats,
        "quick_repeats": len(reads["s3"]),
        "bundle_bytes": backup["s3"]["bytes"],
        "transfer_threads": TRANSFER_THREADS,
        "backup": backup,
        "verify": checked,
        "read": read,
        "copy": copy,
        "moto": alone,
        # moto reads a whole object for each ranged GET (its FakeKey.value), so ranged reads cost it more
        "moto_gets": {how: _best(runs, "bytes", "requests") for how, runs in gets.items()},
        "backup_s3_vs_local": _ratio(backup["s3"], backup["local"]),
        "verify_vs_bare": _ratio(checked["s3"], checked["bare"]),
        "verify_s3_vs_local": _ratio(checked["s3"], checked["local"]),
        "read_s3_vs_local": _ratio(read["s3"], read["local"]),
        "copy_up_vs_bare": _ratio(copy["up"], copy["bare_up"]),
        "copy_down_vs_bare": _ratio(copy["down"], bare_down),
        "copy_down_vs_bare_synced": _ratio(copy["down"], synced),
        "moto_put_mb_per_s": alone[f"put_{MOTO_THREADS[-1]}_mb_per_s"],
        "moto_get_mb_per_s": alone[f"get_{MOTO_THREADS[-1]}_mb_per_s"],
    }


if __name__ == "__main__":
    sys.exit(section_main(sys.argv[1:], CHILDREN, measure, rows=100_000))
