"""Model artifacts (issue 19): backup and restore of a model folder against a bare copy, side by side.

    python -m benchmarks.models --size-gib 2 --big-gib 10 --repeats 3
    python -m benchmarks.models --size-gib 2 --big-gib 0 --offline   # no aibackup: generator, copy, chunker

The model is :func:`benchmarks.modeldata.make_model`'s (TinyLlama-shaped, sharded safetensors, one shard in
fp16, the rest bf16), generated into a temporary folder for the run (~250 MB/s here: cheaper than keeping
GBs under ``benchmarks/.cache``) and removed after. Every timed step runs in a fresh child process
(``python -m benchmarks.models --child KIND ARGS``, dirty pages written back first); the bare copy, the
backup and the restore alternate ``repeats`` times and the fastest of each counts (noise only adds time;
medians are reported beside):

- **bare copy** (:func:`benchmarks.modeldata.bare_copy`): every file read in 8 MiB blocks, sha256, written,
  fsynced: the floor a backup (read, hash, store) and a restore (read, write, prove) are compared with;
- **backup**: ``run_backup`` of ``model:FOLDER`` into a new local repository; target ≤ 1.25× the bare
  copy's seconds (≥ 0.8× its throughput);
- **restore**: ``run_restore`` of the first backup into ``model:DIR`` (a new folder), its checks included,
  then byte-identity with the source checked here; target ≤ 1.25× the bare copy;
- **changes**, each backed up after the one before into the first repository: v2 (~10% of the tensors
  fine-tuned in place; new bytes ≤ 15% of the model), a metadata-only change (every header grows: every
  tensor moves; ≤ 2%), a LoRA adapter beside the base (new bytes ≈ the adapter's), a full fine-tune (every
  value perturbed: new bytes ≈ everything, by design). Beside each, what the chunker alone predicts
  (uncompressed bytes of chunks never seen before), plain and with cuts at tensor boundaries;
- **memory**: peak RSS of ``aibackup backup`` (the CLI, in a process that does nothing else) at the model's
  size and of one ``--big-gib`` safetensors file (generated values, not sparse); target ≤ 300 MB;
- **chunker**: pyfastcdc (FastCDC 2020, average 1 MiB, 256 KiB – 4 MiB: the model connector's settings)
  over the model's bytes in GB/s, sha256 beside it, and the chunk sizes, plain and cut at tensor boundaries;
- **zstd** level 1 (and 3) on 1 MiB pieces of a bf16 and an fp16 tensor: ratio and speed, the case for
  compressing a chunk only where it pays.

Without the ``model`` connector (``aibackup.connectors.registry.CONNECTORS``) the section refuses to start,
saying so, unless ``--offline`` leaves out every step that needs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks.common import Stopwatch, child_main, fastest, machine, run_child, timed_restore

MODULE = "benchmarks.models"
GIB = 1 << 30
#: The chunker's settings, those of aibackup/connectors/model/chunking.py.
AVG_SIZE, MIN_SIZE, MAX_SIZE = 1 << 20, 1 << 18, 1 << 22
#: Bytes of each tensor the zstd measure compresses, in pieces of one average chunk.
ZSTD_SAMPLE = 64 << 20
TARGETS = {
    "backup_vs_bare_copy": 1.25,  # seconds: throughput ≥ 0.8× the bare copy's
    "restore_vs_bare_copy": 1.25,
    "v2_new_vs_total": 0.15,
    "metadata_new_vs_total": 0.02,
    "backup_max_rss_mb": 300,
    "big_backup_max_rss_mb": 300,
}


def missing_connector() -> str | None:
    """Why this section cannot back up a model here, or None when it can."""
    from aibackup.connectors.registry import CONNECTORS

    if "model" in CONNECTORS:
        return None
    return (
        "benchmarks.models: this tree has no `model:` connector yet (issue 19; "
        "aibackup.connectors.registry.CONNECTORS has no 'model' kind), so a model cannot be backed up; "
        "`python -m benchmarks.models --offline` measures the generator, the bare copy, the chunker and zstd"
    )


def _import_connector() -> None:
    """Import the model connector before a clock starts (its import is not the backup's work)."""
    import importlib

    from aibackup.connectors.registry import CONNECTORS

    importlib.import_module(CONNECTORS["model"].split(":")[0])


# --- child processes: each prints {"seconds", ..., "max_rss_mb"} as JSON -------------------------------------


def child_generate(folder: str, total_bytes: str, seed: str = "0") -> dict[str, Any]:
    from benchmarks.modeldata import make_model

    return make_model(Path(folder), int(total_bytes), int(seed))


def child_generate_big(path: str, total_bytes: str) -> dict[str, Any]:
    from benchmarks.modeldata import make_big_file

    return make_big_file(Path(path), int(total_bytes))


def child_bare_copy(src: str, dst: str) -> dict[str, Any]:
    from benchmarks.modeldata import bare_copy, tree_bytes

    clock = Stopwatch()
    seconds = bare_copy(Path(src), Path(dst))
    return {**clock.read(), "copy_seconds": seconds, "bytes": tree_bytes(Path(src))}


def child_backup(repo: str, source: str) -> dict[str, Any]:
    _import_connector()
    from aibackup.backup import run_backup

    clock = Stopwatch()
    result = run_backup(repo, f"model:{source}")
    out = clock.read()
    dataset = result.manifest.datasets[0]
    summary: Any = result.to_json()
    return {
        **out,
        "bytes": _source_bytes(Path(source)),
        "new_bytes": summary["datasets"][0]["new_bytes"],
        "stored": dataset.config.get("stored"),
        "rows": dataset.rows,
    }


def child_backup_cli(repo: str, source: str) -> dict[str, Any]:
    """``aibackup backup model:SOURCE`` in a process of its own, which does nothing else: its peak RSS."""
    clock = Stopwatch()
    proc = subprocess.run(
        [sys.executable, "-m", "aibackup", "backup", f"model:{source}", "--repo", repo, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    out = clock.read()
    if proc.returncode:
        raise RuntimeError(f"aibackup backup exited {proc.returncode}: {proc.stderr[-2000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = json.loads(proc.stdout)
    return {
        "seconds": out["seconds"],
        "bytes": _source_bytes(Path(source)),
        "new_bytes": report["datasets"][0]["new_bytes"],
        "backup_max_rss_mb": round(rss, 1),
    }


def child_restore(repo: str, target: str) -> dict[str, Any]:
    _import_connector()
    return timed_restore(repo, f"model:{target}")


def _source_bytes(source: Path) -> int:
    from benchmarks.modeldata import tree_bytes

    return source.stat().st_size if source.is_file() else tree_bytes(source)


def child_chunker(folder: str) -> dict[str, Any]:
    """sha256 and FastCDC speed over every file of `folder` (mapped, from the page cache), the chunk sizes
    and every chunk's digest and length, plain and with cuts at safetensors tensor boundaries (as the model
    connector cuts: the same chunks). Its peak RSS counts the mapped files, so it is not the chunker's."""
    from pyfastcdc import FastCDC

    cdc = FastCDC(avg_size=AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())
    maps = []
    for path in files:
        with open(path, "rb") as f:
            maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b"")
    total = sum(len(m) for m in maps)
    try:
        started = time.perf_counter()
        for m in maps:
            hashlib.sha256(m).digest()
        sha_seconds = time.perf_counter() - started
        started = time.perf_counter()
        plain = [[(c.offset, c.length) for c in cdc.cut_buf(memoryview(m))] for m in maps]
        cdc_seconds = time.perf_counter() - started
        started = time.perf_counter()
        aligned = [
            _cut_aligned(cdc, m, _bounds(path) if path.suffix == ".safetensors" else [])
            for path, m in zip(files, maps, strict=True)
        ]
        aligned_seconds = time.perf_counter() - started
        digests = {
            "plain": _digests(maps, plain),
            "aligned": _digests(maps, aligned),
        }
    finally:
        for m in maps:
            if isinstance(m, mmap.mmap):
                m.close()
    return {
        "bytes": total,
        "sha256_bytes_per_s": total / sha_seconds,
        "fastcdc_bytes_per_s": total / cdc_seconds,
        "fastcdc_aligned_bytes_per_s": total / aligned_seconds,
        "sizes": {k: _distribution([n for _, n in v]) for k, v in digests.items()},
        "chunks": digests,
    }


def _bounds(path: Path) -> list[int]:
    """Where the model connector forces cuts: the header's end and every tensor's start and end."""
    from benchmarks.modeldata import stored_tensors

    return sorted({b for s in stored_tensors(path) for b in (s.start, s.end)})


def _cut_aligned(cdc: Any, buf: Any, cuts: list[int]) -> list[tuple[int, int]]:
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(buf)], strict=True):
        if end > start:
            out += [(start + c.offset, c.length) for c in cdc.cut_buf(memoryview(buf)[start:end])]
    return out


def _digests(maps: list[Any], cuts: list[list[tuple[int, int]]]) -> list[tuple[str, int]]:
    return [
        (hashlib.sha256(memoryview(m)[o : o + n]).hexdigest()[:32], n)
        for m, pieces in zip(maps, cuts, strict=True)
        for o, n in pieces
    ]


def _distribution(sizes: list[int]) -> dict[str, float]:
    ordered = sorted(sizes)
    return {
        "chunks": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered)),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }


