"""Restore of configuration files into ``config:DIR`` (export and records: :mod:`.configfiles`).

Restore into ``config:DIR`` (files land directly under DIR; POSIX only). Nothing is written outside DIR:
``validate_records`` (every record, before ``import_`` writes anything; ``import_`` repeats the checks)
refuses with UnsupportedFeatureError a path that is empty, absolute, has an empty, ``.`` or ``..``
component, a backslash or NUL, or differs from its id; two records for one path; a file under a file or
symlink of the bundle; a symlink or file of DIR where a folder is needed, a folder where a file goes, a
symlink where the bundle has a file. Writes go through folder descriptors opened with O_NOFOLLOW, so a
symlink is never followed even if one is swapped in: temp file in the same folder, chmod, fsync, rename,
fsync of the folder. Symlink entries are written last, after resolving each one through the bundle's other
symlinks and those DIR holds: absolute or leaving DIR is refused, or under ``allow_lossy`` skipped and
named in the ``files`` check. Sealed values need the key (UsageError: set AIBACKUP_KEY); every file is
rebuilt and checked against its ``sha256`` first (wrong key or damage: IntegrityError, nothing written).

Modes: ``create`` refuses (TargetNotEmptyError) when a path it would write exists; ``overwrite`` and
``merge`` replace those paths. No mode ever removes what DIR holds beyond the bundle (a restore must not
destroy files it does not know; the same rule as the conversations and finetune folders). The proof reads
back the paths restored (DIR may hold others): ``secrets``, sealed again with a fresh nonce, is ``covered``
by ``sha256``; ``extra_checks`` re-reads every written file and compares its hash and mode with the record.

Structure: :class:`SafeFolder` owns every file-system access of the write and the re-read (descriptor
walking with O_NOFOLLOW, temp-file writes, re-reads); :class:`ConfigRestore` runs the four restore steps
(plan, validation, import, checks) that :class:`aibackup.connectors.files.configfiles.ConfigConnector` delegates to; the
``PathChecker`` holds the per-record checks shared by validation and import.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import json
import os
import secrets as random
import stat
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.base import MODES, DatasetDescription, ImportPlan, SecretBox
from aibackup.connectors.files.secrets import PLACEHOLDER
from aibackup.connectors.files.writeback import WriteBack
from aibackup.errors import (
    AibackupError,
    IntegrityError,
    TargetNotEmptyError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
)

MAX_LINK_HOPS = 40
TMP_PREFIX = ".aibackup-"
EXAMPLES = 3
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEED_KEY = "set AIBACKUP_KEY (or --key-file) to the repository key"


def secrets_aad(path: str) -> bytes:
    """The AAD that binds a file's sealed ``secrets`` to its path: ``b"config:" + path`` (UTF-8). The export
    seals with it and the restore opens with it, so both sides must use this one function."""
    return b"config:" + path.encode("utf-8")


def examples(items: Sequence[str]) -> str:
    """The first few `items` joined with ", ", followed by the total count when some were left out."""
    more = f", … ({len(items)} in all)" if len(items) > EXAMPLES else ""
    return ", ".join(items[:EXAMPLES]) + more


def hash_matches(data: bytes, expected: str, box: SecretBox | None) -> bool:
    """Whether `data` matches a record's ``sha256`` (``sha256:<hex>``, or ``hmac-sha256:<hex>`` checked with
    `box`'s keyed hash). False for any other prefix, or for an HMAC without a box."""
    kind, _, digest = expected.partition(":")
    if kind == "sha256":
        return hmac.compare_digest(hashlib.sha256(data).hexdigest(), digest)
    if kind == "hmac-sha256" and box is not None:
        return hmac.compare_digest(box.keyed_hash(data), digest)
    return False


def _unsafe(path: object) -> str | None:
    """Why a record's path could land outside the target folder (or nowhere), or None."""
    if not isinstance(path, str) or not path:
        return "an empty path"
    if path.startswith("/"):
        return "an absolute path"
    if "\\" in path or "\x00" in path:
        return "a backslash or NUL in the path"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "an empty, '.' or '..' component"
    return None


