"""Model artifacts: ``model:PATH`` (a folder or one file) as a source, ``model:DIR`` as a restore target.

One dataset per source, named after the folder (or file), kind ``model``: one MODEL record
(:mod:`aibackup.manifests.records`) per regular file and symlink, walked sorted, symlinks never followed
(:mod:`aibackup.connectors.files.walk`). Every file is kept, whatever it holds: safetensors (single or
sharded, with the index JSON), GGUF, PyTorch, ONNX, PEFT adapters, tokenizer and config JSON, evaluation
results. A Hugging Face cache folder (``models--ORG--NAME``) keeps its structure: the snapshots' symlinks
stay symlinks and the blobs they point to are kept once.

Each file is read once, in blocks: the blocks feed its sha256, its format inspection (from its first bytes:
:mod:`.formats`) and the chunker (:mod:`.chunking`, with cuts forced at a safetensors file's tensor
boundaries); each chunk goes to the repository's chunk store (``ChunkSink``, given by the core), which keeps
only the chunks it lacks. The record lists the file's chunk ids; its ``format`` is what the file is
(``{"format", "valid", "problem", "summary"}``). A malformed safetensors or GGUF file is backed up as it
is, its summary saying why it is invalid.

Refused (SourceDataError, exit 2), nothing committed: a file that changes while it is read (its size,
modification or change time, or the bytes read differ from the stat before), an unreadable file, a name or
symlink target that is not UTF-8 (whatever ``allow_lossy`` says, as for every folder source), a symlink
leading out of the folder (unless ``allow_lossy``: then it is skipped and named in the notes).

Restore into ``model:DIR``: :mod:`.restore`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import ChunkedConnector, ChunkSink, DatasetDescription, ExportState, ImportPlan, Location
from aibackup.connectors.files.lines import version
from aibackup.connectors.files.walk import Entry, check_root, named, walk
from aibackup.connectors.model import formats
from aibackup.connectors.model.chunking import Chunker
from aibackup.connectors.model.formatinfo import FormatInfo
from aibackup.connectors.model.restore import ModelRestore
from aibackup.errors import SourceDataError, UsageError
from aibackup.manifests.records import MODEL

#: Bytes read at a time: the chunker's, the hash's and the inspection's unit.
BLOCK = 8 * 1024 * 1024
#: Rows per batch (each row holds its file's chunk ids: 32 bytes per MiB of file).
BATCH_ROWS = 64
#: Files a restore's proof reads and hashes at once (hashlib releases the GIL; the machine this was tuned
#: on has 2 cores).
PROOF_READERS = 2


@dataclass
class FileResult:
    """What reading one file gave: its record and its format (kept for a restore's checks)."""

    row: dict[str, Any]
    info: FormatInfo | None


@dataclass
class _Export:
    """What the last export of a dataset learned: per-file summaries and notes."""

    files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: dict[str, FileResult] = field(default_factory=dict)


class ModelConnector(ChunkedConnector):
    """A folder (or one file) of model artifacts."""

    kind = "model"
    dataset_kind = "model"

    def __init__(self, location: Location, *, create: bool = False, options: Mapping[str, Any] | None = None) -> None:
        """Source (`create` False): PATH must exist (DatasetNotFoundError) and be a folder or a regular file.
        Target: DIR, created on import, must not be a file. ``options``: ``allow_lossy`` (skip symlinks
        leading out of the folder), ``exclude`` (paths never backed up: the repository), ``load_check``
        (a restore opens every safetensors file with the safetensors library)."""
        super().__init__(location, create=create, options=options)
        if not location.path:
            raise UsageError(f"bad store {location.display()}: no path")
        self.root = Path(location.path)
        self._target = create
        self._exports: dict[str, _Export] = {}
        #: After an import, the paths it restored: the proof reads back those only (DIR may hold others).
        self._scope: set[str] | None = None
        self._single = check_root(self.root, target=create, what="model")
        self._name = self.root.name or "root"
        self._restore = ModelRestore(self.root, load_check=bool(self.options.get("load_check")))

    # --- describe / export --------------------------------------------------------------------------------

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """The one dataset (named after the folder or file). A restore target answers to any name."""
        entries = self._entries()
        files = [e for e in entries if stat.S_ISREG(e.st.st_mode)]
        config = {"files": len(files), "symlinks": len(entries) - len(files), "bytes": sum(e.st.st_size for e in files)}
        desc = DatasetDescription(name=self._name, config=config, rows=len(entries), kind="model")
        return named(desc, names, target=self._target, where=self.location.display())

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every file and symlink as MODEL batches, each file read once (see the module docstring). Needs
        the chunk store (:meth:`use_chunks`); a restore target's export (the proof) stores nothing and
        leaves ``chunks`` null: a restored file is proven by its sha256."""
        if self.chunks is None and not self._target:
            raise RuntimeError("internal error: a model backup needs the repository's chunk store")
        state = self._exports[dataset.name] = _Export()
        return self._batches(self._entries(state), state)

    def export_state(self, name: str) -> ExportState | None:
        """Per-file summaries (path, type, mode, size, sha256, chunks, format) and the chunker's settings."""
        state = self._exports.get(name)
        if state is None:
            return None
        chunker = Chunker(self.chunks.seed if self.chunks is not None else 0).settings()
        config = {
            "files": state.files,
            "chunker": chunker,
            "bytes": sum(f["size"] for f in state.files),
            "formats": _format_counts(state.files),
        }
        return ExportState(state={}, config=config, notes=tuple(state.notes))

    def _entries(self, state: _Export | None = None) -> list[Entry]:
        """The files and symlinks to read (what is left out is noted in `state`)."""
        if self._single:  # one file, read through a symlink if it was named through one
            return [Entry(self.root.name, os.path.realpath(self.root), os.stat(self.root))]
        listing = walk(self.root, single=False, show=self._show, exclude=self.options.get("exclude", ()))
        if state is not None:
            for found, what in (
                (listing.special, "socket, pipe or device file(s) skipped"),
                (listing.empty_dirs, "empty folder(s) not kept"),
            ):
                if found:
                    state.notes.append(
                        f"{len(found)} {what}: {', '.join(found[:3])}{', ...' if len(found) > 3 else ''}"
                    )
        entries = listing.entries
        if self._scope is not None:
            entries = [e for e in entries if e.rel in self._scope]
        return entries

    def _show(self, rel: str) -> str:
        return rel if self._single else f"{self._name}/{rel}"

    def _batches(self, entries: list[Entry], state: _Export) -> Iterator[pa.RecordBatch]:
        chunker = Chunker(self.chunks.seed if self.chunks is not None else 0)
        rows: list[dict[str, Any]] = []
        # A backup reads one file at a time, its sha256 one block behind in a thread of its own (the chunker
        # and the chunk ids keep this thread busy). A restore's proof only hashes: PROOF_READERS files at once.
        workers = PROOF_READERS if self._target else 1
        with ThreadPoolExecutor(workers, thread_name_prefix="aibackup-file-read") as pool:
            hasher = None if self._target else pool
            if self._target:
                found = pool.map(lambda e: self._entry(e, chunker, None, state), entries)
            else:
                found = (self._entry(e, chunker, hasher, state) for e in entries)
            for entry, result in zip(entries, found, strict=True):
                if result is None:
                    continue
                state.results[entry.rel] = result
                state.files.append(_summary(result))
                rows.append(result.row)
                if len(rows) >= BATCH_ROWS:
                    yield pa.RecordBatch.from_pylist(rows, schema=MODEL)
                    rows = []
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=MODEL)

    def _entry(
        self, entry: Entry, chunker: Chunker, hasher: ThreadPoolExecutor | None, state: _Export
    ) -> FileResult | None:
        """One file or symlink read (None: a symlink skipped under allow_lossy)."""
        if stat.S_ISLNK(entry.st.st_mode):
            row = self._symlink(entry, state)
            return None if row is None else FileResult(row, None)
        return self._file(entry, chunker, hasher)

    def _symlink(self, entry: Entry, state: _Export) -> dict[str, Any] | None:
        """A symlink's record, or None when it leads out of the folder and ``allow_lossy`` skips it. A target
        that is not UTF-8 is refused like a name that is not (no record can hold it: even ``allow_lossy``)."""
        link = os.readlink(entry.path)
        try:
            link.encode("utf-8")
        except UnicodeEncodeError:
            raise SourceDataError(
                f"{self._show(entry.rel)} is a symlink to {link!a}: a target that is not UTF-8 cannot be backed "
                "up; point it at a UTF-8 name"
            ) from None
        if not self._single and _leaves(self.root, entry.rel, link):
            if not self.options.get("allow_lossy"):
                raise SourceDataError(
                    f"{self._show(entry.rel)} is a symlink to {link!r}, outside the folder: back up the folder it "
                    "points into, or pass --allow-lossy to skip it"
                )
            state.notes.append(f"symlink {self._show(entry.rel)} -> {link} leads out of the folder: skipped")
            return None
        return {
            "id": entry.rel,
            "path": entry.rel,
            "type": "symlink",
            "mode": stat.S_IMODE(entry.st.st_mode),
            "size": 0,
            "sha256": "sha256:" + hashlib.sha256(link.encode()).hexdigest(),
            "link": link,
            "chunks": None,
            "format": None,
        }

    def _file(self, entry: Entry, chunker: Chunker, hasher: ThreadPoolExecutor | None) -> FileResult:
        """Read one file once: sha256 (in `hasher`'s thread, else here), format, chunks (stored in the chunk
        store; none for a restore's proof)."""
        where = self._show(entry.rel)
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceDataError(f"cannot read {where}: {exc.strerror}") from None
        with os.fdopen(fd, "rb", buffering=0) as f:
            before = os.fstat(f.fileno())
            if not stat.S_ISREG(before.st_mode) or version(before) != version(entry.st):
                raise SourceDataError(f"{where} changed while it was being backed up; run the backup again")
            size = before.st_size
            reader = _Blocks(f, where)
            info = formats.inspect(entry.rel, size, reader.head)
            sha = hashlib.sha256()
            pending: list[Future[None]] = []

            def hashed() -> Iterator[bytes]:
                # The file's sha256 runs in the hasher's thread, one block behind (hashlib releases the GIL).
                for block in reader.blocks():
                    if hasher is None:
                        sha.update(block)
                        yield block
                        continue
                    if pending:
                        pending.pop().result()
                    pending.append(hasher.submit(sha.update, block))
                    yield block

            ids: list[bytes] = []
            sink = self.chunks
            if sink is None or self._target:  # a restore's proof: the bytes are proven by their sha256
                for _ in hashed():
                    pass
            else:
                for piece in chunker.chunks(hashed(), info.cuts()):
                    chunk = sink.chunk_id(piece)
                    sink.put(chunk, piece)
                    ids.append(chunk)
            if pending:
                pending.pop().result()
            after = os.fstat(f.fileno())
            if reader.read != size or version(after) != version(before):
                raise SourceDataError(f"{where} changed while it was being backed up; run the backup again")
        row = {
            "id": entry.rel,
            "path": entry.rel,
            "type": "file",
            "mode": stat.S_IMODE(before.st_mode),
            "size": size,
            "sha256": "sha256:" + sha.hexdigest(),
            "link": None,
            "chunks": None if self._target else b"".join(ids),
            "format": format_json(info),
        }
        return FileResult(row, info)

    # --- restore ------------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        return self._restore.plan(source, dest, mode=mode, allow_lossy=allow_lossy)

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        return self._restore.validate(plan, batches, self._store())

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        written, paths = self._restore.write(plan, batches, self._store())
        self._scope = paths
        return written

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        state = self._exports.get(plan.target.name)
        if state is None:  # the proof's export did not run (it could not describe the target): read now
            state = _Export()
            for _ in self._batches(self._entries(), state):
                pass
        return self._restore.checks(plan, state.results)

    def _store(self) -> ChunkSink:
        if self.chunks is None:
            raise RuntimeError("internal error: a model restore needs the repository's chunk store")
        return self.chunks


