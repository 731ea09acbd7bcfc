"""Fine-tuning datasets: JSONL files (``finetune:PATH``), kind "finetune", one dataset per source.

``PATH`` is a file, a folder (``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst`` below it) or a glob, expanded and
named as :mod:`aibackup.connectors.files.lines` documents (dataset name: the file's base name without its suffixes, the
folder's name, or the glob's fixed folder's name). ``rows`` in ``describe`` is exact (a line count).

Records (:data:`aibackup.manifests.records.FINETUNE`): one per line, ``id`` = ``"<relative file>#<line>"``, ``raw``
the exact bytes with the terminator, ``offset`` in the decompressed file. A backup never fails on content:
each line is classified (``problem`` says why a line is not valid, never quoting it):

- ``chat``: an object with ``messages``: a non-empty list of objects, each with a ``role`` among system,
  user, assistant, tool, function, developer and a ``content`` that is a string or a list (it may be absent
  or null when the message carries ``tool_calls`` or ``function_call``), and at least one assistant message.
  ``messages`` = their canonical JSON.
- ``preference``: an object with ``preferred_output`` or ``non_preferred_output``: ``input`` must be an
  object whose ``messages`` follow the chat rules (no assistant message needed), and both outputs must be
  non-empty lists of such messages. ``messages`` = the input messages.
- ``plain``: any other JSON object (``prompt``/``completion`` and the like).
- ``blank``: only spaces, tabs, CR (``valid`` false, problem "blank line": not an example, not an error).
- ``invalid``: not UTF-8, not JSON, not an object, or a chat/preference example breaking the rules above.

The dataset config holds, per file: ``examples`` (valid lines), ``formats`` (counts), ``roles`` (message
counts by role), ``invalid`` (count) and ``problems`` (the first 20 "line N: why"), ``lines``, ``bytes``
and ``sha256`` of the decompressed content, ``compression``; the export notes the invalid lines. A
later backup writes only the files whose content changed: one whose sha256 equals the parent bundle's
is referenced from it (:mod:`aibackup.filereuse`; each part holds one file's lines).

Job config (option ``job_config``, ``--job-config FILE``): a YAML (``.yaml``/``.yml``) or JSON file
(others: JSON, else YAML) with the base model, hyperparameters, seed, provider job id... It is scanned for
secrets first (:func:`aibackup.connectors.files.secrets.find_secrets`): anything found refuses the backup with
SourceDataError naming the file and line, never the value. It travels in the dataset config as
``job_config`` = ``{"name": base name, "text": the file's text (UTF-8), "parsed": its content as JSON}``
(YAML dates and times become ISO 8601 strings, keys that are not strings become their JSON text;
binary values, sets and non-finite numbers are refused with ConfigError). A missing or unreadable file,
or one that does not parse, is a ConfigError naming it.

Restore (``finetune:DIR`` only): every file written back under DIR byte-identical (compressed ones
decompressed, without ``.gz``/``.zst``), in order, through temporary files renamed into place; the job
config written to ``DIR/<its name>`` (refused when that name is also a data file's). Modes ``create``
(refuses existing files), ``overwrite`` (replaces them, keeps others), ``merge`` refused; names leaving DIR
are refused: rules in :mod:`aibackup.connectors.files.filetarget`. The ``files`` check compares every written file's
sha256 (the job config's too) with the bundle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import DatasetDescription, ExportState, ImportPlan, Location, identity
from aibackup.connectors.files import lines, reuse
from aibackup.connectors.files.conversation_records import BATCH_BYTES, BATCH_ROWS, BOM, SURROGATE_ESCAPE
from aibackup.connectors.files.filetarget import (
    FileWriter,
    check_mode,
    compressed_in_place,
    file_renamer,
    output_names,
    refuse_existing,
    target_path,
)
from aibackup.connectors.files.linefiles import LineFiles
from aibackup.errors import ConfigError, SourceDataError, UnsupportedFeatureError
from aibackup.manifests.records import FINETUNE
from aibackup.manifests.vectors import canonical_json

ROLES = ("system", "user", "assistant", "tool", "function", "developer")
FORMATS = ("chat", "preference", "plain", "blank", "invalid")
PROBLEMS_KEPT = 20

Classified = tuple[str, str | None, str | None, list[str]]  # format, messages JSON, problem, roles


def _message_problem(messages: Any, what: str) -> str | None:
    if not isinstance(messages, list):
        return f"{what} is not a list"
    if not messages:
        return f"{what} is empty"
    for n, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            return f"{what}[{n}] is not an object"
        if "role" not in message:
            return f"{what}[{n}] has no role"
        if message["role"] not in ROLES:
            return f"{what}[{n}]: role is not one of {', '.join(ROLES)}"
        content = message.get("content")
        calls = isinstance(message.get("tool_calls"), list) or isinstance(message.get("function_call"), dict)
        if not isinstance(content, str | list) and not (calls and content is None):
            return f"{what}[{n}]: content must be a string or a list (or null beside tool_calls)"
    return None


def _roles(messages: list[Any]) -> list[str]:
    return [m["role"] for m in messages]


def classify(raw: bytes, first: bool) -> Classified:
    """The format of one line, its messages (canonical JSON), why it is not valid, and its roles."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid", None, f"not UTF-8 text (byte {exc.start + 1})", []
    if first and text.startswith(BOM):
        text = text[1:]
    if not text.strip(" \t\r\n"):
        return "blank", None, "blank line", []
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return "invalid", None, f"not valid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})", []
    except (ValueError, RecursionError):
        return "invalid", None, "JSON that cannot be read (too deep, or a number too long)", []
    if not isinstance(obj, dict):
        return "invalid", None, "not a JSON object", []
    if SURROGATE_ESCAPE.search(text):
        try:
            canonical_json(obj).encode("utf-8")
        except UnicodeEncodeError:
            return "invalid", None, "a \\u escape of a lone UTF-16 surrogate, which is not text", []
    if "preferred_output" in obj or "non_preferred_output" in obj:
        return _preference(obj)
    if "messages" in obj:
        messages = obj["messages"]
        problem = _message_problem(messages, "messages")
        if problem is None and "assistant" not in _roles(messages):
            problem = "no assistant message to learn from"
        if problem is not None:
            return "invalid", None, problem, []
        return "chat", canonical_json(messages), None, _roles(messages)
    return "plain", None, None, []


