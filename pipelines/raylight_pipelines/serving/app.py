"""The Serve application for one ModelDeployment on the CPU runtimes (sentence-transformers, llama.cpp,
transformers), OpenAI-compatible.

`build_app(args)` is the import path (`raylight.api.names.MODEL_APP_IMPORT`) that the control plane writes
into the Serve config, with `raylight.api.serve.ModelAppArgs` as args (the deployment's name and its resolved
spec, camelCase). It builds ONE deployment, `ModelServer` (`names.MODEL_DEPLOYMENT`), and binds the options
that deployment owns: `raylight.api.serve.model_deployment_options(spec)`, computed there once.

HTTP routes (relative to the application's route prefix):
  POST /v1/embeddings         task embed; `input` a string, a list of strings, or OpenAI token ids (decoded
                              with cl100k_base); over the window: 400 unless `truncate: true`; `dimensions`
                              the model's own or a Matryoshka size it was trained for
  POST /v1/rerank             task rerank; {"query", "documents", "top_n"?, "return_documents"?, "truncate"?} ->
                              {"results": [{"index", "relevance_score", "document"?}], "usage"} (Cohere/Jina)
  POST /v1/completions        task chat, legacy: `prompt` (a string or a list) continued without the chat
                              template; max_tokens (default 16), stop, n, echo, seed, stream as on OpenAI
  POST /v1/chat/completions   task chat; `stream: true` answers with server-sent events; tools, logprobs and
                              n > 1 as in docs/tool-calling.md (choices are generated one after another)
  GET  /v1/models             this model: id (= deployment name), runtime, weights sha256, dimension; then
                              each LoRA adapter as its own entry (`parent`: this model, `root`: its source)
  GET  /v1/models/{id}        one of those entries (404 model_not_found naming the others)
  GET  /v1/tokenizer?model=M  task embed: {"model", "max_tokens", "tokenizer": <tokenizer.json>}, so that
                              ingestion sizes chunks with the embedder's own tokenizer and window
  GET  /healthz               200 once the model is loaded
Every route sits behind `guard` (bodies over MODEL_MAX_REQUEST_BYTES, invalid Unicode, deep nesting, oversize
headers, slow bodies: a 4xx) and refuses with the OpenAI error body {"error": {"message", "type", "param",
"code"}}: 400 for a bad request (`max_tokens` over the model's context included), 404 when `model` names
another model. A client that goes away stops the generation at its next token, streaming or not.

The same operations are plain async methods, for other Serve applications (the local single-port
gateway) that hold a DeploymentHandle to `ModelServer`:
  await handle.embeddings.remote(body)            -> dict (the /v1/embeddings response); body: dict or raw bytes
  await handle.rerank.remote(body)                -> dict (the /v1/rerank response)
  await handle.chat_completions.remote(body)      -> dict (`stream` in the body is ignored)
  await handle.completions.remote(body)           -> dict (legacy /v1/completions; `stream` ignored)
  async for line in handle.options(stream=True).completions_stream.remote(body): ...
  async for line in handle.options(stream=True).chat_completions_stream.remote(body):
      ...                                         -> str, SSE lines "data: {...}\\n\\n" ending "data: [DONE]"
  await handle.models.remote()                    -> dict (the /v1/models response)
  await handle.model.remote(id)                   -> dict (the /v1/models/{id} entry)
Each raises `errors.ApiError` on a bad request (Ray re-raises it as a subclass of ApiError: use
`.status` and `.body()`). The stream method checks the request before its first line, so an invalid body
raises on the first iteration, not halfway through an answer.
"""

# No `from __future__ import annotations`: FastAPI must see real types on the ingress methods.
import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from raylight.api.connections import ResponseStoreConnection
from raylight.api.names import MODEL_DEPLOYMENT
from raylight.api.serve import ModelAppArgs, model_deployment_options
from raylight.api.types import ModelDeploymentSpec

from raylight_pipelines import telemetry
from raylight_pipelines.serving import windows
from raylight_pipelines.serving.loading import load_model
from raylight_pipelines.serving.runtimes.base import ChatRuntime, Embedder, Generation, Reranker
from raylight_pipelines.web import (
    guard,
    limits,
    models,
    openapi,
    parameters,
    protocol,
    response_store,
    responses,
    responses_api,
    server,
)
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import (
    MODEL_MAX_REQUEST_BYTES,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
    RerankRequest,
)

