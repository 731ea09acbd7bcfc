"""Connector URIs and the registry of connector kinds.

Accepted forms (a bare ``chroma``/``qdrant`` restore target means ``./aibackup-restore/<kind>``):

=========================================  ========================================================
``chroma:PATH``                            embedded Chroma (PersistentClient) at PATH
``chroma+http://HOST:PORT``                a Chroma server (``chroma+https://`` for TLS); token from
                                           ``CHROMA_API_KEY`` (or the variable named by ``?api_key_env=``)
``qdrant:PATH``                            Qdrant local mode (``QdrantClient(path=PATH)``)
``qdrant+http://HOST:PORT``                a Qdrant server (``qdrant+https://``); API key from
                                           ``QDRANT_API_KEY`` (or ``?api_key_env=NAME``)
``conversations:PATH``                     conversation logs: a JSONL file, a folder or a glob (also
                                           ``.jsonl.gz`` / ``.jsonl.zst``); as a target, a folder
``conversations+sqlite:PATH?table=T``      conversation logs in a SQLite table
``finetune:PATH``                          fine-tuning JSONL files (a file, a folder or a glob); as a
                                           target, a folder
``config:PATH``                            configuration files (a folder or a file); as a target, a folder
``pgvector://[USER@]HOST[:PORT]/DB``       PostgreSQL tables with pgvector columns (``?schema=``,
                                           ``?sslmode=``, ``?document=COLUMN``); ``pgvector:///DB?host=DIR``
                                           for a socket; the password from ``PGPASSWORD`` or ``~/.pgpass``
``conversations+postgresql://…/DB?table=T`` conversation logs in a PostgreSQL table (``?key=COLUMN``)
``lancedb:PATH``                           embedded LanceDB (``?id=COLUMN``: the record id column)
``milvus:PATH``                            Milvus Lite 3 (a local folder, ``*.db`` by convention)
``milvus+http://HOST:PORT``                a Milvus server (``milvus+https://``); token from ``MILVUS_TOKEN``
``model:PATH``                             model artifacts: a folder (or one file) of weights, adapters,
                                           tokenizers and configs; as a target, a folder
``chroma`` / ``qdrant`` / ``lancedb`` /    restore targets only: ``./aibackup-restore/<kind>``
``milvus``                                 (Milvus: ``./aibackup-restore/milvus/milvus.db``)
=========================================  ========================================================
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aibackup.connectors.base import Connector, Location
from aibackup.errors import UsageError

#: kind -> "module:Class", imported only when used so a missing optional client only matters then.
CONNECTORS = {
    "chroma": "aibackup.connectors.chroma.connector:ChromaConnector",
    "qdrant": "aibackup.connectors.qdrant.connector:QdrantConnector",
    "conversations": "aibackup.connectors.files.conversations:ConversationsConnector",
    "finetune": "aibackup.connectors.files.finetune:FinetuneConnector",
    "config": "aibackup.connectors.files.configfiles:ConfigConnector",
    "pgvector": "aibackup.connectors.pgvector.connector:PgvectorConnector",
    "lancedb": "aibackup.connectors.lancedb.connector:LanceDBConnector",
    "milvus": "aibackup.connectors.milvus.connector:MilvusConnector",
    "model": "aibackup.connectors.model.connector:ModelConnector",
}
#: kind -> the transports it accepts after "+": servers speak http(s); conversations also live in SQLite.
TRANSPORTS = {
    "chroma": ("http", "https"),
    "qdrant": ("http", "https"),
    "milvus": ("http", "https"),
    "conversations": ("sqlite", "postgresql"),
}
#: kinds a bare name may stand for as a restore target (an embedded default under DEFAULT_RESTORE_ROOT)
BARE_TARGETS = ("chroma", "qdrant", "lancedb", "milvus")
#: the file a bare target names inside its folder, for stores that are one file
BARE_FILES = {"milvus": "milvus.db"}
#: kinds whose path keeps its last component as written (not resolved through a symlink)
NAMED_AS_GIVEN = ("model",)
DEFAULT_PORTS = {"chroma": 8000, "qdrant": 6333, "milvus": 19530}
#: schemes written as PostgreSQL URLs: ``SCHEME://[USER@]HOST[:PORT]/DB`` or ``SCHEME:///DB?host=SOCKET_DIR``
POSTGRES_SCHEMES = ("pgvector", "conversations+postgresql")
#: scheme -> the query parameters it takes. Anything else is refused: a parameter is never a credential
#: (`?api_key=...` would end up in manifests and logs); keys come from the environment (api_key_env).
PARAMETERS = {
    "chroma": ("tenant", "database"),
    "chroma+http": ("tenant", "database", "api_key_env"),
    "chroma+https": ("tenant", "database", "api_key_env"),
    "qdrant+http": ("api_key_env",),
    "qdrant+https": ("api_key_env",),
    "conversations+sqlite": ("table",),
    "pgvector": ("schema", "sslmode", "document", "host"),
    "conversations+postgresql": ("table", "key", "schema", "sslmode", "host"),
    "lancedb": ("id",),
    "milvus+http": ("api_key_env",),
    "milvus+https": ("api_key_env",),
}
DEFAULT_RESTORE_ROOT = "aibackup-restore"
KNOWN_FORMS = (
    "chroma:PATH, chroma+http://HOST:PORT, qdrant:PATH, qdrant+http://HOST:PORT, pgvector://HOST/DB, "
    "lancedb:PATH, milvus:PATH, milvus+http://HOST:PORT, conversations:PATH, conversations+sqlite:PATH?table=T, "
    "conversations+postgresql://HOST/DB?table=T, finetune:PATH, config:PATH, model:PATH"
)


def parse_location(uri: str, *, target: bool = False) -> Location:
    """Parse a source or target URI. Raises UsageError with one line naming the URI on any problem."""
    location = _parse(uri, target=target)
    unknown = sorted(set(location.params) - set(PARAMETERS.get(location.scheme, ())))
    if unknown:
        allowed = ", ".join(PARAMETERS.get(location.scheme, ())) or "none"
        # Named without the URI's query: the value of an unknown parameter may be a credential.
        raise UsageError(
            f"bad store {uri.split('?', 1)[0]!r}: unknown parameter {unknown[0]!r} (it takes: {allowed}); "
            "credentials come from the environment: ?api_key_env=VARIABLE"
        )
    return location


def _parse(uri: str, *, target: bool) -> Location:
    text = uri.strip()
    if target and text in BARE_TARGETS:
        bare = Path(DEFAULT_RESTORE_ROOT, text, *([BARE_FILES[text]] if text in BARE_FILES else []))
        return Location(scheme=text, kind=text, path=str(bare.resolve()))
    scheme, sep, rest = text.partition(":")
    kind, plus, transport = scheme.partition("+")
    if not sep or kind not in CONNECTORS:
        raise UsageError(f"unknown store {uri!r}: expected one of {KNOWN_FORMS}")
    if plus and transport not in TRANSPORTS.get(kind, ()):
        allowed = " or ".join(TRANSPORTS.get(kind, ())) or "nothing"
        raise UsageError(f"unknown store {uri!r}: after '{kind}+' comes {allowed}")
    if scheme in POSTGRES_SCHEMES:
        return _parse_postgres(uri, scheme, kind, rest)
    if not plus or transport == "sqlite":
        path, _, query = rest.partition("?")
        if path.startswith("//"):
            raise UsageError(f"bad store {uri!r}: write {scheme}:PATH for a local store")
        if not path:
            raise UsageError(f"bad store {uri!r}: no path after '{scheme}:'")
        params = dict(parse_qsl(query))
        if transport == "sqlite" and not params.get("table"):
            raise UsageError(f"bad store {uri!r}: name the table, as in {scheme}:PATH?table=conversations")
        # A model file named through a symlink (a Hugging Face snapshot's model.safetensors -> ../../blobs/<sha>)
        # keeps the name it was given: only its folders are resolved.
        where = Path(path).expanduser()
        full = where.parent.resolve() / where.name if kind in NAMED_AS_GIVEN and where.name else where.resolve()
        return Location(scheme=scheme, kind=kind, path=str(full), params=params)
    parts = urlsplit(f"{transport}:{rest}")
    if not parts.hostname:
        raise UsageError(f"bad store {uri!r}: no host")
    if parts.username or parts.password:
        raise UsageError(f"bad store {uri!r}: put no credentials in the URI; set {kind.upper()}_API_KEY instead")
    try:
        port = parts.port or DEFAULT_PORTS[kind]
    except ValueError:
        raise UsageError(f"bad store {uri!r}: the port is not a number") from None
    return Location(
        scheme=scheme,
        kind=kind,
        host=parts.hostname,
        port=port,
        tls=transport == "https",
        params=dict(parse_qsl(parts.query)),
    )


def _parse_postgres(uri: str, scheme: str, kind: str, rest: str) -> Location:
    """``SCHEME://[USER@]HOST[:PORT]/DB[?…]`` or ``SCHEME:///DB?host=SOCKET_DIR`` (libpq's own defaults
    apply to what is left out: a socket dir from ``PGHOST``, the user from ``PGUSER`` or the login)."""
    if not rest.startswith("//"):
        raise UsageError(f"bad store {uri!r}: write {scheme}://[USER@]HOST[:PORT]/DATABASE")
    parts = urlsplit(f"postgresql:{rest}")
    if parts.password is not None:
        raise UsageError(
            f"bad store {uri.split('@', 1)[-1]!r}: put no password in the URI; set PGPASSWORD or use ~/.pgpass"
        )
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        raise UsageError(f"bad store {uri!r}: name one database after the host, as in {scheme}://HOST/DATABASE")
    params = dict(parse_qsl(parts.query))
    if scheme == "conversations+postgresql" and not params.get("table"):
        raise UsageError(f"bad store {uri!r}: name the table, as in {scheme}://HOST/DB?table=conversations")
    try:
        port = parts.port  # None: libpq's PGPORT, else 5432
    except ValueError:
        raise UsageError(f"bad store {uri!r}: the port is not a number") from None
    host = parts.hostname or None
    if host is None and not params.get("host"):
        raise UsageError(f"bad store {uri!r}: no host (write {scheme}:///{database}?host=/run/postgresql for a socket)")
    return Location(
        scheme=scheme,
        kind=kind,
        host=host,
        port=port,
        params=params,
        database=database,
        user=parts.username or None,
    )


def api_key(location: Location) -> str | None:
    """The API key for a server location, read from the environment (never from the URI)."""
    var = location.params.get("api_key_env", f"{location.kind.upper()}_API_KEY")
    return os.environ.get(var) or None


def connector_class(kind: str) -> type[Connector]:
    module_name, _, class_name = CONNECTORS[kind].partition(":")
    module = importlib.import_module(module_name)
    cls: type[Connector] = getattr(module, class_name)
    return cls


def open_connector(uri: str, *, target: bool = False, options: Mapping[str, Any] | None = None) -> Connector:
    """Open the store a URI names: as a source (`target` False: it must exist) or a restore target."""
    location = parse_location(uri, target=target)
    return connector_class(location.kind)(location, create=target, options=options)
