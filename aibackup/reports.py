"""Run reports kept in the repository, so that any machine can answer `aibackup status` and write metrics.

Layout (small JSON documents, written exclusively, never rewritten; readers skip what they cannot parse)::

    <repo>/reports/backups/<time>-<nonce>.json        one per backup of a source: ok, bundle, seconds, bytes
    <repo>/reports/restore-tests/<time>-<nonce>.json  one per source restore test: ok, bundle, achieved RTO
    <repo>/reports/verify/<time>-<nonce>.json         one per `verify --read-data`: ok, the bundles it read;
                                                      and one per restore that found damage (kind "restore"),
                                                      per copy that repaired parts found damaged (kind "copy")

``<time>`` sorts like a bundle id, so the newest report is the greatest name. Reports are evidence for
monitoring, not part of any bundle: deleting them loses history, never data. ``prune`` removes the ones
no reader needs any more (:func:`superseded`), so that what every backup reads stays bounded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from aibackup import clock
from aibackup.errors import AibackupError
from aibackup.repository import DATA, Repository, iso

BACKUPS = "reports/backups"
RESTORE_TESTS = "reports/restore-tests"
VERIFY = "reports/verify"


def write(repo: Repository, folder: str, report: Mapping[str, Any], when: dt.datetime | None = None) -> str:
    """Store one report (adds ``recorded_at``); returns its path in the repository."""
    moment = (when or clock.now()).astimezone(dt.UTC)
    doc = {"recorded_at": iso(moment), **report}
    path = f"{folder}/{moment:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}.json"
    repo.storage.write_exclusive(path, (json.dumps(doc, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return path


def record_verify(
    repo: Repository, bundle_ids: list[str], ok: bool, problems: list[dict[str, str]], kind: str = "verify"
) -> None:
    """Remember a `verify --read-data` of `bundle_ids` (``problems``: its ``{bundle_id, path, problem}``
    entries), or another read of their data that found what one would (`kind`, see :func:`record_damage`).
    Best effort: a repository that cannot be written (read-only credentials) only loses the history."""
    with contextlib.suppress(AibackupError, OSError):
        write(repo, VERIFY, {"kind": kind, "ok": ok, "bundles": bundle_ids, "problems": problems})


def record_damage(repo: Repository, bundle_id: str, problems: list[dict[str, str]], found_by: str) -> None:
    """Remember the damage `found_by` (``"restore"``) met in bundle `bundle_id`, as a failed `verify
    --read-data` of that bundle is remembered: the next backup then does not extend a chain that reads a
    damaged part (:func:`damaged_parts`), and the bundle no longer counts as verified
    (:func:`verified_bundles`). Best effort, as :func:`record_verify`: the caller's own error is what the
    user sees."""
    record_verify(repo, [bundle_id], False, problems, kind=found_by)


def record_repair(repo: Repository, paths: list[str], by: str) -> None:
    """Remember that the parts at `paths` (as ``Storage.display`` shows them), found damaged before, were
    written again with bytes proven by their manifest's sha256 (`by`: ``"copy"``, from another repository):
    :func:`damaged_parts` no longer counts them, unless a later report finds them damaged again. Best
    effort, as :func:`record_verify`."""
    with contextlib.suppress(AibackupError, OSError):
        write(repo, VERIFY, {"kind": by, "ok": True, "bundles": [], "problems": [], "repaired": paths})


def read_all(repo: Repository, folder: str) -> Iterator[dict[str, Any]]:
    """Every readable report of a folder, newest first."""
    for _name, doc in _read_named(repo, folder):
        yield doc


def _read_named(repo: Repository, folder: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, document) of every readable report of a folder, newest first."""
    for name in sorted(repo.storage.list_names(folder), reverse=True):
        if not name.endswith(".json"):
            continue
        try:
            doc = json.loads(repo.storage.read_bytes(f"{folder}/{name}"))
        except (AibackupError, FileNotFoundError, ValueError, RecursionError):
            continue  # a damaged or vanished report is only lost history
        if isinstance(doc, dict):
            yield name, doc


#: (repository URL, report name) -> (the parts it found damaged, the parts it repaired): reports are never
#: rewritten, so each is read once per process however many collections a backup extends.
_PATHS: dict[tuple[str, str], tuple[frozenset[str], frozenset[str]]] = {}


def damaged_parts(repo: Repository) -> frozenset[str]:
    """Every part (its path in the repository, ``data/…``) a kept `verify --read-data` report (or a
    restore's, see :func:`record_damage`) found damaged, unless a later one repaired it
    (:func:`record_repair`). A part is never rewritten but by such a repair: one found damaged stays so, and
    a chain that reads it must not be extended (aibackup.incremental). Reports name parts as they were shown
    (a local path, an s3:// URL): matched by their path below the repository, so damage found while the
    repository was reached under another path (moved, mounted elsewhere) still counts."""
    damaged: set[str] = set()
    settled: set[str] = set()  # by a newer report: damaged, or repaired
    for name in sorted(repo.storage.list_names(VERIFY), reverse=True):  # newest first
        bad, repaired = _paths(repo, name)
        damaged |= bad - settled
        settled |= bad | repaired
    return frozenset(damaged)


