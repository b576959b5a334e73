"""Tool calling in the OpenAI shape, without a model: request checks (400 naming the field), how tools and
past calls reach a chat template, the call schema, reading calls from streamed text, and the answer's shape
(tool_calls, finish_reason, streamed deltas) driven through ChatRuntime.generate by a scripted runtime."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from raylight_pipelines.serving import tool_calls
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Constraint, Emit, Generation, drive
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest, parse
from raylight_pipelines.web.responses import tool_call_deltas

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}
CHAT = {"model": "smollm", "messages": [{"role": "user", "content": "Weather in Paris?"}]}


def request(**extra: Any) -> ChatCompletionRequest:
    return parse(ChatCompletionRequest, {**CHAT, **extra}, "smollm")  # type: ignore[no-any-return]


def refusal(**extra: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        request(**extra)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "strin"}}}}}]}, "tools.0.function.parameters", "not a valid JSON schema"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "tools.0.function.parameters", "type object"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools.0.function.name", "pattern"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "unique"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "not in tools"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", ""),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format", "tools"),
    ({"messages": [{"role": "tool", "content": "sunny"}]}, "messages.0", "tool_call_id"),
])
def test_invalid_tool_requests_are_400_naming_the_field(extra: dict[str, Any], param: str, words: str) -> None:
    error = refusal(**extra)
    assert error.param == param
    assert words in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_tool_choice_decides_which_functions_a_call_may_name() -> None:
    assert request(tools=[WEATHER, TIME]).tool_mode == "auto"
    assert request(tools=[WEATHER, TIME], tool_choice="none").callable_tools == []
    assert [f.name for f in request(tools=[WEATHER, TIME], tool_choice="required").callable_tools] == [
        "get_weather", "get_time"]
    named = request(tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.tool_mode == "named" and [f.name for f in named.callable_tools] == ["get_time"]
    assert request(tool_choice="none").tool_mode == "none"


def test_call_schema_accepts_exactly_the_calls_the_tools_allow() -> None:
    schema = tool_calls.call_schema(request(tools=[WEATHER, TIME]))
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Paris"}}, schema)
    jsonschema.validate({"name": "get_time", "arguments": {"zone": "UTC"}}, schema)
    for wrong in ({"name": "get_weather", "arguments": {"zone": "UTC"}},
                  {"name": "get_time", "arguments": {"zone": "PST"}},
                  {"name": "other", "arguments": {}},
                  {"name": "get_weather", "arguments": {"city": "Paris"}, "extra": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_templates_without_tools_get_calls_and_results_written_in_the_hermes_convention() -> None:
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
    ]
    plain = tool_calls.template_messages(request(messages=history, tools=[WEATHER]), native=False)
    assert [m["role"] for m in plain] == ["system", "user", "assistant", "user"]
    assert plain[0]["content"].startswith("Be brief.\n\n") and '"name": "get_weather"' in plain[0]["content"]
    assert plain[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert plain[3]["content"] == "<tool_response>\nsunny, 21C\n</tool_response>"
    native = tool_calls.template_messages(request(messages=history, tools=[WEATHER]), native=True)
    assert native[0] == {"role": "system", "content": "Be brief."}
    assert native[2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert native[3] == {"role": "tool", "content": "sunny, 21C", "tool_call_id": "call_1", "name": "get_weather"}
    # tool_choice none: the history is still shown, but no tools are offered
    assert "<tools>" not in tool_calls.template_messages(
        request(messages=history, tools=[WEATHER], tool_choice="none"), native=False)[0]["content"]


def test_template_knows_tools_only_when_it_renders_them() -> None:
    assert tool_calls.template_knows_tools("{% if tools %}{{ tools | tojson }}{% endif %}")
    assert not tool_calls.template_knows_tools("{% for message in messages %}{{ message.content }}{% endfor %}")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@given(st.lists(st.tuples(st.sampled_from(["a", "get_weather"]), st.dictionaries(
    st.text(max_size=6), json_values, max_size=3)), min_size=1, max_size=3), st.integers(1, 7))
def test_call_reader_reads_every_call_however_the_text_is_split(calls: list[tuple[str, dict[str, Any]]],
                                                                 size: int) -> None:
    text = "".join(json.dumps({"name": n, "arguments": a}) + tool_calls.CALL_END
                   + ("\n" + tool_calls.CALL_START if i < len(calls) - 1 else "") for i, (n, a) in enumerate(calls))
    reader = tool_calls.CallReader()
    for start in range(0, len(text), size):
        reader.push(text[start:start + size])
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in reader.calls] == calls
    assert len({c["id"] for c in reader.calls}) == len(calls)


class Scripted(ChatRuntime):
    """Plays back scripted text for each decode: the first decode's text, then the second's; records the
    constraint and the prompt each decode got. No model: this checks the orchestration, not a grammar."""

    context_length = 100

    def __init__(self, *outputs: str) -> None:
        self.outputs = list(outputs)
        self.seen: list[tuple[str, Constraint | None, list[str]]] = []

    def constraint_problem(self, constraint: Constraint) -> str | None:
        return None

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return "PROMPT|"

    def decode(self, prompt: str, request: ChatCompletionRequest, constraint: Constraint | None,
               stops: list[str], limit: int | None, emit: Emit | None, cancelled: threading.Event) -> Generation:
        self.seen.append((prompt, constraint, stops))
        text = self.outputs.pop(0)
        scanner = drive(iter(list(text)), stops, emit, cancelled)
        return Generation(scanner.text, "stop", 7, len(text), stopped_by=scanner.matched)


def run(runtime: ChatRuntime, req: ChatCompletionRequest) -> tuple[Generation, list[str | dict[str, Any]]]:
    streamed: list[str | dict[str, Any]] = []
    return runtime.generate(req, streamed.append, threading.Event()), streamed


def test_auto_streams_text_until_the_model_opens_a_call_then_decodes_calls_under_the_grammar() -> None:
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    runtime = Scripted("Let me check.<tool_call>ignored", call)
    result, streamed = run(runtime, request(tools=[WEATHER, TIME]))
    (_, first_constraint, stops), (second_prompt, constraint, _) = runtime.seen
    assert first_constraint is None and tool_calls.OPEN in stops
    assert second_prompt == "PROMPT|Let me check.<tool_call>\n"
    assert constraint == tool_calls.call_grammar(request(tools=[WEATHER, TIME]))
    assert result.finish_reason == "tool_calls" and result.text == "Let me check."
    assert [c["function"]["name"] for c in result.tool_calls] == ["get_weather"]
    assert "".join(p for p in streamed if isinstance(p, str)) == "Let me check."
    assert streamed[-1] == result.tool_calls[0]


def test_auto_answer_without_a_call_is_plain_text() -> None:
    result, streamed = run(Scripted("Paris is sunny."), request(tools=[WEATHER]))
    assert (result.text, result.finish_reason, result.tool_calls) == ("Paris is sunny.", "stop", [])
    assert streamed == list("Paris is sunny.")


def test_required_and_named_choices_start_with_a_call() -> None:
    calls = ('{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>\n<tool_call>\n'
             '{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>')
    runtime = Scripted(calls)
    req = request(tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}},
                  parallel_tool_calls=True)
    result, _ = run(runtime, req)
    assert runtime.seen[0][0] == "PROMPT|<tool_call>\n"
    assert [json.loads(c["function"]["arguments"]) for c in result.tool_calls] == [{"zone": "UTC"}, {"zone": "CET"}]
    assert result.finish_reason == "tool_calls" and result.text == ""
    assert json.loads(tool_calls.call_grammar(req).schema)["properties"]["name"] == {"const": "get_time"}
    assert tool_calls.call_grammar(req).parallel
    assert not tool_calls.call_grammar(request(tools=[WEATHER], tool_choice="required")).parallel  # unless asked


def test_streamed_call_deltas_rebuild_the_call_as_the_openai_client_does() -> None:
    call = tool_calls.openai_call("get_weather", {"city": "Paris"})
    rebuilt: dict[str, Any] = {"function": {"arguments": ""}}
    for delta in tool_call_deltas(0, call):
        (part,) = delta["tool_calls"]
        assert part["index"] == 0
        rebuilt.update({k: v for k, v in part.items() if k in ("id", "type")})
        rebuilt["function"].setdefault("name", part["function"].get("name"))
        rebuilt["function"]["arguments"] += part["function"]["arguments"]
    assert rebuilt == call


# ---------------------------------------------------------------- $defs / $ref (issue 31 item 7)

HANDED = Path("/work/shared/cases/turn3/h06d_pydantic_nested_tool.json")
NESTED = json.loads(HANDED.read_text())["request"] if HANDED.exists() else None


def _grammars_compile(schema: dict[str, Any]) -> None:
    from raylight_pipelines.serving.runtimes import guidance

    guidance.grammar(schema, None)  # llguidance resolves every $ref or raises (both CPU runtimes use it)


def test_pydantic_function_tool_with_defs_and_refs_gets_a_call_schema_that_resolves() -> None:
    openai = pytest.importorskip("openai")
    from pydantic import BaseModel

    class Item(BaseModel):
        name: str
        kind: Literal["fruit", "vegetable"]

    class Order(BaseModel):
        items: list[Item]
        gift: Item | None = None

    tool = openai.pydantic_function_tool(Order)
    schema = tool_calls.call_schema(request(tools=[tool], tool_choice="required"))
    jsonschema.validate({"name": "Order", "arguments": {"items": [{"name": "apple", "kind": "fruit"}],
                                                        "gift": None}}, schema)
    for wrong in ({"items": [{"name": "apple"}], "gift": None}, {"items": [{"name": "a", "kind": "stone"}],
                                                                  "gift": None}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"name": "Order", "arguments": wrong}, schema)
    _grammars_compile(schema)


def test_the_handed_nested_tool_schema_resolves_and_compiles() -> None:
    body = NESTED or {**CHAT, "tools": [{"type": "function", "function": {"name": "Order", "parameters": {
        "$defs": {"Item": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
        "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
        "required": ["items"]}}}], "tool_choice": "required"}
    schema = tool_calls.call_schema(parse(ChatCompletionRequest, body, "smollm"))
    jsonschema.validate({"name": "Order", "arguments": {"items": [{"name": "apple"}, {"name": "apple"}]}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "Order", "arguments": {"items": [{"title": "apple"}]}}, schema)
    _grammars_compile(schema)


def test_refs_of_several_tools_stay_apart_and_recursive_and_draft7_refs_resolve() -> None:
    tree = {"type": "function", "function": {"name": "tree", "parameters": {
        "type": "object", "properties": {"label": {"type": "string"},
                                         "children": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["label"], "additionalProperties": False}}}
    legacy = {"type": "function", "function": {"name": "legacy", "parameters": {
        "definitions": {"Item": {"enum": ["x", "y"]}}, "type": "object",
        "properties": {"item": {"$ref": "#/definitions/Item"}, "tree": {"anyOf": [{"type": "null"},
                                                                                 {"$ref": "#/properties/item"}]}},
        "required": ["item"]}}}
    same_name = {"type": "function", "function": {"name": "other", "parameters": {
        "$defs": {"Item": {"type": "integer"}}, "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item"}}, "required": ["item"]}}}
    schema = tool_calls.call_schema(request(tools=[tree, legacy, same_name], tool_choice="required"))
    jsonschema.validate({"name": "tree", "arguments": {"label": "a", "children": [{"label": "b"}]}}, schema)
    jsonschema.validate({"name": "legacy", "arguments": {"item": "x", "tree": "y"}}, schema)
    jsonschema.validate({"name": "other", "arguments": {"item": 3}}, schema)
    for wrong in ({"name": "tree", "arguments": {"label": "a", "children": [{"label": 1}]}},
                  {"name": "legacy", "arguments": {"item": "z"}},
                  {"name": "other", "arguments": {"item": "x"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)
    jsonschema.validate({"name": "legacy", "arguments": {"item": "x", "tree": None}}, schema)


FIELD_TYPES = st.sampled_from(["str", "int", "bool", "float", "enum", "list_str", "optional_str"])


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), FIELD_TYPES, min_size=1, max_size=3),
                min_size=1, max_size=3), st.randoms(use_true_random=False))
def test_generated_nested_pydantic_tools_get_call_schemas_that_accept_their_instances(
        levels: list[dict[str, str]], rnd: Any) -> None:
    """Models nested in a chain (each level holds a list of the next, so $defs and $ref appear); an instance
    built from the models validates against the call schema, and one with a wrong leaf type does not."""
    openai = pytest.importorskip("openai")
    from pydantic import create_model

    kinds: dict[str, Any] = {"str": (str, ...), "int": (int, ...), "bool": (bool, ...), "float": (float, ...),
                             "enum": (Literal["x", "y"], ...), "list_str": (list[str], ...),
                             "optional_str": (str | None, None)}
    values = {"str": "s", "int": 3, "bool": True, "float": 1.5, "enum": "y", "list_str": ["p"], "optional_str": None}
    model: Any = None
    instance: dict[str, Any] | None = None
    for depth, fields in enumerate(reversed(levels)):
        spec = {name: kinds[kind] for name, kind in fields.items()}
        data = {name: values[kind] for name, kind in fields.items()}
        if model is not None:
            spec["child"] = (list[model], ...)
            data["child"] = [instance]
        model = create_model(f"Level{depth}", **spec)
        instance = data
    tool = openai.pydantic_function_tool(model, name="make")
    schema = tool_calls.call_schema(request(tools=[tool], tool_choice="required"))
    jsonschema.validate({"name": "make", "arguments": instance}, schema)
    first = next(iter(levels[0]))  # a field of the outermost model
    bad = dict(instance or {})
    bad[first] = {"nested": "object"}  # no field type above accepts an object
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "make", "arguments": bad}, schema)


def test_closed_objects_closes_every_object_that_lists_properties_and_keeps_explicit_choices() -> None:
    from raylight_pipelines.serving.runtimes.guidance import closed_objects

    schema = {"type": "object", "properties": {
        "a": {"type": "object", "properties": {"x": {"type": "integer"}}},
        "b": {"type": "object", "properties": {}, "additionalProperties": True},
        "c": {"type": "array", "items": {"properties": {"y": {}}}},
        "d": {"anyOf": [{"properties": {"z": {}}}, {"type": "null"}]},
        "e": {"const": {"properties": {"kept": 1}}}},
        "$defs": {"n": {"properties": {"m": {}}, "additionalProperties": {"type": "string"}}}}
    out = closed_objects(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert out["properties"]["a"]["properties"]["x"] == {"type": "integer"}  # not an object schema: untouched
    assert out["properties"]["b"]["additionalProperties"] is True
    assert out["properties"]["c"]["items"]["additionalProperties"] is False
    assert out["properties"]["d"]["anyOf"][0]["additionalProperties"] is False
    assert out["properties"]["e"] == {"const": {"properties": {"kept": 1}}}  # data, not a schema
    assert out["$defs"]["n"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema  # pure
    named = closed_objects({"properties": {"properties": {"type": "string"}}})  # a property called "properties"
    assert named == {"properties": {"properties": {"type": "string"}}, "additionalProperties": False}