def child_zstd(folder: str) -> dict[str, Any]:
    """zstd on the largest bf16 and fp16 tensors' first ZSTD_SAMPLE bytes, compressed 1 MiB at a time (as
    chunks are): ratio, compression and decompression bytes/s (best of 3) at levels 1 and 3."""
    import zstandard

    from benchmarks.modeldata import shards, stored_tensors

    largest: dict[str, tuple[Path, Any]] = {}
    for path in shards(Path(folder)):
        for s in stored_tensors(path):
            if s.dtype not in largest or s.end - s.start > largest[s.dtype][1].end - largest[s.dtype][1].start:
                largest[s.dtype] = (path, s)
    out: dict[str, Any] = {}
    for dtype, (path, s) in sorted(largest.items()):
        with open(path, "rb") as f:
            f.seek(s.start)
            data = f.read(min(ZSTD_SAMPLE, s.end - s.start))
        pieces = [data[i : i + AVG_SIZE] for i in range(0, len(data), AVG_SIZE)]
        out[dtype] = {"tensor": s.name, "bytes": len(data)}
        for level in (1, 3):
            packed, seconds = _best(zstandard.ZstdCompressor(level=level).compress, pieces)
            _, back = _best(zstandard.ZstdDecompressor().decompress, packed)
            out[dtype][f"level{level}"] = {
                "ratio": round(sum(map(len, packed)) / len(data), 4),
                "compress_bytes_per_s": len(data) / seconds,
                "decompress_bytes_per_s": len(data) / back,
            }
    return {"by_dtype": out}


