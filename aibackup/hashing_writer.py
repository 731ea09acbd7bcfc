"""The file object a part or a chunk pack is streamed through on its way to storage: :class:`HashingWriter`
hashes (sha256) and counts every byte while the Parquet writer streams into it (no second read), in a
background thread. :meth:`aibackup.storage.Storage.create` opens one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any


class HashingWriter:
    """A binary file object that hashes (sha256) and counts every byte on its way to storage.

    Hashing and writing happen in a background thread behind a queue of at most `depth` chunks, so the
    caller (the Parquet encoder) produces the next chunk while this one is hashed and written or uploaded
    (hashlib, file writes and s3fs uploads release the GIL). An error of the background thread is raised by
    the next ``write``, ``flush`` or ``close``, worded by `errors` (a context manager factory, as
    :meth:`aibackup.storage.Storage._errors`) when given. ``sha256`` and ``bytes`` are final once ``close`` returned.
    """

    def __init__(
        self,
        raw: IO[bytes],
        on_close: Any = None,
        depth: int = 2,
        on_write: Any = None,
        *,
        hashing: bool = True,
        copy: IO[bytes] | None = None,
        errors: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self._raw = raw
        # Words the background thread's error for the user (Storage._errors: a full disk is exit 3, not an
        # internal error), wherever it surfaces: a write() in the encoder as much as close().
        self._errors = errors
        # A local copy of every byte (a spool's, aibackup.spool): best effort, dropped on the first error.
        self.copy = copy
        self._hashing = hashing  # False: a chunk pack, whose every chunk is hashed on its own (aibackup.chunk_writer)
        self._on_write = on_write  # called with `raw` after each chunk, in the background thread
        self._sha = hashlib.sha256()
        self.bytes = 0
        self.closed = False
        self._aborted = False
        self._on_close = on_close
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _drain(self) -> None:
        while True:
            chunk = self._queue.get()
            try:
                if chunk is None:
                    return
                if self._error is None:  # after an error, keep consuming so that no writer blocks
                    if self._hashing:
                        self._sha.update(chunk)
                    self._raw.write(chunk)
                    if self.copy is not None:
                        self._write_copy(chunk)
                    if self._on_write is not None:
                        self._on_write(self._raw)
            except BaseException as exc:  # handed to the caller's next call
                self._error = exc
            finally:
                self._queue.task_done()

    def _write_copy(self, chunk: bytes) -> None:
        try:
            self.copy.write(chunk)  # type: ignore[union-attr]
        except OSError:  # a full spool disk: the part itself goes on, without its copy
            self._drop_copy()

    def _drop_copy(self) -> None:
        if self.copy is not None:
            with contextlib.suppress(OSError):
                self.copy.close()
                os.unlink(self.copy.name)
            self.copy = None

    def _raise_error(self) -> None:
        if self._error is None:
            return
        if self._errors is None:
            raise self._error
        with self._errors():
            raise self._error

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # The methods pyarrow's PythonFile needs for an output stream.
    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            if self._aborted:
                # pyarrow's buffered stream flushes what it still holds into an aborted part when it is
                # garbage-collected: those bytes are discarded with the part (a new writer thread started
                # here would outlive everything).
                return len(data)
            raise ValueError(f"write to a closed part ({self.bytes} bytes were written)")
        self._raise_error()
        chunk = bytes(data)  # a copy: the caller reuses its buffer once this returns
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="aibackup-part-writer", daemon=True)
            self._thread.start()
        self._queue.put(chunk)
        self.bytes += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self._queue.join()
        self._raise_error()
        self._raw.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def settle(self) -> None:
        """Wait until every byte written so far is hashed and handed to the storage (``sha256`` and
        ``bytes`` are then final; an upload may still be running until ``close``)."""
        self._stop()
        self._raise_error()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._stop()
            self._raise_error()
            if self._on_close is not None:
                self._on_close(self._raw)
            self._raw.close()  # an S3 upload completes here (and may find the name taken)
            if self.copy is not None:
                self.copy.close()
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Close without completing (an S3 multipart upload is discarded); the caller removes leftovers."""
        if self.closed:
            return
        self.closed = self._aborted = True
        with contextlib.suppress(Exception):
            self._stop()
        self._discard()

    def _discard(self) -> None:
        self._drop_copy()
        with contextlib.suppress(Exception):
            discard = getattr(self._raw, "discard", None)
            if callable(discard):
                discard()  # fsspec/s3fs: abort the multipart upload, drop the buffer
                # Mark it closed so its __del__ does not try to upload the discarded buffer.
                setattr(self._raw, "closed", True)  # noqa: B010 - IO.closed is read-only to type checkers
            else:
                self._raw.close()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if typ is None:
            self.close()
        else:
            self.abort()
