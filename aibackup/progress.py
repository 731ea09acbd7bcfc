"""What a long run tells the person or the log collector watching it.

- On a terminal: a progress bar (rich) per dataset on stderr, and notes as lines above it.
- Without a terminal (cron, systemd, Kubernetes): quiet, unless ``--progress`` asks for the bar anyway.
- ``--log-format json``: every event as one JSON object per line on stderr (``{"ts", "event", ...}``), for
  log collectors; no bar. Events: ``dataset`` (a dataset starts), ``dataset_done``, ``note``, and the
  commands' own (``source_done``, ``restore_test``...).

Results still go to stdout (text or ``--json``); stderr carries only progress and logs, so a cron job can
keep one and drop the other.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol

from aibackup import clock
from aibackup.repository import iso


class Progress(Protocol):
    def dataset(self, name: str, total: int | None) -> None: ...
    def advance(self, rows: int) -> None: ...
    def event(self, event: str, message: str, **fields: Any) -> None: ...
    def close(self) -> None: ...


class Quiet:
    """Says nothing."""

    def dataset(self, name: str, total: int | None) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def event(self, event: str, message: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class JsonLog(Quiet):
    """One JSON object per line on stderr for every event (no bar)."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._rows = 0

    def _emit(self, event: str, **fields: Any) -> None:
        doc = {"ts": iso(clock.now()), "event": event, **fields}
        sys.stderr.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
        sys.stderr.flush()

    def dataset(self, name: str, total: int | None) -> None:
        self._finish()
        self._name, self._rows = name, 0
        self._emit("dataset", dataset=name, total=total)

    def advance(self, rows: int) -> None:
        self._rows += rows

    def event(self, event: str, message: str, **fields: Any) -> None:
        self._finish()  # a command's own event (say source_done) closes the dataset it reports on
        self._emit(event, message=message, **fields)

    def _finish(self) -> None:
        if self._name is not None:
            self._emit("dataset_done", dataset=self._name, rows=self._rows)
            self._name = None

    def close(self) -> None:
        self._finish()


class Bar(Quiet):
    """A rich progress bar per dataset on stderr; events as plain lines above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=False,
        )
        self._progress.start()
        self._task: Any = None

    def dataset(self, name: str, total: int | None) -> None:
        self._task = self._progress.add_task(name, total=total)

    def advance(self, rows: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, rows)

    def event(self, event: str, message: str, **fields: Any) -> None:
        self._progress.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def make_progress(show: bool | None, log_format: str) -> Progress:
    """The reporter for a command: JSON lines, a bar (on a terminal, or when `show` is True), or quiet."""
    if log_format == "json":
        return JsonLog()
    if show or (show is None and sys.stderr.isatty()):
        return Bar()
    return Quiet()
