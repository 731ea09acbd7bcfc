"""Restore of model artifacts into ``model:DIR`` (export and records: :mod:`.connector`).

The path rules are those of every folder target (:class:`~aibackup.connectors.files.configfiles_restore.
PathChecker`): nothing is written outside DIR, no symlink of DIR is followed, symlinks of the bundle are
written last and one that would lead out of DIR is refused (or skipped under ``allow_lossy``); ``create``
refuses a path DIR already holds, ``overwrite``/``merge`` replace it, nothing else in DIR is touched.

Validation (before anything is written) also checks every file's chunk list against the chunk store: each
chunk is held, and their sizes add up to the file's. The import streams each file's chunks into a temp file
in its folder while hashing them; the file is renamed into place only when the bytes written give its
sha256 (a damaged chunk never lands: the restore stops with exit 1 naming the file, the chunk and, for a
safetensors file, the tensors its bytes belong to).

The proof: the restored folder is read back by the connector's export (each file's sha256 and, from its
header, its format and structure); ``chunks`` is ``covered`` by the sha256 (how the bytes were stored is not
content). ``extra_checks`` adds ``files`` (every file's sha256 and mode, every symlink's target),
``structure`` (every safetensors and GGUF header parses as it did at backup: offsets contiguous from 0, byte
sizes matching shapes, the file ending where its last tensor does; a file already invalid at backup is
restored as it was and said so) and, with ``load_check``, ``load`` (each safetensors file opened with the
safetensors library, every tensor's shape and dtype compared).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibackup.connectors.base import MODES, ChunkSink, DatasetDescription, ImportPlan
from aibackup.connectors.files.configfiles_restore import PathChecker, SafeFolder, examples
from aibackup.connectors.model import formats
from aibackup.connectors.model.formatinfo import FormatInfo
from aibackup.errors import IntegrityError, UnsupportedFeatureError, UsageError

ID_BYTES = 32
#: Chunks read ahead of the one being written (at most 4 MiB each: memory stays bounded).
AHEAD = 3


@dataclass
class RestoreState:
    """What validation learns and the import and checks use (carried in ``plan.extra["state"]``)."""

    skipped: dict[str, str] = field(default_factory=dict)  # symlink path -> "a -> /etc/x" (lossy skips)
    written: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> its record (as in the bundle)


def chunk_ids(row: Mapping[str, Any]) -> list[bytes]:
    """The chunk ids of a file record, in file order."""
    data: bytes = row["chunks"] or b""
    return [data[n : n + ID_BYTES] for n in range(0, len(data), ID_BYTES)]


class ModelRestore:
    """The restore steps of a ``model:DIR`` target: `plan`, `validate`, `write`, `checks`."""

    def __init__(self, root: Path, *, load_check: bool = False) -> None:
        self.root = root
        self.folder = SafeFolder(root)
        self.load_check = load_check

    def plan(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        if mode not in MODES:
            raise UsageError(f"bad mode {mode!r}: expected one of {', '.join(MODES)}")
        if os.open not in os.supports_dir_fd or not hasattr(os, "O_NOFOLLOW"):
            raise UnsupportedFeatureError("restoring model files safely needs a POSIX system")
        state = RestoreState()

        def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
            if not state.skipped:
                return batch
            return batch.filter(pc.invert(pc.is_in(batch.column("id"), value_set=pa.array(list(state.skipped)))))

        return ImportPlan(
            source=source,
            target=DatasetDescription(name=dest, config=source.config_json(), rows=source.rows, kind="model"),
            mode=mode,
            transform=transform,
            dropped=("symlinks whose target leaves the target folder, if any: skipped",) if allow_lossy else (),
            tolerances={"chunks": "covered"},
            extra={"state": state, "allow_lossy": allow_lossy},
            undone_on_failure=mode == "create",
        )

    def validate(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch], chunks: ChunkSink) -> int:
        """Every check of `write` (paths, what DIR holds, symlink targets, every chunk held and the sizes
        adding up), writing nothing. Returns the rows checked."""
        check = PathChecker(self.root, None, plan)
        rows = 0
        for batch in batches:
            for row in batch.to_pylist():
                self._check(check, row, chunks)
                rows += 1
        check.finish()
        return rows

    def _check(self, check: PathChecker, row: Mapping[str, Any], chunks: ChunkSink) -> None:
        path = row["path"]
        if row["type"] == "symlink":
            link = row["link"] or ""
            sha = "sha256:" + hashlib.sha256(link.encode()).hexdigest()
            check.place(row, valid_link=bool(link) and row["chunks"] is None and row["sha256"] == sha)
            return
        check.place(row)
        data = row["chunks"]
        if data is None or len(data) % ID_BYTES:
            raise check.refuse(path, "a file without a whole list of chunk ids")
        total = 0
        for chunk in chunk_ids(row):
            size = chunks.size(chunk)
            if size is None:
                raise IntegrityError(
                    f"refusing to restore {path!r}: {chunk_problem(chunks, chunk)}; nothing was written"
                )
            total += size
        if total != row["size"]:
            raise IntegrityError(
                f"refusing to restore {path!r}: its chunks hold {total} bytes, the manifest says {row['size']}; "
                "nothing was written"
            )

    def write(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch], chunks: ChunkSink) -> tuple[int, set[str]]:
        """Write the files (then the symlinks); returns the records written and the paths restored."""
        state: RestoreState = plan.extra["state"]
        check = PathChecker(self.root, None, plan)
        links: list[dict[str, Any]] = []
        root_fd = self.folder.open_root()
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    self._check(check, row, chunks)
                    if row["type"] == "symlink":
                        links.append(row)
                        continue
                    self._write_file(root_fd, row, chunks, plan.mode)
                    state.written[row["path"]] = row
            check.finish()
            for row in links:
                if row["path"] not in state.skipped:
                    self.folder.write(root_fd, row["path"], b"", row["mode"], plan.mode, link=row["link"])
                    state.written[row["path"]] = row
        except BaseException:
            # A damaged chunk is found as its file is written (the packs are not read twice): in create
            # mode every path was new, so what the restore wrote before it goes again (plan.undone_on_failure).
            if plan.mode == "create":
                self.folder.undo(root_fd, state.written)
                state.written.clear()
            raise
        finally:
            os.close(root_fd)
        return len(state.written), set(state.written)

    def _write_file(self, root_fd: int, row: Mapping[str, Any], chunks: ChunkSink, mode: str) -> None:
        """Stream one file's chunks into place; its sha256 is checked before it is renamed into place."""
        sha = hashlib.sha256()
        ids = chunk_ids(row)

        def pieces() -> Iterator[bytes | memoryview]:
            # Chunks are read (and decompressed) AHEAD chunks ahead in a worker thread while this one hashes
            # and writes: pyarrow, zstd, hashlib and os.write all release the GIL. Each chunk's own hash is
            # not computed: the file's sha256 proves every byte, and a mismatch is traced to its chunk.
            with ThreadPoolExecutor(1, thread_name_prefix="aibackup-chunk-read") as pool:
                ahead: deque[Future[bytes | memoryview]] = deque()
                for chunk in ids:
                    ahead.append(pool.submit(chunks.get, chunk, check=False))
                    if len(ahead) > AHEAD:
                        yield self._take(ahead, row, chunks, sha)
                while ahead:
                    yield self._take(ahead, row, chunks, sha)

        def proven() -> None:
            if "sha256:" + sha.hexdigest() != row["sha256"]:
                raise IntegrityError(f"refusing to write {row['path']!r}: {damaged(row, chunks)}")

        self.folder.write(root_fd, row["path"], pieces(), row["mode"], mode, link=None, before_rename=proven)

    @staticmethod
    def _take(
        ahead: deque[Future[bytes | memoryview]], row: Mapping[str, Any], chunks: ChunkSink, sha: Any
    ) -> bytes | memoryview:
        try:
            data = ahead.popleft().result()
        except IntegrityError:
            for pending in ahead:
                pending.cancel()
            raise IntegrityError(f"refusing to write {row['path']!r}: {damaged(row, chunks)}") from None
        sha.update(data)
        return data

    def checks(self, plan: ImportPlan, results: Mapping[str, Any]) -> list[tuple[str, bool, str]]:
        """``files``, ``structure`` and (with load_check) ``load``, from the proof's read-back `results`
        (path -> FileResult of the target's export; re-read here when the export did not run)."""
        state: RestoreState = plan.extra["state"]
        bad: list[str] = []
        structure_bad: list[str] = []
        as_before: list[str] = []
        inspected: dict[str, int] = {}
        loaded: list[tuple[str, FormatInfo]] = []
        links = 0
        for path, row in sorted(state.written.items()):
            got = results.get(path)
            if got is None:
                bad.append(f"{path}: not read back")
                continue
            back = got.row
            if row["type"] == "symlink":
                links += 1
                if back["type"] != "symlink" or back["link"] != row["link"]:
                    bad.append(f"{path}: symlink target differs")
                continue
            if back["sha256"] != row["sha256"]:
                bad.append(f"{path}: sha256 differs")
            elif back["mode"] != row["mode"]:
                bad.append(f"{path}: mode {back['mode']:04o}, expected {row['mode']:04o}")
            recorded = json.loads(row["format"]) if row["format"] else {}
            info: FormatInfo | None = got.info
            if info is None or recorded.get("format") not in ("safetensors", "gguf"):
                continue
            inspected[info.format] = inspected.get(info.format, 0) + 1
            if info.valid is not True:
                if recorded.get("valid") is True:
                    structure_bad.append(f"{path}: {info.problem}")
                else:  # a file already malformed at backup is restored as it was: not a failed restore
                    as_before.append(f"{path} ({recorded.get('problem')})")
            elif info.format == "safetensors":
                loaded.append((path, info))
        files = len(state.written) - links
        out: list[tuple[str, bool, str]] = []
        if bad:
            out.append(("files", False, f"{len(bad)} of {len(state.written)} differ: {examples(bad)}"))
        else:
            detail = f"{files} files match their sha256 and mode"
            detail += f"; {links} symlink(s) recreated" if links else ""
            if state.skipped:
                detail += (
                    f"; {len(state.skipped)} symlinks leaving the folder skipped: {examples([*state.skipped.values()])}"
                )
            out.append(("files", True, detail))
        if inspected:
            kinds = ", ".join(f"{n} {fmt}" for fmt, n in sorted(inspected.items()))
            if structure_bad:
                out.append(("structure", False, f"{len(structure_bad)} header(s) broken: {examples(structure_bad)}"))
            else:
                detail = f"{kinds} header(s) parse: offsets contiguous, sizes match shapes, files end with their data"
                if as_before:
                    detail += f"; {len(as_before)} invalid as at backup, restored as they were: {examples(as_before)}"
                out.append(("structure", True, detail))
        if self.load_check:
            problems: list[str] = []
            for path, info in loaded:
                problems += formats.load_check(self.root / path, info)
            ok = not problems
            detail = (
                f"{len(loaded)} safetensors file(s) opened with safetensors, every tensor's shape and dtype as recorded"
            )
            out.append(("load", ok, detail if ok else f"{len(problems)} problem(s): {examples(problems)}"))
        return out


