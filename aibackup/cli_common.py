"""What the commands of the CLI share: options, where the repository and the config come from, rendering."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from aibackup.errors import AibackupError, UsageError

if TYPE_CHECKING:
    from aibackup.api import Repository

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_REPO = "./aibackup-repo"


def repo_option(f: F) -> F:
    return click.option(
        "--repo",
        envvar="AIBACKUP_REPO",
        default=None,
        metavar="URL",
        help=f"Repository: a local path or s3://bucket/prefix (env AIBACKUP_REPO; else the config's "
        f"`repository`; else {DEFAULT_REPO}).",
    )(f)


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "config_path",
        envvar="AIBACKUP_CONFIG",
        default=None,
        metavar="FILE",
        help="aibackup.yaml to read (env AIBACKUP_CONFIG; default ./aibackup.yaml when it exists).",
    )(f)


def key_file_option(f: F) -> F:
    return click.option(
        "--key-file",
        metavar="PATH",
        default=None,
        help="File holding the repository key (default: $AIBACKUP_KEY_FILE, else $AIBACKUP_KEY).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(f)


def metrics_option(f: F) -> F:
    return click.option(
        "--metrics-file",
        metavar="PATH",
        default=None,
        help="Write Prometheus text-format metrics of every configured source here (node_exporter textfile "
        "collector; default: the config's metrics_file).",
    )(f)


def dask_options(workers_help: str, reached: str) -> Callable[[F], F]:
    """--workers N and --dask ADDRESS, a command spread over Dask workers (aibackup.distributed):
    `workers_help` says what --workers does, `reached` what else the workers open (the source, the target)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--dask",
            "dask_address",
            metavar="ADDRESS",
            default=None,
            callback=_not_empty_dask,
            help="Vectors: as --workers, on the running Dask scheduler at ADDRESS (also AIBACKUP_DASK); the "
            f"workers reach the repository and the {reached} with their own credentials.",
        )(f)
        return click.option("--workers", type=click.IntRange(1, 1024), default=None, metavar="N", help=workers_help)(f)

    return decorate


def _not_empty_dask(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """`--dask "$SCHEDULER"` with the variable unset: refused before anything runs (a config's backup would
    otherwise fail each source), not taken as no --dask, as ``--repo ""`` is refused."""
    if value is not None and not value.strip():
        from aibackup.distributed import EMPTY_DASK

        raise UsageError(EMPTY_DASK)
    return value


def observe_options(f: F) -> F:
    """--progress/--no-progress, --log-format, --metrics-file: for the commands that run long."""
    f = metrics_option(f)
    f = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: progress and events as one JSON object per line on stderr.",
    )(f)
    return click.option(
        "--progress/--no-progress",
        "show_progress",
        default=None,
        help="Progress bar on stderr (default: only on a terminal).",
    )(f)


def resolve(
    repo: str | None, config_path: str | None, *, need_config: bool = False, key_file: str | None = None
) -> tuple[str, Any]:
    """(repository URL, Config or None): --repo / AIBACKUP_REPO win, else the config's repository, else the
    default. The config (--config, AIBACKUP_CONFIG or ./aibackup.yaml) is read only when it is needed or
    named, so a broken aibackup.yaml beside you never breaks `aibackup list --repo X`. `key_file`
    (--key-file) replaces the config's ``key_file``: everything that opens the repository again from the
    config (the metrics file, the copies and the drill that use its key) uses the one the command was given."""
    from aibackup.config import CONFIG_ENV, find_config_path, load_config

    if repo is not None and not repo.strip():
        # `--repo "$REPO"` with REPO unset (a cron line): refused, as an empty bundle reference is, rather than
        # taken as no --repo, which backed up into the config's repository or ./aibackup-repo of the cwd.
        raise UsageError("--repo is empty (an unset variable?): name the repository")
    if repo and not need_config and not config_path:
        return repo, None
    context = click.get_current_context(silent=True)
    from_env = context is not None and context.get_parameter_source("config_path") is ParameterSource.ENVIRONMENT
    path = find_config_path(config_path, f"${CONFIG_ENV}" if from_env else "--config")
    if path is None:
        if need_config:
            raise UsageError("no config: pass --config FILE, set AIBACKUP_CONFIG, or create ./aibackup.yaml")
        return repo or DEFAULT_REPO, None
    config = load_config(path)
    if repo:  # --repo / AIBACKUP_REPO over the config's, for everything that reads the config's repository
        # The config's metrics file describes the config's repository: `prune --repo COPY` must not rewrite
        # it with the copy's view (no backup or drill reports there: the alerts on them went quiet, and
        # aibackup_verify_success fell to 0). `--metrics-file PATH` still writes the named repository's.
        from aibackup.storage import same_place

        # Its copies likewise are copies of its repository, and its drill of a copy tests one of them: a night
        # backed up into a copy (its region down) failed "the destination is the source repository itself"
        # (exit 2), a test run into a scratch repository pushed its bundles into the production copy, and
        # `restore-test --repo OTHER` drilled the copy (without the copy's key file) and recorded it in OTHER.
        if not same_place(repo, config.repository):
            if (config.copies or config.restore_test.repository) and need_config:
                click.echo(  # the repository as written: a ${VAR}'s value is not shown
                    f"note: --repo names another repository than {config.path}'s ({config.repository!r}): its "
                    "copies are not made, checked or drilled",
                    err=True,
                )
            drill = dataclasses.replace(config.restore_test, repository=None)  # the --repo one is drilled
            config = dataclasses.replace(config, metrics_file=None, copies=(), restore_test=drill)
        config = dataclasses.replace(config, repository=repo)
    if key_file:
        config = dataclasses.replace(config, key_file=key_file)
    return config.repository, config


