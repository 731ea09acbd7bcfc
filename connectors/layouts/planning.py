"""Planning a restore in a layout: which layout to write (:func:`resolve`, :class:`Applied`), where the
framework keeps the collection on the target (:func:`place`), the plan with the layout's mapping first
(:func:`apply`) and what the application sets to read it (:func:`runbook`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from aibackup.connectors.base import DatasetDescription, ImportPlan
from aibackup.connectors.lancedb import frameworks as lance
from aibackup.connectors.layouts import (
    CHOICES,
    KNOWN,
    LANGCHAIN,
    LC_CONTENT,
    LC_KEYS,
    LC_METADATA,
    LLAMAINDEX,
    RAW,
)
from aibackup.connectors.layouts.detection import langchain_keys
from aibackup.connectors.layouts.reading import _records
from aibackup.connectors.layouts.writing import _refusal, convert, transform
from aibackup.connectors.milvus import frameworks as milvus
from aibackup.connectors.pgvector import langchain as pg_langchain
from aibackup.connectors.pgvector import llamaindex as pg_llamaindex
from aibackup.errors import UnsupportedFeatureError, UsageError
from aibackup.manifests.vectors import parse_metadata


@dataclass(frozen=True)
class Applied:
    """The layout a restore writes: `framework`'s, from a `source` backend's records into `target`'s.
    `recorded`: the backup found every record in it (an explicit ``--layout`` is checked record by record).
    `keys`: LangChain's payload keys on a Qdrant source (recorded at backup; the defaults otherwise).
    `collection`: the framework's name of the collection where it is not the dataset's (langchain-postgres
    keeps every collection in one table: the recorded name on a pgvector source, the one written on a
    pgvector target; see :func:`place`). `existing`: LangChain's payload keys of the Qdrant collection a
    merge writes into (:func:`merge_keys`)."""

    framework: str
    source: str
    target: str
    recorded: bool = False
    keys: tuple[str, str] = LC_KEYS
    collection: str | None = None
    existing: tuple[str, str] | None = None

    @property
    def target_keys(self) -> tuple[str, str]:
        """LangChain's payload keys on the target: the source's between two Qdrants (records stay as they
        are), those of the collection a merge writes into, else LangChain's defaults."""
        if self.source == self.target:
            return self.keys
        return self.existing or LC_KEYS

    def describe(self) -> str:
        custom = f", payload keys {self.keys[0]!r}/{self.keys[1]!r}" if self.keys != LC_KEYS else ""
        if self.source != self.target:
            return f"{self.framework} ({self.source} -> {self.target}{custom})"
        return f"{self.framework} ({self.source}{custom})" if custom else self.framework


def check_choice(choice: str) -> None:
    """UsageError for a ``--layout`` value that is not one of :data:`CHOICES`."""
    if choice not in CHOICES:
        raise UsageError(f"bad --layout {choice!r}: expected one of {', '.join(CHOICES)}")


def resolve(
    choice: str, recorded: Mapping[str, Any] | None, source: str, target: str, collection: str
) -> Applied | None:
    """The layout to write for `collection`: ``--layout`` `choice` (auto: the one `recorded` at backup),
    between the bundle's `source` backend kind and the `target` connector's kind. None: raw.
    Raises UsageError for a framework whose layout is not known on one of the backends."""
    check_choice(choice)
    framework = (recorded or {}).get("framework", RAW) if choice == "auto" else choice
    if framework == RAW:
        return None
    found = recorded is not None and recorded.get("framework") == framework and recorded.get("backend") == source
    if choice == "auto" and unknown_backend(framework, source, target) is not None:
        return None  # raw, and the restore says why (fallback_note)
    if choice == "auto" and not certain(recorded) and target in TABLE_TARGETS:
        return None  # a shape other applications write too: the target's own tables (fallback_note)
    for side, kind in (("source", source), ("target", target)):
        if kind not in KNOWN[framework]:
            raise UsageError(
                f"collection {collection!r}: {framework}'s layout on {kind} (the {side}) is not known to this "
                f"aibackup (known: {', '.join(KNOWN[framework])}); restore with --layout raw"
            )
    evidence = (recorded or {}).get("evidence") or {} if found else {}
    keys = LC_KEYS
    if found and framework == LANGCHAIN and source == "qdrant":
        keys = (str(evidence.get("content_key", LC_CONTENT)), str(evidence.get("metadata_key", LC_METADATA)))
    named = evidence.get("collection") if source == "pgvector" else None
    return Applied(framework, source, target, found, keys, str(named) if named else None)


