"""Restoring line records into a folder (``conversations:DIR``, ``finetune:DIR``): shared by both connectors.

Rules (the connectors' docstrings repeat the ones a user meets):

- Every file of the bundle is written under DIR at its relative name; a compressed source file is written
  decompressed under its name without ``.gz``/``.zst`` (``logs/a.jsonl.gz`` -> ``logs/a.jsonl``), since the
  bundle holds decompressed lines. Two source names that map to one file name are refused.
- Never outside DIR: a relative name that is empty, absolute, holds a ``..``, ``.`` or empty component, a
  backslash or a NUL, or whose parent inside DIR is (or goes through) a symlink leading out of DIR, is
  refused with UnsupportedFeatureError naming it, before anything is written.
- A file's bytes are its records' ``raw`` values in bundle order; records of one file must be contiguous
  (line 1, 2, ... at offsets 0, len(raw 1), ...; only a file's last line may lack its newline, and no raw
  holds a newline before its end), which ``validate_records`` checks so that re-reading the written file
  gives back exactly the bundle's records. Files listed in the bundle's config without records (empty
  files) are created empty.
- Modes: ``create`` refuses (TargetNotEmptyError) when any file to be written already exists, or a
  compressed file of the bundle under its own name (other files in DIR are fine); ``overwrite`` replaces
  the bundle's files (a compressed one found under its own name by its decompressed form:
  :func:`compressed_in_place`) and leaves every other file alone; ``merge`` is refused for folders (a log
  file is restored whole or not at all: use ``overwrite``).
- Each file is written to a temporary file beside its final name (``.NAME.<random>.aibackup-tmp``, or
  ``.<random>.aibackup-tmp`` for a name too long to take that suffix),
  fsynced, then renamed over the final name once every record is written: a crash never leaves a
  half-written file under a final name (at most a temporary file, which no folder walk picks up).
- After a restore the target connector reads back only the files it wrote (the restore's scope), with
  malformed lines kept raw, so the proof compares exactly what was restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from aibackup.connectors.base import MODES, ImportPlan, Transform
from aibackup.connectors.files.lines import file_sha256, plain_name, shown
from aibackup.connectors.files.walk import check_root
from aibackup.errors import (
    TargetNotEmptyError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
)

TMP_SUFFIX = ".aibackup-tmp"
#: Temporary files held open at once while the records of several files interleave (incremental chains).
OPEN_FILES = 32


def check_folder(path: str) -> None:
    """A restore target folder must be a folder (or not exist yet, below a folder: the nearest part of its
    path that exists must be one, or nothing could be made there)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"restore target {shown(path)} is a file; name a folder to restore into")
    check_root(Path(path), target=True, what="")


