"""Every OpenAI request parameter, and what each route does with it: honoured, accepted (it cannot change
the answer), or refused with 400 naming it. One table per OpenAI endpoint; requests are checked against it
before they are parsed, and docs/openai-compatibility.md is generated from it (a test keeps them equal).

A refused parameter is refused only when it asks for something: absent, `null`, or its no-op value (`n: 1`,
`logprobs: false`, `logit_bias: {}`, ...) passes. A parameter OpenAI does not have is refused as OpenAI
refuses it ("Unrecognized request argument"), except a route's documented extensions (a Pipeline's
`thread_id`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from raylight_pipelines.web.errors import ApiError

Status = Literal["honoured", "accepted", "refused"]
H: Status = "honoured"
A: Status = "accepted"
R: Status = "refused"

# The routes a table has columns for: a model on the llama.cpp runtime, on the transformers runtime, and a
# Pipeline's agent (chat only). vLLM models are served by ray.serve.llm's own OpenAI server.
CHAT_ROUTES = ("llama-cpp", "transformers", "pipeline")
COMPLETION_ROUTES = ("llama-cpp", "transformers")

# POST /v1/chat/completions: parameter -> (llama-cpp, transformers, pipeline).
CHAT: dict[str, tuple[Status, Status, Status]] = {
    "model": (H, H, H),
    "messages": (H, H, H),
    "stream": (H, H, H),
    "stream_options": (H, H, H),
    "max_tokens": (H, H, R),
    "max_completion_tokens": (H, H, R),
    "temperature": (H, H, R),
    "top_p": (H, H, R),
    "stop": (H, H, R),
    "seed": (H, H, R),
    "n": (H, H, R),
    "response_format": (H, H, R),
    "tools": (H, H, R),
    "tool_choice": (H, H, R),
    "parallel_tool_calls": (H, H, A),
    "presence_penalty": (H, R, R),
    "frequency_penalty": (H, R, R),
    "logit_bias": (H, R, R),
    "logprobs": (H, R, R),
    "top_logprobs": (H, R, R),
    "user": (A, A, H),
    "metadata": (A, A, A),
    "service_tier": (A, A, A),
    "safety_identifier": (A, A, A),
    "prompt_cache_key": (A, A, A),
    "prompt_cache_retention": (A, A, A),
    "store": (R, R, R),
    "modalities": (R, R, R),
    "audio": (R, R, R),
    "prediction": (R, R, R),
    "reasoning_effort": (R, R, R),
    "verbosity": (R, R, R),
    "web_search_options": (R, R, R),
    "functions": (R, R, R),
    "function_call": (R, R, R),
}

# POST /v1/completions (legacy): parameter -> (llama-cpp, transformers).
COMPLETIONS: dict[str, tuple[Status, Status]] = {
    "model": (H, H),
    "prompt": (H, H),
    "stream": (H, H),
    "stream_options": (H, H),
    "max_tokens": (H, H),
    "temperature": (H, H),
    "top_p": (H, H),
    "stop": (H, H),
    "seed": (H, H),
    "n": (H, H),
    "echo": (H, H),
    "presence_penalty": (H, R),
    "frequency_penalty": (H, R),
    "logit_bias": (H, R),
    "logprobs": (R, R),
    "best_of": (R, R),
    "suffix": (R, R),
    "user": (A, A),
}

# Values that ask for nothing: a refused parameter given one of these passes.
NO_OP: dict[str, tuple[Any, ...]] = {
    "n": (1,), "best_of": (1,), "stream": (False,), "logprobs": (False, 0), "top_logprobs": (0,), "logit_bias": ({},),
    "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "tools": ([],), "tool_choice": ("none",),
    "store": (False,), "modalities": (["text"],), "suffix": ("",), "stop": ([],), "functions": ([],),
    "function_call": ("none",), "response_format": ({"type": "text"},),
}

# Fields of Raylight's own that a route documents (not OpenAI's).
EXTENSIONS: dict[str, frozenset[str]] = {"pipeline": frozenset({"thread_id"})}

ROUTE_NAMES = {"llama-cpp": "the llama-cpp runtime", "transformers": "the transformers runtime",
               "pipeline": "a Pipeline (it answers from its sources with its own model settings)"}


def status(table: Mapping[str, tuple[Status, ...]], routes: tuple[str, ...], param: str, route: str) -> Status:
    return table[param][routes.index(route)]


def _no_op(param: str, value: Any) -> bool:
    """Whether `value` asks for nothing (a bool equals only a bool: `n: true` is not `n: 1`)."""
    return any(value is quiet or (type(value) is not bool and type(quiet) is not bool and value == quiet)
               for quiet in NO_OP.get(param, ()))


def check(body: Mapping[str, Any], table: Mapping[str, tuple[Status, ...]], routes: tuple[str, ...],
          route: str) -> None:
    """Refuse (ApiError 400 naming the parameter) what `route` does not do: a parameter OpenAI does not have
    (and the route does not document), or one the table marks refused given a value that asks for something."""
    for param, value in body.items():
        if param not in table:
            if param in EXTENSIONS.get(route, ()):
                continue
            raise ApiError(400, f"Unrecognized request argument supplied: {param}", param=param,
                           code="unknown_parameter")
        if status(table, routes, param, route) == "refused" and value is not None and not _no_op(param, value):
            raise ApiError(400, f"{param}: not supported by {ROUTE_NAMES[route]}; leave it out", param=param,
                           code="unsupported_parameter")


def check_chat(body: Mapping[str, Any], route: str) -> None:
    check(body, CHAT, CHAT_ROUTES, route)


def check_completions(body: Mapping[str, Any], route: str) -> None:
    check(body, COMPLETIONS, COMPLETION_ROUTES, route)


def markdown_table(title: str, table: Mapping[str, tuple[Status, ...]], routes: tuple[str, ...]) -> str:
    """The table as Markdown (what docs/openai-compatibility.md holds between its generated markers)."""
    lines = [f"### {title}", "", "| parameter | " + " | ".join(routes) + " |",
             "| --- | " + " | ".join("---" for _ in routes) + " |"]
    lines += [f"| `{param}` | " + " | ".join(statuses) + " |" for param, statuses in table.items()]
    return "\n".join(lines) + "\n"


def markdown() -> str:
    return (markdown_table("POST /v1/chat/completions", CHAT, CHAT_ROUTES) + "\n"
            + markdown_table("POST /v1/completions (legacy)", COMPLETIONS, COMPLETION_ROUTES))