#: Targets where a framework's layout is tables, columns or fields of its own (not only where a record keeps
#: its text): an uncertain layout is not written there unless asked for.
TABLE_TARGETS = ("pgvector", "lancedb", "milvus")


def certain(recorded: Mapping[str, Any] | None) -> bool:
    """Whether a recorded layout rests on the framework's own marks (Detector._certain). Bundles before
    written before the field existed do not say: LangChain's layout on Chroma was the only uncertain one."""
    recorded = recorded or {}
    return bool(
        recorded.get("certain", not (recorded.get("framework") == LANGCHAIN and recorded.get("backend") == "chroma"))
    )


def unknown_backend(framework: str, source: str, target: str) -> str | None:
    """The first of the two backends where `framework`'s layout is not known (None: both are)."""
    return next((kind for kind in (source, target) if kind not in KNOWN.get(framework, ())), None)


def place(
    layout: Applied,
    description: DatasetDescription,
    dest: str,
    *,
    renamed: bool,
    records: Callable[[], Iterable[pa.RecordBatch]] | None = None,
) -> tuple[Applied, DatasetDescription, str]:
    """Where the framework keeps the collection on the target: (layout, the description to plan the restore
    with, the target's name for the dataset). The framework's tables in PostgreSQL and LanceDB are planned
    here as if a bundle of them were restored: LangChain on pgvector keeps every collection in
    langchain-postgres's two tables (the records go to ``langchain_pg_embedding`` under the collection name
    `dest`; out of it they go to a collection named as the LangChain collection was, unless `renamed` by
    the user), LlamaIndex in ``data_<name>``; a LanceDB table's metadata struct is typed from the bundle's
    `records` (read once more, here). Raises UnsupportedFeatureError for a collection the framework's
    table cannot hold."""
    if layout.source == layout.target:
        return layout, description, dest
    if layout.target in ("pgvector", "lancedb", "milvus"):
        dense = description.config.single_vectors()
        if len(description.config.dense) != 1 or len(dense) != 1 or description.config.sparse:
            raise UnsupportedFeatureError(
                f"collection {description.name!r}: {layout.framework}'s {layout.target} table keeps one dense "
                "vector per record; restore with --layout raw"
            )
    if layout.target == "milvus":  # LangChain's only (KNOWN)
        native = milvus.native_definition(dest, dense[0])
        return layout, replace(description, config=replace(description.config, native=native)), dest
    if layout.target == "lancedb":
        if dense[0].name != "":
            raise UnsupportedFeatureError(
                f"collection {description.name!r}: {layout.framework}'s LanceDB table keeps its vector in column "
                f"{lance.VECTOR!r}: restore vector {dense[0].name!r} with --layout raw"
            )
        struct = lance.metadata_type(dest, _target_metadatas(layout, dest, records() if records else ()))
        native = lance.native_definition(layout.framework, dense[0], struct)
        return layout, replace(description, config=replace(description.config, native=native)), dest
    if layout.target == "pgvector":
        if layout.framework == LANGCHAIN:
            native, table = pg_langchain.native_definition(dest, dense[0].size), pg_langchain.EMBEDDINGS
        else:
            native, table = pg_llamaindex.native_definition(dest, dense[0].size), pg_llamaindex.table_name(dest)
        spec = replace(dense[0], options={**dense[0].options, "column": pg_langchain.VECTOR_COLUMN})
        config = replace(description.config, dense=(spec,), native=native)
        return replace(layout, collection=dest), replace(description, config=config), table
    if layout.source == "pgvector" and layout.collection and not renamed:
        return layout, description, layout.collection
    return layout, description, dest


