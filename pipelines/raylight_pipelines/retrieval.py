"""Retrieval for agents and `raylight search`: dense or hybrid (dense + BM25, RRF fusion) queries with the
caller's tenant and groups applied inside the Qdrant filter."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from qdrant_client import models as qm
from raylight.api.types import PipelineSpec, Retrieval

from raylight_pipelines import bm25
from raylight_pipelines.embedders import Embedder, EmbedderError, from_connection
from raylight_pipelines.store import (
    DENSE,
    SPARSE,
    CollectionMissing,
    StoreUnavailable,
    access_filter,
    connect,
)

log = logging.getLogger(__name__)

__all__ = ["Caller", "CollectionMissing", "RetrievedChunk", "Retriever", "StoreUnavailable", "open_retriever"]

PREFETCH_FACTOR = 4  # each branch of a hybrid query looks this many times deeper than top_k


@dataclass(frozen=True)
class Caller:
    user: str | None = None
    tenant: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrievedChunk:
    id: str
    source: str
    title: str | None
    heading: str | None
    text: str
    score: float
    page: int | None
    start: int
    end: int


class Retriever:
    def __init__(self, client: Any, collection: str, embedder: Embedder, retrieval: Retrieval,
                 pipeline: str | None = None) -> None:
        self.client = client
        self.collection = collection
        self.embedder = embedder
        self.retrieval = retrieval
        self.pipeline = pipeline

    def query_filter(self, caller: Caller | None) -> qm.Filter:
        caller = caller or Caller()
        flt = access_filter(caller.tenant, caller.groups)
        if self.pipeline:
            flt = qm.Filter(must=[flt, qm.FieldCondition(key="pipeline",
                                                         match=qm.MatchValue(value=self.pipeline))])
        return flt

    def search(self, query: str, caller: Caller | None = None, top_k: int | None = None,
               hybrid: bool | None = None) -> list[RetrievedChunk]:
        k = top_k or self.retrieval.top_k
        use_hybrid = self.retrieval.hybrid if hybrid is None else hybrid
        try:
            dense = self.embedder.embed([query])[0]
        except EmbedderError as exc:
            raise StoreUnavailable(f"cannot embed the query: {exc}") from exc
        flt = self.query_filter(caller)
        threshold = self.retrieval.score_threshold
        try:
            if use_hybrid:
                indices, values = bm25.query_vector(query)
                prefetch = [qm.Prefetch(query=dense, using=DENSE, limit=k * PREFETCH_FACTOR, filter=flt,
                                        score_threshold=threshold)]
                if indices:
                    prefetch.append(qm.Prefetch(query=qm.SparseVector(indices=indices, values=values),
                                                using=SPARSE, limit=k * PREFETCH_FACTOR, filter=flt))
                result = self.client.query_points(self.collection, prefetch=prefetch,
                                                  query=qm.FusionQuery(fusion=qm.Fusion.RRF), query_filter=flt,
                                                  limit=k, with_payload=True)
            else:
                result = self.client.query_points(self.collection, query=dense, using=DENSE, query_filter=flt,
                                                  limit=k, score_threshold=threshold, with_payload=True)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if not self._exists():
                raise CollectionMissing(f"collection {self.collection!r} does not exist: run ingestion "
                                        "first") from exc
            raise StoreUnavailable(f"vector store query failed: {exc}") from exc
        return [_chunk(p) for p in result.points]

    def _exists(self) -> bool:
        try:
            return bool(self.client.collection_exists(self.collection))
        except Exception:
            return False

    def ready(self) -> tuple[bool, str]:
        try:
            if not self.client.collection_exists(self.collection):
                return False, f"collection {self.collection!r} does not exist yet (nothing ingested)"
            count = self.client.count(self.collection, exact=False).count
        except Exception as exc:
            return False, f"vector store unreachable: {exc}"
        return True, f"collection {self.collection!r} has about {count} chunks"


def _chunk(point: Any) -> RetrievedChunk:
    p = point.payload or {}
    return RetrievedChunk(id=str(point.id), source=str(p.get("source_id", "")), title=p.get("title"),
                          heading=p.get("heading"), text=str(p.get("text", "")), score=float(point.score),
                          page=p.get("page"), start=int(p.get("start", 0)), end=int(p.get("end", 0)))


def open_retriever(spec: PipelineSpec, connections: dict[str, Any], embedder: Embedder | None = None) -> Retriever:
    """A Retriever for a Pipeline from its connections (see docs/architecture.md). The store opens now
    (StoreUnavailable if it cannot); the collection may appear later (ready() says so)."""
    store = connections["store"]
    client = connect(store)
    emb = embedder or from_connection(connections["embedder"])
    return Retriever(client, store["collection"], emb, spec.retrieval, pipeline=connections.get("pipeline"))
