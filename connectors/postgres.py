"""PostgreSQL sessions for the connectors that live there (``pgvector://``, ``conversations+postgresql://``):
opening one from a :class:`Location`, and wording psycopg's errors as aibackup's one-line errors.

The password is never part of a URI: libpq reads ``PGPASSWORD``, ``PGPASSFILE`` or ``~/.pgpass`` itself
(and ``PGSSLMODE``, ``PGCONNECT_TIMEOUT`` and the other ``PG*`` variables for whatever the URI leaves
out), so aibackup never holds it and no message can print it.

Exit codes (aibackup.errors): a server that does not answer, refuses the user or the password, or drops
the connection is :class:`UnavailableError` (3, "the server, not the data"); a database, schema or table
that is not there is :class:`DatasetNotFoundError` (2); psycopg missing is ConnectorNotInstalledError (2).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aibackup.connectors.base import Location, client_errors
from aibackup.errors import (
    AibackupError,
    ConnectorError,
    ConnectorNotInstalledError,
    DatasetNotFoundError,
    SourceDataError,
    UnavailableError,
)

if TYPE_CHECKING:
    import psycopg

#: Seconds libpq waits for a server before giving up (PGCONNECT_TIMEOUT overrides: libpq reads it when
#: the keyword is absent, so the default is only set where the variable is not).
CONNECT_TIMEOUT_S = 10
#: The phrases of libpq's connection failures that mean "this user may not in": wrong or missing
#: password, unknown role, pg_hba refusal. Said as such, still exit 3 (the server, not the data).
AUTH_PHRASES = ("password authentication failed", "no password supplied", "does not exist", "pg_hba.conf")


def require_psycopg() -> Any:
    """The psycopg module, or ConnectorNotInstalledError naming the extra."""
    try:
        import psycopg
    except ImportError:
        raise ConnectorNotInstalledError(
            "the PostgreSQL connectors need psycopg 3: pip install 'aibackup[pgvector]'"
        ) from None
    return psycopg


def where(location: Location) -> str:
    """The server and database as the user wrote them, for messages (no password is ever in it)."""
    return location.display()


def connect(location: Location, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to the location's database: host or socket folder (``?host=``), port, user,
    ``?sslmode=``; libpq's environment fills the rest. Raises UnavailableError (no answer, refused
    credentials), DatasetNotFoundError (no such database), ConnectorNotInstalledError."""
    import os

    pg = require_psycopg()
    kwargs: dict[str, Any] = {"dbname": location.database, "autocommit": autocommit}
    if location.port is not None:  # else libpq's PGPORT or 5432
        kwargs["port"] = location.port
    host = location.host or location.params.get("host")
    if host:
        kwargs["host"] = host
    if location.user:
        kwargs["user"] = location.user
    if "sslmode" in location.params:
        kwargs["sslmode"] = location.params["sslmode"]
    if "PGCONNECT_TIMEOUT" not in os.environ:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
    with errors(location, "connecting"):
        connection: psycopg.Connection[Any] = pg.connect(**kwargs)
    return connection


@contextmanager
def errors(location: Location, action: str, table: str | None = None) -> Iterator[None]:
    """Run psycopg calls: its exceptions become one-line aibackup errors naming the store (and table)."""
    with client_errors(lambda exc: translate(exc, location, action, table)):
        yield


def translate(exc: BaseException, location: Location, action: str, table: str | None = None) -> AibackupError | None:
    """The aibackup error for a psycopg exception (None: not psycopg's, let it pass)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - connect() already required it
        return None
    if not isinstance(exc, psycopg.Error):
        return None
    store = where(location)
    subject = f"table {table} in {store}" if table else store
    detail = message(exc)
    if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
        # No SQLSTATE: libpq's own failure (connecting, or the connection dropped).
        if f'database "{location.database}" does not exist' in detail:
            return DatasetNotFoundError(f"database {location.database!r} does not exist on {store}")
        if any(phrase in detail for phrase in AUTH_PHRASES):
            return UnavailableError(f"PostgreSQL at {store} refused the connection: {detail}")
        return UnavailableError(f"PostgreSQL at {store} is unreachable while {action}: {detail}")
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate in ("42P01", "3F000"):  # undefined_table, invalid_schema_name
        return DatasetNotFoundError(f"{action}: {detail} ({store})")
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):  # connection gone, server down
        return UnavailableError(f"PostgreSQL at {store} went away while {action}: {detail}")
    if sqlstate.startswith("22") or sqlstate.startswith("23"):  # data exception, integrity violation
        return SourceDataError(f"{action} {subject}: {detail}")
    return ConnectorError(f"{action} {subject}: {detail}")


def message(exc: BaseException) -> str:
    """psycopg's message on one line, without libpq's "connection failed: …" and severity prefixes."""
    text = " ".join(str(exc).split())
    for prefix in ("connection failed: ",):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.replace("FATAL: ", "").replace("ERROR: ", "")
    # libpq appends a hint ("Is the server running on that host…") to refused connections: keep the cause.
    # libpq adds a hint to refused connections, the server a "LINE n: …" excerpt to statement errors.
    return text.split(" Is the server running")[0].split(" LINE ")[0].strip()