def damaged(row: Mapping[str, Any], chunks: ChunkSink) -> str:
    """Why a file's chunks do not give its sha256: the damaged chunks, and the tensors their bytes hold."""
    found = [f"{chunk_problem(chunks, chunk)}{where}" for chunk, where in damaged_chunks(row, chunks)]
    if not found:
        return "its chunks do not give its sha256 (damaged repository)"
    return f"{len(found)} damaged chunk(s): {'; '.join(found[:3])}"


def damaged_chunks(
    row: Mapping[str, Any],
    chunks: ChunkSink,
    bad: set[bytes] | None = None,
    sizes: Mapping[bytes, int] | None = None,
) -> list[tuple[bytes, str]]:
    """(chunk, where in the file) of each damaged chunk of a file record: every chunk is read and checked,
    or only `bad` ones are reported when the caller already knows them. `where` names the file, the byte
    range and, for a safetensors or GGUF file whose header can still be read from its chunks, the tensors
    in it. `sizes`: the chunks' sizes as the chunk index lists them, for the caller that has it (the store's
    ``size`` is None for a chunk whose pack is gone, whose bytes are still somewhere in the file)."""
    found: list[tuple[bytes, str]] = []
    offsets: list[tuple[bytes, int, int | None]] = []  # (chunk, start, size); None from the first size unknown
    offset: int | None = 0
    for chunk in chunk_ids(row):
        size = sizes[chunk] if sizes is not None and chunk in sizes else chunks.size(chunk)
        offsets.append((chunk, offset if offset is not None else -1, size if offset is not None else None))
        offset = offset + size if offset is not None and size is not None else None
    problems: dict[bytes, str] = {}
    for chunk, _, _ in offsets:
        if bad is not None:
            if chunk in bad:
                problems[chunk] = f"chunk {chunk.hex()[:16]}… is damaged"
            continue
        try:
            chunks.get(chunk, check=True)
        except IntegrityError as exc:
            problems[chunk] = str(exc)
    if not problems:
        return found
    info = file_info(row, chunks)
    for n, (chunk, start, size) in enumerate(offsets):
        if chunk not in problems:
            continue
        if size is None:  # the chunk index does not say where it lies in the file (it is damaged or gone)
            found.append((chunk, f" ({row['path']}, chunk {n + 1} of {len(offsets)})"))
            continue
        names = formats.tensors_at(info, start, start + size) if info is not None else []
        more = f", {len(names) - 3} more" if len(names) > 3 else ""
        tensors = f"; tensor(s) {', '.join(names[:3])}{more}" if names else ""
        found.append((chunk, f" ({row['path']} bytes {start}-{start + size}{tensors})"))
    return found


def chunk_problem(chunks: ChunkSink, chunk: bytes) -> str:
    """Why chunk `chunk` cannot be read back ("" when it can)."""
    try:
        chunks.get(chunk, check=True)
    except IntegrityError as exc:
        return str(exc)
    return ""


def file_info(row: Mapping[str, Any], chunks: ChunkSink) -> FormatInfo | None:
    """What a backed-up file is, from its header read back out of its chunks (None when the head cannot be
    read: its first chunks are damaged too)."""
    ids = chunk_ids(row)
    held: list[bytes] = []

    def read_head(n: int) -> bytes:
        # Up to the first damaged chunk: a header held by intact chunks still names the tensors after it.
        while sum(len(b) for b in held) < n and len(held) < len(ids):
            try:
                held.append(bytes(chunks.get(ids[len(held)], check=True)))
            except IntegrityError:
                break
        return b"".join(held)[:n]

    info = formats.inspect(row["path"], int(row["size"]), read_head)
    return info if info.tensors else None
