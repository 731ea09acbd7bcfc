"""A spool left by a killed command (it may hold a whole bundle) is removed by the next command that spools
in the same folder; a spool in use, and a folder without an owner file, are left alone. Parts fetched ahead
come in the order they are needed, the first alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aibackup import spool
from aibackup.spool import PartSpool, sweep_dead

# A command that spools: it makes its spool (a part copy in it) and waits until its stdin closes.
SPOOLING = """
import sys
from aibackup.spool import PartSpool
held = PartSpool(None, sys.argv[1])  # kept: its owner file stays locked while it lives
copy = held.tee()
copy.write(b"part bytes" * 1000)
copy.close()
print(copy.name, flush=True)
sys.stdin.read()
"""


def _spooling(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process holding a spool in `parent`, and that spool's folder."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SPOOLING, str(parent)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip()).parent


def test_the_next_spool_removes_a_killed_commands_spool_and_keeps_one_in_use(tmp_path: Path) -> None:
    killed, dead_folder = _spooling(tmp_path)
    living, live_folder = _spooling(tmp_path)
    older = tmp_path / f"{spool.PREFIX}older"  # an older aibackup's folder: no owner file
    older.mkdir()
    (older / "000000.part").write_bytes(b"kept")
    try:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert (dead_folder / "000000.part").exists()  # a killed process removes nothing itself

        own = PartSpool(None, str(tmp_path))  # type: ignore[arg-type]
        copy = own.tee()
        assert copy is not None
        copy.close()
        mine = Path(copy.name).parent

        assert not dead_folder.exists()
        assert (live_folder / "000000.part").read_bytes() == b"part bytes" * 1000
        assert (older / "000000.part").read_bytes() == b"kept"
        assert sweep_dead(str(tmp_path)) == []  # every other folder is in use or not a spool it may judge
        assert mine.exists()
        own.close()
        assert not mine.exists()
    finally:
        assert living.stdin is not None
        living.stdin.close()  # it ends without closing its spool: as good as killed
        living.wait()
    assert sweep_dead(str(tmp_path)) == [str(live_folder)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [older.name]


def test_parts_fetched_ahead_start_with_the_first_alone_then_go_two_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore or verify works on the first part as soon as it is in: it downloads alone, with the whole
    connection (two parts at once would both arrive at twice the time); the others then go two at a time.
    Every part ends up hashed and spooled all the same."""
    from aibackup.storage import Storage

    storage = Storage(str(tmp_path / "repo"))
    names = [f"data/part-{n}.parquet" for n in range(4)]
    for n, rel in enumerate(names):
        (tmp_path / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / rel).write_bytes(bytes([n]) * 1000)
    events: list[str] = []
    read_blocks = Storage.read_blocks

    def logged(self: Storage, rel: str, size: int | None = None) -> Iterator[bytes]:
        events.append(f"start {rel}")
        time.sleep(0.05)  # a download takes a while: a second part started meanwhile would show
        yield from read_blocks(self, rel, size)
        events.append(f"end {rel}")

    monkeypatch.setattr(Storage, "read_blocks", logged)
    held = PartSpool(storage, str(tmp_path))
    try:
        held.fetch_ahead((rel, 1000) for rel in names)
        hashes = [held.hash(rel, 1000) for rel in names]
    finally:
        held.close()
    assert events[:2] == [f"start {names[0]}", f"end {names[0]}"], events
    assert sorted(events[2:4]) == [f"start {names[1]}", f"start {names[2]}"], events  # then two at once
    assert [size for _, size in hashes] == [1000] * 4