def merge_keys(layout: Applied, payload: Mapping[str, Any] | None, collection: str) -> Applied:
    """`layout` for a merge into an existing Qdrant collection, one of whose points has `payload` (None: it
    holds none): LangChain's records are written with the payload keys that collection's application reads.
    Raises UsageError, before anything is written, where its points are not LangChain's or use other keys
    than records that stay as they are (Qdrant to Qdrant): the merged collection would mix two layouts."""
    if layout.framework != LANGCHAIN or layout.target != "qdrant" or payload is None:
        return layout
    found = langchain_keys(payload)
    if found is None:
        raise UsageError(
            f"collection {collection!r}: its points have payload keys {sorted(payload)}, not LangChain's layout: "
            "merging LangChain's records into it would mix two layouts; restore with --layout raw or into "
            "another collection"
        )
    if layout.source == layout.target and found != layout.keys:
        raise UsageError(
            f"collection {collection!r}: its points keep LangChain's text and metadata in payload keys "
            f"{found[0]!r}/{found[1]!r}, the bundle's in {layout.keys[0]!r}/{layout.keys[1]!r}; restore into "
            "another collection"
        )
    return replace(layout, existing=found)


def _target_metadatas(layout: Applied, collection: str, batches: Iterable[pa.RecordBatch]) -> Iterator[Any]:
    """The framework's ``metadata`` of every record as the target will hold it (LanceDB's struct column)."""
    for batch in batches:
        for rid, doc, meta in _records(batch):
            try:
                _, converted = convert(
                    layout.framework, layout.source, layout.target, doc, parse_metadata(meta), layout.keys
                )
            except ValueError as exc:
                raise _refusal(layout.framework, layout.source, collection, rid, exc) from None
            yield (converted or {}).get(lance.METADATA) or {}


def fallback_note(choice: str, recorded: Mapping[str, Any] | None, source: str, target: str) -> str | None:
    """Why a restore with ``--layout auto`` writes raw records although the backup recorded a layout: the
    framework's layout on one of the backends is not known (an explicit ``--layout`` is refused instead),
    or the records only have a shape other applications write too and the target's layout is tables of the
    framework's own (an explicit ``--layout`` writes it)."""
    framework = (recorded or {}).get("framework", RAW)
    if choice != "auto" or framework == RAW:
        return None
    kind = unknown_backend(framework, source, target)
    if kind is not None:
        return (
            f"recorded in {framework}'s layout, restored raw: {framework}'s layout on {kind} is not known to this "
            f"aibackup (known: {', '.join(KNOWN[framework])}); the records are whole, an application reading them "
            f"through {framework} may need its own mapping"
        )
    if not certain(recorded) and target in TABLE_TARGETS:
        return (
            f"the records have the shape {framework} writes on {source} (which applications without a framework "
            f"write too): restored raw into this {target} collection of their own; --layout {framework} writes "
            f"{framework}'s {target} layout instead"
        )
    return None


def apply(plan: ImportPlan, layout: Applied) -> ImportPlan:
    """`plan` with the layout's mapping applied first (then the target's own), and the runbook's notes."""
    pg_rows = layout.collection and layout.target == "pgvector" and layout.framework == LANGCHAIN
    collection_id = pg_langchain.collection_uuid(layout.collection) if pg_rows and layout.collection else None
    first = transform(
        layout.framework,
        layout.source,
        layout.target,
        plan.target.name,
        verified=layout.recorded,
        keys=layout.keys,
        collection_id=collection_id,
        target_keys=layout.target_keys,
    )
    then = plan.transform

    def both(batch: pa.RecordBatch) -> pa.RecordBatch:
        return then(first(batch))

    return replace(plan, transform=both, layout_transform=first, notes=(*plan.notes, *runbook(layout, plan)))


#: Qdrant's names of the neutral distances, as an application passes them (``models.Distance.EUCLID``).
_QDRANT_DISTANCES = {"cosine": "COSINE", "l2": "EUCLID", "ip": "DOT", "manhattan": "MANHATTAN"}
#: langchain-postgres's (``DistanceStrategy.EUCLIDEAN``).
_PG_DISTANCES = {"cosine": "COSINE", "l2": "EUCLIDEAN", "ip": "MAX_INNER_PRODUCT"}


