"""S3 transfers at the speed of the connection: multipart uploads with several parts in flight, and reads
of one object as concurrent ranged GETs handed back in order, both through a boto3 client on a thread pool.

s3fs's own file objects move one block at a time (``S3File`` uploads its parts one after the other; a read
fetches one block, then the next). Measured against moto on this project's 2-core machine (five 26 MB
objects, 8 MiB parts, 8 in flight): uploads through s3fs's aiohttp client took 0.95-1.1 s, the same parts
through a boto3 client on a thread pool 0.6-0.8 s, like boto3's own ``upload_fileobj`` (the payload hashing
and checksums botocore computes per part run on several threads rather than on the one event loop). Reads
likewise: the same ranged GETs of a 126 MiB bundle took 0.39-0.45 s and 0.32-0.39 CPU s through s3fs's
aiohttp client (bodies read in small chunks on its one event loop), 0.26-0.33 s and 0.18-0.22 CPU s through
the boto3 client (urllib3 reads a body whole). So both use a boto3 client
(:func:`aibackup.s3_settings.S3Settings.client`, the same endpoint, region, credentials, retries and
server-side encryption as the s3fs filesystem, which keeps listings, small documents and size queries).

Memory is bounded per object: at most ``concurrency`` blocks of ``block_size`` bytes in flight, plus the
block being filled (a write) or handed out (a read): 8 x 8 MiB = 64 MiB by default.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Generator, Iterator
from typing import Any

#: Bytes per multipart part and per ranged GET: boto3's transfer manager default (and above S3's 5 MiB minimum).
BLOCK_SIZE = 8 * 1024 * 1024
#: Parts or ranges of one object in flight at once (boto3's default is 10; 8 keeps 64 MiB per object).
CONCURRENCY = 8
#: Tries of one range whose answer breaks off (a short body, a reset mid-body) before the read gives up,
#: waiting 0.1, 0.2, 0.4, 0.8 s between them (botocore's own retries cover errors before the body).
RANGE_ATTEMPTS = 5
#: The checksum of each part of a multipart upload, as boto3's own transfer manager sets it where the client
#: computes checksums (botocore's default, ``request_checksum_calculation = when_supported``): S3 checks each
#: part by it and keeps a composite checksum of the object. An upload created without one gets a full-object
#: CRC64NVME computed over the assembled object at completion (by moto too: 0.1-0.3 s of its CPU per
#: 126 MiB here). A client configured ``when_required`` (S3-compatible services that refuse checksums) sends none.
CHECKSUM_ALGORITHM = "CRC32"
#: S3 accepts at most this many parts in one upload: part sizes grow past every thousand parts, so an
#: object can reach 8 MiB x 1000 x (1 + 2 + ... + 10) = 440 GB.
MAX_PARTS = 10_000


class ShortReadError(OSError):
    """A ranged GET kept answering fewer bytes than it asked for (the storage breaking off)."""


class ParallelUpload:
    """A write-only file object that uploads an S3 object exclusively (``If-None-Match: *``; not with
    `exclusive` False: it then replaces one there whole when it completes): one PUT when it
    stays below one block, else a multipart upload with up to `concurrency` parts in flight on `pool`'s
    threads while the caller goes on writing (``write`` waits only when that many are already in flight).

    ``close`` completes it and raises FileExistsError when the name is taken (also when the completion was
    applied but its answer lost: the caller compares the object with what it wrote, see
    ``Storage.close_part``). ``discard`` aborts the multipart upload: nothing appears. Errors are s3fs's
    translation of botocore's (OSError and its subclasses), as for every other S3 call of ``Storage``.
    """

    def __init__(
        self,
        client: Any,
        pool: concurrent.futures.Executor,
        bucket: str,
        key: str,
        *,
        extra: dict[str, str] | None = None,
        block_size: int = BLOCK_SIZE,
        concurrency: int = CONCURRENCY,
        exclusive: bool = True,
    ) -> None:
        self._client = client
        self._pool = pool
        self._bucket, self._key = bucket, key
        self._extra = extra or {}  # server-side encryption: sent with PutObject and CreateMultipartUpload
        # Not exclusive: an object there is replaced whole when this one completes (a copy's repair).
        self._if_none_match = {"IfNoneMatch": "*"} if exclusive else {}
        computes = getattr(client.meta.config, "request_checksum_calculation", None) == "when_supported"
        self._checksum = {"ChecksumAlgorithm": CHECKSUM_ALGORITHM} if computes else {}
        self._block = block_size
        self._concurrency = max(1, concurrency)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._in_flight: collections.deque[tuple[int, concurrent.futures.Future[Any]]] = collections.deque()
        self.closed = False

    def _part_size(self) -> int:
        return self._block * (1 + (len(self._parts) + len(self._in_flight)) // 1000)

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(Bucket=self._bucket, Key=self._key, **kwargs)
        except Exception as exc:
            raise translated(exc) from None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if not self._buffer and isinstance(data, bytes) and len(data) == self._part_size():
            self._send(data)  # a whole part as it came (a copy's 8 MiB blocks): no copy of it here
            return len(data)
        self._buffer += data
        while len(self._buffer) >= self._part_size():
            size = self._part_size()
            self._send(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return len(data)

    def _send(self, body: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._call("create_multipart_upload", **self._extra, **self._checksum)["UploadId"]
        number = len(self._parts) + len(self._in_flight) + 1
        if number > MAX_PARTS:
            raise OSError(f"object too large for one S3 upload ({MAX_PARTS} parts)")
        while len(self._in_flight) >= self._concurrency:
            self._collect_oldest()
        sent = self._pool.submit(
            self._call, "upload_part", UploadId=self._upload_id, PartNumber=number, Body=body, **self._checksum
        )
        self._in_flight.append((number, sent))

    def _collect_oldest(self) -> None:
        number, future = self._in_flight.popleft()
        answer = future.result()
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        checksum = f"Checksum{CHECKSUM_ALGORITHM}"  # S3 wants each part's back where the upload declared one
        if self._checksum and checksum in answer:
            part[checksum] = answer[checksum]
        self._parts.append(part)

    def flush(self) -> None:
        """Nothing to do: bytes go up in whole parts, and the rest at ``close``."""

    def close(self) -> None:
        if self.closed:
            return
        if self._upload_id is None:
            self._call("put_object", Body=bytes(self._buffer), **self._if_none_match, **self._extra)
            self.closed = True
            return
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        while self._in_flight:
            self._collect_oldest()
        try:
            self._call(
                "complete_multipart_upload",
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
                **self._if_none_match,
            )
        except FileNotFoundError:
            # NoSuchUpload: an earlier try of this completion was applied and its answer lost. The object is
            # there; the caller compares it with what it wrote.
            self._call("head_object")  # FileNotFoundError again when it is not
            raise FileExistsError(f"{self._bucket}/{self._key}") from None
        self.closed = True

    def discard(self) -> None:
        """Abort: parts in flight are waited for (they cannot be recalled), then the upload is aborted."""
        self.closed = True
        self._buffer = bytearray()
        for _, future in self._in_flight:
            future.cancel()
        concurrent.futures.wait([future for _, future in self._in_flight])
        self._in_flight.clear()
        if self._upload_id is not None:
            self._call("abort_multipart_upload", UploadId=self._upload_id)
            self._upload_id = None


def translated(exc: Exception) -> BaseException:
    """botocore's error as s3fs words it (OSError subclasses: FileExistsError for a failed If-None-Match,
    FileNotFoundError for a missing key or upload, PermissionError ...), so that ``Storage`` words both
    clients' errors alike."""
    from s3fs.errors import translate_boto_error

    return exc if isinstance(exc, OSError) else translate_boto_error(exc)


