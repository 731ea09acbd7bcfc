"""Qdrant: local mode (``qdrant:PATH``) and servers (``qdrant+http(s)://``). The connector is in
:mod:`aibackup.connectors.qdrant.connector`; points <-> batches in ``points``; collection configs in ``config``."""

from __future__ import annotations
