"""AgentServer's plain methods (what the routes and a gateway's DeploymentHandle call), without Ray:
auth, size and time limits, field-level 400s, and the SSE / OpenAI shapes."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from raylight.api.connections import AuthConnection
from raylight_agents.agent import Agent
from raylight_agents.serve import AgentServer
from raylight_pipelines.web.errors import ApiError

# Serve's ingress wrapper has an async __del__ that only a replica awaits.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

TOKEN = "t0ken"
DOCS = [Doc("d1", "Ray Serve scales replicas with autoscaling between min and max.", "serve.md")]


class SlowRetriever(MemoryRetriever):
    def search(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return super().search(*args, **kwargs)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setenv("TEST_AGENT_TOKEN", TOKEN)
    spec = {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
            "retrieval": {"minScore": 0.3},  # the fakes' bag-of-words embedder (see test_graphs.spec)
            "agent": {"auth": {"secret": "agent"}, "limits": {"maxRequestBytes": 1024, "timeoutSeconds": 0.5}}}
    conn = connections(auth=AuthConnection(token_env="TEST_AGENT_TOKEN"))
    cls = AgentServer.func_or_class  # the user class behind the Serve deployment
    obj = cls.__new__(cls)
    await obj.__init__("handbook", spec, conn)  # Serve's ingress wrapper has an async constructor
    obj.retriever = MemoryRetriever(DOCS)
    obj.llm = ScriptedLLM(lambda body: "Replicas autoscale [1].")
    obj.agent = Agent("handbook", obj.spec, conn, retriever=lambda: obj.retriever, llm=obj.llm.llm())
    yield obj
    await obj.agent.aclose()


BEARER = f"Bearer {TOKEN}"


async def test_missing_or_wrong_token_is_401_and_the_right_one_passes(server: Any) -> None:
    for auth in (None, "Bearer nope", TOKEN):
        with pytest.raises(ApiError) as exc:
            await server.invoke({"input": "How do replicas scale?"}, auth)
        assert exc.value.status == 401
    assert (await server.invoke({"input": "How do replicas scale?"}, BEARER))["citations"][0]["id"] == "d1"


async def test_missing_auth_secret_fails_closed(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_AGENT_TOKEN")
    with pytest.raises(ApiError) as exc:
        await server.invoke({"input": "x"}, BEARER)
    assert exc.value.status == 503 and "TEST_AGENT_TOKEN" in exc.value.message


async def test_bad_bodies_are_400_naming_each_field(server: Any) -> None:
    with pytest.raises(ApiError) as exc:
        await server.invoke({"input": "", "thread_id": "a b", "user": {"id": "x", "groups": [1]}}, BEARER)
    assert (exc.value.status, exc.value.code, exc.value.param) == (400, "invalid_value", "input")
    assert [part.split(":")[0] for part in exc.value.message.split("; ")] == ["input", "thread_id", "user.groups.0"]
    with pytest.raises(ApiError) as raw:
        await server.invoke(b"{not json", BEARER)
    assert (raw.value.status, raw.value.code) == (400, "invalid_json")


async def test_request_over_the_size_limit_is_413(server: Any) -> None:
    with pytest.raises(ApiError) as exc:
        await server.invoke({"input": "x" * 2000}, BEARER)
    assert exc.value.status == 413


async def test_a_run_over_the_time_limit_is_504(server: Any) -> None:
    server.agent.retriever._retriever = SlowRetriever(DOCS)
    with pytest.raises(ApiError) as exc:
        await server.invoke({"input": "How do replicas scale?"}, BEARER)
    assert exc.value.status == 504
    with pytest.raises(ApiError) as streamed:
        [line async for line in server.stream({"input": "How do replicas scale?"}, BEARER)]
    assert streamed.value.status == 504


async def test_stream_yields_retrieval_tokens_and_final_as_sse(server: Any) -> None:
    lines = [line async for line in server.stream({"input": "How do replicas scale?"}, BEARER)]
    events = [line.split("\n")[0].removeprefix("event: ") for line in lines]
    assert events[0] == "retrieval" and events[-1] == "final" and "token" in events
    final = json.loads(lines[-1].split("\n")[1].removeprefix("data: "))
    assert final["answer"] == "Replicas autoscale [1]." and final["citations"][0]["id"] == "d1"


async def test_chat_completions_are_openai_shaped_and_name_the_pipeline(server: Any) -> None:
    body = {"model": "handbook", "messages": [{"role": "user", "content": "How do replicas scale?"}]}
    out = await server.chat_completions(body, BEARER)
    assert out["object"] == "chat.completion" and out["model"] == "handbook"
    assert out["choices"][0]["message"]["content"] == "Replicas autoscale [1]." and out["citations"]
    chunks = [line async for line in server.chat_completions_stream({**body, "stream": True}, BEARER)]
    assert chunks[-1] == "data: [DONE]\n\n"
    deltas = [json.loads(c.removeprefix("data: "))["choices"][0]["delta"].get("content", "") for c in chunks[:-1]]
    assert "".join(deltas) == out["choices"][0]["message"]["content"]
    with pytest.raises(ApiError) as exc:
        await server.chat_completions({**body, "model": "gpt-4"}, BEARER)
    assert exc.value.status == 404 and exc.value.code == "model_not_found"
    assert (await server.models(BEARER))["data"][0]["id"] == "handbook"
