"""Chroma: embedded (``chroma:PATH``) and servers (``chroma+http(s)://``). The connector is in
:mod:`aibackup.connectors.chroma.connector`, the metadata and configuration mapping in ``metadata``."""

from __future__ import annotations
