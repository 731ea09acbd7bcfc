"""The configuration file ``aibackup.yaml``: repository, sources, restore targets, retention, restore tests.

It is read from ``--config FILE``, else ``$AIBACKUP_CONFIG``, else ``./aibackup.yaml`` when that exists.
Example (every key; only ``repository`` and ``sources`` are required)::

    repository: s3://backups/ai                  # where bundles go: a path or s3://bucket/prefix
    key_file: ./secrets/aibackup.key             # key of an encrypted repository
    metrics_file: ./metrics/aibackup.prom        # Prometheus text file written after each run
    lock: {stale_after: 10m}                     # a run's lock not refreshed for this long may be taken over
    sources:                                     # at least one, kept in file order
      kb:
        uri: chroma:./data/chroma                # a source URI (README, *Stores*)
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
    targets:                                     # named restore targets (target URIs, README *Stores*)
      scratch: {uri: "qdrant:./restore-test/qdrant"}
    retention: {keep_last: 3, keep_daily: 7, keep_weekly: 4, keep_monthly: 12}
    restore_test: {target: scratch, min_recall: 0.9, queries: 20, report: ./reports/restore-test}
    x-defaults: &nightly {rpo: 24h}              # ignored: a place for anchors (kb: {<<: *nightly, ...})

Keys:

- ``repository`` (required): a local path or ``s3://bucket/prefix``.
- ``sources`` (required, not empty): name -> ``{uri, ...}`` or just the URI. Names are letters, digits,
  ``_ . -``. Per source: ``uri`` (required); ``collections`` (list of names); ``rpo`` and ``rto``
  (durations); ``retention`` (as below; each rule it sets replaces the global one, ``0`` switches a rule
  off); ``restore_test: {target: NAME, skip: BOOL}`` (skip wins). Only for some kinds of source:
  ``on_bad_line: fail|skip`` (conversations, default ``fail``), ``job_config: PATH`` (finetune),
  ``redact_secrets: BOOL`` (config, default false), ``golden_queries: PATH`` (chroma and qdrant: a JSON or
  JSONL file of query vectors with the ids expected in their top k, read by the restore test).
- ``targets``: name -> ``{uri}`` or just the URI: restore targets. A target named by a source's
  ``restore_test.target`` must hold that source's kind of data (Chroma and Qdrant hold each other's); the
  global one serves the sources whose data it holds, the others are restored into a temporary store.
- ``retention``: ``keep_last``, ``keep_hourly``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``,
  ``keep_yearly`` (whole numbers >= 0) and ``keep_within`` (a duration); an unset rule keeps nothing by
  itself, no ``retention`` at all keeps every bundle, and a policy that keeps no bundle is refused.
- ``restore_test``: ``target`` (a target name, the default scratch target), ``min_recall`` (0 to 1, default
  0.9), ``queries`` (nearest-neighbour queries sampled, default 20; 0 skips them), ``report`` (PATH: the
  test writes PATH.md and PATH.json).
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
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

import yaml

from aibackup.errors import ConfigError, UsageError, first_line
from connectors.registry import BARE_TARGETS, DEFAULT_RESTORE_ROOT, connector_class, parse_location

CONFIG_ENV = "AIBACKUP_CONFIG"
DEFAULT_CONFIG = "aibackup.yaml"
COUNTS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
#: per-source keys that only one kind of data understands (the connector's dataset_kind)
ONLY_FOR = {"on_bad_line": "conversations", "job_config": "finetune", "redact_secrets": "config"}
ONLY_FOR["golden_queries"] = "vectors"
DURATION_HINT = "use 30m, 24h, 7d"
_SECTIONS = ("targets", "retention", "restore_test", "lock")  # mapping-valued keys: null = not given
_TAG = "tag:yaml.org,2002:"
_NULL = _TAG + "null"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REFERENCE = re.compile(r"\$\$|\$\{(?P<body>[^}]*)(?P<close>\}?)")
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
    restore_test_target: str | None = None  # a target name
    restore_test_skip: bool = False
    env_fields: frozenset[str] = _env_field()


@dataclass(frozen=True, repr=False)
class TargetConfig(_SafeRepr):
    """One entry of ``targets``: a named restore target URI."""

    name: str
    uri: str


@dataclass(frozen=True, repr=False)
class RestoreTestConfig(_SafeRepr):
    """The top-level ``restore_test`` settings."""

    target: str | None = None
    min_recall: float = 0.9
    queries: int = 20
    report: str | None = None
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
    metrics_file: str | None = None
    lock_stale_after: datetime.timedelta = datetime.timedelta(minutes=10)
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


def find_config_path(explicit: str | None) -> str | None:
    """The config file to read: `explicit` (``--config``), else ``$AIBACKUP_CONFIG``, else
    ``./aibackup.yaml`` if it exists, else None. A named file that does not exist is a ConfigError."""
    for path, origin in ((explicit, "--config"), (os.environ.get(CONFIG_ENV), f"${CONFIG_ENV}")):
        if path:
            if not os.path.isfile(path):
                raise ConfigError(f"{path}: no such config file (from {origin})")
            return path
    return DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None


def load_config(path: str) -> Config:
    """Read and check the config file at `path`. Raises ConfigError (one line: file:line: key: problem)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(
            f"{where}: not valid YAML: {(exc.problem or exc.context or 'syntax error').strip()}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {first_line(exc)}") from None
    if root is None:
        raise ConfigError(f"{path}: the config file is empty (it needs at least repository and sources)")
    return _Reader(path).config(root)


