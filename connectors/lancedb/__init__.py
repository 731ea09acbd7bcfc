"""LanceDB: embedded databases (``lancedb:PATH``). The connector is in
:mod:`aibackup.connectors.lancedb.connector`; opening the database and translating lancedb's errors in
``client``; table definitions <-> collection configs in ``tables``; record batches both ways in ``records``
(metadata JSON built column by column in ``jsontext``); column values <-> JSON in ``values``; searching a
table version in ``search``."""

from __future__ import annotations
