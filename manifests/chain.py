"""Parts, and the chains of incremental datasets: the links of a chained dataset and the Arrow schemas of the
record-index and tombstone parts each link writes.

A vector dataset written since 0.4.0 carries a ``chain``: one :class:`ChainLink` per bundle that wrote
records for it, oldest first. The first link is a full backup; each later one holds only the records that
were new or changed since the link before it, and tombstones for the earlier versions it removes from the
live dataset. The dataset's ``parts`` are every link's record parts, in link order, so a part's position in
that list never changes as a chain grows; tombstones name a record by that position and its row.

- **record index** (:data:`INDEX_SCHEMA`): the id and the record digest of every record its link wrote,
  in the order of the link's record parts (row *n* of the index is the link's *n*-th record). A backup
  compares what it reads with the live dataset of its parent through these, without reading any record.
- **tombstones** (:data:`TOMBSTONE_SCHEMA`): the records of earlier links that this link removes, by
  position (``part``: index into the dataset's parts, ``row``: row within it) with their id, and whether the
  id is gone (``deleted``) or has a newer version in this link.

The live dataset at a link is every record of the chain up to it, less the records its tombstones and
those of the links before it remove. ``rows`` and ``digest`` of a chained dataset describe that live
dataset: the digest is the previous link's plus the records added minus the records removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from aibackup.manifests import fields
from aibackup.manifests.fields import ManifestError

#: One row per record a link wrote, in the order of its record parts.
INDEX_SCHEMA = pa.schema(
    [pa.field("id", pa.string(), nullable=False), pa.field("digest", pa.binary(16), nullable=False)]
)
#: One row per record of an earlier link that a link removes from the live dataset.
TOMBSTONE_SCHEMA = pa.schema(
    [
        pa.field("part", pa.int32(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("deleted", pa.bool_(), nullable=False),
    ]
)


@dataclass(frozen=True)
class PartEntry:
    """One immutable Parquet part: its path relative to the repository root, rows, bytes and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> PartEntry:
        path = fields.get(doc, "path", str, where)
        if path.startswith("/") or ".." in path.split("/") or not path.startswith("data/"):
            raise ManifestError(f"{where}.path: {path!r} is not a part path under data/")
        return cls(
            path=path,
            rows=fields.count(doc, "rows", where),
            bytes=fields.count(doc, "bytes", where),
            sha256=fields.hex_digits(doc, "sha256", where, 64),
        )

    @property
    def bundle(self) -> str:
        """The bundle that wrote this part (``data/<bundle-id>/...``)."""
        return self.path.split("/", 2)[1]


def _parts(doc: Mapping[str, Any], key: str, where: str) -> tuple[PartEntry, ...]:
    return tuple(
        PartEntry.from_json(fields.obj(p, f"{where}.{key}[{i}]"), f"{where}.{key}[{i}]")
        for i, p in enumerate(fields.get(doc, key, list, where))
    )


@dataclass(frozen=True)
class ChainLink:
    """What one bundle wrote for a chained dataset (see the module docstring)."""

    bundle: str
    parts: int  # how many of the dataset's record parts, after the earlier links' ones, this link wrote
    rows: int  # records it wrote: added + changed
    index: tuple[PartEntry, ...]  # INDEX_SCHEMA, one row per record written
    tombstones: tuple[PartEntry, ...]  # TOMBSTONE_SCHEMA, one row per record removed: changed + deleted
    added: int
    changed: int
    deleted: int

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "parts": self.parts,
            "rows": self.rows,
            "index": [p.to_json() for p in self.index],
            "tombstones": [p.to_json() for p in self.tombstones],
            "added": self.added,
            "changed": self.changed,
            "deleted": self.deleted,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> ChainLink:
        return cls(
            bundle=fields.get(doc, "bundle", str, where),
            parts=fields.count(doc, "parts", where),
            rows=fields.count(doc, "rows", where),
            index=_parts(doc, "index", where),
            tombstones=_parts(doc, "tombstones", where),
            added=fields.count(doc, "added", where),
            changed=fields.count(doc, "changed", where),
            deleted=fields.count(doc, "deleted", where),
        )

    def own_parts(self) -> tuple[PartEntry, ...]:
        """The index and tombstone parts of this link (its record parts are in the dataset's list)."""
        return self.index + self.tombstones


def check_chain(links: Sequence[ChainLink], parts: Sequence[PartEntry], rows: int, where: str) -> None:
    """Raise ManifestError unless `links` account for exactly `parts` and the live `rows`."""
    if len({link.bundle for link in links}) != len(links):
        raise ManifestError(f"{where}.chain: a bundle appears twice")
    if sum(link.parts for link in links) != len(parts):
        raise ManifestError(
            f"{where}.chain: the links wrote {sum(link.parts for link in links)} parts, {len(parts)} listed"
        )
    start = 0
    for n, link in enumerate(links):
        at = f"{where}.chain[{n}]"
        own = parts[start : start + link.parts]
        start += link.parts
        if sum(p.rows for p in own) != link.rows:
            raise ManifestError(f"{at}: its parts hold {sum(p.rows for p in own)} rows, the link says {link.rows}")
        if sum(p.rows for p in link.index) != link.rows:
            raise ManifestError(
                f"{at}: its index holds {sum(p.rows for p in link.index)} rows, the link wrote {link.rows}"
            )
        if link.added + link.changed != link.rows:
            raise ManifestError(f"{at}: added + changed is not the {link.rows} rows written")
        if sum(p.rows for p in link.tombstones) != link.changed + link.deleted:
            raise ManifestError(f"{at}: its tombstones are not one per changed and deleted record")
        if n == 0 and (link.changed or link.deleted):
            raise ManifestError(f"{at}: the first link of a chain is a full backup (nothing changed or deleted)")
    live = sum(link.added for link in links) - sum(link.deleted for link in links)
    if live != rows:
        raise ManifestError(f"{where}: the chain leaves {live} live records, the manifest says {rows}")
