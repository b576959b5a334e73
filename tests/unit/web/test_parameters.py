"""Every OpenAI parameter is honoured, accepted or refused with 400 naming it (issue 31 item 6), on models and
Pipelines alike; the table in docs/openai-compatibility.md is generated from the one the routes check, and
the request models cannot gain a field the table does not list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from raylight_agents.serve import ChatIn
from raylight_pipelines.web import parameters
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest, CompletionRequest

DOC = Path(__file__).resolve().parents[3] / "docs" / "openai-compatibility.md"

# A value that asks for something, for each parameter (what a refusal must catch).
ASKING: dict[str, Any] = {
    "max_tokens": 5, "max_completion_tokens": 5, "temperature": 0.5, "top_p": 0.5, "stop": ["x"], "seed": 1,
    "n": 2, "response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}],
    "tool_choice": "auto", "parallel_tool_calls": True, "presence_penalty": 1.0, "frequency_penalty": 1.0,
    "logit_bias": {"57": 100}, "logprobs": True, "top_logprobs": 2, "store": True, "modalities": ["audio"],
    "audio": {"voice": "alloy"}, "prediction": {"type": "content", "content": "x"}, "reasoning_effort": "high",
    "verbosity": "low", "web_search_options": {}, "functions": [{"name": "f"}], "function_call": "auto",
    "echo": True, "best_of": 2, "suffix": "end", "user": "u", "metadata": {"a": "b"},
}


def test_the_docs_table_is_the_table_the_routes_check() -> None:
    text = DOC.read_text()
    marker = "<!-- generated: parameters.markdown() -->\n"
    start = text.index(marker) + len(marker)
    assert text[start:text.index("<!-- end generated -->")] == parameters.markdown()


def test_every_field_a_request_model_declares_is_in_its_table() -> None:
    assert set(ChatCompletionRequest.model_fields) <= set(parameters.CHAT)
    assert set(CompletionRequest.model_fields) <= set(parameters.COMPLETIONS)
    assert set(ChatIn.model_fields) <= set(parameters.CHAT) | parameters.EXTENSIONS["pipeline"]


@pytest.mark.parametrize("route", parameters.CHAT_ROUTES)
def test_honoured_chat_parameters_are_read_by_the_request_model(route: str) -> None:
    fields = set(ChatIn.model_fields if route == "pipeline" else ChatCompletionRequest.model_fields)
    honoured = {p for p in parameters.CHAT if parameters.status(parameters.CHAT, parameters.CHAT_ROUTES, p, route)
                == "honoured"}
    assert honoured <= fields


def test_honoured_completion_parameters_are_read_by_the_request_model() -> None:
    assert {p for p, s in parameters.COMPLETIONS.items() if "honoured" in s} <= set(CompletionRequest.model_fields)


@pytest.mark.parametrize(("table", "routes"), [(parameters.CHAT, parameters.CHAT_ROUTES),
                                               (parameters.COMPLETIONS, parameters.COMPLETION_ROUTES)])
def test_refused_parameters_are_400_naming_them_and_the_others_pass(table: Any, routes: Any) -> None:
    for param in table:
        for route in routes:
            state = parameters.status(table, routes, param, route)
            body = {"model": "m", param: ASKING.get(param, "x")}
            if state == "refused":
                with pytest.raises(ApiError) as info:
                    parameters.check(body, table, routes, route)
                assert info.value.status == 400 and info.value.param == param, (param, route)
                assert info.value.code == "unsupported_parameter"
                parameters.check({"model": "m", param: None}, table, routes, route)  # null asks for nothing
            else:
                parameters.check(body, table, routes, route)


def test_no_op_values_of_refused_parameters_pass_and_booleans_are_not_numbers() -> None:
    for body in ({"n": 1}, {"logprobs": False}, {"logit_bias": {}}, {"store": False}, {"tools": []},
                 {"presence_penalty": 0}, {"modalities": ["text"]}):
        parameters.check_chat({"model": "m", **body}, "pipeline")
    with pytest.raises(ApiError):
        parameters.check_chat({"model": "m", "n": True}, "pipeline")


def test_a_parameter_openai_does_not_have_is_refused_unless_the_route_documents_it() -> None:
    with pytest.raises(ApiError) as info:
        parameters.check_chat({"model": "m", "top_k": 5}, "llama-cpp")
    assert info.value.param == "top_k" and info.value.code == "unknown_parameter"
    parameters.check_chat({"model": "m", "thread_id": "t1"}, "pipeline")
    with pytest.raises(ApiError):
        parameters.check_chat({"model": "m", "thread_id": "t1"}, "llama-cpp")


def test_the_handed_logit_bias_request_is_refused_on_transformers_and_pipelines() -> None:
    body = {"model": "smollm", "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "max_tokens": 6, "temperature": 0, "logit_bias": {"57": 100}}
    parameters.check_chat(body, "llama-cpp")  # honoured there (tests/integration/serving/test_tool_calling.py)
    for route in ("transformers", "pipeline"):
        with pytest.raises(ApiError) as info:
            parameters.check_chat(body, route)
        assert info.value.param in ("logit_bias", "max_tokens")
    with pytest.raises(ApiError) as info:
        parameters.check_chat({k: v for k, v in body.items() if k not in ("max_tokens", "temperature")}, "pipeline")
    assert info.value.param == "logit_bias"


def test_logit_bias_keys_are_token_ids_and_values_within_100() -> None:
    from pydantic import ValidationError

    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert ChatCompletionRequest.model_validate({**base, "logit_bias": {"57": 100}}).token_biases == {57: 100.0}
    for bad in ({"a": 1}, {"-1": 1}, {"5": 101}):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate({**base, "logit_bias": bad})
