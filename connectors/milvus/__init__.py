"""Milvus: Milvus Lite (``milvus:PATH``) and servers (``milvus+http(s)://``). The connector is in
:mod:`aibackup.connectors.milvus.connector` (the canonical mapping is its docstring); collection schemas in
``schema``; the collection a restore creates in ``plan``; rows <-> batches in ``records``; the pymilvus
client (collection operations, serving Milvus Lite, translating errors) in ``client``. pymilvus is imported
only when a connector is opened."""

from __future__ import annotations