def open_repository(url: str, config: Any = None, key_file: str | None = None) -> Repository:
    """The repository at `url`, opened once for the command (NotARepositoryError: exit 2 when none), with
    `key_file` (--key-file), else the config's ``key_file``, if any, as its key (over AIBACKUP_KEY)."""
    from aibackup.api import Repository

    return Repository.open(url, key_file=key_file or (config.key_file if config is not None else None))


def emit_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def table(header: list[str], rows: list[list[str]], indent: str = "") -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        click.echo(indent + "  ".join(cells).rstrip())


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time from the command line; UTC when it names no zone."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # as UTC, not the machine's zone
        moment.astimezone(dt.UTC)  # a time that cannot be expressed in UTC (year 9999 and a zone)
    except (ValueError, OverflowError):
        raise UsageError(
            f"bad time {text!r}: expected ISO 8601, e.g. 2026-11-25T02:00 or 2026-11-25T02:00+01:00"
        ) from None
    return moment


#: Why ``--metrics-file`` needs a config: the metrics are per configured source (their RPOs and bundles).
METRICS_NEED_CONFIG = "--metrics-file reports per configured source: give a config (--config or ./aibackup.yaml)"


def write_metrics_of(config: Any, metrics_file: str | None) -> None:
    """Rewrite the metrics file (flag, else the config's metrics_file); it needs the config's sources."""
    path = metrics_file or (config.metrics_file if config else None)
    if path is None:
        return
    if config is None:
        raise UsageError(METRICS_NEED_CONFIG)
    from aibackup.metrics import write_metrics

    write_metrics(config, path)


def echo_error(problem: AibackupError, as_json: bool) -> None:
    """The error line of a problem met after the command's result was printed (stderr; JSON with --json)."""
    if as_json:
        doc = {"error": {"code": problem.code, "message": str(problem), "exit_code": problem.exit_code}}
        click.echo(json.dumps(doc), err=True)
    else:
        click.echo(f"aibackup: error: {problem}", err=True)


def conclude(
    config: Any,
    metrics_file: str | None,
    code: int,
    as_json: bool,
    *,
    report: Callable[[], None] | None = None,
    also: AibackupError | None = None,
    metrics: bool = True,
) -> None:
    """End a command whose result is already printed: write its `report` file, if any, and the metrics file
    (flag, else the config's metrics_file), then exit with the command's code. A file that cannot be
    written, and `also` (what the command could not record, found on the way), is one error line after the
    result (never instead of it) and its exit code when the command itself succeeded; each file is tried
    even when the other failed. Not `metrics`: the command wrote the metrics file itself."""
    problems: list[AibackupError] = [also] if also is not None else []
    for write in (report, (lambda: write_metrics_of(config, metrics_file)) if metrics else None):
        try:
            if write is not None:
                write()
        except AibackupError as exc:
            problems.append(exc)
    for problem in problems:
        echo_error(problem, as_json)
    final = code or (problems[0].exit_code if problems else 0)
    if final:
        sys.exit(final)
