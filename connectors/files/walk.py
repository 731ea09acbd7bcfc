"""Walking a source folder of files (configuration files, model artifacts): sorted, symlinks never followed.

:func:`walk` lists the regular files and symlinks under a root (or the one file a root names), with their
``lstat``; folders are entered, sockets, pipes and devices set aside, empty folders noted. Names a folder
restore could not write back are refused (SourceDataError). The repository being written, when it lies
inside the source folder, is left out (``exclude``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from aibackup.connectors.base import DatasetDescription
from aibackup.connectors.files.lines import refuse_unrestorable
from aibackup.errors import DatasetNotFoundError, SourceDataError, UsageError


@dataclass(frozen=True)
class Entry:
    """A file or symlink: its '/'-separated path under the root, its path on disk, its lstat."""

    rel: str
    path: str
    st: os.stat_result


@dataclass
class Listing:
    entries: list[Entry] = field(default_factory=list)
    special: list[str] = field(default_factory=list)  # sockets, pipes, devices (not kept)
    empty_dirs: list[str] = field(default_factory=list)


def named(
    description: DatasetDescription, names: Sequence[str] | None, *, target: bool, where: str
) -> list[DatasetDescription]:
    """The one dataset of a folder store, as ``describe`` answers for `names`: a source holds it under its own
    name only (DatasetNotFoundError naming `where` otherwise); a restore target answers to any name."""
    if names is None:
        return [description]
    for name in names:
        if not target and name != description.name:
            raise DatasetNotFoundError(f"{where} holds one dataset, {description.name!r}, not {name!r}")
    return [replace(description, name=name) for name in names]


def check_root(root: Path, *, target: bool, what: str) -> bool:
    """The root of a folder source or target, checked; True when a source is one regular file. A source must
    exist (DatasetNotFoundError naming `what` it should hold) and be a folder or a regular file (reached
    through a symlink or not); a target folder may be missing, but not be something else, nor lie below
    something else (UsageError)."""
    if target:
        if root.exists() and not root.is_dir():
            raise UsageError(f"the restore target {root} is not a folder")
        # A missing folder is made with its parents: the nearest one that exists must be a folder too.
        above = next((p for p in root.absolute().parents if p.exists()), None)
        if not root.exists() and above is not None and not above.is_dir():
            raise UsageError(f"the restore target {root} is not a folder: {above} is not one")
        return False
    if not os.path.lexists(root):
        raise DatasetNotFoundError(f"no {what} at {root}: it does not exist")
    st = os.stat(root)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise UsageError(f"{root} is neither a folder nor a regular file")
    return stat.S_ISREG(st.st_mode)


def walk(root: Path, *, single: bool, show: Callable[[str], str], exclude: Sequence[str] = ()) -> Listing:
    """Files and symlinks under `root`, sorted by path, symlinks not followed (an explicit stack: no depth
    limit). `single`: `root` is one file, listed under its own name. `show` names an entry in messages."""
    listing = Listing()
    if single:
        listing.entries.append(Entry(root.name, str(root), os.lstat(root)))
        return listing
    if not root.is_dir():
        return listing
    excluded = {os.path.abspath(e) for e in exclude}
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            where = show(prefix.rstrip("/")) if prefix else str(root)
            raise SourceDataError(f"cannot read the folder {where}: {exc.strerror}") from None
        if not items and prefix:
            listing.empty_dirs.append(prefix.rstrip("/"))
        subdirs = []
        for item in items:
            rel = prefix + item.name
            refuse_unrestorable(rel, show(rel))
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while the backup walked past it: not part of this snapshot
            if os.path.abspath(item.path) in excluded:
                continue  # the repository itself, inside the source folder: never back it up into itself
            if stat.S_ISDIR(st.st_mode):
                subdirs.append((item.path, rel + "/"))
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                listing.entries.append(Entry(rel, item.path, st))
            else:
                listing.special.append(rel)
        stack.extend(reversed(subdirs))
    listing.entries.sort(key=lambda e: e.rel)
    return listing
