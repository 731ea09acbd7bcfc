"""`python -m benchmarks` (or `make bench`): every benchmark in one run, then the report.

    python -m benchmarks --rows 100000 --dim 384

Sections (``--sections``, all by default; a subset reruns those and keeps the others' last results):
``backup`` (backup vs bare read per backend, server-side peak RSS at ``--rows`` and ``--memory-rows``),
``writer`` (our Parquet writing vs raw pyarrow), ``restore`` (restore load vs bare bulk load per backend),
``sizes`` (bundle vs raw float32 vs the store on disk vs a vdf-io export), ``incremental`` (issue 16: a 1%
change at ``--incremental-rows``: bytes, time and memory against the full backup and the bare read; the read
side of a restore of a 30-link chain against its equivalent full bundle), ``encryption`` (issue 17: backup,
restore, ``verify --read-data`` and bytes of an encrypted repository against an unencrypted one at ``--rows``,
and the cipher's throughput), ``stores`` (issue 18: pgvector backup against bare binary COPY loops and
its restore load against a bare COPY FROM plus the same HNSW build, peak RSS at ``--memory-rows``; LanceDB
backup against a bare scanner read and restore against a bare ``create_table``; Milvus Lite backup at
``--milvus-rows`` against a bare query-iterator loop), ``models`` (issue 19: backup and restore of a
``--model-gib`` model folder against a bare copy, new bytes of later versions, peak RSS at ``--model-big-gib``,
the chunker and zstd; see :mod:`benchmarks.models`), ``s3`` (issue 20: against moto's S3 server on this
machine at ``--rows``: backup to S3 against local disk, ``verify --read-data`` and ``copy`` both ways against
bare boto3 transfer loops, the restore read side from S3 against local disk, and moto's own PUT and GET
throughput; see :mod:`benchmarks.s3`), ``distributed`` (issue 21: a pgvector backup at
``--distributed-rows`` without Dask, on 1 and on 2 local Dask workers, and the source's own COPY rate with
one and two sessions; see :mod:`benchmarks.distributed`). Results go to
``benchmarks/results/bench-ROWSxDIM.json`` and ``docs/benchmarks.md`` (with ``docs/benchmarks.png``);
``--report-only`` redraws the page from the JSON. Seeded stores are cached under ``benchmarks/.cache``
(the first run seeds them: Chroma ~2000 records/s, Qdrant local ~1000 points/s).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from typing import Any

from benchmarks import backup, encryption, incremental, restore, writer
from benchmarks import distributed as distributed_bench
from benchmarks import lancedb as lancedb_bench
from benchmarks import milvus as milvus_bench
from benchmarks import models as models_bench
from benchmarks import pgvector as pgvector_bench
from benchmarks import s3 as s3_bench
from benchmarks.common import RESULTS, ROOT, machine, seeded_chroma, seeded_qdrant
from benchmarks.report import chart, markdown, targets

SECTIONS = (
    "backup",
    "writer",
    "restore",
    "sizes",
    "incremental",
    "encryption",
    "stores",
    "models",
    "s3",
    "distributed",
)
DOCS = ROOT / "docs"


def sizes(rows: int, dim: int, qdrant_rows: int, backed_up: dict[str, Any] | None, vdfio: bool) -> dict[str, Any]:
    """Bundle bytes vs raw float32 vs each store on disk vs vdf-io's export of the Chroma collection."""
    from benchmarks.common import disk_bytes
    from benchmarks.vdfio import export_chroma

    if backed_up is None:  # the sizes section alone: one backup of each store
        backed_up = backup.measure(rows, dim, qdrant_rows, 0, 1)
    chroma, qdrant = backed_up["chroma"], backed_up["qdrant"]
    raw = rows * dim * 4
    return {
        "rows": rows,
        "dim": dim,
        "raw_float32_bytes": raw,
        "bundle_bytes": chroma["bundle_bytes"],
        "bundle_vs_raw": round(chroma["bundle_bytes"] / raw, 3),
        "store_bytes": disk_bytes(seeded_chroma(rows, dim)),
        "vdfio": export_chroma(seeded_chroma(rows, dim), rows) if vdfio else None,
        "qdrant": {
            "rows": qdrant_rows,
            "raw_float32_bytes": qdrant_rows * dim * 4,
            "bundle_bytes": qdrant["bundle_bytes"],
            "store_bytes": disk_bytes(seeded_qdrant(qdrant_rows, dim)),
        },
    }


