"""transformers runtime: AutoModelForCausalLM + the tokenizer's chat template, for plain Hugging Face
checkpoints (a model directory, or a GGUF file that transformers de-quantises; that needs `gguf`).

Streaming comes from TextIteratorStreamer. `response_format` and tool calls are enforced by llguidance
(runtimes.guidance): before every token a logits processor masks out every token that would leave the grammar,
so the output is always a valid prefix of a matching document (complete unless max_tokens cuts it off).
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raylight_pipelines.serving import tool_calls
from raylight_pipelines.serving.runtimes import guidance
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Constraint, Emit, Generation, drive
from raylight_pipelines.serving.runtimes.embedder import limit_threads
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest


class _Guide:
    """A transformers logits processor that applies an llguidance matcher (batch size 1)."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        import llguidance.torch

        self.matcher = matcher
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)
        self.started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance.torch

        if self.started:  # the token sampled last step is the newest input id
            self.matcher.consume_token(int(input_ids[0, -1]))
        self.started = True
        if self.matcher.is_error():
            raise RuntimeError(f"constrained decoding failed: {self.matcher.get_error()}")
        llguidance.torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        llguidance.torch.apply_token_bitmask_inplace(scores, self.bitmask)
        return scores


class TransformersRuntime(ChatRuntime):
    def __init__(self, path: Path, threads: int, engine_args: dict[str, Any],
                 adapters: dict[str, Path] | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        limit_threads(threads)
        args = dict(engine_args)
        self.max_context = args.pop("max_model_len", None)
        gguf: dict[str, Any] = {}
        if path.is_file():  # a GGUF inside a package or a folder: transformers loads and de-quantises it
            gguf = {"gguf_file": path.name}
            path = path.parent
        args.setdefault("dtype", torch.float32)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **gguf)
        self.model: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **gguf, **args)
        self.adapters = sorted(adapters or {})
        if adapters:  # PEFT LoRA adapters beside the base: a request's model picks one, else the base answers
            from peft import PeftModel

            first, *rest = self.adapters
            self.model = PeftModel.from_pretrained(self.model, str(adapters[first]), adapter_name=first)
            for name in rest:
                self.model.load_adapter(str(adapters[name]), adapter_name=name)
        self.model.eval()
        if not self.tokenizer.chat_template:
            raise ValueError(f"{path} has no chat template in its tokenizer config")
        self.knows_tools = tool_calls.template_knows_tools(str(self.tokenizer.chat_template))
        self.context_length = int(self.max_context or getattr(self.model.config, "max_position_embeddings", 2048))
        self.eos_ids = {self.tokenizer.eos_token_id, *self._generation_eos()}
        self._lltokenizer: Any = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _adapter(self, name: str | None) -> Iterator[None]:
        """The named adapter active for one generation; None: the base model (adapters disabled)."""
        if not self.adapters:
            yield
        elif name is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(name)
            yield

    def _generation_eos(self) -> list[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    @property
    def lltokenizer(self) -> Any:
        if self._lltokenizer is None:
            import llguidance.hf

            self._lltokenizer = llguidance.hf.from_tokenizer(self.tokenizer)
        return self._lltokenizer

    def _grammar(self, constraint: Constraint) -> str:
        return guidance.grammar(constraint, self.lltokenizer)

    def constraint_problem(self, constraint: Constraint) -> str | None:
        return guidance.problem(constraint, self.lltokenizer)

    def check(self, request: ChatCompletionRequest) -> None:
        if request.presence_penalty or request.frequency_penalty:
            raise ApiError(400, "presence_penalty and frequency_penalty are not supported by the "
                           "transformers runtime", param="frequency_penalty", code="unsupported_parameter")
        if request.logprobs:
            raise ApiError(400, "logprobs are not supported by the transformers runtime (llama-cpp and vllm "
                           "have them)", param="logprobs", code="unsupported_parameter")
        super().check(request)

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                      tokenize=False))

    def decode(self, prompt: str, request: ChatCompletionRequest, constraint: Constraint | None,
               stops: list[str], limit: int | None, emit: Emit | None, cancelled: threading.Event) -> Generation:
        import llguidance
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        encoded: Any = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        prompt_len = int(encoded["input_ids"].shape[1])
        room = self.context_length - prompt_len
        if room <= 0:
            raise ApiError(400, f"The messages take {prompt_len} tokens; this model's context is "
                           f"{self.context_length}.", param="messages", code="context_length_exceeded")
        limit = min(limit or room, room)
        grammar = self._grammar(constraint) if constraint is not None else None
        stop_now = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop_now.is_set()

        processors = LogitsProcessorList()
        if grammar is not None:
            matcher = llguidance.LLMatcher(self.lltokenizer, grammar, log_level=0)
            processors.append(_Guide(matcher, self.lltokenizer.vocab_size))
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling: dict[str, Any] = {"do_sample": False}
        if request.temperature > 0:
            sampling = {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p, "top_k": 0}
        output: dict[str, Any] = {}

        adapter = request.model if request.model in self.adapters else None

        def run() -> None:
            try:
                with torch.inference_mode(), self._adapter(adapter):
                    output["ids"] = self.model.generate(
                        **encoded, max_new_tokens=limit, streamer=streamer, logits_processor=processors,
                        stopping_criteria=StoppingCriteriaList([_Stop()]), eos_token_id=sorted(self.eos_ids),
                        pad_token_id=self.tokenizer.eos_token_id, **sampling)
            except BaseException as exc:
                output["error"] = exc
                streamer.end()

        def pieces() -> Iterator[str]:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            try:
                yield from streamer
            finally:
                stop_now.set()
                worker.join()

        with self._lock:
            torch.manual_seed(request.seed if request.seed is not None else random.randint(0, 2**31 - 1))
            scanner = drive(pieces(), stops, emit, cancelled)
        if "error" in output:
            raise output["error"]
        new = output["ids"][0, prompt_len:].tolist()
        ended = bool(new) and new[-1] in self.eos_ids
        completion = len(new) - (1 if ended else 0)
        finish = "length" if completion >= limit and not ended else "stop"
        return Generation(text=scanner.text, finish_reason="stop" if scanner.stopped else finish,
                          prompt_tokens=prompt_len, completion_tokens=completion, stopped_by=scanner.matched)
