"""Verifying the chunks a model dataset needs (``verify``; the packs are in the chunk store, not in a
manifest's part list: :mod:`aibackup.chunks`).

Always: every chunk a file of the dataset lists is in the repository's chunk index, and its pack exists.
With ``read_data``: every chunk is read and re-hashed against its id (each chunk once per run, however many
bundles share it). A damaged chunk is reported with its pack, the files it belongs to and, for a
safetensors or GGUF file, the tensors whose bytes it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aibackup.bundle_reader import BundleReader
from aibackup.chunk_reader import ChunkReader
from aibackup.chunks import INDEX, REPAIR_HINT, ChunkIndex, DamagedIndexError
from aibackup.connectors.model.restore import chunk_ids, damaged_chunks
from aibackup.errors import IntegrityError
from aibackup.manifests.model import DatasetManifest

#: A chunk of a dataset's files that no index file places (verify's problem; its line names no pack).
UNPLACED = "is in no pack of the chunk index"


@dataclass
class ChunkCheck:
    """One verify run's view of the chunk store: what was checked, with results shared across bundles."""

    reader: BundleReader
    read_data: bool
    _chunks: ChunkReader | None = None
    verdicts: dict[bytes, str | None] = field(default_factory=dict)  # chunk -> problem (None: sound)
    bytes_read: int = 0

    @property
    def chunks(self) -> ChunkReader:
        if self._chunks is None:
            # Damaged index files left out (named by index_problems): the chunks the intact ones place are
            # still read, so a damaged pack is named beside them (one damaged index file had hidden every
            # pack's damage: not a chunk was read), and a bundle whose chunks they all place is not blamed
            # (its restore, which skips them alike, succeeds).
            self._chunks = ChunkReader(self.reader.repo, ChunkIndex.load(self.reader.repo, skip_damaged=True))
        return self._chunks

    def index_problems(self) -> list[tuple[str, str]]:
        """(where, problem) for each damaged index file, once a model dataset was checked."""
        if self._chunks is None:
            return []
        storage = self.reader.repo.storage
        return [
            (storage.display(rel), f"{problem} ({REPAIR_HINT})") for rel, problem in self._chunks.index.damaged.items()
        ]

    def problems(self, dataset: DatasetManifest) -> list[tuple[str, str]]:
        """(where, problem) for each missing or damaged chunk of `dataset`'s files; the chunks no intact index
        file places, where some are damaged, in one line (the damaged files may place them)."""
        found: list[tuple[str, str]] = []
        storage = self.reader.repo.storage
        index = self.chunks.index
        unplaced = 0  # chunks no index file places, while some are damaged
        try:
            for batch in self.reader.batches(dataset, columns=None):
                for row in batch.to_pylist():
                    if row["type"] != "file":
                        continue
                    bad: set[bytes] = set()
                    sizes: dict[bytes, int] = {}
                    for chunk in chunk_ids(row):
                        problem = self._verdict(chunk)
                        place = index.get(chunk)
                        if place is None and index.damaged:
                            unplaced += 1
                        elif problem is not None:
                            bad.add(chunk)
                        if place is not None:  # its size, also when its pack is gone (the file's byte ranges)
                            sizes[chunk] = place.size
                    for chunk, where in damaged_chunks(row, self.chunks, bad, sizes) if bad else ():
                        place = index.get(chunk)
                        pack = storage.display(place.pack) if place is not None else storage.display(INDEX)
                        found.append((pack, f"{_unplaced(self.verdicts[chunk] or '', pack)}{where}"))
        except DamagedIndexError as exc:
            found.append((exc.where, f"{exc} ({REPAIR_HINT})"))
        except IntegrityError as exc:
            found.append(("", str(exc)))
        if unplaced:
            (rel, problem), *_ = index.damaged.items()
            found.append(
                (
                    storage.display(rel),
                    f"{unplaced} chunk(s) of its files are in no intact index file ({problem}; {REPAIR_HINT})",
                )
            )
        return found

    def _verdict(self, chunk: bytes) -> str | None:
        if chunk in self.verdicts:
            return self.verdicts[chunk]
        place = self.chunks.index.get(chunk)
        problem: str | None = None
        if place is None:
            problem = f"chunk {chunk.hex()[:16]}… {UNPLACED}"
        elif self.chunks.size(chunk) is None:  # its pack is gone (looked at once per pack)
            problem = f"missing chunk pack {self.reader.repo.storage.display(place.pack)}"
        elif self.read_data:
            try:
                self.chunks.get(chunk, check=True)
                self.bytes_read += place.stored
            except IntegrityError as exc:
                problem = str(exc)
        self.verdicts[chunk] = problem
        return problem

    @property
    def packs_checked(self) -> int:
        return len(self._chunks.present) if self._chunks is not None else 0

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()


def _unplaced(problem: str, pack: str) -> str:
    """`problem` without the pack it names: the line that reports it begins with the pack already
    ("PACK: damaged chunk pack: …", not "PACK: damaged chunk pack PACK: …")."""
    return problem.replace(f" in {pack}", "").replace(f" {pack}", "")
