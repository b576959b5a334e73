"""What the server needs from a runtime, and what every chat runtime shares: tool calling on top of one
decoding primitive, and stop strings."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from raylight_pipelines.serving import tool_calls
from raylight_pipelines.serving.tool_calls import CallGrammar
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest

Emit = Callable[[str], object]  # receives each new piece of answer text
# What `generate` streams: a piece of answer text, or one complete tool call (the OpenAI shape).
EmitAnswer = Callable[[str | dict[str, Any]], object]
# What decoding must match: a JSON schema (the whole answer is one document), or tool calls.
Constraint = dict[str, Any] | CallGrammar


class Embedder(Protocol):
    dimension: int
    max_tokens: int
    matryoshka_dimensions: tuple[int, ...]  # shorter sizes the model was trained for (may be empty)

    def window_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text needs whole (no truncation), to compare with max_tokens."""
        ...

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Normalised float32 vectors (len(texts) x dimension) and the token count of each text."""
        ...

    def tokenizer_json(self) -> str:
        """The model's tokenizer as the text of a Hugging Face tokenizer.json (ingestion sizes chunks with it)."""
        ...

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text costs (special tokens in, truncation to max_tokens applied)."""
        ...


class Reranker(Protocol):
    max_tokens: int

    def window_tokens(self, pairs: list[tuple[str, str]]) -> list[int]:
        """Tokens each (query, document) pair needs whole (no truncation), to compare with max_tokens."""
        ...

    def score(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, list[int]]:
        """A float32 relevance score per (query, document) pair, higher is more relevant, and each pair's
        token count."""
        ...


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string), "length" (max_tokens) or "tool_calls"
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI shape, arguments as JSON text
    logprobs: list[dict[str, Any]] | None = None  # OpenAI `logprobs.content` items, when the request asks
    stopped_by: str | None = None  # the stop string that ended the text, if one did


class ChatRuntime(ABC):
    """A blocking chat engine; the server runs it in a worker thread, one generation at a time.

    A runtime supplies `render` (its chat template), `decode` (one generation from prompt text, under an
    optional grammar) and `constraint_problem`; `generate` builds tool calling on those.
    """

    context_length: int
    knows_tools: bool = False  # the chat template renders `tools` itself

    def check(self, request: ChatCompletionRequest) -> None:
        """Refuse (ApiError 400) what this runtime cannot do, before any output is streamed."""
        if request.json_schema is not None:
            self._enforceable(request.json_schema, "response_format")
        if request.tool_mode != "none":
            self._enforceable(tool_calls.call_grammar(request), "tools")

    def _enforceable(self, constraint: Constraint, param: str) -> None:
        problem = self.constraint_problem(constraint)
        if problem:
            raise ApiError(400, f"{param}: {problem}", param=param, code="unsupported_schema")

    @abstractmethod
    def constraint_problem(self, constraint: Constraint) -> str | None:
        """Why this runtime cannot enforce `constraint` (None when it can), found by compiling it."""

    @abstractmethod
    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        """The prompt text: the chat template applied to `messages` (and `tools`), generation prompt added."""

    @abstractmethod
    def decode(self, prompt: str, request: ChatCompletionRequest, constraint: Constraint | None,
               stops: list[str], limit: int | None, emit: Emit | None, cancelled: threading.Event) -> Generation:
        """Generate after `prompt` with the request's sampling, at most `limit` tokens (None: the room left),
        under `constraint`, cut at `stops`; call `emit` with each new piece of text."""

    def generate(self, request: ChatCompletionRequest, emit: EmitAnswer | None,
                 cancelled: threading.Event) -> Generation:
        """One answer; when `emit` is given call it with each new piece of text and each finished call."""
        tools = tool_calls.template_tools(request) if self.knows_tools else None
        prompt = self.render(tool_calls.template_messages(request, self.knows_tools), tools)
        if request.tool_mode == "none":
            return self.decode(prompt, request, request.json_schema, request.stops, request.token_limit, emit,
                               cancelled)
        return self._answer_or_call(prompt, request, emit, cancelled)

    def _answer_or_call(self, prompt: str, request: ChatCompletionRequest, emit: EmitAnswer | None,
                        cancelled: threading.Event) -> Generation:
        """Free text until the model opens a call (tool_choice auto), or a call at once (required, named);
        from there on the calls are decoded under the tools' grammar."""
        limit = request.token_limit
        text = Generation("", "stop", 0, 0)
        if request.tool_mode == "auto":
            text = self.decode(prompt, request, None, [*request.stops, tool_calls.OPEN], limit, emit, cancelled)
            if text.stopped_by != tool_calls.OPEN or cancelled.is_set():
                return text
            prompt += text.text
            if limit is not None:
                limit -= text.completion_tokens
                if limit <= 0:
                    text.finish_reason = "length"
                    return text
        reader = tool_calls.CallReader()

        def read(piece: str) -> None:
            for call in reader.push(piece):
                if emit is not None:
                    emit(call)

        calls = self.decode(prompt + tool_calls.CALL_START, request, tool_calls.call_grammar(request), [], limit,
                            read, cancelled)
        logprobs = None if calls.logprobs is None else [*(text.logprobs or []), *calls.logprobs]
        finish = "length" if calls.finish_reason == "length" else "tool_calls" if reader.calls else "stop"
        return Generation(text=text.text, finish_reason=finish,
                          prompt_tokens=text.prompt_tokens or calls.prompt_tokens,
                          completion_tokens=text.completion_tokens + calls.completion_tokens,
                          tool_calls=reader.calls, logprobs=logprobs)

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Free the engine's memory (graceful shutdown)."""


class StopScanner:
    """Cuts generated text at the first stop string; in streaming holds back a tail that may start one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string found
        self._emitted = 0

    def push(self, piece: str) -> str:
        """Add generated text; returns the part that is now safe to show."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self.longest)
        self.text += piece
        hits = [(i, s) for i, s in ((self.text.find(s, start), s) for s in self.stops) if i >= 0]
        if hits:
            at, self.matched = min(hits)
            self.text = self.text[:at]
            self.stopped = True
            return self.flush()
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        safe = max(self._emitted, len(self.text) - hold)
        out, self._emitted = self.text[self._emitted:safe], safe
        return out

    def flush(self) -> str:
        out, self._emitted = self.text[self._emitted:], len(self.text)
        return out


class Stream:
    """Where a runtime's text pieces go, one by one: stop strings applied, new text streamed through `emit`.
    `push` says when generation should stop (a stop string matched, or the request was cancelled); `end` sends
    the held-back tail once the engine has finished on its own. `.scanner.text` is the answer."""

    def __init__(self, stops: list[str], emit: Emit | None, cancelled: threading.Event) -> None:
        self.scanner = StopScanner(stops)
        self.emit, self.cancelled = emit, cancelled

    def push(self, piece: str) -> bool:
        out = self.scanner.push(piece)
        if out and self.emit is not None:
            self.emit(out)
        return self.scanner.stopped or self.cancelled.is_set()

    def end(self) -> None:
        rest = self.scanner.flush()
        if rest and self.emit is not None:
            self.emit(rest)


def drive(pieces: Iterator[str], stops: list[str], emit: Emit | None, cancelled: threading.Event) -> StopScanner:
    """Consume a runtime's text pieces, applying stop strings, streaming through `emit`, honouring cancel.

    Returns the scanner (its `.text` is the answer, `.stopped` whether a stop string ended it). Closing the
    iterator early tells the engine to stop generating.
    """
    stream = Stream(stops, emit, cancelled)
    try:
        for piece in pieces:
            if stream.push(piece):
                break
        else:
            stream.end()
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    return stream.scanner
