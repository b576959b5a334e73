"""The Responses API's translation (raylight_pipelines.web.responses_api) on many bodies: any JSON body is either a
request that becomes a valid chat body or a 400 naming a field, never another exception; items become chat
messages in order; citations become annotations at their markers; the response store keeps, scopes and expires."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raylight_pipelines.web import response_store, responses_api
from raylight_pipelines.web.errors import ApiError

json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                           | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                       max_size=4), max_leaves=12)
FIELDS = ["model", "input", "instructions", "previous_response_id", "store", "stream", "tools", "tool_choice",
          "text", "max_output_tokens", "temperature", "top_p", "metadata", "user", "include", "reasoning",
          "truncation", "parallel_tool_calls", "background", "frobnicate"]
items = st.fixed_dictionaries({"type": st.sampled_from(["message", "function_call", "function_call_output",
                                                        "input_image", "x"])},
                              optional={"role": st.sampled_from(["user", "assistant", "system", "tool", 3]),
                                        "content": json_values, "call_id": json_values, "name": json_values,
                                        "arguments": json_values, "output": json_values})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values | st.lists(items, max_size=3), max_size=8))
def test_any_body_is_a_chat_request_or_a_400_naming_a_field(body: dict[str, Any]) -> None:
    try:
        request = responses_api.parse(body)
    except ApiError as exc:
        assert exc.status == 400 and exc.message and exc.code == "invalid_value"
        return
    chat = responses_api.chat_body(request, responses_api.input_messages(request))
    assert chat["model"] == request.model and chat["messages"]


def test_items_become_chat_messages_in_order_with_calls_joined() -> None:
    request = responses_api.parse({"model": "m", "instructions": "Be brief.", "input": [
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather "}, {"type": "input_text",
                                                                                   "text": "in Paris?"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": "noon"}]})
    chat = responses_api.chat_body(request, responses_api.input_messages(request))
    assert [m["role"] for m in chat["messages"]] == ["system", "system", "user", "assistant", "tool", "tool"]
    assert chat["messages"][2]["content"] == "Weather in Paris?"
    assert [c["id"] for c in chat["messages"][3]["tool_calls"]] == ["c1", "c2"]


def test_text_format_tools_and_limits_map_to_chat_parameters() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = responses_api.parse({"model": "m", "input": "x", "max_output_tokens": 9, "temperature": 0,
                                   "tool_choice": {"type": "function", "name": "f"},
                                   "tools": [{"type": "function", "name": "f", "parameters": schema}],
                                   "text": {"format": {"type": "json_schema", "name": "out", "schema": schema}}})
    chat = responses_api.chat_body(request, responses_api.input_messages(request))
    assert chat["max_completion_tokens"] == 9 and chat["temperature"] == 0
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"]["json_schema"] == {"name": "out", "schema": schema}


def test_citations_become_file_citation_annotations_at_their_markers() -> None:
    notes = responses_api.citation_annotations("A [1] and B [2].", [
        {"ref": 1, "id": "c1", "source": "a.md"}, {"ref": 2, "id": "c2", "source": "b.md"},
        {"ref": 7, "id": "c7", "source": "z.md"}])
    assert [(n["file_id"], n["filename"], n["index"]) for n in notes] == [("c1", "a.md", 2), ("c2", "b.md", 12),
                                                                          ("c7", "z.md", 16)]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_store_keeps_scopes_by_owner_and_expires(kind: str, tmp_path: Path) -> None:
    async def run() -> None:
        store: response_store.ResponseStore = (response_store.MemoryStore(retention_seconds=0.3) if kind == "memory"
                                               else response_store.SqliteStore(str(tmp_path / "r.db"), 0.3))
        await store.put({"id": "resp_1", "owner": "ann", "messages": [], "response": {"id": "resp_1"}})
        assert (await store.get("resp_1", "ann"))["response"] == {"id": "resp_1"}  # type: ignore[index]
        assert await store.get("resp_1", "bob") is None and await store.get("resp_1", None) is None
        assert not await store.delete("resp_1", "bob")
        time.sleep(0.4)
        assert await store.get("resp_1", "ann") is None  # expired
        await store.aclose()
    asyncio.run(run())


def test_unknown_store_schemes_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="redis"):
        response_store.open_store("redis://x")