def _without_sections(argv: list[str]) -> list[str]:
    """`argv` without ``--sections X`` (or ``--sections=X``)."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--sections":
            skip = True
        elif not word.startswith("--sections="):
            out.append(word)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="records of the Chroma collection")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--qdrant-rows", type=int, default=20_000, help="points of the Qdrant local store")
    parser.add_argument("--memory-rows", type=int, default=1_000_000, help="second size for peak RSS (0: skip)")
    parser.add_argument("--restore-rows", type=int, default=20_000, help="records restored into Chroma")
    parser.add_argument("--qdrant-restore-rows", type=int, default=3_000, help="points restored into Qdrant")
    parser.add_argument("--incremental-rows", type=int, default=1_000_000, help="records of the incremental section")
    parser.add_argument("--links", type=int, default=incremental.LINKS, help="links of the restored chain")
    parser.add_argument("--milvus-rows", type=int, default=20_000, help="records of the Milvus Lite collection")
    parser.add_argument("--distributed-rows", type=int, default=1_000_000, help="rows of the distributed section")
    parser.add_argument("--model-gib", type=float, default=2.0, help="tensor GiB of the models section's folder")
    parser.add_argument("--model-big-gib", type=float, default=10.0, help="one-file peak RSS run of models (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each bare loop and aibackup")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--no-vdfio", action="store_true", help="skip the vdf-io export (it installs GBs once)")
    parser.add_argument("--report-only", action="store_true", help="redraw docs/benchmarks.md from the JSON")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    if unknown := sorted(set(sections) - set(SECTIONS)):
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if "models" in sections and not args.report_only and (problem := models_bench.missing_connector()):
        parser.error(problem)  # before hours of other sections, whose results would be lost with it
    out = RESULTS / f"bench-{args.rows}x{args.dim}.json"
    if args.report_only:
        result = json.loads(out.read_text())
    else:
        # A subset of the sections (--sections) keeps the others' last results; each section says when it ran.
        kept = json.loads(out.read_text()) if out.exists() and set(sections) != set(SECTIONS) else {}
        result = {
            **{k: v for k, v in kept.items() if k in (*SECTIONS, "section_dates")},
            "command": shlex.join(_without_sections(argv)),  # the page regenerates everything
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
            "repeats": args.repeats,
            "json": str(out.relative_to(ROOT)),
        }
        result.setdefault("section_dates", {k: kept.get("date") for k in SECTIONS if k in kept})
        step = {
            "backup": lambda: backup.measure(args.rows, args.dim, args.qdrant_rows, args.memory_rows, args.repeats),
            "writer": lambda: writer.measure(args.rows, args.dim, args.repeats),
            "restore": lambda: restore.measure(args.restore_rows, args.dim, args.repeats, args.qdrant_restore_rows),
            "sizes": lambda: sizes(args.rows, args.dim, args.qdrant_rows, result.get("backup"), not args.no_vdfio),
            "incremental": lambda: incremental.measure(args.incremental_rows, args.dim, args.repeats, args.links),
            "encryption": lambda: encryption.measure(args.rows, args.dim, args.repeats),
            "stores": lambda: {
                "pgvector": pgvector_bench.measure(args.rows, args.dim, args.repeats, args.memory_rows),
                "lancedb": lancedb_bench.measure(args.rows, args.dim, args.repeats),
                "milvus": milvus_bench.measure(args.milvus_rows, args.dim, max(args.repeats, 5)),
            },
            "models": lambda: models_bench.measure(args.model_gib, args.model_big_gib, args.repeats),
            "s3": lambda: s3_bench.measure(args.rows, args.dim, args.repeats),
            "distributed": lambda: distributed_bench.measure(args.distributed_rows, args.dim, args.repeats),
        }
        for section in SECTIONS:
            if section in sections:
                started = time.perf_counter()
                print(f"benchmarks: {section} ...", file=sys.stderr, flush=True)
                result[section] = step[section]()
                result["section_dates"][section] = result["date"]
                print(f"benchmarks: {section} done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    DOCS.mkdir(exist_ok=True)
    drawn = chart(result, DOCS / "benchmarks.png")
    page = markdown(result, "benchmarks.png" if drawn else None)
    (DOCS / "benchmarks.md").write_text(page)
    for t in targets(result):
        print(f"{'met   ' if t.met else 'MISSED'} {t.label}: {t.value:g} (target ≤ {t.bound:g})")
    print(f"\n(results in {out.relative_to(ROOT)}, report in docs/benchmarks.md)")
    return 0


sys.exit(main(sys.argv[1:]))
