"""Crash consistency of `aibackup copy`: killed with SIGKILL at sampled storage steps (the machinery of
:mod:`tests.reliability.test_crash`), into a local and an S3 destination. After every kill the destination
lists only complete bundles and verifies clean; a rerun completes the copy; at the end every bundle is there,
verified, and restores. (`-m slow`: every step.)"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from tests.aibackup.test_copy import repacked_after_the_sources_rotation, three_bundles
from tests.helpers import Cli, ok, repository_url
from tests.reliability.test_crash import SEED, _child, _later, _steps, _trace

#: Kill points per destination kind in CI.
CI_POINTS = 6


def _copy_crash_suite(tmp_path: Path, cli: Cli, base: str, points: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    source = str(tmp_path / "repo")
    ids = three_bundles(cli, tmp_path, source)  # a chain of conversation logs and a model (a chunk pack)
    total = _steps(_child(["copy", "--repo", source, "--to-repo", f"{base}-probe"], 0))
    chosen = range(1, total + 1) if points is None else sorted(random.Random(SEED).sample(range(1, total + 1), points))
    minutes = 0
    for n in chosen:
        dest = f"{base}-{n}"  # each kill hits a copy into a fresh destination, at its n-th storage step
        args = ["copy", "--repo", source, "--to-repo", dest]
        minutes += 11  # a killed run's locks (source and destination) turn stale 10 minutes later
        killed = _child(args, n, _later(minutes))
        assert killed.returncode == -9, (n, killed.returncode, killed.stderr)
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        listed = cli("list", "--repo", dest, "--json")
        if listed.code == 0:  # the destination exists once its marker was written
            present = [b["bundle_id"] for b in listed.json()]
            assert set(present) <= set(ids), (n, present)
            verified = ok(cli("verify", "--read-data", "--repo", dest, "--json")).json()
            assert verified["ok"] and verified["bundles"] == len(present), (n, verified)
        minutes += 11
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        done = ok(cli(*args, "--json")).json()  # the rerun completes the copy
        assert done["ok"] and sorted(done["copied"] + done["skipped"]) == ids, (n, done)
        assert ok(cli("verify", "--read-data", "--repo", dest, "--json")).json()["ok"], n
    ok(cli("restore", "latest", "--repo", dest, "--to", f"model:{tmp_path / 'back'}"))
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == (
        tmp_path / "llm" / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_killed_copy_leaves_the_destination_sound_and_a_rerun_completes_it(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, where: str
) -> None:
    dest = repository_url(where, tmp_path, request) + ("-copy" if where == "local" else "")
    _copy_crash_suite(tmp_path, cli, dest, CI_POINTS, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_copy_killed_at_every_step_leaves_the_destination_sound(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, where: str
) -> None:
    dest = repository_url(where, tmp_path, request) + ("-copy" if where == "local" else "")
    _copy_crash_suite(tmp_path, cli, dest, None, monkeypatch)


def _adoption_suite(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, points: int | None) -> None:
    """A copy killed while it takes the source's rotated key, moving first the packs its own prune repacked
    after the rotation (aibackup.adoption): after every kill the copy verifies clean and restores the model
    (the source gone meanwhile: nothing but the copy), and a rerun completes the copy."""
    source, template = tmp_path / "repo", tmp_path / "template"
    llm = repacked_after_the_sources_rotation(cli, tmp_path, template, monkeypatch)
    shutil.copytree(template, tmp_path / "probe")
    trace = _trace(_child(["copy", "--repo", str(source), "--to-repo", str(tmp_path / "probe")], 0))
    # The adoption's steps: up to the release of its exclusive lock, after the marker was written.
    last = next(n for n, what in enumerate(trace, 1) if what.startswith("after remove locks/"))
    steps = range(1, last + 1)
    chosen = steps if points is None else sorted(random.Random(SEED).sample(steps, min(points, last)))
    minutes = 0
    for n in chosen:
        dest = tmp_path / f"copy-{n}"
        shutil.copytree(template, dest)
        minutes += 11  # a killed run's lock turns stale 10 minutes later
        killed = _child(["copy", "--repo", str(source), "--to-repo", str(dest)], n, _later(minutes))
        assert killed.returncode == -9, (n, trace[n - 1], killed.returncode, killed.stderr)
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        hidden = tmp_path / "source-away"
        source.rename(hidden)  # the region lost: what the copy holds must read on its own
        try:
            ok(cli("verify", "--read-data", "--repo", str(dest)))
            back = tmp_path / f"back-{n}"
            ok(cli("restore", "latest", "--repo", str(dest), "--to", f"model:{back}"))
            assert (back / "b.safetensors").read_bytes() == (llm / "b.safetensors").read_bytes(), (n, trace[n - 1])
        finally:
            hidden.rename(source)
        minutes += 11
        monkeypatch.setenv("AIBACKUP_NOW", _later(minutes)["AIBACKUP_NOW"])
        done = ok(cli("copy", "--repo", str(source), "--to-repo", str(dest), "--json")).json()
        assert done["ok"], (n, done)
        ok(cli("verify", "--read-data", "--repo", str(dest)))


def test_a_copy_killed_while_it_takes_the_sources_new_key_loses_no_chunk(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _adoption_suite(tmp_path, cli, monkeypatch, CI_POINTS)


@pytest.mark.slow
def test_a_copy_killed_at_every_step_of_taking_the_sources_new_key_loses_no_chunk(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _adoption_suite(tmp_path, cli, monkeypatch, None)
