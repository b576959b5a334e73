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
import re
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from raylight_pipelines.serving import tool_calls
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Constraint, Emit, Generation, drive
from raylight_pipelines.serving.tool_calls import CallGrammar
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest

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


def _gbnf(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(schema_json).replace(_LOOSE_CHAR, _JSON_CHAR)


@lru_cache(maxsize=64)
def grammar_for(schema_json: str) -> Any:
    """GBNF grammar for a JSON schema (cached: converting is pure and repeated schemas are common)."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(_gbnf(schema_json), verbose=False)


def calls_gbnf(calls: CallGrammar) -> str:
    """GBNF for what follows CALL_START: a call, CALL_END, and (parallel) more calls joined by NEXT_CALL."""
    rules = re.sub(r"^root ::=", "tool-call ::=", _gbnf(calls.schema), count=1, flags=re.MULTILINE)
    more = f" ({json.dumps(tool_calls.NEXT_CALL)} tool-call)*" if calls.parallel else ""
    return f"root ::= tool-call{more} {json.dumps(tool_calls.CALL_END)}\n{rules}"


@lru_cache(maxsize=64)
def calls_grammar_for(calls: CallGrammar) -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(calls_gbnf(calls), verbose=False)


def _compiled(constraint: Constraint) -> Any:
    if isinstance(constraint, CallGrammar):
        return calls_grammar_for(constraint)
    return grammar_for(json.dumps(constraint, sort_keys=True))


def logit_bias_processors(biases: dict[int, float], vocabulary: int) -> Any:
    """`logit_bias` as a llama-cpp-python logits processor: each bias added to its token's logit before
    sampling (greedy decoding included: a bias of 100 all but forces its token, -100 all but bans it); None
    when no bias is asked. Raises ApiError 400 naming logit_bias for a token id outside the model's vocabulary."""
    if not biases:
        return None
    outside = sorted(t for t in biases if t >= vocabulary)
    if outside:
        raise ApiError(400, f"logit_bias: token {outside[0]} is not in this model's vocabulary of {vocabulary} "
                       "tokens", param="logit_bias", code="invalid_value")
    ids = np.fromiter(biases, dtype=np.int64)
    values = np.fromiter(biases.values(), dtype=np.float32)

    def bias(_input_ids: Any, scores: np.ndarray) -> np.ndarray:
        scores[ids] += values  # as OpenAI, vLLM and llama.cpp's server apply it: added to the raw logit
        return scores

    from llama_cpp import LogitsProcessorList

    return LogitsProcessorList([bias])


def token_logprobs(logits: np.ndarray, token: int, top: int, text: Callable[[int], bytes]) -> dict[str, Any]:
    """One OpenAI `logprobs.content` item from the raw logits the token was sampled from."""
    shifted = logits - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())

    def item(t: int) -> dict[str, Any]:
        raw = text(t)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": float(logprobs[t]), "bytes": list(raw)}

    best = np.argpartition(-logprobs, top)[:top] if 0 < top < len(logprobs) else np.arange(top)
    ranked = sorted(best.tolist(), key=lambda t: -logprobs[t])
    return {**item(token), "top_logprobs": [item(t) for t in ranked]}


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
        self.knows_tools = tool_calls.template_knows_tools(template)
        model = self.llm._model
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        self._lock = threading.Lock()

    def constraint_problem(self, constraint: Constraint) -> str | None:
        schema = json.loads(constraint.schema) if isinstance(constraint, CallGrammar) else constraint
        unenforced = unenforced_keywords(schema)
        if unenforced:
            return (f"the llama-cpp runtime cannot enforce these JSON-schema keywords: {', '.join(unenforced)} "
                    f"(enforced: {', '.join(sorted(ENFORCED_KEYWORDS))})")
        try:
            grammar = _compiled(constraint)
        except Exception as exc:
            return f"this JSON schema cannot be enforced: {exc}"
        if not self._parses(grammar):
            return "this JSON schema cannot be enforced: llama.cpp refused the grammar made from it"
        return None

    def _parses(self, grammar: Any) -> bool:
        """Whether llama.cpp accepts a grammar (it says so only when a sampler is made from it)."""
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self.llm._model.vocab, grammar._grammar.encode(), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return self.formatter(messages=messages, tools=tools).prompt  # type: ignore[arg-type]

    def tokens(self, prompt: str) -> list[int]:
        return self.llm.tokenize(prompt.encode(), add_bos=False, special=True)  # the template adds BOS

    def decode(self, prompt: str, request: ChatCompletionRequest, constraint: Constraint | None,
               stops: list[str], limit: int | None, emit: Emit | None, cancelled: threading.Event) -> Generation:
        import llama_cpp

        tokens = self.tokens(prompt)
        room = self.context_length - len(tokens)
        if room <= 0:
            raise ApiError(400, f"The messages take {len(tokens)} tokens; this model's context is "
                           f"{self.context_length}.", param="messages", code="context_length_exceeded")
        limit = min(limit or room, room)
        grammar = _compiled(constraint) if constraint is not None else None
        vocab = self.llm._model.vocab
        produced: list[int] = []
        logprobs: list[dict[str, Any]] | None = [] if request.logprobs else None
        finish = ["stop"]

        processors = logit_bias_processors(request.token_biases, self.llm.n_vocab())

        def pieces() -> Iterator[str]:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            for token in self.llm.generate(
                tokens, temp=request.temperature, top_p=request.top_p,
                frequency_penalty=request.frequency_penalty, presence_penalty=request.presence_penalty,
                grammar=grammar, logits_processor=processors, **self.sampling,
            ):
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    return
                produced.append(token)
                if logprobs is not None:  # the context still holds the logits this token was sampled from
                    logits = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.llm.n_vocab(),))
                    logprobs.append(token_logprobs(logits, token, request.top_logprobs or 0,
                                                   lambda t: self.llm.detokenize([t])))
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
            scanner = drive(pieces(), stops, emit, cancelled)
        return Generation(text=scanner.text, finish_reason="stop" if scanner.stopped else finish[0],
                          prompt_tokens=len(tokens), completion_tokens=len(produced), logprobs=logprobs,
                          stopped_by=scanner.matched)

    def close(self) -> None:
        self.llm.close()
