"""The agent's LLM: any OpenAI-compatible endpoint (the Pipeline's own ModelDeployment or an external one).

One `AsyncOpenAI` client per replica, with the connection's timeout and a small retry budget; failures
become `ModelUnavailable` (the endpoint is down: HTTP 503) or `ModelTimeout` (HTTP 504), so the HTTP
layer can tell the caller the truth.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI
from raylight.api.connections import LLMConnection
from raylight_pipelines import telemetry
from raylight_pipelines.web import errors
from raylight_pipelines.web.errors import WAKING_RETRY_AFTER_MAX_S

Message = dict[str, str]
log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The LLM endpoint cannot be reached or answers with a server error."""


class ModelTimeout(ModelUnavailable):
    """The LLM endpoint did not answer within the connection's timeout."""


class ModelWaking(ModelUnavailable):
    """The model was scaled to zero (replicas.min 0) and did not take the call within its wake deadline; the
    caller is told to retry after `retry_after` seconds (HTTP 503 `model_waking` with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return str(self.args[0])


class ModelRejected(RuntimeError):
    """The LLM endpoint refused the request itself (HTTP 400/422: e.g. a prompt too long for it); `code` is
    the endpoint's error code (`context_length_exceeded`, ...) when it sent one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message, code)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0])


# Statuses that mean "not there right now" (a deleted Serve app answers 404 at its route).
_OUTAGE = {404, 408, 409, 429}


