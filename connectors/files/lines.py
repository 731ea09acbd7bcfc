"""Reading the JSON-lines files of the file-based connectors (``conversations:PATH``, ``finetune:PATH``).

What a PATH names (:func:`expand`), as a sorted list of :class:`SourceFile` (absolute path, relative name):

- **a file**: that file, whatever its suffix; its relative name is its base name.
- **a folder**: every regular file below it (recursively; symlinks to files are followed, symlinked folders
  are not, so a link cycle cannot loop) whose name ends in ``.jsonl``, ``.jsonl.gz`` or ``.jsonl.zst``;
  relative names are '/'-separated paths below the folder. Plain ``.json`` files are *not* taken: a
  ``.json`` file is usually one JSON document, not lines (name it, or match it with a glob, to include it).
  A folder without such files is an empty dataset, not an error (a log folder before its first log).
- **a glob** (a PATH that does not exist and holds ``*``, ``?`` or ``[``; ``**`` crosses folders): every
  regular file it matches, whatever its suffix, except through a symlinked folder below the fixed prefix
  (not followed, as in a folder); relative names are below the pattern's fixed prefix (the folders before
  the first component holding a wildcard). A glob matching nothing is an error.

Names sort by code point of the relative name. The dataset's name (:func:`dataset_name`) is the file's base
name without ``.gz``/``.zst`` and then ``.jsonl`` (``app.jsonl.gz`` -> ``app``), the folder's base name, or
for a glob the name of its fixed prefix folder.

Compression is chosen by the file's suffix: ``.gz`` (gzip, multi-member streams too) and ``.zst``
(Zstandard, every frame, streamed: a truncated frame is an error, never a silently short file). Offsets and
bytes are always those of the decompressed content.

Lines (:func:`iter_lines`) are split at ``\\n`` only, each kept with its terminator exactly as in the file
(``\\r\\n`` stays; a last line without a newline stays without); a line is held whole in memory (a 1 MB line
is fine), the file is not. Reading can start at a byte offset (incremental backups): plain files seek,
compressed files are decompressed and the prefix discarded.

Errors: a missing PATH is DatasetNotFoundError; an unreadable file UnavailableError; a damaged gzip/zstd
stream SourceDataError; each names the file (never its content).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from aibackup.errors import AibackupError, DatasetNotFoundError, SourceDataError, UnavailableError, first_line

if TYPE_CHECKING:
    from hashlib import _Hash

#: Suffixes a folder walk takes.
SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
#: How many names a note on left-out files shows.
EXAMPLES = 5
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
GLOB_CHARS = ("*", "?", "[")
CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """One file of a dataset: its absolute path and its '/'-separated name relative to the dataset root."""

    path: str
    name: str

    @property
    def compression(self) -> str | None:
        """ "gzip", "zstd" or None, by the file's suffix."""
        return compression_of(self.name)

    @property
    def shown(self) -> str:
        """The path as messages name it."""
        return shown(self.path)


def version(st: os.stat_result) -> tuple[int, int, int, int]:
    """What a file keeps while nothing writes it: inode, size, modification and change times (a backup that
    sees them change while it reads the file refuses it rather than store it torn)."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def identity(file: SourceFile) -> tuple[int, int, int, int] | None:
    """The file's :func:`version` now (None: it is gone; reading it says so)."""
    try:
        return version(os.stat(file.path))
    except OSError:
        return None


def compression_of(name: str) -> str | None:
    for suffix, kind in COMPRESSIONS.items():
        if name.endswith(suffix):
            return kind
    return None


