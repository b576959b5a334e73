"""The store facade: the domain operations Raylight needs from a vector store, and the shapes they take.

Two backends implement `Store`: `ServerStore` (a Qdrant server through qdrant-client: the cluster, or one
machine when a URL is given) and `EdgeStore` (Qdrant's engine in this process through qdrant-edge-py: the
one-machine default). `StoreProxy` forwards the same operations to the Ray actor that owns an EdgeStore
folder. Every operation names its collection, as qdrant-client's methods do.

Search semantics (both backends): cosine similarity for the dense vector `DENSE`, dot product with IDF for
the sparse vector `SPARSE`, and for hybrid queries both branches filtered, then fused by reciprocal rank
(RRF, k = `RRF_K`, Qdrant's default). Ids are point ids as strings (uuid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from raylight.qdrant_layout import DENSE, PAYLOAD_INDEXES, SPARSE

__all__ = ["DENSE", "PAYLOAD_INDEXES", "RRF_K", "SPARSE", "ChunkPoint", "CollectionMissing", "Hit", "Scope",
           "SearchQuery", "Store", "StoreUnavailable", "SyncState"]

RRF_K = 2  # reciprocal rank fusion constant: 1 / (k + rank); Qdrant's default
FilterValue = str | int | list[str] | list[int]
SyncState = dict[str, list[tuple[str, dict[str, Any]]]]  # source_id -> [(point id, state payload)]


class StoreUnavailable(RuntimeError):
    """The vector store cannot be reached or refused the request (the agent answers 503)."""


class CollectionMissing(StoreUnavailable):
    """The collection does not exist yet (nothing ingested)."""


@dataclass(frozen=True)
class ChunkPoint:
    """One chunk to write: `dense` has the collection's dimensions; `sparse` is (term ids, weights), None for
    a point without a sparse vector."""

    id: str
    payload: dict[str, Any]
    dense: list[float]
    sparse: tuple[list[int], list[float]] | None = None


@dataclass(frozen=True)
class Scope:
    """Which points a query may see. `pipeline`: only that pipeline's points (None: all). Access: a point with
    a tenant is visible only to that tenant, a point with groups only to a caller in one of them; a caller
    with neither sees only public points. `match`: payload field -> a value that must match exactly, or a list
    of which one must match."""

    pipeline: str | None = None
    tenant: str | None = None
    groups: tuple[str, ...] = ()
    match: dict[str, FilterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchQuery:
    """A dense (`sparse` None or not `hybrid`), sparse-only (`dense` None) or hybrid query. `limit`: results;
    `prefetch`: candidates per branch of a hybrid query (>= limit); `score_threshold` applies to the dense
    branch (cosine)."""

    dense: list[float] | None
    sparse: tuple[list[int], list[float]] | None = None
    hybrid: bool = False
    limit: int = 10
    prefetch: int = 40
    score_threshold: float | None = None
    scope: Scope = field(default_factory=Scope)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@runtime_checkable
class Store(Protocol):
    """Domain operations on a vector store holding chunk collections. Errors: StoreUnavailable (and its
    CollectionMissing) for anything the store refuses or cannot do; ValueError for a bad argument."""

    def ensure_collection(self, collection: str, dimensions: int, sparse: bool = True) -> bool:
        """Create the collection (dense `DENSE` cosine of `dimensions`, sparse `SPARSE` with IDF) and a payload
        index on every filtered field (PAYLOAD_INDEXES); True when created now. StoreUnavailable when it
        exists with another dense size."""
        ...

    def collection_exists(self, collection: str) -> bool: ...

    def delete_collection(self, collection: str) -> bool:
        """Drop the collection with its points; False when there was none."""
        ...

    def upsert(self, collection: str, points: Sequence[ChunkPoint]) -> None:
        """Insert or replace points by id; durable when it returns."""
        ...

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def delete_document(self, collection: str, pipeline: str, source_id: str) -> int:
        """Delete one document's chunks in a pipeline; returns how many there were."""
        ...

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Set (merge) these payload fields on the points."""
        ...

    def sync_state(self, collection: str, pipeline: str, fields: Sequence[str]) -> SyncState:
        """source_id -> [(point id, {field: value})] for the pipeline's points (the sync's manifest)."""
        ...

    def dense_vectors(self, collection: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """The dense vectors of the points that exist among ids."""
        ...

    def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        """The best `query.limit` points in scope, best first, with their payloads."""
        ...

    def points(self, collection: str, with_vectors: bool = True) -> list[ChunkPoint]:
        """Every point of the collection (id order), with its vectors unless with_vectors is False (then
        `dense` is empty): for migration, backups and checks."""
        ...

    def optimize(self, collection: str) -> None:
        """Compact after a batch of writes (the end of an ingestion run): the embedded engine merges its
        segments and builds payload indexes into them, which makes its exact search several times faster; a
        server optimizes by itself (no-op). Blocks for seconds on 100k points."""
        ...

    def count(self, collection: str, pipeline: str | None = None) -> int:
        """Points in the collection (exact), only the pipeline's when given."""
        ...

    def close(self) -> None: ...
