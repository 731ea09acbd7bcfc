"""An encrypted repository against an unencrypted one (issue 17), side by side in one run, at 100k x 384.

Each measure alternates the two repositories, ``repeats`` times, fastest of each (noise only adds time):

- **backup**: ``run_backup`` of the cached Chroma collection into a new repository, unencrypted or encrypted
  (a passphrase slot; the scrypt of opening it is inside the time, as a user pays it);
- **restore**: ``run_restore`` of that bundle into a new embedded Chroma store, checks included;
- **verify --read-data**: every part re-hashed, every record decoded against the manifest's digest; the
  opening of the key (scrypt of the passphrase, a fixed ~0.08 s per command whatever the size) is also
  timed apart, to show the data path alone;
- **bytes**: the bundle's parts and manifest on disk;
- **cipher**: this machine's AES-256-GCM throughput (the ``cryptography`` package, OpenSSL) on 64 MiB, and
  sha256's beside it, for scale.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Stopwatch, child_main, fastest, run_child, seeded_chroma, timed_restore

MODULE = "benchmarks.encryption"
PASSPHRASE = "benchmark passphrase, not a secret"
MODES = ("plain", "encrypted")
#: A verify takes about a second: it alternates this many times at least (the fastest of 3 varied by 20%).
VERIFY_REPEATS = 7


def _key(mode: str) -> None:
    if mode == "encrypted":
        os.environ["AIBACKUP_KEY"] = PASSPHRASE
    else:
        os.environ.pop("AIBACKUP_KEY", None)


def child_backup(source: str, repo: str, mode: str) -> dict[str, Any]:
    import chromadb  # noqa: F401 - imported before the clock starts

    from aibackup.backup import run_backup

    _key(mode)
    clock = Stopwatch()
    result = run_backup(repo, source)
    out = clock.read()
    stored = sum(p.stat().st_size for p in Path(repo).rglob("*") if p.is_file() and "reports" not in p.parts)
    return {**out, "bundle_id": result.bundle_id, "bytes": stored}


def child_restore(repo: str, target: str, mode: str) -> dict[str, Any]:
    import chromadb  # noqa: F401

    import aibackup.connectors.chroma.connector  # noqa: F401

    _key(mode)
    return timed_restore(repo, target)


def child_verify(repo: str, mode: str) -> dict[str, Any]:
    """``verify --read-data``, its key opening (scrypt: a fixed ~0.1 s per command) timed apart."""
    from aibackup.repository import Repository
    from aibackup.verify import run_verify

    _key(mode)
    clock = Stopwatch()
    opened = Repository.open(repo)
    opened.key()
    key_seconds = clock.read()["seconds"]
    data = Stopwatch()
    result = run_verify(opened, read_data=True)
    out = clock.read()
    if not result.ok:
        raise RuntimeError(f"verify found problems: {result.problems}")
    return {**out, "key_seconds": key_seconds, "data_seconds": data.read()["seconds"], "bytes_read": result.bytes_read}


def cipher_throughput() -> dict[str, float]:
    """AES-256-GCM and sha256 on 64 MiB: bytes per second, best of 5."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = os.urandom(64 << 20)
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)

    def best(step: Any) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return len(data) / min(times)

    return {
        "aes_gcm_encrypt_bytes_per_s": best(lambda: aead.encrypt(nonce, data, None)),
        "sha256_bytes_per_s": best(lambda: hashlib.sha256(data).digest()),
    }


def measure(rows: int, dim: int, repeats: int) -> dict[str, Any]:
    source = f"chroma:{seeded_chroma(rows, dim)}"
    work = Path(tempfile.mkdtemp(prefix="aibackup-bench-encryption-"))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {"backup": [], "restore": [], "verify": []} for m in MODES}
    try:
        for n in range(repeats):
            for mode in MODES:  # alternating: a slow moment of the machine hits both
                repo = work / f"{mode}-{n}"
                runs[mode]["backup"].append(run_child(MODULE, "backup", source, str(repo), mode))
                if n:
                    shutil.rmtree(repo)  # the first repository of each mode is the one restored and verified
            print(f"benchmarks: encryption backup round {n + 1} of {repeats}", file=sys.stderr, flush=True)
        for _ in range(max(repeats, VERIFY_REPEATS)):  # about a second each, and noisy
            for mode in MODES:
                runs[mode]["verify"].append(run_child(MODULE, "verify", str(work / f"{mode}-0"), mode))
        for n in range(max(1, repeats - 1)):  # a restore into Chroma takes about a minute
            for mode in MODES:
                target = work / f"restored-{mode}-{n}"
                runs[mode]["restore"].append(
                    run_child(MODULE, "restore", str(work / f"{mode}-0"), f"chroma:{target}", mode)
                )
                shutil.rmtree(target)
            print(f"benchmarks: encryption restore round {n + 1}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {m: {k: fastest(v) for k, v in runs[m].items()} for m in MODES}
    data = {m: fastest(runs[m]["verify"], "data_seconds") for m in MODES}

    def ratio(step: str) -> float:
        return round(best["encrypted"][step]["seconds"] / best["plain"][step]["seconds"], 3)

    return {
        "rows": rows,
        "dim": dim,
        "repeats": repeats,
        "best": best,
        "runs": runs,
        "backup_ratio": ratio("backup"),
        "restore_ratio": ratio("restore"),
        "verify_ratio": ratio("verify"),
        # The data path: every byte re-hashed, every record decrypted and decoded, without the key opening.
        "verify_data_ratio": round(data["encrypted"]["data_seconds"] / data["plain"]["data_seconds"], 3),
        "verify_data": data,
        "bytes_ratio": round(best["encrypted"]["backup"]["bytes"] / best["plain"]["backup"]["bytes"], 4),
        "cipher": cipher_throughput(),
    }


CHILDREN = {"backup": child_backup, "restore": child_restore, "verify": child_verify}

if __name__ == "__main__":
    sys.exit(child_main(CHILDREN, sys.argv[1:]))
