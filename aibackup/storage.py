"""Where repository bytes live: :class:`Storage`, any fsspec URL, with exclusive commits.

``Storage`` is the only place that knows about filesystems. Paths given to it are relative to the
repository root and always use ``/``. Two write paths exist, both exclusive (they never replace an object):

- :meth:`Storage.write_exclusive` for small documents that are *commit points* (manifests, the repository
  marker): local disk writes a temp file, fsyncs it, hard-links it into place (``link`` fails if the name
  exists, so two writers can never both win) and fsyncs the directory; S3 uses ``If-None-Match: *``.
- :meth:`Storage.create` for large immutable parts: a file object that computes sha256 and the byte count
  while the Parquet writer streams into it (no second read: :class:`aibackup.hashing_writer.HashingWriter`).

S3 (``s3://bucket/prefix``) goes through s3fs and honours the standard AWS environment variables, including
``AWS_ENDPOINT_URL`` (``AWS_ENDPOINT_URL_S3`` wins over it) for S3-compatible stores such as MinIO, Ceph or R2
(how it is reached: :mod:`aibackup.s3_settings`).

Filesystem errors are translated here into aibackup errors with one line naming the location:
unreachable endpoints, missing buckets and denied access become :class:`UnavailableError` (exit 3).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import errno
import hashlib
import os
import secrets
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol, cast
from urllib.parse import parse_qs

import fsspec

from aibackup.errors import (
    AibackupError,
    ConfigError,
    IntegrityError,
    NotARepositoryError,
    UnavailableError,
    UsageError,
    first_line,
)
from aibackup.hashing_writer import HashingWriter
from aibackup.s3_settings import (
    S3_OPTIONS,
    SSE_VALUES,
    S3Settings,
    endpoint_problem,
    region_problem,
    without_credentials,
)

CHUNK = 8 * 1024 * 1024


class DocumentCodec(Protocol):
    """How documents (everything written with ``write_exclusive`` and read with ``read_bytes``) are stored:
    an encrypted repository seals them (:class:`aibackup.vault.Vault`). Paths are repository-relative."""

    def seal(self, rel: str, data: bytes) -> bytes: ...

    def open(self, rel: str, raw: bytes, where: str) -> bytes: ...


class AlreadyExistsError(AibackupError):
    """An exclusive write found the name taken (another writer committed first)."""


def _fsync_local(raw: IO[bytes]) -> None:
    raw.flush()
    os.fsync(raw.fileno())


def _write_back_local(raw: IO[bytes]) -> None:
    """Start writing what a local part holds so far to disk, without waiting, and let the page cache drop
    what is already there (``POSIX_FADV_DONTNEED`` starts write-back of dirty pages and drops clean ones).
    The fsync at close then waits for the last chunk only (a 26 MB part: 33 ms -> 5 ms), and a backup does
    not push the source store's own pages out of the cache. Advice only: where it is missing or refused,
    nothing changes."""
    if not hasattr(os, "posix_fadvise"):  # macOS
        return
    raw.flush()
    with contextlib.suppress(OSError):
        os.posix_fadvise(raw.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def url_options(url: str, query: str) -> dict[str, str]:
    """The options of repository `url` (`query`: the part after its ``?``), each checked without reaching
    anything (an aibackup.yaml is checked with them when it is read). UsageError naming the first bad one."""
    if type(url) is str:  # as messages show it (a config's ${VAR}, a str of its own, shows as written)
        url = without_credentials(urllib.parse.unquote(url))  # a %-encoded endpoint's login too
    given = parse_qs(query, keep_blank_values=True)
    if twice := sorted(k for k, v in given.items() if len(v) > 1):  # which one was meant?
        raise UsageError(f"bad repository {url!r}: option {twice[0]!r} given twice")
    options = {k: v[0] for k, v in given.items()}
    unknown = sorted(set(options) - set(S3_OPTIONS))
    if unknown:
        raise UsageError(f"bad repository {url!r}: unknown option {unknown[0]!r} (known: {', '.join(S3_OPTIONS)})")
    sse, sse_kms_key_id = options.get("sse"), options.get("sse_kms_key_id")
    if sse is not None and sse not in SSE_VALUES:
        raise UsageError(f"bad repository {url!r}: sse must be one of {', '.join(SSE_VALUES)}, not {sse!r}")
    if sse_kms_key_id and not (sse or "").startswith("aws:kms"):
        raise UsageError(f"bad repository {url!r}: sse_kms_key_id needs sse=aws:kms")
    endpoint, region = options.get("endpoint"), options.get("region")
    if endpoint is not None and (problem := endpoint_problem(endpoint)):
        raise UsageError(f"bad repository {url!r}: endpoint {without_credentials(endpoint)!r}: {problem}")
    if region is not None and (problem := region_problem(region)):
        raise UsageError(f"bad repository {url!r}: region {region!r}: {problem}")
    return options


class Storage:
    """A repository root on a local path or an fsspec URL (``s3://bucket/prefix``).

    An S3 URL may ask for server-side encryption of every object written: ``?sse=AES256`` or
    ``?sse=aws:kms[&sse_kms_key_id=KEY]`` (a config file's ``sse`` keys are added to its repository URL),
    and say where and as whom the bucket is reached, over the AWS environment: ``endpoint=URL`` (a second
    S3-compatible service), ``region=NAME``, ``profile=NAME`` (see :class:`aibackup.s3_settings.S3Settings`).
    ``documents`` is set by an encrypted repository (see :class:`DocumentCodec`); parts are not touched by
    it."""

    def __init__(self, url: str) -> None:
        if not url or not url.strip():
            raise UsageError("empty repository location")
        self.url = url
        self.documents: DocumentCodec | None = None
        protocol, _, rest = url.partition("://")
        if not _:
            protocol, rest = "file", url
        self.is_local = protocol in ("file", "local")
        rest, _, query = rest.partition("?") if protocol in ("s3", "s3a") else (rest, "", "")
        options = url_options(url, query)
        sse, sse_kms_key_id = options.get("sse"), options.get("sse_kms_key_id")
        endpoint, region = options.get("endpoint"), options.get("region")
        #: The ``?endpoint=`` of the URL as messages show it: a location named in a
        #: message must lead back to the same place when pasted into ``--repo`` (the same bucket on the
        #: environment's endpoint is another repository).
        self._shown_endpoint = endpoint  # never with credentials: url_options refuses them
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None  # parallel uploads (aibackup.s3io)
        self._client: Any = None
        self._lock = threading.Lock()
        if self.is_local:
            if not rest.strip():  # `file://` alone would resolve to the current folder: a repository by accident
                raise UsageError(f"bad repository {url!r}: expected {protocol}:///PATH (or the path alone)")
            self.fs: fsspec.AbstractFileSystem = fsspec.filesystem("file")
            try:
                self.root = str(Path(os.path.expanduser(rest)).resolve())  # ~nouser stays as written, as in a shell
            except RuntimeError:  # Python 3.11's resolve on a symlink loop: a bad path, not a bug
                raise UsageError(
                    f"bad repository {url!r}: a symlink loop (too many levels of symbolic links)"
                ) from None
        elif protocol in ("s3", "s3a"):
            self.s3 = S3Settings.of(
                sse=sse,
                sse_kms_key_id=sse_kms_key_id,
                endpoint=endpoint,
                region=region,
                profile=options.get("profile"),
            )
            self.fs = self.s3.filesystem()
            self.root = rest.strip("/")
            if not self.root:
                raise UsageError(f"bad repository {url!r}: expected s3://BUCKET[/PREFIX]")
            # `s3:///x` named no bucket (x became one); `s3://b//p` wrote keys `/p/...` that no listing of
            # the repository finds: every backup "committed", list empty, restore "no bundle".
            bucket, _, prefix = rest.partition("/")
            if not bucket or prefix.startswith("/"):
                raise UsageError(
                    f"bad repository {url!r}: an empty {'bucket' if not bucket else 'folder'} name ('//'): "
                    "expected s3://BUCKET[/PREFIX]"
                )
        else:
            raise UsageError(f"unsupported repository location {url!r}: use a local path or s3://bucket/prefix")

    def same_place(self, other: Storage) -> bool:
        """Whether `other` is this repository root: local folders by their resolved path (`./r`, `r/.` and a
        link to r are r); S3 by bucket and prefix on the same endpoint (the same bucket name on another
        endpoint is another repository; ``?sse=`` or ``?region=`` change how it is written or reached, not
        where it is)."""
        if self.is_local or other.is_local:
            return self.is_local and other.is_local and self.root == other.root
        return (self.root, _endpoint(self.s3.client_kwargs.get("endpoint_url"))) == (
            other.root,
            _endpoint(other.s3.client_kwargs.get("endpoint_url")),
        )

    # --- paths -----------------------------------------------------------------------------------------

    def full(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def display(self, rel: str = "") -> str:
        """A location for messages: the local path or the URL (an S3 URL's ``?endpoint=`` kept, see
        ``_shown_endpoint``; its other options say how the place is written or reached, not where it is)."""
        if self.is_local:
            return self.full(rel)
        where = f"s3://{self.full(rel)}"
        return f"{where}?endpoint={self._shown_endpoint}" if self._shown_endpoint else where

    def open_document(self, rel: str, raw: bytes) -> bytes:
        """The document stored at `rel` as `raw` (see :meth:`read_stored`), opened in an encrypted repository
        (IntegrityError when it does not authenticate)."""
        return raw if self.documents is None else self.documents.open(rel, raw, self.display(rel))

    def encode_document(self, rel: str, data: bytes) -> bytes:
        """The bytes stored for document `data` at `rel` (sealed in an encrypted repository)."""
        return data if self.documents is None else self.documents.seal(rel, data)

    def ensure_reachable(self) -> None:
        """Fail early, with one line, when the root is a file or an S3 bucket is missing or not accessible."""
        if self.is_local:
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                raise NotARepositoryError(f"{self.root} is a file, not a repository folder")
            for above in Path(self.root).parents:  # nearest first: the first that exists must be a folder
                if above.exists():
                    if not above.is_dir():
                        raise NotARepositoryError(f"{above} is a file, not a folder (repository {self.root})")
                    break
            return
        bucket = self.root.split("/", 1)[0]
        with self._errors(""):
            try:
                self.fs.info(bucket)
            except FileNotFoundError:
                raise UnavailableError(f"bucket {bucket!r} does not exist (repository {self.display()})") from None

    # --- reading ---------------------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        with self._errors(rel):
            return bool(self.fs.exists(self.full(rel)))

    def read_bytes(self, rel: str) -> bytes:
        """The whole document (opened, in an encrypted repository: IntegrityError when it does not
        authenticate). FileNotFoundError passes through for the caller to word."""
        return self.open_document(rel, self.read_stored(rel))

    def read_stored(self, rel: str) -> bytes:
        """A small object's bytes as stored (a document still sealed), in one request: s3fs's ``cat_file``
        asks an S3 object's size first (a HEAD, to read large objects in ranges), a second round trip for
        every marker, manifest and lock. FileNotFoundError passes through for the caller to word."""
        with self._errors(rel):
            if self.is_local:
                return bytes(self.fs.cat_file(self.full(rel)))
            return bytes(self.fs.cat_file(self.full(rel), max_concurrency=1))

    def size(self, rel: str) -> int:
        with self._errors(rel):
            return int(self.fs.size(self.full(rel)))

    def hash_file(self, rel: str, size: int | None = None) -> tuple[str, int]:
        """sha256 and size of an object, streamed (see :meth:`read_blocks`: memory stays bounded, S3 reads
        run several ranges at once; `size` is the size it should have, as there)."""
        sha = hashlib.sha256()
        n = 0
        for block in self.read_blocks(rel, size):
            sha.update(block)
            n += len(block)
        return sha.hexdigest(), n

    def read_blocks(self, rel: str, size: int | None = None) -> Iterator[bytes]:
        """The bytes of an object in order, a block (at most 8 MiB) at a time: one sequential read on a
        local disk; on S3, up to :data:`aibackup.s3io.CONCURRENCY` ranged GETs in flight (64 MiB at most).
        `size`: the size the object should have (its manifest's): on S3 the reads then start without asking
        it first; the object's own bytes come either way (see :func:`aibackup.s3io.read_blocks`).

        A read that keeps breaking off (an answer cut short by a reset connection) is the storage, not
        a damaged object: each range is asked again (``s3io.RANGE_ATTEMPTS`` tries), then UnavailableError
        (exit 3). A truncated object states its own, smaller size. FileNotFoundError passes through."""
        with self._errors(rel):
            if self.is_local:
                with open(self.full(rel), "rb") as f:
                    while block := f.read(CHUNK):
                        yield block
                return
            from aibackup import s3io

            client, pool = self._transfers()
            yield from s3io.read_blocks(self.fs, client, pool, self.full(rel), size, block_size=CHUNK)

    def sizes_below(self, rel_dir: str) -> dict[str, int]:
        """The size of every object below a folder, by repository-relative path ({} when there is none):
        one listing (on S3, a LIST per 1000 objects) instead of a size query per object."""
        root = self.full("").rstrip("/") + "/"
        with self._errors(rel_dir):
            try:
                found = self.fs.find(self.full(rel_dir), detail=True)
            except FileNotFoundError:
                return {}
        return {
            str(name)[len(root) :]: int(info["size"])
            for name, info in found.items()
            if info.get("type") == "file" and str(name).startswith(root)
        }

    def list_names(self, rel_dir: str) -> list[str]:
        """Names of the objects directly in a folder ([] if it does not exist)."""
        with self._errors(rel_dir):
            try:
                entries = self.fs.ls(self.full(rel_dir), detail=False)
            except FileNotFoundError:
                return []
            if self.is_local and os.path.isfile(self.full(rel_dir)):
                raise IntegrityError(f"damaged repository: {self.display(rel_dir)} is a file, not a folder")
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def is_empty_or_missing(self) -> bool:
        """True if nothing is stored under the root yet (a repository may be created here)."""
        with self._errors(""):
            try:
                return not self.fs.ls(self.root, detail=False)
            except FileNotFoundError:
                return True

    # --- writing ---------------------------------------------------------------------------------------

    def write_exclusive(self, rel: str, data: bytes, *, as_stored: bool = False) -> None:
        """Write a small object that must not exist yet, atomically and durably (`as_stored`: `data` is
        already the stored form, a document another repository sealed: copied as it is).

        Raises AlreadyExistsError if the name is taken by other bytes; never replaces an existing object.
        An object that already holds exactly `data` counts as written: S3 may apply a write whose answer is
        lost, and the retry then meets the object it wrote itself.
        """
        path = self.full(rel)
        stored = data if as_stored else self.encode_document(rel, data)
        with self._errors(rel, writing=True):
            try:
                if self.is_local:
                    self._write_exclusive_local(path, stored)
                else:
                    self.fs.pipe_file(path, stored, mode="create")
            except (FileExistsError, AlreadyExistsError):
                held = self.read_stored(rel) if as_stored else self.read_bytes(rel)
                if held != data:
                    raise AlreadyExistsError(f"{self.display(rel)} already exists") from None

    def _write_exclusive_local(self, path: str, data: bytes) -> None:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                _fsync_local(f)
            try:
                os.link(tmp, path)  # atomic and exclusive: fails if `path` exists
            except FileExistsError:
                raise AlreadyExistsError(f"{path} already exists") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(folder)

    def create(
        self, rel: str, *, hashing: bool = True, copy: IO[bytes] | None = None, replace: bool = False
    ) -> HashingWriter:
        """Open a new immutable object for streaming writes; fails if it exists. Without `hashing` its sha256
        is not computed (a chunk pack: every chunk in it is hashed on its own). `copy`: a local file that
        gets every byte too (a spool's, :meth:`aibackup.spool.PartSpool.tee`), as long as it can be written.
        `replace`: an object already there is replaced whole when the new one completes, and stays as it
        was if it never does (a damaged part a copy repairs; callers hold the repository lock).

        Local files are fsynced on close (`replace`: written under a temporary name and renamed into
        place). On S3 the object appears only when the upload completes.
        """
        path = self.full(rel)

        def errors() -> contextlib.AbstractContextManager[None]:
            return self._errors(rel, writing=True)

        with errors():
            if self.is_local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if replace:
                    # The file methods HashingWriter calls (write, flush, fileno, close, discard).
                    tmp = cast(IO[bytes], _Replacing(path))
                    return HashingWriter(tmp, on_write=_write_back_local, hashing=hashing, copy=copy, errors=errors)
                try:
                    raw: IO[bytes] = open(path, "xb")  # noqa: SIM115 - owned by HashingWriter
                except FileExistsError:
                    raise AlreadyExistsError(f"{path} already exists") from None
                return HashingWriter(
                    raw, on_close=_fsync_local, on_write=_write_back_local, hashing=hashing, copy=copy, errors=errors
                )
            # Parts go up as a multipart upload with several parts in flight (s3fs's own file uploads one
            # at a time), while the writer encodes the next: 8 x 8 MiB in memory at most.
            return HashingWriter(self._upload(path, exclusive=not replace), hashing=hashing, copy=copy, errors=errors)

    def _transfers(self) -> tuple[Any, concurrent.futures.ThreadPoolExecutor]:
        """The boto3 client and thread pool of this repository's part uploads and reads (:mod:`aibackup.s3io`),
        made at the first: room for two objects' blocks in flight at once."""
        from aibackup import s3io

        with self._lock:  # two packs close at once (aibackup.chunk_writer), two parts copy at once (aibackup.copy)
            if self._client is None or self._pool is None:
                self._client = self.s3.client()
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    2 * s3io.CONCURRENCY, thread_name_prefix="aibackup-s3"
                )
            return self._client, self._pool

    def _upload(self, path: str, *, exclusive: bool = True) -> Any:
        from aibackup import s3io

        client, pool = self._transfers()
        bucket, _, key = path.partition("/")
        return s3io.ParallelUpload(
            client, pool, bucket, key, extra=self.s3.additional, block_size=CHUNK, exclusive=exclusive
        )

    def settle_part(self, writer: HashingWriter, rel: str) -> None:
        """Hand every byte written to a part through :meth:`create` to the storage (its sha256 and size are
        then final); :meth:`close_part` completes it later. Errors are worded as :meth:`close_part`'s."""
        with self._errors(rel, writing=True):
            writer.settle()

    def close_part(self, writer: HashingWriter, rel: str, sha256: str | None = None) -> None:
        """Complete a part written through :meth:`create` (flushes, uploads, fsyncs its folder).

        As in :meth:`write_exclusive`, an object already there with exactly this part's size and sha256 is
        this upload, applied by S3 although its answer was lost. `sha256`: the hash of the bytes written,
        proven by the caller, where the writer was made without ``hashing`` (a copy hashes what it copies)."""
        with self._errors(rel, writing=True):
            try:
                writer.close()
            except FileExistsError:
                if self.hash_file(rel) != (sha256 or writer.sha256, writer.bytes):
                    raise AlreadyExistsError(f"{self.display(rel)} already exists") from None
            if self.is_local:
                _fsync_dir(os.path.dirname(self.full(rel)))

    def replace(self, rel: str, data: bytes, *, as_stored: bool = False) -> None:
        """Replace a document atomically (readers see the old bytes or the new): the repository marker when
        its key slots change, a report resealed under a newer key, a damaged manifest or chunk pack a copy
        repairs (`as_stored`: `data` is already the stored form, as for :meth:`write_exclusive`). Callers hold the
        repository lock."""
        path = self.full(rel)
        stored = data if as_stored else self.encode_document(rel, data)
        with self._errors(rel, writing=True):
            if not self.is_local:
                self.fs.pipe_file(path, stored)  # an S3 put replaces the object atomically
                return
            folder = os.path.dirname(path)
            tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}")
            try:
                with open(tmp, "xb") as f:
                    f.write(stored)
                    _fsync_local(f)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            _fsync_dir(folder)

    def remove(self, rel: str) -> None:
        with self._errors(rel), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.full(rel))

    def unfinished_uploads(self, folders: Iterable[str], started_before: dt.datetime, *, abort: bool) -> list[str]:
        """The multipart uploads below `folders` of this S3 root begun before `started_before` and never
        completed nor aborted (paths relative to the root), aborted with `abort`; none on local disk. Only
        those folders': a repository at a bucket's root must not touch the bucket's other uploads. A process killed
        outright (SIGKILL, a lost machine) leaves its uploads open, and so does a create whose answer was
        lost (the retry opens a second upload; the first is known to nobody): S3 bills their parts, yet no
        listing of objects shows them."""
        if self.is_local:
            return []
        client, _ = self._transfers()
        from aibackup import s3io

        bucket, _, prefix = self.root.partition("/")
        root = f"{prefix}/" if prefix else ""
        found: list[str] = []
        with self._errors(""):
            try:
                for folder in folders:
                    pages = client.get_paginator("list_multipart_uploads").paginate(
                        Bucket=bucket, Prefix=f"{root}{folder.strip('/')}/"
                    )
                    for upload in (u for page in pages for u in page.get("Uploads", [])):
                        if upload["Initiated"] >= started_before:
                            continue  # maybe a running backup's or copy's
                        found.append(upload["Key"][len(root) :])
                        if abort:
                            with contextlib.suppress(client.exceptions.NoSuchUpload):  # finished meanwhile
                                client.abort_multipart_upload(
                                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                                )
            except Exception as exc:  # botocore's (AccessDenied, NotImplemented) as s3fs words them
                raise s3io.translated(exc) from None
        return sorted(found)

    def remove_emptied_folders(self, removed: Iterable[str], top: str) -> None:
        """On local disk, remove the folders that removing `removed` emptied, up to `top` (object stores have
        no folders). Only those: a folder a running backup has just created is not touched."""
        if not self.is_local:
            return
        folders = {path.rsplit("/", 1)[0] for path in removed}
        for folder in sorted(folders, key=lambda f: -f.count("/")):
            while folder.startswith(f"{top}/"):
                try:
                    os.rmdir(self.full(folder))
                except OSError:  # not empty (as wanted), or already gone
                    break
                folder = folder.rsplit("/", 1)[0]

    def remove_empty_folders(self) -> None:
        """Remove the empty folders below the root (local disk; object stores have no folders)."""
        if not self.is_local:
            return
        for folder, _dirs, _files in sorted(os.walk(self.root), key=lambda w: -len(w[0])):
            if folder != self.root:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # fails, as wanted, for a folder that is not empty

    def open_read(self, rel: str) -> IO[bytes]:
        with self._errors(rel):
            f: IO[bytes] = self.fs.open(self.full(rel), "rb", block_size=CHUNK)
            return f

    # --- errors ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, rel: str, *, writing: bool = False) -> Iterator[None]:
        """Translate filesystem and S3 client errors into one-line aibackup errors.

        FileNotFoundError and FileExistsError pass through for readers to word (a missing manifest is a
        missing bundle); on a write path they mean the location itself is broken. A folder where a file
        belongs, or a file where a folder belongs, is a damaged repository.
        """
        try:
            yield
        except AibackupError:
            raise
        except (IsADirectoryError, NotADirectoryError, FileExistsError, FileNotFoundError) as exc:
            if isinstance(exc, IsADirectoryError | NotADirectoryError) or (
                writing and isinstance(exc, FileExistsError)
            ):
                raise IntegrityError(
                    f"damaged repository: {self.display(rel)} (or a folder above it) is not what it should be: "
                    f"{first_line(exc)}"
                ) from None
            if writing:
                raise UnavailableError(f"cannot write at {self.display(rel)}: {first_line(exc)}") from None
            raise
        except PermissionError as exc:
            raise UnavailableError(f"permission denied at {self.display(rel)}: {first_line(exc)}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise UnavailableError(
                    f"no room to write {self.display(rel)} ({first_line(exc)}): free space on the repository's "
                    "disk and run it again"
                ) from None
            raise UnavailableError(f"cannot reach repository at {self.display(rel)}: {first_line(exc)}") from None
        except Exception as exc:  # botocore/aiohttp errors carry no common base class
            name = type(exc).__name__
            if name in ("NoCredentialsError", "PartialCredentialsError"):
                raise ConfigError(
                    f"no AWS credentials for {self.display()}: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (or a profile)"
                ) from None
            if name == "ProfileNotFound":  # ?profile=NAME (or AWS_PROFILE) that no AWS config file defines
                raise ConfigError(f"{self.display()}: {first_line(exc)} (see ~/.aws/config)") from None
            if "Endpoint" in name or "Connect" in name or "Timeout" in name:
                raise UnavailableError(f"cannot reach repository at {self.display(rel)}: {first_line(exc)}") from None
            raise


def same_place(url: str, other: str) -> bool:
    """Whether two repository URLs name one place (:meth:`Storage.same_place`); a URL that does not parse is
    another place (whoever opens it reports it)."""
    try:
        return Storage(url).same_place(Storage(other))
    except AibackupError:
        return False


def _endpoint(url: str | None) -> tuple[str, str, int | None, str] | None:
    """An endpoint URL as compared: scheme and host in lower case, the scheme's default port as none, the
    path without a trailing slash (``HTTP://S3.local:80/`` is ``http://s3.local``)."""
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a port: compared as written
        return scheme, parts.netloc.lower(), None, parts.path.rstrip("/")
    if port == {"http": 80, "https": 443}.get(scheme):
        port = None
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


class _Replacing:
    """A local file written under a temporary name beside `path` and renamed over it, fsynced, at ``close``
    (readers see the old file or the new one, never a part of it); ``discard`` removes the temporary file
    and leaves `path` as it was (see :meth:`Storage.create`'s `replace`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = os.path.join(os.path.dirname(path), f".tmp-{secrets.token_hex(8)}")
        self._file = open(self.tmp, "xb")  # noqa: SIM115 - closed by close() or discard()
        self.closed = False

    def write(self, data: bytes) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        if self.closed:
            return
        try:
            _fsync_local(self._file)
            self._file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self.closed = True

    def discard(self) -> None:
        self.closed = True
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
