"""Connectors turn a backend into canonical Arrow batches and back. See aibackup.connectors.base for the contract."""

from __future__ import annotations
