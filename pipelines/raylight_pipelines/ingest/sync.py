"""Idempotent, incremental sync of documents into a collection of the store (store.base.Store).

The collection itself is the only state: every point carries its document's `source_id`, `doc_hash`
(everything that determines the document's chunks) and `chunk_count`, so the points of one document are
its manifest. Point ids are uuid5(source id, chunk index, chunk hash), so the desired set of ids is a pure
function of the inputs. A run computes, per document, desired - present (embed and upsert),
present - desired (delete) and kept points whose doc_hash is stale (set_payload), in this order:

  1. upsert every missing point (new content first: readers never see a document vanish mid-update);
  2. stamp kept points with the new doc_hash/chunk_count;
  3. delete stale points, then the points of documents that are gone.

A document is unchanged only when all its points carry the new doc_hash and exactly the indexes
0..chunk_count-1; anything else (including the leftovers of a killed run) takes the full path, which
recomputes the desired set. So a run killed at any point and re-run converges to exactly the right
points. Vectors of chunks whose text did not change are reused from the old points (an edit re-embeds
only its new chunks even when chunk indexes shift).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from raylight_pipelines.embed import bm25
from raylight_pipelines.embed.embedders import Embedder
from raylight_pipelines.ingest.chunking import Tokenizer, chunk_document
from raylight_pipelines.ingest.documents import Document, Loaded
from raylight_pipelines.store.base import ChunkPoint, Store, SyncState

log = logging.getLogger(__name__)

SCHEMA = 2  # bump when payload layout or chunking rules change: every document is re-chunked
NAMESPACE = uuid.UUID("5b0a3f3e-0d6b-4c47-9a8e-7f2c1d9e4a10")
STATE_FIELDS = ["source_id", "source_key", "doc_hash", "chunk_index", "chunk_count", "text_hash"]


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    skipped: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    points_upserted: int = 0
    points_deleted: int = 0
    points: int = 0
    seen: int = 0  # inputs listed (documents, skipped and failed ones)
    workers: int = 0  # embedding actors on Ray Data; 0: embedded in this process
    seconds: float = 0.0  # the run's wall-clock time
    failures: list[dict[str, str]] = field(default_factory=list)  # {"source", "reason"}: could not be read
    skips: list[dict[str, str]] = field(default_factory=list)  # {"source", "reason"}: not a document

    def counts(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    def summary(self, max_bytes: int = 4096) -> dict[str, Any]:
        """The counts with as many of the skips and failures as fit in max_bytes of JSON (a Kubernetes
        termination message holds 4096); `listed` says whether every one is there."""
        out: dict[str, Any] = {k: v for k, v in self.counts().items() if not isinstance(v, list)}
        skips, failures = list(self.skips), list(self.failures)
        while True:
            out.update(skips=skips, failures=failures, listed=len(skips) + len(failures) == self.skipped + self.failed)
            if len(json.dumps(out).encode()) <= max_bytes or not (skips or failures):
                return out
            (skips if len(skips) >= len(failures) else failures).pop()

    def merge(self, other: SyncReport) -> None:
        for k, v in other.__dict__.items():
            setattr(self, k, max(getattr(self, k), v) if k == "workers" else getattr(self, k) + v)


@dataclass
class PendingPoint:
    id: str
    payload: dict[str, Any]
    passage: str  # what the embedder sees: heading path + chunk text
    vector: list[float] | None = None  # reused from an old point


Vectorize = Callable[[Sequence[PendingPoint]], Iterator[tuple[Sequence[PendingPoint], list[list[float]]]]]
Fault = Callable[[str], None]


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def doc_hash(doc: Document, size: int, overlap: int, tokenizer: str, model: str) -> str:
    return _sha([SCHEMA, doc.text, doc.title, doc.pages, doc.headings, doc.tenant, list(doc.groups),
                 doc.source_key, size, overlap, tokenizer, model])


def point_id(source_id: str, index: int, chunk_hash: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{source_id}\n{index}\n{chunk_hash}"))


def plan_points(doc: Document, pipeline: str, tok: Tokenizer, size: int, overlap: int, model: str,
                dhash: str) -> list[PendingPoint]:
    chunks = chunk_document(doc, tok, size, overlap)
    points = []
    for c in chunks:
        text_hash = _sha([model, c.passage])
        payload = {
            "pipeline": pipeline, "source_id": doc.source_id, "source_key": doc.source_key,
            "title": doc.title, "heading": c.heading, "text": c.text, "page": c.page,
            "start": c.start, "end": c.end, "tokens": c.tokens, "chunk_index": c.index,
            "tenant": doc.tenant, "groups": list(doc.groups), "text_hash": text_hash, "model": model,
        }
        pid = point_id(doc.source_id, c.index, _sha(payload))
        payload.update({"doc_hash": dhash, "chunk_count": len(chunks)})
        points.append(PendingPoint(pid, payload, c.passage))
    return points


def scan(store: Store, collection: str, pipeline: str) -> SyncState:
    """source_id -> [(point id, state payload)] for this pipeline's points."""
    return store.sync_state(collection, pipeline, STATE_FIELDS)