class _Blocks:
    """A file read once in BLOCK-sized pieces, the first of them kept while the format inspection asks for
    its head (at most the head's bytes are held: never the whole file)."""

    def __init__(self, f: Any, where: str) -> None:
        self._f = f
        self._where = where
        self._held: list[bytes] = []
        self.read = 0

    def _next(self) -> bytes:
        try:
            block: bytes = self._f.read(BLOCK)
        except OSError as exc:
            raise SourceDataError(f"cannot read {self._where}: {exc.strerror}") from None
        self.read += len(block)
        return block

    def head(self, n: int) -> bytes:
        """The file's first `n` bytes (fewer at its end), read ahead and kept for :meth:`blocks`."""
        while sum(len(b) for b in self._held) < n:
            block = self._next()
            if not block:
                break
            self._held.append(block)
        return b"".join(self._held)[:n] if len(self._held) != 1 else self._held[0][:n]

    def blocks(self) -> Iterator[bytes]:
        """Every block of the file in order, the held ones first."""
        while self._held:
            yield self._held.pop(0)
        while block := self._next():
            yield block


def _leaves(root: Path, rel: str, link: str) -> bool:
    """Whether symlink `rel` (under `root`) to `link` resolves outside `root`."""
    if os.path.isabs(link):
        target = os.path.normpath(link)
    else:
        target = os.path.normpath(os.path.join(root, os.path.dirname(rel), link))
    base = os.path.realpath(root)
    resolved = os.path.realpath(target)
    return os.path.commonpath([base, resolved]) != base


def _summary(result: FileResult) -> dict[str, Any]:
    """A file's entry in the manifest's ``config.files``."""
    row = result.row
    entry: dict[str, Any] = {"path": row["path"], "type": row["type"], "mode": row["mode"], "size": row["size"]}
    entry["sha256"] = row["sha256"]
    if row["type"] == "symlink":
        entry["link"] = row["link"]
    else:
        entry["chunks"] = len(row["chunks"] or b"") // 32
        entry["format"] = json.loads(row["format"]) if row["format"] else None
    return entry


def _format_counts(files: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in files:
        fmt = (f.get("format") or {}).get("format")
        if fmt:
            counts[fmt] = counts.get(fmt, 0) + 1
    return dict(sorted(counts.items()))


def format_json(info: FormatInfo) -> str:
    """The ``format`` column: canonical JSON of what a file is."""
    doc = {"format": info.format, "valid": info.valid, "problem": info.problem, "summary": info.summary}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
