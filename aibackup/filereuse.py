"""Fine-tuning and config datasets (the *file kinds*): a later bundle references the parts of its parent that
hold files unchanged since, instead of writing them again.

What a bundle records. Beside the connector's own ``state`` (``files``: each file's identity, the sha256 of
a fine-tuning file's content, or for a config file its type, mode, placeholders and hash), every bundle of a
file kind records in its dataset's state what each record part holds: ``parts`` = ``[{"path", "files":
{name: rows}, "digest"}]``, one entry per part in the dataset's part order, ``digest`` the sum modulo 2**128
of the part's record digests (32 hex digits, like a dataset digest). Fine-tuning parts are rolled at file
boundaries (a part holds one file's lines; a file may span parts); config parts pack many files (one row
each), as one part per file would make hundreds of tiny parts.

Units. The parent's parts and files, linked by "this part holds rows of this file", fall into *units*: a
fine-tuning file with its parts, or a config part with the files packed into it. A unit is reused whole or
not at all: its parts are referenced when every file it holds is still there with the same identity. The
export is offered the units (``since["reuse"]``) and leaves out the files of the unchanged ones
(:mod:`aibackup.connectors.files.reuse`); a config unit smaller than ``SMALL_PART`` is written again with
the changed files rather than referenced, whenever anything is written, so small parts are repacked
instead of piling up one per backup.

The new manifest alone describes the whole dataset: parts in file order (a restore writes each fine-tuning
file line after line), rows, id types, and a dataset digest that adds the reused units' recorded digests to
the records written, without reading a reused part. :func:`assemble` checks that the rows written and
reused give every file exactly its rows (a connector and this module disagreeing is a bug, never a bundle
missing a file).

No reuse (every file written) with ``--full``, without an earlier bundle of the dataset, when that bundle
records no part contents (written before aibackup 0.4.0), uses another record digest algorithm, or misses
a part (or holds one of the wrong size). A unit holding a part that a verify or restore found damaged is
not reused: its files are written again (the others are still referenced).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aibackup import reports
from aibackup.bundle import PartContents
from aibackup.bundle_reader import BundleReader
from aibackup.manifests.model import DIGEST_ALGORITHM, DatasetManifest, PartEntry
from aibackup.repository import KEY_ROTATED

MOD = 1 << 128
#: A config unit whose parts hold fewer bytes is written again, beside what changed, rather than referenced.
SMALL_PART = 1 << 20

Rows = Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, int]]


@dataclass(frozen=True)
class FileKind:
    """How a file kind's records name their file (`column`), whether its parts hold one file each (`split`),
    and how many records each file of an export has (`rows`, from the export's config and state)."""

    column: str
    split: bool
    rows: Rows


FILE_KINDS: dict[str, FileKind] = {
    "finetune": FileKind("file", True, lambda config, _state: {f["name"]: f["lines"] for f in config["files"]}),
    "config": FileKind("path", False, lambda _config, state: dict.fromkeys(state["files"], 1)),
}


@dataclass(frozen=True)
class Unit:
    """Parts of the parent referenced together or not at all, the rows they hold per file, their digest."""

    parts: tuple[PartEntry, ...]
    entries: tuple[Mapping[str, Any], ...]  # their ``state["parts"]`` entries, carried into the new state
    files: dict[str, int]
    digest: int
    small: bool

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)


@dataclass(frozen=True)
class Offer:
    """What a backup may reference from its parent: `dataset` of bundle `bundle_id`, cut into units."""

    bundle_id: str
    dataset: DatasetManifest
    units: tuple[Unit, ...]
    #: the parent's parts found damaged (aibackup.reports.damaged_parts): their units are not offered, so
    #: the files they hold are written again
    damaged: tuple[str, ...] = ()

    def since(self) -> dict[str, Any]:
        """What the export is given: the parent's state (the connector's part of it) and the units it may
        leave out, as ``reuse`` = ``{"bundle", "groups": [{"files", "small"}], "config"}`` (the parent's
        dataset config: fine-tuning copies the summaries of the files it leaves out)."""
        state = {k: v for k, v in (self.dataset.state or {}).items() if k != "parts"}
        groups = [{"files": list(u.files), "small": u.small} for u in self.units]
        return state | {"reuse": {"bundle": self.bundle_id, "groups": groups, "config": dict(self.dataset.config)}}


def offer(
    reader: BundleReader, kind: FileKind, bundle_id: str | None, previous: DatasetManifest | None, *, full: bool
) -> tuple[Offer | None, str]:
    """What a backup of a file kind may reference from `previous` (its dataset in bundle `bundle_id`), or
    None and why every file is written."""
    if previous is None or bundle_id is None:
        return None, "no earlier bundle of this dataset"
    if full:
        return None, "--full was given"
    if previous.digest_algorithm != DIGEST_ALGORITHM:
        return None, f"the previous bundle's record digests are {previous.digest_algorithm}, an older format"
    if reader.repo.rotated_since(p.path for p in previous.parts):
        return None, KEY_ROTATED
    try:
        units = units_of(previous, kind)
    except ValueError as exc:
        return None, f"bundle {bundle_id} does not record which parts hold which files ({exc})"
    for part in previous.parts:
        problem = reader.check_part(part, read_data=False)
        if problem:
            return None, f"a part of bundle {bundle_id} cannot be referenced: {part.path}: {problem}"
    # Same size, other bytes: known once a verify --read-data or a restore saw it. A unit reading such a part
    # is not offered (its files are written again); the others still are.
    found = reports.damaged_parts(reader.repo)
    damaged = tuple(sorted(p.path for p in previous.parts if p.path in found))
    if damaged:
        units = tuple(u for u in units if not any(p.path in found for p in u.parts))
    return Offer(bundle_id, previous, units, damaged), ""


