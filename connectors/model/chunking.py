"""Content-defined chunking of a file read once, in blocks, with cuts forced at given offsets.

FastCDC 2020 (pyfastcdc, Cython): average 1 MiB, minimum 256 KiB, maximum 4 MiB (restic's and kopia's
order of size: few chunks per GiB, so an index of a large model stays small, yet a change costs about one
megabyte). Cuts are also forced at `cuts` (a safetensors file's header end and tensor boundaries), so an
unchanged tensor gives the same chunks wherever it moved in its file.

Streaming: the file arrives as blocks; a chunk that ends only because a block ended is carried into the next
block (prepended), so boundaries depend on the content alone, never on how the file was read.
"""

from __future__ import annotations

import bisect
from collections.abc import Generator, Iterable, Iterator, Sequence

from aibackup.errors import ConnectorNotInstalledError

AVG_SIZE = 1 << 20
MIN_SIZE = AVG_SIZE // 4
MAX_SIZE = AVG_SIZE * 4
ALGORITHM = "fastcdc-2020"


class Chunker:
    """Cuts files into content-defined chunks (see the module docstring). `seed` alters the gear table
    (an encrypted repository's, derived from its key)."""

    def __init__(self, seed: int = 0, avg_size: int = AVG_SIZE) -> None:
        try:
            from pyfastcdc import FastCDC
        except ImportError:
            raise ConnectorNotInstalledError(
                "model artifacts need the content-defined chunker: pip install 'aibackup[models]'"
            ) from None
        self.avg_size = avg_size
        self._cdc = FastCDC(avg_size=avg_size, min_size=avg_size // 4, max_size=avg_size * 4, seed=seed)

    def settings(self) -> dict[str, int | str]:
        """What a manifest records about how its files were cut."""
        return {
            "algorithm": ALGORITHM,
            "min": self._cdc.min_size,
            "avg": self._cdc.avg_size,
            "max": self._cdc.max_size,
        }

    def chunks(self, blocks: Iterable[bytes], cuts: Sequence[int] = ()) -> Iterator[memoryview]:
        """The chunks of the bytes `blocks` give, in order (each a view valid until the next is asked for,
        at most MAX_SIZE bytes); a cut at every offset of `cuts` (sorted, relative to the first byte)."""
        pending = b""
        base = 0  # offset of pending[0] in the file
        for block in blocks:
            if not block:
                continue
            buf = pending + block if pending else block
            done = yield from self._cut(buf, base, cuts, final=False)
            pending = buf[done:]
            base += done
        if pending:
            yield from self._cut(pending, base, cuts, final=True)

    def _cut(self, buf: bytes, base: int, cuts: Sequence[int], *, final: bool) -> Generator[memoryview, None, int]:
        """Yield the chunks of `buf` (at file offset `base`) that end for good; returns how many bytes of
        `buf` they cover (the rest, a chunk cut short by the end of the buffer, waits for more bytes)."""
        view = memoryview(buf)
        end = len(buf)
        first = bisect.bisect_right(cuts, base)
        last = bisect.bisect_left(cuts, base + end)
        bounds = [c - base for c in cuts[first:last]] + [end]
        start = 0
        for bound in bounds:
            if bound <= start:
                continue
            segment = view[start:bound]
            open_end = bound == end and not final and base + end not in _as_set(cuts, base + end)
            pieces = list(self._cdc.cut_buf(segment))
            if open_end:
                last_piece = pieces.pop()
                for piece in pieces:
                    yield segment[piece.offset : piece.offset + piece.length]
                return start + last_piece.offset
            for piece in pieces:
                yield segment[piece.offset : piece.offset + piece.length]
            start = bound
        return end


def _as_set(cuts: Sequence[int], offset: int) -> tuple[int, ...]:
    """(offset,) when `offset` is one of the sorted `cuts`, else ()."""
    n = bisect.bisect_left(cuts, offset)
    return (offset,) if n < len(cuts) and cuts[n] == offset else ()
