"""A repository: a folder or bucket prefix holding bundles.

Layout::

    <repo>/aibackup.json              marker: format, version, id, created_at
    <repo>/bundles/<bundle-id>.json   manifests: a bundle exists exactly when its manifest exists
    <repo>/data/<bundle-id>/...       immutable Parquet parts (named so they never clash)

Readers find bundles only through ``bundles/``; they never list ``data/``. Bundle ids sort by time:
``20261125T020000.123456Z-<8 hex>`` (UTC to the microsecond, then a random suffix so two writers never
clash); ``latest`` is the greatest id. A new id is always greater than every id already in the repository,
even if the clock stepped back, so "latest" is the bundle started last.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import hmac
import json
import re
import secrets
import shlex
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Self

from aibackup import __version__, clock
from aibackup import keyring as keyslots
from aibackup.crypto import KEY_ENV, KEY_FILE_ENV, RepositoryKey, open_key, passphrase_from
from aibackup.errors import (
    AibackupError,
    BundleNotFoundError,
    ConfigError,
    IntegrityError,
    ManifestVersionError,
    NotARepositoryError,
    UsageError,
)
from aibackup.manifests.model import BundleManifest, ManifestError, ManifestVersionTooNewError
from aibackup.storage import AlreadyExistsError, Storage
from aibackup.vault import Vault, bundle_of_part, generation_of

MARKER = "aibackup.json"
REPO_FORMAT = "aibackup-repository"
#: The newest repository format this version reads. 2: encrypted with key slots (every byte encrypted),
#: so that aibackup 0.4 refuses such a repository as newer instead of misreading it; others stay 1.
REPO_VERSION = 2
BUNDLES = "bundles"
DATA = "data"
BUNDLE_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}$")
_ID_TIME = "%Y%m%dT%H%M%S.%fZ"


#: How far a clock may have stepped back before a new bundle id refuses to sort after the newest one.
MAX_CLOCK_STEP_BACK = dt.timedelta(days=1)
#: Manifests read at once from object storage (:meth:`Repository.load_each`).
MANIFESTS_AT_ONCE = 8
#: Why a backup is full (or references nothing) after `aibackup key rotate`.
KEY_ROTATED = "the repository's master key was rotated since (a full backup lets prune retire the old key)"


def id_time(bundle_id: str) -> dt.datetime | None:
    """The UTC start time in a bundle id, or None if the id is not a well-formed bundle id."""
    if not BUNDLE_ID.match(bundle_id):
        return None
    try:
        return dt.datetime.strptime(bundle_id.split("-", 1)[0], _ID_TIME).replace(tzinfo=dt.UTC)
    except ValueError:  # 20261125T999999...: the right shape, not a time
        return None


def new_bundle_id(now: dt.datetime, after: str | None = None) -> str:
    """A bundle id for `now`, moved to 1 µs past the time of id `after` if the clock is not past it.

    Raises UsageError when `after` lies more than MAX_CLOCK_STEP_BACK in the future: sorting after it
    would date the new bundle wrongly, and sorting before it would make `latest` skip the new bundle.
    """
    moment = now.astimezone(dt.UTC)
    previous = id_time(after) if after is not None else None
    if previous is not None and moment <= previous:
        if previous - moment > MAX_CLOCK_STEP_BACK:
            raise UsageError(
                f"bundle {after} is dated {iso(previous)}, after this machine's clock ({iso(moment)}): "
                "fix the clock, or move that manifest out of bundles/ if it does not belong there"
            )
        moment = previous + dt.timedelta(microseconds=1)
    return f"{moment.strftime(_ID_TIME)}-{secrets.token_hex(4)}"


def iso(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    """Inverse of :func:`iso` (any ISO 8601 time with a zone)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class DamagedBundle:
    """A manifest that could not be loaded, with the reason (used by `list` and `verify`)."""

    bundle_id: str
    path: str
    problem: str


#: What :meth:`Repository.scan` returns: the manifests that load, and the bundles whose manifest does not.
Scan = tuple[list[BundleManifest], list[DamagedBundle]]


Where = str | Storage
"""A repository's location: a URL or path, or the Storage already made for it (so that one run resolves a
URL once and passes the result down)."""


def storage_of(where: Where) -> Storage:
    return where if isinstance(where, Storage) else Storage(where)


