"""Versioned manifest models: what a bundle holds, how to find its parts, and how to check it.

A manifest is one JSON document per bundle, at ``bundles/<bundle-id>.json``, stored in canonical form
(sorted keys, no spaces, UTF-8, one trailing newline). Its ``checksum`` is the sha256 of the canonical JSON
of the document without the ``checksum`` key; a reader also refuses a file whose bytes are not the canonical
form of what it parsed, so any change to any byte of a manifest is detected. Parsing is strict: a missing
or mistyped field raises :class:`ManifestError`; a ``format_version`` newer than :data:`FORMAT_VERSION`
raises :class:`ManifestVersionTooNewError` so an old tool never half-reads a newer bundle. Unknown extra
keys are kept out of the models but still covered by the checksum.

In an encrypted repository a manifest also carries ``authentication``: HMAC-SHA256, under a key derived
from the repository key, of :data:`MAC_CONTEXT` and the canonical body (the document without checksum and
authentication). The checksum detects damage; the MAC detects a change made by someone without the key
(who can rewrite the checksum, but not the MAC).

``manifests/schema/bundle-manifest.v1.json`` is the published JSON Schema of this format; every manifest the
tool writes validates against it (the test-suite checks each one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aibackup.manifests import fields
from aibackup.manifests.baseline import SearchBaseline
from aibackup.manifests.chain import ChainLink, PartEntry, check_chain
from aibackup.manifests.fields import DISTANCES, ManifestError

FORMAT = "aibackup-bundle"
#: The newest format this version reads and writes. Version 2 (0.4.0) adds chained datasets (``chain`` with
#: more than one link: aibackup.manifests.chain), which an older reader must not take for a full dataset; a
#: manifest without one is still written as version 1, readable by 0.3.x. Version 3 (0.7.0) adds model
#: datasets, whose bytes live in the repository's chunk store (aibackup.chunks): an older reader must refuse
#: them, and while it cannot read a manifest its prune removes no part at all (so never a chunk pack).
FORMAT_VERSION = 3
#: The MAC an encrypted repository's manifests carry, and the context string it is computed after.
MAC_ALGORITHM = "hmac-sha256"
MAC_CONTEXT = b"aibackup-manifest-authentication-v1\x00"
DATATYPES = ("float32", "float16", "uint8")
#: The application frameworks whose layouts a vector collection may be recorded in (aibackup.connectors.layouts).
FRAMEWORKS = ("langchain", "llamaindex")


class ManifestVersionTooNewError(ManifestError):
    """The manifest was written in a newer format than this tool reads."""

    def __init__(self, version: int) -> None:
        super().__init__(f"manifest format version {version} is newer than this aibackup reads ({FORMAT_VERSION})")
        self.version = version


def canonical_bytes(doc: Any) -> bytes:
    """Canonical JSON bytes of a document: the form that checksums are computed over."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- vectors configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseVectorSpec:
    """One dense vector of a collection. ``name`` "" is the unnamed default vector."""

    name: str
    size: int
    distance: str  # one of DISTANCES
    multivector: bool = False  # a list of vectors per record (Qdrant multivector, max_sim)
    datatype: str = "float32"  # what the backend stores; the bundle always holds float32
    options: Mapping[str, Any] = field(default_factory=dict)  # backend extras (hnsw, on_disk, quantization)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "distance": self.distance,
            "multivector": self.multivector,
            "datatype": self.datatype,
            "options": dict(self.options),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> DenseVectorSpec:
        distance = fields.get(doc, "distance", str, where)
        if distance not in DISTANCES:
            raise ManifestError(f"{where}.distance: unknown distance {distance!r}")
        datatype = fields.opt(doc, "datatype", str, where, "float32")
        if datatype not in DATATYPES:
            raise ManifestError(f"{where}.datatype: unknown datatype {datatype!r}")
        size = fields.count(doc, "size", where)
        if size == 0:
            raise ManifestError(f"{where}.size: must be positive")
        return cls(
            name=fields.get(doc, "name", str, where),
            size=size,
            distance=distance,
            multivector=fields.opt(doc, "multivector", bool, where, False),
            datatype=datatype,
            options=fields.opt(doc, "options", dict, where, {}),
        )


