"""Milvus Lite passes the vector contract of tests/contracts/vector.py.

Milvus Lite (milvus-lite 3.x) serves a store from a thread of the process that opens it, and every test
here writes its own collections (the contract's names), so the class shares one store, kept served for
the whole class: opening it again per test would restart the server each time.

What it holds of the contract's optional features: several named vectors and nested metadata. Not
``sparse`` in the contract's exact sense: the contract's sparse vectors hold a zero weight, which Milvus
Lite does not store (refused, or dropped under --allow-lossy; sparse vectors without zeros round-trip, see
tests/connectors/test_milvus.py); not ``bigint`` (Milvus JSON holds int64) nor ``multivector``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest

from aibackup.connectors.base import DatasetDescription
from aibackup.errors import UnsupportedFeatureError
from aibackup.lossy import LossTally
from tests.conftest import free_port
from tests.contracts.bundles import qdrant_bundle_with_multivector
from tests.contracts.vector import VectorContract, collection, rich_batch, rich_config
from tests.helpers import Cli


class TestMilvusLite(VectorContract):
    supports = frozenset({"named", "nested"})
    unreachable = f"milvus+http://127.0.0.1:{free_port()}"
    store: ClassVar[Path]

    @pytest.fixture(autouse=True, scope="class")
    def _served(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        from milvus_lite.server_manager import server_manager_instance

        store = tmp_path_factory.mktemp("milvus-contract") / "contract.db"
        type(self).store = store
        server_manager_instance.start_and_get_uri(str(store))  # served until the class is done
        yield
        server_manager_instance.release_server(str(store))

    def uri(self, tmp_path: Path) -> str:
        return f"milvus:{self.store}"

    def refused(self, tmp_path: Path, cli: Cli) -> tuple[str, str, bool]:
        return qdrant_bundle_with_multivector(tmp_path, cli), "multivectors", True

    def test_a_10_mb_document_round_trips(self, tmp_path: Path) -> None:
        """Overrides the contract: Milvus holds at most 65535 bytes in a VARCHAR field, so the 10 MB
        document is refused before anything is written, naming the collection and the record;
        --allow-lossy cuts it to 65535 bytes at a character boundary."""
        cfg = rich_config(frozenset())
        batch = rich_batch(cfg, frozenset(), ["big", "small"])
        text = ("ünïcode ✓ " * 1_100_000)[:10_000_000]
        batch = batch.set_column(batch.schema.get_field_index("document"), "document", pa.array([text, "small"]))
        name = collection(tmp_path, "10mb")
        with self.open(tmp_path) as conn:
            plan = conn.plan_import(DatasetDescription(name, cfg, 2), name, mode="create", allow_lossy=False)
            with pytest.raises(UnsupportedFeatureError, match=rf"record 'big' of collection '{name}'.*65535 bytes"):
                conn.validate_records(plan, [batch])
            assert name not in [d.name for d in conn.describe()]
            lossy = conn.plan_import(DatasetDescription(name, cfg, 2), name, mode="create", allow_lossy=True)
            assert any("65535 bytes" in d for d in lossy.dropped)
            tally = LossTally(lossy)  # what the restore reports as lost: the one document cut, by name
            assert [b.num_rows for b in tally.watch([batch])] == [2]
            assert tally.lines() == ("column 'document': 1 values changed (e.g. 'big')",)
            assert conn.validate_records(lossy, [batch]) == 2 and conn.import_(lossy, [batch]) == 2
            back = self.read(conn, name)
        documents = dict(zip(back.column("id").to_pylist(), back.column("document").to_pylist(), strict=True))
        cut = documents["big"]
        assert len(cut.encode("utf-8")) <= 65535 and text.startswith(cut) and len(cut.encode("utf-8")) > 65530
        assert documents["small"] == "small"
