"""The pymilvus client the Milvus connector (:mod:`.connector`) talks through: :class:`Store`, one store
opened with pymilvus's ``MilvusClient`` (every call's errors translated by :func:`translate`) and the
collection operations the connector runs on it; serving a Milvus Lite folder from this process.

Milvus Lite (milvus-lite 3.x) serves a folder from a thread of the process that opens it, one server per
folder (pymilvus's ``server_manager``), and holds the folder's LOCK while it does. Connectors opening the
same folder share the server; the last one to close stops the server it started (one that someone else in
this process started, an application's own client say, is left running).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from itertools import pairwise
from pathlib import Path
from typing import Any

from aibackup.connectors.base import Location, client_errors
from aibackup.connectors.milvus.schema import Layout, build_schema, layout_of, native_of
from aibackup.errors import (
    AibackupError,
    ConnectorError,
    ConnectorNotInstalledError,
    DatasetNotFoundError,
    SourceDataError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
    first_line,
)

TOKEN_ENV = "MILVUS_TOKEN"
#: Loggers of pymilvus, of Milvus Lite and of the gRPC server Milvus Lite runs in this process (which logs
#: the calls Milvus Lite does not implement with a traceback): the user sees aibackup's one line instead.
CLIENT_LOGGERS = ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer", "milvus_lite", "grpc._server")

CONNECT_TIMEOUT_S = 10

_lock = threading.Lock()
_users: Counter[str] = Counter()
_started: set[str] = set()


def quiet_client_logs() -> None:
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def start_lite(path: str, *, create: bool) -> tuple[str, str]:
    """Serve the Milvus Lite folder `path` (or join its server): its ``http://127.0.0.1:PORT`` URI and the
    key to give :func:`stop_lite`. A source (`create` False) that is missing or holds no store raises
    DatasetNotFoundError; a file, UsageError; a folder another process serves, UnavailableError."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(
            f"{path} is a file, not a Milvus Lite store: milvus-lite 3 keeps a store in a folder at its .db "
            f"path (a milvus-lite 2.x file is not readable by it)"
        )
    if not create and not (folder / "collections").is_dir():
        if not folder.exists():
            raise DatasetNotFoundError(f"Milvus Lite store {path} does not exist")
        raise DatasetNotFoundError(f"{path} holds no Milvus Lite store (no collections folder)")
    try:
        from milvus_lite.server_manager import server_manager_instance as manager
    except ImportError:
        raise ConnectorNotInstalledError(
            "the Milvus connector needs milvus-lite for milvus:PATH stores: pip install 'aibackup[milvus]'"
        ) from None
    found = _lite_version()
    if found is not None and found < (3, 0):
        raise ConnectorNotInstalledError(
            f"the Milvus connector needs milvus-lite 3 for milvus:PATH stores (found {'.'.join(map(str, found))}): "
            f"pip install 'milvus-lite>=3.2,<4'"
        )
    key = os.path.abspath(path)
    with _lock:
        running = key in getattr(manager, "_servers", {})
        if not running:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file where a folder of the path belongs: bad input, as in lancedb's target
                raise UsageError(f"cannot create the Milvus Lite folder {path}: {exc.strerror}") from None
            _check_unlocked(folder, path)
        uri = manager.start_and_get_uri(key)
        if uri is None:
            raise ConnectorError(f"Milvus Lite could not open {path}")
        if not running:
            _started.add(key)
        _users[key] += 1
    return str(uri), key


def stop_lite(key: str) -> None:
    """One user of the folder's server fewer; the last one stops the server if :func:`start_lite` started it."""
    with _lock:
        _users[key] -= 1
        if _users[key] > 0:
            return
        del _users[key]
        if key in _started:
            _started.discard(key)
            from milvus_lite.server_manager import server_manager_instance as manager

            manager.release_server(key)


