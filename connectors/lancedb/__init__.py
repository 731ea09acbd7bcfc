"""LanceDB: embedded databases (``lancedb:PATH``). The connector is in
:mod:`aibackup.connectors.lancedb.connector`; table definitions <-> collection configs in ``tables``; record
batches both ways in ``records`` (metadata JSON built column by column in ``jsontext``); column values <->
JSON in ``values``."""

from __future__ import annotations
