"""A rerank ModelDeployment on a real local Ray Serve: `POST /v1/rerank` answers what the same
CrossEncoder computes in-process, best first, and concurrent requests share forward passes.

No PyPI package ships a cross-encoder, so the model is the tiny one `support.tiny_cross_encoder` builds
(seeded random weights): these tests check the serving path, not ranking quality.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from raylight.api.types import ModelDeployment
from raylight_pipelines.retrieval.rerankers import HttpReranker
from support import free_port, tiny_cross_encoder

pytestmark = pytest.mark.integration

QUERY = "How do replicas scale?"
DOCS = ["Ray Serve scales replicas between min and max.", "Qdrant stores vectors.", "Paris is in France.",
        "Autoscaling adds replicas under load.", "The chunk size is 400 tokens."]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from raylight.local import serve as local

    folder = tiny_cross_encoder(tmp_path_factory.mktemp("xenc"))
    md = ModelDeployment.model_validate({"metadata": {"name": "xenc"}, "spec": {
        "task": "rerank", "model": {"source": f"file://{folder}", "license": "apache-2.0"},
        "resources": {"cpus": 1, "memory": "1Gi"}}})
    local.start(free_port(), num_cpus=2)
    try:
        yield local.deploy_model(md, "/models/xenc", timeout_s=300), folder
    finally:
        local.shutdown()


def expected_scores(folder: Path) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    return np.asarray(CrossEncoder(str(folder)).predict([(QUERY, d) for d in DOCS]))


def test_rerank_answers_the_in_process_scores_best_first(served: tuple[str, Path]) -> None:
    url, folder = served
    resp = httpx.post(f"{url}/v1/rerank", json={"model": "xenc", "query": QUERY, "documents": DOCS, "top_n": 3},
                      timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    expected = expected_scores(folder)
    order = sorted(range(len(DOCS)), key=lambda i: -expected[i])[:3]
    assert [r["index"] for r in body["results"]] == order
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], expected[order], rtol=1e-5)
    assert [r["document"]["text"] for r in body["results"]] == [DOCS[i] for i in order]
    assert body["model"] == "xenc" and body["usage"]["total_tokens"] > 0
    scores = HttpReranker(f"{url}/v1", "xenc").scores(QUERY, DOCS)  # what a Pipeline's retriever calls
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_concurrent_requests_share_forward_passes(served: tuple[str, Path]) -> None:
    from ray import serve

    url, _ = served
    handle = serve.get_deployment_handle("ModelServer", app_name="xenc")
    before = handle.stats.remote().result()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as http:
            replies = await asyncio.gather(*(http.post(f"{url}/v1/rerank", json={
                "model": "xenc", "query": QUERY, "documents": DOCS}) for _ in range(16)))
        return [r.status_code for r in replies]

    assert asyncio.run(burst()) == [200] * 16
    after = handle.stats.remote().result()
    assert after["rerank_requests"] - before["rerank_requests"] == 16
    assert after["rerank_pairs"] - before["rerank_pairs"] == 16 * len(DOCS)
    assert after["rerank_batches"] - before["rerank_batches"] < 16


def test_other_tasks_routes_refuse_with_the_reason(served: tuple[str, Path]) -> None:
    url, _ = served
    resp = httpx.post(f"{url}/v1/embeddings", json={"model": "xenc", "input": "x"}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "wrong_task"
    assert "rerank model" in resp.json()["error"]["message"]


def test_a_pair_over_the_window_is_400_naming_it_unless_truncate_is_asked(served: tuple[str, Path]) -> None:
    url, _ = served
    window = httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["max_input_tokens"]
    long = " ".join(["replicas"] * (window * 2))
    body = {"model": "xenc", "query": QUERY, "documents": [DOCS[0], long]}
    refused = httpx.post(f"{url}/v1/rerank", json=body, timeout=60)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "documents" and error["code"] == "context_length_exceeded"
    assert "documents[1]" in error["message"] and f"at most {window} tokens" in error["message"]
    cut = httpx.post(f"{url}/v1/rerank", json={**body, "truncate": True}, timeout=60)
    assert cut.status_code == 200 and len(cut.json()["results"]) == 2
    assert len(HttpReranker(f"{url}/v1", "xenc").scores(QUERY, [long])) == 1  # the retriever asks to truncate
