"""Opening the store: a StoreConnection -> a `Store` (see store.base for the operations).

- `url`: a Qdrant server through qdrant-client (ServerStore), the API key from `$api_key_env`;
- `actor`: the named Ray actor that owns an embedded folder on one machine (StoreProxy);
- `path`: the embedded engine on that folder, owned by this process (EdgeStore).

Why the actor stays: the embedded engine admits one process per folder (its write-ahead log is locked), and
on one machine several processes use the store at once (the agent's Serve replicas, `raylight search`,
Ray Data's writers), so one actor owns the folder and the others send it the facade's operations (one
round trip each, about a millisecond here).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from raylight.api.connections import StoreConnection
from raylight.api.names import RAY_NAMESPACE

from raylight_pipelines.store.base import (
    DENSE,
    SPARSE,
    ChunkPoint,
    CollectionMissing,
    Hit,
    Scope,
    SearchQuery,
    Store,
    StoreUnavailable,
    SyncState,
)

log = logging.getLogger(__name__)

__all__ = ["DENSE", "SPARSE", "ChunkPoint", "CollectionMissing", "Hit", "Scope", "SearchQuery", "Store",
           "StoreActor", "StoreProxy", "StoreUnavailable", "connect", "start_store_actor"]

_OPERATIONS = frozenset({"ensure_collection", "collection_exists", "delete_collection", "upsert", "delete",
                         "delete_document", "set_payload", "sync_state", "dense_vectors", "search", "points",
                         "optimize", "count"})


class StoreActor:
    """Owns one EdgeStore folder inside a Ray actor; `call` runs one of the facade's operations."""

    def __init__(self, path: str) -> None:
        from raylight_pipelines.store.edge import EdgeStore

        self.store = EdgeStore(path)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method not in _OPERATIONS:
            raise AttributeError(f"{method} is not a store operation")
        return getattr(self.store, method)(*args, **kwargs)

    def ping(self) -> bool:
        return True

    def flush(self) -> None:
        self.store.flush()


class StoreProxy:
    """A Store whose operations run in the owning actor (StoreUnavailable when the actor is gone)."""

    def __init__(self, actor: Any, name: str) -> None:
        self._actor = actor
        self._name = name

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        try:
            return ray.get(self._actor.call.remote(method, *args))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            raise StoreUnavailable(f"store actor {self._name!r} is not running: {exc}") from exc
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None

    def ensure_collection(self, collection: str, dimensions: int, sparse: bool = True) -> bool:
        return bool(self._call("ensure_collection", collection, dimensions, sparse))

    def collection_exists(self, collection: str) -> bool:
        return bool(self._call("collection_exists", collection))

    def delete_collection(self, collection: str) -> bool:
        return bool(self._call("delete_collection", collection))

    def upsert(self, collection: str, points: Sequence[ChunkPoint]) -> None:
        self._call("upsert", collection, list(points))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self._call("delete", collection, list(ids))

    def delete_document(self, collection: str, pipeline: str, source_id: str) -> int:
        return int(self._call("delete_document", collection, pipeline, source_id))

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        self._call("set_payload", collection, list(ids), payload)

    def sync_state(self, collection: str, pipeline: str, fields: Sequence[str]) -> SyncState:
        out: SyncState = self._call("sync_state", collection, pipeline, list(fields))
        return out

    def dense_vectors(self, collection: str, ids: Sequence[str]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = self._call("dense_vectors", collection, list(ids))
        return out

    def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        out: list[Hit] = self._call("search", collection, query)
        return out

    def points(self, collection: str, with_vectors: bool = True) -> list[ChunkPoint]:
        out: list[ChunkPoint] = self._call("points", collection, with_vectors)
        return out

    def optimize(self, collection: str) -> None:
        self._call("optimize", collection)

    def count(self, collection: str, pipeline: str | None = None) -> int:
        return int(self._call("count", collection, pipeline))

    def close(self) -> None:  # the actor keeps the store open for the others
        pass


def start_store_actor(name: str, path: str) -> Any:
    """Start (or find) the detached actor that owns the embedded store at path; needs ray.init first."""
    import ray

    cls: Any = ray.remote(StoreActor)
    actor = cls.options(name=name, namespace=RAY_NAMESPACE, lifetime="detached", get_if_exists=True,
                        num_cpus=0, max_restarts=-1, max_concurrency=1).remote(str(path))
    ray.get(actor.ping.remote())
    return actor


def connect(conn: StoreConnection) -> Store:
    """A StoreConnection -> a Store (see the module doc). actor: this process must have joined that Ray
    cluster first (the local layer does). Raises StoreUnavailable naming what could not be opened, and
    ValueError when the connection names none of url, actor, path (the embedded engine has no in-memory
    mode: give it a folder)."""
    try:
        if conn.actor:
            import ray

            if not ray.is_initialized():
                raise StoreUnavailable(f"the vector store is the Ray actor {conn.actor!r}: this process must join "
                                       "the Ray cluster that runs the store actor first")
            try:
                actor = ray.get_actor(conn.actor, namespace=RAY_NAMESPACE)
            except ValueError as exc:
                raise StoreUnavailable(f"the store actor {conn.actor!r} is not running (is the local platform "
                                       "up? `raylight down` clears stale state)") from exc
            return StoreProxy(actor, conn.actor)
        if conn.url:
            from qdrant_client import QdrantClient

            from raylight_pipelines.store.server import ServerStore

            api_key = os.environ.get(conn.api_key_env) if conn.api_key_env else None
            if conn.api_key_env and not api_key:
                log.warning("store API key variable %s is not set", conn.api_key_env)
            return ServerStore(QdrantClient(url=conn.url, api_key=api_key, timeout=30), where=conn.url)
        if conn.path:
            from raylight_pipelines.store.edge import EdgeStore

            return EdgeStore(conn.path)
    except StoreUnavailable:
        raise
    except Exception as exc:
        where = conn.actor or conn.url or conn.path
        raise StoreUnavailable(f"cannot open the vector store {where}: {exc}") from exc
    raise ValueError(f"store for collection {conn.collection!r}: set one of url, actor, path")