@dataclass
class Usage:
    """Token counts of every LLM call made for one request (the audit log reports them)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def add(self, prompt: int | None, completion: int | None) -> None:
        self.prompt_tokens += prompt or 0
        self.completion_tokens += completion or 0
        self.calls += 1

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "calls": self.calls}


@dataclass
class Completion:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _retry_after(exc: openai.APIStatusError) -> int:
    try:
        return max(1, int(exc.response.headers.get("retry-after", "")))
    except ValueError:
        return WAKING_RETRY_AFTER_MAX_S


def _wrap(exc: Exception, base_url: str, model: str = "", wake_s: float | None = None,
          timeout_s: float = 0.0) -> ModelUnavailable | ModelRejected:
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException) and wake_s is not None:
        # a model that scales to zero had its wake deadline on top of the call's own timeout: most likely its
        # first replica is still starting (Serve keeps starting it: a retry finds it sooner)
        waking = errors.waking(f"model {model}", wake_s + timeout_s, wake_s)
        return ModelWaking(f"{waking.message} (no answer within the wake deadline plus the call's timeout, "
                           f"{timeout_s:g} s)", waking.retry_after or 1)
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return ModelTimeout(f"model endpoint {base_url} timed out")
    if isinstance(exc, openai.APIStatusError) and exc.code == "model_waking":  # the gateway's deadline
        return ModelWaking(str(exc.message), _retry_after(exc))
    if isinstance(exc, openai.APIStatusError) and exc.status_code < 500 and exc.status_code not in _OUTAGE:
        return ModelRejected(f"model endpoint {base_url} refused the request (HTTP {exc.status_code}): "
                             f"{str(exc.message)[:200]}", exc.code if isinstance(exc.code, str) else None)
    if isinstance(exc, openai.APIStatusError):
        return ModelUnavailable(f"model endpoint {base_url} answered HTTP {exc.status_code}: "
                                f"{str(exc.message)[:200]}")
    return ModelUnavailable(f"model endpoint {base_url} is unreachable: {type(exc).__name__}")


class LLM:
    """Chat completions against one OpenAI-compatible endpoint and model name."""

    def __init__(self, model: str, base_url: str, api_key: str | None = None, timeout_seconds: float = 60.0,
                 max_retries: int = 2, max_tokens: int = 256, http_client: Any = None,
                 wake_timeout_seconds: float | None = None) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_tokens = max_tokens
        self._context_length: int | None = None
        # A model that scales to zero: a call may be held by Serve for up to the wake deadline before the first
        # replica takes it, so the client waits that much longer, and no retry starts a second wait.
        self.wake_s, self.timeout_s = wake_timeout_seconds, timeout_seconds
        self.client = AsyncOpenAI(base_url=self.base_url, api_key=api_key or "unused",
                                  timeout=timeout_seconds + (wake_timeout_seconds or 0),
                                  max_retries=max_retries if wake_timeout_seconds is None else 0,
                                  http_client=http_client)

    @classmethod
    def from_connection(cls, conn: LLMConnection, max_tokens: int = 256) -> LLM:
        """Build from Connections.llm; the API key comes only from the variable it names."""
        api_key = os.environ.get(conn.api_key_env) if conn.api_key_env else None
        return cls(conn.model, conn.base_url, api_key, conn.timeout_seconds or 60.0, max_tokens=max_tokens,
                   wake_timeout_seconds=conn.wake_timeout_seconds)

    def _wrap(self, exc: Exception) -> ModelUnavailable | ModelRejected:
        return _wrap(exc, self.base_url, self.model, self.wake_s, self.timeout_s)

    def _params(self, messages: list[Message], response_format: dict[str, Any] | None,
                max_tokens: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0.0,
                                  "max_tokens": max_tokens or self.max_tokens}
        if response_format is not None:
            params["response_format"] = response_format
        return params

    async def complete(self, messages: list[Message], response_format: dict[str, Any] | None = None,
                       max_tokens: int | None = None) -> Completion:
        try:
            resp = await self.client.chat.completions.create(
                **self._params(messages, response_format, max_tokens), extra_headers=telemetry.inject() or None)
        except (openai.APIError, httpx.HTTPError) as exc:
            raise self._wrap(exc) from exc
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        usage = resp.usage
        return Completion(text, usage.prompt_tokens if usage else None,
                          usage.completion_tokens if usage else None)

    async def stream(self, messages: list[Message], response_format: dict[str, Any] | None = None,
                     max_tokens: int | None = None) -> AsyncIterator[str | Completion]:
        """Yield text deltas, then one final `Completion` with the whole text and the usage if reported."""
        parts: list[str] = []
        prompt_tokens = completion_tokens = None
        try:
            stream = await self.client.chat.completions.create(
                **self._params(messages, response_format, max_tokens), stream=True,
                extra_headers=telemetry.inject() or None,
                stream_options={"include_usage": True})
            async for chunk in stream:
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        parts.append(delta)
                        yield delta
        except (openai.APIError, httpx.HTTPError) as exc:
            raise self._wrap(exc) from exc
        yield Completion("".join(parts), prompt_tokens, completion_tokens)

    async def ready(self) -> tuple[bool, str]:
        """Whether the endpoint can serve: it answers `GET /models` listing this model (external endpoints may
        list nothing), or it took the connection but is too busy to answer within 5 s (busy is not down: a
        slow model never flips readiness; a refused connection or an error status does). The reason names
        no URL (the probes are public); the log has it.

        A model that scales to zero (`wake_timeout_seconds` set) is not asked: a readiness probe every few
        seconds would wake it, or keep its last replica from ever going idle; a request wakes it instead."""
        if self.wake_s is not None:
            return True, ("the model scales to zero (replicas.min 0): not asked, so probes neither wake it nor "
                          "keep it awake; a request wakes it")
        try:
            models = await self.client.with_options(timeout=5.0, max_retries=0).models.list()
        except openai.APITimeoutError as exc:
            cause = type(exc.__cause__).__name__  # httpx's, or httpcore's beneath it
            if cause == "ReadTimeout":
                return True, "the model endpoint is busy (connected, no answer within 5 s)"
            if cause == "PoolTimeout":  # every connection carries a request: busy, not down
                return True, "the model endpoint is busy (every connection to it is in use)"
            return False, f"the model endpoint does not accept connections ({cause})"
        except (openai.APIError, httpx.HTTPError) as exc:
            log.warning("model readiness check failed: %s", _wrap(exc, self.base_url))
            status = f"HTTP {exc.status_code}" if isinstance(exc, openai.APIStatusError) else type(exc).__name__
            return False, f"the model endpoint is not available ({status})"
        ids = [m.id for m in models.data]
        if ids and self.model not in ids:
            return False, f"the model endpoint does not serve the model {self.model!r}"
        return True, "the model endpoint answers"

    async def context_length(self) -> int | None:
        """The model's context in tokens, as its endpoint's `GET /models` card says (`context_length` from a
        raylight ModelDeployment, `max_model_len` from vLLM); None when the endpoint does not say or does not
        answer (asked again next time). Read once, then remembered."""
        if self._context_length is None:
            try:
                models = await self.client.with_options(timeout=5.0, max_retries=0).models.list()
            except (openai.APIError, httpx.HTTPError):
                return None
            for card in models.data:
                extra = card.model_extra or {}
                value = extra.get("context_length", extra.get("max_model_len"))
                if card.id == self.model and isinstance(value, int) and value > 0:
                    self._context_length = value
        return self._context_length

    async def aclose(self) -> None:
        await self.client.close()