def check_mode(mode: str, where: str) -> None:
    if mode not in MODES:
        raise UsageError(f"bad mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "merge":
        raise UnsupportedFeatureError(
            f"--mode merge is not supported for the folder {where}: files are restored whole; use --mode "
            "overwrite (replaces the bundle's files, keeps every other file)"
        )


def target_path(root: str, name: str) -> str:
    """The absolute path `name` is written to under `root`; UnsupportedFeatureError for a name that would
    land outside it (see the module docstring)."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise UnsupportedFeatureError(f"refusing to restore file {name!r}: its name would leave the target folder")
    real_root = os.path.realpath(root)
    parent = os.path.realpath(os.path.join(root, *parts[:-1]))
    if parent != real_root and not parent.startswith(real_root + os.sep):
        raise UnsupportedFeatureError(
            f"refusing to restore file {name!r}: a folder on its way is a link leading out of {shown(root)}"
        )
    return os.path.join(root, *parts)


def output_names(names: Sequence[str], where: str) -> dict[str, str]:
    """Source relative name -> the name written (compression suffix removed); refuses collisions."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        plain = plain_name(name)
        if plain in seen:
            raise UnsupportedFeatureError(
                f"cannot restore into {where}: {seen[plain]!r} and {name!r} would both be written as {plain!r}"
            )
        seen[plain] = name
        out[name] = plain
    return out


@dataclass(frozen=True)
class Replaced:
    """The compressed files of the bundle that an overwrite restore finds in the folder: each is replaced by
    its decompressed form (`names`, removed once the restored files are in place), and `notes` say so."""

    names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def compressed_in_place(root: str, renamed: Mapping[str, str], mode: str) -> Replaced:
    """What an overwrite restore of compressed files (`renamed`: ``a.jsonl.gz`` -> ``a.jsonl``) replaces in
    `root`: the compressed file itself, where it is there (a restore into the source's own folder). Left
    beside the decompressed file, the folder would hold both, and its next backup refuses the two names.
    Create mode refuses such a folder instead (:func:`refuse_existing`)."""
    if mode != "overwrite":
        return Replaced()
    found = tuple(old for old in sorted(renamed) if os.path.isfile(target_path(root, old)))
    if not found:
        return Replaced()
    note = f"{len(found)} compressed file(s) in the folder replaced by their decompressed form"
    return Replaced(found, (f"{note} ({found[0]} by {renamed[found[0]]})",))


def remove_replaced(root: str, names: Iterable[str]) -> None:
    """Remove the compressed files an overwrite restore replaced (:func:`compressed_in_place`), after the
    decompressed ones were renamed into place."""
    folders = set()
    for name in names:
        path = target_path(root, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UnavailableError(f"cannot remove {shown(path)}: {exc.strerror}") from None
        folders.add(os.path.dirname(path))
    for folder in folders:
        _fsync_dir(folder)


def existing(root: str, names: Iterable[str]) -> list[str]:
    return [n for n in names if os.path.lexists(os.path.join(root, *n.split("/")))]


def refuse_existing(root: str, names: Iterable[str]) -> None:
    found = existing(root, names)
    if found:
        more = f" and {len(found) - 1} more file(s) already exist" if len(found) > 1 else " already exists"
        raise TargetNotEmptyError(
            f"{shown(os.path.join(root, found[0]))}{more}; restore with --mode overwrite "
            "(replaces the bundle's files, keeps the others) or into another folder"
        )


@dataclass
class Contiguity:
    """Checks that records come in an order that writes each file back exactly (see the module docstring).

    `column` is the batch column holding the relative name ("source" or "file")."""

    column: str
    where: str
    #: name -> (next line number, next offset, whether the last raw ended with a newline)
    state: dict[str, tuple[int, int, bool]] = field(default_factory=dict)

    def check(self, batch: pa.RecordBatch) -> None:
        names = batch.column(self.column).to_pylist()
        lines = batch.column("line").to_pylist()
        offsets = batch.column("offset").to_pylist()
        for name, line, offset, raw in zip(names, lines, offsets, batch.column("raw").to_pylist(), strict=True):
            expect_line, expect_offset, ended = self.state.get(name, (1, 0, True))
            inner = raw.find(b"\n")
            if line != expect_line or offset != expect_offset or not ended or not raw or -1 < inner < len(raw) - 1:
                raise UnsupportedFeatureError(
                    f"cannot restore {name}#{line} into {self.where}: the bundle's records of {name!r} do not "
                    "form the file line after line (expected line "
                    f"{expect_line} at byte {expect_offset}), so the file cannot be written back exactly"
                )
            self.state[name] = (line + 1, offset + len(raw), raw.endswith(b"\n"))


class FileWriter:
    """Writes files under `root` through temporary files, renamed into place by :meth:`commit`."""

    def __init__(self, root: str, *, exclusive: bool) -> None:
        self.root = root
        self.exclusive = exclusive
        self._temps: dict[str, str] = {}  # name -> temporary path
        self._sha: dict[str, Any] = {}
        self._open: OrderedDict[str, IO[bytes]] = OrderedDict()
        self.written: dict[str, str] = {}  # name -> sha256 of what was written, after commit

    def touch(self, name: str) -> None:
        """Make sure `name` is written, even with no bytes."""
        self._handle(name)

    def write(self, name: str, data: bytes) -> None:
        handle = self._handle(name)
        try:
            handle.write(data)
        except OSError as exc:  # a full disk (ENOSPC), a file size limit (EFBIG): the storage, exit 3
            raise UnavailableError(f"cannot write {shown(os.path.join(self.root, name))}: {exc.strerror}") from None
        self._sha[name].update(data)

    def _handle(self, name: str) -> IO[bytes]:
        handle = self._open.get(name)
        if handle is not None:
            self._open.move_to_end(name)
            return handle
        try:
            if name not in self._temps:
                final = target_path(self.root, name)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                target_path(self.root, name)  # again: a folder made just now must not be a link out
                tmp = os.path.join(os.path.dirname(final), _temporary_name(os.path.basename(final)))
                self._temps[name] = tmp
                self._sha[name] = hashlib.sha256()
                handle = open(tmp, "xb")  # noqa: SIM115 - kept open across batches, closed by _close
            else:
                handle = open(self._temps[name], "ab")  # noqa: SIM115
        except OSError as exc:
            raise UnavailableError(f"cannot write {shown(os.path.join(self.root, name))}: {exc.strerror}") from None
        self._open[name] = handle
        if len(self._open) > OPEN_FILES:
            evicted, oldest = self._open.popitem(last=False)
            try:
                oldest.close()  # flushes what it buffered
            except OSError as exc:
                raise UnavailableError(
                    f"cannot write {shown(os.path.join(self.root, evicted))}: {exc.strerror}"
                ) from None
        return handle

    def commit(self) -> dict[str, str]:
        """fsync every file, then rename each over its final name; returns name -> sha256 written."""
        try:
            for handle in self._open.values():
                handle.close()
            self._open.clear()
            for tmp in self._temps.values():
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            finals = {name: target_path(self.root, name) for name in self._temps}
            if self.exclusive:
                for final in finals.values():
                    if os.path.lexists(final):
                        raise TargetNotEmptyError(f"{shown(final)} appeared during the restore; nothing was written")
            folders = set()
            for name, tmp in self._temps.items():
                final = finals[name]
                os.replace(tmp, final)
                folders.add(os.path.dirname(final))
                self.written[name] = self._sha[name].hexdigest()
            for folder in folders:
                _fsync_dir(folder)
        except OSError as exc:
            self.discard()
            raise UnavailableError(f"cannot write into {shown(self.root)}: {exc.strerror or exc}") from None
        except BaseException:
            self.discard()
            raise
        self._temps.clear()
        return dict(self.written)

    def discard(self) -> None:
        """Remove every temporary file not yet renamed (after an error)."""
        for handle in self._open.values():
            with contextlib.suppress(OSError):  # its buffered bytes may not fit (the full disk that stopped us)
                handle.close()
        self._open.clear()
        for tmp in self._temps.values():
            with contextlib.suppress(OSError):  # never made, or the folder went: nothing of ours to remove
                os.unlink(tmp)
        self._temps.clear()


#: The longest file name most file systems take (NAME_MAX, in bytes).
NAME_MAX = 255


def _temporary_name(name: str) -> str:
    """The temporary file `name` is written to before its rename: ``.NAME.<random>.aibackup-tmp``, or
    ``.<random>.aibackup-tmp`` where that would be longer than a file name may be (a name of 233 bytes or
    more, which the source held and the restore must write back)."""
    token = secrets.token_hex(4)
    tmp = f".{name}.{token}{TMP_SUFFIX}"
    return tmp if len(tmp.encode("utf-8", "surrogateescape")) <= NAME_MAX else f".{token}{TMP_SUFFIX}"


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is done
    finally:
        os.close(fd)


def sha_check(root: str, expected: Mapping[str, str | None], extra: str = "") -> list[tuple[str, bool, str]]:
    """The ``files`` check: every written file's sha256 on disk against the expected value (None: the
    bundle records none, then against what was written)."""
    bad = []
    for name, sha in expected.items():
        actual = file_sha256(os.path.join(root, *name.split("/")))
        if actual is None:
            bad.append(f"{name}: missing")
        elif sha is not None and actual != sha:
            bad.append(f"{name}: sha256 differs")
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        return [("files", False, "; ".join(bad[:3]) + more)]
    return [("files", True, f"{len(expected)} files{extra}, sha256 match")]


def folder_batches(
    root: str, where: str, plan: ImportPlan, batches: Iterable[pa.RecordBatch], column: str
) -> Iterator[pa.RecordBatch]:
    """The bundle's batches after ``plan.transform``, as a folder target writes them: every record names a
    file of the bundle's list (``plan.extra["files"]``) that stays inside `root`, and each file's records
    come line after line (`column` names the file: "source" or "file"). UnsupportedFeatureError otherwise,
    naming the file; a transform's ValueError (say rowids that do not rise) becomes one too."""
    allowed = plan.extra.get("files", {})
    order = Contiguity(column, where)
    for batch in batches:
        try:
            batch = plan.transform(batch)
        except ValueError as exc:
            raise UnsupportedFeatureError(f"cannot restore into {where}: {exc}") from None
        for name in set(batch.column(column).to_pylist()):
            target_path(root, name)
            if name not in allowed:
                raise UnsupportedFeatureError(
                    f"cannot restore into {where}: records name file {name!r}, which the bundle's file list "
                    "does not hold"
                )
        order.check(batch)
        yield batch


def write_runs(writer: FileWriter, names: list[str], raws: list[bytes]) -> None:
    """Write records file by file, one write per run of consecutive records of the same file."""
    start = 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            writer.write(names[start], b"".join(raws[start:i]))
            start = i


def file_renamer(renamed: Mapping[str, str], column: str) -> Transform:
    """``plan.transform`` for a folder target: compressed file names (in `column`: "source" or "file")
    become the decompressed names the folder will hold, and each ``id`` (``"<file>#<line>"``) follows."""

    def rename(batch: pa.RecordBatch) -> pa.RecordBatch:
        files = [renamed.get(s, s) for s in batch.column(column).to_pylist()]
        ids = [f"{s}#{n}" for s, n in zip(files, batch.column("line").to_pylist(), strict=True)]
        replaced = {"id": pa.array(ids, pa.string()), column: pa.array(files, pa.string())}
        arrays = [replaced.get(f.name, batch.column(f.name)) for f in batch.schema]
        return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)

    return rename
