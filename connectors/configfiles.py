"""Configuration files: ``config:PATH`` (a folder or one file) as a source, ``config:DIR`` as a restore target.

One dataset per source, named after the folder (or file); one CONFIG record (:mod:`manifests.records`) per
regular file and symlink, walked sorted, symlinks never followed: ``id`` = ``path`` (relative, '/'), ``type``
"file" | "symlink", ``mode`` = ``st_mode & 0o7777`` (of the link itself for a symlink), ``content`` (null
for a symlink), ``link`` (``os.readlink`` exactly), ``secrets``, ``redacted``, ``sha256`` (always prefixed:
``sha256:<hex>``, or ``hmac-sha256:<hex>`` for a file with sealed secrets; a symlink's is of its target).
Not kept: empty folders (a note names them), folder modes, mtimes, owners; sockets, pipes and devices are
skipped with a note. Refused (SourceDataError): names that are not UTF-8 or hold a backslash (they could
not be restored), files over 512 MiB.

Secrets (what is one: :mod:`connectors.secrets`)
- With the repository key (``options["secrets"]``, a SecretBox): ``content`` = the bytes with each secret
  value cut out; ``secrets`` = canonical JSON ``[{"offset": <in the original>, "value": text}]``
  (``"base64"`` for bytes that are not UTF-8) sealed with AES-256-GCM, AAD ``b"config:" + path``;
  ``sha256`` = ``hmac-sha256:`` HMAC of the original bytes (a plain hash would let a weak secret be guessed).
- No key, ``options["redact_secrets"]``: each value is replaced by ``REDACTED-BY-AIBACKUP`` (kept in
  ``content``, so the restore writes the placeholders where the values were and a backup of the restored
  folder gives the same rows); ``secrets`` null; ``redacted`` = placeholders in the file; ``sha256`` of
  those bytes. Placeholders already in a file (an earlier redacted backup) count in ``redacted`` and are
  not secrets; the restore report says which files hold placeholders.
- No key and no redaction: every file is scanned before any batch, and a secret refuses the backup
  (ConfigError, exit 2) naming file and line, never the value. No message, note or error holds a value.

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

Modes: ``create`` refuses (TargetNotEmptyError) when a path it would write exists; ``overwrite`` replaces
them and then removes the files and symlinks of DIR that are not in the bundle (never folders or special
files): DIR holds exactly the bundle; ``merge`` replaces them and removes nothing. The proof reads back the
paths restored (DIR may hold others): ``secrets``, sealed again with a fresh nonce, is ``covered`` by
``sha256``; ``extra_checks`` re-reads every written file and compares its hash and mode with the record.
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibackup.errors import (
    AibackupError,
    ConfigError,
    DatasetNotFoundError,
    IntegrityError,
    SourceDataError,
    TargetNotEmptyError,
    UnavailableError,
    UnsupportedFeatureError,
    UsageError,
)
from connectors.base import MODES, Connector, DatasetDescription, ExportState, ImportPlan, Location, SecretBox
from connectors.secrets import PLACEHOLDER, Span, find_secrets, line_of
from manifests.records import CONFIG

BATCH_BYTES = 8 * 1024 * 1024
BATCH_ROWS = 1000
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_LINK_HOPS = 40
TMP_PREFIX = ".aibackup-"
EXAMPLES = 3
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEED_KEY = "set AIBACKUP_KEY (or --key-file) to the repository key"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _aad(path: str) -> bytes:
    return b"config:" + path.encode("utf-8")


def _examples(items: Sequence[str]) -> str:
    more = f", … ({len(items)} in all)" if len(items) > EXAMPLES else ""
    return ", ".join(items[:EXAMPLES]) + more


def _splice(data: bytes, spans: Sequence[Span], insert: bytes | None) -> bytes:
    """`data` with every span cut out (`insert` None) or replaced by `insert`."""
    out, pos = bytearray(), 0
    for span in spans:
        out += data[pos : span.start]
        if insert is not None:
            out += insert
        pos = span.end
    return bytes(out + data[pos:])


@dataclass(frozen=True)
class _Entry:
    rel: str
    path: str
    st: os.stat_result


@dataclass
class _Listing:
    entries: list[_Entry] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    empty_dirs: list[str] = field(default_factory=list)


@dataclass
class _Restore:
    """What validation learns and the import and its checks use (carried in ``plan.extra["state"]``)."""

    skipped: dict[str, str] = field(default_factory=dict)  # symlink path -> "a -> /etc/x" (lossy skips)
    written: list[tuple[str, str, str, int]] = field(default_factory=list)  # path, type, sha256|link, mode
    secret_files: int = 0
    redacted_files: int = 0
    removed: list[str] = field(default_factory=list)


class ConfigConnector(Connector):
    """A folder (or one file) of configuration files."""

    kind = "config"
    dataset_kind = "config"

    def __init__(self, location: Location, *, create: bool = False, options: Mapping[str, Any] | None = None) -> None:
        """Source (`create` False): PATH must exist (DatasetNotFoundError) and be a folder or a regular file.
        Target: DIR, created on import, must not be a file. ``options``: ``secrets`` (SecretBox),
        ``redact_secrets`` (bool)."""
        super().__init__(location, create=create, options=options)
        if not location.path:
            raise UsageError(f"bad store {location.display()}: no path")
        self.root = Path(location.path)
        self._target = create
        self._box: SecretBox | None = self.options.get("secrets")
        self._redact = bool(self.options.get("redact_secrets"))
        self._states: dict[str, ExportState] = {}
        self._single = False
        #: After an import, the paths it restored: the proof reads back those only (DIR may hold others).
        self._scope: set[str] | None = None
        if not create:
            if not os.path.lexists(self.root):
                raise DatasetNotFoundError(f"no configuration files at {self.root}: it does not exist")
            st = os.stat(self.root)
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise UsageError(f"{self.root} is neither a folder nor a regular file")
            self._single = stat.S_ISREG(st.st_mode)
        elif self.root.exists() and not self.root.is_dir():
            raise UsageError(f"the restore target {self.root} is not a folder")
        self._name = self.root.name or "root"

    # --- describe / export --------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """The one dataset (named after the folder or file). A restore target answers to any name: DIR is
        whatever the bundle's dataset was called. DatasetNotFoundError for another name of a source."""
        listing = self._list()
        files = [e for e in listing.entries if stat.S_ISREG(e.st.st_mode)]
        config = {"files": len(files), "symlinks": len(listing.entries) - len(files)}
        config["bytes"] = sum(e.st.st_size for e in files)
        desc = DatasetDescription(name=self._name, config=config, rows=len(listing.entries), kind="config")
        if names is None:
            return [desc]
        for name in names:
            if not self._target and name != self._name:
                raise DatasetNotFoundError(f"{self.location.display()} holds one dataset, {self._name!r}, not {name!r}")
        return [replace(desc, name=name) for name in names]

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every file and symlink as CONFIG batches (≤ 8 MiB of content or 1000 rows each); always a full
        export. Without a key and without ``redact_secrets``, every file is scanned first and a secret
        raises ConfigError here, before any batch. SourceDataError for names or files it cannot keep."""
        listing = self._list()
        policy = "seal" if self._box is not None else "redact" if self._redact or self._target else "refuse"
        if policy == "refuse":
            self._refuse_secrets(listing)
        return self._batches(dataset.name, listing, policy)

    def export_state(self, name: str) -> ExportState | None:
        """Counts (files, bytes, secret_files, redacted_files, symlinks) and notes of the last export."""
        return self._states.get(name)

    def _show(self, rel: str) -> str:
        return rel if self._single else f"{self._name}/{rel}"

    def _list(self) -> _Listing:
        """Files and symlinks under the root, sorted, symlinks not followed (an explicit stack: no depth limit)."""
        listing = _Listing()
        if self._single:
            listing.entries.append(_Entry(self.root.name, str(self.root), os.lstat(self.root)))
            return listing
        if not self.root.is_dir():
            return listing
        stack: list[tuple[str, str]] = [(str(self.root), "")]
        while stack:
            folder, prefix = stack.pop()
            try:
                with os.scandir(folder) as it:
                    items = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                where = self._show(prefix.rstrip("/")) if prefix else self.root
                raise SourceDataError(f"cannot read the folder {where}: {exc.strerror}") from None
            if not items and prefix:
                listing.empty_dirs.append(prefix.rstrip("/"))
            subdirs = []
            for item in items:
                rel = prefix + item.name
                try:
                    rel.encode("utf-8")
                except UnicodeEncodeError:
                    raise SourceDataError(
                        f"{self._show(ascii(rel))}: a file name that is not UTF-8 cannot be backed up; rename it"
                    ) from None
                if "\\" in item.name:
                    raise SourceDataError(f"{self._show(rel)}: a name with a backslash cannot be restored; rename it")
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while the backup walked past it: not part of this snapshot
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append((item.path, rel + "/"))
                elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    listing.entries.append(_Entry(rel, item.path, st))
                else:
                    listing.special.append(rel)
            stack.extend(reversed(subdirs))
        listing.entries.sort(key=lambda e: e.rel)
        if self._scope is not None:
            listing.entries = [e for e in listing.entries if e.rel in self._scope]
        return listing

    def _read(self, entry: _Entry) -> bytes:
        if entry.st.st_size > MAX_FILE_BYTES:
            raise SourceDataError(
                f"{self._show(entry.rel)}: {entry.st.st_size} bytes is too large for a configuration file "
                f"(limit {MAX_FILE_BYTES // 2**20} MiB); back up its folder without it"
            )
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceDataError(f"cannot read {self._show(entry.rel)}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SourceDataError(f"{self._show(entry.rel)} changed while it was being backed up")
            return f.read()

    def _refuse_secrets(self, listing: _Listing) -> None:
        found: list[tuple[str, int, Span]] = []
        for entry in listing.entries:
            if stat.S_ISREG(entry.st.st_mode):
                data = self._read(entry)
                real = [s for s in find_secrets(data, entry.rel) if data[s.start : s.end] != PLACEHOLDER]
                if real:
                    found.append((entry.rel, line_of(data, real[0].start), real[0]))
        if found:
            rel, line, span = found[0]
            more = f" ({len(found) - 1} more files hold secrets)" if len(found) > 1 else ""
            raise ConfigError(
                f"{self._show(rel)}:{line} holds a secret ({span.reason}): back up into an "
                f"encrypted repository (aibackup init --encrypt and AIBACKUP_KEY) or pass --redact-secrets{more}"
            )

    def _batches(self, name: str, listing: _Listing, policy: str) -> Iterator[pa.RecordBatch]:
        rows: list[dict[str, Any]] = []
        size = files = total = sealed = 0
        redacted_notes: list[str] = []
        with_placeholders: list[str] = []
        for entry in listing.entries:
            row, replaced = self._row(entry, policy)
            if row["type"] == "file":
                files += 1
                total += entry.st.st_size
                sealed += row["secrets"] is not None
                if replaced:
                    redacted_notes.append(f"{replaced} secret value(s) redacted in {self._show(entry.rel)}")
                elif row["redacted"]:
                    with_placeholders.append(self._show(entry.rel))
            rows.append(row)
            size += len(row["content"] or b"")
            if size >= BATCH_BYTES or len(rows) >= BATCH_ROWS:
                yield pa.RecordBatch.from_pylist(rows, schema=CONFIG)
                rows, size = [], 0
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=CONFIG)
        redacted = len(redacted_notes) + len(with_placeholders)
        notes = redacted_notes[:20]
        if len(redacted_notes) > 20:
            notes.append(f"… and {len(redacted_notes) - 20} more files with redacted values")
        if sealed:
            notes.append(f"{sealed} file(s) hold secret values, sealed with the repository key (AES-256-GCM)")
        for items, text in [
            (with_placeholders, f"file(s) hold {PLACEHOLDER.decode()} placeholders of an earlier redacted backup"),
            (listing.special, "socket, pipe or device file(s) skipped"),
            (listing.empty_dirs, "empty folder(s) not kept"),
        ]:
            if items:
                notes.append(f"{len(items)} {text}: {_examples(items)}")
        config = {"files": files, "symlinks": len(listing.entries) - files, "bytes": total}
        config |= {"secret_files": sealed, "redacted_files": redacted}
        self._states[name] = ExportState(state={}, config=config, notes=tuple(notes))

    def _row(self, entry: _Entry, policy: str) -> tuple[dict[str, Any], int]:
        """The record of one entry, and how many secret values this export replaced by placeholders."""
        mode = entry.st.st_mode & 0o7777
        row: dict[str, Any] = {"id": entry.rel, "path": entry.rel, "mode": mode, "secrets": None, "redacted": 0}
        if stat.S_ISLNK(entry.st.st_mode):
            try:
                link = os.readlink(entry.path)
                sha = _sha(link.encode("utf-8"))
            except (OSError, UnicodeEncodeError):
                raise SourceDataError(f"{self._show(entry.rel)}: unreadable or not UTF-8 symlink target") from None
            return row | {"type": "symlink", "content": None, "link": link, "sha256": sha}, 0
        data = self._read(entry)
        spans = find_secrets(data, entry.rel)
        real = [s for s in spans if data[s.start : s.end] != PLACEHOLDER]
        row |= {"type": "file", "link": None, "content": data, "redacted": len(spans), "sha256": _sha(data)}
        if not real:
            return row, 0
        if policy == "seal" and self._box is not None:
            items = []
            for s in real:
                value = data[s.start : s.end]
                try:
                    items.append({"offset": s.start, "value": value.decode("utf-8")})
                except UnicodeDecodeError:
                    items.append({"offset": s.start, "base64": base64.b64encode(value).decode("ascii")})
            payload = json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            return row | {
                "content": _splice(data, real, None),
                "secrets": self._box.seal(payload, _aad(entry.rel)),
                "redacted": len(spans) - len(real),
                "sha256": "hmac-sha256:" + self._box.keyed_hash(data),
            }, 0
        if policy == "refuse":  # the file changed after the first scan
            raise ConfigError(
                f"{self._show(entry.rel)}:{line_of(data, real[0].start)} holds a secret; it changed "
                "during the backup: run it again"
            )
        # Redact until the scan finds nothing but placeholders: the row is then a function of the bytes the
        # restore writes, so a backup of the restored folder gives the same row.
        current, replaced = data, len(real)
        for _ in range(4):
            spans = find_secrets(current, entry.rel)
            real = [s for s in spans if current[s.start : s.end] != PLACEHOLDER]
            if not real:
                return row | {"content": current, "redacted": len(spans), "sha256": _sha(current)}, replaced
            current = _splice(current, real, PLACEHOLDER)
        raise SourceDataError(f"{self._show(entry.rel)}: its secrets could not be redacted; back up with a key")

    # --- restore ------------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Writes nothing. UsageError for a bad mode or sealed secrets without a key; UnsupportedFeatureError
        for a dataset that is not configuration files (the per-record refusals come in validate_records)."""
        if mode not in MODES:
            raise UsageError(f"bad mode {mode!r}: expected one of {', '.join(MODES)}")
        if source.kind != "config":
            raise UnsupportedFeatureError(f"collection {source.name!r} holds {source.kind}, not configuration files")
        if os.open not in os.supports_dir_fd or not hasattr(os, "O_NOFOLLOW"):
            raise UnsupportedFeatureError("restoring configuration files safely needs a POSIX system")
        config = source.config_json()
        if config.get("secret_files") and self._box is None:
            raise UsageError(f"{source.name!r} holds encrypted secrets ({config['secret_files']} files): {NEED_KEY}")
        state = _Restore()

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

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Every check of `import_` (paths, DIR's existing entries, symlink targets, opening sealed values and
        the hash of every rebuilt file), writing nothing. Returns the rows checked."""
        check = _Checker(self, plan)
        rows = 0
        for batch in batches:
            for row in batch.to_pylist():
                check.row(row)
                rows += 1
        check.finish()
        return rows

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Write the files (then the symlinks, once every target is known to stay inside DIR); in overwrite
        mode remove what DIR holds beyond the bundle. Returns the records written."""
        state: _Restore = plan.extra["state"]
        check = _Checker(self, plan)
        links: list[tuple[str, str, int]] = []
        written, self._scope = 0, None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UnavailableError(f"cannot create the target folder {self.root}: {exc.strerror}") from None
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    data = check.row(row)
                    if row["type"] == "symlink":
                        links.append((row["path"], row["link"], row["mode"]))
                        continue
                    self._write(root_fd, row["path"], data, row["mode"], plan.mode, link=None)
                    state.written.append((row["path"], "file", row["sha256"], row["mode"]))
                    state.secret_files += row["secrets"] is not None
                    state.redacted_files += row["redacted"] > 0
                    written += 1
            check.finish()
            for path, link, mode in links:
                if path not in state.skipped:
                    self._write(root_fd, path, b"", mode, plan.mode, link=link)
                    state.written.append((path, "symlink", link, mode))
                    written += 1
            if plan.mode == "overwrite":
                keep = {p for p, *_ in state.written}
                for entry in self._list().entries:
                    if entry.rel not in keep:
                        self._remove(root_fd, entry.rel)
                        state.removed.append(entry.rel)
        finally:
            os.close(root_fd)
        self._scope = {p for p, *_ in state.written}
        return written

    def _parent_fd(self, root_fd: int, rel: str, create: bool) -> int:
        """A descriptor of `rel`'s folder, opened component by component without following any symlink."""
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

    def _write(self, root_fd: int, rel: str, data: bytes, mode: int, plan_mode: str, link: str | None) -> None:
        """Temp entry in the same folder (mode set, fsynced), renamed over `rel`, folder fsynced."""
        dfd = self._parent_fd(root_fd, rel, create=True)
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
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchmod(fd, mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            try:
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

    def _remove(self, root_fd: int, rel: str) -> None:
        dfd = self._parent_fd(root_fd, rel, create=False)
        try:
            os.unlink(rel.rsplit("/", 1)[-1], dir_fd=dfd)  # unlink never follows a symlink
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UnavailableError(f"cannot remove {rel!r} from {self.root}: {exc.strerror}") from None
        finally:
            os.close(dfd)

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """``files``: every written file re-read (without following symlinks) and its hash (HMAC for files
        with secrets) and mode compared with its record; every symlink's target compared."""
        state: _Restore = plan.extra["state"]
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return [("files", False, f"cannot open {self.root}: {exc.strerror}")]
        try:
            found = ((p, self._recheck(root_fd, p, kind, expected, mode)) for p, kind, expected, mode in state.written)
            bad = [f"{p}: {why}" for p, why in found if why]
        finally:
            os.close(root_fd)
        if bad:
            return [("files", False, f"{len(bad)} of {len(state.written)} differ: {_examples(bad)}")]
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
                f"; {len(state.skipped)} symlinks leaving the folder skipped: {_examples([*state.skipped.values()])}"
            )
        if state.removed:
            detail += f"; removed {len(state.removed)} entries not in the bundle: {_examples(state.removed)}"
        return [("files", True, detail)]

    def _recheck(self, root_fd: int, rel: str, kind: str, expected: str, mode: int) -> str | None:
        name = rel.rsplit("/", 1)[-1]
        try:
            dfd = self._parent_fd(root_fd, rel, create=False)
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
        if not _hash_matches(data, expected, self._box):
            return "content differs"
        return None if got_mode == mode else f"mode {got_mode:04o}, expected {mode:04o}"


