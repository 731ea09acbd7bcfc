"""What the JSONL-file connectors share (conversation logs, fine-tuning datasets): one dataset per source,
named after its PATH (a file, a folder or a glob, read as :mod:`.lines` documents), and a folder as the
restore target, written whole through :class:`.filetarget.FileWriter` and checked file by file by sha256.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import Connector, ExportState, ImportPlan, Location
from aibackup.connectors.files import lines
from aibackup.connectors.files.filetarget import (
    FileWriter,
    check_folder,
    check_mode,
    folder_batches,
    remove_replaced,
    sha_check,
    write_runs,
)
from aibackup.errors import DatasetNotFoundError


class LineFiles(Connector):
    """A source PATH of JSONL files, or a target folder (`create`). Subclasses export and plan; this holds
    the paths, names, file lists, the folder writing and its sha256 check."""

    def __init__(self, location: Location, *, create: bool = False, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(location, create=create, options=options)
        self.root = str(location.path)
        self.create = create
        self._states: dict[str, ExportState] = {}
        self._scope: list[str] | None = None  # the files a planned restore writes (and reads back)
        self._written: dict[str, str] = {}  # name -> sha256 of what the last import wrote

    def _open_folder(self) -> None:
        """Check the path now: a target folder that can be one; a source whose files exist and whose names
        are distinct (DatasetNotFoundError/UsageError naming the path otherwise)."""
        if self.create:
            check_folder(self.root)
        else:
            self._source_files()

    @property
    def _name(self) -> str:
        # A target is a folder, named as one even before it exists (and whatever its suffix).
        return os.path.basename(self.root.rstrip(os.sep)) if self.create else lines.dataset_name(self.root)

    @property
    def _where(self) -> str:
        return lines.shown(self.root)

    def _the_dataset(self, names: Sequence[str] | None) -> str:
        """The one dataset's name; DatasetNotFoundError when `names` asks for another."""
        name = self._name
        for wanted in names or ():
            if wanted != name:
                raise DatasetNotFoundError(f"{self._where} holds one dataset, {name!r}, not {wanted!r}")
        return name

    def _source_files(self) -> list[lines.SourceFile]:
        return lines.distinct_names(lines.expand(self.root, self.options.get("exclude", ())))

    def _files(self) -> list[lines.SourceFile]:
        """The files to read: the source's, or after a planned restore the ones it writes."""
        if self._scope is not None:
            found = [lines.SourceFile(os.path.join(self.root, *n.split("/")), n) for n in self._scope]
            return [f for f in found if os.path.isfile(f.path)]
        if self.create and not os.path.exists(self.root):
            return []  # a restore target not created yet
        return self._source_files()

    def _file_list(self) -> tuple[list[dict[str, Any]], int]:
        """Each file's name, bytes, lines and compression, and the lines of all (describe's exact rows)."""
        files, rows = [], 0
        for f in self._files():
            size, count = lines.count_lines(f)
            rows += count
            files.append({"name": f.name, "bytes": size, "lines": count, "compression": f.compression})
        return files, rows

    def export_state(self, name: str) -> ExportState | None:
        """After an export of `name`: its mark, config and notes."""
        return self._states.get(name)

    def _check_folder_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch], column: str) -> int:
        """File names inside the folder and listed in the bundle, records forming each file line after
        line; writes nothing."""
        return sum(b.num_rows for b in folder_batches(self.root, self._where, plan, batches, column))

    def _write_folder(
        self,
        plan: ImportPlan,
        batches: Iterable[pa.RecordBatch],
        column: str,
        before: Callable[[FileWriter], None] | None = None,
    ) -> int:
        """Write every file of the plan (each record's ``raw`` bytes into the file its `column` names), all
        or nothing; `before` writes anything else first (a job config). Returns the records written."""
        check_mode(plan.mode, self._where)
        writer = FileWriter(self.root, exclusive=plan.mode == "create")
        written = 0
        try:
            for name in plan.extra.get("files", {}):
                writer.touch(name)
            if before is not None:
                before(writer)
            for batch in folder_batches(self.root, self._where, plan, batches, column):
                write_runs(writer, batch.column(column).to_pylist(), batch.column("raw").to_pylist())
                written += batch.num_rows
            self._written = writer.commit()
        except BaseException:
            writer.discard()
            raise
        remove_replaced(self.root, plan.extra.get("replaced", ()))
        return written

    def _file_checks(
        self, plan: ImportPlan, more: Mapping[str, str] | None = None, note: str = ""
    ) -> list[tuple[str, bool, str]]:
        """Every written file's sha256 against the bundle's (or, where the bundle has none, against what
        was written), and `more` (name -> sha256) besides."""
        expected = {n: sha or self._written.get(n) for n, sha in plan.extra.get("files", {}).items()}
        return sha_check(self.root, {**expected, **(more or {})}, note)
