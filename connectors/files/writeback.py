"""Starting the write-back of a file being written, without waiting for it (Linux ``sync_file_range``).

A restore writes large files and fsyncs each before renaming it into place. Left alone, the kernel starts
writing a file's dirty pages only at the fsync (or past a dirty threshold of a tenth of the memory), so the
disk idles while the file is produced and the fsync then waits for all of it. Asking for write-back every
few tens of MiB lets the disk work while the next bytes are read, hashed and written, and the fsync waits for
the last stretch only. Pages stay cached (unlike ``POSIX_FADV_DONTNEED``), so the proof's read-back is not
slowed. Advice only: elsewhere than Linux, or where the call fails, nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

#: Bytes written between two requests.
WINDOW = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _binding() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE = _binding()


class WriteBack:
    """Counts the bytes written to `fd` and asks for the write-back of each WINDOW once it is complete."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.started = 0  # bytes whose write-back was asked for

    def wrote(self, n: int) -> None:
        self.written += n
        if _SYNC_FILE_RANGE is not None and self.written - self.started >= WINDOW:
            _SYNC_FILE_RANGE(self.fd, self.started, self.written - self.started, _SYNC_FILE_RANGE_WRITE)
            self.started = self.written
