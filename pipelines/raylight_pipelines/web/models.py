"""What a request's `model` can name: a model, one of its LoRA adapters, or a Pipeline, and the
`/v1/models` entries for them (pure: no Ray, no HTTP).

An adapter is its own entry, as vLLM lists LoRA modules: `{"id": <adapter>, "object": "model", "parent":
<base model's id>, "root": <where its weights are>}`; the base model's entry has `"parent": null` and its
weights' source as `root`. A request whose `model` is an adapter's name is served by the base model's app
with the adapter active, and every response (and every streamed chunk) carries the adapter's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from raylight_pipelines.web.errors import ApiError


def model_entries(base: dict[str, Any], adapters: Iterable[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """The base model's card (`parent` null, `root` its source) then one entry per `(name, source)` adapter,
    with the base's id as `parent` and the adapter's source as `root`."""
    entries = [{**base, "parent": None, "root": base.get("source")}]
    for name, source in adapters:
        entries.append({"id": name, "object": "model", "created": base.get("created"),
                        "owned_by": base.get("owned_by", "raylight"), "task": base.get("task"), "kind": "adapter",
                        "parent": base["id"], "root": source})
    return entries


def find_entry(entries: Iterable[dict[str, Any]], model: str, available: str) -> dict[str, Any]:
    """The entry whose id is `model`; 404 `model_not_found` naming what is `available` otherwise."""
    for entry in entries:
        if entry.get("id") == model:
            return entry
    raise ApiError(404, f"The model '{model}' does not exist; available: {available}.", param="model",
                   code="model_not_found")


def adapter_routes(adapters: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """adapter name -> the model (app) that serves it, from model name -> its adapters' names."""
    return {adapter: model for model, names in adapters.items() for adapter in names}
