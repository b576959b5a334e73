"""Retrieval for agents, the search API and `raylight search`: dense or hybrid (dense + BM25, RRF fusion)
queries with the caller's tenant and groups applied inside the Qdrant filter, optionally reranked by a
cross-encoder (the best `retrieval.rerank.candidates` rescored, the top k of them kept)."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from raylight.api.connections import Connections
from raylight.api.types import PipelineSpec, Retrieval

from raylight_pipelines import telemetry
from raylight_pipelines.embed import bm25
from raylight_pipelines.embed.embedders import Embedder, EmbedderError, from_connection
from raylight_pipelines.retrieval import rerankers
from raylight_pipelines.retrieval.rerankers import Reranker, RerankerError
from raylight_pipelines.store.qdrant import (
    CollectionMissing,
    Hit,
    Scope,
    SearchQuery,
    Store,
    StoreUnavailable,
    connect,
)

log = logging.getLogger(__name__)

__all__ = ["Caller", "CollectionMissing", "RetrievedChunk", "Retriever", "StoreUnavailable", "open_retriever",
           "standalone_query"]

PREFETCH_FACTOR = 4  # each branch of a hybrid query looks this many times deeper than top_k
# Chunk metadata a search may filter on (request name -> payload field). Access fields (tenant, groups,
# pipeline) are not here: they come from the caller's identity, never from the request.
FILTER_FIELDS = {"source": "source_id", "title": "title", "heading": "heading", "page": "page"}
FilterValue = str | int | list[str] | list[int]


# Words by which a follow-up leans on what was said before ("How much compute does it save?").
_ANAPHORA = frozenset({"it", "its", "it's", "they", "them", "their", "this", "that", "these", "those", "he",
                       "she", "his", "her", "there", "one", "ones", "same", "above", "former", "latter"})
_FUNCTION_WORDS = frozenset({"and", "the", "what", "how", "why", "when", "where", "which", "who", "does", "did",
                             "can", "could", "would", "should", "about", "for", "with", "from", "are", "was",
                             "were", "has", "have", "not", "but", "also", "then", "much", "many"})
_WORD = re.compile(r"[a-z0-9']+")


def standalone_query(question: str, history: Sequence[str]) -> str:
    """The query to search for a question asked in a conversation (`history`: the earlier user turns,
    oldest first). A follow-up that refers back ("it", "that", "those", ...) or is too short to stand alone
    (fewer than two content words) gets the previous user turn prepended, so "How much compute does it save?"
    after "What is LoRA?" searches "What is LoRA? How much compute does it save?". Deterministic: no
    model call, so it costs nothing and cannot invent a topic."""
    if not history:
        return question
    words = _WORD.findall(question.lower())
    content = [w for w in words if len(w) > 2 and w not in _FUNCTION_WORDS]
    if len(content) >= 2 and not _ANAPHORA.intersection(words):
        return question
    return f"{history[-1].strip()} {question.strip()}"


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
    def __init__(self, store: Store, collection: str, embedder: Embedder, retrieval: Retrieval,
                 pipeline: str | None = None, reranker: Reranker | None = None) -> None:
        self.store = store
        self.collection = collection
        self.embedder = embedder
        self.retrieval = retrieval
        self.pipeline = pipeline
        self.reranker = reranker  # used when retrieval.rerank is set

    def scope(self, caller: Caller | None, filters: dict[str, FilterValue] | None = None) -> Scope:
        """The caller's access, this pipeline's points, and the request's metadata filters (ANDed).
        Raises ValueError naming an unknown filter field."""
        caller = caller or Caller()
        return Scope(pipeline=self.pipeline, tenant=caller.tenant, groups=tuple(caller.groups),
                     match=metadata_match(filters or {}))

    def search(self, query: str, caller: Caller | None = None, top_k: int | None = None,
               hybrid: bool | None = None, filters: dict[str, FilterValue] | None = None,
               rerank: bool | None = None) -> list[RetrievedChunk]:
        """The top_k chunks the caller may see for `query`; `hybrid` and `rerank` override the pipeline's
        settings (None: as configured), `filters` as in FILTER_FIELDS. Raises StoreUnavailable (also when the
        embedder or reranker fails; CollectionMissing before anything was ingested), ValueError for a rerank
        the pipeline has no reranker for."""
        top = top_k or self.retrieval.top_k
        use_hybrid = self.retrieval.hybrid if hybrid is None else hybrid
        reranking = self.retrieval.rerank if self.reranker is not None else None
        use_rerank = reranking is not None if rerank is None else rerank
        if use_rerank and reranking is None:
            raise ValueError("rerank: this pipeline sets no retrieval.rerank")
        k = max(top, reranking.candidates) if use_rerank and reranking else top
        scope = self.scope(caller, filters)
        try:
            with telemetry.stage(self.pipeline, "embed"):
                dense = self.embedder.embed([query])[0]
        except EmbedderError as exc:
            raise StoreUnavailable(f"cannot embed the query: {exc}") from exc
        if caller is not None and (caller.tenant or caller.groups):
            telemetry.AGENT_ACL_FILTERED.labels(self.pipeline or "").inc()
        request = SearchQuery(dense=list(dense), sparse=bm25.query_vector(query) if use_hybrid else None,
                              hybrid=bool(use_hybrid), limit=k, prefetch=k * PREFETCH_FACTOR,
                              score_threshold=self.retrieval.score_threshold, scope=scope)
        try:
            with telemetry.stage(self.pipeline, "search", hybrid=bool(use_hybrid), top_k=k):
                hits = self.store.search(self.collection, request)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"vector store query failed: {exc}") from exc
        # Equal scores (RRF gives two chunks that top one branch each the same) in a fixed order, whatever order
        # the engine's segments return them in: the same question gets the same sources, citations and answer.
        chunks = [_chunk(h) for h in sorted(hits, key=lambda h: (-h.score, h.id))]
        if use_rerank and self.reranker is not None:
            with telemetry.stage(self.pipeline, "rerank", candidates=len(chunks)):
                chunks = _reranked(self.reranker, query, chunks)
        return chunks[:top]

    def ready(self) -> tuple[bool, str]:
        """(ok, reason); the reason names no collection, count or URL (readiness probes are public)."""
        try:
            if not self.store.collection_exists(self.collection):
                return False, "nothing ingested yet: the collection does not exist"
        except Exception as exc:
            log.warning("vector store readiness check failed: %r", exc)
            return False, f"the vector store does not answer: {type(exc).__name__}"
        return True, "the vector store answers"


def _reranked(reranker: Reranker, query: str, chunks: list[RetrievedChunk]) -> list[RetrievedChunk]:
    """The chunks best first by the reranker's score (which becomes their score)."""
    try:
        scores = reranker.scores(query, [c.text for c in chunks])
    except RerankerError as exc:
        raise StoreUnavailable(f"cannot rerank: {exc}") from exc
    ranked = sorted(zip(scores, range(len(chunks)), chunks, strict=True), key=lambda t: (-t[0], t[1]))
    return [dataclasses.replace(c, score=s) for s, _, c in ranked]