def is_current(present: list[tuple[str, dict[str, Any]]], dhash: str) -> bool:
    if not present or any(p.get("doc_hash") != dhash for _, p in present):
        return False
    count = present[0][1].get("chunk_count") or 0
    return sorted(int(p.get("chunk_index", -1)) for _, p in present) == list(range(count))


def local_vectorize(embedder: Embedder, batch_size: int = 64) -> Vectorize:
    def run(points: Sequence[PendingPoint]) -> Iterator[tuple[Sequence[PendingPoint], list[list[float]]]]:
        for i in range(0, len(points), batch_size):
            batch = points[i:i + batch_size]
            yield batch, embedder.embed([p.passage for p in batch])
    return run


def _struct(p: PendingPoint, vector: list[float]) -> ChunkPoint:
    return ChunkPoint(id=p.id, payload=p.payload, dense=list(vector), sparse=bm25.document_vector(p.passage))


def _batches(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class _Writer:
    """Upserts batches in order on one background thread; the first error stops it and is re-raised in
    the caller (at the next upsert or on exit), so nothing is written after a failure."""

    def __init__(self, store: Store, collection: str, write: Fault) -> None:
        self.store, self.collection, self.write = store, collection, write
        self.queue: queue.Queue[list[ChunkPoint] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="raylight-upsert", daemon=True)

    def _run(self) -> None:
        while (points := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.write("upsert")
                    self.store.upsert(self.collection, points)
                except BaseException as exc:  # handed to the caller's thread
                    self.error = exc

    def upsert(self, points: list[ChunkPoint]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(points)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


@dataclass
class DocPlan:
    """What one document needs: points to upsert (vectors reused where the text is unchanged), kept points
    to restamp, stale points to delete, and how it counts (added, updated, unchanged, failed, skipped)."""

    source_id: str
    outcome: str
    reason: str = ""
    new: list[PendingPoint] = field(default_factory=list)
    restamp: tuple[list[str], dict[str, Any]] | None = None
    stale: list[str] = field(default_factory=list)

    def count(self, report: SyncReport) -> None:
        if self.outcome in ("added", "updated", "unchanged"):
            setattr(report, self.outcome, getattr(report, self.outcome) + 1)
        elif self.outcome == "failed":
            report.failed += 1
            report.failures.append({"source": self.source_id, "reason": self.reason})
        else:
            report.skipped += 1
            report.skips.append({"source": self.source_id, "reason": self.reason})


def plan_document(store: Store, collection: str, doc: Document, present: list[tuple[str, dict[str, Any]]],
                  pipeline: str, tok: Tokenizer, size: int, overlap: int, model: str, tok_name: str) -> DocPlan:
    """One document against its points in the collection (`present`, from `scan`): the sync's per-document
    step, run in this process or in a Ray task. Reads old vectors to reuse; writes nothing."""
    dhash = doc_hash(doc, size, overlap, tok_name, model)
    if is_current(present, dhash):
        return DocPlan(doc.source_id, "unchanged")
    try:
        points = plan_points(doc, pipeline, tok, size, overlap, model, dhash)
    except Exception as exc:  # a document the chunker cannot handle must not stop the others
        return DocPlan(doc.source_id, "failed", f"cannot chunk: {exc}")
    if not points and not present:
        return DocPlan(doc.source_id, "skipped", "no text to index")
    present_ids = {pid: p for pid, p in present}
    desired = {p.id for p in points}
    reusable = {p.get("text_hash"): pid for pid, p in present}
    new = [p for p in points if p.id not in present_ids]
    old = [pid for pid in present_ids if pid not in desired]
    reuse = {p.id: reusable[p.payload["text_hash"]] for p in new if p.payload["text_hash"] in reusable}
    if reuse:
        vectors = store.dense_vectors(collection, sorted(set(reuse.values())))
        for p in new:
            if p.id in reuse and reuse[p.id] in vectors:
                p.vector = list(vectors[reuse[p.id]])
    kept = [p for p in points if p.id in present_ids and (
        present_ids[p.id].get("doc_hash") != dhash or present_ids[p.id].get("chunk_count") != len(points))]
    return DocPlan(doc.source_id, "updated" if present else "added", new=new, stale=old,
                   restamp=([p.id for p in kept], {"doc_hash": dhash, "chunk_count": len(points)}) if kept else None)


def finish(store: Store, collection: str, pipeline: str, report: SyncReport, existing: dict[str, list[Any]],
           restamp: list[tuple[list[str], dict[str, Any]]], stale: list[str], seen: set[str], protected: set[str],
           complete: set[str], keys: set[str], write: Fault) -> None:
    """Steps 2 and 3 of the module doc, once every upsert has landed: stamp kept points of changed
    documents, delete stale chunks, then documents that are gone (only from sources that were fully listed,
    never a failed document's last good chunks); then count the pipeline's points."""
    for ids, stamp in restamp:
        write("set_payload")
        store.set_payload(collection, ids, stamp)
    stale = list(stale)
    for source_id, present in existing.items():
        if source_id in seen or source_id in protected:
            continue
        key = present[0][1].get("source_key")
        if key in complete or key not in keys:
            stale += [pid for pid, _ in present]
            report.deleted += 1
    for ids in _batches(stale, 1000):
        write("delete")
        store.delete(collection, list(ids))
        report.points_deleted += len(ids)
    if report.points_upserted or report.points_deleted or restamp:
        store.optimize(collection)  # compact this run's writes (the embedded engine searches faster after)
    report.points = store.count(collection, pipeline)


def sync(store: Store, collection: str, pipeline: str, loaded: Loaded, embedder: Embedder, tok: Tokenizer,
         size: int, overlap: int, *, vectorize: Vectorize | None = None, batch_size: int = 64,
         progress: Callable[[int, int], None] | None = None, fault: Fault | None = None) -> SyncReport:
    """Make the collection hold exactly the chunks of `loaded` for this pipeline; see the module doc."""
    report = SyncReport(failed=len(loaded.failures), skipped=len(loaded.skipped),
                        seen=len(loaded.documents) + len(loaded.failures) + len(loaded.skipped))
    report.failures = [{"source": f.source_id, "reason": f.reason} for f in loaded.failures]
    report.skips = [{"source": s.source_id, "reason": s.reason} for s in loaded.skipped]
    store.ensure_collection(collection, embedder.dimensions)
    existing = scan(store, collection, pipeline)
    tok_name = f"{tok.name}/{tok.max_tokens}"
    model = embedder.model_id

    def write(stage: str) -> None:
        if fault is not None:
            fault(stage)

    missing: list[PendingPoint] = []
    restamp: list[tuple[list[str], dict[str, Any]]] = []
    stale: list[str] = []
    seen: set[str] = set()
    protected = {f.source_id for f in loaded.failures}  # keep the last good chunks of failed documents
    for doc in loaded.documents:
        if doc.source_id in seen:
            report.skipped += 1
            report.skips.append({"source": doc.source_id, "reason": "listed twice; first one kept"})
            continue
        seen.add(doc.source_id)
        plan = plan_document(store, collection, doc, existing.get(doc.source_id, []), pipeline, tok, size,
                             overlap, model, tok_name)
        plan.count(report)
        if plan.outcome == "failed":
            protected.add(doc.source_id)
        missing += plan.new
        if plan.restamp:
            restamp.append(plan.restamp)
        stale += plan.stale

    # 1. upsert missing points: reused vectors first (no model call), then freshly embedded ones. A writer
    #    thread does the upserts in order while the next batch is embedded (an embedded store fsyncs each
    #    point, which is I/O the model need not wait for).
    reused = [p for p in missing if p.vector is not None]
    # similar lengths in one model batch waste less on padding (order of upserts does not matter)
    to_embed = sorted((p for p in missing if p.vector is None), key=lambda p: len(p.passage))
    report.chunks_reused = len(reused)
    with _Writer(store, collection, write) as writer:
        for i in range(0, len(reused), batch_size):
            writer.upsert([_struct(p, p.vector or []) for p in reused[i:i + batch_size]])
        report.points_upserted += len(reused)
        done = 0
        for embedded, embeddings in (vectorize or local_vectorize(embedder, batch_size))(to_embed):
            writer.upsert([_struct(p, v) for p, v in zip(embedded, embeddings, strict=True)])
            done += len(embedded)
            report.chunks_embedded += len(embedded)
            report.points_upserted += len(embedded)
            if progress:
                progress(done, len(to_embed))
    # 2. and 3.
    finish(store, collection, pipeline, report, existing, restamp, stale, seen, protected, loaded.complete,
           loaded.keys, write)
    return report
