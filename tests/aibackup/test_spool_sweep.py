"""A spool left by a killed command (it may hold a whole bundle) is removed by the next command that spools
in the same folder; a spool in use, and a folder without an owner file, are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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
