"""Milvus: Milvus Lite (``milvus:PATH``) and servers (``milvus+http(s)://``). The connector is in
:mod:`aibackup.connectors.milvus.connector` (the canonical mapping is its docstring); collection schemas in
``schema``; rows <-> batches in ``records``; serving Milvus Lite and translating errors in ``client``.
pymilvus is imported only when a connector is opened."""

from __future__ import annotations