@dataclass(frozen=True)
class _Scalar:
    value: Any
    node: yaml.Node
    path: str
    text: str  # as written in the file: ${VAR} references, never their values
    env: bool  # the value came through ${VAR} interpolation

    def shown(self) -> str:
        text = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return f'"{text}"'.replace("\n", "\\n") + (" (from the environment)" if self.env else "")

    def text_value(self, value: str) -> str:
        return EnvStr(value, self.text) if self.env else value


Reader = Callable[[yaml.Node, str], _Scalar]


def _kind(value: Any) -> str:
    """What a value (or a YAML node) is, for messages that must not show it."""
    if isinstance(value, yaml.Node):
        if not isinstance(value, yaml.ScalarNode):
            return "a mapping" if isinstance(value, yaml.MappingNode) else "a list"
        value = {_NULL: None, _TAG + "bool": True, _TAG + "int": 0, _TAG + "float": 0.0}.get(value.tag, "")
    if value is None or isinstance(value, bool):
        return "nothing" if value is None else "true/false"
    return "a number" if isinstance(value, int | float) else "text" if isinstance(value, str) else "another type"


class _Reader:
    """Walks the composed YAML node tree, so every error can name its line."""

    def __init__(self, path: str) -> None:
        self.file = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.constructor = yaml.constructor.SafeConstructor()
        self.resolver = yaml.resolver.Resolver()
        self.flattened: set[int] = set()
        self.targets: dict[str, TargetConfig] = {}
        self.kinds: dict[str, str] = {}  # target name -> connector kind
        self.default_retention: RetentionPolicy | None = None
        self.retention_node: yaml.Node | None = None

    def fail(self, node: yaml.Node, path: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.file}:{node.start_mark.line + 1}: {f'{path}: ' if path else ''}{message}")

    # --- structure --------------------------------------------------------------------------------------

    def mapping(self, node: yaml.Node, path: str, known: Sequence[str] | None) -> dict[str, tuple[yaml.Node, Any]]:
        """key -> (key node, value node); duplicate and unknown keys are errors, ``<<`` merges apply."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping, got {_kind(node)}")
        if id(node) not in self.flattened:  # once per node: merging (<<) changes node.value in place
            first: dict[str, yaml.Node] = {}
            for key, _ in node.value:
                if key.tag == _TAG + "merge":
                    continue
                if not isinstance(key, yaml.ScalarNode) or not key.value:
                    self.fail(key, path, "a key must be a plain name")
                if key.value in first:
                    line = first[key.value].start_mark.line + 1
                    self.fail(key, path, f'duplicate key "{key.value}" (first at line {line})')
                first[key.value] = key
            try:
                self.constructor.flatten_mapping(node)
            except yaml.YAMLError as exc:
                self.fail(node, path, f"bad merge (<<): {first_line(Exception(getattr(exc, 'problem', exc)))}")
            self.flattened.add(id(node))
        out: dict[str, tuple[yaml.Node, Any]] = {}
        for key, value in node.value:
            sub = f"{path}.{key.value}" if path else str(key.value)
            if known is not None and key.value not in known and not (not path and key.value.startswith("x-")):
                score = {k: difflib.SequenceMatcher(None, key.value, k).ratio() for k in known}
                close = max(known, key=score.__getitem__)  # the first of equally close ones
                hint = f'did you mean "{close}"?' if score[close] >= 0.6 else f"expected one of {', '.join(known)}"
                self.fail(key, sub, f"unknown key; {hint}")
            out[key.value] = (key, value)
        return out

    def construct(self, node: yaml.Node, path: str) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError):
            self.fail(node, path, "cannot be read as a YAML value (check its tag or format)")

    def scalar(self, node: yaml.Node, path: str, typed: bool = False) -> _Scalar:
        """A single value with ${VAR} references replaced; `typed`: text from the environment is then read
        as YAML reads a value (a number, true/false). Null (nothing written) is an error."""
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, path, f"expected a single value, got {_kind(node)}")
        value, env = self.construct(node, path), False
        if isinstance(value, str) and "$" in value:
            value, env = self.interpolate(node, path, value)
            if env and typed:
                tag = self.resolver.resolve(yaml.ScalarNode, value, (True, False))
                value = self.construct(yaml.ScalarNode(tag, value, node.start_mark, node.end_mark), path)
        if value is None and not env:
            self.fail(node, path, "has no value")
        return _Scalar(value, node, path, str(node.value), env)

    def interpolate(self, node: yaml.Node, path: str, text: str) -> tuple[str, bool]:
        used = False

        def replace(match: re.Match[str]) -> str:
            nonlocal used
            if match.group(0) == "$$":
                return "$"
            body = match.group("body")
            name, has_default, default = body.partition(":-")
            if not match.group("close") or not _VAR.match(name):
                self.fail(node, path, "bad ${...} reference: write ${NAME} or ${NAME:-default} ($$ for a $)")
            used = True
            found = os.environ.get(name)
            if found is None or (has_default and found == ""):
                if not has_default:
                    self.fail(node, path, f"${{{name}}} is not set (for a default write ${{{name}:-default}})")
                return default
            return found

        return _REFERENCE.sub(replace, text), used

    # --- typed values -----------------------------------------------------------------------------------

    def text(self, node: yaml.Node, path: str) -> _Scalar:
        s = self.scalar(node, path)
        if not isinstance(s.value, str) or not s.value.strip():
            self.fail(node, path, f"expected text, got {_kind(s.value) if s.value != '' else 'empty text'} {s.shown()}")
        return dataclasses.replace(s, value=s.text_value(s.value))

    def integer(self, node: yaml.Node, path: str, minimum: int = 0) -> _Scalar:
        s = self.scalar(node, path, typed=True)
        if not isinstance(s.value, int) or isinstance(s.value, bool):
            self.fail(node, path, f"expected a whole number, got {_kind(s.value)} {s.shown()}")
        if s.value < minimum:
            self.fail(node, path, f"{s.shown()} is below {minimum}")
        return s

    def fraction(self, node: yaml.Node, path: str) -> _Scalar:
        s = self.scalar(node, path, typed=True)
        if not isinstance(s.value, int | float) or isinstance(s.value, bool) or not 0 <= s.value <= 1:
            self.fail(node, path, f"expected a number from 0 to 1, got {s.shown()}")
        return dataclasses.replace(s, value=float(s.value))

    def boolean(self, node: yaml.Node, path: str) -> _Scalar:
        s = self.scalar(node, path, typed=True)
        if not isinstance(s.value, bool):
            self.fail(node, path, f"expected true or false, got {s.shown()}")
        return s

    def duration(self, node: yaml.Node, path: str) -> _Scalar:
        s = self.scalar(node, path)
        try:
            value = parse_duration(s.value if isinstance(s.value, str | int | float) else "")
        except ConfigError:
            self.fail(node, path, f"{s.shown()} is not a duration ({DURATION_HINT})")
        if not value:
            self.fail(node, path, f"{s.shown()}: a duration must be longer than 0")
        return dataclasses.replace(s, value=value)

    def on_bad_line(self, node: yaml.Node, path: str) -> _Scalar:
        s = self.text(node, path)
        if s.value not in ("fail", "skip"):
            self.fail(node, path, f"{s.shown()} is not one of fail, skip")
        return s

    def local_path(self, text: str) -> str:
        expanded = os.path.expanduser(text)
        return expanded if os.path.isabs(expanded) else os.path.normpath(os.path.join(self.base, expanded))

    def path(self, node: yaml.Node, path: str) -> _Scalar:
        s = self.text(node, path)
        return dataclasses.replace(s, value=s.text_value(self.local_path(s.value.strip())))

    def uri(self, node: yaml.Node, path: str, *, target: bool) -> tuple[str, str]:
        """(the URI with its local path made relative to the config folder, the connector kind)."""
        s = self.text(node, path)
        text = s.value.strip()
        scheme, sep, rest = text.partition(":")
        location, query_sep, query = rest.partition("?")
        if target and text in BARE_TARGETS:
            text = f"{text}:{os.path.join(self.base, DEFAULT_RESTORE_ROOT, text)}"
        elif sep and location and not rest.startswith("//") and scheme.partition("+")[2] not in ("http", "https"):
            text = f"{scheme}:{self.local_path(location)}{query_sep}{query}"
        uri = s.text_value(text)
        try:
            kind = parse_location(uri, target=target).kind
        except UsageError as exc:
            message = first_line(exc).replace(repr(uri), s.shown())
            if s.env and str(uri) in message:  # never a value from the environment, whatever the wording
                message = f"{s.shown()} is not a valid store URI"
            self.fail(node, path, message)
        return uri, kind

    def repository(self, node: yaml.Node, path: str) -> _Scalar:
        s = self.text(node, path)
        text = s.value.strip()
        protocol, sep, rest = text.partition("://")
        if not sep:
            text = self.local_path(text)
        elif protocol not in ("s3", "s3a", "file", "local"):
            self.fail(node, path, f"{s.shown()} is not a repository location: use a path or s3://bucket/prefix")
        elif protocol.startswith("s3") and not rest.strip("/"):
            self.fail(node, path, f"{s.shown()} names no bucket: use s3://bucket/prefix")
        return dataclasses.replace(s, value=s.text_value(text))

    def names(self, node: yaml.Node, path: str) -> _Scalar:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"expected a list of names, got {_kind(node)}")
        names: list[str] = []
        for i, item in enumerate(node.value):
            s = self.text(item, f"{path}[{i}]")
            if s.value in names:
                self.fail(item, f"{path}[{i}]", f"{s.shown()} is listed twice")
            names.append(s.value)
        return self.done(tuple(names), node, path)

    def done(self, value: Any, node: yaml.Node, path: str) -> _Scalar:
        return _Scalar(value, node, path, "", False)

    # --- sections ---------------------------------------------------------------------------------------

    def fields(self, node: yaml.Node, path: str, readers: Mapping[str, Reader]) -> tuple[dict[str, Any], set[str]]:
        """Read a mapping in the order of `readers` (so targets are known before anything names one):
        (values, the keys whose non-text value came from the environment). Null sections count as absent."""
        entry = self.mapping(node, path, tuple(readers))
        values: dict[str, Any] = {}
        env: set[str] = set()
        for key, reader in readers.items():
            if key in entry and not (key in _SECTIONS and entry[key][1].tag == _NULL):
                s = reader(entry[key][1], f"{path}.{key}" if path else key)
                values[key] = s.value
                if s.env and not isinstance(s.value, str):
                    env.add(key)
        return values, env

    def config(self, root: yaml.Node) -> Config:
        readers: dict[str, Reader] = {"repository": self.repository}
        readers |= {"key_file": self.path, "metrics_file": self.path, "lock": self.lock, "targets": self.targets_}
        readers |= {"retention": self.global_retention, "restore_test": self.restore_test, "sources": self.sources}
        values, env = self.fields(root, "", readers)
        for key, what in (("repository", "where bundles go"), ("sources", "the sources to back up")):
            if key not in values:
                self.fail(root, key, f"missing: name {what}")
        if "lock" in values:
            values["lock_stale_after"] = values.pop("lock")
            env |= {"lock_stale_after"} if "lock" in env else set()
        values["targets"] = MappingProxyType(self.targets)
        return Config(path=os.path.abspath(self.file), env_fields=frozenset(env - {"lock"}), **values)

    def lock(self, node: yaml.Node, path: str) -> _Scalar:
        from aibackup.lock import DEFAULT_HEARTBEAT

        entry = self.mapping(node, path, ("stale_after",))
        if "stale_after" not in entry:
            return self.done(Config.lock_stale_after, node, path)
        s = self.duration(entry["stale_after"][1], f"{path}.stale_after")
        if s.value < 3 * DEFAULT_HEARTBEAT:
            minimum = int(3 * DEFAULT_HEARTBEAT.total_seconds())
            self.fail(s.node, s.path, f"{s.shown()} is shorter than 3 lock heartbeats ({minimum}s)")
        return s

    def shorthand(self, key: yaml.Node, value: yaml.Node, path: str, known: Sequence[str]) -> tuple[yaml.Node, str]:
        """A named entry given as a URI alone, or as a mapping: (the uri node, its key path)."""
        if not _NAME.match(str(key.value)):
            self.fail(key, path, "a name is letters, digits, '_', '.' and '-' (starting with a letter or digit)")
        if isinstance(value, yaml.ScalarNode) and value.tag != _NULL:
            return value, path
        entry = self.mapping(value, path, known)
        if "uri" not in entry:
            self.fail(value, f"{path}.uri", "missing: every entry needs a uri")
        return entry["uri"][1], f"{path}.uri"

    def targets_(self, node: yaml.Node, path: str) -> _Scalar:
        for name, (key, value) in self.mapping(node, path, None).items():
            uri, self.kinds[name] = self.uri(*self.shorthand(key, value, f"{path}.{name}", ("uri",)), target=True)
            self.targets[name] = TargetConfig(name, uri)
        return self.done(None, node, path)

    def retention(self, node: yaml.Node, path: str) -> _Scalar:
        readers: dict[str, Reader] = {name: self.integer for name in COUNTS}
        values, env = self.fields(node, path, {**readers, "keep_within": self.duration})
        return self.done(RetentionPolicy(**values, env_fields=frozenset(env)), node, path)

    def global_retention(self, node: yaml.Node, path: str) -> _Scalar:
        self.retention_node = node
        self.default_retention = self.retention(node, path).value
        return self.done(self.default_retention, node, path)

    def target_name(self, node: yaml.Node, path: str) -> _Scalar:
        s = self.text(node, path)
        if s.value not in self.targets:
            self.fail(node, path, f"{s.shown()} is not a target (targets: {', '.join(self.targets) or 'none'})")
        return s

    def restore_test(self, node: yaml.Node, path: str) -> _Scalar:
        readers = {"target": self.target_name, "min_recall": self.fraction, "queries": self.integer}
        values, env = self.fields(node, path, {**readers, "report": self.path})
        return self.done(RestoreTestConfig(**values, env_fields=frozenset(env)), node, path)

    def sources(self, node: yaml.Node, path: str) -> _Scalar:
        items = self.mapping(node, path, None) if node.tag != _NULL else {}
        if not items:
            self.fail(node, path, "no sources: name at least one, as in kb: {uri: chroma:./data}")
        return self.done(MappingProxyType({n: self.source(n, k, v) for n, (k, v) in items.items()}), node, path)

    def source(self, name: str, key: yaml.Node, value: yaml.Node) -> SourceConfig:
        path = f"sources.{name}"
        readers: dict[str, Reader] = {"uri": self.text, "collections": self.names, "rpo": self.duration}
        readers |= {"rto": self.duration, "on_bad_line": self.on_bad_line, "job_config": self.path}
        readers |= {"redact_secrets": self.boolean, "retention": self.retention, "golden_queries": self.path}
        readers["restore_test"] = lambda n, p: self.source_restore_test(n, p, data_kind)
        uri, kind = self.uri(*self.shorthand(key, value, path, tuple(readers)), target=False)
        data_kind = connector_class(kind).dataset_kind
        entry = self.mapping(value, path, tuple(readers)) if isinstance(value, yaml.MappingNode) else {}
        for key_name, (_, node) in entry.items():
            if ONLY_FOR.get(key_name, data_kind) != data_kind:
                self.fail(node, f"{path}.{key_name}", f"only for {ONLY_FOR[key_name]} sources, not {kind}")
        values, env = self.fields(value, path, readers) if entry else ({}, set())
        values.pop("uri", None)
        for key_name, field_name in (("target", "restore_test_target"), ("skip", "restore_test_skip")):
            if key_name in values.get("restore_test", {}):
                values[field_name] = values["restore_test"][key_name]
                env |= {field_name} if key_name in values["restore_test"]["env"] else set()
        values.pop("restore_test", None)
        if (self.default_retention or RetentionPolicy()).merged(values.get("retention")).keeps_nothing():
            problem = f"keeps no bundle of {name} at all: set a rule above 0"
            if "retention" in values or self.retention_node is None:
                self.fail(entry["retention"][1], f"{path}.retention", problem)
            self.fail(self.retention_node, "retention", problem)
        return SourceConfig(name=name, uri=uri, env_fields=frozenset(env), **values)

    def source_restore_test(self, node: yaml.Node, path: str, data_kind: str) -> _Scalar:
        values, env = self.fields(node, path, {"target": self.target_name, "skip": self.boolean})
        if "target" in values and (held := connector_class(self.kinds[values["target"]]).dataset_kind) != data_kind:
            where = self.mapping(node, path, None)["target"][1]
            self.fail(where, f"{path}.target", f"{values['target']!r} holds {held}; this source holds {data_kind}")
        return self.done({**values, "env": env}, node, path)
