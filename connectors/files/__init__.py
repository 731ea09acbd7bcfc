"""The file-kind sources and targets: conversation logs (JSONL files, SQLite tables), fine-tuning datasets,
configuration files, and what they share: reading lines (``lines``), writing folders safely (``filetarget``)
and finding secrets (``secrets``)."""

from __future__ import annotations