def _preference(obj: dict[str, Any]) -> Classified:
    given = obj.get("input")
    if not isinstance(given, dict):
        return "invalid", None, "input is not an object with messages", []
    problem = _message_problem(given.get("messages"), "input.messages")
    for key in ("preferred_output", "non_preferred_output"):
        problem = problem or _message_problem(obj.get(key), key)
    if problem is not None:
        return "invalid", None, problem, []
    roles = _roles(given["messages"]) + _roles(obj["preferred_output"]) + _roles(obj["non_preferred_output"])
    return "preference", canonical_json(given["messages"]), None, roles


class FinetuneConnector(LineFiles):
    """Fine-tuning JSONL files and their job config (see the module docstring)."""

    kind = "finetune"
    dataset_kind = "finetune"

    def __init__(self, location: Location, *, create: bool = False, options: Mapping[str, Any] | None = None) -> None:
        """Open the source (a missing path or a glob without match: DatasetNotFoundError; a bad job config:
        ConfigError; a job config holding a secret: SourceDataError) or the target folder."""
        super().__init__(location, create=create, options=options)
        self.job_config: dict[str, Any] | None = None
        self._open_folder()
        if not create and self.options.get("job_config"):
            self.job_config = load_job_config(str(self.options["job_config"]))

    def describe(self, names: Sequence[str] | None = None) -> list[DatasetDescription]:
        """The one dataset (`names` must be None or exactly its name, else DatasetNotFoundError); exact
        rows; config lists the files and the job config (summaries come with the export)."""
        name = self._the_dataset(names)
        files, rows = self._file_list()
        config = {"format": "jsonl", "files": files, "job_config": self.job_config}
        return [DatasetDescription(name, config, rows, kind=self.dataset_kind)]

    def export(self, dataset: DatasetDescription, since: Mapping[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """Every line of every file as canonical batches (at most 2000 rows or ~32 MB); never fails on
        content (SourceDataError/UnavailableError only for damaged or unreadable files). ``export_state``
        then gives the per-file summaries.

        With an offer of the parent's parts in `since` (:mod:`aibackup.connectors.files.reuse`), every file
        the parent holds is hashed first, and one whose sha256 equals the parent's is left out: the backup
        references the parent's parts for it, and its summary is the parent's."""
        columns: dict[str, list[Any]] = {f.name: [] for f in FINETUNE}
        size = 0
        summaries = []
        invalid: list[str] = []
        files = self._files()
        reused = _reused(files, since)
        for f in files:
            if f.name in reused:
                summary = reused[f.name]
                summaries.append(summary)
                invalid += [f"{f.shown}:{p.split(':')[0].removeprefix('line ')}" for p in summary["problems"]]
                invalid += [f"{f.shown}:?"] * (summary["invalid"] - len(summary["problems"]))
                continue
            digest = hashlib.sha256()
            formats: Counter[str] = Counter()
            roles: Counter[str] = Counter()
            problems: list[str] = []
            nbytes = count = 0
            # A file written while it is read would be stored half old, half new, and restore "exactly".
            before = lines.identity(f)
            for offset, number, raw in lines.iter_lines(f):
                fmt, messages, problem, line_roles = classify(raw, number == 1)
                formats[fmt] += 1
                roles.update(line_roles)
                if fmt == "invalid":
                    if len(problems) < PROBLEMS_KEPT:
                        problems.append(f"line {number}: {problem}")
                    invalid.append(f"{f.shown}:{number}")
                row = (f"{f.name}#{number}", f.name, number, offset, raw, fmt, messages, problem is None, problem)
                for column, value in zip(columns.values(), row, strict=True):
                    column.append(value)
                size += len(raw)
                digest.update(raw)
                nbytes, count = offset + len(raw), number
                if len(columns["id"]) >= BATCH_ROWS or size >= BATCH_BYTES:
                    yield _flush(columns)
                    size = 0
            if lines.identity(f) != before:
                raise SourceDataError(f"{f.shown} changed while it was being backed up; run the backup again")
            summaries.append(
                {
                    "name": f.name,
                    "bytes": nbytes,
                    "lines": count,
                    "sha256": digest.hexdigest(),
                    "compression": f.compression,
                    "examples": formats["chat"] + formats["preference"] + formats["plain"],
                    "formats": {k: formats[k] for k in FORMATS if formats[k]},
                    "roles": dict(sorted(roles.items())),
                    "invalid": formats["invalid"],
                    "problems": problems,
                }
            )
        if columns["id"]:
            yield _flush(columns)
        notes = []
        if invalid:
            notes.append(f"{len(invalid)} invalid line(s) kept as they are, e.g. {', '.join(invalid[:5])}")
        notes += lines.left_out(self.root, self.options.get("exclude", ()))
        self._states[dataset.name] = ExportState(
            state={"format": "finetune", "files": {s["name"]: s["sha256"] for s in summaries}},
            config={"format": "jsonl", "files": summaries, "job_config": self.job_config},
            notes=tuple(notes),
        )

    # --- writing -----------------------------------------------------------------------------------------

    def plan_import(self, source: DatasetDescription, dest: str, *, mode: str, allow_lossy: bool) -> ImportPlan:
        """Plan writing the bundle's files and job config under the folder (module docstring), writing
        nothing. TargetNotEmptyError (create: a file exists), UnsupportedFeatureError (merge, a name leaving
        the folder, colliding names), UsageError (unknown mode). `dest` is not used: the URI names the folder."""
        where = self._where
        check_mode(mode, where)
        files = list(source.config.get("files", ()))
        names = output_names([f["name"] for f in files], where)
        expected: dict[str, str | None] = {names[f["name"]]: f.get("sha256") for f in files}
        job = source.config.get("job_config")
        job_name = None
        if job:
            job_name = str(job.get("name"))
            if job_name in expected:
                raise UnsupportedFeatureError(
                    f"cannot restore into {where}: the job config {job_name!r} has the name of a data file"
                )
        for name in [*expected, *([job_name] if job_name else [])]:
            target_path(self.root, name)
        renamed = {old: new for old, new in names.items() if old != new}
        replaced = compressed_in_place(self.root, renamed, mode)
        if mode == "create":
            refuse_existing(self.root, [*expected, *renamed, *([job_name] if job_name else [])])
        self._scope = sorted(expected)
        target = DatasetDescription(
            name=self._name,
            config={"format": "jsonl", "files": [{"name": n} for n in sorted(expected)], "job_config": job},
            rows=source.rows,
            kind=self.dataset_kind,
        )
        notes = (f"{len(renamed)} compressed file(s) restored decompressed",) if renamed else ()
        return ImportPlan(
            source,
            target,
            mode,
            transform=file_renamer(renamed, "file") if renamed else identity,
            notes=(*notes, *replaced.notes),
            extra={"files": expected, "job_config": job_name, "replaced": replaced.names},
            undone_on_failure=True,  # temporary files renamed into place at the end (filetarget.FileWriter)
        )

    def validate_records(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """File names inside the folder and listed in the bundle, records forming each file line after
        line; writes nothing."""
        return self._check_folder_records(plan, batches, "file")

    def import_(self, plan: ImportPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Write every file and the job config; returns the records written."""
        job = plan.source.config.get("job_config")

        def write_job(writer: FileWriter) -> None:
            if job:
                writer.write(str(job["name"]), str(job["text"]).encode("utf-8"))

        return self._write_folder(plan, batches, "file", before=write_job)

    def extra_checks(self, plan: ImportPlan) -> list[tuple[str, bool, str]]:
        """Every written file's sha256 against the bundle's; the job config's against its text."""
        job = plan.source.config.get("job_config")
        if not job:
            return self._file_checks(plan)
        sha = hashlib.sha256(str(job["text"]).encode("utf-8")).hexdigest()
        return self._file_checks(plan, {str(job["name"]): sha}, " (with the job config)")


def _reused(files: Sequence[lines.SourceFile], since: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The parent's summaries of the files this export leaves out (their content's sha256 is the parent's)."""
    offer = reuse.offered(since)
    if offer is None:
        return {}
    then, offered = offer
    summaries = {
        s["name"]: s
        for s in offered.get("config", {}).get("files", ())
        if isinstance(s, dict) and _whole(s) and s["sha256"] == then.get(s["name"])
    }
    identities = {f.name: lines.content_sha256(f) if f.name in summaries else None for f in files}
    return {name: summaries[name] for name in reuse.left_out(since, identities)}


def _whole(summary: Mapping[str, Any]) -> bool:
    """Whether a parent's summary has every key a summary has (one written by this version's export)."""
    keys = ("name", "bytes", "lines", "sha256", "compression", "examples", "formats", "roles", "invalid", "problems")
    return all(k in summary for k in keys) and isinstance(summary["problems"], list)


def _flush(columns: dict[str, list[Any]]) -> pa.RecordBatch:
    arrays = [pa.array(columns[f.name], f.type) for f in FINETUNE]
    for column in columns.values():
        column.clear()
    return pa.RecordBatch.from_arrays(arrays, schema=FINETUNE)


# --- job config -------------------------------------------------------------------------------------------


def load_job_config(path: str) -> dict[str, Any]:
    """The ``job_config`` entry of the dataset config for the file at `path` (module docstring)."""
    from aibackup.connectors.files.secrets import find_secrets

    shown = lines.shown(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"job config {shown} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"job config {shown} is a folder, not a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read job config {shown}: {exc.strerror}") from None
    name = os.path.basename(path)
    spans = find_secrets(data, name)
    if spans:
        line = data.count(b"\n", 0, spans[0].start) + 1
        more = f" (and {len(spans) - 1} more)" if len(spans) > 1 else ""
        raise SourceDataError(
            f"job config {shown} line {line} holds what looks like a secret ({spans[0].reason}){more}: remove it "
            f"(pass secrets through the environment), or back the file up with `aibackup backup config:{shown}` "
            "into an encrypted repository"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"job config {shown} is not UTF-8 text") from None
    parsed = _parse(text, name, shown)
    return {"name": name, "text": text, "parsed": _jsonable(parsed, shown, "")}


def _parse(text: str, name: str, shown: str) -> Any:
    import yaml

    lower = name.lower()
    if lower.endswith(".json"):
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"job config {shown} is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not lower.endswith((".yaml", ".yml")):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass  # not JSON: try YAML
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: an int over Python's digit limit; RecursionError: nesting deeper than the composer goes.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"job config {shown} is neither valid YAML nor JSON{where}") from None


def _jsonable(value: Any, shown: str, path: str) -> Any:
    """YAML's values as JSON types: dates/times as ISO 8601 strings, keys as strings; refuses the rest."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"job config {shown}: {path or 'the value'} is not a finite number")
        return value
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_jsonable(v, shown, f"{path}[{n}]") for n, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str):
                text = key
            elif isinstance(key, dt.date):
                text = key.isoformat()
            elif key is None or isinstance(key, bool | int | float):
                text = canonical_json(_jsonable(key, shown, path))
            else:
                raise ConfigError(f"job config {shown}: a key under {path or 'the top'} is not a plain value")
            out[text] = _jsonable(item, shown, f"{path}.{text}" if path else text)
        return out
    raise ConfigError(f"job config {shown}: {path or 'the value'} is a {type(value).__name__}, which JSON cannot hold")