def metadata_match(filters: dict[str, FilterValue]) -> dict[str, FilterValue]:
    """Request filters -> payload field matches (a value must match exactly, a list matches any of its values).
    Raises ValueError naming an unknown field."""
    match: dict[str, FilterValue] = {}
    for name, value in filters.items():
        if name not in FILTER_FIELDS:
            raise ValueError(f"filters.{name}: unknown field; one of {', '.join(FILTER_FIELDS)}")
        match[FILTER_FIELDS[name]] = value
    return match


def _chunk(hit: Hit) -> RetrievedChunk:
    p = hit.payload
    return RetrievedChunk(id=hit.id, source=str(p.get("source_id", "")), title=p.get("title"),
                          heading=p.get("heading"), text=str(p.get("text", "")), score=hit.score,
                          page=p.get("page"), start=int(p.get("start", 0)), end=int(p.get("end", 0)))


def open_retriever(spec: PipelineSpec, connections: Connections, embedder: Embedder | None = None) -> Retriever:
    """A Retriever for a Pipeline from its connections (see docs/architecture.md). The store opens now
    (StoreUnavailable if it cannot); the collection may appear later (ready() says so)."""
    store = connect(connections.store)
    emb = embedder or from_connection(connections.embedder)
    rerank = connections.reranker
    return Retriever(store, connections.store.collection, emb, spec.retrieval, pipeline=connections.pipeline,
                     reranker=rerankers.from_connection(rerank) if rerank else None)
