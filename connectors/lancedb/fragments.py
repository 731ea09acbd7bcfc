"""A LanceDB table by its Lance fragments, for partitioned backups and restores on Dask (through pylance,
the Lance library LanceDB's tables are datasets of: ``pip install pylance``, in ``aibackup[lancedb]``).

- **Backup**: the fragments of the one version a backup reads, in contiguous groups of about equal rows
  (:func:`split`); each worker scans its group at that version (:func:`scan`). A version never changes, so
  every worker reads the same state without any snapshot to share.
- **Restore**: each worker writes its records as new fragment files in the table's folder, committed by
  nobody (:func:`write`: ``lance.fragment.write_fragments``); the driver commits all of them at once, as one
  new version that replaces the table (:func:`commit`: ``LanceOperation.Overwrite``), as a one-process
  restore's ``create_table`` does. Until then readers see the table as it was. Files of an attempt that did
  not count (a failed or retried task) are referenced by no version: LanceDB's ``cleanup_old_versions``
  removes them, and a restore that gives up into a table that did not exist removes its folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import balanced_runs

#: Rows per Lance data file a restore's worker writes (LanceDB's own default: 1M).
ROWS_PER_FILE = 1 << 20


def lance_module() -> Any:
    """pylance's ``lance``, or None when it is not installed (the table then does not split)."""
    try:
        import lance
    except ImportError:
        return None
    return lance


def split(dataset: Any, wanted: int) -> list[dict[str, Any]]:
    """The fragments of `dataset` (a ``LanceDataset`` at the version read) in at most `wanted` contiguous
    groups of about equal rows: ``{"fragments": [ids], "rows": n}`` each, none empty."""
    counts = [(f.fragment_id, int(f.count_rows())) for f in dataset.get_fragments()]
    counts = [(i, n) for i, n in counts if n]
    runs = balanced_runs([n for _, n in counts], wanted) if counts else []
    return [{"fragments": [counts[i][0] for i in run], "rows": sum(counts[i][1] for i in run)} for run in runs]


def scan(dataset: Any, fragments: Sequence[int], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of `fragments` of `dataset`, in order, in batches of about `batch_rows`."""
    chosen = [dataset.get_fragment(i) for i in fragments]
    scanner = dataset.scanner(fragments=chosen, batch_size=batch_rows, scan_in_order=True)
    yield from scanner.to_batches()


def write(uri: str, reader: pa.RecordBatchReader) -> list[dict[str, Any]]:
    """Write `reader`'s batches as new fragment files of the dataset at `uri` (made or not), committing
    nothing; the fragments' metadata as JSON, for :func:`commit`."""
    lance = lance_module()
    assert lance is not None, "checked by the connector"
    from lance.fragment import write_fragments

    schema = reader.schema
    written = write_fragments(reader, uri, schema=schema, mode="overwrite", max_rows_per_file=ROWS_PER_FILE)
    return [f.to_json() for f in written]


def commit(uri: str, schema: pa.Schema, receipts: Sequence[Sequence[dict[str, Any]]]) -> None:
    """Commit the fragments of every receipt of :func:`write` as one new version holding only them."""
    lance = lance_module()
    assert lance is not None, "checked by the connector"
    from lance.fragment import FragmentMetadata

    fragments = [FragmentMetadata.from_json(json.dumps(data)) for receipt in receipts for data in receipt]
    exists = (Path(uri) / "_versions").is_dir()
    read_version = lance.dataset(uri).version if exists else None
    lance.LanceDataset.commit(uri, lance.LanceOperation.Overwrite(schema, fragments), read_version=read_version)


def abandon(uri: str, existed: bool) -> None:
    """Remove what workers wrote for a table that did not exist before (its whole folder, no version in
    it); an existing table's uncommitted files are left to LanceDB's cleanup (no version reads them)."""
    if not existed and not (Path(uri) / "_versions").exists():
        shutil.rmtree(uri, ignore_errors=True)