@dataclass
class RestoreState:
    """What validation learns and the import and its checks use (carried in ``plan.extra["state"]``)."""

    skipped: dict[str, str] = field(default_factory=dict)  # symlink path -> "a -> /etc/x" (lossy skips)
    written: list[tuple[str, str, str, int]] = field(default_factory=list)  # path, type, sha256|link, mode
    secret_files: int = 0
    redacted_files: int = 0


class SafeFolder:
    """The target folder DIR, reached only through descriptors: every folder below the root descriptor is
    opened component by component with O_NOFOLLOW, so a symlink is never followed, even one swapped in
    after the checks. Raises UnsupportedFeatureError where a symlink or file stands in for a folder and
    UnavailableError for other OS errors."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[str] = []  # the folders below DIR that this object created, in creation order
        self.made_root = False  # whether it created DIR itself

    def open_root(self) -> int:
        """A descriptor of DIR (created when missing) for the writes below it; the caller closes it."""
        try:
            self.made_root = self.made_root or not self.root.exists()
            self.root.mkdir(parents=True, exist_ok=True)
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UnavailableError(f"cannot create the target folder {self.root}: {exc.strerror}") from None

    def parent_fd(self, root_fd: int, rel: str, create: bool) -> int:
        """A descriptor of `rel`'s folder (the caller closes it), opened component by component from
        `root_fd` without following any symlink; missing folders are made when `create`."""
        fd = os.dup(root_fd)
        parts = rel.split("/")[:-1]
        for n, part in enumerate(parts):
            try:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o777, dir_fd=fd)
                    self.made.append("/".join(parts[: n + 1]))
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                where = "/".join(parts[: n + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsupportedFeatureError(
                        f"refusing to write {rel!r}: {where!r} in {self.root} is a symlink or a file, not a folder"
                    ) from None
                raise UnavailableError(f"cannot open the folder {where!r} in {self.root}: {exc.strerror}") from None
            os.close(fd)
            fd = nfd
        return fd

    def write(
        self,
        root_fd: int,
        rel: str,
        data: bytes | Iterable[bytes | memoryview],
        mode: int,
        plan_mode: str,
        link: str | None,
        before_rename: Callable[[], None] | None = None,
    ) -> None:
        """Write `rel` (a file holding `data`, given whole or as pieces in order, or a symlink to `link`):
        temp entry in the same folder (mode set, fsynced), renamed over `rel`, folder fsynced. In ``create``
        mode a `rel` that appeared since the checks raises TargetNotEmptyError and the temp entry is removed.
        `before_rename` runs once the bytes are durable and may raise to keep `rel` as it was (a streamed
        file whose hash turned out wrong)."""
        dfd = self.parent_fd(root_fd, rel, create=True)
        name, tmp = rel.rsplit("/", 1)[-1], f"{TMP_PREFIX}{random.token_hex(6)}.tmp"
        try:
            if link is not None:
                os.symlink(link, tmp, dir_fd=dfd)
                with contextlib.suppress(NotImplementedError, OSError, ValueError):  # Linux cannot chmod a link
                    os.chmod(tmp, mode, dir_fd=dfd, follow_symlinks=False)
            else:
                fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd
                )
                try:
                    back = WriteBack(fd)  # the disk writes while the next pieces come (large files)
                    for piece in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                        view = memoryview(piece)
                        while view:
                            n = os.write(fd, view)
                            view = view[n:]
                            back.wrote(n)
                    os.fchmod(fd, mode)
                    os.fsync(fd)
                except BaseException:
                    os.close(fd)
                    os.unlink(tmp, dir_fd=dfd)
                    raise
                os.close(fd)
            try:
                if before_rename is not None:
                    before_rename()
                if plan_mode == "create":
                    with contextlib.suppress(FileNotFoundError):
                        os.lstat(name, dir_fd=dfd)
                        raise TargetNotEmptyError(f"{rel!r} appeared in {self.root} during the restore")
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                os.unlink(tmp, dir_fd=dfd)
                raise
            os.fsync(dfd)
        except OSError as exc:
            raise UnavailableError(f"cannot write {rel!r} in {self.root}: {exc.strerror}") from None
        finally:
            os.close(dfd)

    def undo(self, root_fd: int, written: Iterable[str]) -> None:
        """Remove the entries `written` (files or symlinks this object wrote, none followed) and then the
        folders it made (DIR too) that are empty again: what a failed restore into a new place leaves is
        nothing. Best effort: an entry that cannot be removed stays."""
        # The entries first, then the folders, deepest first (each empty once what it held is gone).
        steps = [(rel, os.unlink) for rel in written] + [(rel, os.rmdir) for rel in reversed(self.made)]
        for rel, remove in steps:
            with contextlib.suppress(OSError, UnsupportedFeatureError, UnavailableError):
                dfd = self.parent_fd(root_fd, rel, create=False)
                try:
                    remove(rel.rsplit("/", 1)[-1], dir_fd=dfd)
                finally:
                    os.close(dfd)
        if self.made_root:
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def recheck(self, root_fd: int, rel: str, kind: str, expected: str, mode: int, box: SecretBox | None) -> str | None:
        """Why `rel` as DIR holds it differs from its record, or None: a symlink's target against `expected`;
        a file (read without following symlinks) against the hash `expected` and `mode`. Never raises."""
        name = rel.rsplit("/", 1)[-1]
        try:
            dfd = self.parent_fd(root_fd, rel, create=False)
        except AibackupError as exc:
            return str(exc)
        try:
            if kind == "symlink":
                return None if os.readlink(name, dir_fd=dfd) == expected else "symlink target differs"
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            with os.fdopen(fd, "rb") as f:
                got_mode = os.fstat(f.fileno()).st_mode & 0o7777
                data = f.read()
        except OSError as exc:
            return exc.strerror or "cannot read"
        finally:
            os.close(dfd)
        if not hash_matches(data, expected, box):
            return "content differs"
        return None if got_mode == mode else f"mode {got_mode:04o}, expected {mode:04o}"


class ConfigRestore:
    """The restore steps of a ``config:DIR`` target (see the module docstring): `plan`, `validate`, `write`,
    `checks`, in that order, sharing the :class:`RestoreState` the plan carries. `box` opens sealed values
    and checks keyed hashes (None: no repository key)."""

    def __init__(self, root: Path, box: SecretBox | None) -> None:
        self.root = root
        self.box = box
        self.folder = SafeFolder(root)

    def plan(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Writes nothing. UsageError for a bad mode or sealed secrets without a key; UnsupportedFeatureError
        for a dataset that is not configuration files (the per-record refusals come in `validate`)."""
        if mode not in MODES:
            raise UsageError(f"bad mode {mode!r}: expected one of {', '.join(MODES)}")
        if os.open not in os.supports_dir_fd or not hasattr(os, "O_NOFOLLOW"):
            raise UnsupportedFeatureError("restoring configuration files safely needs a POSIX system")
        config = source.config_json()
        if config.get("secret_files") and self.box is None:
            raise UsageError(f"{source.name!r} holds encrypted secrets ({config['secret_files']} files): {NEED_KEY}")
        state = RestoreState()

        def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
            if not state.skipped:
                return batch
            return batch.filter(pc.invert(pc.is_in(batch.column("id"), value_set=pa.array(list(state.skipped)))))

        notes: tuple[str, ...] = ()
        if config.get("redacted_files"):
            notes = (
                f"{config['redacted_files']} file(s) were backed up with --redact-secrets: they are restored with "
                f"{PLACEHOLDER.decode()} in place of their secret values",
            )
        return ImportPlan(
            source=source,
            target=DatasetDescription(name=dest, config=config, rows=source.rows, kind="config"),
            mode=mode,
            transform=transform,
            dropped=("symlinks whose target leaves the target folder, if any: skipped",) if allow_lossy else (),
            tolerances={"secrets": "covered"},
            notes=notes,
            extra={"state": state, "allow_lossy": allow_lossy},
        )

    def validate(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Every check of `write` (paths, DIR's existing entries, symlink targets, opening sealed values and
        the hash of every rebuilt file), writing nothing. Returns the rows checked."""
        check = PathChecker(self.root, self.box, plan)
        rows = 0
        for batch in batches:
            for row in batch.to_pylist():
                check.row(row)
                rows += 1
        check.finish()
        return rows

    def write(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> tuple[int, set[str]]:
        """Write the files (then the symlinks, once every target is known to stay inside DIR); nothing else in
        DIR is touched. Returns the records written and the paths restored."""
        state: RestoreState = plan.extra["state"]
        check = PathChecker(self.root, self.box, plan)
        links: list[tuple[str, str, int]] = []
        written = 0
        root_fd = self.folder.open_root()
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    data = check.row(row)
                    if row["type"] == "symlink":
                        links.append((row["path"], row["link"], row["mode"]))
                        continue
                    self.folder.write(root_fd, row["path"], data, row["mode"], plan.mode, link=None)
                    state.written.append((row["path"], "file", row["sha256"], row["mode"]))
                    state.secret_files += row["secrets"] is not None
                    state.redacted_files += row["redacted"] > 0
                    written += 1
            check.finish()
            for path, link, mode in links:
                if path not in state.skipped:
                    self.folder.write(root_fd, path, b"", mode, plan.mode, link=link)
                    state.written.append((path, "symlink", link, mode))
                    written += 1
        finally:
            os.close(root_fd)
        return written, {p for p, *_ in state.written}

    def checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """``files``: every written file re-read (without following symlinks) and its hash (HMAC for files
        with secrets) and mode compared with its record; every symlink's target compared."""
        state: RestoreState = plan.extra["state"]
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return [("files", False, f"cannot open {self.root}: {exc.strerror}")]
        try:
            found = (
                (p, self.folder.recheck(root_fd, p, kind, expected, mode, self.box))
                for p, kind, expected, mode in state.written
            )
            bad = [f"{p}: {why}" for p, why in found if why]
        finally:
            os.close(root_fd)
        if bad:
            return [("files", False, f"{len(bad)} of {len(state.written)} differ: {examples(bad)}")]
        links = sum(kind == "symlink" for _, kind, _, _ in state.written)
        kinds = []
        if state.secret_files:
            kinds.append(f"{state.secret_files} with encrypted secrets")
        if state.redacted_files:
            kinds.append(f"{state.redacted_files} redacted: restored with the placeholder {PLACEHOLDER.decode()}")
        detail = f"{len(state.written) - links} files match the manifest" + (f" ({'; '.join(kinds)})" if kinds else "")
        if links:
            detail += f"; {links} symlink(s) recreated"
        if state.skipped:
            detail += (
                f"; {len(state.skipped)} symlinks leaving the folder skipped: {examples([*state.skipped.values()])}"
            )
        return [("files", True, detail)]


class PathChecker:
    """The per-record checks shared by validation and import (see the module docstring)."""

    def __init__(self, root: Path, box: SecretBox | None, plan: ImportPlan) -> None:
        self.root = root
        self.box = box
        self.plan = plan
        self.state: RestoreState = plan.extra["state"]
        self.paths: set[str] = set()
        self.folders: set[str] = set()
        self.links: dict[str, str] = {}

    def refuse(self, path: object, why: str) -> UnsupportedFeatureError:
        return UnsupportedFeatureError(f"refusing bundle entry {path!r} for {self.root}: {why}")

    def row(self, row: Mapping[str, Any]) -> bytes:
        """Check one record; returns the bytes its file will hold (b"" for a symlink)."""
        path = row["path"]
        if row["type"] == "symlink":
            link = row["link"]
            valid = bool(link) and row["content"] is None and hash_matches(str(link).encode(), row["sha256"], None)
            self.place(row, valid_link=valid)
            return b""
        self.place(row)
        if row["content"] is None:
            raise self.refuse(path, "a file without content")
        data = self.rebuild(path, row["content"], row["secrets"])
        if not hash_matches(data, row["sha256"], self.box):
            raise IntegrityError(
                f"{path!r}: the rebuilt file does not match its {row['sha256'].partition(':')[0] or 'hash'} in the "
                "manifest (damaged bundle or another repository's key); nothing was written"
            )
        return data

    def place(self, row: Mapping[str, Any], *, valid_link: bool = True) -> None:
        """The checks of one file or symlink record that hold for any folder target: a safe path equal to its
        id, once; no file of the bundle above it; a valid mode; what DIR holds along the path; a symlink with
        a target (`valid_link`: its other fields agree), remembered for :meth:`finish`."""
        path = row["path"]
        why = _unsafe(path)
        if why:
            raise self.refuse(path, f"{why} (it would be written outside the target folder)")
        if row["id"] != path:
            raise self.refuse(path, f"its id {row['id']!r} differs from its path")
        if path in self.paths or path in self.folders:
            raise self.refuse(path, "a second record for this path, or a file where another needs a folder")
        parts = path.split("/")
        parents = ["/".join(parts[:n]) for n in range(1, len(parts))]
        if any(p in self.paths for p in parents):
            raise self.refuse(path, "its folder is a file or symlink of the bundle")
        self.paths.add(path)
        self.folders.update(parents)
        mode = row["mode"]
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise self.refuse(path, f"bad mode {mode!r}")
        if row["type"] not in ("file", "symlink"):
            raise self.refuse(path, f"type {row['type']!r} (this aibackup knows files and symlinks)")
        self.existing(path, parents, row["type"])
        if row["type"] == "symlink":
            link = row["link"]
            if not link or "\x00" in link or not valid_link:
                raise self.refuse(path, "a symlink without a target, with content, or not matching its sha256")
            self.links[path] = link

    def existing(self, path: str, parents: list[str], kind: str) -> None:
        """What DIR already holds along `path`: folders only, never a symlink, on the way."""
        for where in [*parents, path]:
            try:
                st = os.lstat(self.root / where)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise UnavailableError(f"cannot inspect {self.root / where}: {exc.strerror}") from None
            if where != path and not stat.S_ISDIR(st.st_mode):
                raise self.refuse(path, f"{where!r} in the target is a symlink or a file, not a folder")
            if where == path:
                if stat.S_ISDIR(st.st_mode):
                    raise self.refuse(path, "the target holds a folder there")
                if stat.S_ISLNK(st.st_mode) and kind == "file":
                    raise self.refuse(path, "the target holds a symlink there; remove it first")
                if self.plan.mode == "create":
                    raise TargetNotEmptyError(f"{path!r} already exists in {self.root}; use --mode overwrite")

    def rebuild(self, path: str, content: bytes, sealed: bytes | None) -> bytes:
        if sealed is None:
            return content
        box = self.box
        if box is None:
            raise UsageError(f"{path!r} holds encrypted secrets: {NEED_KEY}")
        try:
            items = json.loads(box.open(sealed, secrets_aad(path)))
            out, pos, shift = bytearray(), 0, 0
            for item in items:
                value = item["value"].encode("utf-8") if "value" in item else base64.b64decode(item["base64"])
                at = int(item["offset"]) - shift
                if not pos <= at <= len(content) or not value:
                    raise ValueError("offsets out of order")
                out += content[pos:at] + value
                pos, shift = at, shift + len(value)
            return bytes(out + content[pos:])
        except IntegrityError as exc:
            raise IntegrityError(f"{path!r}: {exc}; nothing was written") from None
        except (ValueError, TypeError, KeyError, AttributeError):
            raise IntegrityError(f"{path!r}: its sealed secrets are malformed; nothing was written") from None

    def finish(self) -> None:
        """Resolve every symlink entry; one that leaves DIR is refused, or skipped under allow_lossy."""
        for path, link in self.links.items():
            why = self.escape(path, link)
            if why is None:
                continue
            if not self.plan.extra.get("allow_lossy"):
                raise self.refuse(path, f"the symlink -> {link!r} {why}; --allow-lossy would skip it")
            self.state.skipped[path] = f"{path} -> {link}"

    def escape(self, path: str, link: str) -> str | None:
        """Why `link` (of symlink `path`) leaves DIR once restored, or None: resolved component by component
        through the bundle's symlinks and those DIR already holds."""
        if link.startswith("/"):
            return "is absolute"
        stack, pending, hops = path.split("/")[:-1], deque(link.split("/")), 0
        while pending:
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    return "points outside the target folder"
                stack.pop()
                continue
            stack.append(part)
            here = "/".join(stack)
            target = self.links.get(here)
            if target is None and here not in self.paths and here not in self.folders:
                try:
                    target = os.readlink(self.root / here)
                except OSError:
                    target = None
            if target is not None:
                hops += 1
                if hops > MAX_LINK_HOPS or target.startswith("/"):
                    return "goes through an absolute symlink or a loop"
                stack.pop()
                pending.extendleft(reversed(target.split("/")))
        return None
