"""Configuration files: ``config:PATH`` (a folder or one file) as a source, ``config:DIR`` as a restore target.

One dataset per source, named after the folder (or file); one CONFIG record (:mod:`aibackup.manifests.records`) per
regular file and symlink, walked sorted, symlinks never followed: ``id`` = ``path`` (relative, '/'), ``type``
"file" | "symlink", ``mode`` = ``st_mode & 0o7777`` (of the link itself for a symlink), ``content`` (null
for a symlink), ``link`` (``os.readlink`` exactly), ``secrets``, ``redacted``, ``sha256`` (always prefixed:
``sha256:<hex>``, or ``hmac-sha256:<hex>`` for a file with sealed secrets; a symlink's is of its target).
Not kept: empty folders (a note names them), folder modes, mtimes, owners; sockets, pipes and devices are
skipped with a note. Refused (SourceDataError): names that are not UTF-8 or hold a backslash (they could
not be restored), files over 512 MiB. A later backup writes again only the parts of its parent that hold a
changed entry (:mod:`aibackup.filereuse`): the state records each entry's identity (``files``).

Secrets (what is one: :mod:`aibackup.connectors.files.secrets`)
- With the repository key (``options["secrets"]``, a SecretBox): ``content`` = the bytes with each secret
  value cut out; ``secrets`` = canonical JSON ``[{"offset": <in the original>, "value": text}]``
  (``"base64"`` for bytes that are not UTF-8) sealed with AES-256-GCM, AAD ``b"config:" + path``;
  ``sha256`` = ``hmac-sha256:`` HMAC of the original bytes (a plain hash would let a weak secret be guessed).
- ``options["redact_secrets"]`` (with or without a key: the explicit request wins): each value is
  replaced by ``REDACTED-BY-AIBACKUP`` (kept in ``content``, so the restore writes the placeholders where
  the values were and a backup of the restored folder gives the same rows); ``secrets`` null;
  ``redacted`` = placeholders in the file; ``sha256`` of those bytes. Placeholders already in a file (an
  earlier redacted backup) count in ``redacted`` and are not secrets; the restore report says which files
  hold placeholders.
- No key and no redaction: every file is scanned before any batch, and a secret refuses the backup
  (ConfigError, exit 2) naming file and line, never the value. No message, note or error holds a value.

Restore into ``config:DIR``: :mod:`aibackup.connectors.files.configfiles_restore` (the checks every record passes before
anything is written, the writes that never follow a symlink, the modes, the proof); the restore methods of
ConfigConnector delegate to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import Connector, DatasetDescription, ExportState, ImportPlan, Location, SecretBox
from aibackup.connectors.files import reuse
from aibackup.connectors.files.configfiles_restore import ConfigRestore, examples, secrets_aad
from aibackup.connectors.files.lines import version
from aibackup.connectors.files.secrets import PLACEHOLDER, Span, find_secrets, line_of
from aibackup.connectors.files.walk import Entry, Listing, check_root, named, walk
from aibackup.errors import (
    ConfigError,
    SourceDataError,
    UsageError,
)
from aibackup.manifests.records import CONFIG

BATCH_BYTES = 8 * 1024 * 1024
BATCH_ROWS = 1000
MAX_FILE_BYTES = 512 * 1024 * 1024


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _splice(data: bytes, spans: Sequence[Span], insert: bytes | None) -> bytes:
    """`data` with every span cut out (`insert` None) or replaced by `insert`."""
    out, pos = bytearray(), 0
    for span in spans:
        out += data[pos : span.start]
        if insert is not None:
            out += insert
        pos = span.end
    return bytes(out + data[pos:])


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
        #: After an import, the paths it restored: the proof reads back those only (DIR may hold others).
        self._scope: set[str] | None = None
        self._single = check_root(self.root, target=create, what="configuration files")
        self._name = self.root.name or "root"
        self._restore = ConfigRestore(self.root, self._box)

    # --- describe / export --------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """The one dataset (named after the folder or file). A restore target answers to any name: DIR is
        whatever the bundle's dataset was called. DatasetNotFoundError for another name of a source."""
        listing = self._list()
        files = [e for e in listing.entries if stat.S_ISREG(e.st.st_mode)]
        config = {"files": len(files), "symlinks": len(listing.entries) - len(files)}
        config["bytes"] = sum(e.st.st_size for e in files)
        desc = DatasetDescription(name=self._name, config=config, rows=len(listing.entries), kind="config")
        return named(desc, names, target=self._target, where=self.location.display())

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every file and symlink as CONFIG batches (≤ 8 MiB of content or 1000 rows each). Without a
        key and without ``redact_secrets``, every file is scanned first and a secret raises ConfigError
        here, before any batch. SourceDataError for names or files it cannot keep.

        With an offer of the parent's parts in `since` (:mod:`aibackup.connectors.files.reuse`), every entry
        is read once first for its identity (type, mode, placeholders, sealed or not, hash); the entries
        of unchanged parts are then left out (the backup references those parts). One of them changing
        between the two reads fails the backup with SourceDataError (run it again)."""
        listing = self._list()
        # An explicit --redact-secrets wins over the key: the user asked for no values in this bundle.
        policy = (
            "redact" if self._redact else "seal" if self._box is not None else "redact" if self._target else "refuse"
        )
        if policy == "refuse":
            self._refuse_secrets(listing)
        first: dict[str, str] = {}
        if reuse.offered(since) is not None:
            first = {e.rel: _identity(self._row(e, policy)[0]) for e in listing.entries}
        leave = {rel: first[rel] for rel in reuse.left_out(since, dict(first))}
        return self._batches(dataset.name, listing, policy, leave)

    def export_state(self, name: str) -> ExportState | None:
        """Counts (files, bytes, secret_files, redacted_files, symlinks) and notes of the last export."""
        return self._states.get(name)

    def _show(self, rel: str) -> str:
        return rel if self._single else f"{self._name}/{rel}"

    def _list(self) -> Listing:
        """Files and symlinks under the root, sorted, symlinks not followed (only the restored paths for the
        proof of a restore)."""
        listing = walk(self.root, single=self._single, show=self._show, exclude=self.options.get("exclude", ()))
        if self._scope is not None:
            listing.entries = [e for e in listing.entries if e.rel in self._scope]
        return listing

    def _read(self, entry: Entry) -> bytes:
        if entry.st.st_size > MAX_FILE_BYTES:
            raise SourceDataError(
                f"{self._show(entry.rel)}: {entry.st.st_size} bytes is too large for a configuration file "
                f"(limit {MAX_FILE_BYTES // 2**20} MiB); back up its folder without it"
            )
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceDataError(f"cannot read {self._show(entry.rel)}: {exc.strerror}") from None
        changed = f"{self._show(entry.rel)} changed while it was being backed up; run the backup again"
        with os.fdopen(fd, "rb") as f:
            before = os.fstat(f.fileno())
            # The version listed, read whole: the secret scan and the bundle read the file once each, and a
            # file written meanwhile was stored half old, half new (a model source refused it already).
            if not stat.S_ISREG(before.st_mode) or version(before) != version(entry.st):
                raise SourceDataError(changed)
            data = f.read()
            if len(data) != before.st_size or version(os.fstat(f.fileno())) != version(before):
                raise SourceDataError(changed)
            return data

    def _refuse_secrets(self, listing: Listing) -> None:
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

    def _batches(self, name: str, listing: Listing, policy: str, leave: Mapping[str, str]) -> Iterator[pa.RecordBatch]:
        """The records of `listing`, but those of `leave` (path -> the identity they must still have)."""
        rows: list[dict[str, Any]] = []
        identities: dict[str, str] = {}
        size = files = total = sealed = 0
        redacted_notes: list[str] = []
        with_placeholders: list[str] = []
        outward: list[str] = []  # symlinks leading out of the folder: a restore refuses them
        for entry in listing.entries:
            row, replaced = self._row(entry, policy)
            if row["type"] == "symlink" and _leads_out(entry.rel, row["link"]):
                outward.append(f"{self._show(entry.rel)} -> {row['link']}")
            identities[entry.rel] = _identity(row)
            if row["type"] == "file":
                files += 1
                total += entry.st.st_size
                sealed += row["secrets"] is not None
                if replaced:
                    redacted_notes.append(f"{replaced} secret value(s) redacted in {self._show(entry.rel)}")
                elif row["redacted"]:
                    with_placeholders.append(self._show(entry.rel))
            if entry.rel in leave:
                if leave[entry.rel] != identities[entry.rel]:
                    raise SourceDataError(
                        f"{self._show(entry.rel)} changed while it was being backed up; run the backup again"
                    )
                continue
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
            (
                outward,
                "symlink(s) lead out of the folder, kept as they are; a restore refuses them (--allow-lossy "
                "skips them)",
            ),
        ]:
            if items:
                notes.append(f"{len(items)} {text}: {examples(items)}")
        config = {"files": files, "symlinks": len(listing.entries) - files, "bytes": total}
        config |= {"secret_files": sealed, "redacted_files": redacted}
        self._states[name] = ExportState(state={"files": identities}, config=config, notes=tuple(notes))

    def _row(self, entry: Entry, policy: str) -> tuple[dict[str, Any], int]:
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
                "secrets": self._box.seal(payload, secrets_aad(entry.rel)),
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

    # --- restore (configfiles_restore) ------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Writes nothing. UsageError for a bad mode or sealed secrets without a key; UnsupportedFeatureError
        for a dataset that is not configuration files (the per-record refusals come in validate_records)."""
        return self._restore.plan(source, dest, mode=mode, allow_lossy=allow_lossy)

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Every check of `import_` (paths, DIR's existing entries, symlink targets, opening sealed values and
        the hash of every rebuilt file), writing nothing. Returns the rows checked."""
        return self._restore.validate(plan, batches)

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Write the files (then the symlinks, once every target is known to stay inside DIR); nothing else in
        DIR is touched. Returns the records written; the proof then reads back those paths only."""
        self._scope = None
        written, self._scope = self._restore.write(plan, batches)
        return written

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """``files``: every written file re-read (without following symlinks) and its hash (HMAC for files
        with secrets) and mode compared with its record; every symlink's target compared."""
        return self._restore.checks(plan)


def _identity(row: Mapping[str, Any]) -> str:
    """What a later backup compares to tell an entry unchanged: type, mode, placeholders, whether its
    secrets are sealed, and its hash (of the bytes, the HMAC for sealed files, a symlink's target)."""
    sealed = "sealed" if row["secrets"] is not None else "plain"
    return f"{row['type']}:{row['mode']:o}:{row['redacted']}:{sealed}:{row['sha256']}"


def _leads_out(rel: str, link: str) -> bool:
    """Whether symlink `rel` -> `link` leads out of the backed-up folder (absolute, or up past its root),
    which a restore refuses to write (configfiles_restore decides for good, through other links too)."""
    if link.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), link))
    return resolved == ".." or resolved.startswith("../")
