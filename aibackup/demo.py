"""`make demo`: the main job end to end on embedded defaults, with no network and no model download.

1. Seeds an embedded Chroma store (``./aibackup-demo/chroma``) with the paragraphs of Python's own help
   topics (``pydoc_data.topics``, shipped with every Python) and deterministic embeddings: hashed word and
   word-pair counts, log-weighted and normalised, so similar paragraphs get similar vectors.
2. ``aibackup backup chroma:./aibackup-demo/chroma`` into ``./aibackup-repo``.
3. ``aibackup verify --read-data``.
4. ``aibackup restore latest --to qdrant --mode overwrite`` into embedded Qdrant
   (``./aibackup-restore/qdrant``), which prints the check report.

Re-running it reseeds the store, adds a new bundle and replaces the restored collection.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
import sys
from pathlib import Path

import numpy as np

DEMO_STORE = Path("aibackup-demo/chroma")
COLLECTION = "python-help"
DIM = 256
WORD = re.compile(r"[a-z_][a-z0-9_]+")


def embed(text: str, dim: int = DIM) -> np.ndarray:
    """A deterministic bag-of-words embedding (feature hashing of words and word pairs)."""
    words = WORD.findall(text.lower())
    vec = np.zeros(dim, dtype=np.float64)
    for token in words + [f"{a} {b}" for a, b in itertools.pairwise(words)]:
        h = hashlib.blake2b(token.encode(), digest_size=8).digest()
        index = int.from_bytes(h[:4], "little") % dim
        vec[index] += 1.0 if h[4] & 1 else -1.0
    vec = np.sign(vec) * np.log1p(np.abs(vec))
    norm = np.linalg.norm(vec)
    return (vec / norm if norm else vec).astype(np.float32)


def paragraphs() -> list[tuple[str, str, str]]:
    """(id, topic, paragraph) for every substantial paragraph of the Python help topics."""
    from pydoc_data.topics import topics

    out = []
    for topic, text in sorted(topics.items()):
        for n, para in enumerate(p.strip() for p in text.split("\n\n")):
            if len(para) > 80:
                out.append((f"{topic}-{n:03d}", topic, para))
    return out


def seed(path: Path = DEMO_STORE) -> int:
    """(Re)create the demo Chroma store; returns the number of records."""
    import chromadb
    from chromadb.config import Settings

    if path.exists():
        shutil.rmtree(path)
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    collection = client.create_collection(
        COLLECTION,
        metadata={"hnsw:space": "cosine", "description": "Python help topics, one record per paragraph"},
        embedding_function=None,
    )
    rows = paragraphs()
    batch = 500
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        collection.add(
            ids=[r[0] for r in chunk],
            embeddings=np.stack([embed(r[2]) for r in chunk]),
            documents=[r[2] for r in chunk],
            metadatas=[{"topic": r[1], "chars": len(r[2]), "has_code": ">>>" in r[2]} for r in chunk],
        )
    count = collection.count()
    del collection, client
    return count


def run(args: list[str]) -> int:
    """Run one aibackup command as a user would, echoing it first; returns its exit code."""
    from aibackup.cli import main

    print(f"\n$ aibackup {' '.join(args)}", flush=True)
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def demo() -> int:
    print(f"seeding embedded Chroma at {DEMO_STORE}/ from Python's help topics ...", flush=True)
    print(f"{seed()} records in collection {COLLECTION!r} ({DIM}-dim deterministic embeddings, cosine)")
    for args in (
        ["backup", f"chroma:{DEMO_STORE}"],
        ["list"],
        ["verify", "--read-data"],
        ["restore", "latest", "--to", "qdrant", "--mode", "overwrite"],
    ):
        code = run(args)
        if code:
            print(f"\ndemo failed: `aibackup {' '.join(args)}` exited with {code}", file=sys.stderr)
            return code
    print("\ndemo complete: the bundle is in ./aibackup-repo, the restored copy in ./aibackup-restore/qdrant")
    return 0


if __name__ == "__main__":
    sys.exit(demo())