def runbook(layout: Applied, plan: ImportPlan) -> list[str]:
    """What the application sets when it switches to the restored collection (the report's notes)."""
    name = plan.target.name
    dense = plan.target.config.single_vectors()
    distance = dense[0].distance if dense else None
    lines = [f"layout {layout.describe()}: written where {layout.framework} reads it on {layout.target}"]
    if layout.target == "qdrant" and layout.framework == LANGCHAIN and distance:
        content, nested = layout.target_keys
        named = f", content_payload_key={content!r}, metadata_payload_key={nested!r}" if content != LC_CONTENT else ""
        if dense and dense[0].name:  # langchain-qdrant reads the unnamed vector unless told its name
            named += f", vector_name={dense[0].name!r}"
        lines.append(
            f"open it with langchain_qdrant.QdrantVectorStore(client, collection_name={name!r}, embedding=..., "
            f"distance=models.Distance.{_QDRANT_DISTANCES[distance]}{named})"
        )
        lines.append(
            "ids that are not UUIDs or unsigned integers became point ids uuid5(516a9226-9fbe-5e46-bb30-59b79d8e957d, "
            "id) (the original kept in payload _aibackup_id): LangChain's get_by_ids and delete take those"
        )
    elif layout.target == "milvus":
        lines.append(
            f"open it with langchain_milvus.Milvus(embedding_function=..., collection_name={name!r}, "
            "connection_args={'uri': ...}, enable_dynamic_field=True) (the metadata is in dynamic fields: "
            "without it langchain-milvus reads none); ids are the pk field: delete(ids=...) takes them "
            "(langchain-milvus has no get_by_ids)"
        )
    elif layout.target == "lancedb" and layout.framework == LANGCHAIN:
        lance_distance = {"cosine": "cosine", "ip": "dot"}.get(str(distance), "l2")
        lines.append(
            f"open it with langchain_community.vectorstores.LanceDB(connection=lancedb.connect(...), "
            f"table_name={name!r}, embedding=..., distance={lance_distance!r}, mode='append') (its default "
            "mode, overwrite, replaces the whole table on the next add); ids are the id column: delete(ids=...) "
            "takes them (langchain-community's LanceDB has no get_by_ids)"
        )
    elif layout.target == "lancedb":
        lines.append(
            f"open it with llama_index.vector_stores.lancedb.LanceDBVectorStore(uri=..., table_name={name!r}); node "
            "ids are the id column (LanceDBVectorStore 0.6's delete(ref_doc_id=) and get_nodes(node_ids=) quote "
            "ids in a way LanceDB refuses, on any table: retrieval and inserts work)"
        )
        if distance in ("cosine", "ip"):
            # LanceDBVectorStore's query names no metric: LanceDB then ranks by l2, unless the table has a
            # vector index, whose metric it uses.
            metric = "cosine" if distance == "cosine" else "dot"
            lines.append(
                f"LanceDBVectorStore ranks by l2 unless the table has a vector index; the source ranked by "
                f"{distance}: build one with vector_store.create_index(metric={metric!r}, ...) (IVF needs a few "
                "hundred rows per partition), or its answers differ from the source's"
            )
    elif layout.target == "pgvector" and layout.framework == LLAMAINDEX:
        size = dense[0].size if dense else "..."
        lines.append(
            "open it with llama_index.vector_stores.postgres.PGVectorStore.from_params(..., "
            f"table_name={layout.collection or name!r}, embed_dim={size}); it ranks by cosine distance"
            + (f" (the source's was {distance})" if distance and distance != "cosine" else "")
        )
    elif layout.target == "pgvector":
        strategy = (
            f", distance_strategy=DistanceStrategy.{_PG_DISTANCES[distance]}" if distance in _PG_DISTANCES else ""
        )
        lines.append(
            f"open it with langchain_postgres.PGVector(embeddings=..., collection_name={layout.collection or name!r}, "
            f"connection=..., use_jsonb=True{strategy}); the ids are the source's, as text"
        )
    elif layout.target == "qdrant":
        lines.append(
            f"open it with llama_index.vector_stores.qdrant.QdrantVectorStore(client=..., collection_name={name!r})"
        )
    elif layout.framework == LANGCHAIN:
        lines.append(
            f"open it with langchain_chroma.Chroma(collection_name={name!r}, client=..., embedding_function=...)"
        )
    else:
        lines.append(
            "open it with llama_index.vector_stores.chroma.ChromaVectorStore("
            f"chroma_collection=client.get_collection({name!r}))"
        )
    return lines