def _best(step: Callable[[bytes], bytes], pieces: list[bytes], runs: int = 3) -> tuple[list[bytes], float]:
    """`step` of every piece, and the fastest of `runs` passes' seconds."""
    times, result = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = [step(p) for p in pieces]
        times.append(time.perf_counter() - started)
    return result, min(times)


CHILDREN = {
    "generate": child_generate,
    "generate-big": child_generate_big,
    "bare-copy": child_bare_copy,
    "backup": child_backup,
    "backup-cli": child_backup_cli,
    "restore": child_restore,
    "chunker": child_chunker,
    "zstd": child_zstd,
}


# --- the section ----------------------------------------------------------------------------------------------


def _new_raw_bytes(chunks: Iterable[tuple[str, int]], known: set[str]) -> int:
    """Bytes of the chunks not in `known` (each counted once); adds them to `known`."""
    new = 0
    for digest, n in chunks:
        if digest not in known:
            known.add(digest)
            new += n
    return new


def _seconds(runs: list[dict[str, Any]], key: str = "seconds") -> list[float]:
    return [round(r[key], 3) for r in runs]


def measure(size_gib: float, big_gib: float, repeats: int, offline: bool = False) -> dict[str, Any]:
    """The numbers and the ratios, JSON-able (see the module docstring). `offline`: no aibackup steps."""
    from benchmarks import modeldata

    if not offline and (problem := missing_connector()):
        raise RuntimeError(problem)
    work = Path(tempfile.mkdtemp(prefix="aibackup-bench-models-"))
    model, repo = work / "model", work / "repo-0"
    out: dict[str, Any] = {"size_gib": size_gib, "repeats": repeats, "machine": machine(), "offline": offline}
    copies: list[dict[str, Any]] = []
    backups: list[dict[str, Any]] = []
    restores: list[dict[str, Any]] = []
    try:
        out["generator"] = run_child(MODULE, "generate", str(model), str(int(size_gib * GIB)))
        first = run_child(MODULE, "chunker", str(model))
        known = {k: {d for d, _ in v} for k, v in first.pop("chunks").items()}
        out["chunker"] = first
        out["zstd"] = run_child(MODULE, "zstd", str(model))
        for n in range(repeats):
            copies.append(run_child(MODULE, "bare-copy", str(model), str(work / "copy")))
            shutil.rmtree(work / "copy")
            if not offline:
                backups.append(run_child(MODULE, "backup", str(work / f"repo-{n}"), str(model)))
                if n:
                    shutil.rmtree(work / f"repo-{n}")
                restores.append(run_child(MODULE, "restore", str(repo), str(work / "restored")))
                if n == 0 and modeldata.tree_digests(work / "restored") != modeldata.tree_digests(model):
                    raise RuntimeError("the restored model differs from the source")
                shutil.rmtree(work / "restored")
            print(f"benchmarks: models round {n + 1} of {repeats}", file=sys.stderr, flush=True)
        out.update(_timings(copies, backups, restores))
        if not offline:
            cli = run_child(MODULE, "backup-cli", str(work / "repo-cli"), str(model))
            shutil.rmtree(work / "repo-cli")
            out["backup_max_rss_mb"] = cli["backup_max_rss_mb"]
        out["changes"] = _changes(model, repo, known, offline)
        shutil.rmtree(model)
        shutil.rmtree(repo, ignore_errors=True)
        if big_gib:
            out["big"] = _big(work, big_gib, offline)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["targets"] = TARGETS
    return out


