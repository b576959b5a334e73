"""llama.cpp (llama-cpp-python) for GGUF models on CPU.

The prompt is rendered with the chat template stored in the GGUF, and tokens come from `Llama.generate`
so we count usage exactly and can stop between any two tokens (stop strings, a client that went away).
The same request gives the same answer (same seed, or temperature 0) whatever was asked before: the prompt
is evaluated afresh each time instead of reusing llama.cpp's cached prefix.
`response_format` becomes a GBNF grammar (LlamaGrammar.from_json_schema): the sampler can only pick tokens
that keep the output a valid prefix of a document matching the schema, so JSON output is guaranteed
(unless max_tokens cuts it short, which finish_reason "length" reports).
"""

from __future__ import annotations

import codecs
import json
import random
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from raylight_pipelines.serving.protocol import ApiError, ChatCompletionRequest
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Emit, Generation, drive

# Sampling knobs OpenAI does not have; a manifest may set them in engineArgs (llama-cpp-python defaults).
SAMPLING_DEFAULTS = {"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0}


# JSON-schema keywords that llama-cpp-python's schema-to-grammar converter turns into grammar rules; a
# keyword outside these (and the annotations) would be silently ignored, so such schemas are refused.
ENFORCED_KEYWORDS = {
    "type", "format", "$ref", "$defs", "definitions", "oneOf", "anyOf", "allOf", "const", "enum", "properties",
    "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems", "pattern", "minLength",
    "maxLength",
}
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly"}
# The converter's string rule admits raw control characters, which JSON forbids inside strings.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def unenforced_keywords(schema: Any, path: str = "$") -> list[str]:
    """Where `schema` uses keywords the grammar would not enforce (e.g. minimum), as JSON paths."""
    found: list[str] = []
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            found += unenforced_keywords(item, f"{path}[{i}]")
    elif isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                for name, sub in value.items():
                    found += unenforced_keywords(sub, f"{path}.{key}.{name}")
            elif key in ("const", "enum", "pattern", "format", "required", "type") or key in ANNOTATIONS:
                continue
            elif key in ENFORCED_KEYWORDS:
                found += unenforced_keywords(value, f"{path}.{key}")
            else:
                found.append(f"{path}.{key}")
    return found


@lru_cache(maxsize=64)
def grammar_for(schema_json: str) -> Any:
    """GBNF grammar for a JSON schema (cached: converting is pure and repeated schemas are common)."""
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(schema_json).replace(_LOOSE_CHAR, _JSON_CHAR)
    return LlamaGrammar.from_string(gbnf, verbose=False)


class LlamaCppRuntime(ChatRuntime):
    def __init__(self, path: Path, threads: int, engine_args: dict[str, Any]) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        args = dict(engine_args)
        self.sampling = {key: args.pop(key, default) for key, default in SAMPLING_DEFAULTS.items()}
        args.setdefault("n_ctx", 4096)
        args.setdefault("n_threads", threads)
        args.setdefault("n_threads_batch", threads)
        args.setdefault("verbose", False)
        self.llm = Llama(model_path=str(path), **args)
        self.context_length = self.llm.n_ctx()
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{path.name} has no chat template (tokenizer.chat_template) in its metadata")
        model = self.llm._model
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        self._lock = threading.Lock()

    def check(self, request: ChatCompletionRequest) -> None:
        schema = request.json_schema
        if schema is not None:
            unenforced = unenforced_keywords(schema)
            if unenforced:
                raise ApiError(400, "response_format: the llama-cpp runtime cannot enforce these JSON-schema "
                               f"keywords: {', '.join(unenforced)} (enforced: {', '.join(sorted(ENFORCED_KEYWORDS))})",
                               param="response_format", code="unsupported_schema")
            try:
                grammar_for(json.dumps(schema, sort_keys=True))
            except Exception as exc:
                raise ApiError(400, f"response_format: this JSON schema cannot be enforced: {exc}",
                               param="response_format", code="unsupported_schema") from None

    def prompt_tokens(self, request: ChatCompletionRequest) -> list[int]:
        formatted = self.formatter(messages=request.plain_messages())  # type: ignore[arg-type]
        return self.llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)

    def generate(self, request: ChatCompletionRequest, emit: Emit | None,
                 cancelled: threading.Event) -> Generation:
        import llama_cpp

        prompt = self.prompt_tokens(request)
        room = self.context_length - len(prompt)
        if room <= 0:
            raise ApiError(400, f"The messages take {len(prompt)} tokens; this model's context is "
                           f"{self.context_length}.", param="messages", code="context_length_exceeded")
        limit = min(request.token_limit or room, room)
        schema = request.json_schema
        grammar = grammar_for(json.dumps(schema, sort_keys=True)) if schema is not None else None
        vocab = self.llm._model.vocab
        produced: list[int] = []
        finish = ["stop"]

        def pieces() -> Iterator[str]:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            for token in self.llm.generate(
                prompt, temp=request.temperature, top_p=request.top_p,
                frequency_penalty=request.frequency_penalty, presence_penalty=request.presence_penalty,
                grammar=grammar, **self.sampling,
            ):
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    return
                produced.append(token)
                yield decoder.decode(self.llm.detokenize([token]))
                if len(produced) >= limit:
                    finish[0] = "length"
                    return

        with self._lock:  # one Llama context: one generation at a time
            self.llm.set_seed(request.seed if request.seed is not None else random.randint(0, 2**31 - 1))
            # Evaluate the whole prompt afresh. llama.cpp's prompt cache would reuse the previous request's
            # matching prefix and evaluate only the rest, and logits computed in batches of another shape
            # differ in their last bits: enough to change a sampled token, so the same request with the same
            # seed (or at temperature 0) could get another answer depending on what was asked before.
            self.llm.reset()
            scanner = drive(pieces(), request.stops, emit, cancelled)
        return Generation(text=scanner.text, finish_reason="stop" if scanner.stopped else finish[0],
                          prompt_tokens=len(prompt), completion_tokens=len(produced))

    def close(self) -> None:
        self.llm.close()
