"""Qdrant, one code path: an embedded folder, a server (URL + API key), or a named Ray actor that owns
the embedded folder on one machine (an embedded store admits one process, so everybody else goes
through the actor with the same qdrant-client method names).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from raylight.api.connections import StoreConnection
from raylight.api.names import RAY_NAMESPACE
from raylight.qdrant_layout import DENSE, SPARSE, CollectionMismatch
from raylight.qdrant_layout import ensure_collection as _ensure_collection

log = logging.getLogger(__name__)

__all__ = ["DENSE", "SPARSE", "StoreUnavailable", "connect", "ensure_collection"]


class StoreUnavailable(RuntimeError):
    """The vector store cannot be reached or refused the request (the agent answers 503)."""


class CollectionMissing(StoreUnavailable):
    """The collection does not exist yet (nothing ingested)."""


class StoreActor:
    """Owns one embedded QdrantClient(path) inside a Ray actor; `call` runs any client method."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.client = QdrantClient(path=path)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method.startswith("_") or method in ("close",):
            raise AttributeError(f"{method} is not callable through the store actor")
        return getattr(self.client, method)(*args, **kwargs)

    def ping(self) -> bool:
        return True


class StoreProxy:
    """Looks like a QdrantClient; each method call is a round trip to the owning actor."""

    def __init__(self, actor: Any, name: str) -> None:
        self._actor = actor
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            import ray

            try:
                return ray.get(self._actor.call.remote(method, *args, **kwargs))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                raise StoreUnavailable(f"store actor {self._name!r} is not running: {exc}") from exc
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None

        return call

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


def connect(conn: StoreConnection) -> Any:
    """A StoreConnection -> a client with qdrant-client's methods.

    actor set: the named Ray actor (this process must have joined that Ray cluster first: the local layer
    does); url set: a server, the API key from the environment variable api_key_env; path set: the
    embedded folder (one process only); none: an in-memory store.
    """
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
            api_key = os.environ.get(conn.api_key_env) if conn.api_key_env else None
            if conn.api_key_env and not api_key:
                log.warning("store API key variable %s is not set", conn.api_key_env)
            return QdrantClient(url=conn.url, api_key=api_key, timeout=30)
        if conn.path:
            os.makedirs(conn.path, exist_ok=True)
            return QdrantClient(path=conn.path)
        return QdrantClient(":memory:")
    except StoreUnavailable:
        raise
    except Exception as exc:
        where = conn.actor or conn.url or conn.path
        raise StoreUnavailable(f"cannot open the vector store {where}: {exc}") from exc


def ensure_collection(client: Any, collection: str, dimensions: int, sparse: bool = True) -> bool:
    """raylight.qdrant_layout.ensure_collection, with a size mismatch reported as StoreUnavailable."""
    try:
        return _ensure_collection(client, collection, dimensions, sparse)
    except CollectionMismatch as exc:
        raise StoreUnavailable(str(exc)) from exc


def access_conditions(tenant: str | None, groups: tuple[str, ...] | list[str]) -> list[qm.Condition]:
    """Chunks a caller may see, as conditions that must all hold: no tenant or the caller's tenant, and no
    groups or one of the caller's. An anonymous caller (no tenant, no groups) sees only public chunks.
    A side the caller has nothing for is one flat condition, not a one-branch `should` (the embedded store
    evaluates filters point by point in Python, and nesting costs there)."""
    no_tenant = qm.IsEmptyCondition(is_empty=qm.PayloadField(key="tenant"))
    no_groups = qm.IsEmptyCondition(is_empty=qm.PayloadField(key="groups"))
    return [
        qm.Filter(should=[no_tenant, qm.FieldCondition(key="tenant", match=qm.MatchValue(value=tenant))])
        if tenant else no_tenant,
        qm.Filter(should=[no_groups, qm.FieldCondition(key="groups", match=qm.MatchAny(any=list(groups)))])
        if groups else no_groups,
    ]