def _check_unlocked(folder: Path, path: str) -> None:
    """UnavailableError if another process serves the Milvus Lite folder (its LOCK file is flocked)."""
    lock = folder / "LOCK"
    if not lock.exists():
        return
    with open(lock, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UnavailableError(
                f"Milvus Lite store {path} is in use by another process (Milvus Lite serves a folder to one "
                f"process at a time): stop that process first, or serve the store with a Milvus server"
            ) from None
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _lite_version() -> tuple[int, ...] | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return tuple(int(part) for part in version("milvus-lite").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return None


def faiss_available() -> bool:
    """Whether Milvus Lite builds real HNSW indexes here (without faiss its AUTOINDEX scans every record)."""
    try:
        from milvus_lite.index.factory import is_faiss_available
    except ImportError:
        return False
    return bool(is_faiss_available())


def escaped(key: str) -> str:
    """A VARCHAR key written inside a double-quoted Milvus filter string (Milvus Lite and a server's parser
    both take these escapes)."""
    for raw, escape in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        key = key.replace(raw, escape)
    return key


def translate(exc: BaseException, where: str, action: str, collection: str | None) -> AibackupError | None:
    """The one-line aibackup error for what pymilvus raised while doing `action` (None: not a client error)."""
    from pymilvus.exceptions import (
        ConnectionConfigException,
        DataNotMatchException,
        MilvusException,
        MilvusUnavailableException,
        ParamError,
    )

    text = first_line(exc)
    if isinstance(exc, MilvusException):
        text = first_line(Exception(getattr(exc, "message", "") or text))
    lower = text.lower()
    if isinstance(exc, ConnectionConfigException | MilvusUnavailableException) or any(
        s in lower for s in ("fail connecting", "server unavailable", "connection refused", "deadline exceeded")
    ):
        return UnavailableError(f"Milvus at {where} does not answer ({action}): {text}")
    if any(s in lower for s in ("authenticat", "unauthenticated", "permission denied", "token")):
        return UnavailableError(
            f"Milvus at {where} denied {action}: check the token ({TOKEN_ENV}, or the variable named by ?api_key_env=)"
        )
    if isinstance(exc, MilvusException):
        missing = "not exist" in lower or "not found" in lower or getattr(exc, "code", None) == 100
        if collection is not None and missing and "collection" in lower:
            return DatasetNotFoundError(f"collection {collection!r} not found in {where}")
        if isinstance(exc, ParamError | DataNotMatchException) or getattr(exc, "code", None) in (1, 6, 65535):
            return UnsupportedFeatureError(f"Milvus {where} refused {action}: {text}")
        return ConnectorError(f"Milvus {action} failed in {where}: {text}")
    if isinstance(exc, OSError):
        return UnavailableError(f"Milvus store {where}: {action} failed: {text}")
    try:
        import grpc
    except ImportError:  # pragma: no cover - pymilvus depends on grpcio
        return None
    if isinstance(exc, grpc.RpcError):
        return UnavailableError(f"Milvus at {where} failed {action}: {text}")
    return None


class Store:
    """One Milvus store, Milvus Lite served from this process or a server, through pymilvus's ``MilvusClient``:
    every call runs in :meth:`errors`, and the collection operations the connector needs (describe, count,
    load, read in pages, create) are here."""

    def __init__(self, location: Location, *, create: bool) -> None:
        """Connect. A source (`create` False) path that is missing or holds no Milvus Lite store raises
        DatasetNotFoundError; a folder served by another process, or a server that does not answer (within
        CONNECT_TIMEOUT_S) or refuses the token, raises UnavailableError; no pymilvus,
        ConnectorNotInstalledError."""
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise ConnectorNotInstalledError(
                "the Milvus connector needs pymilvus: pip install 'aibackup[milvus]'"
            ) from None
        quiet_client_logs()
        self.lite = not location.is_server
        self.where = location.display()
        self._client: Any = None
        self._lite_path: str | None = None
        self.loaded: set[str] = set()  # server collections this store loaded (released at close)
        if self.lite:
            uri, self._lite_path = start_lite(str(location.path), create=create)
            token = ""
        else:
            scheme = "https" if location.tls else "http"
            uri = f"{scheme}://{location.host}:{location.port}"
            token = os.environ.get(location.params.get("api_key_env", TOKEN_ENV)) or ""
        try:
            with self.errors("connecting"):
                self._client = MilvusClient(uri=uri, token=token, timeout=CONNECT_TIMEOUT_S)
                self._client.list_collections()
        except AibackupError:
            self.close()
            raise

    def require(self) -> Any:
        """The pymilvus client; ConnectorError once closed."""
        if self._client is None:
            raise ConnectorError(f"the connection to {self.where} is closed")
        return self._client

    @contextmanager
    def errors(self, action: str, collection: str | None = None) -> Iterator[None]:
        """Turn what pymilvus raises into one-line aibackup errors (never a client's traceback)."""
        with client_errors(lambda exc: translate(exc, self.where, action, collection)):
            yield

    def native(self, name: str) -> dict[str, Any]:
        """The ``native`` description of collection `name`, read now."""
        client = self.require()
        with self.errors(f"reading collection {name!r}", name):
            info = client.describe_collection(name)
            indexes = []
            for index_name in client.list_indexes(name):
                described = client.describe_index(name, index_name)
                if described:
                    indexes.append(described)
            partitions = client.list_partitions(name)
        return native_of(info, indexes, partitions, lite=self.lite)

    def count(self, name: str) -> int:
        """Exact rows of collection `name` (a server collection that is not loaded: its statistics' count)."""
        client = self.require()
        with self.errors(f"counting collection {name!r}", name):
            if not self.lite and not self.is_loaded(name):
                return int(client.get_collection_stats(name).get("row_count", 0))
            result = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(result[0]["count(*)"])

    def is_loaded(self, name: str) -> bool:
        with self.errors(f"reading collection {name!r}", name):
            state = self.require().get_load_state(name).get("state")
        return str(getattr(state, "name", state)) == "Loaded"

    def ensure_loaded(self, name: str) -> None:
        if self.is_loaded(name):
            return
        with self.errors(f"loading collection {name!r}", name):
            self.require().load_collection(name)
        if not self.lite:
            self.loaded.add(name)

    def pages(
        self, name: str, layout: Layout, rows: int, partition: str | None, *, full: bool, expr: str = ""
    ) -> Iterator[list[dict[str, Any]]]:
        """Non-empty query-iterator pages of a collection (or one partition; only the records of filter
        `expr`, when given) in primary-key order: every field, or (`full` False) the primary key only.
        SourceDataError if keys do not come strictly increasing (a record read twice or the cursor lost)."""
        client = self.require()
        pk = layout.pk.name
        with self.errors(f"reading collection {name!r}", name):
            iterator = client.query_iterator(
                name,
                batch_size=rows,
                filter=expr,
                output_fields=layout.output_fields if full else [pk],
                partition_names=[partition] if partition else None,
                strict_float32=True,  # vectors as float32 numpy views of the page, not lists of floats
            )
        try:
            last: Any = None
            while True:
                with self.errors(f"reading collection {name!r}", name):
                    page = iterator.next()
                if not page:
                    return
                keys = [r[pk] for r in page]
                if (last is not None and not last < keys[0]) or any(a >= b for a, b in pairwise(keys)):
                    raise SourceDataError(
                        f"Milvus collection {name!r} in {self.where}: the query iterator returned primary keys "
                        f"out of order (after {last!r}); nothing was backed up from it"
                    )
                last = keys[-1]
                if isinstance(last, str) and hasattr(iterator, "_next_id"):
                    # pymilvus writes the next page's filter as `pk > "<last>"` without escaping it: a key
                    # holding a quote or backslash would end the string early (a failed or repeated page).
                    iterator._next_id = escaped(last)
                yield page
        finally:
            with suppress(Exception):
                iterator.close()

    def create(self, name: str, native: Mapping[str, Any]) -> None:
        """Create collection `name` as `native` describes it, with its properties and partitions."""
        client = self.require()
        kwargs: dict[str, Any] = {}
        if native.get("properties"):
            kwargs["properties"] = dict(native["properties"])
        if native.get("consistency_level"):
            kwargs["consistency_level"] = native["consistency_level"]
        if native.get("num_partitions"):
            kwargs["num_partitions"] = int(native["num_partitions"])
        with self.errors(f"creating collection {name!r}", name):
            client.create_collection(name, schema=build_schema(native), **kwargs)
            for partition in layout_of(native).partitions:
                if not client.has_partition(name, partition):
                    client.create_partition(name, partition)

    def close(self) -> None:
        """Release the server collections this store loaded, close the client, and stop the Milvus Lite
        server it started once no other store uses it. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            for name in sorted(self.loaded):
                with suppress(Exception):
                    client.release_collection(name)
            self.loaded.clear()
            with suppress(Exception):
                client.close()
        key, self._lite_path = self._lite_path, None
        if key is not None:
            stop_lite(key)
