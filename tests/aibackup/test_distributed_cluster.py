"""Where a partitioned run's cluster comes from, and a cluster that fails: an empty or out-of-range
scheduler address is refused at once, --workers wins over AIBACKUP_DASK, a local cluster says nothing on
stderr, and workers that keep dying are an unreachable cluster (exit 3), not a bug."""

from __future__ import annotations

import socket
import sys
import time
import warnings
from pathlib import Path

import pytest
from distributed import WorkerPlugin

from tests.aibackup.test_distributed_lancedb import fragmented
from tests.helpers import Cli, ok, one_line_error


def test_an_empty_or_out_of_range_scheduler_is_refused_at_once(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aibackup import api
    from aibackup.errors import UsageError

    source = f"lancedb:{tmp_path / 'source'}"
    repo = str(tmp_path / "repo")
    monkeypatch.setenv("AIBACKUP_DASK", "tcp://127.0.0.1:1")  # `--dask ""` is not taken as no --dask either
    for verb in (("backup", source), ("restore", "latest", "--to", source)):
        one_line_error(cli(*verb, "--repo", repo, "--dask", ""), 2, "--dask is empty")
    with pytest.raises(UsageError, match="empty"):
        api.backup(repo, source, dask="")
    started = time.monotonic()
    for port in ("99999", "0", "-5", "65536"):
        one_line_error(cli("backup", source, "--repo", repo, "--dask", f"tcp://127.0.0.1:{port}"), 2, "out of range")
    assert time.monotonic() - started < 10  # no Client waiting for its timeout
    assert not (tmp_path / "repo").exists()


def test_workers_win_over_aibackup_dask_and_the_cluster_says_nothing(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    fragmented(tmp_path / "source")
    monkeypatch.setenv("AIBACKUP_DASK", "tcp://127.0.0.1:1")
    with HoldPort() as held, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ok(cli("backup", f"lancedb:{tmp_path / 'source'}", "--repo", str(tmp_path / "repo"), "--workers", "1"))
    assert "1 Dask worker(s)" in result.out and "127.0.0.1:1 " not in result.out
    assert result.err == ""
    if held:  # another Dask's dashboard port taken: no "Port 8787 is already in use" warning
        assert not [w for w in caught if "already in use" in str(w.message)]


class HoldPort:
    """127.0.0.1:8787 held while inside (True), or nothing (False) when something else holds it already."""

    def __enter__(self) -> bool:
        self.sock = socket.socket()
        try:
            self.sock.bind(("127.0.0.1", 8787))
            self.sock.listen()
        except OSError:
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


class KillEvery(WorkerPlugin):
    """A Dask worker plugin (the test's, run in the workers): every worker that starts a `task` (a task
    function's name) dies there, as a machine that runs out of memory on that partition would."""

    name = "kill-every"

    def __init__(self, task: str) -> None:
        self.task = task

    def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
        import os

        if finish == "executing" and self.task in str(key):
            os._exit(1)


def test_workers_that_keep_dying_are_an_unreachable_cluster_and_commit_nothing(tmp_path: Path, cli: Cli) -> None:
    import cloudpickle
    import dask
    from dask.distributed import Client, LocalCluster

    fragmented(tmp_path / "source")
    source = f"lancedb:{tmp_path / 'source'}"
    good, repo, target = tmp_path / "good", tmp_path / "repo", tmp_path / "target"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # No second try on a worker dying: Dask gives up at the first death (KilledWorker).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with local as cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        ok(cli("backup", source, "--repo", str(good), "--dask", address))
        ok(cli("init", "--repo", str(repo)))
        client.register_plugin(KillEvery("write_partition"))
        line = one_line_error(cli("backup", source, "--repo", str(repo), "--dask", address), 3, "KilledWorker")
        assert "of collection 'docs' failed: its Dask worker died 1 time " in line and "nothing was committed" in line
        assert not list((repo / "bundles").glob("*.json"))
        assert not [p for p in (repo / "data").rglob("*") if p.is_file()]
        client.register_plugin(KillEvery("load_partition"))
        line = one_line_error(
            cli("restore", "latest", "--repo", str(good), "--to", f"lancedb:{target}", "--dask", address),
            3,
            "of collection 'docs' failed",
            "KilledWorker",
        )
    assert not (target / "docs.lance").exists()
