"""The lancedb database the LanceDB connector (:mod:`.connector`) talks through: :class:`Database`, one
database folder opened with ``lancedb.connect``, its tables listed and opened (at a version), every call's
exceptions (a Rust panic too) turned into one-line aibackup errors and its warnings silenced.

lancedb is an optional extra; its Rust log is set to errors only (``LANCEDB_LOG``, unless set) so that its
warnings do not fill the one line a user reads.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from aibackup.connectors.base import Location, client_errors
from aibackup.errors import (
    AibackupError,
    ConnectorError,
    ConnectorNotInstalledError,
    DatasetNotFoundError,
    UsageError,
    first_line,
)

#: Table names per ``list_tables`` page.
TABLE_PAGE = 1000


class Database:
    """A LanceDB database folder through lancedb: every call runs in :meth:`errors`.

    lancedb is imported and connected on first use (:meth:`live`): importing it takes about a second (its
    generated namespace client), which a partitioned backup's or restore's worker, reading or writing
    fragments through pylance alone, never pays."""

    def __init__(self, location: Location, *, create: bool) -> None:
        """Open (with `create`: make) the folder. A source path that does not exist raises
        DatasetNotFoundError, a path that is a file UsageError; no lancedb, ConnectorNotInstalledError."""
        os.environ.setdefault("LANCEDB_LOG", "error")  # read once, when lancedb's Rust part loads
        if importlib.util.find_spec("lancedb") is None:
            raise ConnectorNotInstalledError("the LanceDB connector needs lancedb: pip install 'aibackup[lancedb]'")
        self.where = location.display()
        path = Path(str(location.path))
        if path.exists() and not path.is_dir():
            raise UsageError(f"{self.where}: {path} is a file, not a LanceDB database folder")
        if not create and not path.exists():
            raise DatasetNotFoundError(f"LanceDB database {path} does not exist")
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create the LanceDB database folder {path}: {exc.strerror}") from None
        self.path = path
        self._db: Any = None
        self._closed = False

    @property
    def version(self) -> str:
        """lancedb's version."""
        import lancedb

        return str(lancedb.__version__)

    def close(self) -> None:
        db, self._db, self._closed = self._db, None, True
        if db is not None:
            with suppress(Exception):  # closing is best effort
                db.close()

    def live(self) -> Any:
        """The lancedb connection (made on first use); UsageError once closed."""
        if self._closed:
            raise UsageError(f"the connection to {self.where} is closed")
        if self._db is None:
            import lancedb

            with self.errors("open the database"):
                self._db = lancedb.connect(str(self.path))
        return self._db

    def table_uri(self, name: str) -> str:
        """Where table `name`'s Lance dataset is (pylance opens it there)."""
        return str(self.path / f"{name}.lance")

    def table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            with self.errors("list tables"):
                page = self.live().list_tables(page_token=token, limit=TABLE_PAGE)
            names += list(page.tables)
            token = page.page_token
            if not token or not page.tables:
                return names

    def open(self, name: str, version: int | None, *, missing_ok: bool = False) -> Any:
        """Table `name` (at `version`, read-only, when given); DatasetNotFoundError or None when missing."""
        try:
            with self.errors("open the table", name):
                table = self.live().open_table(name)
                if version is not None:
                    table.checkout(version)
                return table
        except DatasetNotFoundError:
            if missing_ok:
                return None
            raise

    @contextmanager
    def errors(self, what: str, table: str | None = None) -> Iterator[None]:
        """Every call into lancedb runs in here: its exceptions (a Rust panic too) become one aibackup error
        with one line, and its deprecation warnings are silenced."""

        def translate(exc: BaseException) -> AibackupError | None:
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                return None  # KeyboardInterrupt, GeneratorExit, ...
            text = first_line(exc)
            if table is not None and isinstance(exc, ValueError) and "was not found" in text:
                return DatasetNotFoundError(f"table {table!r} not found in {self.where}")
            subject = f"table {table!r} in {self.where}" if table else self.where
            return ConnectorError(f"LanceDB could not {what} ({subject}): {text}")

        with client_errors(translate), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
