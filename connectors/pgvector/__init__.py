"""PostgreSQL with pgvector (issue 18, in progress): so far the binary COPY codec of pgvector's types
(:mod:`aibackup.connectors.pgvector.codec`); the connector itself is the next step."""

from __future__ import annotations
