"""aibackup: back up and restore the state of AI systems, and prove the restore.

The Python API (docs/python-api.md)::

    import aibackup
    repo = aibackup.Repository.open("s3://backups/ai", create=True)
    result = repo.backup("chroma:./data/chroma", collections=["docs"])
    restored = repo.restore("latest", to="qdrant:./restored", mode="overwrite")

Importing this package is cheap: :class:`Repository` (aibackup.api) and the errors (aibackup.errors) load
when first used, so a connector can import ``aibackup.errors`` without the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.7.0"

if TYPE_CHECKING:
    from aibackup.api import BundleList, Repository
    from aibackup.errors import AibackupError

__all__ = ["AibackupError", "BundleList", "Repository", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Repository", "BundleList"):
        from aibackup import api

        return getattr(api, name)
    if name == "AibackupError":
        from aibackup.errors import AibackupError

        return AibackupError
    raise AttributeError(f"module 'aibackup' has no attribute {name!r}")
