"""Graph registry: `spec.agent.graph` names a factory registered here.

Adding a graph is one module in `raylight_agents/graphs/` that decorates its `build(deps) -> StateGraph` with
`@register("name")`; every module in `raylight_agents.graphs` is imported when the registry is first used.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from langgraph.graph import StateGraph

from raylight_agents import graphs
from raylight_agents.graphs.base import GraphDeps

GraphFactory = Callable[[GraphDeps], StateGraph[Any, Any, Any, Any]]
_REGISTRY: dict[str, GraphFactory] = {}
_loaded = False


def register(name: str) -> Callable[[GraphFactory], GraphFactory]:
    def add(factory: GraphFactory) -> GraphFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"graph {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory
    return add


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(graphs.__path__):
            if module.name != "base":
                importlib.import_module(f"{graphs.__name__}.{module.name}")
        _loaded = True


def names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get(name: str) -> GraphFactory:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown graph {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
