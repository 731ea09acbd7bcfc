"""Storage: exclusive commits and hashing writes, on local disk and on S3 (moto's server over HTTP)."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import boto3
import pytest

from aibackup.errors import ConfigError, UnavailableError, UsageError
from aibackup.hashing_writer import HashingWriter
from aibackup.storage import AlreadyExistsError, Storage
from tests.conftest import Server, free_port
from tests.helpers import Cli, one_line_error


def make_bucket(name: str) -> None:
    boto3.client("s3").create_bucket(Bucket=name)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "repo"))
    request.getfixturevalue("s3_env")
    bucket = f"b-{request.node.name.split('[')[0].replace('_', '-')[-40:]}".lower()
    make_bucket(bucket)
    return Storage(f"s3://{bucket}/some/prefix")


def test_exclusive_write_never_replaces(storage: Storage) -> None:
    storage.write_exclusive("bundles/a.json", b"first")
    with pytest.raises(AlreadyExistsError):
        storage.write_exclusive("bundles/a.json", b"second")
    assert storage.read_bytes("bundles/a.json") == b"first"
    assert storage.list_names("bundles") == ["a.json"]
    # The same bytes again are the retry of a write whose answer was lost: it counts as written.
    storage.write_exclusive("bundles/a.json", b"first")
    assert storage.list_names("bundles") == ["a.json"]


def test_part_is_hashed_while_written(storage: Storage) -> None:
    payload = b"x" * 3_000_000 + b"tail"
    writer = storage.create("data/b/part-00000.parquet")
    for i in range(0, len(payload), 1 << 20):
        writer.write(payload[i : i + (1 << 20)])
    storage.close_part(writer, "data/b/part-00000.parquet")
    assert writer.sha256 == hashlib.sha256(payload).hexdigest()
    assert writer.bytes == len(payload)
    assert storage.hash_file("data/b/part-00000.parquet") == (writer.sha256, len(payload))
    # Local disk refuses at open; S3 (If-None-Match: *) refuses when the upload completes.
    with pytest.raises(AlreadyExistsError):
        again = storage.create("data/b/part-00000.parquet")
        again.write(b"other bytes")
        storage.close_part(again, "data/b/part-00000.parquet")
    assert storage.hash_file("data/b/part-00000.parquet") == (writer.sha256, len(payload))


def test_the_write_hook_follows_every_chunk_in_the_background_thread(tmp_path: Path) -> None:
    """Local parts use the hook to start write-back as they go (so the final fsync waits for little)."""
    seen: list[tuple[int, str]] = []
    raw = open(tmp_path / "p", "wb")  # noqa: SIM115 - owned by the writer
    writer = HashingWriter(raw, on_write=lambda f: seen.append((f.tell(), threading.current_thread().name)))
    for _ in range(3):
        writer.write(b"y" * 1000)
    writer.close()
    assert seen == [(1000, "aibackup-part-writer"), (2000, "aibackup-part-writer"), (3000, "aibackup-part-writer")]
    assert (tmp_path / "p").read_bytes() == b"y" * 3000


def test_a_write_error_of_the_background_writer_reaches_the_caller() -> None:
    """Writing happens in a background thread; a full disk (here /dev/full) must still fail the part."""
    writer = HashingWriter(open("/dev/full", "wb", buffering=0))  # noqa: SIM115 - owned by the writer
    with pytest.raises(OSError, match="No space left"):
        for _ in range(8):
            writer.write(b"x" * (1 << 20))
        writer.close()
    writer.abort()  # what the bundle writer does on any error
    assert writer.closed
    assert not [t for t in threading.enumerate() if t.name == "aibackup-part-writer"]


def test_late_writes_after_abort_are_discarded_and_after_close_refused(tmp_path: Path) -> None:
    """pyarrow's buffered stream flushes into the part when it is garbage-collected, after the bundle
    writer aborted it: that write must not start a writer thread nobody stops, nor reach the file."""
    aborted = HashingWriter(open(tmp_path / "a", "wb"))  # noqa: SIM115 - owned by the writer
    aborted.write(b"x" * 100)
    aborted.abort()
    assert aborted.write(b"late") == 4
    assert not [t for t in threading.enumerate() if t.name == "aibackup-part-writer"]
    assert (tmp_path / "a").read_bytes() == b"x" * 100
    closed = HashingWriter(open(tmp_path / "b", "wb"))  # noqa: SIM115 - owned by the writer
    closed.write(b"y")
    closed.close()
    with pytest.raises(ValueError, match="closed part"):
        closed.write(b"late")


def test_aborted_part_leaves_nothing_on_s3_and_a_stray_file_locally(storage: Storage) -> None:
    writer = storage.create("data/c/part-00000.parquet")
    writer.write(b"partial")
    writer.abort()
    # S3: the upload never completes, so no object. Local: the partial file is an unreferenced orphan.
    assert storage.exists("data/c/part-00000.parquet") == storage.is_local


def test_empty_location_is_detected(storage: Storage) -> None:
    assert storage.is_empty_or_missing()
    storage.write_exclusive("aibackup.json", b"{}")
    assert not storage.is_empty_or_missing()


@pytest.mark.s3
def test_missing_bucket_is_unavailable(s3_env: Server) -> None:
    storage = Storage("s3://no-such-bucket-here/repo")
    with pytest.raises(UnavailableError, match="'no-such-bucket-here' does not exist"):
        storage.ensure_reachable()
    make_bucket("a-bucket-that-exists")
    Storage("s3://a-bucket-that-exists/repo").ensure_reachable()


def test_unreachable_endpoint_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    storage = Storage("s3://bucket/repo")
    with pytest.raises(UnavailableError, match="cannot reach"):
        storage.exists("aibackup.json")


@pytest.mark.parametrize("url", ["", "ftp://host/x", "s3://"])
def test_bad_locations_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        Storage(url)


@pytest.mark.s3
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://b-odd-url//ai", "an empty folder name"),
        ("s3:///ai", "an empty bucket name"),
        ("s3://b-odd-url/ai?region=eu-west-1&region=us-east-1", "option 'region' given twice"),
    ],
)
def test_a_url_that_would_put_bundles_where_no_listing_finds_them_is_refused(
    url: str, problem: str, s3_env: Server, cli: Cli, tmp_path: Path
) -> None:
    """`s3://$BUCKET/$PREFIX` with PREFIX=/ai: each backup said "committed" (its keys began with `/ai/`),
    list said "no bundles yet", verify "ok: 0 bundle(s)", restore "no bundle", every night exit 0. And
    `s3:///ai` took ai for the bucket; of a repeated option, the last one silently won."""
    if "b-odd-url" not in {b["Name"] for b in boto3.client("s3").list_buckets().get("Buckets", [])}:
        make_bucket("b-odd-url")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text('{"role": "user", "content": "hi"}\n')
    with pytest.raises(UsageError, match=re.escape(problem)):
        Storage(url)
    one_line_error(cli("backup", f"conversations:{logs}", "--repo", url), 2, problem)
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="b-odd-url")


def test_same_place_is_where_a_repository_is_not_how_it_is_written(tmp_path: Path) -> None:
    """Copy's "itself" check and the config's metrics file go by it: `./r`, `r/.` and a link to r are r; an
    S3 repository is its bucket and prefix on its endpoint, whatever options reach it."""
    (tmp_path / "r").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "r")
    here = Storage(str(tmp_path / "r"))
    for same in (f"{tmp_path}/r/.", f"{tmp_path}/r/", str(tmp_path / "link"), f"file://{tmp_path}/r"):
        assert here.same_place(Storage(same)), same
    assert not here.same_place(Storage(str(tmp_path / "other")))
    bucket = Storage("s3://bucket/prefix")
    for same in ("s3://bucket/prefix/", "s3://bucket/prefix?sse=AES256", "s3://bucket/prefix?region=eu-west-1"):
        assert bucket.same_place(Storage(same)), same
    for other in ("s3://bucket/other", "s3://bucket/prefix?endpoint=http://127.0.0.1:9", str(tmp_path / "r")):
        assert not bucket.same_place(Storage(other)), other
    assert not here.same_place(bucket)
    on = Storage("s3://bucket/prefix?endpoint=http://s3.local:9000")
    for same in (
        "s3://bucket/prefix?endpoint=http://s3.local:9000/",
        "s3://bucket/prefix?endpoint=HTTP://S3.Local:9000",
    ):
        assert on.same_place(Storage(same)), same
    assert not on.same_place(Storage("s3://bucket/prefix?endpoint=http://s3.local:9001"))
    default = Storage("s3://bucket/prefix?endpoint=https://s3.local")
    assert default.same_place(Storage("s3://bucket/prefix?endpoint=https://s3.local:443/"))
    assert not default.same_place(Storage("s3://bucket/prefix?endpoint=http://s3.local"))


def test_an_s3_location_is_shown_with_its_own_endpoint() -> None:
    """What a message names can be pasted back into ``--repo`` and reach the same place (see
    ``Storage.display``); the environment's endpoint is the user's own and not shown."""
    on = Storage("s3://bucket/prefix?endpoint=http://s3.local:9000&region=eu-west-1&sse=AES256")
    assert on.display() == "s3://bucket/prefix?endpoint=http://s3.local:9000"
    assert on.display("data/b/part.parquet") == "s3://bucket/prefix/data/b/part.parquet?endpoint=http://s3.local:9000"
    assert Storage(on.display()).same_place(on)
    assert Storage("s3://bucket/prefix?region=eu-west-1").display("x") == "s3://bucket/prefix/x"


def test_credentials_in_an_endpoint_are_refused_without_being_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore cannot use them (its requests fail deep inside: exit 70 before) and messages must not carry
    them: the repository URL's and the environment's endpoint alike."""
    with pytest.raises(UsageError) as caught:
        Storage("s3://bucket/prefix?endpoint=https://me:hunter2@s3.local&region=eu-west-1")
    assert "hunter2" not in str(caught.value) and "***@s3.local" in str(caught.value)
    assert Storage("s3://bucket/a@b").display("x") == "s3://bucket/a@b/x"  # an @ in a prefix is a name
    # %-encoded in the URL, a / in the password (urllib then fails on the "port" and quotes it), both
    for url in (
        "s3://bucket/prefix?endpoint=https%3A%2F%2Fme%3Ahunter2%40s3.local",
        "s3://bucket/prefix?endpoint=https://me:hun%2Fter2@s3.local",
        "s3://bucket/prefix?endpoint=https://me:hun/ter2@s3.local",
    ):
        with pytest.raises(UsageError) as caught:
            Storage(url)
        assert "ter2" not in str(caught.value) and "***@s3.local" in str(caught.value), str(caught.value)
    for endpoint in ("https://me:hunter2@s3.local", "https://me:hun/ter2@s3.local"):
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        with pytest.raises(ConfigError) as caught_env:
            Storage("s3://bucket/prefix").fs  # noqa: B018 - reaching for the client reads the environment
        assert "ter2" not in str(caught_env.value) and "AWS_ENDPOINT_URL" in str(caught_env.value)
