"""The Store facade on Qdrant's own engine in this process (qdrant-edge-py): the one-machine default.

Layout: a root folder; each collection is `ROOT/<collection>/` with `collection.json` (what Raylight created:
dense size, sparse on/off) and `shard/` (one EdgeShard: segments, payload indexes, write-ahead log).
What the engine lacks, and how this module deals with it:

- no in-memory mode: tests use a temporary folder;
- no collections: one shard per collection folder;
- one process per folder (the write-ahead log is locked; a second open fails with WouldBlock): on one
  machine the platform's Ray actor owns the folder (store.qdrant.StoreActor) and everybody else goes
  through it;
- HNSW only after a blocking `optimize()`, and its recall on random 384-d vectors was poor (0.27 for the
  dense branch at 30k points): this backend builds no graph (HNSW m = 0). Every search is exact (a scan of
  the points the payload indexes let through); `optimize()` after each ingestion run (sync.finish) merges
  the writes into two indexed segments, about 5x faster to scan and seconds to build (1.7 s at 30k
  points). The dense scan, most of a hybrid query's time, reads int8 scalar-quantized copies of the vectors
  (kept in RAM, a quarter of the float32 size) and rescores OVERSAMPLING x the limit candidates with the
  original vectors: about 1.5x faster at 100k points, with the same top 10 as the float scan on the bench's
  corpus (recall@10 1.0). Numbers in docs/performance.md ("Store").

A folder written by qdrant-client's local mode (Raylight before this backend: `meta.json` and
`collection/`) is migrated on open: moved aside to `ROOT.local-mode`, its points copied (ids, payloads,
vectors) into edge shards, then marked done; an interrupted migration restarts from the copy.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from raylight_pipelines.store.base import (
    DENSE,
    PAYLOAD_INDEXES,
    RRF_K,
    SPARSE,
    ChunkPoint,
    CollectionMissing,
    Hit,
    Scope,
    SearchQuery,
    StoreUnavailable,
    SyncState,
)

log = logging.getLogger(__name__)

__all__ = ["EdgeStore", "migrate_local_mode", "scope_filter"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
LAYOUT_FILE = "collection.json"
MIGRATED_SUFFIX = ".local-mode"
MIGRATION_MARK = ".migrated-from-local-mode"
# The dense scan reads int8 copies, then rescores this many times the wanted number of candidates with the
# float vectors (at 2x the top 10 differed from the float scan's on 1 query in 15 at 100k points; at 3x none).
OVERSAMPLING = 3.0
_QUANTIZED = qe.SearchParams(quantization=qe.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING))


def _access(tenant: str | None, groups: Sequence[str]) -> list[Any]:
    no_tenant = qe.IsEmptyCondition(key="tenant")
    no_groups = qe.IsEmptyCondition(key="groups")
    return [
        qe.Filter(should=[no_tenant, qe.FieldCondition(key="tenant", match=qe.MatchValue(tenant))])
        if tenant else no_tenant,
        qe.Filter(should=[no_groups, qe.FieldCondition(key="groups", match=qe.MatchAny(list(groups)))])
        if groups else no_groups,
    ]


def scope_filter(scope: Scope) -> qe.Filter:
    """The Scope as one engine filter (the same conditions as store.server.scope_filter)."""
    must: list[Any] = _access(scope.tenant, scope.groups)
    if scope.pipeline is not None:
        must.append(qe.FieldCondition(key="pipeline", match=qe.MatchValue(scope.pipeline)))
    for key, value in scope.match.items():
        match = qe.MatchAny(value) if isinstance(value, list) else qe.MatchValue(value)
        must.append(qe.FieldCondition(key=key, match=match))
    return qe.Filter(must=must)


def _pipeline(pipeline: str) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(key="pipeline", match=qe.MatchValue(pipeline))])


def _index_schema(kind: str) -> Any:
    if kind == "tenant":
        return qe.KeywordIndexParams(is_tenant=True)
    return qe.PayloadSchemaType.Integer if kind == "integer" else qe.PayloadSchemaType.Keyword


def _point(p: ChunkPoint) -> qe.Point:
    vector: dict[str, Any] = {DENSE: list(p.dense)}
    if p.sparse is not None:
        vector[SPARSE] = qe.SparseVector(indices=list(p.sparse[0]), values=list(p.sparse[1]))
    return qe.Point(id=p.id, vector=vector, payload=p.payload)


class EdgeStore:
    """Store on a folder of edge shards (see the module doc); this process must be the folder's only user.
    Thread-safe: writes take a lock, reads go straight to the engine."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        migrate_local_mode(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ collections

    def _dir(self, collection: str) -> Path:
        if not _NAME.match(collection):
            raise ValueError(f"collection {collection!r}: letters, digits, '_', '.', '-' only (a folder name)")
        return self.root / collection

    def _layout(self, collection: str) -> dict[str, Any] | None:
        path = self._dir(collection) / LAYOUT_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def _shard(self, collection: str) -> qe.EdgeShard:
        shard = self._shards.get(collection)
        if shard is not None:
            return shard
        with self._lock:
            if collection in self._shards:
                return self._shards[collection]
            if self._layout(collection) is None:
                raise CollectionMissing(f"collection {collection!r} does not exist: run ingestion first")
            try:
                shard = qe.EdgeShard.load(str(self._dir(collection) / "shard"))
            except Exception as exc:
                raise StoreUnavailable(f"cannot open the embedded store {self._dir(collection)}: {exc} (one "
                                       "process may own it: is a platform running? `raylight down` stops it)") from exc
            self._shards[collection] = shard
            return shard

    def ensure_collection(self, collection: str, dimensions: int, sparse: bool = True) -> bool:
        with self._lock:
            layout = self._layout(collection)
            if layout is not None:
                if layout["dimensions"] != dimensions:
                    raise StoreUnavailable(
                        f"collection {collection!r} has dense vectors of size {layout['dimensions']}, the embedder "
                        f"makes {dimensions}; use another collection or delete it")
                self._shard(collection)
                return False
            folder = self._dir(collection)
            if folder.exists():  # a creation that did not finish: nothing in it is committed
                shutil.rmtree(folder)
            config = qe.EdgeConfig(
                vectors={DENSE: qe.EdgeVectorParams(
                    size=dimensions, distance=qe.Distance.Cosine,
                    quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True))},
                sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
                # m = 0: no HNSW graph, exact search (see the module doc); two segments: one per core
                hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10),
                optimizers=qe.EdgeOptimizersConfig(default_segment_number=2))
            try:
                shard = qe.EdgeShard.create(str(folder / "shard"), config)
                for field, kind in PAYLOAD_INDEXES.items():
                    shard.update(qe.UpdateOperation.create_field_index(field, _index_schema(kind)))
                shard.flush()
            except Exception as exc:
                raise StoreUnavailable(f"cannot create collection {collection!r} in {folder}: {exc}") from exc
            (folder / LAYOUT_FILE).write_text(json.dumps({"dimensions": dimensions, "sparse": sparse,
                                                          "payload_indexes": PAYLOAD_INDEXES}))
            self._shards[collection] = shard
            return True

    def collection_exists(self, collection: str) -> bool:
        return self._layout(collection) is not None

    def delete_collection(self, collection: str) -> bool:
        with self._lock:
            folder = self._dir(collection)
            if not folder.exists():
                return False
            shard = self._shards.pop(collection, None)
            if shard is not None:
                shard.close()
            (folder / LAYOUT_FILE).unlink(missing_ok=True)  # first: a half-deleted folder reads as absent
            shutil.rmtree(folder)
            return True

    # ------------------------------------------------------------------ points

    def _update(self, collection: str, what: str, op: Any) -> None:
        shard = self._shard(collection)
        with self._lock:
            try:
                shard.update(op)
            except Exception as exc:
                raise StoreUnavailable(f"embedded store: {what} in {collection!r} failed: {exc}") from exc

    def upsert(self, collection: str, points: Sequence[ChunkPoint]) -> None:
        if points:
            self._update(collection, "upsert", qe.UpdateOperation.upsert_points([_point(p) for p in points]))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._update(collection, "delete", qe.UpdateOperation.delete_points(list(ids)))

    def delete_document(self, collection: str, pipeline: str, source_id: str) -> int:
        flt = qe.Filter(must=[qe.FieldCondition(key="pipeline", match=qe.MatchValue(pipeline)),
                              qe.FieldCondition(key="source_id", match=qe.MatchValue(source_id))])
        with self._lock:
            n = self._shard(collection).count(qe.CountRequest(exact=True, filter=flt))
            self._update(collection, "delete", qe.UpdateOperation.delete_points_by_filter(flt))
        return int(n)

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self._update(collection, "set_payload", qe.UpdateOperation.set_payload(list(ids), payload))

    def sync_state(self, collection: str, pipeline: str, fields: Sequence[str]) -> SyncState:
        shard = self._shard(collection)
        out: SyncState = {}
        offset: Any = None
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=1000, filter=_pipeline(pipeline),
                                                            with_payload=list(fields), with_vector=False))
            for r in records:
                payload = dict(r.payload or {})
                out.setdefault(str(payload.get("source_id", "")), []).append((str(r.id), payload))
            if offset is None:
                return out

    def dense_vectors(self, collection: str, ids: Sequence[str]) -> dict[str, list[float]]:
        if not ids:
            return {}
        got = self._shard(collection).retrieve(list(ids), with_payload=False, with_vector=[DENSE])
        return {str(r.id): list(r.vector[DENSE]) for r in got if isinstance(r.vector, dict)}  # type: ignore[arg-type]

    def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        shard = self._shard(collection)
        flt = scope_filter(query.scope)
        sparse = (qe.SparseVector(indices=list(query.sparse[0]), values=list(query.sparse[1]))
                  if query.sparse is not None and query.sparse[0] else None)
        if query.hybrid:
            branches = []
            if query.dense is not None:
                branches.append(qe.Prefetch(limit=query.prefetch, filter=flt, score_threshold=query.score_threshold,
                                            query=qe.Query.Nearest(list(query.dense), using=DENSE),
                                            params=_QUANTIZED))
            if sparse is not None:
                branches.append(qe.Prefetch(limit=query.prefetch, query=qe.Query.Nearest(sparse, using=SPARSE),
                                            filter=flt))
            if not branches:
                return []
            request = qe.QueryRequest(limit=query.limit, prefetches=branches, query=qe.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]
                                      with_payload=True)
        elif query.dense is not None:
            request = qe.QueryRequest(limit=query.limit, query=qe.Query.Nearest(list(query.dense), using=DENSE),
                                      filter=flt, score_threshold=query.score_threshold, with_payload=True,
                                      params=_QUANTIZED)
        elif sparse is not None:
            request = qe.QueryRequest(limit=query.limit, query=qe.Query.Nearest(sparse, using=SPARSE), filter=flt,
                                      with_payload=True)
        else:
            return []
        try:
            points = shard.query(request)
        except Exception as exc:
            raise StoreUnavailable(f"embedded store: query on {collection!r} failed: {exc}") from exc
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def points(self, collection: str, with_vectors: bool = True) -> list[ChunkPoint]:
        shard = self._shard(collection)
        out: list[ChunkPoint] = []
        offset: Any = None
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=1000, with_payload=True,
                                                            with_vector=with_vectors))
            for r in records:
                vec: Any = r.vector if isinstance(r.vector, dict) else {}
                sp = vec.get(SPARSE)
                out.append(ChunkPoint(id=str(r.id), payload=dict(r.payload or {}), dense=list(vec.get(DENSE, [])),
                                      sparse=(list(sp.indices), list(sp.values)) if sp is not None else None))
            if offset is None:
                return out

    def optimize(self, collection: str) -> None:
        shard = self._shard(collection)
        with self._lock:
            try:
                shard.optimize()
            except Exception as exc:
                raise StoreUnavailable(f"embedded store: optimizing {collection!r} failed: {exc}") from exc

    def count(self, collection: str, pipeline: str | None = None) -> int:
        flt = _pipeline(pipeline) if pipeline is not None else None
        return int(self._shard(collection).count(qe.CountRequest(exact=True, filter=flt)))

    def flush(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()


def _is_local_mode(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "collection").is_dir()


def migrate_local_mode(root: Path) -> bool:
    """Convert a folder written by qdrant-client's local mode at `root` into edge shards there (see the module
    doc); True when a migration ran. The old folder stays at ROOT.local-mode for the user to delete."""
    root = Path(root)
    old = root.with_name(root.name + MIGRATED_SUFFIX)
    if _is_local_mode(root):
        if old.exists():
            raise StoreUnavailable(f"cannot migrate {root}: {old} exists already; move one of them away")
        root.rename(old)
    elif not (old.exists() and _is_local_mode(old) and not (root / MIGRATION_MARK).exists()):
        return False
    log.warning("migrating the vector store %s (qdrant-client local mode) to the embedded Qdrant engine; the old "
                "folder is kept at %s", root, old)
    from qdrant_client import QdrantClient

    from raylight_pipelines.store.server import ServerStore

    if root.exists():  # an interrupted migration: start over from the old folder
        shutil.rmtree(root)
    root.mkdir(parents=True)
    source = ServerStore(QdrantClient(path=str(old)), where=str(old))
    target = EdgeStore.__new__(EdgeStore)
    target.root, target._shards, target._lock = root, {}, threading.RLock()
    moved = 0
    try:
        for c in source.client.get_collections().collections:
            params = source.client.get_collection(c.name).config.params
            vectors = params.vectors
            if not isinstance(vectors, dict) or DENSE not in vectors:
                raise StoreUnavailable(f"cannot migrate collection {c.name!r} in {old}: it has no {DENSE!r} vector "
                                       "(not written by Raylight); move the folder away")
            target.ensure_collection(c.name, vectors[DENSE].size, sparse=bool(params.sparse_vectors))
            points = source.points(c.name)
            for i in range(0, len(points), 512):
                target.upsert(c.name, points[i:i + 512])
            moved += len(points)
    finally:
        source.close()
        target.close()
    (root / MIGRATION_MARK).write_text(json.dumps({"from": str(old), "points": moved}))
    log.warning("migrated %d points from %s; delete that folder when you no longer need it", moved, old)
    return True
