"""Which files a file-kind export leaves out because the backup references its parent's parts for them.

The backup (:mod:`aibackup.filereuse`) passes ``since`` = the parent's state (``files``: each file's
identity as the parent recorded it) with ``reuse`` = ``{"bundle", "groups": [{"files": [...], "small":
bool}], "config"}``: the parent's parts fall into groups that are referenced whole or not at all. An export
leaves out the files of every group whose files are all still there with the same identity; a *small*
group is left out only when nothing else is written (otherwise it is written again beside the changes, so
tiny parts are repacked rather than piling up one per backup). The backup checks the outcome: the rows
written and referenced must give every file exactly its rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def offered(since: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """(the parent's file identities, the ``reuse`` offer) when the backup offers parts, else None."""
    if not since or not isinstance(since.get("reuse"), Mapping):
        return None
    then = since.get("files")
    return (then if isinstance(then, Mapping) else {}), since["reuse"]


def left_out(since: Mapping[str, Any] | None, identities: Mapping[str, str | None]) -> set[str]:
    """The files (of `identities`: every file of this export, None where its identity was not computed)
    whose records this export leaves out."""
    offer = offered(since)
    if offer is None:
        return set()
    then, reuse = offer
    groups = [
        g
        for g in reuse.get("groups", ())
        if all(identities.get(n) is not None and identities.get(n) == then.get(n) for n in g["files"])
    ]
    kept = {n for g in groups for n in g["files"]}
    if set(identities) - kept:  # something is written: small groups go with it
        groups = [g for g in groups if not g["small"]]
    return {n for g in groups for n in g["files"]}
