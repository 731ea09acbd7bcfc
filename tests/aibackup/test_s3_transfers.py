"""S3 at full speed (issue 20): parts go up as parallel multipart uploads (exclusive, aborted without a
trace), objects come down as concurrent ranged reads (a read that breaks off is asked again), a restore and
`verify --read-data` download each part once (a local spool serves the later passes), a backup reads
nothing back from S3, and a repository URL may name its own endpoint (a second "region": a second moto
server). Everything runs against moto's real S3 server; only the fault proxy misbehaves on purpose."""

from __future__ import annotations

import errno
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from aibackup import reports, spool
from aibackup.errors import UnavailableError
from aibackup.repository import MANIFESTS_AT_ONCE, Repository
from aibackup.storage import AlreadyExistsError, Storage
from tests.conftest import Server
from tests.faultproxy import FaultProxy
from tests.helpers import Cli, ok, one_line_error, seed_chroma

pytestmark = pytest.mark.s3

MIB = 1024 * 1024


def _bucket(name: str, endpoint: str | None = None) -> str:
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def _uploads(bucket: str) -> list[object]:
    return boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _write(storage: Storage, rel: str, data: bytes, step: int = MIB) -> None:
    writer = storage.create(rel)
    for n in range(0, len(data), step):
        writer.write(data[n : n + step])
    storage.close_part(writer, rel)