def _hash_matches(data: bytes, expected: str, box: SecretBox | None) -> bool:
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


class _Checker:
    """The per-record checks shared by validate_records and import_ (see the module docstring)."""

    def __init__(self, connector: ConfigConnector, plan: ImportPlan) -> None:
        self.c = connector
        self.plan = plan
        self.state: _Restore = plan.extra["state"]
        self.paths: set[str] = set()
        self.folders: set[str] = set()
        self.links: dict[str, str] = {}

    def refuse(self, path: object, why: str) -> UnsupportedFeatureError:
        return UnsupportedFeatureError(f"refusing bundle entry {path!r} for {self.c.root}: {why}")

    def row(self, row: Mapping[str, Any]) -> bytes:
        """Check one record; returns the bytes its file will hold (b"" for a symlink)."""
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
        self.existing(path, parents, row["type"])
        if row["type"] == "symlink":
            link = row["link"]
            if (
                not link
                or "\x00" in link
                or row["content"] is not None
                or not _hash_matches(link.encode(), row["sha256"], None)
            ):
                raise self.refuse(path, "a symlink without a target, with content, or not matching its sha256")
            self.links[path] = link
            return b""
        if row["type"] != "file" or row["content"] is None:
            raise self.refuse(path, f"type {row['type']!r} without content (this aibackup knows files and symlinks)")
        data = self.rebuild(path, row["content"], row["secrets"])
        if not _hash_matches(data, row["sha256"], self.c._box):
            raise IntegrityError(
                f"{path!r}: the rebuilt file does not match its {row['sha256'].partition(':')[0] or 'hash'} in the "
                "manifest (damaged bundle or another repository's key); nothing was written"
            )
        return data

    def existing(self, path: str, parents: list[str], kind: str) -> None:
        """What DIR already holds along `path`: folders only, never a symlink, on the way."""
        for where in [*parents, path]:
            try:
                st = os.lstat(self.c.root / where)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise UnavailableError(f"cannot inspect {self.c.root / where}: {exc.strerror}") from None
            if where != path and not stat.S_ISDIR(st.st_mode):
                raise self.refuse(path, f"{where!r} in the target is a symlink or a file, not a folder")
            if where == path:
                if stat.S_ISDIR(st.st_mode):
                    raise self.refuse(path, "the target holds a folder there")
                if stat.S_ISLNK(st.st_mode) and kind == "file":
                    raise self.refuse(path, "the target holds a symlink there; remove it first")
                if self.plan.mode == "create":
                    raise TargetNotEmptyError(f"{path!r} already exists in {self.c.root}; use --mode overwrite")

    def rebuild(self, path: str, content: bytes, sealed: bytes | None) -> bytes:
        if sealed is None:
            return content
        box = self.c._box
        if box is None:
            raise UsageError(f"{path!r} holds encrypted secrets: {NEED_KEY}")
        try:
            items = json.loads(box.open(sealed, _aad(path)))
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
                    target = os.readlink(self.c.root / here)
                except OSError:
                    target = None
            if target is not None:
                hops += 1
                if hops > MAX_LINK_HOPS or target.startswith("/"):
                    return "goes through an absolute symlink or a loop"
                stack.pop()
                pending.extendleft(reversed(target.split("/")))
        return None
