"""The registry: one `Backend` entry per kind, every other table derived from the entries, and the
messages a user reads unchanged by that."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibackup.connectors import registry
from aibackup.connectors.registry import BACKENDS, parse_location
from aibackup.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


def test_the_unknown_store_message_lists_every_form() -> None:
    assert registry.KNOWN_FORMS == (
        "chroma:PATH, chroma+http://HOST:PORT, qdrant:PATH, qdrant+http://HOST:PORT, pgvector://HOST/DB, "
        "lancedb:PATH, milvus:PATH, milvus+http://HOST:PORT, conversations:PATH, conversations+sqlite:PATH?table=T, "
        "conversations+postgresql://HOST/DB?table=T, finetune:PATH, config:PATH, model:PATH"
    )
    with pytest.raises(UsageError, match=r"^unknown store 'mysql:x': expected one of chroma:PATH, .*, model:PATH$"):
        parse_location("mysql:x")


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_each_entry_is_whole(kind: str) -> None:
    """Each entry names a connector module in its own folder, and only schemes of its own kind."""
    backend = BACKENDS[kind]
    module, _, cls = backend.connector.partition(":")
    assert cls and module.startswith("aibackup.connectors.")
    assert (ROOT / "connectors" / Path(*module.split(".")[2:])).with_suffix(".py").is_file(), module
    schemes = {kind, *(f"{kind}+{transport}" for transport in backend.transports)}
    assert set(backend.parameters) | set(backend.required) | set(backend.postgres_schemes) <= schemes
    assert all(form.startswith((f"{kind}:", f"{kind}+")) for form in backend.forms)
    assert backend.bare_target or backend.bare_file is None
    assert (backend.default_port is not None) == bool({"http", "https"} & set(backend.transports))


def test_the_tables_are_views_of_the_entries() -> None:
    assert registry.CONNECTORS["model"] == BACKENDS["model"].connector
    assert registry.BARE_TARGETS == ("chroma", "qdrant", "lancedb", "milvus")
    assert registry.BARE_FILES == {"milvus": "milvus.db"}
    assert registry.POSTGRES_SCHEMES == ("pgvector", "conversations+postgresql")
    assert registry.DEFAULT_PORTS == {"chroma": 8000, "qdrant": 6333, "milvus": 19530}
    assert registry.TRANSPORTS["conversations"] == ("sqlite", "postgresql")
    assert registry.PARAMETERS["chroma+https"] == ("tenant", "database", "api_key_env")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("conversations+sqlite:x.db", "name the table, as in conversations+sqlite:PATH?table=conversations"),
        (
            "conversations+postgresql://h/db",
            "name the table, as in conversations+postgresql://HOST/DB?table=conversations",
        ),
        ("milvus+grpc://h", "after 'milvus+' comes http or https"),
        ("finetune+http://h", "after 'finetune+' comes nothing"),
        ("lancedb:./l?x=1", "unknown parameter 'x' (it takes: id)"),
    ],
)
def test_what_an_entry_refuses(uri: str, message: str) -> None:
    with pytest.raises(UsageError, match=r"^(bad|unknown) store ") as caught:
        parse_location(uri)
    assert message in str(caught.value)


def test_a_bare_target_lies_under_the_restore_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    milvus = parse_location("milvus", target=True)
    assert (milvus.kind, milvus.path) == ("milvus", str(tmp_path.resolve() / "aibackup-restore/milvus/milvus.db"))
    assert parse_location("chroma", target=True).path == str(tmp_path.resolve() / "aibackup-restore/chroma")
    with pytest.raises(UsageError, match="unknown store 'chroma'"):
        parse_location("chroma")  # a source is never bare
