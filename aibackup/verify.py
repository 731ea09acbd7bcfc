"""The verify verb: check bundles against their manifests without restoring them.

Always: every manifest parses, its checksum and canonical bytes hold, it names itself, and every part it
lists exists with the recorded size. With ``read_data``: every byte of every part is re-hashed (sha256),
and the records of a dataset whose parts all hash right (each part re-hashed right before its records are
decoded, while the next parts download) must give the manifest's row count and dataset digest (so a
manifest that was rewritten with a valid checksum but other contents is caught too). Model datasets: every chunk
their files list is in the chunk store, and with ``read_data`` re-hashed (:mod:`aibackup.chunkcheck`).
Each damaged file is named in its own problem entry; nothing is modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aibackup import keyring as keyslots
from aibackup import reports
from aibackup.bundle_reader import BundleReader
from aibackup.chunkcheck import ChunkCheck
from aibackup.chunks import INDEX
from aibackup.errors import AibackupError, IntegrityError, UnavailableError
from aibackup.manifests.kinds import KINDS
from aibackup.manifests.model import DatasetManifest, PartEntry
from aibackup.pipeline import use_arrow_allocator
from aibackup.prune import PINS
from aibackup.repository import MARKER, Repository, Where


@dataclass(frozen=True)
class Problem:
    bundle_id: str
    path: str
    problem: str

    def to_json(self) -> dict[str, str]:
        return {"bundle_id": self.bundle_id, "path": self.path, "problem": self.problem}


@dataclass(frozen=True)
class VerifyResult:
    bundle_ids: list[str]
    parts: int
    bytes_read: int
    problems: list[Problem]
    #: Encrypted repositories: whether manifests were checked against the key (None: not encrypted).
    authenticated: bool | None = None

    @property
    def bundles(self) -> int:
        return len(self.bundle_ids)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        """The `verify --json` contract: ok and problems [{bundle_id, path, problem}] (extended)."""
        return {
            "ok": self.ok,
            "problems": [p.to_json() for p in self.problems],
            "bundles": len(self.bundle_ids),
            "parts": self.parts,
            "bytes_read": self.bytes_read,
            "authenticated": self.authenticated,
        }


class _Damaged(Exception):
    """A part of the dataset being digested failed its check: its records are not compared."""


def _content_problem(reader: BundleReader, dataset: DatasetManifest, found: dict[str, str | None]) -> str | None:
    """Check a dataset's parts (their problems, None for a sound one, go into `found` by path), each before its
    records are decoded, and compare the records with the manifest (rows and dataset digest). Raises
    _Damaged at the first damaged part (the parts not reached are not in `found`)."""

    def check(part: PartEntry) -> None:
        found[part.path] = problem = reader.check_part(part, read_data=True)
        if problem:
            raise _Damaged

    try:
        digest = reader.dataset_digest(dataset, before=check)
    except IntegrityError as exc:
        return str(exc)
    if digest.rows != dataset.rows:
        return f"collection {dataset.name!r}: the parts hold {digest.rows} records, the manifest says {dataset.rows}"
    if digest.hexdigest != dataset.digest:
        return f"collection {dataset.name!r}: the records do not give the manifest's digest"
    return None


def run_verify(
    repository: Where | Repository, refs: Sequence[str] = (), *, read_data: bool = False, key_file: str | None = None
) -> VerifyResult:
    """Verify the named bundles (ids, prefixes or latest; all when empty).

    In an encrypted repository, when its key is at hand (AIBACKUP_KEY, AIBACKUP_KEY_FILE or `key_file`),
    every manifest must also be authenticated by it; without the key only checksums can be checked, which
    someone with write access could rewrite (``authenticated`` in the result says which)."""
    use_arrow_allocator()
    repo = repository if isinstance(repository, Repository) else Repository.open(repository)
    authenticated = None
    if repo.fully_encrypted:  # nothing reads without the key; every document and part authenticates
        repo.use_key(repo.key(key_file))
        authenticated = True
    elif repo.encrypted:
        authenticated = repo.passphrase_for(key_file) is not None
        if authenticated:
            repo.use_key(repo.key(key_file))
    else:
        repo.key(key_file)  # a key file given for a repository without encryption is refused, not ignored
    # --read-data reads each part twice (its bytes, then its records): a remote part is downloaded once.
    with BundleReader(repo, spool=read_data) as reader:
        return _verify(repo, reader, refs, read_data, authenticated)


def _verify(
    repo: Repository, reader: BundleReader, refs: Sequence[str], read_data: bool, authenticated: bool | None
) -> VerifyResult:
    chunk_check = ChunkCheck(reader, read_data)
    ids = list(dict.fromkeys(repo.match_id(r) for r in refs)) if refs else repo.bundle_ids()  # each once
    problems: list[Problem] = []
    parts = bytes_read = 0
    for bundle_id in ids:
        try:
            manifest = repo.load(bundle_id)
        except AibackupError as exc:
            problems.append(Problem(bundle_id, repo.storage.display(repo.manifest_path(bundle_id)), str(exc)))
            continue
        for dataset in manifest.datasets:
            damaged = False
            content_problem = None
            unreadable: UnavailableError | None = None
            found: dict[str, str | None] = {}  # part path -> its problem, for the parts checked already
            if read_data and dataset.kind in KINDS:
                # Each part is re-hashed, then its records decoded, while the next parts download (a remote
                # repository); a damaged part's problem wins over the records'.
                reader.fetch_ahead(dataset.all_parts())
                try:
                    content_problem = _content_problem(reader, dataset, found)
                except _Damaged:
                    pass  # the parts not reached are checked below
                except UnavailableError as exc:
                    # pyarrow reports some undecodable Parquet (a footer's thrift) as a read error: the
                    # parts' hashes tell damage from storage that cannot be read.
                    unreadable = exc
            for part in dataset.all_parts():
                parts += 1
                problem = found[part.path] if part.path in found else reader.check_part(part, read_data=read_data)
                if problem:
                    damaged = True
                    link = dataset.link_of(part)
                    if dataset.chained and link is not None and link.bundle != bundle_id:
                        problem = f"broken chain: collection {dataset.name!r} needs link {link.bundle}: {problem}"
                    problems.append(Problem(bundle_id, repo.storage.display(part.path), problem))
                elif read_data:
                    bytes_read += part.bytes
            if unreadable is not None and not damaged:
                raise unreadable
            # A kind this version does not know (a newer aibackup wrote it): its parts are still re-hashed.
            if content_problem and not damaged:
                where = repo.storage.display(repo.manifest_path(bundle_id))
                problems.append(Problem(bundle_id, where, content_problem))
            if reader.spool is not None:
                reader.spool.drop()  # one dataset's parts on the local disk at a time
            if dataset.kind == "model" and not damaged:  # its files' bytes are chunks in the chunk store
                problems += [Problem(bundle_id, where, why) for where, why in chunk_check.problems(dataset)]
    problems += [Problem("", where, why) for where, why in chunk_check.index_problems()]
    chunk_check.close()
    bytes_read += chunk_check.bytes_read
    parts += chunk_check.packs_checked
    if not refs and repo.fully_encrypted:
        named = {p.path for p in problems}  # a damaged index file is named once
        problems += [p for p in _document_problems(repo) if p.path not in named] + _slot_problems(repo)
    return VerifyResult(
        bundle_ids=list(ids), parts=parts, bytes_read=bytes_read, problems=problems, authenticated=authenticated
    )


#: The folders of documents besides manifests (each sealed and authenticated in an encrypted repository).
DOCUMENT_FOLDERS = (reports.BACKUPS, reports.RESTORE_TESTS, reports.VERIFY, PINS, INDEX)


def _slot_problems(repo: Repository) -> list[Problem]:
    """The key slots of the marker that are not what their makers wrote (each named): checked with the
    keyring the key at hand opened, so that a slot whose passphrase stopped working is found before the
    night it is the only one someone has."""
    keyring = repo.vault().keyring
    where = repo.storage.display(MARKER)
    problems = []
    for slot in keyslots.slots_of(repo.marker["encryption"]):
        problem = keyslots.slot_problem(slot, keyring)
        if problem:
            problems.append(Problem("", where, f"key slot {slot.get('id')}: {problem}"))
    return problems


def _document_problems(repo: Repository) -> list[Problem]:
    """The reports and pins of an encrypted repository that do not authenticate (each named)."""
    problems = []
    for folder in DOCUMENT_FOLDERS:
        for name in repo.storage.list_names(folder):
            rel = f"{folder}/{name}"
            try:
                repo.storage.read_bytes(rel)
            except IntegrityError as exc:
                problems.append(Problem("", repo.storage.display(rel), str(exc)))
            except FileNotFoundError:
                continue  # removed meanwhile (a prune)
    return problems
