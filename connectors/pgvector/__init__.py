"""PostgreSQL with pgvector: the connector and its rules in :mod:`aibackup.connectors.pgvector.connector`;
a table's definition and DDL in ``catalog``; its mapping to canonical records in ``mapping``; the backup's
reading in ``reading``; the restore's SQL in ``restore`` and its COPY cells in ``cells``; pgvector's types in
binary COPY in ``codec``."""

from __future__ import annotations