def _timings(
    copies: list[dict[str, Any]], backups: list[dict[str, Any]], restores: list[dict[str, Any]]
) -> dict[str, Any]:
    """Fastest and median seconds of each side, throughputs and the ratios against the bare copy."""
    copy = fastest(copies)
    size = copy["bytes"]
    out: dict[str, Any] = {
        "bytes": size,
        "bare_copy_seconds": round(copy["seconds"], 3),
        "bare_copy_runs": _seconds(copies),
        "bare_copy_bytes_per_s": size / copy["seconds"],
        "bare_copy_max_rss_mb": max(r["max_rss_mb"] for r in copies),
    }
    median_copy = statistics.median(r["seconds"] for r in copies)
    for name, runs in (("backup", backups), ("restore", restores)):
        if not runs:
            continue
        best = fastest(runs)
        median = statistics.median(r["seconds"] for r in runs)
        out |= {
            f"{name}_seconds": round(best["seconds"], 3),
            f"{name}_runs": _seconds(runs),
            f"{name}_cpu_seconds": round(best["cpu_seconds"], 3),
            f"{name}_bytes_per_s": size / best["seconds"],
            f"{name}_child_max_rss_mb": max(r["max_rss_mb"] for r in runs),
            f"{name}_vs_bare_copy": round(best["seconds"] / copy["seconds"], 3),
            f"{name}_throughput_vs_bare_copy": round(copy["seconds"] / best["seconds"], 3),
            f"{name}_median_vs_bare_copy": round(median / median_copy, 3),
        }
    if backups:
        out["v1_new_bytes"] = backups[0]["new_bytes"]
        out["v1_stored"] = backups[0]["stored"]
        out["v1_new_vs_total"] = round(backups[0]["new_bytes"] / size, 4)
    if restores:
        best = fastest(restores)
        out |= {k: round(best[k], 3) for k in ("validate_seconds", "load_seconds", "check_seconds")}
        out["restore_checks"] = best["checks"]
    return out


