"""Reading ``aibackup.yaml`` (the format is documented in :mod:`aibackup.config`): the YAML node tree is walked so
every error names its file, line and key; ``${VAR}`` references are replaced; keys, types and names are checked and
the :mod:`aibackup.config` dataclasses built. :func:`read_config` is what :func:`aibackup.config.load_config` runs."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn
from urllib.parse import parse_qs

import yaml

from aibackup.config import (
    COUNTS,
    DURATION_HINT,
    ONLY_FOR,
    Config,
    CopyConfig,
    EnvStr,
    RestoreTestConfig,
    RetentionPolicy,
    SourceConfig,
    TargetConfig,
    parse_duration,
)
from aibackup.connectors.base import Location
from aibackup.connectors.registry import BARE_TARGETS, DEFAULT_RESTORE_ROOT, connector_class, parse_location
from aibackup.errors import ConfigError, UsageError, first_line

_SECTIONS = ("targets", "retention", "restore_test", "lock")  # mapping-valued keys: null = not given
_TAG = "tag:yaml.org,2002:"
_NULL = _TAG + "null"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REFERENCE = re.compile(r"\$\$|\$\{(?P<body>[^}]*)(?P<close>\}?)")


def read_config(path: str) -> Config:
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
    except RecursionError:  # brackets nested a thousand deep: no config looks like that
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if root is None:
        raise ConfigError(f"{path}: the config file is empty (it needs at least repository and sources)")
    try:
        return _Reader(path).config(root)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None


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
        self.target_nodes: dict[str, yaml.Node] = {}
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
        elif protocol.startswith("s3"):
            if not rest.strip("/"):
                self.fail(node, path, f"{s.shown()} names no bucket: use s3://bucket/prefix")
            from aibackup.storage import url_options

            try:  # a typo in ?endpoint= or ?region= is a config error now, not an RPO alarm after the backups
                url_options(s.text_value(text), rest.partition("?")[2])  # named as written: a ${VAR} stays one
            except UsageError as exc:
                self.fail(node, path, str(exc))
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
        readers |= {"sse": self.text, "sse_kms_key_id": self.text, "kms_key_id": self.text}
        readers |= {"retention": self.global_retention, "restore_test": self.restore_test, "sources": self.sources}
        readers |= {"copies": self.copies, "dask": self.text}
        values, env = self.fields(root, "", readers)
        sse = {key: values.pop(key) for key in ("sse", "sse_kms_key_id") if key in values}
        if sse and "repository" in values:
            # Server-side encryption travels with the repository URL, where Storage reads and checks it.
            if not str(values["repository"]).startswith(("s3://", "s3a://")):
                self.fail(root, "sse", "server-side encryption (sse, sse_kms_key_id) is for an s3:// repository")
            _, _, given = str(values["repository"]).partition("?")
            # Twice would be refused when the repository is opened, naming a URL nobody wrote.
            for twice in sorted(set(sse) & set(parse_qs(given, keep_blank_values=True))):
                self.fail(root, twice, f"the repository URL sets {twice} already: give it in one place")
            query = "&".join(f"{key}={value}" for key, value in sse.items())
            joint = "&" if "?" in str(values["repository"]) else "?"  # after the URL's own options (endpoint=…)
            values["repository"] = f"{values['repository']}{joint}{query}"
        for key, what in (("repository", "where bundles go"), ("sources", "the sources to back up")):
            if key not in values:
                self.fail(root, key, f"missing: name {what}")
        if "lock" in values:
            values["lock_stale_after"] = values.pop("lock")
            env |= {"lock_stale_after"} if "lock" in env else set()
        self.copies_elsewhere(root, values)
        values["targets"] = MappingProxyType(self.targets)
        return Config(path=os.path.abspath(self.file), env_fields=frozenset(env - {"lock"}), **values)

    def copies(self, node: yaml.Node, path: str) -> _Scalar:
        """``copies: [{repository: URL, key_file: PATH}]``: second repositories, each named once."""
        from aibackup.storage import same_place

        if node.tag == _NULL:
            return self.done((), node, path)
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"expected a list of {{repository: URL}}, got {_kind(node)}")
        found: list[CopyConfig] = []
        for i, item in enumerate(node.value):
            where = f"{path}[{i}]"
            values, env = self.fields(item, where, {"repository": self.repository, "key_file": self.path})
            if "repository" not in values:
                self.fail(item, f"{where}.repository", "missing: every copy needs a repository")
            if any(same_place(c.repository, values["repository"]) for c in found):  # however spelled
                self.fail(item, f"{where}.repository", f"{values['repository']!r} is listed twice")
            found.append(CopyConfig(**values, env_fields=frozenset(env)))
        return self.done(tuple(found), node, path)

    def copies_elsewhere(self, root: yaml.Node, values: Mapping[str, Any]) -> None:
        """A copy, or the drill's repository, that is the repository itself (however spelled) is refused: every
        night's copy failed after the backups ("the destination is the source repository itself"), and the
        drill proved the repository while it said it restored from the copy."""
        from aibackup.storage import same_place

        entry = self.mapping(root, "", None)

        def refuse_if_same(url: str, node: yaml.Node, path: str) -> None:
            if same_place(url, values["repository"]):
                self.fail(node, path, f"{url!r} is the repository itself: a copy is another repository")

        for i, copy in enumerate(values.get("copies", ())):
            item = entry["copies"][1].value[i]
            refuse_if_same(copy.repository, self.mapping(item, "", None)["repository"][1], f"copies[{i}].repository")
        drill = values.get("restore_test")
        if drill is not None and drill.repository is not None:
            node = self.mapping(entry["restore_test"][1], "", None)["repository"][1]
            refuse_if_same(drill.repository, node, "restore_test.repository")

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
            self.target_nodes[name] = key
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
        readers["recall_tolerance"] = self.fraction
        values, env = self.fields(node, path, {**readers, "report": self.path, "repository": self.repository})
        return self.done(RestoreTestConfig(**values, env_fields=frozenset(env)), node, path)

    def sources(self, node: yaml.Node, path: str) -> _Scalar:
        items = self.mapping(node, path, None) if node.tag != _NULL else {}
        if not items:
            self.fail(node, path, "no sources: name at least one, as in kb: {uri: chroma:./data}")
        sources = {n: self.source(n, k, v) for n, (k, v) in items.items()}
        # One store, one source: bundles, retention, status and restore tests are told apart by the store
        # a bundle came from, so two sources of one store would prune and report each other's bundles.
        seen: dict[str, str] = {}
        for name, source in sources.items():
            store = parse_location(source.uri).display()
            if store in seen:
                self.fail(
                    items[name][0],
                    f"{path}.{name}.uri",
                    f"the same store as source {seen[store]!r}: use one source (with collections: [...])",
                )
            seen[store] = name
        # A scratch target must never be a source: the drill restores into it with --mode overwrite. Nor a
        # folder inside a source's folder (the next backup would take the restored copy as new data), or one
        # holding it.
        for target in self.targets.values():
            location = parse_location(target.uri, target=True)
            where = location.display()
            if where in seen:
                self.fail(
                    self.target_nodes[target.name],
                    f"targets.{target.name}",
                    f"is the store of source {seen[where]!r}: a restore test would overwrite it",
                )
            for name, source in sources.items():
                if _nested(location, parse_location(source.uri)):
                    self.fail(
                        self.target_nodes[target.name],
                        f"targets.{target.name}",
                        f"lies inside the store of source {name!r} or holds it: a restore test would write "
                        "into the source (name a folder of its own)",
                    )
        return self.done(MappingProxyType(sources), node, path)

    def source(self, name: str, key: yaml.Node, value: yaml.Node) -> SourceConfig:
        path = f"sources.{name}"
        readers: dict[str, Reader] = {"uri": self.text, "collections": self.names, "rpo": self.duration}
        readers |= {"rto": self.duration, "on_bad_line": self.on_bad_line, "job_config": self.path}
        readers |= {"redact_secrets": self.boolean, "retention": self.retention, "golden_queries": self.path}
        readers["full_every"] = self.integer
        readers["allow_lossy"] = self.boolean
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


def _nested(target: Location, source: Location) -> bool:
    """Whether two stores on this machine's disk (an embedded store, a folder, a file) lie one inside the
    other, or are the same file (a source's glob counts from its folder); False for servers."""
    if target.path is None or source.path is None or target.is_server or source.is_server:
        return False
    a = Path(os.path.expanduser(target.path)).resolve()
    pattern = os.path.expanduser(source.path)
    if any(ch in pattern for ch in "*?["):
        pattern = pattern[: min(pattern.find(ch) for ch in "*?[" if ch in pattern)]
        pattern = os.path.dirname(pattern) or "."
    b = Path(pattern).resolve()
    return a == b or a in b.parents or b in a.parents
