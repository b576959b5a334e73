"""The HTTP embedder against an OpenAI-compatible /v1/embeddings (served by a mock transport)."""

from __future__ import annotations

import json

import httpx
import pytest
from raylight.api.connections import EmbedderConnection
from raylight_pipelines.embed.embedders import EmbedderError, HttpEmbedder, from_connection


def server(seen: list[dict]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if body["model"] != "minilm":
            return httpx.Response(404, json={"error": {"message": "no such model", "type": "invalid_request_error"}})
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 1.0]}
                for i, t in enumerate(body["input"])]
        data.reverse()  # the API may answer out of order; `index` says where each belongs
        return httpx.Response(200, json={"object": "list", "data": data, "model": "minilm",
                                         "usage": {"prompt_tokens": 1, "total_tokens": 1}})
    return httpx.MockTransport(handler)


def test_http_embedder_batches_and_keeps_order():
    seen: list[dict] = []
    emb = HttpEmbedder("http://embedder.local/v1", "minilm", batch_size=2,
                       http_client=httpx.Client(transport=server(seen)))
    vectors = emb.embed(["a", "bb", "ccc"])
    assert vectors == [[1.0, 0.0, 1.0], [2.0, 1.0, 1.0], [3.0, 0.0, 1.0]]
    assert [b["input"] for b in seen] == [["a", "bb"], ["ccc"]]
    assert emb.dimensions == 3 and emb.model_id == "minilm"


def test_http_embedder_errors_name_the_endpoint():
    emb = HttpEmbedder("http://embedder.local/v1", "other", http_client=httpx.Client(transport=server([])))
    with pytest.raises(EmbedderError, match=r"embedder other at http://embedder\.local/v1"):
        emb.embed(["x"])


def test_connection_without_url_or_source_is_refused():
    with pytest.raises(EmbedderError, match="neither a base_url nor a model source"):
        from_connection(EmbedderConnection(model="m"))
