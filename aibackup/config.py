"""The configuration file ``aibackup.yaml``: repository, sources, restore targets, retention, restore tests.

It is read from ``--config FILE``, else ``$AIBACKUP_CONFIG``, else ``./aibackup.yaml`` when that exists.
Example (every key; only ``repository`` and ``sources`` are required)::

    repository: s3://backups/ai                  # where bundles go: a path or s3://bucket/prefix
    key_file: ./secrets/aibackup.key             # key of an encrypted repository
    kms_key_id: alias/aibackup                   # `init --encrypt`: also wrap its key with this AWS KMS key
    sse: aws:kms                                 # S3 server-side encryption of every object (or AES256)
    sse_kms_key_id: alias/bucket-key             # with sse: aws:kms, the bucket key (default: AWS's)
    metrics_file: ./metrics/aibackup.prom        # Prometheus text file written after each run
    lock: {stale_after: 10m}                     # a run's lock not refreshed for this long may be taken over
    sources:                                     # at least one, kept in file order
      kb:
        uri: chroma:./data/chroma                # a source URI (docs/stores.md)
        collections: [docs, faq]                 # only these (default: all of them)
        rpo: 24h                                 # the newest bundle should never be older than this
        rto: 1h                                  # a restore test must be verified within this
        retention: {keep_daily: 14}              # rule by rule, wins over the global retention
        golden_queries: ./golden/kb.jsonl        # vector sources: query vectors with expected top-k ids
        restore_test: {target: scratch}          # instead of restore_test.target; {skip: true} skips it
      logs: {uri: "conversations:./logs", rpo: 1h, on_bad_line: skip}
      ft: {uri: "finetune:./data/ft", job_config: ./data/ft/job.yaml}
      deploy: {uri: "config:./deploy", redact_secrets: true}
      docs: "qdrant+http://qdrant:6333"          # shorthand for {uri: ...}
    targets:                                     # named restore targets (docs/stores.md)
      scratch: {uri: "qdrant:./restore-test/qdrant"}
    retention: {keep_last: 3, keep_daily: 7, keep_weekly: 4, keep_monthly: 12}
    restore_test: {target: scratch, recall_tolerance: 0.05, report: ./reports/restore-test}
    x-defaults: &nightly {rpo: 24h}              # ignored: a place for anchors (kb: {<<: *nightly, ...})

Keys:

- ``repository`` (required): a local path or ``s3://bucket/prefix``.
- ``sources`` (required, not empty): name -> ``{uri, ...}`` or just the URI. Names are letters, digits,
  ``_ . -``. Per source: ``uri`` (required); ``collections`` (list of names); ``rpo`` and ``rto``
  (durations); ``retention`` (as below; each rule it sets replaces the global one, ``0`` switches a rule
  off); ``restore_test: {target: NAME, skip: BOOL}`` (skip wins); ``allow_lossy: BOOL`` (default false: as
  ``backup --allow-lossy``, what the source holds only approximately is backed up, saying so). Only for
  some kinds of source:
  ``on_bad_line: fail|skip`` (conversations, default ``fail``), ``job_config: PATH`` (finetune),
  ``redact_secrets: BOOL`` (config, default false), ``golden_queries: PATH`` (chroma and qdrant: a JSON or
  JSONL file of query vectors with the ids expected in their top k, asked of the source at backup and of
  the restored store by the restore test, which compares the two).
- ``targets``: name -> ``{uri}`` or just the URI: restore targets. A target named by a source's
  ``restore_test.target`` must hold that source's kind of data (Chroma and Qdrant hold each other's); the
  global one serves the sources whose data it holds, the others are restored into a temporary store.
- ``retention``: ``keep_last``, ``keep_hourly``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``,
  ``keep_yearly`` (whole numbers >= 0) and ``keep_within`` (a duration); an unset rule keeps nothing by
  itself, no ``retention`` at all keeps every bundle, and a policy that keeps no bundle is refused.
- ``restore_test``: ``target`` (a target name, the default scratch target), ``recall_tolerance`` (0 to 1,
  default 0.05: the restored store's recall may be this much below the source's, recorded at backup),
  ``min_recall`` (0 to 1: an absolute floor besides; the rule of bundles without a search baseline, 0.9 by
  default there), ``queries`` (queries of the search check: default every query of the bundle's baseline,
  20 for a bundle without one; 0 skips them), ``report`` (PATH: the test writes PATH.md and PATH.json).
- ``kms_key_id``: the AWS KMS key ``aibackup init --encrypt`` wraps the master key with (a key slot).
- ``sse`` (``AES256``, ``aws:kms``, ``aws:kms:dsse``) and ``sse_kms_key_id``: S3 server-side encryption
  sent with every object written (the same as ``?sse=…&sse_kms_key_id=…`` on the repository URL).
- ``key_file``, ``metrics_file`` (paths); ``lock: {stale_after: DURATION}`` (default 10m, at least 3m:
  three lock heartbeats).
- Top-level keys starting with ``x-`` are ignored: a place for YAML anchors (``<<: *anchor`` merges work).

Durations: ``30s``, ``15m``, ``1h``, ``24h``, ``7d``, ``2w``, combinations like ``1h30m``, or a bare number
of seconds. Relative paths, including the path of a ``chroma:``, ``qdrant:``, ``conversations:``,
``finetune:`` or ``config:`` URI and of a local repository, are relative to the config file's folder (``~``
is expanded); server URIs and ``s3://`` are left alone. A bare ``chroma`` or ``qdrant`` target means
``aibackup-restore/<kind>`` beside the config file.

Environment variables: ``${VAR}`` and ``${VAR:-default}`` (the default when VAR is unset or empty) are
replaced in every value (not in keys); ``$$`` is a literal ``$``. The result is read as its key needs
(``keep_last: ${KEEP}`` is a number, ``redact_secrets: ${REDACT}`` true or false). Inside ``{...}`` put
quotes around a value holding ``${`` (YAML reads ``{`` there as syntax). A variable that is not set and has no
default is an error naming the key and the variable. Values from the environment never appear in an error
or a ``repr``: those show the text written in the file (``'${REPO}'``) instead.

Every problem is a :class:`~aibackup.errors.ConfigError` with one line naming the file, the line and the key
(``aibackup.yaml:7: sources.kb.rpo: "24x" is not a duration (use 30m, 24h, 7d)``): YAML that does not parse,
unknown keys (with the closest known one), duplicate keys, wrong types, unknown target names, bad URIs.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aibackup.errors import ConfigError

CONFIG_ENV = "AIBACKUP_CONFIG"
DEFAULT_CONFIG = "aibackup.yaml"
COUNTS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
#: per-source keys that only one kind of data understands (the connector's dataset_kind)
ONLY_FOR = {"on_bad_line": "conversations", "job_config": "finetune", "redact_secrets": "config"}
ONLY_FOR["golden_queries"] = "vectors"
ONLY_FOR["full_every"] = "vectors"
DURATION_HINT = "use 30m, 24h, 7d"
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([wdhms])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


class EnvStr(str):
    """Text built with ``${VAR}`` interpolation. Its ``repr`` is the text written in the file, never the value
    (which may be a credential), so reprs and ``{x!r}`` messages stay safe; ``str()`` is the value."""

    template: str

    def __new__(cls, value: str, template: str) -> EnvStr:
        self = super().__new__(cls, value)
        self.template = template
        return self

    def __repr__(self) -> str:
        return repr(self.template)

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return (str(self), self.template)


class _SafeRepr:
    """A dataclass repr that shows ``<from the environment>`` for fields named in ``env_fields``."""

    def __repr__(self) -> str:
        hidden: frozenset[str] = getattr(self, "env_fields", frozenset())
        shown = [
            f"{f.name}={'<from the environment>' if f.name in hidden else repr(getattr(self, f.name))}"
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.repr
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


def _env_field() -> Any:
    return field(default=frozenset(), repr=False, compare=False)


#: Vectors: incremental links after a full backup before the next backup is full (``full_every``).
FULL_EVERY = 30


@dataclass(frozen=True, repr=False)
class RetentionPolicy(_SafeRepr):
    """Which bundles `prune` keeps. Every field None = that rule is not set."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: datetime.timedelta | None = None
    env_fields: frozenset[str] = _env_field()  # fields whose value came from ${VAR} (masked in repr)

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in (*COUNTS, "keep_within"))

    def keeps_nothing(self) -> bool:
        """True when rules are set but none of them can keep a bundle (every count 0)."""
        counts = [getattr(self, name) for name in COUNTS]
        return not self.is_empty() and self.keep_within is None and not any(counts)

    def merged(self, override: RetentionPolicy | None) -> RetentionPolicy:
        """This policy with every rule `override` sets replaced by the override's."""
        if override is None:
            return self
        names = (*COUNTS, "keep_within")
        values = {n: getattr(override, n) if getattr(override, n) is not None else getattr(self, n) for n in names}
        env = {n for n in names if n in (override.env_fields if getattr(override, n) is not None else self.env_fields)}
        return RetentionPolicy(**values, env_fields=frozenset(env))