def _paths(repo: Repository, name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(parts found damaged, parts repaired) by the verify-folder report `name`, read once per process."""
    key = (repo.storage.url, name)
    if key not in _PATHS:
        try:
            doc = json.loads(repo.storage.read_bytes(f"{VERIFY}/{name}"))
        except (AibackupError, FileNotFoundError, ValueError, RecursionError):
            doc = {}  # a damaged or vanished report is only lost history
        _PATHS[key] = _paths_of(doc if isinstance(doc, dict) else {})
    return _PATHS[key]


def _paths_of(doc: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    problems = doc.get("problems", [])
    bad = (part_path(str(p.get("path") or "")) for p in problems if isinstance(p, dict))
    repaired = (part_path(str(p)) for p in doc.get("repaired", []) if isinstance(p, str))
    return frozenset(p for p in bad if p), frozenset(p for p in repaired if p)


def part_path(shown: str) -> str | None:
    """The path in the repository (``data/…``) of a part a report names as `shown` (``Storage.display``: a
    local path or an s3:// URL, with its ``?endpoint=`` when it has one); None for what is not under data/ (a
    manifest, a key slot)."""
    if shown.startswith("s3://"):  # the endpoint (a URL that may hold /data/ itself) is not the part's path
        shown = shown.partition("?endpoint=")[0]
    at = shown.rfind(f"/{DATA}/")  # a bundle id or dataset folder is never named "data": the last one is ours
    return shown[at + 1 :] if at >= 0 else None


def latest_by_source(
    repo: Repository,
    folder: str,
    names: Collection[str] | None = None,
    where: Callable[[dict[str, Any]], bool] = lambda doc: True,
) -> dict[str, dict[str, Any]]:
    """The newest report per source name (the ``source`` field) among those `where` accepts; with `names`,
    reading stops as soon as each of them has one (the newest reports are read first)."""
    latest: dict[str, dict[str, Any]] = {}
    for doc in read_all(repo, folder):
        name = doc.get("source")
        if isinstance(name, str) and name not in latest and where(doc):
            latest[name] = doc
            if names is not None and set(names) <= latest.keys():
                break
    return latest


def verified_bundles(repo: Repository) -> dict[str, str]:
    """bundle id -> when a `verify --read-data` last found it intact: decided by the newest report that
    names the bundle, so one found damaged later is not verified by an older report that passed it."""
    verified: dict[str, str] = {}
    decided: set[str] = set()
    for doc in read_all(repo, VERIFY):  # newest first
        damaged = {p.get("bundle_id") for p in doc.get("problems", []) if isinstance(p, dict)}
        for bundle_id in doc.get("bundles", []):
            if isinstance(bundle_id, str) and bundle_id not in decided and bundle_id not in damaged:
                verified[bundle_id] = str(doc.get("recorded_at"))
        decided.update(b for b in (*doc.get("bundles", []), *damaged) if isinstance(b, str))
    return verified


def superseded(repo: Repository, bundles: Collection[str], stored: Collection[str]) -> list[str]:
    """The reports (paths in the repository) that no reader needs once only `bundles` exist and only the
    files `stored` (paths under ``data/``) remain: what ``prune`` removes with the bundles.

    - ``verify``: a report stays while it is the newest to name a bundle that still exists (it decides
      whether that bundle counts as verified, :func:`verified_bundles`) or the newest to speak of a part
      still stored and it found that part damaged (:func:`damaged_parts` must keep refusing a chain that
      reads it; once a newer report repaired it, neither is needed, unless the damage report stays for a
      bundle it decides: then the repair stays too). A verify run every night would
      otherwise add a report every backup reads, forever.
    - ``backups`` and ``restore-tests``: a report stays while it was recorded after the oldest bundle that
      still exists was started (the history the retention keeps), or names a bundle that still exists, or
      it is its source's newest, or its newest that passed (what ``status`` shows).

    A report that cannot be read, or has no source, is left alone (not ours to judge)."""
    existing, still = set(bundles), set(stored)
    gone: list[str] = []
    decided: set[str] = set()
    settled: set[str] = set()  # parts a newer report found damaged or repaired (damaged_parts' fold)
    # (name, kept for a reader, parts still stored it calls damaged, parts it has the newest word on as
    # repaired), newest first
    verdicts: list[tuple[str, bool, frozenset[str], frozenset[str]]] = []
    for name, doc in _read_named(repo, VERIFY):  # newest first, as verified_bundles and damaged_parts decide
        problems = [p for p in doc.get("problems", []) if isinstance(p, dict)]
        named = {b for b in (*doc.get("bundles", []), *(p.get("bundle_id") for p in problems)) if isinstance(b, str)}
        deciding = bool((named & existing) - decided)
        decided |= named
        bad, repaired = _paths_of(doc)
        damning = bool((bad & still) - settled)  # the newest word on a part still stored: damaged
        mending = (repaired & still) - settled
        settled |= bad | repaired
        verdicts.append((name, deciding or damning, bad & still, frozenset(mending)))
    # A repair stays while an older report that stays (for another reason) calls the part damaged: without
    # the repair, damaged_parts would take that older word for the newest.
    called_damaged: set[str] = set()  # by the older reports that stay
    for name, kept, bad, mending in reversed(verdicts):  # oldest first
        if kept or mending & called_damaged:
            called_damaged |= bad
        else:
            gone.append(f"{VERIFY}/{name}")
    oldest = min((b.split("-", 1)[0] for b in existing), default=None)  # report names start as bundle ids do
    for folder in (BACKUPS, RESTORE_TESTS):
        newest: set[str] = set()
        newest_ok: set[str] = set()
        for name, doc in _read_named(repo, folder):
            source = doc.get("source")
            if not isinstance(source, str):
                continue
            needed = (
                source not in newest
                or (bool(doc.get("ok")) and source not in newest_ok)
                or str(doc.get("bundle_id")) in existing  # its bundle stays (a clock stepped back: named before it)
            )
            newest.add(source)
            if doc.get("ok"):
                newest_ok.add(source)
            if not needed and (oldest is None or name.split("-", 1)[0] < oldest):
                gone.append(f"{folder}/{name}")
    return sorted(gone)
