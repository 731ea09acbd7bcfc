"""The same Chroma collection exported by vector-io (``vdf-io``), the closest open tool, for comparison.

vdf-io conflicts with our dependencies, so it gets its own virtualenv under ``benchmarks/.cache`` (made
once; it is large: several GB with its torch and cloud-SDK dependencies). It starts only with
``setuptools<81`` (it imports ``pkg_resources``) and ``astrapy<2``. Its Chroma client is pinned to ours so
it reads the same store format. The export runs on a copy of the store (a client may migrate what it
opens), and every row of what it wrote is counted: a tool that loses rows is reported as losing rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.common import CACHE, COLLECTION

VDF_IO = "vdf-io==0.1.248"
#: Where the vdf-io virtualenv lives; VDFIO_VENV points at an existing one (with ``bin/export_vdf``).
VENV = Path(os.environ.get("VDFIO_VENV", CACHE / "vdf-io-venv"))


def _venv() -> Path:
    """The vdf-io virtualenv (created on first use); returns its ``export_vdf`` executable."""
    exe = VENV / "bin" / "export_vdf"
    if (VENV / ".complete").exists() or ("VDFIO_VENV" in os.environ and exe.exists()):
        return exe
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # weaviate-client: vdf-io imports it, and without a floor the resolver may take a 4.4 beta that breaks
    # on today's typing_extensions (or backtrack for an hour).
    pins = [VDF_IO, "setuptools<81", "astrapy<2", "weaviate-client>=4.9,<5", f"chromadb=={version('chromadb')}"]
    print(f"  installing {' '.join(pins)} into {VENV} (once; several GB)", file=sys.stderr, flush=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", *pins], check=True)
    (VENV / ".complete").write_text("ok")
    return exe


def export_chroma(store: Path, expected_rows: int) -> dict[str, Any]:
    """Export `store`'s collection with vdf-io; count the rows and bytes it wrote.

    Returns ``{"tool", "seconds", "rows", "bytes", "rows_lost", ...}``, or ``{"error": ...}`` when vdf-io
    cannot be installed or run here (the report then says so instead of a number).
    """
    try:
        exe = _venv()
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"tool": VDF_IO, "error": f"could not install vdf-io: {exc}"}
    with tempfile.TemporaryDirectory(prefix="aibackup-bench-vdfio-") as tmp:
        copy = Path(tmp) / "store"
        shutil.copytree(store, copy)
        out = Path(tmp) / "out"
        out.mkdir()
        started = time.perf_counter()
        proc = subprocess.run(
            [str(exe), "chroma", "--persistent_path", str(copy), "--collections", COLLECTION],
            cwd=out,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        metas = list(out.glob("vdf_*/VDF_META.json"))
        if proc.returncode or not metas:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"tool": VDF_IO, "error": f"export failed (exit {proc.returncode}): {tail[0]}"}
        files = [f for f in metas[0].parent.rglob("*.parquet")]
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        meta = json.loads(metas[0].read_text())
        index = meta["indexes"][COLLECTION][0]
        vector_type = str(pq.ParquetFile(files[0]).schema_arrow.field("vector").type) if files else ""
        return {
            "tool": VDF_IO,
            "seconds": round(seconds, 3),
            "rows": rows,
            "rows_lost": expected_rows - rows,
            "bytes": sum(f.stat().st_size for f in files),
            "reported_total": index.get("total_vector_count"),
            "reported_exported": index.get("exported_vector_count"),
            "vector_type": vector_type,
            "exit_code": proc.returncode,
        }