@dataclass(frozen=True, repr=False)
class SourceConfig(_SafeRepr):
    """One entry of ``sources``: what to back up, its objectives and options (paths absolute)."""

    name: str
    uri: str
    rpo: datetime.timedelta | None = None
    rto: datetime.timedelta | None = None
    collections: tuple[str, ...] = ()
    on_bad_line: str = "fail"
    job_config: str | None = None
    redact_secrets: bool = False
    retention: RetentionPolicy | None = None  # this source's rules only; see Config.retention_for
    golden_queries: str | None = None
    #: back up what the source holds only approximately, saying so (as ``backup --allow-lossy``)
    allow_lossy: bool = False
    full_every: int = FULL_EVERY  # vectors: incremental links after a full backup (0: every backup full)
    restore_test_target: str | None = None  # a target name
    restore_test_skip: bool = False
    env_fields: frozenset[str] = _env_field()


@dataclass(frozen=True, repr=False)
class TargetConfig(_SafeRepr):
    """One entry of ``targets``: a named restore target URI."""

    name: str
    uri: str


@dataclass(frozen=True, repr=False)
class CopyConfig(_SafeRepr):
    """One entry of ``copies``: a second repository each new bundle is copied into after the backups, and
    its own key (a passphrase file) when it has a key slot of its own."""

    repository: str
    key_file: str | None = None
    env_fields: frozenset[str] = _env_field()


