"""Bundles any engine reads (issue 21): docs/bundle-format.md's DuckDB, Dask and Polars blocks, run against
a chained bundle (records changed, added and deleted since its full backup), give the very rows aibackup's
own reading gives: the same count, the same ids, the same documents."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from aibackup.bundle_reader import BundleReader
from aibackup.repository import Repository
from tests.aibackup.test_incremental import change
from tests.helpers import Cli, ok, seed_chroma

ROOT = Path(__file__).resolve().parents[2]


def blocks() -> dict[str, str]:
    """The page's python blocks by their first line (the pyarrow ones first, unlabelled)."""
    found = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "bundle-format.md").read_text(encoding="utf-8"), re.S)
    return {block.splitlines()[0]: block for block in found}


def checksum(ids: list[str], documents: list[Any]) -> tuple[int, str, int]:
    """(rows, md5 of the sorted ids, characters of every document): the same whoever read the rows."""
    joined = "\n".join(sorted(ids)).encode()
    return len(ids), hashlib.md5(joined).hexdigest(), sum(len(d) for d in documents if isinstance(d, str))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_duckdb_dask_and_polars_read_a_chained_bundle_as_aibackup_does(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)  # an encrypted repository's parts need their key
    store = tmp_path / "data" / "chroma"
    seed_chroma(store, "docs", n=400, dim=16)
    monkeypatch.chdir(tmp_path)
    ok(cli("backup", "chroma:./data/chroma"))
    change(store, update=["doc-00003", "doc-00150"], add=["new-1", "new-2"], delete=["doc-00007", "doc-00399"])
    ok(cli("backup", "chroma:./data/chroma"))

    repo = Repository.open(str(tmp_path / "aibackup-repo"))
    manifest = repo.load(repo.bundle_ids()[-1])
    (dataset,) = manifest.datasets
    assert dataset.chain and dataset.rows == 400  # a link: 2 changed, 2 added, 2 deleted
    ids: list[str] = []
    documents: list[Any] = []
    for batch in BundleReader(repo).batches(dataset):
        ids += batch.column("id").to_pylist()
        documents += batch.column("document").to_pylist()
    expected = checksum(ids, documents)

    pages = blocks()
    pyarrow_blocks = [b for first, b in pages.items() if not first.startswith("# ")]
    namespace: dict[str, Any] = {}
    for name in [*pyarrow_blocks, *(b for first, b in pages.items() if first.startswith("# "))]:
        exec(compile(name, "bundle-format.md", "exec"), namespace)
    duck = namespace["live_duckdb"]
    assert checksum(list(duck["id"]), list(duck["document"])) == expected
    dask_frame = namespace["live_dask"]
    assert dask_frame.npartitions == len(dataset.parts)
    computed = dask_frame[["id", "document"]].compute()
    assert checksum(list(computed["id"]), list(computed["document"])) == expected
    polars = namespace["live_polars"]
    assert checksum(polars["id"].to_list(), polars["document"].to_list()) == expected
    assert "doc-00007" not in set(duck["id"]) and "new-1" in set(duck["id"])
    changed = computed.set_index("id").loc["doc-00003", "document"]
    assert changed == "new text of doc-00003"  # the newer version, not the tombstoned one