def plain_name(name: str) -> str:
    """A relative name with its compression suffix removed: the name a restore writes the file under
    (``logs/a.jsonl.gz`` -> ``logs/a.jsonl``)."""
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def shown(path: str) -> str:
    """A path as a user recognises it: relative to the working folder when below it, else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def is_glob(path: str) -> bool:
    return not os.path.lexists(path) and any(c in path for c in GLOB_CHARS)


def _fixed_parts(pattern: str) -> list[str]:
    """The components of a glob before the first one holding a wildcard."""
    fixed: list[str] = []
    for part in pattern.split(os.sep):
        if any(c in part for c in GLOB_CHARS):
            break
        fixed.append(part)
    return fixed


def _glob_root(pattern: str) -> str:
    """The fixed prefix folder of a glob: the components before the first one holding a wildcard."""
    return os.sep.join(_fixed_parts(pattern)) or os.sep


def _through_symlinked_folder(match: str, fixed: int) -> bool:
    """Whether a glob's `match` reaches its file through a symlinked folder below the pattern's `fixed`
    prefix components. ``**`` follows those, so a link back up would repeat every file ~40 times (until
    ELOOP); leaving them out matches the folder walk, which does not follow symlinked folders either."""
    parts = match.split(os.sep)  # glob keeps the pattern's own prefix text in every match
    return any(os.path.islink(os.sep.join(parts[:k])) for k in range(fixed + 1, len(parts)))


def dataset_name(path: str) -> str:
    """The name of the one dataset a PATH holds (see the module docstring)."""
    if is_glob(path):
        path = _glob_root(path)
    base = os.path.basename(path.rstrip(os.sep)) or path
    if os.path.isdir(path):
        return base
    base = plain_name(base)
    return base[: -len(".jsonl")] if base.endswith(".jsonl") and len(base) > len(".jsonl") else base


def expand(path: str, exclude: Sequence[str] = ()) -> list[SourceFile]:
    """The files a PATH names, sorted by relative name, leaving out anything under an `exclude` folder
    (the repository itself, when it lies inside the source). DatasetNotFoundError for a missing path or a
    glob matching no file; SourceDataError for a name a folder restore could not write back (not UTF-8, a
    backslash) — refused at backup time, not discovered at restore time (see also `distinct_names`)."""
    if is_glob(path):
        root = _glob_root(path)
        fixed = len(_fixed_parts(path))
        found = [
            p for p in glob.glob(path, recursive=True) if os.path.isfile(p) and not _through_symlinked_folder(p, fixed)
        ]
        if not found:
            raise DatasetNotFoundError(f"no file matches {shown(path)}")
        files = [SourceFile(os.path.abspath(p), _rel(p, root)) for p in found]
    elif os.path.isdir(path):
        files = []
        for folder, dirs, names in os.walk(path, onerror=_walk_error):
            dirs.sort()
            for name in names:
                full = os.path.join(folder, name)
                if name.endswith(SUFFIXES) and os.path.isfile(full):
                    files.append(SourceFile(os.path.abspath(full), _rel(full, path)))
    elif os.path.isfile(path):
        files = [SourceFile(os.path.abspath(path), os.path.basename(path))]
    elif os.path.lexists(path):
        raise DatasetNotFoundError(f"{shown(path)} is neither a file nor a folder (a broken link?)")
    else:
        raise DatasetNotFoundError(f"{shown(path)} does not exist")
    skip = [os.path.join(os.path.abspath(e), "") for e in exclude]
    files = [f for f in files if not any(f.path.startswith(s) for s in skip)]
    for f in files:
        refuse_unrestorable(f.name, shown(f.path))
    return sorted(files, key=lambda f: f.name)


def left_out(path: str, exclude: Sequence[str] = ()) -> list[str]:
    """The backup's notes on what a folder `path` holds that :func:`expand` does not take: files whose names
    are not JSONL (``*.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``), and JSONL names that are not regular files (a
    pipe, a socket, a broken link). Nothing for a glob or one file: they name what they take."""
    if is_glob(path) or not os.path.isdir(path):
        return []
    skip = [os.path.join(os.path.abspath(e), "") for e in exclude]
    other: list[str] = []
    special: list[str] = []
    for folder, dirs, names in os.walk(path, onerror=_walk_error):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            if any(os.path.join(os.path.abspath(full), "").startswith(s) for s in skip):
                continue
            if not name.endswith(SUFFIXES):
                other.append(_rel(full, path))
            elif not os.path.isfile(full):
                special.append(_rel(full, path))
    notes = []
    if other:
        notes.append(
            f"{len(other)} file(s) of the folder left out, not JSONL (*.jsonl, *.jsonl.gz, *.jsonl.zst): "
            + ", ".join(map(repr, other[:EXAMPLES]))
            + (", …" if len(other) > EXAMPLES else "")
        )
    if special:
        notes.append(
            f"{len(special)} JSONL name(s) left out, not regular files (a pipe, a socket, a broken link): "
            + ", ".join(map(repr, special[:EXAMPLES]))
            + (", …" if len(special) > EXAMPLES else "")
        )
    return notes


def refuse_unrestorable(name: str, display: str) -> None:
    """SourceDataError when a folder restore could not write relative `name` back (not UTF-8; a backslash,
    which the restore refuses as a path separator); `display` is how the message names the file."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceDataError(f"{display!a}: a file name that is not UTF-8 cannot be backed up; rename it") from None
    if "\\" in name:
        raise SourceDataError(f"{display}: a name with a backslash cannot be restored; rename it")


def distinct_names(files: Sequence[SourceFile]) -> list[SourceFile]:
    """`files`, after checking that no two restore under one name (``a.jsonl`` beside ``a.jsonl.gz``: a
    folder restore writes both decompressed as ``a.jsonl``). SourceDataError naming both otherwise."""
    restored_as: dict[str, str] = {}
    for f in files:
        other = restored_as.setdefault(plain_name(f.name), f.name)
        if other != f.name:
            raise SourceDataError(
                f"{shown(f.path)} and {other!r} would both be restored as {plain_name(f.name)!r}; rename one"
            )
    return list(files)


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _walk_error(exc: OSError) -> None:
    raise UnavailableError(f"cannot list {shown(exc.filename or '?')}: {exc.strerror or exc}")