@dataclass(frozen=True)
class SparseVectorSpec:
    """One sparse vector of a collection (Qdrant sparse vectors)."""

    name: str
    modifier: str | None = None  # "idf" or None
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "modifier": self.modifier, "options": dict(self.options)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> SparseVectorSpec:
        return cls(
            name=fields.get(doc, "name", str, where),
            modifier=fields.opt(doc, "modifier", str, where, None),
            options=fields.opt(doc, "options", dict, where, {}),
        )


@dataclass(frozen=True)
class VectorsConfig:
    """The backend-neutral configuration of a vector collection.

    ``native`` keeps the source backend's own full configuration (``{"kind": "qdrant", ...}``) so a restore
    into the same kind of backend recreates the collection exactly; a restore into another kind uses only
    the neutral fields.
    """

    dense: tuple[DenseVectorSpec, ...]
    sparse: tuple[SparseVectorSpec, ...] = ()
    metadata: Mapping[str, Any] | None = None  # collection-level metadata
    hnsw: Mapping[str, Any] | None = None  # neutral names: m, ef_construction, ef_search
    payload_indexes: tuple[Mapping[str, Any], ...] = ()  # [{"field": "k", "type": "keyword"}, ...]
    native: Mapping[str, Any] | None = None
    #: The application layout every record was found in at backup (aibackup.connectors.layouts):
    #: {"framework": "langchain"|"llamaindex", "backend": "chroma"|..., "evidence": {...}}; None: raw.
    layout: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        doc = {
            "dense": [d.to_json() for d in self.dense],
            "sparse": [s.to_json() for s in self.sparse],
            "metadata": None if self.metadata is None else dict(self.metadata),
            "hnsw": None if self.hnsw is None else dict(self.hnsw),
            "payload_indexes": [dict(p) for p in self.payload_indexes],
            "native": None if self.native is None else dict(self.native),
        }
        if self.layout is not None:  # absent for raw collections: their configs stay what they were
            doc["layout"] = dict(self.layout)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "config") -> VectorsConfig:
        dense = fields.get(doc, "dense", list, where)
        sparse = fields.opt(doc, "sparse", list, where, [])
        indexes = fields.opt(doc, "payload_indexes", list, where, [])
        for i, index in enumerate(indexes):
            if not isinstance(index, dict):
                raise ManifestError(f"{where}.payload_indexes[{i}]: expected object")
        return cls(
            dense=tuple(
                DenseVectorSpec.from_json(fields.obj(d, f"{where}.dense[{i}]"), f"{where}.dense[{i}]")
                for i, d in enumerate(dense)
            ),
            sparse=tuple(
                SparseVectorSpec.from_json(fields.obj(s, f"{where}.sparse[{i}]"), f"{where}.sparse[{i}]")
                for i, s in enumerate(sparse)
            ),
            metadata=fields.opt(doc, "metadata", dict, where, None),
            hnsw=fields.opt(doc, "hnsw", dict, where, None),
            payload_indexes=tuple(indexes),
            native=fields.opt(doc, "native", dict, where, None),
            layout=_layout(fields.opt(doc, "layout", dict, where, None), f"{where}.layout"),
        )

    def single_vectors(self) -> list[DenseVectorSpec]:
        """The dense vectors that are one vector per record (not multivectors), by name."""
        return sorted((d for d in self.dense if not d.multivector), key=lambda d: d.name)

    def dense_by_name(self, name: str) -> DenseVectorSpec:
        for spec in self.dense:
            if spec.name == name:
                return spec
        raise KeyError(name)


def _layout(doc: Mapping[str, Any] | None, where: str) -> Mapping[str, Any] | None:
    if doc is None:
        return None
    if fields.get(doc, "framework", str, where) not in FRAMEWORKS:
        raise ManifestError(f"{where}.framework: unknown framework {doc['framework']!r}")
    fields.get(doc, "backend", str, where)
    return doc


