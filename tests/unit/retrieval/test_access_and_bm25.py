"""Tenant/ACL isolation inside the Qdrant filter, and the BM25 sparse vectors."""

from __future__ import annotations

import pytest
from raylight.api.types import Retrieval, Source
from raylight_pipelines.embed import bm25
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.sync import sync
from raylight_pipelines.retrieval.retriever import Caller, Retriever
from retrieval_fakes import CountingEmbedder

SECRET = "The merger code name is BLUEHERON."


@pytest.fixture
def retriever(store, tokenizer, tmp_path):
    sources = [
        Source(documents=[{"id": "public", "text": "Public handbook: the office opens at nine."}]),
        Source(documents=[{"id": "acme", "text": "Acme tenant note: invoices are due monthly."}],
               access={"tenant": "acme"}),
        Source(documents=[{"id": "board", "text": SECRET}], access={"groups": ["board"]}),
        Source(documents=[{"id": "acme-finance", "text": "Acme finance: budget is 2 million."}],
               access={"tenant": "acme", "groups": ["finance"]}),
    ]
    embedder = CountingEmbedder()
    sync(store, "col", "p", load_sources(sources, tmp_path), embedder, tokenizer, 64, 8)
    return Retriever(store, "col", embedder, Retrieval(top_k=10), pipeline="p")


def visible(retriever: Retriever, caller: Caller | None, hybrid: bool = True) -> set[str]:
    return {h.source for h in retriever.search("merger code name BLUEHERON budget invoices office", caller,
                                               hybrid=hybrid)}


@pytest.mark.parametrize("hybrid", [True, False])
def test_callers_see_only_what_their_tenant_and_groups_allow(retriever, hybrid):
    assert visible(retriever, None, hybrid) == {"inline:public"}
    assert visible(retriever, Caller(user="u"), hybrid) == {"inline:public"}
    assert visible(retriever, Caller(tenant="acme"), hybrid) == {"inline:public", "inline:acme"}
    assert visible(retriever, Caller(tenant="other", groups=("finance",)), hybrid) == {"inline:public"}
    assert visible(retriever, Caller(groups=("board",)), hybrid) == {"inline:public", "inline:board"}
    assert visible(retriever, Caller(tenant="acme", groups=("finance", "x")), hybrid) == {
        "inline:public", "inline:acme", "inline:acme-finance"}


def test_outsider_never_gets_a_group_chunk_even_with_an_exact_keyword_query(retriever):
    hits = retriever.search(SECRET, Caller(user="mallory", groups=("staff",)), top_k=100)
    assert all("BLUEHERON" not in h.text for h in hits)
    assert any("BLUEHERON" in h.text for h in retriever.search(SECRET, Caller(groups=("board",))))


def test_filter_is_inside_the_query_not_after_it(retriever):
    from raylight_pipelines.store.server import scope_filter

    scope = retriever.scope(Caller(groups=("staff",)))
    assert (scope.pipeline, scope.tenant, scope.groups) == ("p", None, ("staff",))
    text = scope_filter(scope).model_dump_json()  # what a Qdrant server is sent
    assert "groups" in text and "staff" in text and "tenant" in text and '"p"' in text


def test_bm25_terms_keep_identifiers_and_hash_stably():
    terms = bm25.terms("Set RAYLIGHT_QDRANT_API_KEY and port 8000 in v1alpha1.")
    assert "raylight_qdrant_api_key" in terms and "8000" in terms and "v1alpha1" in terms
    assert "qdrant" in terms and "and" not in terms
    assert bm25.term_index("qdrant") == 585620190  # fixed across processes and releases (blake2b, 32 bits)
    idx, vals = bm25.document_vector("port port port 8000")
    assert len(idx) == 2 and max(vals) > min(vals)
    assert bm25.query_vector("the port")[1] == [1.0]
