"""Serving a Milvus Lite folder from this process, and turning what pymilvus raises into aibackup's errors
(the connector: :mod:`.connector`).

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
from pathlib import Path

from aibackup.errors import (
    AibackupError,
    ConnectorError,
    ConnectorNotInstalledError,
    DatasetNotFoundError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
    first_line,
)

TOKEN_ENV = "MILVUS_TOKEN"
#: Loggers of pymilvus, of Milvus Lite and of the gRPC server Milvus Lite runs in this process (which logs
#: the calls Milvus Lite does not implement with a traceback): the user sees aibackup's one line instead.
CLIENT_LOGGERS = ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer", "milvus_lite", "grpc._server")

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
            folder.mkdir(parents=True, exist_ok=True)
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