# --- bundle manifest -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldEntry:
    """One column of a dataset's Arrow schema: name, Arrow type as pyarrow prints it, nullability."""

    name: str
    type: str
    nullable: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> FieldEntry:
        return cls(
            name=fields.get(doc, "name", str, where),
            type=fields.get(doc, "type", str, where),
            nullable=fields.get(doc, "nullable", bool, where),
        )


#: The record digest algorithm of new datasets (see aibackup.manifests.digest): SHA-256 of the canonical record,
#: truncated to 128 bits. SHA-256 runs on the CPU's SHA extensions where present (x86 SHA-NI, ARMv8), 1.5x
#: faster than BLAKE2b per record here, and the digests are on every backup's critical path.
DIGEST_ALGORITHM = "sha256-128-sum-v1"
#: Every algorithm a manifest may name: bundles written before 0.2.0 use BLAKE2b and keep verifying.
DIGEST_ALGORITHMS = (DIGEST_ALGORITHM, "blake2b128-sum-v1")


@dataclass(frozen=True)
class DatasetManifest:
    """One dataset (a collection) of a bundle."""

    name: str
    kind: str  # "vectors" for now
    rows: int
    schema: tuple[FieldEntry, ...]
    config: Mapping[str, Any]  # kind-specific; for "vectors" see VectorsConfig
    digest: str  # 32 hex digits; see aibackup.manifests.digest
    parts: tuple[PartEntry, ...]
    id_types: Mapping[str, int] = field(default_factory=dict)  # e.g. {"uint": 10, "uuid": 2}
    digest_algorithm: str = DIGEST_ALGORITHM
    #: The connector's high-water mark after this backup (the next incremental backup starts from it).
    state: Mapping[str, Any] | None = None
    #: For an incremental backup: the bundle whose dataset this one extends. Its parts are listed again
    #: here, first, so this manifest alone describes the whole dataset.
    extends: str | None = None
    #: Vectors: how the source store answered sampled queries at backup (aibackup.manifests.baseline); None for
    #: other kinds, bundles of 0.2.x, and backups run with ``--queries 0``.
    baseline: SearchBaseline | None = None
    #: Since 0.4.0 (vectors): the links of the chain this dataset is the live state of, oldest first; a full
    #: backup is a chain of one link. Empty for other kinds and older bundles (see aibackup.manifests.chain).
    chain: tuple[ChainLink, ...] = ()

    @property
    def chained(self) -> bool:
        """Whether the dataset is an incremental link: records of earlier bundles, less its tombstones."""
        return len(self.chain) > 1

    def all_parts(self) -> tuple[PartEntry, ...]:
        """Every part the dataset needs: its record parts, then each link's index and tombstones."""
        return self.parts + tuple(p for link in self.chain for p in link.own_parts())

    def link_of(self, part: PartEntry) -> ChainLink | None:
        """The link that wrote `part` (None outside a chain)."""
        for link in self.chain:
            if part.bundle == link.bundle:
                return link
        return None

    def vectors_config(self) -> VectorsConfig:
        return VectorsConfig.from_json(self.config, f"dataset {self.name!r} config")

    def to_json(self) -> dict[str, Any]:
        doc = {
            "name": self.name,
            "kind": self.kind,
            "rows": self.rows,
            "schema": [f.to_json() for f in self.schema],
            "config": dict(self.config),
            "digest": {"algorithm": self.digest_algorithm, "value": self.digest},
            "id_types": dict(self.id_types),
            "parts": [p.to_json() for p in self.parts],
            "state": None if self.state is None else dict(self.state),
            "extends": self.extends,
        }
        if self.baseline is not None:  # absent rather than null: 0.2.x manifests stay byte-for-byte what they were
            doc["baseline"] = self.baseline.to_json()
        if self.chain:
            doc["chain"] = [link.to_json() for link in self.chain]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> DatasetManifest:
        name = fields.get(doc, "name", str, where)
        where = f"{where} ({name!r})"
        digest = fields.obj(fields.get(doc, "digest", dict, where), f"{where}.digest")
        algorithm = fields.get(digest, "algorithm", str, f"{where}.digest")
        if algorithm not in DIGEST_ALGORITHMS:
            raise ManifestError(f"{where}.digest.algorithm: unknown algorithm {algorithm!r}")
        parts = tuple(
            PartEntry.from_json(fields.obj(p, f"{where}.parts[{i}]"), f"{where}.parts[{i}]")
            for i, p in enumerate(fields.get(doc, "parts", list, where))
        )
        rows = fields.count(doc, "rows", where)
        chain = tuple(
            ChainLink.from_json(fields.obj(link, f"{where}.chain[{i}]"), f"{where}.chain[{i}]")
            for i, link in enumerate(fields.opt(doc, "chain", list, where, []))
        )
        if chain:
            check_chain(chain, parts, rows, where)
        elif sum(p.rows for p in parts) != rows:
            raise ManifestError(f"{where}: parts hold {sum(p.rows for p in parts)} rows, manifest says {rows}")
        id_types = fields.opt(doc, "id_types", dict, where, {})
        if any(not isinstance(v, int) or isinstance(v, bool) for v in id_types.values()):
            raise ManifestError(f"{where}.id_types: counts must be ints")
        kind = fields.get(doc, "kind", str, where)
        config = fields.get(doc, "config", dict, where)
        baseline = fields.opt(doc, "baseline", dict, where, None)
        dataset = cls(
            name=name,
            kind=kind,
            rows=rows,
            schema=tuple(
                FieldEntry.from_json(fields.obj(f, f"{where}.schema[{i}]"), f"{where}.schema[{i}]")
                for i, f in enumerate(fields.get(doc, "schema", list, where))
            ),
            config=config,
            digest=fields.hex_digits(digest, "value", f"{where}.digest", 32),
            digest_algorithm=algorithm,
            parts=parts,
            id_types=id_types,
            state=fields.opt(doc, "state", dict, where, None),
            extends=fields.opt(doc, "extends", str, where, None),
            baseline=None if baseline is None else SearchBaseline.from_json(baseline, f"{where}.baseline"),
            chain=chain,
        )
        if kind == "vectors":
            dataset.vectors_config()  # validate now, not at restore time
        return dataset


