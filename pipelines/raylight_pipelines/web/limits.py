"""Every limit the HTTP edge holds, in one place (docs/limits.md is the table; a test keeps the two in step).

Each is checked BEFORE the work it bounds, and a request over it is refused with 400 or 413 whose message
names the limit (`code` says which kind), never a 5xx after the work:

- MAX_TOKENS: `max_tokens` / `max_completion_tokens` (any larger is no engine's parameter; a value under it
  but over the model's context is refused with `context_length_exceeded`).
- MAX_INPUTS: inputs of one `/v1/embeddings` request (OpenAI's own limit).
- MAX_REQUEST_TOKENS: tokens of one `/v1/embeddings` request (each input counted as the model sees it, after
  truncation to its window); bounded from the text first, counted with the tokenizer only when the bound
  is over it (413 `too_many_tokens`).
- MAX_RESPONSE_BYTES: the largest answer a route builds (a Ray Serve hop carries at most 4 MiB): an
  embeddings request whose vectors would not fit is refused up front (413 `response_too_large`, with the
  number of inputs that would fit, and base64 as the smaller encoding).
- STREAM_MAX_SECONDS / STREAM_IDLE_SECONDS: a server-sent-event stream ends with an error event
  (`stream_timeout`) when it has run this long, or when its producer sent nothing for this long.
- MAX_CLIENT_REQUESTS: requests in flight from one client address on one replica; more get 429
  `too_many_requests` (a flood from one address cannot take every slot). `RAYLIGHT_MAX_CLIENT_REQUESTS`
  overrides it (0: off); loopback callers and health probes are exempt.
The body (`max_request_bytes`: 1 MiB on a model, the Pipeline's `agent.limits.maxRequestBytes`), header
size, JSON depth and body arrival time are guard.py's (MAX_HEADER_BYTES, MAX_DEPTH, BODY_TIMEOUT_S).
"""

from __future__ import annotations

import os

MAX_TOKENS = 2**31 - 1
MAX_INPUTS = 2048
MAX_RESPONSE_BYTES = 3 * 1024 * 1024
MAX_REQUEST_TOKENS = 131_072  # tokens of one embeddings or rerank request, after truncation to the window
STREAM_MAX_SECONDS = 900.0
STREAM_IDLE_SECONDS = 120.0
MAX_CLIENT_REQUESTS = 64
# An upper bound on one vector component as JSON: "-1.2345678901234567e-05" and a separator.
FLOAT_JSON_BYTES = 25
EMBEDDING_OVERHEAD_BYTES = 64  # {"object":"embedding","index":N,"embedding":[...]} around the numbers


def embedding_bytes(dimension: int, encoding: str) -> int:
    """The most bytes one embedding takes in an `/v1/embeddings` answer."""
    numbers = 4 * -(-4 * dimension // 3) + 2 if encoding == "base64" else dimension * FLOAT_JSON_BYTES
    return numbers + EMBEDDING_OVERHEAD_BYTES


def embeddings_fit(dimension: int, encoding: str) -> int:
    """How many embeddings of `dimension` fit in one answer (MAX_RESPONSE_BYTES), at most MAX_INPUTS."""
    return min(MAX_INPUTS, MAX_RESPONSE_BYTES // embedding_bytes(dimension, encoding))


def max_client_requests() -> int:
    """MAX_CLIENT_REQUESTS, or `$RAYLIGHT_MAX_CLIENT_REQUESTS` when set (0: no per-client limit)."""
    value = os.environ.get("RAYLIGHT_MAX_CLIENT_REQUESTS", "")
    return int(value) if value.strip().isdigit() else MAX_CLIENT_REQUESTS
