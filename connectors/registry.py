"""Connector URIs and the registry of connector kinds.

Each backend is one ``Backend`` entry in ``BACKENDS`` (its connector class as ``"module:Class"``, the
transports, default port, bare restore target, query parameters and URI forms it takes); every other table
here (CONNECTORS, TRANSPORTS, BARE_TARGETS, PARAMETERS, KNOWN_FORMS, ...) is derived from those entries.
Adding a backend is adding its folder under connectors/ and one entry. A backend's module is imported only
when its kind is used (``connector_class``), so an install without its client library still runs the rest.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from aibackup.connectors.base import Connector, Location
from aibackup.errors import UsageError


@dataclass(frozen=True)
class Backend:
    """Everything the registry knows of one kind of store; every table below is derived from these."""

    #: "module:Class", imported only when the kind is used, so a missing optional client only matters then
    connector: str
    #: how its URIs are written, as the "unknown store" message lists them (in this order)
    forms: tuple[str, ...]
    #: what may follow "KIND+": servers speak http(s) (and take ``default_port``); another transport names a
    #: local file (``conversations+sqlite:PATH``) unless listed in ``postgres_schemes``
    transports: tuple[str, ...] = ()
    default_port: int | None = None
    #: the bare kind is a restore target: an embedded store under DEFAULT_RESTORE_ROOT (in ``bare_file``
    #: there, for stores that are one file)
    bare_target: bool = False
    bare_file: str | None = None
    #: a PATH keeps its last component as written (not resolved through a symlink)
    named_as_given: bool = False
    #: its schemes written as PostgreSQL URLs: ``SCHEME://[USER@]HOST[:PORT]/DB`` or ``SCHEME:///DB?host=DIR``
    postgres_schemes: tuple[str, ...] = ()
    #: scheme -> the query parameters it takes. Anything else is refused: a parameter is never a credential
    #: (`?api_key=...` would end up in manifests and logs); keys come from the environment (api_key_env).
    parameters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: scheme -> the parameter it cannot do without, as an example (``table=conversations``)
    required: Mapping[str, str] = field(default_factory=dict)


_SERVER = ("http", "https")

#: kind -> its backend, in the order the "unknown store" message lists them. A new backend is a folder under
#: connectors/ and one entry here.
BACKENDS: Mapping[str, Backend] = {
    "chroma": Backend(
        connector="aibackup.connectors.chroma.connector:ChromaConnector",
        forms=("chroma:PATH", "chroma+http://HOST:PORT"),
        transports=_SERVER,
        default_port=8000,
        bare_target=True,
        parameters={
            "chroma": ("tenant", "database"),
            "chroma+http": ("tenant", "database", "api_key_env"),
            "chroma+https": ("tenant", "database", "api_key_env"),
        },
    ),
    "qdrant": Backend(
        connector="aibackup.connectors.qdrant.connector:QdrantConnector",
        forms=("qdrant:PATH", "qdrant+http://HOST:PORT"),
        transports=_SERVER,
        default_port=6333,
        bare_target=True,
        parameters={"qdrant+http": ("api_key_env",), "qdrant+https": ("api_key_env",)},
    ),
    "pgvector": Backend(
        connector="aibackup.connectors.pgvector.connector:PgvectorConnector",
        forms=("pgvector://HOST/DB",),
        postgres_schemes=("pgvector",),
        parameters={"pgvector": ("schema", "sslmode", "document", "host")},
    ),
    "lancedb": Backend(
        connector="aibackup.connectors.lancedb.connector:LanceDBConnector",
        forms=("lancedb:PATH",),
        bare_target=True,
        parameters={"lancedb": ("id",)},
    ),
    "milvus": Backend(
        connector="aibackup.connectors.milvus.connector:MilvusConnector",
        forms=("milvus:PATH", "milvus+http://HOST:PORT"),
        transports=_SERVER,
        default_port=19530,
        bare_target=True,
        bare_file="milvus.db",
        parameters={"milvus+http": ("api_key_env",), "milvus+https": ("api_key_env",)},
    ),
    "conversations": Backend(
        connector="aibackup.connectors.files.conversations:ConversationsConnector",
        forms=(
            "conversations:PATH",
            "conversations+sqlite:PATH?table=T",
            "conversations+postgresql://HOST/DB?table=T",
        ),
        transports=("sqlite", "postgresql"),
        postgres_schemes=("conversations+postgresql",),
        parameters={
            "conversations+sqlite": ("table",),
            "conversations+postgresql": ("table", "key", "schema", "sslmode", "host"),
        },
        required={"conversations+sqlite": "table=conversations", "conversations+postgresql": "table=conversations"},
    ),
    "finetune": Backend(
        connector="aibackup.connectors.files.finetune:FinetuneConnector",
        forms=("finetune:PATH",),
    ),
    "config": Backend(
        connector="aibackup.connectors.files.configfiles:ConfigConnector",
        forms=("config:PATH",),
    ),
    "model": Backend(
        connector="aibackup.connectors.model.connector:ModelConnector",
        forms=("model:PATH",),
        named_as_given=True,
    ),
}

# Derived views of BACKENDS, under the names other modules (and benchmarks) import.
CONNECTORS = {kind: backend.connector for kind, backend in BACKENDS.items()}
TRANSPORTS = {kind: backend.transports for kind, backend in BACKENDS.items() if backend.transports}
BARE_TARGETS = tuple(kind for kind, backend in BACKENDS.items() if backend.bare_target)
BARE_FILES = {kind: backend.bare_file for kind, backend in BACKENDS.items() if backend.bare_file}
NAMED_AS_GIVEN = tuple(kind for kind, backend in BACKENDS.items() if backend.named_as_given)
DEFAULT_PORTS = {kind: backend.default_port for kind, backend in BACKENDS.items() if backend.default_port}
POSTGRES_SCHEMES = tuple(scheme for backend in BACKENDS.values() for scheme in backend.postgres_schemes)
PARAMETERS = {scheme: names for backend in BACKENDS.values() for scheme, names in backend.parameters.items()}
REQUIRED = {scheme: example for backend in BACKENDS.values() for scheme, example in backend.required.items()}
DEFAULT_RESTORE_ROOT = "aibackup-restore"
KNOWN_FORMS = ", ".join(form for backend in BACKENDS.values() for form in backend.forms)


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
    if not target and location.path is not None:
        # The source's path is stored in the manifest and hashed into lock names, both UTF-8: refused here
        # as a name below it is (lines.refuse_unrestorable), not a crash once the backup has begun.
        try:
            location.path.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{location.path!a}: a name that is not UTF-8 cannot be backed up; rename it") from None
    return location


def _parse(uri: str, *, target: bool) -> Location:
    text = uri.strip()
    if target and text in BARE_TARGETS:
        bare = Path(DEFAULT_RESTORE_ROOT, text, *([BARE_FILES[text]] if text in BARE_FILES else []))
        return Location(scheme=text, kind=text, path=str(_resolved(bare, uri)))
    scheme, sep, rest = text.partition(":")
    kind, plus, transport = scheme.partition("+")
    if not sep or kind not in CONNECTORS:
        raise UsageError(f"unknown store {uri!r}: expected one of {KNOWN_FORMS}")
    if plus and transport not in TRANSPORTS.get(kind, ()):
        allowed = " or ".join(TRANSPORTS.get(kind, ())) or "nothing"
        raise UsageError(f"unknown store {uri!r}: after '{kind}+' comes {allowed}")
    if scheme in POSTGRES_SCHEMES:
        return _parse_postgres(uri, scheme, kind, rest)
    if transport not in _SERVER:  # none, or a local file (sqlite)
        path, _, query = rest.partition("?")
        if path.startswith("//"):
            raise UsageError(f"bad store {uri!r}: write {scheme}:PATH for a local store")
        if not path:
            raise UsageError(f"bad store {uri!r}: no path after '{scheme}:'")
        params = dict(parse_qsl(query))
        _require(uri, scheme, params, f"{scheme}:PATH")
        # A model file named through a symlink (a Hugging Face snapshot's model.safetensors -> ../../blobs/<sha>)
        # keeps the name it was given: only its folders are resolved.
        where = Path(os.path.expanduser(path))  # ~nouser stays as written, as in a shell
        full = (
            _resolved(where.parent, uri) / where.name
            if kind in NAMED_AS_GIVEN and where.name
            else _resolved(where, uri)
        )
        return Location(scheme=scheme, kind=kind, path=str(full), params=params)
    parts = _split(uri, f"{transport}:{rest}")
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
    parts = _split(uri, f"postgresql:{rest}")
    if parts.password is not None:
        raise UsageError(
            f"bad store {uri.split('@', 1)[-1]!r}: put no password in the URI; set PGPASSWORD or use ~/.pgpass"
        )
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        raise UsageError(f"bad store {uri!r}: name one database after the host, as in {scheme}://HOST/DATABASE")
    params = dict(parse_qsl(parts.query))
    _require(uri, scheme, params, f"{scheme}://HOST/DB")
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


def _resolved(path: Path, uri: str) -> Path:
    """``path.resolve()``, with a symlink loop on the way a usage error naming the URI: Python 3.11's
    resolve raises RuntimeError for one, which would end as "internal error"."""
    try:
        return path.resolve()
    except RuntimeError:
        raise UsageError(f"bad store {uri!r}: {path} is a symlink loop (too many levels of symbolic links)") from None


def _split(uri: str, url: str) -> SplitResult:
    """``urlsplit(url)``, with what it refuses (``Invalid IPv6 URL``: an unclosed ``[``) a usage error naming
    the URI, as the repository URL's own parse does."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"bad store {uri!r}: not a URL ({exc})") from None


def _require(uri: str, scheme: str, params: Mapping[str, str], written: str) -> None:
    """Refuse a URI without the parameter its scheme cannot do without (REQUIRED)."""
    example = REQUIRED.get(scheme)
    if example is not None and not params.get(example.partition("=")[0]):
        raise UsageError(f"bad store {uri!r}: name the {example.partition('=')[0]}, as in {written}?{example}")


def api_key(location: Location) -> str | None:
    """The API key for a server location, read from the environment (never from the URI)."""
    var = location.params.get("api_key_env", f"{location.kind.upper()}_API_KEY")
    return os.environ.get(var) or None


def connector_class(kind: str) -> type[Connector]:
    module_name, _, class_name = BACKENDS[kind].connector.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Connector] = getattr(module, class_name)
    return cls


def open_connector(uri: str, *, target: bool = False, options: Mapping[str, Any] | None = None) -> Connector:
    """Open the store a URI names: as a source (`target` False: it must exist) or a restore target."""
    location = parse_location(uri, target=target)
    return connector_class(location.kind)(location, create=target, options=options)
