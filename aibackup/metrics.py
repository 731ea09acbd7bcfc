"""Prometheus text-format metrics per source, for node_exporter's textfile collector (``--metrics-file``).

The file is rewritten whole, atomically (temp file + rename in the same folder, as the textfile collector
requires), from the repository's state and reports, so every command that writes it gives the complete
picture whichever job ran last. Metrics (label ``source`` = the configured source name):

=========================================  ===============================================================
``aibackup_last_success_timestamp_seconds``  creation time of the newest intact bundle
``aibackup_bundle_age_seconds``              its age now
``aibackup_rpo_seconds``                     the source's RPO (absent when none is configured)
``aibackup_rpo_breached``                    1 when the newest intact bundle is older than the RPO (or none,
                                             or it is dated past the clock); every source, RPO or not
``aibackup_backup_success``                  1 if the last backup run of the source succeeded, else 0
``aibackup_backup_duration_seconds``         duration of the last successful backup run
``aibackup_backup_bytes``                    bytes that run wrote (new parts only)
``aibackup_backup_new_bytes``                the same, by its 0.4.0 name: an incremental run's change only
``aibackup_backup_rows``                     rows of the newest bundle (the whole dataset)
``aibackup_verify_success``                  1 if the newest bundle was verified with --read-data intact
``aibackup_restore_test_success``            1 if the last restore test of the source passed, else 0
``aibackup_restore_test_rto_seconds``        its achieved RTO (start to verified)
``aibackup_rto_objective_seconds``           the source's RTO objective
``aibackup_copy_bundle_age_seconds``         per configured copy (label ``copy``): age of the source's newest
                                             intact bundle there
``aibackup_copy_rpo_breached``               per copy: 1 when that bundle is older than the RPO, or none is
                                             there, or the copy cannot be read (the source's
                                             ``aibackup_rpo_breached`` counts its copies too)
=========================================  ===============================================================
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aibackup import reports
from aibackup.config import Config
from aibackup.errors import AibackupError, UnavailableError
from aibackup.operations import SourceStatus, status
from aibackup.repository import Repository, parse_iso

HELP = {
    "aibackup_last_success_timestamp_seconds": ("gauge", "Creation time of the newest intact bundle."),
    "aibackup_bundle_age_seconds": ("gauge", "Age of the newest intact bundle."),
    "aibackup_rpo_seconds": ("gauge", "Recovery point objective of the source."),
    "aibackup_rpo_breached": ("gauge", "1 when the newest intact bundle is older than the RPO."),
    "aibackup_backup_success": ("gauge", "1 if the last backup run succeeded."),
    "aibackup_backup_duration_seconds": ("gauge", "Duration of the last successful backup run."),
    "aibackup_backup_bytes": ("gauge", "Bytes written by the last successful backup run."),
    "aibackup_backup_new_bytes": (
        "gauge",
        "Bytes the last successful backup run wrote: records, record index and tombstones (incremental: the change).",
    ),
    "aibackup_backup_rows": ("gauge", "Rows of the newest bundle."),
    "aibackup_verify_success": ("gauge", "1 if the newest bundle passed verify --read-data."),
    "aibackup_restore_test_success": ("gauge", "1 if the last restore test passed."),
    "aibackup_restore_test_rto_seconds": ("gauge", "Achieved RTO of the last restore test."),
    "aibackup_rto_objective_seconds": ("gauge", "Recovery time objective of the source."),
    "aibackup_copy_bundle_age_seconds": ("gauge", "Age of the source's newest intact bundle in a copy."),
    "aibackup_copy_rpo_breached": ("gauge", "1 when a copy's newest bundle of the source is older than the RPO."),
}


def render(config: Config, statuses: Sequence[SourceStatus], verified: dict[str, str]) -> str:
    samples: dict[str, list[tuple[str, float]]] = {name: [] for name in HELP}  # metric -> (labels, value)
    for s in statuses:
        labels = f'source="{_label(s.source)}"'
        add = lambda metric, value, labels=labels: samples[metric].append((labels, float(value)))  # noqa: E731
        for copy in s.copies:
            where = f'{labels},copy="{_label(str(copy["repository"]))}"'
            if copy["age_seconds"] is not None:
                samples["aibackup_copy_bundle_age_seconds"].append((where, float(copy["age_seconds"])))
            samples["aibackup_copy_rpo_breached"].append((where, float(int(copy["rpo_breached"]))))
        source = config.sources[s.source]
        if s.newest_created_at is not None and s.age_seconds is not None:
            add("aibackup_last_success_timestamp_seconds", parse_iso(s.newest_created_at).timestamp())
            add("aibackup_bundle_age_seconds", s.age_seconds)
        if s.rpo_seconds is not None:
            add("aibackup_rpo_seconds", s.rpo_seconds)
        # Always: a source without an RPO breaches too when it has no bundle or a copy is unreadable, and an
        # alert on this gauge must see it.
        add("aibackup_rpo_breached", int(s.rpo_breached))
        if source.rto is not None:
            add("aibackup_rto_objective_seconds", source.rto.total_seconds())
        if s.last_backup:
            add("aibackup_backup_success", int(bool(s.last_backup.get("ok"))))
        good = s.last_successful_backup or {}
        if good:  # the last successful run's numbers stay while a later run fails
            add("aibackup_backup_duration_seconds", float(good.get("seconds") or 0))
            add("aibackup_backup_bytes", float(good.get("bytes") or 0))
            add("aibackup_backup_new_bytes", float(good.get("new_bytes", good.get("bytes")) or 0))
            add("aibackup_backup_rows", float(good.get("rows") or 0))
        if s.newest_bundle is not None:
            add("aibackup_verify_success", int(s.newest_bundle in verified))
        test = s.last_restore_test or {}
        if test:
            add("aibackup_restore_test_success", int(bool(test.get("ok"))))
            add("aibackup_restore_test_rto_seconds", float(test.get("rto_seconds") or 0))
    return _text(samples)


def _text(samples: dict[str, list[tuple[str, float]]]) -> str:
    """The Prometheus text of `samples` (metric -> (labels, value)), each metric with its HELP and TYPE."""
    lines: list[str] = []
    for metric, values in samples.items():
        if not values:
            continue
        kind, text = HELP[metric]
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines += [f"{metric}{{{labels}}} {_number(value)}" for labels, value in values]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Every digit kept (a timestamp or a byte count in %g loses up to thousands of units)."""
    return str(int(value)) if value.is_integer() else repr(value)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_metrics(config: Config, path: str) -> None:
    """Render the metrics of every configured source and replace `path` atomically. A repository that
    cannot be read (gone, unreachable, no key) gets :func:`unreadable`'s file, then its error is raised."""
    try:
        repo = Repository.open(config.repository, key_file=config.key_file)
        text = render(config, status(config, repo), reports.verified_bundles(repo))  # one opening, one key check
    except AibackupError:
        _replace(path, unreadable(config))
        raise
    _replace(path, text)


def unreadable(config: Config) -> str:
    """The metrics of a repository that cannot be read: every source breaches its RPO (nothing can be shown
    to be restorable), where the last good file would otherwise go on being served."""
    return _text({"aibackup_rpo_breached": [(f'source="{_label(name)}"', 1.0) for name in config.sources]})


def _replace(path: str, text: str) -> None:
    """Write `text` to `path` atomically (a temporary file renamed over it)."""
    target = Path(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:  # not renamed into place (a folder at `path`): a cron run would leave one per run
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise UnavailableError(f"cannot write the metrics file {path}: {exc.strerror}") from None
