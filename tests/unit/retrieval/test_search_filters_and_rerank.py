"""Metadata filters inside the store query (never widening the caller's access), and reranking: the best
`candidates` are rescored, the top k of them kept, in the reranker's order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from raylight.api.types import Rerank, Retrieval, Source
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.sync import sync
from raylight_pipelines.retrieval.rerankers import RerankerError
from raylight_pipelines.retrieval.retriever import Caller, Retriever, StoreUnavailable
from retrieval_fakes import CountingEmbedder

DOCS = [{"id": f"d{i}", "text": f"Document number {i} about replicas and autoscaling."} for i in range(8)]


class ByNumber:
    """Scores a text by the document number in it (d7 best): an order no store query would produce."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.fail = fail

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        if self.fail:
            raise RerankerError("reranker at http://xenc.test: connection refused")
        self.calls.append((query, list(texts)))
        return [float(t.split()[2]) for t in texts]


@pytest.fixture
def store(new_store, tokenizer, tmp_path):
    client = new_store()
    sources = [Source(documents=DOCS),
               Source(documents=[{"id": "secret", "text": "Document number 99 about replicas (board)."}],
                      access={"groups": ["board"]})]
    embedder = CountingEmbedder()
    sync(client, "col", "p", load_sources(sources, tmp_path), embedder, tokenizer, 64, 8)
    return client, embedder


def retriever(store, reranker=None, top_k=3, candidates=6) -> Retriever:
    client, embedder = store
    retrieval = Retrieval(top_k=top_k, rerank=Rerank(model_deployment="xenc", candidates=candidates)
                          if reranker else None)
    return Retriever(client, "col", embedder, retrieval, pipeline="p", reranker=reranker)


@pytest.mark.parametrize("hybrid", [True, False])
def test_filters_narrow_the_results_inside_the_query(store, hybrid):
    r = retriever(store)
    hits = r.search("replicas autoscaling", filters={"source": ["inline:d2", "inline:d5"]}, hybrid=hybrid, top_k=10)
    assert {h.source for h in hits} == {"inline:d2", "inline:d5"}
    assert [h.source for h in r.search("replicas", filters={"title": "d4"}, hybrid=hybrid)] == ["inline:d4"]


def test_a_filter_cannot_widen_what_the_caller_may_see(store):
    r = retriever(store)
    assert r.search("replicas board", filters={"source": "inline:secret"}) == []
    board = r.search("replicas board", Caller(groups=("board",)), filters={"source": "inline:secret"})
    assert [h.source for h in board] == ["inline:secret"]


def test_unknown_filter_field_is_refused_by_name(store):
    with pytest.raises(ValueError, match=r"filters\.tenant: unknown field"):
        retriever(store).search("replicas", filters={"tenant": "acme"})


def test_rerank_rescores_the_candidates_and_keeps_the_top_k_in_its_order(store):
    reranker = ByNumber()
    hits = retriever(store, reranker).search("replicas autoscaling")
    (query, texts), = reranker.calls
    assert query == "replicas autoscaling" and len(texts) == 6  # the candidates, not top k
    numbers = sorted((int(t.split()[2]) for t in texts), reverse=True)
    assert [h.score for h in hits] == [float(n) for n in numbers[:3]]


def test_rerank_can_be_switched_off_per_call_and_needs_a_configured_reranker(store):
    reranker = ByNumber()
    assert len(retriever(store, reranker).search("replicas", rerank=False)) == 3 and not reranker.calls
    with pytest.raises(ValueError, match=r"no retrieval\.rerank"):
        retriever(store).search("replicas", rerank=True)


def test_a_failing_reranker_is_a_store_outage_with_the_reason(store):
    with pytest.raises(StoreUnavailable, match=r"cannot rerank: reranker at http://xenc\.test"):
        retriever(store, ByNumber(fail=True)).search("replicas")
