"""llama.cpp for GGUF models on CPU, through xllamacpp: llama.cpp's own server engine in-process (Cython,
prebuilt wheels: installing compiles nothing), built with llguidance.

The prompt is rendered and tokenized by the GGUF's own tokenizer and chat template as transformers reads them
(the renderer the transformers runtime uses), and handed to the engine as token ids, so BOS and special tokens
are exactly what the template wrote. The engine streams one token at a time with its id and logprob, so we
count usage exactly, give `logprobs`, and can stop between any two tokens (stop strings, a client that went
away). `response_format` and tool calls become llguidance grammars (runtimes.guidance) that llama.cpp's
sampler enforces: the output is always a valid prefix of a matching document.
The same request gives the same answer (same seed, or temperature 0) whatever was asked before: one slot, and
every prompt is evaluated afresh (`cache_prompt: false`) instead of reusing a cached prefix.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

from raylight.api.types import LLAMA_CPP_ENGINE_ARGS, LLAMA_CPP_SAMPLING_DEFAULTS

from raylight_pipelines.serving import tool_calls
from raylight_pipelines.serving.runtimes import guidance
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Constraint, Emit, Generation, Stream
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest


def engine_params(path: Path, threads: int, args: dict[str, Any]) -> Any:
    """xllamacpp's CommonParams for one GGUF: one slot, no warm-up run, llama.cpp's log off (its errors come
    back in the responses). `args`: engineArgs' engine settings (LLAMA_CPP_ENGINE_ARGS; admission refuses
    others)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = int(args.get("n_ctx", 4096))
    for key in ("n_batch", "n_ubatch"):
        if key in args:
            setattr(params, key, int(args[key]))
    params.cpuparams.n_threads = int(args.get("n_threads", threads))
    params.cpuparams_batch.n_threads = int(args.get("n_threads_batch", threads))
    params.n_parallel = 1
    params.warmup = False
    params.verbosity = -1
    return params


class LlamaCppRuntime(ChatRuntime):
    def __init__(self, path: Path, threads: int, engine_args: dict[str, Any]) -> None:
        import xllamacpp
        from transformers import AutoTokenizer

        args = {key: value for key, value in engine_args.items() if key != "verbose"}  # the log is off anyway
        unknown = sorted(set(args) - {*LLAMA_CPP_ENGINE_ARGS, *LLAMA_CPP_SAMPLING_DEFAULTS})
        if unknown:  # admission refuses these; a replica started another way says so too
            raise ValueError(f"engineArgs: {', '.join(unknown)} not known to the llama-cpp runtime")
        self.sampling = {key: args.pop(key, default) for key, default in LLAMA_CPP_SAMPLING_DEFAULTS.items()}
        params = engine_params(path, threads, args)
        self.context_length = int(params.n_ctx)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                                            local_files_only=True)
        if not self.tokenizer.chat_template:
            raise ValueError(f"{path.name} has no chat template (tokenizer.chat_template) in its metadata")
        self.knows_tools = tool_calls.template_knows_tools(str(self.tokenizer.chat_template))
        self.vocabulary = len(self.tokenizer)
        self.server = xllamacpp.Server(params)
        self._lltokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def lltokenizer(self) -> Any:
        if self._lltokenizer is None:
            import llguidance.hf

            self._lltokenizer = llguidance.hf.from_tokenizer(self.tokenizer)
        return self._lltokenizer

    def constraint_problem(self, constraint: Constraint) -> str | None:
        return guidance.problem(constraint, self.lltokenizer)

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                      tokenize=False))

    def tokens(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])  # the template adds BOS

    def _body(self, request: ChatCompletionRequest, prompt: list[int], limit: int,
              constraint: Constraint | None) -> dict[str, Any]:
        """The engine's completion request (llama.cpp server's /completion fields)."""
        outside = sorted(t for t in request.token_biases if not 0 <= t < self.vocabulary)
        if outside:
            raise ApiError(400, f"logit_bias: token {outside[0]} is not in this model's vocabulary of "
                           f"{self.vocabulary} tokens", param="logit_bias", code="invalid_value")
        body: dict[str, Any] = {
            "prompt": prompt, "max_tokens": limit, "stream": True, "cache_prompt": False,
            "temperature": request.temperature, "top_p": request.top_p,
            "top_k": int(self.sampling["top_k"]), "min_p": float(self.sampling["min_p"]),
            "repeat_penalty": float(self.sampling["repeat_penalty"]),
            "repeat_last_n": int(self.sampling["repeat_last_n"]),
            "presence_penalty": request.presence_penalty or 0.0,
            "frequency_penalty": request.frequency_penalty or 0.0,
            "seed": request.seed if request.seed is not None else random.randint(0, 2**31 - 1),
            # every streamed token then carries its id (exact usage) and, when asked, its alternatives
            "n_probs": max(1, request.top_logprobs or 0),
            "logit_bias": {str(token): bias for token, bias in request.token_biases.items()},
        }
        if constraint is not None:
            body["grammar"] = "%llguidance {}\n" + guidance.lark(constraint)
        return body

    def decode(self, prompt: str, request: ChatCompletionRequest, constraint: Constraint | None,
               stops: list[str], limit: int | None, emit: Emit | None, cancelled: threading.Event) -> Generation:
        tokens = self.tokens(prompt)
        room = self.context_length - len(tokens)
        if room <= 0:
            raise ApiError(400, f"The messages take {len(tokens)} tokens; this model's context is "
                           f"{self.context_length}.", param="messages", code="context_length_exceeded")
        limit = min(limit or room, room)
        body = self._body(request, tokens, limit, constraint)
        stream = Stream(stops, emit, cancelled)
        produced = [0]
        logprobs: list[dict[str, Any]] | None = [] if request.logprobs else None
        finish = ["stop"]
        failure: list[Any] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if "error" in chunk:
                failure.append(chunk["error"])
                return True
            choice = chunk["choices"][0]
            items = (choice.get("logprobs") or {}).get("content") or []
            produced[0] += len(items)
            if logprobs is not None:
                logprobs.extend(_openai_logprob(item, request.top_logprobs or 0) for item in items)
            if choice.get("finish_reason") == "length":
                finish[0] = "length"
            return stream.push(choice.get("text") or "")

        with self._lock:  # one slot: one generation at a time
            self.server.handle_completions(body, on_chunk)
        if failure:
            raise RuntimeError(f"llama.cpp refused the generation: {failure[0]}")
        if not stream.scanner.stopped and not cancelled.is_set():
            stream.end()
        return Generation(text=stream.scanner.text, finish_reason="stop" if stream.scanner.stopped else finish[0],
                          prompt_tokens=len(tokens), completion_tokens=produced[0], logprobs=logprobs,
                          stopped_by=stream.scanner.matched)


def _openai_logprob(item: dict[str, Any], top: int) -> dict[str, Any]:
    """llama.cpp's logprob item (OpenAI's shape plus the token id) as OpenAI writes it, `top` alternatives."""
    def plain(entry: dict[str, Any]) -> dict[str, Any]:
        return {"token": entry["token"], "logprob": entry["logprob"], "bytes": entry["bytes"]}

    return {**plain(item), "top_logprobs": [plain(entry) for entry in item.get("top_logprobs", [])[:top]]}