@dataclass(frozen=True, repr=False)
class RestoreTestConfig(_SafeRepr):
    """The top-level ``restore_test`` settings."""

    target: str | None = None
    min_recall: float | None = None  # an absolute floor besides the comparison with the source
    recall_tolerance: float = 0.05
    queries: int | None = None  # None: every query of the bundle's search baseline (20 without one)
    report: str | None = None
    repository: str | None = None  # restore from this copy instead of the repository (a second region)
    env_fields: frozenset[str] = _env_field()


@dataclass(frozen=True, repr=False)
class Config(_SafeRepr):
    """A loaded ``aibackup.yaml``. ``env_fields`` (here and above) names the fields whose non-text value
    came from ``${VAR}``: repr shows them as ``<from the environment>``; text values are :class:`EnvStr`."""

    path: str  # the file read (absolute)
    repository: str
    sources: Mapping[str, SourceConfig]  # in file order
    targets: Mapping[str, TargetConfig]
    retention: RetentionPolicy | None = None
    restore_test: RestoreTestConfig = RestoreTestConfig()
    key_file: str | None = None
    kms_key_id: str | None = None
    metrics_file: str | None = None
    lock_stale_after: datetime.timedelta = datetime.timedelta(minutes=10)
    copies: tuple[CopyConfig, ...] = ()
    #: A Dask scheduler's address: the sources' vector backups are partitioned over its workers.
    dask: str | None = None
    env_fields: frozenset[str] = _env_field()

    def source(self, name: str) -> SourceConfig:
        """The source called `name`; ConfigError listing the configured names otherwise."""
        if name not in self.sources:
            raise ConfigError(f"{self.path}: no source {name!r} (configured: {', '.join(self.sources) or 'none'})")
        return self.sources[name]

    def retention_for(self, name: str) -> RetentionPolicy | None:
        """The retention of source `name`: its own rules over the global ones; None = keep every bundle."""
        policy = (self.retention or RetentionPolicy()).merged(self.source(name).retention)
        return None if policy.is_empty() else policy


def parse_duration(text: str | int | float) -> datetime.timedelta:
    """``30s``, ``15m``, ``1h``, ``7d``, ``2w``, combinations (``1h30m``) or a number of seconds (>= 0)."""
    seconds: float | None = None
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        stripped = text.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
            seconds = float(stripped)
        elif stripped and _DURATION.sub("", stripped).strip() == "":
            seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(stripped))
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f'"{text}" is not a duration ({DURATION_HINT})')
    try:
        return datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise ConfigError(f'"{text}" is too long a duration') from None


def find_config_path(explicit: str | None, named_by: str = "--config") -> str | None:
    """The config file to read: `explicit` (named by `named_by` in messages: ``--config``, or ``$AIBACKUP_CONFIG``
    where the command line's option took it from there), else ``$AIBACKUP_CONFIG``, else ``./aibackup.yaml`` if
    it exists, else None. A named file that does not exist is a ConfigError."""
    for path, origin in ((explicit, named_by), (os.environ.get(CONFIG_ENV), f"${CONFIG_ENV}")):
        if path:
            if os.path.isdir(path):
                raise ConfigError(f"{path} is a folder, not a config file (from {origin})")
            if os.path.exists(path) and not os.path.isfile(path):  # /dev/null, a FIFO: "no such file" misleads
                raise ConfigError(f"{path} is not a regular file, not a config file (from {origin})")
            if not os.path.isfile(path):
                raise ConfigError(f"{path}: no such config file (from {origin})")
            return path
    return DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None


def load_config(path: str) -> Config:
    """Read and check the config file at `path`. Raises ConfigError (one line: file:line: key: problem)."""
    from aibackup.config_reader import read_config  # imported here: the reader imports this module's dataclasses

    return read_config(path)
