"""One root error with an exit code; only the CLI catches these and turns them into one line.

Exit codes (the README's table; cron jobs and monitoring rely on them):

====  =========================================================================
0     success
1     integrity problem: damage found, a checksum mismatch, a restore check failed
2     bad usage, config or input: unknown scheme, bundle id or collection, bad flag,
      not a repository, a manifest of a newer format, a target that cannot hold the data
3     a source, target or repository is unreachable (connection refused, no such bucket, denied)
70    internal error: a bug (the CLI prints one line; AIBACKUP_DEBUG=1 adds the traceback)
130   interrupted (Ctrl-C / SIGINT)
====  =========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTEGRITY = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (libraries raise multi-line or empty ones), for the one
    line a user sees."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else f"{type(exc).__name__} without a message"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) that stopped a command where what it leaves is worth saying (a restore half-way into a
    collection): the message says so; exit 130, as for any interruption. A KeyboardInterrupt, not an
    AibackupError, so that nothing which handles errors goes on after it (a drill's next source)."""


class AibackupError(Exception):
    """Root of every error aibackup raises on purpose. The message is the one line the user sees."""

    exit_code: int = EXIT_USAGE
    #: A short machine-readable name for `--json` error output.
    code: str = "error"


class UsageError(AibackupError):
    """Bad input from the user: an unknown scheme, a bad flag value, an unknown bundle or collection."""

    code = "usage"


class ConfigError(UsageError):
    """A configuration value is missing or malformed."""

    code = "config"


class NotARepositoryError(UsageError):
    """The repository location exists but holds no aibackup repository."""

    code = "not_a_repository"


class BundleNotFoundError(UsageError):
    """No bundle matches the id (or `latest` found no bundle)."""

    code = "bundle_not_found"


class ConnectorError(AibackupError):
    """Root of the errors a connector raises."""

    code = "connector"


class ConnectorNotInstalledError(ConnectorError):
    """The client library of a connector is not installed; the message names the extra to install."""

    code = "connector_not_installed"


class DatasetNotFoundError(ConnectorError):
    """A collection named by the user does not exist in the source or target."""

    code = "dataset_not_found"


class UnsupportedFeatureError(ConnectorError):
    """The target cannot represent something the bundle holds (and `--allow-lossy` was not given)."""

    code = "unsupported_feature"


class TargetNotEmptyError(ConnectorError):
    """The target collection exists and holds data; `--mode overwrite|merge` is required."""

    code = "target_not_empty"


class SourceDataError(ConnectorError):
    """The source holds data aibackup refuses to back up as it is (say a vector of the wrong dimension)."""

    code = "source_data"


class UnavailableError(AibackupError):
    """A source, target or repository cannot be reached."""

    exit_code = EXIT_UNAVAILABLE
    code = "unavailable"


class ManifestVersionError(AibackupError):
    """A manifest (or repository marker) was written by a newer aibackup format this version cannot read."""

    code = "manifest_version"


class IntegrityError(AibackupError):
    """Damage: a checksum mismatch, a missing or short part, a manifest that does not validate."""

    exit_code = EXIT_INTEGRITY
    code = "integrity"
