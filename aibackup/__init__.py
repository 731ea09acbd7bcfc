"""aibackup: back up and restore the state of AI systems, and prove the restore."""

from __future__ import annotations

__version__ = "0.3.0"