def _changes(model: Path, repo: Path, known: dict[str, set[str]], offline: bool) -> dict[str, Any]:
    """Each later version of the model, made in place and backed up into `repo` after the one before."""
    from benchmarks import modeldata

    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "v2": lambda: modeldata.change_tensors(model, 0.10, seed=1),
        "metadata": lambda: modeldata.rewrite_metadata(model),
        "lora": lambda: modeldata.add_lora(model),
        "finetune": lambda: modeldata.full_finetune(model, seed=2),
    }
    out: dict[str, Any] = {}
    for name, step in steps.items():
        change = step()
        change.pop("changed", None)  # the names: long, and in the generator's test
        total = modeldata.tree_bytes(model)
        cut = run_child(MODULE, "chunker", str(model))
        entry: dict[str, Any] = {"change": change, "bytes": total}
        for mode, chunks in cut["chunks"].items():
            entry[f"predicted_new_vs_total_{mode}"] = round(_new_raw_bytes(chunks, known[mode]) / total, 6)
        if not offline:
            backup = run_child(MODULE, "backup", str(repo), str(model))
            entry |= {
                "seconds": round(backup["seconds"], 3),
                "new_bytes": backup["new_bytes"],
                "stored": backup["stored"],
                "new_vs_total": round(backup["new_bytes"] / total, 6),
                "child_max_rss_mb": backup["max_rss_mb"],
            }
            if raw := (backup["stored"] or {}).get("raw_new_bytes"):  # before compression
                entry["raw_new_vs_total"] = round(raw / total, 6)
            if name == "lora":
                entry["new_vs_adapter"] = round(backup["new_bytes"] / change["bytes"], 3)
        out[name] = entry
        print(f"benchmarks: models change {name} done", file=sys.stderr, flush=True)
    return out


def _big(work: Path, big_gib: float, offline: bool) -> dict[str, Any]:
    """One safetensors file of `big_gib`: its generation and the peak RSS of the CLI backing it up."""
    path = work / "big" / "model.safetensors"
    out: dict[str, Any] = {"generator": run_child(MODULE, "generate-big", str(path), str(int(big_gib * GIB)))}
    if not offline:
        backup = run_child(MODULE, "backup-cli", str(work / "repo-big"), str(path))
        out |= {k: backup[k] for k in ("seconds", "bytes", "new_bytes", "backup_max_rss_mb")}
        out["bytes_per_s"] = backup["bytes"] / backup["seconds"]
    return out


# --- the report -----------------------------------------------------------------------------------------------


