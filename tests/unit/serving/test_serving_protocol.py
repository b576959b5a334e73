"""OpenAI request models, error shapes, SSE framing and stop strings (no Ray, no models)."""

from __future__ import annotations

import json
import pickle
import threading

import pytest
from raylight_pipelines.serving.runtimes.base import StopScanner, drive
from raylight_pipelines.serving.tool_calls import template_messages
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest, EmbeddingsRequest, parse
from raylight_pipelines.web.responses import SSE_DONE, chat_chunk, sse

CHAT = {"model": "smollm", "messages": [{"role": "user", "content": "hi"}]}


def refusal(model: type, body: object, served: str = "smollm") -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(model, body, served)
    return info.value


def assert_openai_error(error: ApiError, status: int, param: str | None) -> None:
    body = error.body()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert error.status == status
    assert body["error"]["param"] == param
    assert body["error"]["message"]


def test_embeddings_input_accepts_a_string_or_a_list_of_strings() -> None:
    assert parse(EmbeddingsRequest, {"model": "m", "input": "a"}, "m").texts == ["a"]
    assert parse(EmbeddingsRequest, {"model": "m", "input": ["a", "b"]}, "m").texts == ["a", "b"]
    # token ids are OpenAI's cl100k_base ids (tests/unit/web/test_openai_tokens.py)
    assert parse(EmbeddingsRequest, {"model": "m", "input": [[15339, 1917]]}, "m").texts == ["hello world"]


@pytest.mark.parametrize("bad_input", [[], [1, "a"], [[1, 2], "b"], [True], 5, None])
def test_embeddings_input_that_is_not_text_is_a_400_naming_input(bad_input: object) -> None:
    assert_openai_error(refusal(EmbeddingsRequest, {"model": "m", "input": bad_input}, "m"), 400, "input")


def test_a_request_for_another_model_is_a_404_model_not_found() -> None:
    error = refusal(EmbeddingsRequest, {"model": "gpt-4", "input": "a"}, "minilm")
    assert_openai_error(error, 404, "model")
    assert error.code == "model_not_found" and "gpt-4" in error.message


def test_missing_model_and_non_object_bodies_are_400() -> None:
    assert_openai_error(refusal(ChatCompletionRequest, {"messages": CHAT["messages"]}), 400, "model")
    assert_openai_error(refusal(ChatCompletionRequest, ["not", "an", "object"]), 400, None)


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 0}, "n"),
    ({"n": 9}, "n"),
    ({"temperature": 3}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"tools": [{"type": "function"}]}, "tools.0.function"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_object"}, "stop": ["}"]}, "response_format"),  # could cut the JSON
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
])
def test_chat_parameters_out_of_range_or_unsupported_are_400(extra: dict, param: str | None) -> None:
    assert_openai_error(refusal(ChatCompletionRequest, {**CHAT, **extra}), 400, param)


def test_chat_request_normalises_roles_content_parts_stops_and_limits() -> None:
    request = parse(ChatCompletionRequest, {
        **CHAT,
        "messages": [{"role": "developer", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "stop": "\n", "max_tokens": 50, "max_completion_tokens": 20, "user": "ignored-extra-field",
    }, "smollm")
    assert template_messages(request, native=False) == [{"role": "system", "content": "be brief"},
                                                       {"role": "user", "content": "ab"}]
    assert request.stops == ["\n"]
    assert request.token_limit == 20


def test_response_formats_map_to_the_schema_to_enforce() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    as_schema = parse(ChatCompletionRequest, {**CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}}, "smollm")
    assert as_schema.json_schema == schema
    as_object = parse(ChatCompletionRequest, {**CHAT, "response_format": {"type": "json_object"}}, "smollm")
    assert as_object.json_schema == {"type": "object"}
    assert parse(ChatCompletionRequest, {**CHAT, "response_format": {"type": "text"}}, "smollm").json_schema is None


def test_api_error_survives_pickling_as_ray_does_across_a_handle() -> None:
    error = pickle.loads(pickle.dumps(ApiError(404, "no such model", param="model", code="model_not_found")))
    assert isinstance(error, ApiError)
    assert error.status == 404 and error.body()["error"]["code"] == "model_not_found"


def test_sse_frames_one_json_object_per_event_and_ends_with_done() -> None:
    frame = sse({"a": "é"})
    assert frame == 'data: {"a":"é"}\n\n'
    assert SSE_DONE == "data: [DONE]\n\n"
    chunk = json.loads(sse(chat_chunk("id1", "m", 1, {"content": "x"}))[len("data: "):])
    assert chunk["object"] == "chat.completion.chunk" and chunk["choices"][0]["delta"] == {"content": "x"}
    usage = json.loads(sse(chat_chunk("id1", "m", 1, {}, usage_={"total_tokens": 3}))[len("data: "):])
    assert usage["choices"] == [] and usage["usage"] == {"total_tokens": 3}


def test_stop_scanner_cuts_at_the_first_stop_even_when_split_across_pieces() -> None:
    scanner = StopScanner(["END", "\n\n"])
    shown = "".join(scanner.push(p) for p in ["The ans", "wer E", "N", "D and more"])
    assert scanner.stopped and scanner.text == "The answer " and shown == "The answer "


def test_stop_scanner_holds_back_only_a_possible_stop_prefix() -> None:
    scanner = StopScanner(["STOP"])
    assert scanner.push("abc ST") == "abc "
    assert scanner.push("ART") == "START"
    assert scanner.flush() == ""
    assert not scanner.stopped and scanner.text == "abc START"


def test_drive_streams_exactly_the_final_text_and_stops_the_engine() -> None:
    closed = []

    def pieces():  # an engine that would go on forever
        try:
            while True:
                yield "ab"
        finally:
            closed.append(True)

    shown: list[str] = []
    scanner = drive(pieces(), ["bab"], shown.append, threading.Event())
    assert scanner.text == "a" and "".join(shown) == "a" and closed == [True]


def test_drive_stops_when_the_client_goes_away() -> None:
    cancelled = threading.Event()
    count = 0

    def pieces():
        nonlocal count
        while True:
            count += 1
            if count == 3:
                cancelled.set()
            yield "x"

    assert drive(pieces(), [], None, cancelled).text == "xxx"


def test_a_schema_keyword_the_grammar_cannot_enforce_is_refused_not_ignored() -> None:
    from raylight_pipelines.serving.runtimes import guidance

    guidance.grammar({"type": "object", "required": ["n"], "properties": {
        "n": {"type": "integer", "minimum": 0}, "s": {"type": "string", "pattern": "^a", "maxLength": 5}}}, None)
    with pytest.raises(ValueError, match="uniqueItems"):
        guidance.grammar({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, None)