@dataclass(frozen=True)
class BundleManifest:
    """A committed bundle: which datasets it holds, where their parts are, and how to check them."""

    bundle_id: str
    created_at: str  # ISO 8601 UTC, "2026-11-25T02:00:00.123456Z"
    tool_version: str
    source: Mapping[str, Any]  # {"kind": "chroma", "uri": "chroma:/abs/path"} (credentials redacted)
    datasets: tuple[DatasetManifest, ...]
    parent: str | None = None
    #: Left out (None): the oldest version that holds these datasets: 3 with a model dataset, 2 with a chained
    #: dataset, else 1.
    format_version: int = None  # type: ignore[assignment]  # always an int after __post_init__
    #: HMAC-SHA256 (hex) of :meth:`signed_bytes` under an encrypted repository's key; None elsewhere.
    authentication: str | None = None

    def __post_init__(self) -> None:
        if self.format_version is None:
            needed = (
                3
                if any(d.kind == "model" for d in self.datasets)
                else 2
                if any(d.chained for d in self.datasets)
                else 1
            )
            object.__setattr__(self, "format_version", needed)

    def signed_bytes(self) -> bytes:
        """What an encrypted repository's key authenticates: the body, canonical, after a context string
        (so the MAC can never be mistaken for another use of the key)."""
        return MAC_CONTEXT + canonical_bytes(self.body())

    def body(self) -> dict[str, Any]:
        """The document without its checksum and authentication."""
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "bundle_id": self.bundle_id,
            "created_at": self.created_at,
            "tool": {"name": "aibackup", "version": self.tool_version},
            "parent": self.parent,
            "source": dict(self.source),
            "datasets": [d.to_json() for d in self.datasets],
        }

    def to_json(self) -> dict[str, Any]:
        doc = self.body()
        if self.authentication is not None:
            doc["authentication"] = {"algorithm": MAC_ALGORITHM, "value": self.authentication}
        doc["checksum"] = {"algorithm": "sha256", "value": hashlib.sha256(canonical_bytes(doc)).hexdigest()}
        return doc

    def to_bytes(self) -> bytes:
        """The bytes written to the repository: canonical JSON and a newline, checksum included.

        Canonical bytes (rather than indented JSON) make every byte of the file meaningful: a reader
        re-serialises what it parsed and refuses a file whose bytes differ, so even a change that leaves
        the JSON equivalent (a space turned into a newline) is detected. `aibackup show` prints it nicely.
        """
        return canonical_bytes(self.to_json()) + b"\n"

    def dataset(self, name: str) -> DatasetManifest:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(name)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "manifest") -> BundleManifest:
        """Parse and check a manifest. Raises ManifestError (or its subclass for a newer version)."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc})") from None
        except RecursionError:  # arrays nested past the interpreter's stack: damage, not a bug of ours
            raise ManifestError(f"{where}: not valid JSON (nested too deeply)") from None
        if not isinstance(doc, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        manifest = cls.from_json(doc, where)
        if data != canonical_bytes(doc) + b"\n":
            raise ManifestError(f"{where}: bytes are not in canonical form (the file was changed or damaged)")
        return manifest

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "manifest") -> BundleManifest:
        if doc.get("format") != FORMAT:
            raise ManifestError(f"{where}: not an aibackup bundle manifest (format {doc.get('format')!r})")
        version = fields.get(doc, "format_version", int, where)
        if version > FORMAT_VERSION:
            raise ManifestVersionTooNewError(version)
        if version < 1:
            raise ManifestError(f"{where}: bad format_version {version}")
        checksum = fields.obj(fields.get(doc, "checksum", dict, where), f"{where}.checksum")
        if fields.get(checksum, "algorithm", str, f"{where}.checksum") != "sha256":
            raise ManifestError(f"{where}.checksum: unknown algorithm")
        expected = fields.hex_digits(checksum, "value", f"{where}.checksum", 64)
        body = {k: v for k, v in doc.items() if k != "checksum"}
        if hashlib.sha256(canonical_bytes(body)).hexdigest() != expected:
            raise ManifestError(f"{where}: checksum mismatch (the manifest was changed or damaged)")
        tool = fields.obj(fields.get(doc, "tool", dict, where), f"{where}.tool")
        datasets: Sequence[Any] = fields.get(doc, "datasets", list, where)
        parsed = tuple(
            DatasetManifest.from_json(fields.obj(d, f"{where}.datasets[{i}]"), f"{where}.datasets[{i}]")
            for i, d in enumerate(datasets)
        )
        if version < 2 and any(d.chained for d in parsed):
            raise ManifestError(f"{where}: a chained dataset needs format_version 2, the manifest says {version}")
        if version < 3 and any(d.kind == "model" for d in parsed):
            raise ManifestError(f"{where}: a model dataset needs format_version 3, the manifest says {version}")
        names = [d.name for d in parsed]
        if len(set(names)) != len(names):
            raise ManifestError(f"{where}: duplicate dataset names")
        authentication = None
        if doc.get("authentication") is not None:
            auth = fields.obj(fields.get(doc, "authentication", dict, where), f"{where}.authentication")
            if fields.get(auth, "algorithm", str, f"{where}.authentication") != MAC_ALGORITHM:
                raise ManifestError(f"{where}.authentication: unknown algorithm")
            authentication = fields.hex_digits(auth, "value", f"{where}.authentication", 64)
        return cls(
            bundle_id=fields.get(doc, "bundle_id", str, where),
            created_at=fields.utc_time(doc, "created_at", where),
            tool_version=fields.get(tool, "version", str, f"{where}.tool"),
            source=fields.obj(fields.get(doc, "source", dict, where), f"{where}.source"),
            datasets=parsed,
            parent=fields.opt(doc, "parent", str, where, None),
            format_version=version,
            authentication=authentication,
        )
