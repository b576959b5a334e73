"""What the server needs from a runtime, and the stop-string logic every chat runtime shares."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from raylight_pipelines.serving.protocol import ChatCompletionRequest

Emit = Callable[[str], object]


class Embedder(Protocol):
    dimension: int
    max_tokens: int

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Normalised float32 vectors (len(texts) x dimension) and the token count of each text."""
        ...


class Reranker(Protocol):
    max_tokens: int

    def score(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, list[int]]:
        """A float32 relevance score per (query, document) pair, higher is more relevant, and each pair's
        token count."""
        ...


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length" (max_tokens reached)
    prompt_tokens: int
    completion_tokens: int


class ChatRuntime(ABC):
    """A blocking chat engine; the server runs it in a worker thread, one generation at a time."""

    context_length: int

    def check(self, request: ChatCompletionRequest) -> None:  # noqa: B027 (optional hook)
        """Refuse (ApiError) what this runtime cannot do, before any output is streamed."""

    @abstractmethod
    def generate(self, request: ChatCompletionRequest, emit: Emit | None,
                 cancelled: threading.Event) -> Generation:
        """Generate one answer; when `emit` is given call it with each new piece of text as it is made."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Free the engine's memory (graceful shutdown)."""


class StopScanner:
    """Cuts generated text at the first stop string; in streaming holds back a tail that may start one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.stopped = False
        self._emitted = 0

    def push(self, piece: str) -> str:
        """Add generated text; returns the part that is now safe to show."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self.longest)
        self.text += piece
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            self.stopped = True
            return self.flush()
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        safe = max(self._emitted, len(self.text) - hold)
        out, self._emitted = self.text[self._emitted:safe], safe
        return out

    def flush(self) -> str:
        out, self._emitted = self.text[self._emitted:], len(self.text)
        return out


def drive(pieces: Iterator[str], stops: list[str], emit: Emit | None, cancelled: threading.Event) -> StopScanner:
    """Consume a runtime's text pieces, applying stop strings, streaming through `emit`, honouring cancel.

    Returns the scanner (its `.text` is the answer, `.stopped` whether a stop string ended it). Closing the
    iterator early tells the engine to stop generating.
    """
    scanner = StopScanner(stops)
    try:
        for piece in pieces:
            out = scanner.push(piece)
            if out and emit is not None:
                emit(out)
            if scanner.stopped or cancelled.is_set():
                break
        else:
            rest = scanner.flush()
            if rest and emit is not None:
                emit(rest)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    return scanner
