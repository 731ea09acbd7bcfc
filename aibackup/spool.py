"""A local spool of the parts one command reads several times from a remote repository.

A restore reads each part up to four times (the re-hash before anything is written, the validation, the
import, the content check) and ``verify --read-data`` twice (the re-hash, then the records against the
dataset digest). From S3 each read would be a download, slow and billed. With a spool the first read
downloads the part once, hashing it on the way, into a private temporary folder; every later read opens
that local copy (memory-mapped). A local repository needs none: its parts are read where they lie.

The spool holds the parts in their stored form: an encrypted repository's parts stay encrypted on the local
disk. It is removed when the command ends (:meth:`PartSpool.close`), and a part can be dropped earlier
(:meth:`PartSpool.drop`: verify keeps one dataset's parts at a time). A part the spool's disk has no room for
(its size plus :data:`RESERVE` free) is not spooled: it is hashed from the repository, and later reads go
back to the repository, slower but correct. ``AIBACKUP_SPOOL_DIR`` chooses the folder (default: the system's
temporary folder).

A process killed outright (``kill -9``, the OOM killer, a lost machine) cannot remove its spool, which may
hold a whole bundle. So every spool folder has an owner file its process holds an exclusive ``flock`` on
for as long as the folder lives; when a command makes a new spool it first removes, in the same parent
folder, every spool whose owner file it can lock: the kernel released that lock when the owner died
(:func:`sweep_dead`). A folder without an owner file (an older aibackup's, or one being set up) is left
alone.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from typing import IO

import pyarrow as pa

from aibackup.errors import ConfigError
from aibackup.storage import Storage

try:
    import fcntl
except ImportError:  # not POSIX: spools of killed processes stay until the system cleans its temporary folder
    fcntl = None  # type: ignore[assignment]

#: The environment variable naming the folder spools are made in (default: the system's temporary folder).
SPOOL_DIR_ENV = "AIBACKUP_SPOOL_DIR"
#: Free bytes the spool leaves on its disk beyond the part it writes.
RESERVE = 512 * 1024 * 1024
#: Parts fetched at once by :meth:`PartSpool.fetch_ahead` (each with its own ranged GETs in flight).
PARTS_AT_ONCE = 2
#: Every spool folder's name starts with this (``tempfile.mkdtemp`` adds a random suffix).
PREFIX = "aibackup-spool-"
#: The file in a spool folder its owning process holds an exclusive flock on while the folder is in use.
OWNER = "owner.lock"


class PartSpool:
    """Local copies of a remote repository's parts, for one command (see the module docstring)."""

    def __init__(self, storage: Storage, directory: str | None = None) -> None:
        self.storage = storage
        self._parent = directory or os.environ.get(SPOOL_DIR_ENV) or None
        self._unusable = False  # the folder could not be made: every read goes to the repository
        self._dir: str | None = None
        self._owner: IO[bytes] | None = None  # the flocked owner file (see the module docstring)
        self._files: dict[str, str] = {}  # part path -> local copy
        self._names = itertools.count()
        self._lock = threading.Lock()
        self._ahead: dict[str, concurrent.futures.Future[tuple[str, int]]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _folder(self) -> str | None:
        """The spool's folder, made on first use; None when it cannot be made (a read-only or full disk, no
        inodes left): the spool is then not used and every read goes to the repository, as for a part the
        disk has no room for. ``AIBACKUP_SPOOL_DIR`` naming no folder is a mistake to be told (ConfigError):
        the spool would quietly never be used where it was meant to be."""
        with self._lock:
            if self._dir is None and not self._unusable:
                parent = self._parent or tempfile.gettempdir()
                if self._parent is not None and not os.path.isdir(self._parent):
                    what = "a file" if os.path.exists(self._parent) else "not there"
                    raise ConfigError(f"{SPOOL_DIR_ENV}={self._parent}: not a folder ({what})")
                sweep_dead(parent)
                try:
                    self._dir = tempfile.mkdtemp(prefix=PREFIX, dir=parent)  # mode 0700
                    self._owner = own(self._dir)
                except OSError:
                    if self._dir is not None:
                        shutil.rmtree(self._dir, ignore_errors=True)
                        self._dir = None
                    self._unusable = True
            return self._dir

    def fetch_ahead(self, parts: Iterable[tuple[str, int]]) -> None:
        """Start fetching these (path, size) parts in the background, in this order, so that the caller works
        on one part while the next ones download: the first alone (the caller waits for it, so it gets the
        whole connection), then :data:`PARTS_AT_ONCE` at a time (one finishing while the next starts).
        :meth:`hash` and :meth:`open` of a part fetched ahead wait for it (and :meth:`hash` raises what its
        fetch raised)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(PARTS_AT_ONCE, thread_name_prefix="aibackup-spool")
        first: concurrent.futures.Future[tuple[str, int]] | None = None
        for rel, size in parts:
            if rel not in self._ahead and rel not in self._files:
                if first is None:
                    first = self._ahead[rel] = self._pool.submit(self._fetch, rel, size)
                else:
                    self._ahead[rel] = self._pool.submit(self._fetch_after, first, rel, size)

    def _fetch_after(
        self, first: concurrent.futures.Future[tuple[str, int]], rel: str, size_hint: int
    ) -> tuple[str, int]:
        concurrent.futures.wait([first])  # its outcome is for hash() to report
        return self._fetch(rel, size_hint)

    def hash(self, rel: str, size_hint: int) -> tuple[str, int]:
        """sha256 and size of the part at `rel`, read once from the repository and kept in the spool when
        its disk has room for `size_hint` bytes (the manifest's size). FileNotFoundError passes through."""
        ahead = self._ahead.pop(rel, None)
        if ahead is not None:
            return ahead.result()
        if rel in self._files:
            return _hash_local(self._files[rel])
        return self._fetch(rel, size_hint)

    def _fetch(self, rel: str, size_hint: int) -> tuple[str, int]:
        # Only the repository's errors leave here: the local disk failing (full, read-only, out of inodes)
        # means reading from the repository instead, never a part reported missing or damaged.
        folder = self._folder()
        if folder is None or not _has_room(folder, size_hint + RESERVE):
            return self.storage.hash_file(rel, size_hint)
        local = os.path.join(folder, f"{next(self._names):06d}.part")
        try:
            out = open(local, "xb")  # noqa: SIM115 - closed below, its own errors told from the repository's
        except OSError:
            return self.storage.hash_file(rel, size_hint)
        sha = hashlib.sha256()
        size = 0
        try:
            with out:
                for block in self.storage.read_blocks(rel, size_hint):
                    sha.update(block)
                    size += len(block)
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise _LocalDiskFailed from exc
                try:
                    out.flush()
                except OSError as exc:
                    raise _LocalDiskFailed from exc
        except _LocalDiskFailed:
            _remove(local)
            return self.storage.hash_file(rel, size_hint)
        except BaseException:
            _remove(local)
            raise
        with self._lock:
            self._files[rel] = local
        return sha.hexdigest(), size

    def tee(self) -> IO[bytes] | None:
        """A new local file for the copy of a part being written (``Storage.create(copy=…)``): a backup's
        later pass over what it wrote (the search baseline's) then reads it here, not from the repository.
        None when the spool's disk is short of room. Register it with :meth:`keep` once the part is written."""
        folder = self._folder()
        if folder is None or not _has_room(folder, 2 * RESERVE):
            return None
        try:
            return open(os.path.join(folder, f"{next(self._names):06d}.part"), "xb")
        except OSError:  # the disk refuses it: the later pass reads from the repository
            return None

    def keep(self, rel: str, copy: IO[bytes] | None) -> None:
        """Serve part `rel` from `copy` (closed and complete, as ``HashingWriter`` leaves a copy that held)."""
        if copy is not None:
            with self._lock:
                self._files[rel] = copy.name

    def holds(self, rel: str) -> bool:
        """Whether part `rel` is read from a local copy (fetched, or kept from its writer), not the repository."""
        return rel in self._files

    def open(self, rel: str) -> IO[bytes] | pa.NativeFile:
        """The part at `rel`: its local copy when spooled, else the repository's object."""
        ahead = self._ahead.get(rel)
        if ahead is not None:
            concurrent.futures.wait([ahead])  # its outcome is for hash() to report
        local = self._files.get(rel)
        if local is None:
            return self.storage.open_read(rel)
        return pa.memory_map(local)

    def discard(self, rel: str) -> None:
        """Remove the local copy of part `rel` (a later read downloads it again); one fetched ahead is
        waited for first."""
        ahead = self._ahead.pop(rel, None)
        if ahead is not None:
            concurrent.futures.wait([ahead])
        with self._lock:
            local = self._files.pop(rel, None)
        if local is not None:
            with contextlib.suppress(OSError):
                os.unlink(local)

    def drop(self) -> None:
        """Remove every local copy (the spool stays usable); fetches still running are waited for."""
        for ahead in self._ahead.values():
            ahead.cancel()
        concurrent.futures.wait(list(self._ahead.values()))
        self._ahead.clear()
        for local in self._files.values():
            with contextlib.suppress(OSError):
                os.unlink(local)
        self._files.clear()

    def close(self) -> None:
        self.drop()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._owner is not None:
            self._owner.close()  # releases the lock, after the folder is gone
            self._owner = None


def own(folder: str) -> IO[bytes] | None:
    """Lock a new owner file in the new temporary `folder` (a spool's, a drill's scratch store's) and return
    it (kept open: closing it, or the process dying, releases the lock). It is locked under another name and
    renamed into place, so that a sweep never finds the owner file unlocked while its folder is in use. None
    where files cannot be locked (the folder is then never swept)."""
    if fcntl is None:
        return None
    handle = open(os.path.join(folder, f"{OWNER}.new"), "xb")  # noqa: SIM115 - open while the spool lives
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without locks (some network mounts)
        handle.close()
        return None
    os.rename(handle.name, os.path.join(folder, OWNER))
    return handle


def sweep_dead(parent: str, prefix: str = PREFIX) -> list[str]:
    """Remove the folders in `parent` named `prefix`… (spools by default) whose owner died (their owner file
    can be locked: the kernel released the lock of the process that held it, see :func:`own`) and return
    their paths. A folder that is in use, has no owner file, or cannot be examined is left alone; nothing
    here raises for one folder."""
    if fcntl is None:
        return []
    removed = []
    try:
        entries = [e.path for e in os.scandir(parent) if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for folder in entries:
        # No owner file (an older aibackup's folder, or one being set up), not ours to read, or its lock held
        # (its owner lives; or locks fail there and nothing can be told): left alone.
        with contextlib.suppress(OSError), open(os.path.join(folder, OWNER), "rb") as owner:
            fcntl.flock(owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class _LocalDiskFailed(Exception):
    """Writing the spool's local copy failed (the disk, not the repository)."""


def _has_room(folder: str, wanted: int) -> bool:
    try:
        return shutil.disk_usage(folder).free >= wanted
    except OSError:
        return False


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _hash_local(path: str) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(8 * 1024 * 1024):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size