def _broken(exc: Exception) -> bool:
    """Whether `exc` is an answer that broke off mid-body (a reset, a short body, a read that timed out),
    which the next try of the same range may get whole; botocore retried errors before the body already."""
    return isinstance(exc, TimeoutError | ConnectionError) or type(exc).__name__ in (
        "IncompleteReadError",  # fewer bytes than the Content-Length said
        "ResponseStreamingError",  # urllib3's ProtocolError: the connection broke mid-body
        "ReadTimeoutError",
        "ConnectionClosedError",
    )


def _get_range(client: Any, bucket: str, key: str, start: int, stop: int) -> tuple[bytes, int | None]:
    """Bytes [start, stop) of an object, and the object's size as the answer states it (its Content-Range;
    None where the storage leaves it out). An answer that stops short of `stop` because the object ends
    there is whole; a body that breaks off is asked again (RANGE_ATTEMPTS in all). Errors as s3fs words
    them (see :func:`translated`)."""
    problem = ""
    for attempt in range(RANGE_ATTEMPTS):
        if attempt:
            time.sleep(0.1 * 2 ** (attempt - 1))
        try:
            answer = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}")
            body = answer["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except Exception as exc:
            if not _broken(exc):
                raise translated(exc) from None
            problem = f"{type(exc).__name__}: {exc}"
            continue
        total = _stated_size(answer.get("ContentRange"))
        if len(data) == (stop if total is None else min(stop, total)) - start:
            return data, total
        problem = f"{len(data)} of {stop - start} bytes"
    raise ShortReadError(
        f"the read of bytes {start}-{stop - 1} broke off {RANGE_ATTEMPTS} times (last: {problem}); try again"
    )


def _stated_size(content_range: str | None) -> int | None:
    """The object size a ``Content-Range: bytes A-B/SIZE`` answer states (None: not stated)."""
    size = (content_range or "").rpartition("/")[2]
    return int(size) if size.isdigit() else None


def read_blocks(
    fs: Any,
    client: Any,
    pool: concurrent.futures.Executor,
    path: str,
    size: int | None = None,
    *,
    block_size: int = BLOCK_SIZE,
    concurrency: int = CONCURRENCY,
) -> Iterator[bytes]:
    """The bytes of the object at `path` (``bucket/key``), in order, `block_size` at a time, with up to
    `concurrency` ranged GETs in flight on `pool`'s threads (through `client`, a boto3 S3 client; `fs`, the
    s3fs filesystem, answers size queries). An empty object reads as nothing. A generator: what it started
    is cancelled when the caller stops early.

    `size`: the size the object should have (a manifest's), so that the ranges start at once instead of
    after a HEAD request (one round trip per object). The answers state the object's real size: where it
    differs (a truncated or grown object), the read goes on by the real one from the first block not yet
    handed out, so the caller always gets the object's own bytes and sees their size. Without `size` (or
    0), it is asked first."""
    ranges = _Ranges(fs, client, pool, path, block_size, concurrency)
    offset, confirmed = 0, False
    if not size:
        size, confirmed = ranges.real_size(), True
    while True:
        resumed = yield from ranges.blocks(offset, size, confirmed)
        if resumed is None:
            return
        offset, size, confirmed = *resumed, True


class _Ranges:
    """The ranged GETs of :func:`read_blocks` over one object (a pass per size it learns of the object)."""

    def __init__(
        self, fs: Any, client: Any, pool: concurrent.futures.Executor, path: str, block_size: int, concurrency: int
    ) -> None:
        self._fs, self._path = fs, path
        self._client, self._pool = client, pool
        self._bucket, _, self._key = path.partition("/")
        self._block, self._concurrency = block_size, concurrency

    def real_size(self) -> int:
        """The object's size, asked of the storage (a HEAD)."""
        return int(self._fs.info(self._path)["size"])

    def blocks(self, offset: int, size: int, confirmed: bool) -> Generator[bytes, None, tuple[int, int] | None]:
        """Blocks [offset, size); returns (offset, real size) of the first block not handed out when the
        object turns out to have another size than `size` (None when it is read whole)."""
        starts = iter(range(offset, size, self._block))
        pending: collections.deque[tuple[int, concurrent.futures.Future[tuple[bytes, int | None]]]] = (
            collections.deque()
        )

        def refill() -> None:
            while len(pending) < self._concurrency and (start := next(starts, None)) is not None:
                stop = min(start + self._block, size)
                args = (self._client, self._bucket, self._key, start, stop)
                pending.append((start, self._pool.submit(_get_range, *args)))

        try:
            refill()
            while pending:
                start, future = pending.popleft()
                try:
                    block, total = future.result()
                except OSError:
                    if confirmed:
                        raise
                    # A range past the object's end is refused (416): the object is shorter than `size`.
                    total = self.real_size()
                    if total == size:
                        raise
                    return start, total
                if total is None and not confirmed:  # the storage does not state it: asked once
                    total = self.real_size()
                confirmed = True
                if total is not None and total != size:
                    return start, total
                refill()
                yield block
            return None
        finally:
            for _, future in pending:
                future.cancel()