logger = logging.getLogger("ray.serve")

api = server.app("raylight model server")


def _per_request(rows: np.ndarray, counts: list[int], sizes: list[int]) -> list[tuple[np.ndarray, list[int]]]:
    """One batched forward pass's output split back into each request's rows and token counts."""
    out, start = [], 0
    for size in sizes:
        out.append((rows[start:start + size], counts[start:start + size]))
        start += size
    return out


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, what the OpenAI client decodes
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return [float(x) for x in vector]


def choice_requests(request: ChatCompletionRequest) -> list[ChatCompletionRequest]:
    """One request per choice (`n`), made one after another; a given seed becomes seed, seed+1, ..."""
    if request.n == 1:
        return [request]
    return [request.model_copy(update={"seed": None if request.seed is None else request.seed + i})
            for i in range(request.n)]


@serve.deployment(name=MODEL_DEPLOYMENT, graceful_shutdown_timeout_s=30, health_check_period_s=10)
@serve.ingress(api)
class ModelServer(server.Edge):
    span_prefix = "model"
    max_request_bytes = MODEL_MAX_REQUEST_BYTES

    def __init__(self, name: str, spec: ModelDeploymentSpec | dict[str, Any],
                 responses_store: ResponseStoreConnection | dict[str, Any] | None = None) -> None:
        telemetry.configure_tracing("raylight-model")
        telemetry.serve_metrics()
        self.name = name
        self.spec = ModelDeploymentSpec.model_validate(spec)
        self.task = self.spec.task
        self.runtime_name = self.spec.resolved_runtime
        loaded = load_model(name, self.spec)  # raises ModelLoadError with the reason
        self.loaded = loaded
        self.created = int(time.time())
        self._generate_lock = asyncio.Lock()  # an engine makes one answer at a time
        self._responses_conn = ResponseStoreConnection.model_validate(responses_store or {})
        self._response_store: response_store.ResponseStore | None = None
        self._stats = {"embed_requests": 0, "embed_batches": 0, "embed_texts": 0, "rerank_requests": 0,
                       "rerank_batches": 0, "rerank_pairs": 0, "chat_requests": 0, "generations_cancelled": 0}

    # ------------------------------------------------------------ plain methods (also for handles)

    async def models(self) -> dict[str, Any]:
        assert self.spec.model is not None
        card: dict[str, Any] = {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "raylight",
            "task": self.task,
            "runtime": self.runtime_name,
            "source": self.spec.model.source,
            "revision": self.spec.model.revision,
            "weights_sha256": self.loaded.sha256,
        }
        runtime = self.loaded.runtime
        if self.task == "embed":
            card["dimension"] = runtime.dimension  # type: ignore[union-attr]
            card["max_input_tokens"] = runtime.max_tokens  # type: ignore[union-attr]
        elif self.task == "rerank":
            card["max_input_tokens"] = runtime.max_tokens  # type: ignore[union-attr]
        else:
            card["context_length"] = runtime.context_length  # type: ignore[union-attr]
        # LoRA adapters are entries of their own (a request selects one with its model), parent: this model.
        entries = models.model_entries(card, [(a.name, a.source or a.fine_tune) for a in self.spec.adapters])
        return {"object": "list", "data": entries}

    async def model(self, model: str) -> dict[str, Any]:
        """The `/v1/models/{model}` entry: this model or one of its adapters; 404 naming them otherwise."""
        entries = (await self.models())["data"]
        return models.find_entry(entries, model, ", ".join(e["id"] for e in entries))

    async def tokenizer(self, model: str | None = None) -> dict[str, Any]:
        if model is not None and model != self.name:
            raise protocol.unknown_model(model, self.name)
        if self.task != "embed":
            raise ApiError(400, f"Model '{self.name}' is a chat model; it does not serve /v1/tokenizer.",
                           param="model", code="wrong_task")
        embedder: Embedder = self.loaded.runtime  # type: ignore[assignment]
        return {"object": "tokenizer", "model": self.name, "max_tokens": embedder.max_tokens,
                "tokenizer": json.loads(embedder.tokenizer_json())}

    def request_attributes(self, route: str) -> dict[str, Any]:
        return {"raylight.model": self.name, "raylight.route": route, "raylight.task": self.task}

    def request_done(self, route: str, status: int, seconds: float, span: Any) -> None:
        telemetry.MODEL_REQUESTS.labels(self.name, route, str(status)).inc()
        telemetry.MODEL_REQUEST_SECONDS.labels(self.name, route).observe(seconds)

    def _tokens(self, prompt: int, completion: int = 0, seconds: float | None = None) -> None:
        if prompt:
            telemetry.MODEL_TOKENS.labels(self.name, "prompt").inc(prompt)
        if completion:
            telemetry.MODEL_TOKENS.labels(self.name, "completion").inc(completion)
            if seconds:
                telemetry.MODEL_TOKENS_PER_SECOND.labels(self.name).observe(completion / seconds)

    @contextlib.asynccontextmanager
    async def _engine(self) -> Any:
        """The engine, one generation at a time; waiting requests count in raylight_model_queue_depth."""
        queue = telemetry.MODEL_QUEUE_DEPTH.labels(self.name)
        queue.inc()
        try:
            await self._generate_lock.acquire()
        finally:
            queue.dec()
        try:
            yield
        finally:
            self._generate_lock.release()

    async def metrics(self) -> str:
        """This replica's metrics (Prometheus text), for a gateway that serves one /metrics for all apps."""
        return telemetry.exposition()

    async def stats(self) -> dict[str, int]:
        """Counters of this replica (requests, forward passes, generations stopped because the caller went away)."""
        return dict(self._stats)

    def _check_task(self, task: str, route: str) -> None:
        if self.task != task:
            raise ApiError(400, f"Model '{self.name}' is a {self.task} model; it does not serve {route}.",
                           param="model", code="wrong_task")

    def _parse(self, model: type[Any], body: dict[str, Any] | bytes) -> Any:
        return protocol.parse(model, self.load(body), self.name, [a.name for a in self.spec.adapters])

    async def embeddings(self, body: dict[str, Any] | bytes,
                         trace_headers: dict[str, str] | None = None) -> dict[str, Any]:
        with self.observed("embeddings", trace_headers):
            return await self._embeddings(body)

    async def _embeddings(self, body: dict[str, Any] | bytes) -> dict[str, Any]:
        self._check_task("embed", "/v1/embeddings")
        request: EmbeddingsRequest = self._parse(EmbeddingsRequest, body)
        embedder: Embedder = self.loaded.runtime  # type: ignore[assignment]
        size = windows.embedding_size(self.name, embedder.dimension, embedder.matryoshka_dimensions,
                                      request.dimensions)
        texts = request.texts
        fit = limits.embeddings_fit(size, request.encoding_format)
        if len(texts) > fit:  # refused before any work: the answer could not be sent
            more = limits.embeddings_fit(size, "base64")
            hint = f", or encoding_format base64 (up to {more})" if request.encoding_format == "float" and more > fit \
                else ""
            raise ApiError(413, f"input: {len(texts)} embeddings of {size} dimensions as "
                           f"{request.encoding_format} would make an answer over {limits.MAX_RESPONSE_BYTES} bytes "
                           f"(limit max_response_bytes); send at most {fit} inputs per request{hint}",
                           param="input", code="response_too_large")
        if not request.truncate:
            needed = await asyncio.to_thread(embedder.window_tokens, texts)
            windows.refuse_over_window(self.name, needed, embedder.max_tokens, "input")
        await self._check_tokens(texts, embedder)
        self._stats["embed_requests"] += 1
        vectors, counts = await self._embed_batch(texts)
        if size != embedder.dimension:
            vectors = windows.shortened(vectors, size)
        tokens = sum(counts)
        self._tokens(tokens)
        return {
            "object": "list",
            "model": self.name,
            "data": [{"object": "embedding", "index": i, "embedding": _encode_vector(v, request.encoding_format)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _check_tokens(self, texts: list[str], embedder: Embedder) -> None:
        """Refuse (413 `too_many_tokens`) a request over limits.MAX_REQUEST_TOKENS before embedding it: a
        text costs at most its UTF-8 length + 2 tokens and at most the window; the tokenizer counts only when
        that bound is over the limit."""
        bound = sum(min(len(t.encode()) + 2, embedder.max_tokens) for t in texts)
        if bound <= limits.MAX_REQUEST_TOKENS:
            return
        counted = sum(await asyncio.to_thread(embedder.token_counts, texts))
        if counted > limits.MAX_REQUEST_TOKENS:
            raise ApiError(413, f"input: {counted} tokens (after truncation to the model's {embedder.max_tokens}-"
                           f"token window) over the {limits.MAX_REQUEST_TOKENS} tokens one request may carry "
                           "(limit max_request_tokens)", param="input", code="too_many_tokens")

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _embed_batch(self, requests: list[list[str]]) -> list[tuple[np.ndarray, list[int]]]:
        """Concurrent requests share one forward pass; each gets its own rows back."""
        embedder: Embedder = self.loaded.runtime  # type: ignore[assignment]
        flat = [text for texts in requests for text in texts]
        self._stats["embed_batches"] += 1
        self._stats["embed_texts"] += len(flat)
        telemetry.MODEL_BATCH_SIZE.labels(self.name, "embed").observe(len(flat))
        vectors, counts = await asyncio.to_thread(embedder.embed, flat)
        return _per_request(vectors, counts, [len(texts) for texts in requests])

    async def rerank(self, body: dict[str, Any] | bytes,
                     trace_headers: dict[str, str] | None = None) -> dict[str, Any]:
        with self.observed("rerank", trace_headers):
            return await self._rerank(body)

    async def _rerank(self, body: dict[str, Any] | bytes) -> dict[str, Any]:
        self._check_task("rerank", "/v1/rerank")
        request: RerankRequest = self._parse(RerankRequest, body)
        reranker: Reranker = self.loaded.runtime  # type: ignore[assignment]
        texts = request.texts
        if not request.truncate:
            needed = await asyncio.to_thread(reranker.window_tokens, [(request.query, t) for t in texts])
            windows.refuse_over_window(self.name, needed, reranker.max_tokens, "documents")
        self._stats["rerank_requests"] += 1
        scores, counts = await self._rerank_batch([(request.query, t) for t in texts])
        self._tokens(sum(counts))
        return responses.rerank_response(self.name, texts, [float(s) for s in scores], request.top_n,
                                        request.return_documents, sum(counts))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.003)
    async def _rerank_batch(self, requests: list[list[tuple[str, str]]]) -> list[tuple[np.ndarray, list[int]]]:
        """Concurrent requests' pairs share the forward passes; each gets its own scores back."""
        reranker: Reranker = self.loaded.runtime  # type: ignore[assignment]
        flat = [pair for pairs in requests for pair in pairs]
        self._stats["rerank_batches"] += 1
        self._stats["rerank_pairs"] += len(flat)
        telemetry.MODEL_BATCH_SIZE.labels(self.name, "rerank").observe(len(flat))
        scores, counts = await asyncio.to_thread(reranker.score, flat)
        return _per_request(scores, counts, [len(pairs) for pairs in requests])

    def _chat_request(self, body: dict[str, Any] | bytes) -> ChatCompletionRequest:
        self._stats["chat_requests"] += 1
        self._check_task("chat", "/v1/chat/completions")
        loaded = self.load(body)
        request: ChatCompletionRequest = self._parse(ChatCompletionRequest, loaded)
        parameters.check_chat(loaded, self.runtime_name)  # what this runtime does not do: 400 naming it
        context = self._chat_runtime.context_length
        if request.token_limit is not None and request.token_limit >= context:
            param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise ApiError(400, f"{param}: {request.token_limit} tokens do not fit this model's context of "
                           f"{context} tokens (the prompt needs some too)", param=param,
                           code="context_length_exceeded")
        self._chat_runtime.check(request)
        return request

    @property
    def _chat_runtime(self) -> ChatRuntime:
        return self.loaded.runtime  # type: ignore[return-value]

    async def chat_completions(self, body: dict[str, Any] | bytes,
                               trace_headers: dict[str, str] | None = None) -> dict[str, Any]:
        with self.observed("chat", trace_headers):
            return await self._chat_completions(body)

    async def _chat_completions(self, body: dict[str, Any] | bytes) -> dict[str, Any]:
        request = self._chat_request(body)
        results: list[Generation] = []
        cancelled = threading.Event()
        async with self._engine():
            started = time.perf_counter()
            try:
                for one in choice_requests(request):
                    results.append(await asyncio.to_thread(self._chat_runtime.generate, one, None, cancelled))
            except asyncio.CancelledError:
                cancelled.set()  # the caller went away: the engine stops at its next token
                self._stats["generations_cancelled"] += 1
                raise
            self._tokens(results[0].prompt_tokens, sum(r.completion_tokens for r in results),
                         time.perf_counter() - started)
        choices = [responses.choice(i, r.text, r.finish_reason, r.tool_calls, r.logprobs)
                   for i, r in enumerate(results)]
        return responses.chat_completion(responses.completion_id(), request.model, choices, results[0].prompt_tokens,
                                        sum(r.completion_tokens for r in results))

    async def chat_completions_stream(self, body: dict[str, Any] | bytes,
                                      trace_headers: dict[str, str] | None = None) -> AsyncGenerator[str]:
        lines = self.observed_stream("chat", lambda: self._stream(self._chat_request(body)), trace_headers)
        async with contextlib.aclosing(lines):  # a caller that goes away stops it now
            async for line in lines:
                yield line

    async def _stream(self, request: ChatCompletionRequest) -> AsyncGenerator[str]:
        """Run the engine in a thread and relay its text pieces and tool calls as SSE chunks, one choice
        after another; stop it if the client goes."""
        cid, created = responses.completion_id(), int(time.time())
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | dict[str, Any] | Generation | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: str | dict[str, Any] | Generation | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:  # the choices one after another; each ends with its Generation (or an error)
            for one in choice_requests(request):
                try:
                    put(self._chat_runtime.generate(one, put, cancelled))
                except BaseException as exc:  # relayed to the client as an error event
                    put(exc)
                    return
                if cancelled.is_set():
                    return

        def chunk(index: int, delta: dict[str, Any], **extra: Any) -> str:
            return responses.sse(responses.chat_chunk(cid, request.model, created, delta, index=index, **extra))

        async with self._engine():
            started = time.perf_counter()
            task = loop.run_in_executor(None, work)
            try:
                prompt_tokens = completion_tokens = 0
                pending: Any = await queue.get()  # the first piece, result or refusal, before any byte is sent
                if isinstance(pending, ApiError):
                    raise pending  # e.g. a prompt longer than the context keeps its HTTP status
                for index in range(request.n):
                    yield chunk(index, {"role": "assistant", "content": ""})
                    calls = 0
                    while True:
                        item, pending = (pending if pending is not None else await queue.get()), None
                        if isinstance(item, str):
                            yield chunk(index, {"content": item})
                        elif isinstance(item, dict):
                            for delta in responses.tool_call_deltas(calls, item):
                                yield chunk(index, delta)
                            calls += 1
                        elif isinstance(item, BaseException):
                            error = item if isinstance(item, ApiError) else guard.internal_error(
                                f"model {self.name}: generation", item)
                            yield responses.sse_error(error)
                            return
                        else:
                            if item.logprobs is not None:  # the whole answer's token logprobs, in one chunk
                                yield chunk(index, {}, logprobs=item.logprobs)
                            yield chunk(index, {}, finish_reason=item.finish_reason)
                            prompt_tokens = item.prompt_tokens
                            completion_tokens += item.completion_tokens
                            break
                self._tokens(prompt_tokens, completion_tokens, time.perf_counter() - started)
                if request.stream_options and request.stream_options.include_usage:
                    usage = responses.usage(prompt_tokens, completion_tokens)
                    yield responses.sse(responses.chat_chunk(cid, request.model, created, {}, usage_=usage))
                yield responses.SSE_DONE
            finally:
                if not task.done():  # a client that disconnects stops the engine at its next token
                    cancelled.set()
                    self._stats["generations_cancelled"] += 1
                await task

    # ------------------------------------------------------------ legacy completions

    def _completion_request(self, body: dict[str, Any] | bytes) -> CompletionRequest:
        self._check_task("chat", "/v1/completions")
        loaded = self.load(body)
        request: CompletionRequest = self._parse(CompletionRequest, loaded)
        parameters.check_completions(loaded, self.runtime_name)
        context = self._chat_runtime.context_length
        if request.max_tokens is not None and request.max_tokens >= context:
            raise ApiError(400, f"max_tokens: {request.max_tokens} tokens do not fit this model's context of "
                           f"{context} tokens (the prompt needs some too)", param="max_tokens",
                           code="context_length_exceeded")
        return request

    def _completion_work(self, request: CompletionRequest) -> list[tuple[int, str, Any]]:
        """(choice index, prompt, sampling request) for each prompt and each of its `n` choices, in order."""
        return [(p * request.n + i, prompt, request.sampling(None if request.seed is None else request.seed + i))
                for p, prompt in enumerate(request.prompts) for i in range(request.n)]

    def _decode_text(self, prompt: str, sampling: ChatCompletionRequest, request: CompletionRequest,
                     emit: Any, cancelled: threading.Event) -> Generation:
        try:
            return self._chat_runtime.decode(prompt, sampling, None, request.stops, request.max_tokens, emit,
                                             cancelled)
        except ApiError as exc:
            if exc.param == "messages":  # the runtime speaks of messages; this route has a prompt
                raise ApiError(exc.status, exc.message.replace("The messages take", "The prompt takes"),
                               param="prompt", code=exc.code) from None
            raise

    async def completions(self, body: dict[str, Any] | bytes,
                          trace_headers: dict[str, str] | None = None) -> dict[str, Any]:
        """`POST /v1/completions` (legacy): the prompt's text continued, no chat template."""
        with self.observed("completions", trace_headers):
            request = self._completion_request(body)
            choices: list[dict[str, Any]] = []
            prompt_tokens = completion_tokens = 0
            cancelled = threading.Event()
            async with self._engine():
                try:
                    for index, prompt, sampling in self._completion_work(request):
                        result = await asyncio.to_thread(self._decode_text, prompt, sampling, request, None,
                                                         cancelled)
                        choices.append({"index": index, "text": (prompt if request.echo else "") + result.text,
                                        "finish_reason": result.finish_reason, "logprobs": None})
                        prompt_tokens += result.prompt_tokens if index % request.n == 0 else 0
                        completion_tokens += result.completion_tokens
                except asyncio.CancelledError:
                    cancelled.set()
                    self._stats["generations_cancelled"] += 1
                    raise
            self._tokens(prompt_tokens, completion_tokens)
            return responses.text_completion(responses.new_id("cmpl"), request.model, choices,
                                            prompt_tokens, completion_tokens)

    async def completions_stream(self, body: dict[str, Any] | bytes,
                                 trace_headers: dict[str, str] | None = None) -> AsyncGenerator[str]:
        lines = self.observed_stream("completions", lambda: self._completion_lines(self._completion_request(body)),
                                     trace_headers)
        async with contextlib.aclosing(lines):
            async for line in lines:
                yield line

    # ------------------------------------------------------------ the Responses API (web.responses_api)

    def _responses(self) -> responses_api.Responses:
        """`/v1/responses` over this model's own chat completions (validation, tools, JSON schema, limits)."""
        if self._response_store is None:
            self._response_store = response_store.open_connection(self._responses_conn)
        return responses_api.Responses(self._response_store, self._chat_completions,
                                       lambda body: self._stream(self._chat_request(body)))

    async def responses_create(self, body: dict[str, Any] | bytes,
                               trace_headers: dict[str, str] | None = None) -> dict[str, Any]:
        """POST /v1/responses (not streamed): the response object; refusals raise ApiError."""
        with self.observed("responses", trace_headers):
            api = self._responses()
            return await api.create(api.prepare(self.load(body)))

    async def responses_stream(self, body: dict[str, Any] | bytes,
                               trace_headers: dict[str, str] | None = None) -> AsyncGenerator[str]:
        """POST /v1/responses with `stream: true`: the typed events as SSE strings."""
        def make() -> AsyncGenerator[str]:
            api = self._responses()
            return api.create_stream(api.prepare(self.load(body)))
        lines = self.observed_stream("responses", make, trace_headers)
        async with contextlib.aclosing(lines):
            async for line in lines:
                yield line

    async def _completion_lines(self, request: CompletionRequest) -> AsyncGenerator[str]:
        """The completions as SSE chunks (`object: text_completion`), one choice after another."""
        cid, created = responses.new_id("cmpl"), int(time.time())
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | Generation | BaseException] = asyncio.Queue()
        cancelled = threading.Event()
        work = self._completion_work(request)

        def put(item: str | Generation | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            for _, prompt, sampling in work:
                try:
                    put(self._decode_text(prompt, sampling, request, put, cancelled))
                except BaseException as exc:
                    put(exc)
                    return
                if cancelled.is_set():
                    return

        def chunk(index: int, text: str, finish: str | None = None) -> str:
            return responses.sse(responses.text_completion(cid, request.model, [
                {"index": index, "text": text, "finish_reason": finish, "logprobs": None}], 0, 0, created, True))

        async with self._engine():
            task = loop.run_in_executor(None, run)
            try:
                prompt_tokens = completion_tokens = 0
                first: Any = await queue.get()
                if isinstance(first, ApiError):
                    raise first
                pending: Any = first
                for index, prompt, _ in work:
                    if request.echo:
                        yield chunk(index, prompt)
                    while True:
                        item, pending = (pending if pending is not None else await queue.get()), None
                        if isinstance(item, str):
                            yield chunk(index, item)
                        elif isinstance(item, BaseException):
                            error = item if isinstance(item, ApiError) else guard.internal_error(
                                f"model {self.name}: completion", item)
                            yield responses.sse_error(error)
                            return
                        else:
                            yield chunk(index, "", item.finish_reason)
                            prompt_tokens += item.prompt_tokens if index % request.n == 0 else 0
                            completion_tokens += item.completion_tokens
                            break
                self._tokens(prompt_tokens, completion_tokens)
                if request.stream_options and request.stream_options.include_usage:
                    yield responses.sse(responses.text_completion(cid, request.model, [], prompt_tokens,
                                                                  completion_tokens, created, True))
                yield responses.SSE_DONE
            finally:
                if not task.done():
                    cancelled.set()
                    self._stats["generations_cancelled"] += 1
                await task

    async def responses_get(self, response_id: str) -> dict[str, Any]:
        with self.observed("responses"):
            return await self._responses().get(response_id)

    async def responses_delete(self, response_id: str) -> dict[str, Any]:
        with self.observed("responses"):
            return await self._responses().delete(response_id)

    def check_health(self) -> None:
        if self.loaded is None:
            raise RuntimeError(f"model {self.name} is not loaded")

    def __del__(self) -> None:
        # Serve calls this after draining in-flight requests (graceful shutdown): free the engine.
        loaded = getattr(self, "loaded", None)
        if loaded is not None and hasattr(loaded.runtime, "close"):
            loaded.runtime.close()

    # ------------------------------------------------------------ HTTP routes

    @api.get("/healthz")
    async def http_healthz(self) -> dict[str, str]:
        return {"status": "ok", "model": self.name}

    @api.get("/v1/models")
    async def http_models(self) -> dict[str, Any]:
        return await self.models()

    @api.get("/v1/tokenizer")
    async def http_tokenizer(self, model: str | None = None) -> Response:
        return JSONResponse(await self.tokenizer(model))

    @api.get("/v1/models/{model:path}")
    async def http_model(self, model: str) -> Response:
        return JSONResponse(await self.model(model))

    @api.post("/v1/embeddings")
    async def http_embeddings(self, request: Request) -> Response:
        return JSONResponse(await self.embeddings(await self.read(request)))

    @api.post("/v1/rerank")
    async def http_rerank(self, request: Request) -> Response:
        return JSONResponse(await self.rerank(await self.read(request)))

    @api.post("/v1/completions")
    async def http_completions(self, request: Request) -> Response:
        body = self.load(await self.read(request))
        if body.get("stream") is True:
            return await guard.sse_response(self.completions_stream(body))
        return JSONResponse(await self.completions(body))

    @api.post("/v1/chat/completions")
    async def http_chat_completions(self, request: Request) -> Response:
        body = self.load(await self.read(request))
        if body.get("stream") is True:
            return await guard.sse_response(self.chat_completions_stream(body))
        return JSONResponse(await self.chat_completions(body))

    @api.post("/v1/responses")
    async def http_responses(self, request: Request) -> Response:
        body = self.load(await self.read(request))
        if body.get("stream") is True:
            return await guard.sse_response(self.responses_stream(body), responses_api.sse_error_event)
        return JSONResponse(await self.responses_create(body))

    @api.get("/v1/responses/{response_id}")
    async def http_responses_get(self, response_id: str) -> Response:
        return JSONResponse(await self.responses_get(response_id))

    @api.delete("/v1/responses/{response_id}")
    async def http_responses_delete(self, response_id: str) -> Response:
        return JSONResponse(await self.responses_delete(response_id))


# The routes' statuses besides 200, each in the OpenAI error shape.
ERRORS = {
    "400": "invalid JSON, Unicode, nesting or field, a task this model does not serve, or over the context "
           "(the message names each field and limit)",
    "404": "no such model (`model` names another one) or route",
    "405": "wrong method (`Allow` says which)",
    "408": "the body did not arrive in time",
    "413": "the body, the tokens or the answer over a limit (docs/limits.md)",
    "429": "too many requests from this client in flight",
    "431": "the headers are too large",
}


def operations() -> dict[str, openapi.Operation]:
    """The model app's routes for its /openapi.json: request and response models of web/protocol and
    web/responses (the ones the handlers validate with and build). Routes added to `api` add theirs here."""
    return {
        "embeddings": openapi.Operation("post", "/v1/embeddings", responses.EmbeddingList, EmbeddingsRequest),
        "rerank": openapi.Operation("post", "/v1/rerank", responses.RerankList, RerankRequest),
        "chatCompletions": openapi.Operation("post", "/v1/chat/completions", responses.ChatCompletion,
                                             ChatCompletionRequest, stream=openapi.DATA_SSE),
        "completions": openapi.Operation("post", "/v1/completions", responses.TextCompletion, CompletionRequest,
                                         stream=openapi.DATA_SSE),
        "listModels": openapi.Operation("get", "/v1/models", responses.ModelList),
        "getModel": openapi.Operation("get", "/v1/models/{model}", responses.ModelCard),
        "tokenizer": openapi.Operation("get", "/v1/tokenizer", responses.Tokenizer),
        "healthz": openapi.Operation("get", "/healthz", responses.Health),
        # the Responses API (web/responses_api): its request model; the Response object as JSON
        "createResponse": openapi.Operation("post", "/v1/responses", openapi.ANY_JSON, responses_api.ResponsesRequest,
                                            stream=openapi.EVENT_SSE),
        "getResponse": openapi.Operation("get", "/v1/responses/{response_id}", openapi.ANY_JSON),
        "deleteResponse": openapi.Operation("delete", "/v1/responses/{response_id}", openapi.ANY_JSON),
    }


openapi.describe(api, operations, ERRORS)


def build_app(args: ModelAppArgs | dict[str, Any]) -> serve.Application:
    """Serve application builder (import path `raylight.api.names.MODEL_APP_IMPORT`): args are ModelAppArgs
    (camelCase on the wire); the deployment's options come from its resolved spec."""
    app_args = ModelAppArgs.model_validate(args)
    name, spec = app_args.name, app_args.spec
    if spec.resolved_runtime == "vllm":
        raise ValueError(f"model {name}: runtime vllm is served by ray.serve.llm:build_openai_app, not here")
    return ModelServer.options(  # type: ignore[attr-defined]
        name=MODEL_DEPLOYMENT, **model_deployment_options(spec)).bind(name, spec, app_args.responses)