def target_values(r: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(label, value, bound, unit) of every target the results measure, for the report's targets table."""
    t, out = r["targets"], []
    for name in ("backup", "restore"):
        if f"{name}_vs_bare_copy" in r:
            out.append(
                (f"model {name} / bare copy (seconds)", r[f"{name}_vs_bare_copy"], t[f"{name}_vs_bare_copy"], "×")
            )
    changes = r.get("changes", {})
    for name, label in (("v2", "10% of tensors changed"), ("metadata", "metadata-only change")):
        if "new_vs_total" in changes.get(name, {}):
            out.append(
                (f"model new bytes / total, {label}", changes[name]["new_vs_total"], t[f"{name}_new_vs_total"], "×")
            )
    if "backup_max_rss_mb" in r:
        out.append(
            (
                f"model backup peak RSS at {r['bytes'] / GIB:.1f} GiB",
                r["backup_max_rss_mb"],
                t["backup_max_rss_mb"],
                " MB",
            )
        )
    if "backup_max_rss_mb" in r.get("big", {}):
        big = r["big"]
        label = f"model backup peak RSS, one {big['bytes'] / GIB:.1f} GiB file"
        out.append((label, big["backup_max_rss_mb"], t["big_backup_max_rss_mb"], " MB"))
    return out


def _gbs(value: float) -> str:
    return f"{value / 1e9:.2f} GB/s"


def table(r: dict[str, Any]) -> list[str]:
    """The results as Markdown lines (a table of measures against their targets, then the chunker and zstd)."""
    gen = r["generator"]
    lines = [
        f"Model: {gen['layers']} layers, {gen['shards']} shards, {r['bytes'] / GIB:.2f} GiB "
        f"(bf16 {gen['tensor_bytes_by_dtype'].get('BF16', 0) / GIB:.2f} GiB, "
        f"fp16 {gen['tensor_bytes_by_dtype'].get('F16', 0) / GIB:.2f} GiB), generated in "
        f"{gen['seconds']:.1f} s ({gen['bytes'] / gen['seconds'] / 1e6:.0f} MB/s, "
        f"peak RSS {gen['max_rss_mb']:.0f} MB).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| bare copy (read, sha256, write, fsync) | {r['bare_copy_seconds']:.2f} s, "
        f"{_gbs(r['bare_copy_bytes_per_s'])} | |",
    ]
    t = r["targets"]
    for name in ("backup", "restore"):
        if f"{name}_seconds" in r:
            lines.append(
                f"| {name} / bare copy | {r[f'{name}_seconds']:.2f} s, {_gbs(r[f'{name}_bytes_per_s'])}: "
                f"**{r[f'{name}_vs_bare_copy']:.2f}×** the seconds (median {r[f'{name}_median_vs_bare_copy']:.2f}×), "
                f"{r[f'{name}_throughput_vs_bare_copy']:.2f}× the throughput | ≤ {t[f'{name}_vs_bare_copy']}× |"
            )
    bounds = {"v2": t["v2_new_vs_total"], "metadata": t["metadata_new_vs_total"]}
    labels = {
        "v2": "v2, ~10% of tensors changed",
        "metadata": "metadata-only change",
        "lora": "LoRA adapter added",
        "finetune": "full fine-tune",
    }
    for name, c in r.get("changes", {}).items():
        predicted = (
            f"chunker alone: {c['predicted_new_vs_total_aligned']:.2%} aligned, "
            f"{c['predicted_new_vs_total_plain']:.2%} plain"
        )
        value = predicted
        if "new_vs_total" in c:
            raw = f", {c['raw_new_vs_total']:.2%} before zstd" if "raw_new_vs_total" in c else ""
            value = f"**{c['new_vs_total']:.2%}** of the model ({c['new_bytes'] / 1e6:,.2f} MB){raw} ({predicted})"
        if name == "lora" and "new_vs_adapter" in c:
            value += f"; {c['new_vs_adapter']:.2f}× the adapter's {c['change']['bytes'] / 1e6:.1f} MB"
        bound = f"≤ {bounds[name]:.0%}" if name in bounds else "≈ adapter" if name == "lora" else "≈ 100%"
        lines.append(f"| new bytes, {labels[name]} | {value} | {bound} |")
    if "backup_max_rss_mb" in r:
        lines.append(
            f"| peak RSS, `aibackup backup` at {r['bytes'] / GIB:.1f} GiB | **{r['backup_max_rss_mb']:.0f} MB** | "
            f"≤ {t['backup_max_rss_mb']} MB |"
        )
    if (big := r.get("big")) and "backup_max_rss_mb" in big:
        lines.append(
            f"| peak RSS, `aibackup backup` of one {big['bytes'] / GIB:.1f} GiB file | "
            f"**{big['backup_max_rss_mb']:.0f} MB** ({_gbs(big['bytes_per_s'])}) | ≤ {t['big_backup_max_rss_mb']} MB |"
        )
    c = r["chunker"]
    lines += [
        "",
        f"Chunker alone: FastCDC {_gbs(c['fastcdc_bytes_per_s'])} (cut at tensor boundaries too: "
        f"{_gbs(c['fastcdc_aligned_bytes_per_s'])}), sha256 {_gbs(c['sha256_bytes_per_s'])}, one core.",
        "",
        "| chunks | count | min | median | mean | p90 | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, d in c["sizes"].items():
        kib = [f"{d[k] / 1024:.0f} KiB" for k in ("min", "median", "mean", "p90", "max")]
        lines.append(f"| {mode} | {d['chunks']} | {' | '.join(kib)} |")
    lines += [
        "",
        "| zstd on 1 MiB pieces | level 1 ratio | compress | decompress | level 3 ratio |",
        "|---|---|---|---|---|",
    ]
    for dtype, z in r["zstd"]["by_dtype"].items():
        one, three = z["level1"], z["level3"]
        lines.append(
            f"| {dtype} ({z['tensor']}) | {one['ratio']:.3f} | {_gbs(one['compress_bytes_per_s'])} | "
            f"{_gbs(one['decompress_bytes_per_s'])} | {three['ratio']:.3f} |"
        )
    return lines


def main(argv: list[str]) -> int:
    """``python -m benchmarks.models [--size-gib G] [--big-gib G] [--repeats R] [--offline]``: the section
    alone, its table on stderr and its JSON on stdout; ``--child KIND ARGS`` runs one of its children."""
    if argv[:1] == ["--child"]:
        return child_main(CHILDREN, argv)
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--size-gib", type=float, default=2.0, help="tensor bytes of the model folder")
    parser.add_argument("--big-gib", type=float, default=10.0, help="the one-file peak RSS run (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--offline", action="store_true", help="no aibackup steps (no model connector needed)")
    args = parser.parse_args(argv)
    if not args.offline and (problem := missing_connector()):
        parser.error(problem)
    result = measure(args.size_gib, args.big_gib, args.repeats, args.offline)
    print("\n".join(table(result)), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
