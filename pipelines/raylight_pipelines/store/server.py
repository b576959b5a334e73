"""The Store facade on a Qdrant server through qdrant-client (the cluster; one machine when a URL is given).

Any `QdrantClient` works, including qdrant-client's local mode, which tests use as the reference for the
server's semantics (no Qdrant server binary can be had on these machines) and which reads a data folder
written by Raylight before the embedded engine (see `raylight_pipelines.store.edge.migrate_local_mode`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from raylight.qdrant_layout import CollectionMismatch
from raylight.qdrant_layout import ensure_collection as _ensure_collection

from raylight_pipelines.store.base import (
    DENSE,
    SPARSE,
    ChunkPoint,
    CollectionMissing,
    Hit,
    Scope,
    SearchQuery,
    StoreUnavailable,
    SyncState,
)

__all__ = ["ServerStore", "scope_filter"]


def _access(tenant: str | None, groups: Sequence[str]) -> list[qm.Condition]:
    no_tenant = qm.IsEmptyCondition(is_empty=qm.PayloadField(key="tenant"))
    no_groups = qm.IsEmptyCondition(is_empty=qm.PayloadField(key="groups"))
    return [
        qm.Filter(should=[no_tenant, qm.FieldCondition(key="tenant", match=qm.MatchValue(value=tenant))])
        if tenant else no_tenant,
        qm.Filter(should=[no_groups, qm.FieldCondition(key="groups", match=qm.MatchAny(any=list(groups)))])
        if groups else no_groups,
    ]


def scope_filter(scope: Scope) -> qm.Filter:
    """The Scope as one qdrant-client filter (access, pipeline and payload matches ANDed)."""
    must: list[qm.Condition] = _access(scope.tenant, scope.groups)
    if scope.pipeline is not None:
        must.append(qm.FieldCondition(key="pipeline", match=qm.MatchValue(value=scope.pipeline)))
    for key, value in scope.match.items():
        match = qm.MatchAny(any=value) if isinstance(value, list) else qm.MatchValue(value=value)
        must.append(qm.FieldCondition(key=key, match=match))
    return qm.Filter(must=must)


def _pipeline(pipeline: str) -> qm.Filter:
    return qm.Filter(must=[qm.FieldCondition(key="pipeline", match=qm.MatchValue(value=pipeline))])


class ServerStore:
    """Store on a QdrantClient (server URL, or local mode for tests and migration); `close` closes it."""

    def __init__(self, client: QdrantClient, where: str = "qdrant") -> None:
        self.client = client
        self.where = where

    def _fail(self, collection: str, what: str, exc: Exception) -> StoreUnavailable:
        try:
            exists = self.client.collection_exists(collection)
        except Exception:
            exists = True
        if not exists:
            return CollectionMissing(f"collection {collection!r} does not exist: run ingestion first")
        return StoreUnavailable(f"vector store {self.where}: {what} failed: {exc}")

    def ensure_collection(self, collection: str, dimensions: int, sparse: bool = True) -> bool:
        try:
            return _ensure_collection(self.client, collection, dimensions, sparse)
        except CollectionMismatch as exc:
            raise StoreUnavailable(str(exc)) from exc

    def collection_exists(self, collection: str) -> bool:
        return bool(self.client.collection_exists(collection))

    def delete_collection(self, collection: str) -> bool:
        if not self.client.collection_exists(collection):
            return False
        return bool(self.client.delete_collection(collection))

    def upsert(self, collection: str, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        structs = [qm.PointStruct(id=p.id, payload=p.payload, vector={DENSE: p.dense} if p.sparse is None else {
            DENSE: p.dense, SPARSE: qm.SparseVector(indices=list(p.sparse[0]), values=list(p.sparse[1]))})
            for p in points]
        try:
            self.client.upsert(collection, points=structs, wait=True)
        except Exception as exc:
            raise self._fail(collection, "upsert", exc) from exc

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(collection, points_selector=qm.PointIdsList(points=list(ids)), wait=True)

    def delete_document(self, collection: str, pipeline: str, source_id: str) -> int:
        flt = qm.Filter(must=[qm.FieldCondition(key="pipeline", match=qm.MatchValue(value=pipeline)),
                              qm.FieldCondition(key="source_id", match=qm.MatchValue(value=source_id))])
        n = self.client.count(collection, count_filter=flt, exact=True).count
        self.client.delete(collection, points_selector=qm.FilterSelector(filter=flt), wait=True)
        return int(n)

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self.client.set_payload(collection, payload=payload, points=list(ids), wait=True)

    def sync_state(self, collection: str, pipeline: str, fields: Sequence[str]) -> SyncState:
        out: SyncState = {}
        offset = None
        while True:
            records, offset = self.client.scroll(collection, scroll_filter=_pipeline(pipeline), limit=1000,
                                                 offset=offset, with_payload=list(fields), with_vectors=False)
            for r in records:
                payload = r.payload or {}
                out.setdefault(str(payload.get("source_id", "")), []).append((str(r.id), payload))
            if offset is None:
                return out

    def dense_vectors(self, collection: str, ids: Sequence[str]) -> dict[str, list[float]]:
        if not ids:
            return {}
        got = self.client.retrieve(collection, ids=list(ids), with_vectors=[DENSE], with_payload=False)
        return {str(r.id): list(r.vector[DENSE]) for r in got if isinstance(r.vector, dict)}  # type: ignore[arg-type]

    def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        flt = scope_filter(query.scope)
        sparse = (qm.SparseVector(indices=list(query.sparse[0]), values=list(query.sparse[1]))
                  if query.sparse is not None and query.sparse[0] else None)
        try:
            if query.hybrid:
                # No filter on the fusion itself: both branches are filtered already.
                branches = [qm.Prefetch(query=query.dense, using=DENSE, limit=query.prefetch, filter=flt,
                                        score_threshold=query.score_threshold)] if query.dense is not None else []
                if sparse is not None:
                    branches.append(qm.Prefetch(query=sparse, using=SPARSE, limit=query.prefetch, filter=flt))
                if not branches:
                    return []
                result = self.client.query_points(collection, prefetch=branches,
                                                  query=qm.FusionQuery(fusion=qm.Fusion.RRF), limit=query.limit,
                                                  with_payload=True)
            elif query.dense is not None:
                result = self.client.query_points(collection, query=query.dense, using=DENSE, query_filter=flt,
                                                  limit=query.limit, score_threshold=query.score_threshold,
                                                  with_payload=True)
            elif sparse is not None:
                result = self.client.query_points(collection, query=sparse, using=SPARSE, query_filter=flt,
                                                  limit=query.limit, with_payload=True)
            else:
                return []
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise self._fail(collection, "query", exc) from exc
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in result.points]

    def points(self, collection: str, with_vectors: bool = True) -> list[ChunkPoint]:
        out: list[ChunkPoint] = []
        offset = None
        while True:
            records, offset = self.client.scroll(collection, limit=1000, offset=offset, with_payload=True,
                                                 with_vectors=with_vectors)
            for r in records:
                vec: Any = r.vector if isinstance(r.vector, dict) else {}
                sp = vec.get(SPARSE)
                out.append(ChunkPoint(id=str(r.id), payload=dict(r.payload or {}), dense=list(vec.get(DENSE, [])),
                                      sparse=(list(sp.indices), list(sp.values)) if sp is not None else None))
            if offset is None:
                return out

    def optimize(self, collection: str) -> None:  # the server's optimizers run by themselves
        pass

    def count(self, collection: str, pipeline: str | None = None) -> int:
        flt = _pipeline(pipeline) if pipeline is not None else None
        try:
            return int(self.client.count(collection, count_filter=flt, exact=True).count)
        except Exception as exc:
            raise self._fail(collection, "count", exc) from exc

    def close(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client.close()