def units_of(dataset: DatasetManifest, kind: FileKind) -> tuple[Unit, ...]:
    """The units of a bundle's dataset, from its recorded part contents. ValueError when it records none
    or they do not match its parts, rows and digest (then nothing of it is referenced)."""
    state = dataset.state or {}
    entries, identities = state.get("parts"), state.get("files")
    if not isinstance(entries, list) or not isinstance(identities, dict):
        raise ValueError("written before aibackup 0.4.0")
    if [e.get("path") if isinstance(e, dict) else None for e in entries] != [p.path for p in dataset.parts]:
        raise ValueError("its part list differs from its parts")
    digests: list[int] = []
    holders: dict[str, list[int]] = {}
    for n, (entry, part) in enumerate(zip(entries, dataset.parts, strict=True)):
        files = entry.get("files")
        if (
            not isinstance(files, dict)
            or not all(isinstance(r, int) and r > 0 for r in files.values())
            or sum(files.values()) != part.rows
            or not set(files) <= set(identities)
        ):
            raise ValueError(f"its entry of {part.path} does not match the part")
        digests.append(int(str(entry.get("digest")), 16))
        for name in files:
            holders.setdefault(name, []).append(n)
    if sum(digests) % MOD != int(dataset.digest, 16):
        raise ValueError("its parts' digests do not add up to its dataset digest")
    # Connected parts: a file's parts go together, and so do the files of one part.
    root = list(range(len(entries)))

    def find(n: int) -> int:
        while root[n] != n:
            root[n] = root[root[n]]
            n = root[n]
        return n

    for held in holders.values():
        for n in held[1:]:
            root[find(n)] = find(held[0])
    members: dict[int, list[int]] = {}
    for n in range(len(entries)):
        members.setdefault(find(n), []).append(n)
    units = []
    for group in members.values():
        rows: Counter[str] = Counter()
        for n in group:
            rows.update(entries[n]["files"])
        parts = tuple(dataset.parts[n] for n in group)
        small = not kind.split and sum(p.bytes for p in parts) < SMALL_PART
        digest = sum(digests[n] for n in group) % MOD
        units.append(Unit(parts, tuple(entries[n] for n in group), dict(rows), digest, small))
    return tuple(units)


@dataclass(frozen=True)
class Assembled:
    """A file kind's dataset as committed, and what it referenced."""

    dataset: DatasetManifest
    files: int  # files of the dataset
    unchanged: int  # files whose identity equals the parent's
    referenced: int  # files whose rows are the parent's parts
    reused: bool


def assemble(
    kind: FileKind,
    written: DatasetManifest,
    contents: Sequence[PartContents],
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    offered: Offer | None,
) -> Assembled:
    """The dataset of a file kind: `written` (the records this bundle wrote, whose parts hold `contents`)
    plus the offered units the export left out, given the export's `state` and `config`.

    A unit counts as left out when none of its files was written and each is still there with its
    identity; the rows written and referenced must then give every file of the export exactly its rows
    (RuntimeError otherwise: a bug, and nothing is committed)."""
    now: Mapping[str, str] = state["files"]
    then: Mapping[str, Any] = (offered.dataset.state or {}).get("files", {}) if offered else {}
    rows: Counter[str] = Counter()
    for content in contents:
        rows.update(content.files)
    units = [
        u
        for u in (offered.units if offered else ())
        if not rows.keys() & u.files.keys() and all(n in now and now[n] == then.get(n) for n in u.files)
    ]
    for unit in units:
        rows.update(unit.files)
    expected = {n: r for n, r in kind.rows(config, state).items() if r}
    if dict(rows) != expected or set(expected) - set(now):
        wrong = sorted(n for n in set(rows) | set(expected) if rows.get(n) != expected.get(n))
        raise RuntimeError(f"internal error: the records of {', '.join(wrong[:5]) or 'the files'} are not all there")
    if sum(c.digest for c in contents) % MOD != int(written.digest, 16):
        raise RuntimeError("internal error: the parts' digests do not add up to the dataset digest")

    # Parts in file order: each file's parts come when its first file comes (a fine-tuning restore writes
    # each file line after line; config parts hold files in any order).
    holders: dict[str, list[int]] = {}
    pieces: list[tuple[tuple[PartEntry, ...], tuple[Mapping[str, Any], ...]]] = []
    for content in contents:
        written_entry = {"path": content.part.path, "files": content.files, "digest": f"{content.digest:032x}"}
        pieces.append(((content.part,), (written_entry,)))
    pieces += [(u.parts, u.entries) for u in units]
    for n, (_, held_entries) in enumerate(pieces):
        for entry in held_entries:
            for name in entry["files"]:
                holders.setdefault(name, []).append(n)
    order: dict[int, None] = {}  # insertion-ordered set
    for name in now:
        order |= dict.fromkeys(holders.get(name, ()))
    parts = tuple(p for n in order for p in pieces[n][0])
    entries = [dict(e) for n in order for e in pieces[n][1]]

    reused = sum(u.rows for u in units)
    id_types = Counter(written.id_types) + Counter({"string": reused})  # file kinds' ids are strings
    dataset = replace(
        written,
        rows=written.rows + reused,
        digest=f"{(int(written.digest, 16) + sum(u.digest for u in units)) % MOD:032x}",
        parts=parts,
        id_types=dict(sorted(id_types.items())),
        config=dict(config),
        state={**state, "parts": entries},
        extends=offered.bundle_id if offered and units else None,
    )
    unchanged = sum(1 for n in now if n in then and now[n] == then[n])
    referenced = sum(len(u.files) for u in units)
    return Assembled(dataset, len(now), unchanged, referenced, bool(units))