def test_a_large_part_goes_up_in_parallel_parts_and_stays_exclusive(s3_env: Server) -> None:
    bucket = _bucket("s3io-large")
    storage = Storage(f"s3://{bucket}/repo")
    data = os.urandom(20 * MIB + 123)
    _write(storage, "part.parquet", data)
    assert storage.hash_file("part.parquet") == (hashlib.sha256(data).hexdigest(), len(data))
    assert b"".join(storage.read_blocks("part.parquet")) == data
    # A multipart upload: its ETag counts its parts (8 MiB each, the rest in the last).
    head = boto3.client("s3").head_object(Bucket=bucket, Key="repo/part.parquet", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3"), head
    # Each part carried its CRC32, declared at the upload's start as boto3's transfer manager does: S3 keeps
    # a composite checksum of the parts (without one it computes a CRC64NVME of the whole object).
    assert "ChecksumCRC32" in head and "ChecksumCRC64NVME" not in head, head
    # Exclusive: other bytes under the same name are refused; the same bytes count as written (a retry
    # whose first answer was lost).
    with pytest.raises(AlreadyExistsError):
        _write(storage, "part.parquet", os.urandom(len(data)))
    _write(storage, "part.parquet", data)
    assert storage.hash_file("part.parquet")[0] == hashlib.sha256(data).hexdigest()
    assert _uploads(bucket) == []  # the refused upload was aborted, not left to bill


def test_a_read_given_the_expected_size_asks_no_size_and_still_gets_the_objects_own_bytes(
    s3_env: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restore, verify and copy know each part's size from its manifest: their reads start at once (no HEAD
    per part, a round trip each) and the answers' Content-Range says the object's real size, so an object
    truncated or grown since still reads as its own bytes (and its size shows the damage)."""
    storage = Storage(f"s3://{_bucket('s3io-sized')}/repo")
    data = os.urandom(20 * MIB + 123)
    _write(storage, "part.parquet", data)
    asked: list[str] = []
    info = type(storage.fs)._info

    async def counting_info(self: object, path: str, **kwargs: object) -> object:
        asked.append(path)
        return await info(self, path, **kwargs)

    monkeypatch.setattr(type(storage.fs), "_info", counting_info)
    assert b"".join(storage.read_blocks("part.parquet", len(data))) == data
    assert storage.hash_file("part.parquet", len(data)) == (hashlib.sha256(data).hexdigest(), len(data))
    assert asked == []
    for expected in (len(data) + 5 * MIB, len(data) + 1, len(data) - 1, 9 * MIB, 1):
        assert b"".join(storage.read_blocks("part.parquet", expected)) == data, expected
        assert storage.hash_file("part.parquet", expected)[1] == len(data)
    storage.fs.pipe_file(storage.full("empty.parquet"), b"")
    assert b"".join(storage.read_blocks("empty.parquet", 8 * MIB)) == b""
    with pytest.raises(FileNotFoundError):
        b"".join(storage.read_blocks("missing.parquet", MIB))


def test_a_client_set_to_send_checksums_only_when_required_sends_none(
    s3_env: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3-compatible services that refuse checksum headers are reached with
    AWS_REQUEST_CHECKSUM_CALCULATION=when_required: the parallel upload then declares no checksum either."""
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    bucket = _bucket("s3io-no-checksum")
    storage = Storage(f"s3://{bucket}/repo")
    data = os.urandom(9 * MIB)
    _write(storage, "part.parquet", data)
    head = boto3.client("s3").head_object(Bucket=bucket, Key="repo/part.parquet", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-2") and "ChecksumCRC32" not in head, head
    assert storage.hash_file("part.parquet", len(data))[0] == hashlib.sha256(data).hexdigest()


def test_a_part_written_without_hashing_counts_as_written_when_its_hash_is_given(s3_env: Server) -> None:
    """A copy writes parts without the writer's own hashing (it hashes them itself): when S3 applied the
    upload and its answer was lost, the retry meets the object, which is this part when the hash the copy
    gives matches it (a copy into a faulty S3 once failed there with "already exists")."""
    storage = Storage(f"s3://{_bucket('s3io-unhashed')}/repo")
    data = os.urandom(3 * MIB)
    _write(storage, "part.parquet", data)  # the upload S3 applied
    for expected, refused in ((None, True), (hashlib.sha256(data).hexdigest(), False)):
        writer = storage.create("part.parquet", hashing=False)
        writer.write(data)
        if refused:
            with pytest.raises(AlreadyExistsError):
                storage.close_part(writer, "part.parquet", sha256=expected)
        else:
            storage.close_part(writer, "part.parquet", sha256=expected)
    writer = storage.create("part.parquet", hashing=False)
    writer.write(other := os.urandom(len(data)))
    with pytest.raises(AlreadyExistsError):  # other bytes (their own hash): never taken for the part
        storage.close_part(writer, "part.parquet", sha256=hashlib.sha256(other).hexdigest())


def test_a_chunk_pack_whose_upload_answer_was_lost_counts_as_written(s3_env: Server) -> None:
    """A pack S3 applied although its answer was lost meets itself on the retry: at the writer's own path,
    with its size and every chunk giving its id back, it is this pack (packs are not hashed whole); a pack
    of other chunks under that name is refused."""
    from aibackup.chunk_writer import PackWriter
    from aibackup.chunks import ChunkIds
    from aibackup.repository import Repository

    repo = Repository.init(f"s3://{_bucket('s3io-packs')}/repo")
    ids = ChunkIds(repo.key())
    chunks = [os.urandom(300_000) for _ in range(3)]

    def pack(data: list[bytes]) -> PackWriter:
        writer = PackWriter(repo, "w1", ids)
        for chunk in data:
            writer.add(ids(chunk), chunk)
        writer.finish()
        return writer

    first = pack(chunks)
    again = pack(chunks)  # the same pack, its name taken by the upload S3 applied
    assert again.entries == first.entries
    with pytest.raises(AlreadyExistsError):
        pack([os.urandom(300_000) for _ in range(3)])


def test_small_objects_go_up_in_one_put_and_empty_ones_too(s3_env: Server) -> None:
    bucket = _bucket("s3io-small")
    storage = Storage(f"s3://{bucket}/repo")
    for size in (0, 1, 8 * MIB - 1):
        data = os.urandom(size)
        _write(storage, f"o{size}", data)
        etag = boto3.client("s3").head_object(Bucket=bucket, Key=f"repo/o{size}")["ETag"]
        assert "-" not in etag and storage.hash_file(f"o{size}") == (hashlib.sha256(data).hexdigest(), size)


def test_server_side_encryption_is_asked_for_on_multipart_uploads_too(s3_env: Server) -> None:
    bucket = _bucket("s3io-sse")
    storage = Storage(f"s3://{bucket}/repo?sse=AES256")
    _write(storage, "big", os.urandom(17 * MIB))
    _write(storage, "small", b"x")
    for key in ("big", "small"):
        assert boto3.client("s3").head_object(Bucket=bucket, Key=f"repo/{key}")["ServerSideEncryption"] == "AES256"


def test_an_aborted_upload_leaves_no_object_and_no_upload(s3_env: Server) -> None:
    bucket = _bucket("s3io-abort")
    storage = Storage(f"s3://{bucket}/repo")
    writer = storage.create("part.parquet")
    writer.write(os.urandom(30 * MIB))  # parts already on their way
    writer.abort()
    assert not storage.exists("part.parquet")
    assert _uploads(bucket) == []


@pytest.mark.parametrize("seed", range(4))
def test_uploads_and_reads_through_faults_are_whole_or_fail_in_one_line(s3_env: Server, seed: int) -> None:
    """Through the fault proxy (500s, SlowDown, resets, stalls, applied writes whose answers are lost, reads
    that break off mid-body): a multipart upload either completes with exactly its bytes or fails with
    UnavailableError, and a concurrent ranged read either gives every byte or fails the same way."""
    bucket = _bucket(f"s3io-faults-{seed}")
    data = os.urandom(20 * MIB + 7)
    outcomes = []
    for run in range(3):
        rel = f"part-{run}.parquet"
        with FaultProxy(f"{s3_env.host}:{s3_env.port}", 0.15, 1000 * seed + run, stall=0.2) as proxy:
            storage = Storage(f"s3://{bucket}/repo?endpoint={proxy.url}")
            try:
                _write(storage, rel, data)
                wrote = True
            except UnavailableError:
                wrote = False
        held = Storage(f"s3://{bucket}/repo")
        if wrote:
            assert held.hash_file(rel) == (hashlib.sha256(data).hexdigest(), len(data)), (run, proxy.injected)
        elif held.exists(rel):  # applied, answer lost, then given up on: still only ever the whole object
            assert held.hash_file(rel)[0] == hashlib.sha256(data).hexdigest()
        else:
            _write(held, rel, data)
        kinds = ("cut", "reset", "500", "503")
        with FaultProxy(f"{s3_env.host}:{s3_env.port}", 0.3, 1000 * seed + run, kinds=kinds) as proxy:
            storage = Storage(f"s3://{bucket}/repo?endpoint={proxy.url}")
            try:
                assert storage.hash_file(rel) == (hashlib.sha256(data).hexdigest(), len(data))
                outcomes.append("read")
            except UnavailableError as exc:
                assert "\n" not in str(exc)
                outcomes.append("unavailable")
    assert "read" in outcomes, outcomes


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Every read of a repository object by path: whole-object streams (``read_blocks``) and file handles
    (``open_read``) alike."""
    counted: Counter[str] = Counter()
    read_blocks, open_read = Storage.read_blocks, Storage.open_read

    def counting_blocks(self: Storage, rel: str, size: int | None = None) -> Iterator[bytes]:
        counted[rel] += 1
        return read_blocks(self, rel, size)

    def counting_open(self: Storage, rel: str):  # type: ignore[no-untyped-def]
        counted[rel] += 1
        return open_read(self, rel)

    monkeypatch.setattr(Storage, "read_blocks", counting_blocks)
    monkeypatch.setattr(Storage, "open_read", counting_open)
    yield counted


def _parts(url: str) -> list[str]:
    repo = Repository.open(url)
    return sorted({p.path for b in repo.bundle_ids() for d in repo.load(b).datasets for p in d.all_parts()})


def test_backup_restore_and_verify_read_each_part_from_s3_once(
    s3_env: Server, tmp_path: Path, cli: Cli, reads: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backup's search baseline reads the vectors it wrote from its local copy, not from S3; a restore
    downloads each part once (re-hash, validation, import and content check read the spool); so does
    `verify --read-data` (bytes, then records). The spool is gone afterwards."""
    spooled = tmp_path / "spool"
    spooled.mkdir()
    monkeypatch.setenv("AIBACKUP_SPOOL_DIR", str(spooled))
    url = f"s3://{_bucket('s3io-once')}/repo"
    seed_chroma(tmp_path / "chroma", "docs", n=2000, dim=32)
    seed_chroma(tmp_path / "chroma", "more", n=300, dim=8)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", url))
    parts = _parts(url)
    assert len(parts) >= 4  # per collection: its records and its record index
    assert not any(reads[p] for p in parts), reads  # nothing read back at backup
    restored = ok(cli("restore", "latest", "--repo", url, "--to", f"qdrant:{tmp_path / 'q'}", "--json"))
    assert restored.json()["ok"]
    assert {p: reads[p] for p in parts} == dict.fromkeys(parts, 1)
    reads.clear()
    assert ok(cli("verify", "--repo", url, "--read-data", "--json")).json()["ok"]
    assert {p: reads[p] for p in parts} == dict.fromkeys(parts, 1)
    assert list(spooled.iterdir()) == []


def test_copy_and_verify_ask_no_sizes_they_know_and_list_nothing_in_a_new_copy(
    s3_env: Server, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request is a round trip (tens of ms between regions): markers, manifests and locks are read
    with one GET (no HEAD first), parts by the size their manifest gives, and a copy into a location it
    has just made lists nothing there. Only the bucket is asked about (to say clearly when it is missing)."""
    bucket = _bucket("s3io-asked")
    url = f"s3://{bucket}/repo"
    seed_chroma(tmp_path / "chroma", "docs", n=500, dim=16)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", url))
    fs_type = type(Storage(url).fs)
    asked: list[str] = []
    listed: list[str] = []
    info, find = fs_type._info, fs_type._find

    async def counting_info(self: object, path: str, **kwargs: object) -> object:
        asked.append(path)
        return await info(self, path, **kwargs)

    async def counting_find(self: object, path: str, *args: object, **kwargs: object) -> object:
        listed.append(path)
        return await find(self, path, *args, **kwargs)

    monkeypatch.setattr(fs_type, "_info", counting_info)
    monkeypatch.setattr(fs_type, "_find", counting_find)
    assert ok(cli("copy", "--repo", url, "--to-repo", str(tmp_path / "down"), "--json")).json()["copied"]
    assert ok(cli("verify", "--repo", url, "--read-data", "--json")).json()["ok"]
    assert set(asked) == {bucket}, asked
    asked.clear()
    up = ok(cli("copy", "--repo", str(tmp_path / "down"), "--to-repo", f"s3://{bucket}/up", "--json"))
    assert up.json()["copied"]
    assert set(asked) == {bucket}, asked
    assert listed == [], listed


def test_a_spool_without_room_reads_the_repository_again_and_restores_the_same(
    s3_env: Server, tmp_path: Path, cli: Cli, reads: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{_bucket('s3io-no-room')}/repo"
    seed_chroma(tmp_path / "chroma", "docs", n=500)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", url))
    monkeypatch.setattr(spool, "RESERVE", 1 << 62)  # no disk has that much free: nothing is spooled
    restored = ok(cli("restore", "latest", "--repo", url, "--to", f"qdrant:{tmp_path / 'q'}", "--json"))
    assert restored.json()["ok"] and restored.json()["datasets"][0]["rows"] == 500
    records = [p for p in _parts(url) if "/part-" in p]
    assert records and all(reads[p] > 1 for p in records)  # read again by each pass: slower, but correct


def test_a_repository_on_its_own_endpoint_copies_between_two_s3_services(
    s3_env: Server, moto_s3_second: Server, tmp_path: Path, cli: Cli
) -> None:
    """Two moto servers as two regions: the environment points at the first, the copy's URL at the second
    (``?endpoint=``); the copy lands there only, restores from there, and `status`-style reads find it."""
    source = f"s3://{_bucket('region-one')}/repo"
    _bucket("region-two", moto_s3_second.url)
    seed_chroma(tmp_path / "chroma", "docs", n=300)
    made = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", source, "--json")).json()["bundle_id"]
    copy = f"s3://region-two/dr?endpoint={moto_s3_second.url}&region=eu-west-1"
    copied = ok(cli("copy", "--repo", source, "--to-repo", copy, "--json")).json()
    assert copied["copied"] == [made]
    second = boto3.client("s3", endpoint_url=moto_s3_second.url)
    assert any(o["Key"].startswith("dr/bundles/") for o in second.list_objects_v2(Bucket="region-two")["Contents"])
    with pytest.raises(boto3.client("s3").exceptions.NoSuchBucket):
        boto3.client("s3").list_objects_v2(Bucket="region-two")  # not on the first service
    assert [b["bundle_id"] for b in ok(cli("list", "--repo", copy, "--json")).json()] == [made]
    ok(cli("verify", "--repo", copy, "--read-data"))
    restored = ok(cli("restore", "latest", "--repo", copy, "--to", f"qdrant:{tmp_path / 'q'}", "--json"))
    assert restored.json()["ok"]


def test_bad_s3_repository_options_are_one_line_usage_errors(s3_env: Server, cli: Cli) -> None:
    one_line_error(cli("list", "--repo", "s3://bucket/repo?endpoint=ftp://host"), 2, "endpoint")
    one_line_error(cli("list", "--repo", "s3://bucket/repo?endpiont=http://host"), 2, "endpiont", "endpoint")


def test_a_repository_urls_profile_reaches_its_service_and_an_unknown_one_is_a_usage_error(
    s3_env: Server, moto_s3_second: Server, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``?profile=NAME``: the AWS config file's profile gives both clients (the filesystem's reads, the
    uploads') their endpoint, region and credentials; a profile no config file defines is one line, exit 2."""
    _bucket("profiled", moto_s3_second.url)
    config = tmp_path / "aws-config"
    config.write_text(
        f"[profile dr]\nendpoint_url = {moto_s3_second.url}\nregion = eu-west-1\n"
        "aws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    seed_chroma(tmp_path / "chroma", "docs", n=300)
    local = tmp_path / "local"
    made = ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", str(local), "--json")).json()["bundle_id"]
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)  # nothing but the profile says where and as whom
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    copy = "s3://profiled/dr?profile=dr"
    assert ok(cli("copy", "--repo", str(local), "--to-repo", copy, "--json")).json()["copied"] == [made]
    assert [b["bundle_id"] for b in ok(cli("list", "--repo", copy, "--json")).json()] == [made]
    ok(cli("verify", "--repo", copy, "--read-data"))
    second = boto3.client(
        "s3", endpoint_url=moto_s3_second.url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    assert any(o["Key"].startswith("dr/bundles/") for o in second.list_objects_v2(Bucket="profiled")["Contents"])
    one_line_error(cli("list", "--repo", "s3://profiled/dr?profile=nope"), 2, "nope")
    one_line_error(cli("copy", "--repo", str(local), "--to-repo", "s3://profiled/x?profile=nope"), 2, "nope")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_verify_names_every_damaged_part_of_a_dataset_whose_parts_are_checked_as_they_are_digested(
    where: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`verify --read-data` re-hashes each part right before decoding its records (two parts at once): the
    first damaged part stops the digest, and the parts it did not reach are still re-hashed, so every
    damaged part is named, once, in part order, and nothing else (the records of a damaged dataset are
    not compared)."""
    from aibackup.backup import run_backup
    from aibackup.connectors.chroma.connector import ChromaConnector
    from aibackup.parquet_parts import WriteOptions
    from aibackup.verify import run_verify
    from tests.helpers import repository_url

    init = ChromaConnector.__init__
    monkeypatch.setattr(ChromaConnector, "__init__", lambda self, *a, **kw: init(self, *a, **{**kw, "batch_rows": 100}))
    url = repository_url(where, tmp_path, request)
    seed_chroma(tmp_path / "chroma", "docs", n=600, dim=16)
    run_backup(url, f"chroma:{tmp_path / 'chroma'}", options=WriteOptions(row_group_bytes=2_000, part_bytes=5_000))
    repo = Repository.open(url)
    (dataset,) = repo.load(repo.bundle_ids()[0]).datasets
    assert len(dataset.parts) >= 5
    damaged = [dataset.parts[1], dataset.parts[3]]
    for part in damaged:
        data = bytearray(repo.storage.read_stored(part.path))  # as stored (an encrypted part stays sealed)
        data[len(data) // 2] ^= 0xFF
        if where == "local":
            Path(repo.storage.full(part.path)).write_bytes(bytes(data))
        else:
            bucket, key = repo.storage.full(part.path).split("/", 1)
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=bytes(data))
    result = run_verify(Repository.open(url), read_data=True)
    assert [(p.path, p.problem) for p in result.problems] == [
        (repo.storage.display(part.path), "sha256 mismatch (the part was changed or damaged)") for part in damaged
    ]
    assert result.parts == len(dataset.all_parts())
    assert result.bytes_read == sum(p.bytes for p in dataset.all_parts() if p not in damaged)


def test_manifests_are_read_several_at_once_in_order_and_a_damaged_one_is_named(
    s3_env: Server, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bundle's manifest, read behind an endpoint that takes 0.25 s to answer (another region): one
    GET after another, nine took 2.25 s and more (hundreds of bundles: minutes for `list`, `status`, prune
    and the nightly copy); now several at once (counted at the endpoint, not timed: a slow machine must
    not fail it), never more than MANIFESTS_AT_ONCE, in the bundles' order, a damaged one named among them;
    a reader that stops early leaves the rest unread."""
    url = f"s3://{_bucket('s3io-manifests')}/repo"
    logs = tmp_path / "logs"
    logs.mkdir()
    for n in range(9):
        (logs / "app.jsonl").open("a").write(f'{{"user_id": "u{n}", "input": "q", "output": "a"}}\n')
        ok(cli("backup", f"conversations:{logs}", "--repo", url, "--full"))
    ids = Repository.open(url).bundle_ids()
    boto3.client("s3").put_object(Bucket="s3io-manifests", Key=f"repo/bundles/{ids[4]}.json", Body=b"{not json")
    with FaultProxy(f"{s3_env.host}:{s3_env.port}", 1.0, 0, kinds=("stall",), stall=0.25) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        repo = Repository.open(url)
        repo.use_key(repo.key())
        good, bad = repo.scan()
        asked = proxy.requests
        for _ in zip(range(2), repo.load_each(ids * 4), strict=False):
            pass  # a reader that stops after two of 36 manifests
        asked = proxy.requests - asked
    assert [m.bundle_id for m in good] == ids[:4] + ids[5:] and [b.bundle_id for b in bad] == [ids[4]]
    # The first, then the eight in flight when it stopped: the 27 still queued are not read.
    assert asked <= 1 + 2 * MANIFESTS_AT_ONCE, asked
    # Stalled 0.25 s each, the eight manifests after the first overlap: at least half of them are in flight at
    # once however slowly the threads start.
    assert MANIFESTS_AT_ONCE // 2 <= proxy.most_at_once <= MANIFESTS_AT_ONCE, proxy.most_at_once


def test_a_damaged_part_on_another_endpoint_is_named_where_it_is_and_remembered(
    s3_env: Server, moto_s3_second: Server, tmp_path: Path, cli: Cli
) -> None:
    """A repository reached by its URL's ``?endpoint=`` is named with it: the location a message gives
    leads back to that service, not to the same bucket on the environment's. The damage verify names is
    remembered by its part path all the same (the next backup extends no chain reading it). Credentials in
    the endpoint (which botocore failed on deep inside a request: exit 70) are refused in one line that does
    not show them."""
    host = moto_s3_second.url.partition("://")[2]
    _bucket("region-two", moto_s3_second.url)
    with_password = f"s3://region-two/dr?endpoint=http://someone:secret@{host}"
    refused = one_line_error(cli("list", "--repo", with_password), 2, "user name or password", "***@")
    assert "secret" not in refused
    repo_url = f"s3://region-two/dr?endpoint=http://{host}&region=eu-west-1"
    seed_chroma(tmp_path / "chroma", "docs", n=300)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", repo_url))
    repo = Repository.open(repo_url)
    manifest = repo.load(repo.bundle_ids()[0])
    part = manifest.datasets[0].parts[0]
    second = boto3.client("s3", endpoint_url=moto_s3_second.url)
    key = f"dr/{part.path}"
    body = bytearray(second.get_object(Bucket="region-two", Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF  # the same size: only the bytes tell
    second.put_object(Bucket="region-two", Key=key, Body=bytes(body))
    checked = cli("verify", "--repo", repo_url, "--read-data", "--json")
    assert checked.code == 1, (checked.out, checked.err)
    problems = checked.json()["problems"]
    shown = f"s3://region-two/dr/{part.path}?endpoint=http://{host}"
    assert [p["path"] for p in problems] == [shown]
    assert Storage(shown.replace(f"/{part.path}", "")).same_place(repo.storage)
    assert reports.damaged_parts(Repository.open(repo_url)) == {part.path}


def test_a_spool_folder_that_cannot_be_used_is_never_taken_for_damage(
    s3_env: Server, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AIBACKUP_SPOOL_DIR`` naming no folder is one line naming it, exit 2 (before: every part of every
    bundle "missing part", exit 1, and that false damage remembered, so every later backup went full). A disk
    that refuses the spool's folder (read-only) or its writes (full) means reading the repository instead."""
    url = f"s3://{_bucket('spool-unusable')}/repo"
    seed_chroma(tmp_path / "chroma", "docs", n=500)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", url))
    (tmp_path / "a-file").write_text("not a folder")
    for wrong, what in ((tmp_path / "nowhere", "not there"), (tmp_path / "a-file", "a file")):
        monkeypatch.setenv("AIBACKUP_SPOOL_DIR", str(wrong))
        one_line_error(cli("verify", "--repo", url, "--read-data"), 2, f"AIBACKUP_SPOOL_DIR={wrong}", what)
        one_line_error(cli("restore", "latest", "--repo", url, "--to", f"qdrant:{tmp_path / 'q0'}"), 2, what)
    monkeypatch.delenv("AIBACKUP_SPOOL_DIR")
    assert reports.damaged_parts(Repository.open(url)) == frozenset()

    real_open = open

    def full_disk(path: str, mode: str = "r", *args: object, **kwargs: object) -> object:
        if mode == "xb" and str(path).endswith(".part"):
            return real_open("/dev/full", "wb")  # the kernel answers every write with ENOSPC
        return real_open(path, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(spool, "open", full_disk, raising=False)
    assert ok(cli("verify", "--repo", url, "--read-data", "--json")).json()["ok"]
    restored = ok(cli("restore", "latest", "--repo", url, "--to", f"qdrant:{tmp_path / 'q1'}", "--json"))
    assert restored.json()["ok"] and restored.json()["datasets"][0]["rows"] == 500

    def read_only_disk(*args: object, **kwargs: object) -> str:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(spool.tempfile, "mkdtemp", read_only_disk)  # the spool's folder cannot be made
    assert ok(cli("verify", "--repo", url, "--read-data", "--json")).json()["ok"]
    assert reports.damaged_parts(Repository.open(url)) == frozenset()


def test_the_command_a_missing_repository_suggests_can_be_pasted_into_a_shell(s3_env: Server, cli: Cli) -> None:
    """An S3 URL with options has ``?`` and ``&`` in it: unquoted, bash ran the suggested ``init`` in the
    background without ``region=`` and zsh refused the ``?``."""
    url = f"s3://{_bucket('empty-for-init')}/ai?region=us-east-1&sse=AES256"
    line = one_line_error(cli("list", "--repo", url), 2, "no repository at")
    assert f"`aibackup init --repo '{url}'`" in line and f"--to-repo '{url}'" in line


def test_prune_aborts_the_uploads_crashed_runs_left_open(
    s3_env: Server, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed outright (SIGKILL, a lost machine) or a create whose answer was lost leaves a multipart
    upload open: S3 bills its parts and no listing of objects shows it. prune aborts those under the
    repository begun before its grace period (a running backup's are younger), and says so."""
    bucket = _bucket("prune-uploads")
    url = f"s3://{bucket}/repo"
    seed_chroma(tmp_path / "chroma", "docs", n=50)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", url))
    s3 = boto3.client("s3")
    left = {}
    for key in ("repo/data/20261208T000000.000000Z-deadbeef/000-docs/part-00000.parquet", "repo2/data/x.bin"):
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * (5 << 20))
        left[key] = upload
    # (moto dates every upload 2010-11-10, so the grace period cannot be shown here: prune's own lock, which
    # every live run conflicts with, is what keeps a running backup's uploads out of its way.)
    looked = ok(cli("prune", "--repo", url, "--keep-last", "1", "--grace", "0s", "--dry-run", "--json")).json()
    rel = "data/20261208T000000.000000Z-deadbeef/000-docs/part-00000.parquet"
    assert looked["uploads_aborted"] == [rel] and len(_uploads(bucket)) == 2
    done = ok(cli("prune", "--repo", url, "--keep-last", "1", "--grace", "0s"))
    assert "1 unfinished upload(s) of crashed runs aborted" in done.out
    assert [u["Key"] for u in _uploads(bucket)] == ["repo2/data/x.bin"]  # not the repository's: left alone
    ok(cli("verify", "--repo", url, "--read-data"))
    # Credentials without s3:ListBucketMultipartUploads: a note, the prune done (it was exit 70 after its
    # removals, and every prune after it the same).
    from botocore.exceptions import ClientError

    def denied(*args: object, **kwargs: object) -> object:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListMultipartUploads")

    real = Storage._transfers

    def refusing(self: Storage) -> Any:
        client, pool = real(self)
        monkeypatch.setattr(client, "get_paginator", denied)
        return client, pool

    monkeypatch.setattr(Storage, "_transfers", refusing)
    ok(cli("backup", f"chroma:{tmp_path / 'chroma'}", "--repo", url, "--full"))
    pruned = ok(cli("prune", "--repo", url, "--keep-last", "1", "--json")).json()
    assert len(pruned["removed"]) == 1 and pruned["uploads_aborted"] == []
    assert any(n.startswith("unfinished uploads not checked:") for n in pruned["notes"]), pruned["notes"]