# --- reading ----------------------------------------------------------------------------------------------


class _ZstdReader(io.RawIOBase):
    """A streaming Zstandard reader over every frame of a file that, unlike zstandard's own stream_reader,
    refuses a stream that ends inside a frame (that one silently returns a short file)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw = raw
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._obj = self._new()
        self._fed = False  # bytes went into the current frame
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos >= len(self._out):
            chunk = self._raw.read(CHUNK)
            if not chunk:
                if self._fed and not self._obj.eof:
                    raise EOFError("the stream ends inside a Zstandard frame (truncated file)")
                return 0
            self._out, self._pos = self._feed(chunk), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = [self._obj.decompress(chunk)]
        self._fed = True
        while self._obj.eof and self._obj.unused_data:
            rest = self._obj.unused_data
            self._obj = self._new()
            out.append(self._obj.decompress(rest))
        if self._obj.eof:
            self._obj, self._fed = self._new(), False
        return b"".join(out)

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextmanager
def reading(file: SourceFile) -> Iterator[None]:
    """Turn what reading `file` raises into one-line aibackup errors naming it (never its content)."""
    try:
        yield
    except AibackupError:
        raise
    except FileNotFoundError:
        raise SourceDataError(f"{file.shown} disappeared while it was being read; run the backup again") from None
    except PermissionError:
        raise UnavailableError(f"cannot read {file.shown}: permission denied") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise SourceDataError(f"{file.shown}: damaged {file.compression} file ({first_line(exc)})") from None
    except OSError as exc:
        raise UnavailableError(f"cannot read {file.shown}: {exc.strerror or first_line(exc)}") from None
    except Exception as exc:
        if type(exc).__name__ == "ZstdError":  # zstandard's own error type, without importing it eagerly
            raise SourceDataError(f"{file.shown}: damaged zstd file ({first_line(exc)})") from None
        raise


@contextmanager
def open_file(file: SourceFile) -> Iterator[IO[bytes]]:
    """The file's decompressed bytes as a buffered binary stream (errors as in :func:`reading`)."""
    with reading(file):
        raw: IO[bytes] = open(file.path, "rb")  # noqa: SIM115 - closed below or by the wrapper
        stream: IO[bytes]
        if file.compression == "gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        elif file.compression == "zstd":
            stream = io.BufferedReader(_ZstdReader(raw), CHUNK)
        else:
            stream = raw
        try:
            yield stream
        finally:
            stream.close()
            raw.close()


def _skip(stream: IO[bytes], file: SourceFile, offset: int) -> None:
    """Position `stream` at decompressed byte `offset` (seek for plain files, read and drop otherwise)."""
    if offset <= 0:
        return
    if file.compression is None:
        if os.fstat(stream.fileno()).st_size < offset:
            raise SourceDataError(f"{file.shown} shrank while it was being backed up; run the backup again")
        stream.seek(offset)
        return
    left = offset
    while left:
        got = len(stream.read(min(left, CHUNK)))
        if not got:
            raise SourceDataError(f"{file.shown} shrank while it was being backed up; run the backup again")
        left -= got


def iter_lines(file: SourceFile, start: int = 0, first: int = 1) -> Iterator[tuple[int, int, bytes]]:
    """(offset, line number, raw bytes) of every line from byte `start` on, numbered from `first`."""
    offset, number = start, first
    with open_file(file) as stream, reading(file):
        _skip(stream, file, start)
        for raw in stream:
            yield offset, number, raw
            offset += len(raw)
            number += 1


def hash_prefix(file: SourceFile, nbytes: int) -> tuple[_Hash | None, bool]:
    """(sha256 of the first `nbytes` decompressed bytes, to carry on hashing the rest, or None when the
    file is shorter than that; whether the file holds more bytes after them)."""
    digest = hashlib.sha256()
    with open_file(file) as stream, reading(file):
        left = nbytes
        while left:
            chunk = stream.read(min(left, CHUNK))
            if not chunk:
                return None, False
            digest.update(chunk)
            left -= len(chunk)
        return digest, bool(stream.read(1))


def content_sha256(file: SourceFile) -> str:
    """sha256 (hex) of a file's decompressed bytes: what a fine-tuning dataset records per file."""
    digest = hashlib.sha256()
    with open_file(file) as stream, reading(file):
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def count_lines(file: SourceFile) -> tuple[int, int]:
    """(decompressed bytes, lines) of a file: a newline count at memory speed, plus one for a last line
    without a newline."""
    size = lines = 0
    last = b"\n"
    with open_file(file) as stream, reading(file):
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return size, lines + (last != b"\n")


def file_sha256(path: str) -> str | None:
    """sha256 of a file's bytes as stored (no decompression), or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