class Repository:
    """An opened repository. Use :meth:`open`, :meth:`init` or :meth:`find` (the verbs, for callers:
    :class:`aibackup.api.Repository`)."""

    def __init__(self, storage: Storage, marker: Mapping[str, Any], vault: Vault | None = None) -> None:
        self.storage = storage
        self.marker = marker
        self._key: RepositoryKey | None = None
        #: The passphrase given when the repository was opened (API ``key=``/``key_file=``), used where
        #: a verb is given no key file of its own; else AIBACKUP_KEY.
        self.passphrase: bytes | None = None
        self._vault = vault
        self._vault_from: str | None = None  # the key file the vault was opened with
        if self.fully_encrypted:
            # Every document but the marker is sealed; the key is opened at the first one read or written
            # (a verb given --key-file opens it first, through key()).
            storage.documents = _Documents(self)

    def use_key(self, key: RepositoryKey | None) -> None:
        """Authenticate manifests with `key` from now on (an encrypted repository's key; None: do not):
        :meth:`commit` signs each manifest, :meth:`load` refuses one whose MAC is missing or wrong."""
        self._key = key

    @property
    def id(self) -> str:
        return str(self.marker.get("id", ""))

    @property
    def encrypted(self) -> bool:
        return isinstance(self.marker.get("encryption"), dict)

    @property
    def fully_encrypted(self) -> bool:
        """Encrypted with key slots (0.5 on): every byte but the marker's public parameters. An encrypted
        repository made by 0.4 seals only config secrets and authenticates manifests (``legacy``)."""
        return self.encrypted and self.marker["encryption"].get("scheme") == keyslots.SCHEME

    def vault(self, key_file: str | None = None) -> Vault:
        """The opened keyring (:class:`Vault`) of a fully encrypted repository, from the passphrase of
        `key_file`, the one given at opening, AIBACKUP_KEY(_FILE), or else a KMS slot. Opened once per key
        file; ConfigError without any key, UsageError for a wrong one (before anything else is read)."""
        if self._vault is not None and (key_file is None or key_file == self._vault_from):
            return self._vault
        passphrase = self.passphrase_for(key_file)
        how = f"set {KEY_ENV} or {KEY_FILE_ENV}, or pass --key-file"
        keyring, slot = keyslots.open_keyring(
            self.marker["encryption"], self.id, passphrase, self.storage.display(MARKER), how
        )
        self._vault, self._vault_from = Vault(keyring, slot), key_file
        return self._vault

    def adopt(self, vault: Vault) -> None:
        """Use `vault` from now on (the keyring a key verb just stored)."""
        self._vault = vault

    def part_encryption(self, path: str) -> Any:
        """Parquet encryption properties for writing the part at `path` (None: not encrypted)."""
        return self.vault().part_encryption(path) if self.fully_encrypted else None

    def part_decryption(self, path: str) -> Any:
        return self.vault().part_decryption(path) if self.fully_encrypted else None

    def rotated_since(self, paths: Iterable[str]) -> bool:
        """Whether the parts at `paths` were written under an older master key than the current one (a
        backup then writes in full rather than reference them, so that `prune` can retire the old key)."""
        if not self.fully_encrypted:
            return False
        keyring = self.vault().keyring
        return any(keyring.for_bundle(bundle_of_part(p)).id != keyring.current.id for p in paths)

    def refuse_downgrade(self) -> None:
        """IntegrityError when the marker says "not encrypted" over sealed manifests (its encryption entry
        removed by someone who can write the bucket): a backup must not then write plaintext beside them.
        The oldest and newest manifests are looked at (two small reads)."""
        if self.encrypted:
            return
        ids = self.bundle_ids()
        for bundle_id in {ids[0], ids[-1]} if ids else ():
            with contextlib.suppress(FileNotFoundError):
                raw = self.storage.read_bytes(self.manifest_path(bundle_id))  # unencrypted: the stored bytes
                if generation_of(raw) is not None:
                    raise IntegrityError(
                        f"the repository marker {self.storage.display(MARKER)} says the repository is not encrypted, "
                        f"but bundle {bundle_id} is: the marker was changed (its encryption entry removed?); "
                        "refusing to write plaintext into an encrypted repository"
                    )

    def opaque(self, text: str) -> str:
        """A short name for `text` in object names (lock files): a keyed hash in an encrypted repository,
        so that a guessable source URI cannot be confirmed from a listing."""
        if self.fully_encrypted:
            return self.vault().secrets.keyed_hash(text.encode())[:12]
        import hashlib

        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def write_marker(self, marker: Mapping[str, Any]) -> None:
        """Replace the marker (key slots changed); the caller holds the repository lock."""
        self.storage.replace(MARKER, marker_bytes(marker))
        self.marker = dict(marker)

    def passphrase_for(self, key_file: str | None = None) -> bytes | None:
        """The passphrase a verb uses: of `key_file`, else the one given at opening, else AIBACKUP_KEY's."""
        return passphrase_from(key_file) if key_file or self.passphrase is None else self.passphrase

    def key(self, key_file: str | None = None) -> RepositoryKey | None:
        """The repository key from AIBACKUP_KEY or a key file, checked against the marker; None for a
        repository without encryption. ConfigError when the repository is encrypted and no key is given,
        UsageError for a wrong key, and for a `key_file` given for a repository without encryption (all
        before anything is read or written)."""
        if not self.encrypted:
            if key_file:  # someone believes this repository is encrypted: say it is not, rather than ignore it
                raise UsageError(
                    f"key file {key_file} given, but the repository at {self.storage.display()} is not encrypted "
                    "(its bundles need no key; `aibackup init --encrypt` makes an encrypted repository)"
                )
            return None
        if self.fully_encrypted:
            return self.vault(key_file).secrets
        passphrase = self.passphrase_for(key_file)
        if passphrase is None:
            raise ConfigError(
                f"the repository at {self.storage.display()} is encrypted: set {KEY_ENV} or pass --key-file"
            )
        return open_key(self.marker["encryption"], passphrase, self.id, self.storage.display(MARKER))

    # --- opening ---------------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: Where, *, key_file: str | None = None) -> Self:
        """Open an existing repository; NotARepositoryError if there is none at `url`. `key_file` (a
        config's ``key_file``) gives the passphrase its verbs use over AIBACKUP_KEY, checked now (UsageError
        for a wrong one); a repository without encryption ignores it."""
        return cls._read(storage_of(url)).with_key_file(key_file)

    def with_key_file(self, key_file: str | None) -> Self:
        """This repository, its verbs using `key_file`'s passphrase over AIBACKUP_KEY (checked now: UsageError
        for a wrong one); unchanged without one, or where the repository is not encrypted."""
        if key_file and self.encrypted:
            self.passphrase = passphrase_from(key_file)
            self.key()
        return self

    @classmethod
    def _read(cls, storage: Storage) -> Self:
        storage.ensure_reachable()
        try:
            raw = storage.read_bytes(MARKER)
        except FileNotFoundError:
            where = storage.display()
            if storage.is_empty_or_missing():
                url = shlex.quote(storage.url)  # pasted into a shell: an S3 URL's `?` and `&` stay in it
                raise NotARepositoryError(
                    f"no repository at {where}: run `aibackup init --repo {url}`, back up into it, or bring a copy's "
                    f"bundles back into it (`aibackup copy --repo COPY --to-repo {url}`)"
                ) from None
            raise NotARepositoryError(f"{where} is not an aibackup repository (no {MARKER})") from None
        return cls.with_marker(storage, raw)

    @classmethod
    def init(
        cls,
        url: Where,
        *,
        passphrase: bytes | None = None,
        kms_key_id: str | None = None,
        keyring: keyslots.Keyring | None = None,
    ) -> Self:
        """Create a repository; refuses a location that already holds one (or anything else).

        With `passphrase` and/or `kms_key_id` the repository is encrypted (every byte but the marker's
        public parameters): a random master key, wrapped in a passphrase slot and/or an AWS KMS slot.
        `keyring`: the keyring to keep (made beforehand by a caller that needed its keys early; its
        repository id becomes the repository's)."""
        storage = storage_of(url)
        storage.ensure_reachable()
        if storage.exists(MARKER):
            raise UsageError(f"{storage.display()} is already an aibackup repository")
        if not storage.is_empty_or_missing():
            raise UsageError(f"{storage.display()} is not empty; a new repository needs an empty location")
        repository_id = keyring.repository_id if keyring is not None else str(uuid.uuid4())
        marker: dict[str, Any] = {
            "format": REPO_FORMAT,
            "version": 1,
            "id": repository_id,
            "created_at": iso(clock.now()),
            "created_by": f"aibackup {__version__}",
        }
        vault = None
        if passphrase is not None or kms_key_id is not None:
            keyring = keyring or keyslots.Keyring.new(repository_id, marker["created_at"])
            slots = []
            if passphrase is not None:
                slots.append(keyslots.passphrase_slot(passphrase, keyring))
            if kms_key_id is not None:
                slots.append(keyslots.kms_slot(kms_key_id, keyring))
            marker["encryption"] = keyslots.new_entry(slots)
            marker["version"] = 2
            vault = Vault(keyring, str(slots[0]["id"]))
        try:
            storage.write_exclusive(MARKER, marker_bytes(marker))
        except AlreadyExistsError:
            raise UsageError(f"{storage.display()} is already an aibackup repository") from None
        created = cls(storage, marker, vault)
        if passphrase is not None:
            created.passphrase = passphrase
        return created

    def forget(self) -> None:
        """Remove a repository that holds no bundle (best effort): its marker and empty folders. Used when
        the backup that created it failed."""
        if self.bundle_ids():
            return
        self.storage.remove(MARKER)
        self.storage.remove_empty_folders()

    @classmethod
    def find(cls, url: Where) -> Self | None:
        """The repository at `url`, or None if the location is missing or empty (one may be created there);
        NotARepositoryError when it holds something else."""
        storage = storage_of(url)
        storage.ensure_reachable()
        try:
            raw = storage.read_bytes(MARKER)  # one request where the marker is (a HEAD first would be two)
        except FileNotFoundError:
            if storage.is_empty_or_missing():
                return None
            raise NotARepositoryError(f"{storage.display()} is not an aibackup repository (no {MARKER})") from None
        return cls.with_marker(storage, raw)

    @classmethod
    def with_marker(cls, storage: Storage, raw: bytes) -> Self:
        """The repository at `storage` whose marker holds `raw` (read, or just written there by the caller:
        no second read). NotARepositoryError for a marker that is not aibackup's."""
        return cls(storage, _check_marker(raw, storage.display(MARKER)))

    # --- bundles ---------------------------------------------------------------------------------------

    def manifest_path(self, bundle_id: str) -> str:
        return f"{BUNDLES}/{bundle_id}.json"

    def part_prefix(self, bundle_id: str) -> str:
        return f"{DATA}/{bundle_id}"

    def next_bundle_id(self, now: dt.datetime) -> str:
        """An id for a new bundle started at `now`, sorting after every bundle already here and, in an
        encrypted repository, at or after the current master key's first bundle: the key it is written
        with is the one its readers take by its id (a clock behind the rotation's would otherwise date it
        before, under the key the rotation retired)."""
        ids = self.bundle_ids()
        after = ids[-1] if ids else None
        if self.fully_encrypted:
            first = self.vault().keyring.current.first_bundle
            if first and (after is None or first > after):
                after = first
        return new_bundle_id(now, after)

    def reread_marker(self) -> bool:
        """Read the marker again; True when it changed since the repository was opened (a key verb added or
        removed a slot, or rotated the master key: a backup opens the repository before it takes its lock,
        which is what excludes the key verbs). The keyring is then opened again at its next use."""
        marker = _check_marker(self.storage.read_bytes(MARKER), self.storage.display(MARKER))
        if marker == self.marker:
            return False
        self.marker = marker
        self._vault = None
        return True

    def bundle_ids(self) -> list[str]:
        """Ids of all committed bundles, oldest first (from manifest names only; other names are ignored)."""
        names = self.storage.list_names(BUNDLES)
        return sorted(n[:-5] for n in names if n.endswith(".json") and id_time(n[:-5]) is not None)

    def stored_manifest(self, bundle_id: str) -> bytes:
        """A manifest's bytes as stored (sealed in an encrypted repository); BundleNotFoundError."""
        try:
            return self.storage.read_stored(self.manifest_path(bundle_id))
        except FileNotFoundError:
            raise BundleNotFoundError(f"no bundle {bundle_id!r} in {self.storage.display()}") from None

    def load(self, bundle_id: str, *, stored: bytes | None = None) -> BundleManifest:
        """Load and check one manifest; `stored`: its bytes from :meth:`stored_manifest`, where the caller
        needs them too (a copy writes them as they are).

        Raises BundleNotFoundError, ManifestVersionError (newer format) or IntegrityError (damaged).
        """
        path = self.manifest_path(bundle_id)
        where = self.storage.display(path)
        raw = self.storage.open_document(path, self.stored_manifest(bundle_id) if stored is None else stored)
        try:
            manifest = BundleManifest.from_bytes(raw, where)
        except ManifestVersionTooNewError as exc:
            raise ManifestVersionError(
                f"bundle {bundle_id} uses manifest format {exc.version}, newer than this aibackup reads; "
                "upgrade aibackup to read it"
            ) from None
        except ManifestError as exc:
            if not self.encrypted and generation_of(raw) is not None:  # sealed bytes: the marker is what changed
                raise IntegrityError(
                    f"damaged repository marker {self.storage.display(MARKER)}: it says the repository is not "
                    f"encrypted, but bundle {bundle_id} is sealed (its encryption entry removed?)"
                ) from None
            raise IntegrityError(f"damaged manifest: {exc}") from None
        if manifest.bundle_id != bundle_id:
            raise IntegrityError(f"damaged manifest: {where} describes bundle {manifest.bundle_id}, not {bundle_id}")
        if self._key is not None and not (
            manifest.authentication is not None
            and hmac.compare_digest(manifest.authentication, self._key.keyed_hash(manifest.signed_bytes()))
        ):
            raise IntegrityError(
                f"damaged manifest: {where} is not authenticated by this repository's key (changed by someone "
                "without the key, or not written by aibackup)"
            )
        return manifest

    def load_each(self, bundle_ids: Sequence[str]) -> Iterator[tuple[str, BundleManifest | AibackupError]]:
        """Each of `bundle_ids` with its manifest, or the IntegrityError or ManifestVersionError that loading
        it raised, in the order given. On object storage the manifests are read MANIFESTS_AT_ONCE at a time: one
        GET each, and hundreds of bundles took one round trip after another (tens of ms each between
        regions). Other errors (BundleNotFoundError, storage out of reach) are raised."""

        def one(bundle_id: str) -> BundleManifest | AibackupError:
            try:
                return self.load(bundle_id)
            except (IntegrityError, ManifestVersionError) as exc:
                return exc

        ids = list(bundle_ids)
        if self.storage.is_local or len(ids) < 2:
            yield from ((b, one(b)) for b in ids)
            return
        yield ids[0], one(ids[0])  # opens the keyring (once) before the threads share it
        with concurrent.futures.ThreadPoolExecutor(MANIFESTS_AT_ONCE, thread_name_prefix="aibackup-manifests") as pool:
            yield from zip(ids[1:], pool.map(one, ids[1:]), strict=True)

    def scan(self) -> Scan:
        """Every bundle, oldest first, split into loadable manifests and damaged ones."""
        good: list[BundleManifest] = []
        bad: list[DamagedBundle] = []
        for bundle_id, loaded in self.load_each(self.bundle_ids()):
            if isinstance(loaded, BundleManifest):
                good.append(loaded)
            else:
                bad.append(DamagedBundle(bundle_id, self.manifest_path(bundle_id), str(loaded)))
        return good, bad

    def resolve(
        self, ref: str | None, *, datasets: Sequence[str] = (), at: dt.datetime | None = None
    ) -> BundleManifest:
        """The bundle a user names: an id, a unique id prefix, or `latest`/None.

        For `latest`: with `datasets`, the newest bundle holding all of them; with `at`, the newest one
        started at or before that time (point-in-time restore).
        """
        if ref not in (None, "latest"):  # "" (an empty $VAR) names no bundle: match_id refuses it
            if at is not None:
                raise UsageError("give either a bundle id or --at, not both")
            return self.load(self.match_id(ref))
        ids = self.bundle_ids()
        if at is not None:
            if not isinstance(at, dt.datetime):
                raise UsageError(f"a time to restore from must be a datetime, not {type(at).__name__}")
            # Compared as times, not as text: strftime's %Y does not zero-pad a year before 1000 (glibc), so
            # "9990101T..." sorted after every real id and --at 0999-01-01 picked the newest bundle. A time
            # without a zone is UTC, as on the command line (astimezone would take it as the machine's).
            cutoff = (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
            ids = [i for i in ids if (started := id_time(i)) is not None and started <= cutoff]
        for position, bundle_id in enumerate(reversed(ids)):
            try:
                manifest = self.load(bundle_id)
            except (IntegrityError, ManifestVersionError) as exc:
                # Never skip a newer bundle silently: say which older one would do, and let the user choose.
                older = self._first_loadable(list(reversed(ids))[position + 1 :], datasets)
                holding = f" holding {', '.join(map(repr, datasets))}" if datasets else ""
                hint = f"; to restore the one before it{holding}: {older}" if older else ""
                raise type(exc)(f"the newest bundle {bundle_id} cannot be read: {exc}{hint}") from None
            names = {d.name for d in manifest.datasets}
            if all(n in names for n in datasets):
                return manifest
        which = f" holding {', '.join(map(repr, datasets))}" if datasets else ""
        when = f" from {iso(at)} or earlier" if at is not None else ""
        raise BundleNotFoundError(f"no bundle{which}{when} in {self.storage.display()}")

    def _first_loadable(self, ids: Sequence[str], datasets: Sequence[str] = ()) -> str | None:
        """The first of `ids` whose manifest loads and holds every one of `datasets` (the bundle a refused
        `restore latest --collection X` names instead: one without X was refused in turn)."""
        for bundle_id in ids:
            try:
                manifest = self.load(bundle_id)
            except (IntegrityError, ManifestVersionError):
                continue
            if set(datasets) <= {d.name for d in manifest.datasets}:
                return bundle_id
        return None

    def match_id(self, ref: str) -> str:
        """The id of the bundle named by an exact id, a unique prefix of one, or `latest` (the newest id,
        whether or not its manifest reads: a check of the latest bundle must not fall back to an older one),
        without loading it."""
        ids = self.bundle_ids()
        if ref == "latest" and ids:
            return ids[-1]
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise BundleNotFoundError(f"bundle id {ref!r} is ambiguous: {', '.join(matches[:5])}")
        raise BundleNotFoundError(f"no bundle {ref!r} in {self.storage.display()} (see `aibackup list`)")

    def commit(self, manifest: BundleManifest) -> None:
        """Publish a bundle: write its manifest exclusively (signed when a key is in use, see
        :meth:`use_key`). Its parts must already be durable."""
        if self._key is not None:
            manifest = replace(manifest, authentication=self._key.keyed_hash(manifest.signed_bytes()))
        try:
            self.storage.write_exclusive(self.manifest_path(manifest.bundle_id), manifest.to_bytes())
        except AlreadyExistsError:
            raise IntegrityError(f"bundle {manifest.bundle_id} already exists; refusing to replace it") from None

    def manifest_absent(self, bundle_id: str) -> bool:
        """True only when the storage says the bundle's manifest does not exist (False when it exists or
        the storage cannot tell): a failed commit may have landed, and then its parts must stay."""
        try:
            return not self.storage.exists(self.manifest_path(bundle_id))
        except Exception:  # unreachable storage: cannot tell, so assume it may exist
            return False


class _Documents:
    """The storage's document codec of a fully encrypted repository: everything but the marker sealed."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def seal(self, rel: str, data: bytes) -> bytes:
        return data if rel == MARKER else self.repo.vault().seal(rel, data)

    def open(self, rel: str, raw: bytes, where: str) -> bytes:
        return raw if rel == MARKER else self.repo.vault().open(rel, raw, where)


def marker_bytes(marker: Mapping[str, Any]) -> bytes:
    """The marker as it is stored (never sealed: readers need it to find the key)."""
    return (json.dumps(marker, indent=2) + "\n").encode()


def _check_marker(raw: bytes, where: str) -> dict[str, Any]:
    try:
        marker = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise IntegrityError(f"damaged repository marker {where}: not valid JSON") from None
    if not isinstance(marker, dict) or marker.get("format") != REPO_FORMAT:
        raise NotARepositoryError(f"{where} is not an aibackup repository marker")
    version = marker.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IntegrityError(f"damaged repository marker {where}: no version")
    if version > REPO_VERSION:
        raise ManifestVersionError(
            f"repository format {version} at {where} is newer than this aibackup reads ({REPO_VERSION}); "
            "upgrade aibackup"
        )
    if not isinstance(marker.get("id"), str) or ("encryption" in marker and not isinstance(marker["encryption"], dict)):
        raise IntegrityError(f"damaged repository marker {where}: bad id or encryption entry")
    scheme = marker.get("encryption", {}).get("scheme")
    if scheme is not None and scheme != keyslots.SCHEME:
        raise ManifestVersionError(
            f"the repository at {where} is encrypted with scheme {scheme!r}, which this aibackup does not read; "
            "upgrade aibackup"
        )
    return marker
